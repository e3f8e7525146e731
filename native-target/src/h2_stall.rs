//! An HTTP/2 client that stops taking one of its answers. Such a client
//! keeps reading its socket (its other streams go on) and holds the stream
//! back by flow control instead: hyper then holds the last piece of the
//! answer until the client grants room for it and asks the body for nothing
//! more, so the origin's request (a generation paused mid-answer) and its
//! GPU slot would be held for as long as the client liked. [`WriteStall`]
//! cannot see it, as the socket is never full.
//!
//! hyper runs each HTTP/2 stream as a task of its own, spawned through the
//! server's executor: [`StallExecutor`] spawns it watched. The answer's body
//! ([`Watched`]) records in the stream's [`Handout`] (the core's rule) when
//! it hands a piece out (at most [`PIECE`] bytes) and when it is asked for
//! the next; a stream holding a piece for `IDLE_TIMEOUT` is dropped, which resets it (`CANCEL`) and
//! drops the answer, so the origin's request ends and the slot is given
//! back. The connection and its other streams go on. HTTP/1.1 answers carry
//! no watch (their stalls are [`WriteStall`]'s).
//!
//! [`WriteStall`]: crate::stall::WriteStall

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use ollama_proxy_core::Handout;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

tokio::task_local! {
    /// The watch of the HTTP/2 stream whose task is running.
    static STREAM: Arc<Watch>;
}

/// One stream's hand-outs, shared by its task and its answer's body.
#[derive(Debug)]
pub(crate) struct Watch {
    started: Instant,
    handout: Mutex<Handout>,
}

impl Watch {
    fn new(limit: Duration) -> Self {
        Self {
            started: Instant::now(),
            handout: Mutex::new(Handout::new(micros(limit))),
        }
    }

    /// The watch of the stream this task serves, if it is an HTTP/2 one.
    pub(crate) fn current() -> Option<Arc<Self>> {
        STREAM.try_with(Arc::clone).ok()
    }

    fn now_us(&self) -> u64 {
        micros(self.started.elapsed())
    }

    fn with<T>(&self, f: impl FnOnce(&mut Handout) -> T) -> T {
        f(&mut self
            .handout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Spawns hyper's HTTP/2 stream tasks, each watched (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StallExecutor {
    pub(crate) limit: Duration,
}

impl<F> hyper::rt::Executor<F> for StallExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        tokio::spawn(Stream {
            watch: Arc::new(Watch::new(self.limit)),
            task: Some(stream),
            timer: None,
        });
    }
}

pin_project! {
    /// A stream's task, dropped once its answer has been held too long.
    struct Stream<F> {
        watch: Arc<Watch>,
        #[pin]
        task: Option<F>,
        // Made at the first hold, re-armed after.
        timer: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future<Output = ()>> Future for Stream<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            let Some(task) = this.task.as_mut().as_pin_mut() else {
                return Poll::Ready(());
            };
            let watch = Arc::clone(this.watch);
            if STREAM.sync_scope(watch, || task.poll(cx)).is_ready() {
                return Poll::Ready(());
            }
            let now = this.watch.now_us();
            let (deadline, stalled) = this.watch.with(|h| (h.deadline_us(), h.stalled(now)));
            if stalled {
                tracing::debug!(
                    "an HTTP/2 client took none of its answer's last piece for IDLE_TIMEOUT: stream reset"
                );
                this.task.set(None);
                return Poll::Ready(());
            }
            let Some(deadline) = deadline else {
                // Asked for more: the wait is the origin's (its own timer).
                // A timer still armed only wakes the task once for nothing.
                return Poll::Pending;
            };
            let at = this.watch.started + Duration::from_micros(deadline);
            let timer = match this.timer {
                Some(timer) => {
                    timer.as_mut().reset(at);
                    timer
                }
                None => this.timer.insert(Box::pin(tokio::time::sleep_until(at))),
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// The most a watched body hands out at once (HTTP/2's default frame size).
/// hyper asks for the next piece only once h2 has sent the whole last one,
/// so a hand-out held for the limit means the client took less than this
/// in all that time, whatever the size of the origin's reads (up to 256
/// KiB: a slow but steady reader would take longer than a short limit to
/// drain one of those).
const PIECE: usize = 16 * 1024;

pin_project! {
    /// An answer's body that tells its stream's watch what it hands out.
    pub(crate) struct Watched<B> {
        #[pin]
        body: B,
        watch: Option<Arc<Watch>>,
        // What is left of a frame larger than a piece.
        rest: Bytes,
    }
}

impl<B> Watched<B> {
    /// `body`, watched when this task serves an HTTP/2 stream.
    pub(crate) fn new(body: B) -> Self {
        Self {
            body,
            watch: Watch::current(),
            rest: Bytes::new(),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let Some(watch) = this.watch else {
            return this.body.poll_frame(cx);
        };
        watch.with(Handout::asked);
        if this.rest.is_empty() {
            match ready!(this.body.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => *this.rest = data,
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                other => return Poll::Ready(other),
            }
            if this.rest.is_empty() {
                return Poll::Ready(Some(Ok(Frame::data(Bytes::new()))));
            }
        }
        let piece = this.rest.split_to(this.rest.len().min(PIECE));
        let now = watch.now_us();
        watch.with(|h| h.handed_out(now));
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.body.size_hint();
        let rest = self.rest.len() as u64;
        let mut hint = SizeHint::new();
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(inner.lower() + rest);
        hint
    }
}
