//! Test support shared by the native and Worker targets: a mock Ollama
//! origin, a small HTTP client, and behaviour scenarios that run unchanged
//! against any [`Target`].
//!
//! The mock origin is a real HTTP server on loopback. It answers like Ollama
//! on the routes the scenarios use, streams with real delays, records every
//! request it receives (head and body, and whether the body arrived whole),
//! and notices when a client goes away.

pub mod boxes;
pub mod broken;
pub mod client;
pub mod exchange;
pub mod fair;
pub mod hostile;
pub mod origin;
pub mod policy;
pub mod report;
pub mod scenarios;
pub mod target;
pub mod usage;
pub mod wire;
pub mod workerd;

pub use origin::{MockOrigin, Recorded, Script};
pub use target::{Harness, Target, Vars, TOKEN};
