//! An LLM's answer on its way to the client: its chunks go on as JS
//! objects, each copied into WASM once to be read by the core's usage meter
//! ([`UsageMeter`]); when the stream ends the request's log line (and
//! Analytics Engine data point) is written with the usage.
//!
//! JS owns the [`AnswerMeter`] (js/guard.js `meterStream`): it calls `feed`
//! for every chunk, `finish` once at the end, then frees it, so its memory
//! is released when the stream ends, whatever the runtime does.

use http::StatusCode;
use ollama_proxy_core::{Ended, Exchange, UsageChunkFilter, UsageMeter};
use wasm_bindgen::prelude::wasm_bindgen;

use crate::log::Line;

/// How a stream ended, as JS reports it to [`AnswerMeter::finish`].
const COMPLETE: u32 = 0;
const CLIENT_GONE: u32 = 1;

/// The usage meter, log line and exchange of one metered answer.
#[wasm_bindgen]
pub struct AnswerMeter {
    meter: Option<UsageMeter>,
    // Takes out the usage chunk the proxy asked for.
    filter: Option<UsageChunkFilter>,
    line: Line,
    exchange: Exchange,
    status: StatusCode,
    env: worker::Env,
    /// The box it came from and how many there are (with several): told
    /// when the answer breaks off.
    backend: Option<(usize, usize)>,
}

impl AnswerMeter {
    /// The answer comes from box `backend` of `count`.
    pub(crate) fn with_backend(mut self, backend: Option<(usize, usize)>) -> Self {
        self.backend = backend;
        self
    }

    pub(crate) fn new(
        meter: UsageMeter,
        filter: Option<UsageChunkFilter>,
        line: Line,
        exchange: Exchange,
        status: StatusCode,
        env: worker::Env,
    ) -> Self {
        Self {
            meter: Some(meter),
            filter,
            line,
            exchange,
            status,
            env,
            backend: None,
        }
    }
}

#[wasm_bindgen]
impl AnswerMeter {
    /// Whether [`feed`](Self::feed) may change the stream (then JS sends
    /// what it returns; otherwise the chunk goes on before it is read).
    #[wasm_bindgen(getter)]
    pub fn filters(&self) -> bool {
        self.filter.is_some()
    }

    /// One chunk of the answer, passing at `now_ms` (`Date.now()`): what to
    /// send instead of it, if not the chunk itself (see [`UsageChunkFilter`]).
    pub fn feed(&mut self, chunk: &[u8], now_ms: f64) -> Option<Vec<u8>> {
        let since_start = ((now_ms - self.line.started) * 1000.0).max(0.0) as u64;
        if let Some(meter) = self.meter.as_mut() {
            meter.feed(chunk, since_start);
        }
        let filter = self.filter.as_mut()?;
        let mut out = Vec::new();
        filter.push(chunk, &mut out);
        // Most chunks are whole events that stay: JS sends its own copy.
        (out != chunk).then_some(out)
    }

    /// The answer ended: what is still held back, to send before the end.
    pub fn flush(&mut self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        self.filter.as_mut()?.finish(&mut out);
        Some(out)
    }

    /// The stream ended (`0` complete, `1` the client left, `2` the
    /// origin's body broke off): logs the request with its usage.
    pub fn finish(&mut self, how: u32) {
        let Some(meter) = self.meter.take() else {
            return;
        };
        let ended = match how {
            COMPLETE => Ended::Complete,
            CLIENT_GONE => Ended::ClientGone,
            _ => Ended::OriginError,
        };
        let usage = meter.finish(ended);
        if let (Ended::OriginError, Some((backend, count))) = (ended, self.backend) {
            crate::backends::with(count, |b| b.failed(backend, crate::backends::now_us()));
        }
        let error = (ended == Ended::OriginError)
            .then_some(ollama_proxy_core::ProxyError::OriginStreamInterrupted);
        self.line
            .finish(&self.exchange, self.status, error, &self.env, Some(&usage));
    }
}
