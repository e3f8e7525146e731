//! The pure core of the Ollama proxy: every decision both targets make.
//!
//! Nothing here does I/O, reads the environment or touches a body. An adapter
//! (the native hyper server, the Cloudflare Worker) hands in a request head
//! and gets back a [`Decision`]: answer locally with a small JSON response, or
//! forward a rewritten head to the origin. When the origin answers, the
//! adapter passes the response head to [`Exchange::rewrite_response`]; when the
//! adapter itself fails (origin down, too slow, body too large) it asks
//! [`Exchange::error_response`] for the answer. Because both targets get all of
//! their behaviour from here, they cannot drift apart.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod config;
mod cors;
mod decision;
mod error;
mod hop;
mod json;
mod origin;
mod path;
mod policy;
mod request_id;
mod route;

pub use auth::KeyName;
pub use config::{Config, ConfigError, ConfigVar, DEFAULT_MAX_BODY_BYTES, DEFAULT_ORIGIN};
pub use decision::{early_error_response, Action, Decision, Exchange, Proxy};
pub use error::ProxyError;
pub use hop::strip_hop_by_hop;
pub use origin::Origin;
pub use request_id::{format_request_id, RequestIds, X_REQUEST_ID};
pub use route::{status_class, RouteFamily};
