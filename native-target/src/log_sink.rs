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

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;

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
        let gathered = PENDING.try_with(|p| {
            let Ok(mut p) = p.try_borrow_mut() else {
                return false;
            };
            if !p.batching {
                return false;
            }
            if p.output.is_none() {
                p.output = Some(Arc::clone(self.output));
            }
            p.lines.extend_from_slice(buf);
            if p.lines.len() >= FLUSH_AT {
                p.flush();
            }
            true
        });
        match gathered {
            Ok(true) => Ok(()),
            _ => (&**self.output).write_all(buf),
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
