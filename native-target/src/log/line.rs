//! A request's log line, rendered field by field: as tracing's text format
//! writes an INFO event (tested byte for byte), or as fields for the JSON
//! format.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ollama_proxy_core::push_decimal as push_u64;

/// The start of a request line, up to the first field's value.
const MESSAGE: &str = "request request_id=";

/// Whether request lines go out pre-rendered (see [`render_request_lines`]).
static PRE_RENDERED: AtomicBool = AtomicBool::new(false);

/// From now on request lines are rendered here, field by field, instead of
/// as fields for the subscriber's visitor to format (that was a seventh of
/// a small request's instructions), and written straight to the log output
/// when it carries them (`LogSink::carry_request_lines`), else handed to
/// tracing as one field's value: for the text format (`LOG_FORMAT=text`),
/// whose bytes are the same each way (see the tests). The JSON format keeps
/// the fields, which it writes typed.
pub fn render_request_lines() {
    PRE_RENDERED.store(true, Ordering::Relaxed);
}

thread_local! {
    /// A thread's line being rendered, kept for the next one.
    static RENDERED: RefCell<String> = const { RefCell::new(String::new()) };
}

/// A request's log line.
pub(super) struct Line<'a> {
    pub(super) request_id: &'a str,
    pub(super) method: &'a str,
    pub(super) path: &'a str,
    pub(super) status: u16,
    pub(super) duration: Duration,
    pub(super) key: &'a str,
    pub(super) route: &'static str,
    pub(super) outcome: &'static str,
    pub(super) error: &'static str,
    pub(super) bytes_out: u64,
    pub(super) model: &'a str,
    pub(super) prompt_tokens: Count,
    pub(super) completion_tokens: Count,
    pub(super) ttft_ms: Millis,
    pub(super) queued: Duration,
}

impl Line<'_> {
    pub(super) fn write(&self) {
        if !PRE_RENDERED.load(Ordering::Relaxed) {
            return self.write_fields();
        }
        let rendered = RENDERED.try_with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return false;
            };
            line.clear();
            line.push_str(MESSAGE);
            self.render(&mut line);
            if !crate::log_sink::write_info_line(&line) {
                // Through tracing: the first field's name is written by the
                // subscriber, the rest of the line is its value. (As a
                // message it would be copied a character at a time, screened
                // for terminal escapes that none of these fields can hold:
                // HTTP forbids control characters in a path and header, and
                // key names are the operator's.)
                let rest = &line[MESSAGE.len()..];
                tracing::info!(request_id = %Verbatim(rest), "request");
            }
            true
        });
        if rendered != Ok(true) {
            self.write_fields();
        }
    }

    fn write_fields(&self) {
        tracing::info!(
            request_id = %self.request_id,
            method = %self.method,
            path = %self.path,
            status = self.status,
            duration_ms = (self.duration.as_micros() as f64 / 1e3),
            key = %self.key,
            route = %self.route,
            outcome = %self.outcome,
            error = %self.error,
            bytes_out = self.bytes_out,
            model = %self.model,
            prompt_tokens = %self.prompt_tokens,
            completion_tokens = %self.completion_tokens,
            ttft_ms = %self.ttft_ms,
            queued_ms = (self.queued.as_micros() as f64 / 1e3),
            "request"
        );
    }

    /// The fields as the text format writes them, from the first one's
    /// value on.
    fn render(&self, out: &mut String) {
        out.push_str(self.request_id);
        out.push_str(" method=");
        out.push_str(self.method);
        out.push_str(" path=");
        out.push_str(self.path);
        out.push_str(" status=");
        push_u64(out, u64::from(self.status));
        out.push_str(" duration_ms=");
        push_millis(out, self.duration.as_micros());
        out.push_str(" key=");
        out.push_str(self.key);
        out.push_str(" route=");
        out.push_str(self.route);
        out.push_str(" outcome=");
        out.push_str(self.outcome);
        out.push_str(" error=");
        out.push_str(self.error);
        out.push_str(" bytes_out=");
        push_u64(out, self.bytes_out);
        out.push_str(" model=");
        out.push_str(self.model);
        out.push_str(" prompt_tokens=");
        self.prompt_tokens.push(out);
        out.push_str(" completion_tokens=");
        self.completion_tokens.push(out);
        out.push_str(" ttft_ms=");
        match self.ttft_ms.0 {
            // Infallible: writing to a String cannot fail.
            Some(_) => drop(write!(out, "{}", self.ttft_ms)),
            None => out.push('-'),
        }
        out.push_str(" queued_ms=");
        push_millis(out, self.queued.as_micros());
    }
}

/// Text written as it is.
struct Verbatim<'a>(&'a str);

impl std::fmt::Display for Verbatim<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// Microseconds as milliseconds, written as `{:?}` writes the `f64`
/// `us / 1e3` (the shortest decimal that reads back the same): below 10^15
/// µs that is the exact decimal, trailing zeros dropped, at least one
/// fractional digit.
fn push_millis(out: &mut String, us: u128) {
    const EXACT_BELOW: u128 = 1_000_000_000_000_000;
    if us >= EXACT_BELOW {
        let _ = write!(out, "{:?}", us as f64 / 1e3);
        return;
    }
    push_u64(out, (us / 1000) as u64);
    out.push('.');
    let mut frac = (us % 1000) as u64;
    if frac == 0 {
        out.push('0');
        return;
    }
    let mut width = 3;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    let mut digits = [b'0'; 3];
    for at in (0..width).rev() {
        digits[at] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend(digits[..width].iter().map(|&d| char::from(d)));
}

/// A count for the log line, `-` when unknown (formatted in place: the
/// line is written for every request).
pub(super) struct Count(pub(super) Option<u64>);

impl Count {
    fn push(&self, out: &mut String) {
        match self.0 {
            Some(n) => push_u64(out, n),
            None => out.push('-'),
        }
    }
}

impl std::fmt::Display for Count {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("-"),
        }
    }
}

/// Microseconds shown as milliseconds with one decimal, `-` when unknown.
pub(super) struct Millis(pub(super) Option<u64>);

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
    use std::time::Duration;

    use super::{push_millis, Count, Line, Millis, Verbatim};
    use crate::log_sink::Captured;

    #[test]
    fn numbers_are_written_as_the_fields_would_be() {
        let mut out = String::new();
        // Every value below 3 s, then a spread up to and past 10^15 µs.
        let spread = (0..3_000_000u128).chain((0..64).flat_map(|shift| {
            let base = 1u128 << shift;
            [base - 1, base, base + 1, base * 999 / 1000]
        }));
        for us in spread.chain([
            999_999_999_999_999,
            1_000_000_000_000_000,
            u128::from(u64::MAX),
        ]) {
            out.clear();
            push_millis(&mut out, us);
            assert_eq!(out, format!("{:?}", us as f64 / 1e3), "{us} µs");
        }
    }

    fn text_format(emit: impl FnOnce()) -> String {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_target(false)
            .without_time()
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        captured.text()
    }

    #[test]
    fn a_rendered_line_reads_as_the_fields_do() {
        let lines = [
            Line {
                request_id: "8251c13b3dbf03e980158514efea447b",
                method: "GET",
                path: "/small",
                status: 200,
                duration: Duration::from_micros(449),
                key: "user-49",
                route: "other",
                outcome: "complete",
                error: "-",
                bytes_out: 58,
                model: "-",
                prompt_tokens: Count(None),
                completion_tokens: Count(None),
                ttft_ms: Millis(None),
                queued: Duration::ZERO,
            },
            Line {
                request_id: "trace-me-7",
                method: "POST",
                path: "/v1/chat/completions",
                status: 429,
                duration: Duration::from_millis(61_250),
                key: "-",
                route: "v1",
                outcome: "client_gone",
                error: "rate_limited",
                bytes_out: 1_234_567,
                model: "llama3.2:1b",
                prompt_tokens: Count(Some(26)),
                completion_tokens: Count(Some(0)),
                ttft_ms: Millis(Some(412_750)),
                queued: Duration::from_nanos(1_500_999),
            },
        ];
        for line in &lines {
            let fields = text_format(|| line.write_fields());
            let rendered = text_format(|| {
                let mut out = String::new();
                line.render(&mut out);
                tracing::info!(request_id = %Verbatim(&out), "request");
            });
            assert!(fields.contains(" request request_id="), "{fields}");
            assert_eq!(rendered, fields);
        }
    }

    #[test]
    fn unknown_values_show_as_a_dash() {
        assert_eq!(Count(Some(26)).to_string(), "26");
        assert_eq!(Count(None).to_string(), "-");
        assert_eq!(Millis(Some(412_730)).to_string(), "412.7");
        assert_eq!(Millis(None).to_string(), "-");
    }
}
