//! Body wrappers: streamed through untouched, with a size limit, idle
//! timeouts and the end-of-exchange log line.

use std::collections::VecDeque;
use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use ollama_proxy_core::{
    with_usage, Ended, Exchange, GateStep, ModelGate, ProxyError, Refusal, UsageChunkFilter,
    UsageMeter,
};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::log::{Outcome, RequestLog};
use crate::metrics::Metrics;
use crate::turns::LeaseGuard;
use crate::upstream::Driven;

/// Why a streamed body stopped early.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The request body passed the configured limit.
    TooLarge,
    /// No chunk arrived within the idle timeout.
    Idle,
    /// The underlying connection failed.
    Io(hyper::Error),
    /// The key's model gate refused the body (before anything was sent, or
    /// after part of it was: then the upload is aborted).
    Refused(Refusal),
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("request body over the size limit"),
            Self::Idle => f.write_str("body idle for longer than the idle timeout"),
            Self::Io(e) => write!(f, "body stream failed: {e}"),
            Self::Refused(r) => write!(f, "request body refused: {}", r.error()),
        }
    }
}

impl StdError for BodyError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// Finds a [`BodyError`] anywhere in an error's source chain.
pub(crate) fn find_body_error<'e>(mut err: &'e (dyn StdError + 'static)) -> Option<&'e BodyError> {
    loop {
        if let Some(found) = err.downcast_ref::<BodyError>() {
            return Some(found);
        }
        err = err.source()?;
    }
}

pin_project! {
    /// A body that passes frames through unchanged, failing when no frame
    /// arrives within the idle timeout (and, for requests, past a size limit).
    pub(crate) struct Guarded<B = Incoming> {
        #[pin]
        inner: B,
        // Boxed: the origin client wants an `Unpin` body.
        idle: Pin<Box<Sleep>>,
        idle_timeout: Duration,
        remaining: u64,
        seen: u64,
        // Where request body bytes are counted, for request bodies.
        counter: Option<Arc<Metrics>>,
    }
}

impl<B> Guarded<B> {
    /// `limit` is the most data bytes allowed through; `u64::MAX` for none.
    pub(crate) fn new(inner: B, idle_timeout: Duration, limit: u64) -> Self {
        Self {
            inner,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            remaining: limit,
            seen: 0,
            counter: None,
        }
    }

    /// Counts the bytes passed through as request body bytes.
    pub(crate) fn counting_into(mut self, metrics: Arc<Metrics>) -> Self {
        self.counter = Some(metrics);
        self
    }
}

impl<B: Body<Data = Bytes, Error = hyper::Error>> Body for Guarded<B> {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    *this.remaining -= len;
                    *this.seen += len;
                    if let Some(counter) = this.counter {
                        counter.request_bytes(len);
                    }
                }
                this.idle
                    .as_mut()
                    .reset(Instant::now() + *this.idle_timeout);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Io(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                Poll::Ready(Some(Err(BodyError::Idle)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The request body sent to the origin: the chunks a model gate held back,
/// then the rest of the client's body, still fed to the gate while it scans
/// (a refusal then aborts the upload; a stream's usage may be asked for).
pub(crate) struct RequestBody {
    held: VecDeque<Frame<Bytes>>,
    held_bytes: u64,
    // `None` once the client's body has ended.
    rest: Option<Guarded>,
    gate: Option<ModelGate>,
    // Set when the gate asked for the stream's usage.
    asked: Arc<AtomicBool>,
    // The model the gate read.
    model: Option<String>,
    // Where the body goes back to when it is dropped before its first
    // poll (the connection failed before anything was sent), so that it
    // can be sent to another box.
    spare: Option<Spare>,
    polled: bool,
}

/// Where a [`RequestBody`] dropped unsent goes back to.
pub(crate) type Spare = Arc<std::sync::Mutex<Option<RequestBody>>>;

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(spare) = self.spare.take().filter(|_| !self.polled) else {
            return;
        };
        let unsent = Self {
            held: std::mem::take(&mut self.held),
            held_bytes: self.held_bytes,
            rest: self.rest.take(),
            gate: self.gate.take(),
            asked: Arc::clone(&self.asked),
            model: self.model.take(),
            spare: None,
            polled: false,
        };
        *spare.lock().unwrap_or_else(|e| e.into_inner()) = Some(unsent);
    }
}

impl RequestBody {
    /// The client's body, as it is.
    pub(crate) fn plain(body: Guarded) -> Self {
        Self::new(VecDeque::new(), 0, Some(body), None, Arc::default(), None)
    }

    /// No body (a listing asked of every box).
    pub(crate) fn empty() -> Self {
        Self::new(VecDeque::new(), 0, None, None, Arc::default(), None)
    }

    fn new(
        held: VecDeque<Frame<Bytes>>,
        held_bytes: u64,
        rest: Option<Guarded>,
        gate: Option<ModelGate>,
        asked: Arc<AtomicBool>,
        model: Option<String>,
    ) -> Self {
        Self {
            held,
            held_bytes,
            rest,
            gate,
            asked,
            model,
            spare: None,
            polled: false,
        }
    }

    /// The model the gate read, if it did.
    pub(crate) fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// From now on, if this body is dropped before anything of it was
    /// sent, it goes back to the returned spare (taken out with
    /// `.lock().take()`), to be sent elsewhere.
    pub(crate) fn keep_if_unsent(&mut self) -> Spare {
        let spare = Spare::default();
        self.spare = Some(Arc::clone(&spare));
        spare
    }

    /// Whether the gate asked for the stream's usage, readable once the body
    /// has gone (Ollama reads a request whole before it answers).
    pub(crate) fn usage_asked(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.asked)
    }

    /// Reads `body` through `gate` until it decides: the body to forward,
    /// or why not.
    pub(crate) async fn through_gate(
        mut body: Guarded,
        mut gate: ModelGate,
    ) -> Result<Self, BodyError> {
        use http_body_util::BodyExt;
        let mut held = VecDeque::new();
        let mut held_bytes = 0;
        let asked = Arc::new(AtomicBool::new(false));
        loop {
            // A request without a body (a GET) is decided without a poll.
            let next = if body.is_end_stream() {
                None
            } else {
                body.frame().await
            };
            let Some(frame) = next else {
                return match gate.finish() {
                    GateStep::Refuse(refusal) => Err(BodyError::Refused(refusal)),
                    _ => {
                        let model = gate.model().map(str::to_owned);
                        Ok(Self::new(held, held_bytes, None, None, asked, model))
                    }
                };
            };
            let mut frame = frame?;
            let step = frame.data_ref().map_or(GateStep::Hold, |data| {
                held_bytes += data.len() as u64;
                gate.push(data)
            });
            if let (GateStep::PassWithUsage { at }, Some(data)) = (&step, frame.data_ref()) {
                frame = Frame::data(Bytes::from(with_usage(data, *at)));
                held_bytes += ollama_proxy_core::INCLUDE_USAGE.len() as u64;
                asked.store(true, Ordering::Relaxed);
            }
            held.push_back(frame);
            match step {
                GateStep::Hold => {}
                GateStep::Pass | GateStep::PassWithUsage { .. } => {
                    let model = gate.model().map(str::to_owned);
                    let gate = gate.scanning().then_some(gate);
                    return Ok(Self::new(held, held_bytes, Some(body), gate, asked, model));
                }
                GateStep::Refuse(refusal) => return Err(BodyError::Refused(refusal)),
            }
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        this.polled = true;
        if let Some(frame) = this.held.pop_front() {
            if let Some(data) = frame.data_ref() {
                this.held_bytes -= data.len() as u64;
            }
            return Poll::Ready(Some(Ok(frame)));
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(Pin::new(rest).poll_frame(cx));
        let Some(gate) = this.gate.as_mut() else {
            return Poll::Ready(polled);
        };
        // Past the hold the gate only passes (perhaps asking for usage) or
        // refuses.
        let step = match &polled {
            Some(Ok(frame)) => frame.data_ref().map(|data| gate.push(data)),
            None => Some(gate.finish()),
            Some(Err(_)) => None,
        };
        if !gate.scanning() {
            this.gate = None;
        }
        match (step, polled) {
            (Some(GateStep::Refuse(refusal)), _) => {
                Poll::Ready(Some(Err(BodyError::Refused(refusal))))
            }
            (Some(GateStep::PassWithUsage { at }), Some(Ok(frame))) => {
                this.asked.store(true, Ordering::Relaxed);
                let data = frame.into_data().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(with_usage(&data, at))))))
            }
            (_, polled) => Poll::Ready(polled),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.rest.as_ref().is_none_or(Guarded::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let rest = self
            .rest
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Guarded::size_hint);
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + self.held_bytes);
        // A body the gate may still add to has no upper bound.
        let may_grow = self.gate.as_ref().is_some_and(ModelGate::may_grow);
        if let (Some(upper), false) = (rest.upper(), may_grow) {
            hint.set_upper(upper + self.held_bytes);
        }
        hint
    }
}

pin_project! {
    /// The response body sent to the client: the proxy's own small answer, or
    /// the origin's body streamed through, which logs the exchange when done.
    #[project = ResponseBodyProj]
    pub(crate) enum ResponseBody {
        Local { #[pin] body: Full<Bytes> },
        Upstream { #[pin] body: Logged },
    }
}

impl ResponseBody {
    pub(crate) fn local(bytes: Bytes) -> Self {
        Self::Local {
            body: Full::new(bytes),
        }
    }

    /// The origin's answer, streamed through with what travels with it.
    pub(crate) fn upstream(
        body: Guarded<Driven>,
        log: RequestLog,
        exchange: Exchange,
        with: Along,
    ) -> Self {
        log.metrics.stream_opened();
        Self::Upstream {
            body: Logged {
                body,
                log,
                exchange,
                status: with.status,
                outcome: None,
                notice: with.notice,
                failed: None,
                meter: with.meter,
                filter: with.filter,
                ended: false,
                _lease: with.lease,
                backend: with.backend,
            },
        }
    }
}

/// What travels with an origin's answer on its way to the client.
pub(crate) struct Along {
    pub(crate) status: StatusCode,
    /// Written into the stream if the origin's body breaks, before the
    /// connection is aborted (see `Exchange::interrupted_stream_notice`).
    pub(crate) notice: Option<Bytes>,
    /// Reads an LLM answer's usage.
    pub(crate) meter: Option<UsageMeter>,
    /// Takes out the usage chunk the proxy asked for.
    pub(crate) filter: Option<UsageChunkFilter>,
    /// The request's slot, given back when the answer ends.
    pub(crate) lease: Option<LeaseGuard>,
    /// The box it came from (with several), told when the answer breaks.
    pub(crate) backend: Option<crate::backends::InFlight>,
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            ResponseBodyProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
            ResponseBodyProj::Upstream { body } => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local { body } => body.is_end_stream(),
            // Not over while an origin error waits to be reported.
            Self::Upstream { body } => body.failed.is_none() && body.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Local { body } => body.size_hint(),
            // A filtered answer's length is not known.
            Self::Upstream { body } if body.filter.is_some() => SizeHint::new(),
            Self::Upstream { body } => body.body.size_hint(),
        }
    }
}

pin_project! {
    /// The origin's body, which writes the request's log line when it ends or
    /// is dropped (a client that goes away drops it mid-stream).
    pub(crate) struct Logged {
        #[pin]
        body: Guarded<Driven>,
        log: RequestLog,
        exchange: Exchange,
        status: StatusCode,
        outcome: Option<Outcome>,
        notice: Option<Bytes>,
        // The origin's error, held back while the notice goes out.
        failed: Option<(BodyError, bool)>,
        // Reads an LLM answer's usage as it passes.
        meter: Option<UsageMeter>,
        // Takes out the usage chunk the proxy asked for.
        filter: Option<UsageChunkFilter>,
        // The origin's body ended (and what the filter held went out).
        ended: bool,
        // The request's slot on the GPU, given back when this is dropped.
        _lease: Option<LeaseGuard>,
        // The box it came from, counted in flight until this is dropped.
        backend: Option<crate::backends::InFlight>,
    }

    impl PinnedDrop for Logged {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let outcome = match *this.outcome {
                Some(outcome) => outcome,
                None if this.body.is_end_stream() => Outcome::Complete,
                None => Outcome::ClientGone,
            };
            // A stream that broke off carries the same code as the record
            // written into it.
            let error = matches!(outcome, Outcome::OriginError | Outcome::IdleTimeout)
                .then_some(ProxyError::OriginStreamInterrupted);
            if let (Outcome::OriginError, Some(backend)) = (outcome, this.backend.as_ref()) {
                backend.broke();
            }
            let usage = this.meter.take().map(|meter| {
                meter.finish(match outcome {
                    Outcome::Complete => Ended::Complete,
                    Outcome::ClientGone => Ended::ClientGone,
                    Outcome::IdleTimeout | Outcome::OriginError => Ended::OriginError,
                })
            });
            let dropped = this.filter.as_ref().map_or(0, UsageChunkFilter::dropped_bytes);
            this.log.finish_with_usage(
                this.exchange,
                *this.status,
                outcome,
                this.body.seen - dropped,
                error,
                usage.as_ref(),
            );
            this.log.metrics.stream_closed();
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        if let Some((error, flushed)) = this.failed.take() {
            if flushed {
                return Poll::Ready(Some(Err(error)));
            }
            // One `Pending` first: hyper flushes what it has buffered (the
            // notice) when the body is not ready, and aborts the connection
            // without flushing when it gets the error.
            *this.failed = Some((error, true));
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if *this.ended {
            return Poll::Ready(None);
        }
        let polled = loop {
            let polled = ready!(this.body.as_mut().poll_frame(cx));
            if let (Some(meter), Some(Ok(frame))) = (this.meter.as_mut(), &polled) {
                if let Some(data) = frame.data_ref() {
                    meter.feed(data, this.log.elapsed_us());
                }
            }
            let Some(filter) = this.filter.as_mut() else {
                break polled;
            };
            let mut out = Vec::new();
            match polled {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => filter.push(&data, &mut out),
                    Err(frame) => break Some(Ok(frame)),
                },
                // What was held goes out before the end.
                None => {
                    filter.finish(&mut out);
                    if out.is_empty() {
                        break None;
                    }
                    *this.ended = true;
                    *this.outcome = Some(Outcome::Complete);
                    return Poll::Ready(Some(Ok(Frame::data(Bytes::from(out)))));
                }
                error => break error,
            }
            // All held: nothing to send yet (never an empty frame).
            if !out.is_empty() {
                break Some(Ok(Frame::data(Bytes::from(out))));
            }
        };
        match &polled {
            None => *this.outcome = Some(Outcome::Complete),
            Some(Err(BodyError::Idle)) => *this.outcome = Some(Outcome::IdleTimeout),
            Some(Err(_)) => *this.outcome = Some(Outcome::OriginError),
            Some(Ok(_)) => {}
        }
        match polled {
            Some(Err(error)) if this.notice.is_some() => {
                *this.failed = Some((error, false));
                let notice = this.notice.take().unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(notice))))
            }
            // What went out before the break reaches the client first (the
            // head, at least), however soon the error came after it.
            Some(Err(error)) => {
                *this.failed = Some((error, true));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            polled => Poll::Ready(polled),
        }
    }
}
