//! Where log lines go: standard error, through a `File` on a duplicate of
//! its descriptor, and on the server threads a batch at a time.
//!
//! `std::io::Stderr` takes a process-wide lock for every line, which made
//! the per-core server threads wait on each other (a futex call every other
//! request under load): each thread writes through its own handle instead.
//! A server thread also keeps its lines until it runs out of work (its
//! runtime is about to park) or 16 KiB have gathered, then writes them with
//! one `write`: under load that is one system call for dozens of requests
//! instead of one each, and when the proxy is idle a line goes out as soon
//! as its request is done. Lines are whole either way (the formatter hands
//! each over at once); lines of different threads may come out of order by
//! as much as one batch (each carries its time).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime;
use tracing_subscriber::fmt::MakeWriter;

/// A thread's gathered lines are written once they reach this size.
const FLUSH_AT: usize = 16 * 1024;

/// The log writer: hands tracing's formatted lines to the output.
#[derive(Clone)]
pub struct LogSink {
    output: Arc<File>,
}

impl LogSink {
    /// Writes to `output` (standard error's duplicate, usually).
    #[must_use]
    pub fn new(output: File) -> Self {
        Self {
            output: Arc::new(output),
        }
    }
}

#[derive(Default)]
struct Pending {
    // Set on server threads: lines wait here until the thread parks.
    batching: bool,
    lines: Vec<u8>,
    output: Option<Arc<File>>,
}

impl Pending {
    fn flush(&mut self) {
        if let (false, Some(output)) = (self.lines.is_empty(), &self.output) {
            // Nowhere to report a failed log write: the line is lost.
            let _ = (&**output).write_all(&self.lines);
        }
        self.lines.clear();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.flush();
    }
}

thread_local! {
    static PENDING: RefCell<Pending> = RefCell::new(Pending::default());
}

/// From now on this thread's log lines are gathered (see the module
/// docs); call [`flush_this_thread`] whenever the thread is about to wait.
pub(crate) fn batch_this_thread() {
    PENDING.with(|p| p.borrow_mut().batching = true);
}

/// Writes this thread's gathered lines.
pub(crate) fn flush_this_thread() {
    // During thread teardown the buffer may be gone: it flushed itself.
    let _ = PENDING.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.flush();
        }
    });
}

/// Adds to this thread's gathered lines (written when it is about to wait,
/// or once they reach [`FLUSH_AT`]); `false` when this thread does not
/// gather (not a server thread, or during its teardown): then the caller
/// writes at once.
fn gather(output: &Arc<File>, add: impl FnOnce(&mut Vec<u8>)) -> bool {
    PENDING
        .try_with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return false;
            };
            if !p.batching {
                return false;
            }
            if p.output.is_none() {
                p.output = Some(Arc::clone(output));
            }
            add(&mut p.lines);
            if p.lines.len() >= FLUSH_AT {
                p.flush();
            }
            true
        })
        .unwrap_or(false)
}

/// One formatted line (or part of one) on its way out.
pub struct LineWriter<'a> {
    output: &'a Arc<File>,
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if gather(self.output, |lines| lines.extend_from_slice(buf)) {
            Ok(())
        } else {
            (&**self.output).write_all(buf)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            output: &self.output,
        }
    }
}

/// Each line's time as tracing's default timer writes it
/// (`2026-11-27T02:27:11.420469Z`: UTC, microseconds), with the date and
/// time of day worked out once a second per thread instead of for every
/// line (that was a thirtieth of a small request's CPU).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timestamps;

/// The first second of the year 10000: from there on tracing writes the
/// year differently, and its own timer is used.
const YEAR_10000: u64 = 253_402_300_800;

thread_local! {
    /// The second last written, and its text up to the fraction.
    static SECOND: Cell<Option<(u64, [u8; 20])>> = const { Cell::new(None) };
}

impl FormatTime for Timestamps {
    fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
        match now_text() {
            Some(text) => w.write_str(std::str::from_utf8(&text).map_err(|_| std::fmt::Error)?),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}

/// The time now as [`Timestamps`] writes it; `None` from the year 10000 on.
fn now_text() -> Option<[u8; 27]> {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    if secs >= YEAR_10000 {
        return None;
    }
    let second = match SECOND.try_with(Cell::get) {
        Ok(Some((cached, text))) if cached == secs => text,
        _ => {
            let text = second_text(secs);
            let _ = SECOND.try_with(|s| s.set(Some((secs, text))));
            text
        }
    };
    let mut micros = since.subsec_micros();
    let mut text = [0u8; 27];
    text[..20].copy_from_slice(&second);
    for at in (20..26).rev() {
        text[at] = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    text[26] = b'Z';
    Some(text)
}

/// Where the text format's request lines go without tracing (see
/// [`LogSink::carry_request_lines`]).
static REQUEST_LINES: OnceLock<Arc<File>> = OnceLock::new();

impl LogSink {
    /// From now on [`write_info_line`] writes here: the text format's
    /// request lines skip tracing's dispatch and formatter (a fortieth of
    /// a small request's instructions), written as its text format writes
    /// an INFO event with our [`Timestamps`] (see the tests).
    pub fn carry_request_lines(&self) {
        let _ = REQUEST_LINES.set(Arc::clone(&self.output));
    }
}

/// `{time}  INFO {message}` and a newline: tracing's text format for an
/// INFO event without target or spans.
fn push_info_line(time: &[u8; 27], message: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(time);
    out.extend_from_slice(b"  INFO ");
    out.extend_from_slice(message.as_bytes());
    out.push(b'\n');
}

/// Writes `message` as an INFO line straight to the log output, batched
/// like every other line on a server thread; `false` when there is no
/// such output (then the caller goes through tracing).
pub(crate) fn write_info_line(message: &str) -> bool {
    let (Some(output), Some(time)) = (REQUEST_LINES.get(), now_text()) else {
        return false;
    };
    if !gather(output, |lines| push_info_line(&time, message, lines)) {
        let mut line = Vec::with_capacity(message.len() + 36);
        push_info_line(&time, message, &mut line);
        // Nowhere to report a failed log write: the line is lost.
        let _ = (&**output).write_all(&line);
    }
    true
}

/// `YYYY-MM-DDTHH:MM:SS.` for a second since the epoch (before year 10000).
fn second_text(secs: u64) -> [u8; 20] {
    let (year, month, day) = civil_date(secs / 86_400);
    let of_day = secs % 86_400;
    let mut text = *b"0000-00-00T00:00:00.";
    let mut put = |at: usize, width: usize, mut value: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, of_day / 3600);
    put(14, 2, of_day % 3600 / 60);
    put(17, 2, of_day % 60);
    text
}

/// The proleptic Gregorian date of a day since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`, for days on or after the epoch).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// What a subscriber writes, kept for a test to read.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

#[cfg(test)]
impl<'a> MakeWriter<'a> for Captured {
    type Writer = Self;

    fn make_writer(&'a self) -> Self {
        self.clone()
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{civil_date, second_text, Captured, Timestamps};
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::FormatTime;

    /// A line written directly reads as tracing's text format writes the
    /// same INFO event.
    #[test]
    fn a_direct_line_reads_as_tracings() {
        struct Fixed;
        impl FormatTime for Fixed {
            fn format_time(&self, w: &mut Writer<'_>) -> std::fmt::Result {
                w.write_str("2026-11-27T02:27:11.420469Z")
            }
        }
        let captured = Captured::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(captured.clone())
            .with_target(false)
            .with_timer(Fixed)
            .finish();
        let rest = "8251c13b method=GET path=/small status=200 duration_ms=0.449";
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(request_id = %rest, "request");
        });
        let mut ours = Vec::new();
        super::push_info_line(
            b"2026-11-27T02:27:11.420469Z",
            &format!("request request_id={rest}"),
            &mut ours,
        );
        let theirs = captured.0.lock().unwrap().clone();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(theirs).unwrap()
        );
    }

    /// Written as tracing's own timer writes the same instant, up to the
    /// microseconds read a moment apart.
    #[test]
    fn a_time_reads_as_tracings() {
        let write = |timer: &dyn FormatTime| {
            let mut out = String::new();
            timer.format_time(&mut Writer::new(&mut out)).unwrap();
            out
        };
        let ours = write(&Timestamps);
        let theirs = write(&tracing_subscriber::fmt::time::SystemTime);
        assert_eq!(ours.len(), theirs.len(), "{ours} / {theirs}");
        assert_eq!(ours.len(), 27, "{ours}");
        // The same second, unless the two reads fell either side of one.
        let same = ours[..19] == theirs[..19];
        let next = ours[17..19] != theirs[17..19];
        assert!(same || next, "{ours} / {theirs}");
        assert!(ours.ends_with('Z') && ours.as_bytes()[19] == b'.', "{ours}");
    }

    #[test]
    fn seconds_read_as_dates() {
        let text = |secs| String::from_utf8(second_text(secs).to_vec()).unwrap();
        assert_eq!(text(0), "1970-01-01T00:00:00.");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00.");
        assert_eq!(text(1_795_747_631), "2026-11-27T02:47:11.");
        assert_eq!(text(4_107_542_399), "2100-02-28T23:59:59.");
        assert_eq!(text(4_107_542_400), "2100-03-01T00:00:00.");
        assert_eq!(text(253_402_300_799), "9999-12-31T23:59:59.");
    }

    #[test]
    fn days_follow_each_other() {
        let month_days = |year: u64, month: u64| match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut date = (1970, 1, 1);
        for days in 0..2_932_897 {
            assert_eq!(civil_date(days), date, "day {days}");
            let (year, month, day) = date;
            date = if day < month_days(year, month) {
                (year, month, day + 1)
            } else if month < 12 {
                (year, month + 1, 1)
            } else {
                (year + 1, 1, 1)
            };
        }
        assert_eq!(date, (10000, 1, 1));
    }
}
