//! The response body on its way to the client: the proxy's own answer, or
//! the origin's streamed through and logged at its end.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::StatusCode;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use ollama_proxy_core::{Ended, Exchange, ProxyError, UsageChunkFilter, UsageMeter};
use pin_project_lite::pin_project;

use super::{BodyError, Guarded};
use crate::log::{Outcome, RequestLog};
use crate::turns::LeaseGuard;
use crate::upstream::Driven;

pin_project! {
    /// The response body sent to the client: the proxy's own small answer, or
    /// the origin's body streamed through, which logs the exchange when done.
    #[project = ResponseBodyProj]
    pub(crate) enum ResponseBody {
        Local { #[pin] body: Full<Bytes> },
        // Boxed: what travels with an origin's answer is ≈ 0.7 KiB, and
        // the response is moved several times on its way to the client.
        Upstream { body: Pin<Box<Logged>> },
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
            body: Box::pin(Logged {
                body,
                log,
                exchange,
                status: with.status,
                outcome: None,
                client_error: None,
                notice: with.notice,
                failed: None,
                meter: with.meter,
                filter: with.filter,
                ended: false,
                _lease: with.lease,
                backend: with.backend,
            }),
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
    /// Boxed: only LLM answers have one, and what travels with the answer
    /// is moved several times on its way to the client.
    pub(crate) meter: Option<Box<UsageMeter>>,
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
            ResponseBodyProj::Upstream { body } => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Local { body } => body.is_end_stream(),
            // Not over while an origin error waits to be reported, nor
            // while the usage filter may still hold the stream's last bytes
            // (an answer of known length ends with its last frame).
            Self::Upstream { body } => {
                body.failed.is_none()
                    && (body.filter.is_none() || body.ended)
                    && body.body.is_end_stream()
            }
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
        // Why the client's request body failed, when that cut the answer.
        client_error: Option<ProxyError>,
        notice: Option<Bytes>,
        // The origin's error, held back while the notice goes out.
        failed: Option<(BodyError, bool)>,
        // Reads an LLM answer's usage as it passes.
        meter: Option<Box<UsageMeter>>,
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
            // written into it; a client whose body failed, why it did.
            let error = match outcome {
                Outcome::OriginError | Outcome::IdleTimeout => {
                    Some(ProxyError::OriginStreamInterrupted)
                }
                Outcome::Complete | Outcome::ClientGone => *this.client_error,
            };
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
            // The client's upload failed after the origin had answered: the
            // client's doing, so no notice blaming the origin and no mark
            // against its box.
            Some(Err(error)) if error.client_failure().is_some() => {
                *this.outcome = Some(Outcome::ClientGone);
                *this.client_error = error.client_failure().map(BodyError::kind);
            }
            Some(Err(_)) => *this.outcome = Some(Outcome::OriginError),
            Some(Ok(_)) => {}
        }
        match polled {
            Some(Err(error)) if this.notice.is_some() && this.client_error.is_none() => {
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
