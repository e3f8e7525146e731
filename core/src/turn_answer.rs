//! How a turn shows in the answer: a refusal's error, message and
//! `Retry-After`, and OpenAI's `x-ratelimit-*-requests` headers for a key's
//! rate (see [`crate::turns`] for the decisions themselves).

use crate::rate::RateState;
use crate::turns::{TurnLimits, TurnRefusal};

/// The error, message and headers of a refusal: `Retry-After` (whole
/// seconds, at least 1) and, for a rate, OpenAI's `x-ratelimit-*-requests`.
pub(crate) fn refusal_parts(
    refusal: &TurnRefusal,
    limits: &TurnLimits,
    headers: &mut http::HeaderMap,
) -> (crate::ProxyError, String) {
    use crate::ProxyError;
    let (error, message, retry_us) = match refusal {
        TurnRefusal::RateLimited(rate) => {
            put_rate(
                headers,
                RateState {
                    limit: rate.limit,
                    remaining: 0,
                    reset_us: rate.reset_us,
                },
            );
            (
                ProxyError::RateLimited,
                format!(
                    "Rate limit reached for this API key: {} requests per minute. Try again in {}.",
                    rate.limit,
                    duration_text(rate.retry_in_us)
                ),
                rate.retry_in_us,
            )
        }
        TurnRefusal::KeyBusy { cap } => (
            ProxyError::RateLimited,
            format!(
                "This API key has {cap} request{} in flight or waiting, its limit. Try again when one has finished.",
                if *cap == 1 { "" } else { "s" }
            ),
            1_000_000,
        ),
        TurnRefusal::QueueFull if limits.max_queue == 0 => (
            ProxyError::ServerBusy,
            format!(
                "The server is busy: all {} of its slots are in use. Try again shortly.",
                limits.max_concurrent.unwrap_or(0)
            ),
            1_000_000,
        ),
        TurnRefusal::QueueFull => (
            ProxyError::ServerBusy,
            format!(
                "The server is busy: {} requests are already waiting for a turn. Try again shortly.",
                limits.max_queue
            ),
            1_000_000,
        ),
        TurnRefusal::QueueTimeout => (
            ProxyError::ServerBusy,
            format!(
                "The server is busy: this request waited {} for a turn. Try again shortly.",
                duration_text(limits.queue_timeout_us)
            ),
            1_000_000,
        ),
    };
    let secs = retry_us.div_ceil(1_000_000).max(1);
    headers.insert(http::header::RETRY_AFTER, secs.into());
    (error, message)
}

const LIMIT_REQUESTS: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-limit-requests");
const REMAINING_REQUESTS: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-remaining-requests");
const RESET_REQUESTS: http::HeaderName =
    http::HeaderName::from_static("x-ratelimit-reset-requests");

/// OpenAI's request-rate headers. (The names are constants: written as
/// strings, each would be parsed again on every response.)
pub(crate) fn put_rate(headers: &mut http::HeaderMap, rate: RateState) {
    headers.insert(LIMIT_REQUESTS, rate.limit.into());
    headers.insert(REMAINING_REQUESTS, rate.remaining.into());
    let reset = Duration::of(rate.reset_us);
    if let Ok(value) = http::HeaderValue::from_bytes(reset.as_bytes()) {
        headers.insert(RESET_REQUESTS, value);
    }
}

/// A duration as OpenAI writes it in `x-ratelimit-reset-*`: `250ms`, `6s`,
/// `1m30s` (seconds rounded up).
fn duration_text(us: u64) -> String {
    String::from_utf8_lossy(Duration::of(us).as_bytes()).into_owned()
}

/// A duration's text, written on the stack (a header value copies it once).
struct Duration {
    text: [u8; 24],
    len: usize,
}

impl Duration {
    fn of(us: u64) -> Self {
        let mut out = Self {
            text: [0; 24],
            len: 0,
        };
        if us < 1_000_000 {
            out.push_number(us.div_ceil(1_000));
            out.push(b"ms");
            return out;
        }
        let secs = us.div_ceil(1_000_000);
        if secs >= 60 {
            out.push_number(secs / 60);
            out.push(b"m");
        }
        out.push_number(secs % 60);
        out.push(b"s");
        out
    }

    fn push_number(&mut self, n: u64) {
        self.push(crate::json::Digits::of(n).as_bytes());
    }

    /// At most 20 digits, `m`, 2 digits and `s`: within the 24 bytes.
    fn push(&mut self, bytes: &[u8]) {
        self.text[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn as_bytes(&self) -> &[u8] {
        &self.text[..self.len]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_read_as_openai_writes_them() {
        for (us, text) in [
            (0, "0ms"),
            (1, "1ms"),
            (250_000, "250ms"),
            (999_999, "1000ms"),
            (1_000_000, "1s"),
            (1_000_001, "2s"),
            (59_000_000, "59s"),
            (60_000_000, "1m0s"),
            (90_000_000, "1m30s"),
            (3_600_000_000, "60m0s"),
            (u64::MAX, "307445734561m50s"),
        ] {
            assert_eq!(super::duration_text(us), text, "{us} µs");
        }
    }
}
