//! One log line per request: request id, method, path, status, duration,
//! key name.
//!
//! The line is written when the exchange is over: at once for answers the
//! proxy makes itself, and when the response body ends (or is abandoned) for
//! forwarded requests, so the duration covers the whole stream. Only the
//! path is logged (no query), and never a header value.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, StatusCode};
use ollama_proxy_core::{Exchange, KeyName, ProxyError, RouteFamily, Usage};

use crate::metrics::Metrics;

mod line;

pub use line::render_request_lines;
use line::{Count, Line, Millis};

/// How a forwarded exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The whole response was sent.
    Complete,
    /// The client went away before the response was complete.
    ClientGone,
    /// The origin paused longer than the idle timeout mid-body.
    IdleTimeout,
    /// The origin's body failed mid-stream.
    OriginError,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::ClientGone => "client_gone",
            Self::IdleTimeout => "idle_timeout",
            Self::OriginError => "origin_error",
        }
    }
}

/// The exchange's request id for a log field (`-` when there is none).
pub(crate) fn request_id(exchange: &Exchange) -> &str {
    exchange
        .request_id()
        .and_then(|id| id.to_str().ok())
        .unwrap_or("-")
}

/// The status logged for a request whose client left before it was
/// answered (nginx's "client closed request").
const CLIENT_CLOSED: u16 = 499;

/// What is known of a request when it arrives.
#[derive(Debug)]
pub(crate) struct RequestLog {
    method: Method,
    path: String,
    start: Instant,
    /// Time spent waiting for a turn on the GPU.
    queued: Duration,
    pub(crate) metrics: Arc<Metrics>,
    /// Who asked and for what, once the core has decided: for the line
    /// written if the request is dropped unanswered.
    known: Option<Known>,
    /// The request's line has been written.
    written: AtomicBool,
}

#[derive(Debug)]
struct Known {
    request_id: Option<HeaderValue>,
    key: Option<KeyName>,
    route: RouteFamily,
    rejection: Option<ProxyError>,
}

impl RequestLog {
    pub(crate) fn start(method: &Method, path: &str, metrics: &Arc<Metrics>) -> Self {
        Self {
            method: method.clone(),
            path: path.to_owned(),
            start: Instant::now(),
            queued: Duration::ZERO,
            metrics: Arc::clone(metrics),
            known: None,
            written: AtomicBool::new(false),
        }
    }

    /// Keeps what the line needs of the core's decision, in case the
    /// request is dropped before it is answered.
    pub(crate) fn knows(&mut self, exchange: &Exchange) {
        self.known = Some(Known {
            request_id: exchange.request_id().cloned(),
            key: exchange.key().cloned(),
            route: exchange.route(),
            rejection: exchange.rejection(),
        });
    }

    /// The request waited this long for its turn.
    pub(crate) fn queued(&mut self, waited: Duration) {
        self.queued = waited;
    }

    /// Microseconds since the request arrived.
    pub(crate) fn elapsed_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Records that the response head is ready to send.
    pub(crate) fn first_byte(&self, exchange: &Exchange) {
        self.metrics.first_byte(exchange, self.start.elapsed());
    }

    /// Writes the line for a finished exchange.
    /// `error` is a failure the adapter met (origin down, too slow); the
    /// core's own rejections come from the exchange.
    pub(crate) fn finish(
        &self,
        exchange: &Exchange,
        status: StatusCode,
        outcome: Outcome,
        bytes_out: u64,
        error: Option<ProxyError>,
    ) {
        self.finish_with_usage(exchange, status, outcome, bytes_out, error, None);
    }

    /// Writes the line for a finished exchange whose answer's usage was
    /// read (an LLM's answer): model, tokens and time to first token too.
    pub(crate) fn finish_with_usage(
        &self,
        exchange: &Exchange,
        status: StatusCode,
        outcome: Outcome,
        bytes_out: u64,
        error: Option<ProxyError>,
        usage: Option<&Usage>,
    ) {
        self.written.store(true, Ordering::Relaxed);
        let elapsed = self.start.elapsed();
        self.metrics
            .finished(exchange, status, elapsed, outcome, bytes_out, error);
        if let Some(usage) = usage {
            self.metrics.usage(exchange, usage);
        }
        Line {
            request_id: request_id(exchange),
            method: self.method.as_str(),
            path: &self.path,
            status: status.as_u16(),
            duration: elapsed,
            key: exchange.key().map_or("-", |k| k.as_str()),
            route: exchange.route().as_str(),
            outcome: outcome.as_str(),
            error: error.or(exchange.rejection()).map_or("-", |e| e.code()),
            bytes_out,
            model: usage.and_then(|u| u.model.as_deref()).unwrap_or("-"),
            prompt_tokens: Count(usage.and_then(|u| u.prompt_tokens)),
            completion_tokens: Count(usage.and_then(|u| u.completion_tokens)),
            ttft_ms: Millis(usage.and_then(|u| u.first_token_us)),
            queued: self.queued,
        }
        .write();
    }
}

impl Drop for RequestLog {
    /// A request dropped before its line was written — its client left
    /// before the answer's head came (while it waited for a turn, for its
    /// body to be read through the model gate, or for the origin) — is
    /// logged and counted now, as `client_gone` with status 499.
    fn drop(&mut self) {
        if self.written.load(Ordering::Relaxed) {
            return;
        }
        let Some(known) = self.known.take() else {
            return;
        };
        let elapsed = self.start.elapsed();
        let status = StatusCode::from_u16(CLIENT_CLOSED).unwrap_or(StatusCode::BAD_REQUEST);
        self.metrics.finished_as(
            known.route,
            known.key.as_ref(),
            known.rejection,
            status,
            elapsed,
            Outcome::ClientGone,
            0,
            None,
        );
        Line {
            request_id: known
                .request_id
                .as_ref()
                .and_then(|id| id.to_str().ok())
                .unwrap_or("-"),
            method: self.method.as_str(),
            path: &self.path,
            status: status.as_u16(),
            duration: elapsed,
            key: known.key.as_ref().map_or("-", KeyName::as_str),
            route: known.route.as_str(),
            outcome: Outcome::ClientGone.as_str(),
            error: "-",
            bytes_out: 0,
            model: "-",
            prompt_tokens: Count(None),
            completion_tokens: Count(None),
            ttft_ms: Millis(None),
            queued: self.queued,
        }
        .write();
    }
}
