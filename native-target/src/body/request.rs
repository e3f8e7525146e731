//! The request body on its way to the origin: what a model gate held back,
//! then the rest of the client's body.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use ollama_proxy_core::{with_usage, GateStep, ModelGate};

use super::{BodyError, Guarded};

/// The request body sent to the origin: the chunks a model gate held back,
/// then the rest of the client's body, still fed to the gate while it scans
/// (a refusal then aborts the upload; a stream's usage may be asked for).
pub(crate) struct RequestBody {
    held: VecDeque<Frame<Bytes>>,
    held_bytes: u64,
    // `None` once the client's body has ended.
    rest: Option<Guarded>,
    // Boxed: only a body still being scanned past its hold has one, and
    // the body is moved several times on its way to the connection.
    gate: Option<Box<ModelGate>>,
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

    /// A body of these pieces, all ready at once.
    #[cfg(test)]
    pub(crate) fn of_pieces(pieces: impl IntoIterator<Item = Bytes>) -> Self {
        let held: VecDeque<_> = pieces.into_iter().map(Frame::data).collect();
        let bytes = held
            .iter()
            .filter_map(Frame::data_ref)
            .map(Bytes::len)
            .sum::<usize>();
        Self::new(held, bytes as u64, None, None, Arc::default(), None)
    }

    fn new(
        held: VecDeque<Frame<Bytes>>,
        held_bytes: u64,
        rest: Option<Guarded>,
        gate: Option<Box<ModelGate>>,
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
                    let gate = gate.scanning().then(|| Box::new(gate));
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
        let may_grow = self.gate.as_deref().is_some_and(ModelGate::may_grow);
        if let (Some(upper), false) = (rest.upper(), may_grow) {
            hint.set_upper(upper + self.held_bytes);
        }
        hint
    }
}
