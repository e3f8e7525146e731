//! One log line per request: request id, method, path, status, duration,
//! key name.
//!
//! The line is written when the exchange is over: at once for answers the
//! proxy makes itself, and when the response body ends (or is abandoned) for
//! forwarded requests, so the duration covers the whole stream. Only the
//! path is logged (no query), and never a header value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use ollama_proxy_core::{Exchange, ProxyError, Usage};

use crate::metrics::Metrics;

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

/// What is known of a request when it arrives.
#[derive(Debug)]
pub(crate) struct RequestLog {
    method: Method,
    path: String,
    start: Instant,
    /// Time spent waiting for a turn on the GPU.
    queued: Duration,
    pub(crate) metrics: Arc<Metrics>,
}

impl RequestLog {
    pub(crate) fn start(method: &Method, path: &str, metrics: &Arc<Metrics>) -> Self {
        Self {
            method: method.clone(),
            path: path.to_owned(),
            start: Instant::now(),
            queued: Duration::ZERO,
            metrics: Arc::clone(metrics),
        }
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
        let elapsed = self.start.elapsed();
        self.metrics
            .finished(exchange, status, elapsed, outcome, bytes_out, error);
        if let Some(usage) = usage {
            self.metrics.usage(exchange, usage);
        }
        let key = exchange.key().map_or("-", |k| k.as_str());
        let error = error.or(exchange.rejection()).map_or("-", |e| e.code());
        let model = usage.and_then(|u| u.model.as_deref()).unwrap_or("-");
        let prompt_tokens = Count(usage.and_then(|u| u.prompt_tokens));
        let completion_tokens = Count(usage.and_then(|u| u.completion_tokens));
        let ttft_ms = Millis(usage.and_then(|u| u.first_token_us));
        tracing::info!(
            request_id = %request_id(exchange),
            method = %self.method,
            path = %self.path,
            status = status.as_u16(),
            duration_ms = (elapsed.as_micros() as f64 / 1e3),
            key = %key,
            route = %exchange.route().as_str(),
            outcome = %outcome.as_str(),
            error = %error,
            bytes_out,
            model = %model,
            prompt_tokens = %prompt_tokens,
            completion_tokens = %completion_tokens,
            ttft_ms = %ttft_ms,
            queued_ms = (self.queued.as_micros() as f64 / 1e3),
            "request"
        );
    }
}

/// A count for the log line, `-` when unknown (formatted in place: the
/// line is written for every request).
struct Count(Option<u64>);

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("-"),
        }
    }
}

/// Microseconds shown as milliseconds with one decimal, `-` when unknown.
struct Millis(Option<u64>);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(us) => write!(f, "{:.1}", us as f64 / 1e3),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Count, Millis};

    #[test]
    fn unknown_values_show_as_a_dash() {
        assert_eq!(Count(Some(26)).to_string(), "26");
        assert_eq!(Count(None).to_string(), "-");
        assert_eq!(Millis(Some(412_730)).to_string(), "412.7");
        assert_eq!(Millis(None).to_string(), "-");
    }
}
