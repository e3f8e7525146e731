//! The Ollama proxy as a native server: hyper over tokio, driving the pure core.
//!
//! This crate translates between hyper and [`ollama_proxy_core`] and does the
//! I/O: accepting connections, calling the origin over kept-alive connections,
//! streaming bodies both ways, enforcing timeouts and the body limit, and
//! draining connections on shutdown. Every decision about auth, CORS,
//! endpoint policy and headers comes from the core.
#![deny(unsafe_code)]

pub mod admin;
mod backends;
mod body;
pub mod cli;
mod client;
mod h1;
mod h2_stall;
mod handler;
mod handles;
pub mod live;
mod log;
pub mod log_sink;
mod memory;
mod metrics;
pub mod reload;
mod request_id;
mod server;
mod stall;
pub mod tls;
mod turns;
mod upstream;

pub use backends::Pool;
pub use log::render_request_lines;
pub use metrics::Metrics;
pub use server::{bind, serve, Settings};
pub use turns::Turns;
