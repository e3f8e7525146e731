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
mod backends;
mod config;
mod cors;
mod decision;
mod endpoint;
mod error;
mod exchange;
mod gojson;
mod handout;
mod hop;
mod idle;
mod json;
mod json_scan;
mod keys;
mod lease_table;
mod length;
mod listing;
mod model_gate;
mod model_policy;
mod models;
mod name_hash;
mod origin;
mod path;
mod rate;
mod request_id;
mod route;
#[cfg(test)]
mod routing_tests;
mod shared_turns;
#[cfg(test)]
mod test_cases;
mod time;
mod turn_answer;
mod turns;
mod usage;
mod usage_chunk;

pub use auth::{token_sha256_hex, KeyName};
pub use backends::{
    failing_status, Backends, Failure, HealthPolicy, Need, NoRoute, Probe, Reason, Route,
};
pub use config::{
    parse_duration_ms, Config, ConfigError, ConfigVar, KeySummary, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_ORIGIN,
};
pub use decision::{Action, Decision, Proxy};
pub use error::ProxyError;
pub use exchange::{early_error_response, Exchange};
pub use handout::Handout;
pub use hop::{connection_tokens, strip_hop_by_hop};
pub use idle::{IdlePool, Swept};
pub use json::{push_str as push_json_str, push_u64 as push_decimal, Digits};
pub use lease_table::LeaseTable;
pub use length::{declared_length, framed_twice, InvalidLength};
pub use listing::MAX_LISTING_BYTES;
pub use model_gate::{with_usage, GateStep, ModelGate, Refusal, INCLUDE_USAGE};
pub use name_hash::NameHasher;
pub use origin::Origin;
pub use rate::{RateRefusal, RateState};
pub use request_id::{format_request_id, RequestIds, X_REQUEST_ID};
pub use route::{status_class, RouteFamily};
pub use shared_turns::{Changes, SharedAdmission, SharedDoorman, CLAIM_TTL_US, LEASE_TTL_US};
pub use time::UnixTime;
pub use turns::{
    Admission, Doorman, Grant, Lease, Ticket, Turn, TurnLimits, TurnRefusal, DEFAULT_MAX_QUEUE,
    DEFAULT_QUEUE_TIMEOUT_SECS,
};
pub use usage::{Ended, Framing, Usage, UsageMeter, LOAD_SHOWN_NS, MODEL_SHOWN};
pub use usage_chunk::UsageChunkFilter;
