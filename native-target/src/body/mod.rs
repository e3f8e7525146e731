//! Body wrappers: streamed through untouched, with a size limit, idle
//! timeouts and the end-of-exchange log line. Here the errors and the
//! client's body as read ([`Guarded`]); the body sent to the origin in
//! `request`, the one sent to the client in `response`.

mod request;
mod response;

pub(crate) use request::RequestBody;
pub(crate) use response::{Along, ResponseBody};

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use ollama_proxy_core::{ProxyError, Refusal};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::metrics::Metrics;

/// Why a streamed body stopped early.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The request body passed the configured limit.
    TooLarge,
    /// No chunk arrived within the idle timeout.
    Idle,
    /// The underlying connection failed (the client's, or the origin's).
    Io(Box<dyn StdError + Send + Sync>),
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
            Self::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl BodyError {
    /// What a failed request body is answered or logged as (a refusal by
    /// its own error).
    pub(crate) fn kind(&self) -> ProxyError {
        match self {
            Self::TooLarge => ProxyError::BodyTooLarge,
            Self::Idle => ProxyError::RequestTimeout,
            // Bad chunked framing, or the client left.
            Self::Io(_) => ProxyError::BadRequest,
            Self::Refused(refusal) => refusal.error(),
        }
    }

    /// The client's request body failure behind an origin answer's error
    /// (see [`ClientBodyFailed`]), if that is what it was.
    pub(crate) fn client_failure(&self) -> Option<&BodyError> {
        let Self::Io(inner) = self else {
            return None;
        };
        find_body_error(&**inner)
    }
}

/// The client's request body failed while the origin's answer was on its
/// way (an origin may answer before the body ends: Ollama's JSON decoder
/// stops at the value's end). Carried in the answer's error so that the
/// failure is not taken for the origin's.
#[derive(Debug)]
pub(crate) struct ClientBodyFailed(pub(crate) BodyError);

impl fmt::Display for ClientBodyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the client's request body failed: {}", self.0)
    }
}

impl StdError for ClientBodyFailed {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.0)
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
    /// A body that passes frames through unchanged, failing when it has
    /// waited longer than the idle timeout for a frame (and, for requests,
    /// past a size limit).
    pub(crate) struct Guarded<B = Incoming> {
        #[pin]
        inner: B,
        // Made when the body first has to wait (most small bodies never
        // do: no timer, no clock read); boxed, the origin client wants an
        // `Unpin` body.
        idle: Option<Pin<Box<Sleep>>>,
        // A frame came since the timer was set: the next wait starts it
        // anew.
        stale: bool,
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
            idle: None,
            stale: false,
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

impl<B> Body for Guarded<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
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
                *this.stale = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Io(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // The wait is timed from when it began: the time the
                // previous frame spent on its way out (a slow reader) is
                // not counted against this side.
                let idle = match this.idle {
                    Some(idle) if std::mem::take(this.stale) => {
                        idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                        idle
                    }
                    Some(idle) => idle,
                    None => {
                        *this.stale = false;
                        this.idle
                            .insert(Box::pin(tokio::time::sleep(*this.idle_timeout)))
                    }
                };
                ready!(idle.as_mut().poll(cx));
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
