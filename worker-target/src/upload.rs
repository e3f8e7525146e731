//! The request body on its way to the origin.
//!
//! Without a model gate it stays a JS stream, passed through a stream of
//! the Worker's own that tells a client breaking its body (400, the box not
//! held responsible) from an origin failing (502): with a declared length,
//! piped by the runtime into a FixedLengthStream (the origin still gets the
//! length; no JS per chunk); without one, a JS pull-stream that also counts
//! it against the body limit. With a gate (a key limited to some models),
//! the chunks are read here until the core's gate decides, each copied into WASM only to be
//! scanned (the chunk itself stays a JS object), and held; then a JS
//! pull-stream sends the held chunks and the rest on, asking the gate about
//! each later chunk until it has seen the whole JSON value (js/guard.js).
//! When the gate asks for a stream's usage, the chunk that ends the object
//! is replaced by a copy with the members added.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use ollama_proxy_core::{with_usage, GateStep, ModelGate, ProxyError, Refusal};
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{AbortSignal, ReadableStream, ReadableStreamDefaultReader};

#[wasm_bindgen::prelude::wasm_bindgen(module = "/js/guard.js")]
extern "C" {
    /// `{ stream, signal, exceeded, clientFailed, ended }`: the held
    /// chunks, then what `reader` still has, with `check` asked about each
    /// later chunk and the end (see js/guard.js).
    #[wasm_bindgen(js_name = forwardUpload)]
    fn forward_upload(
        held: &Array,
        reader: Option<&ReadableStreamDefaultReader>,
        check: Option<&js_sys::Function>,
        limit: f64,
        client_signal: &AbortSignal,
    ) -> Object;

    /// The same for a body of declared `length` with nothing to check,
    /// piped by the runtime (see js/guard.js).
    #[wasm_bindgen(js_name = forwardFixed)]
    fn forward_fixed(body: &ReadableStream, length: f64, client_signal: &AbortSignal) -> Object;
}

/// What the gate's JS callback answers.
const PASS: u32 = 0;
const DONE: u32 = 1;
const REFUSE: u32 = 2;

/// Why the body was not forwarded.
pub(crate) enum Stopped {
    /// The key's model list refused it.
    Refused(Refusal),
    /// A proxy error: the body was over the limit, or broke.
    Error(ProxyError),
}

/// The body to send to the origin and what to ask once the fetch settles.
pub(crate) struct Upload {
    /// The stream for the subrequest, if there is a body.
    pub(crate) stream: Option<ReadableStream>,
    /// The signal the subrequest follows.
    pub(crate) signal: AbortSignal,
    upload: Option<Object>,
    refusal: Rc<RefCell<Option<Refusal>>>,
    asked: Rc<Cell<bool>>,
    // Kept alive while the fetch runs: JS calls it for each chunk.
    _check: Option<Closure<dyn FnMut(JsValue) -> JsValue>>,
    /// The model the gate read.
    model: Option<String>,
}

impl Upload {
    /// The body for the subrequest.
    pub(crate) fn body(&self) -> Option<JsValue> {
        self.stream.as_ref().map(Into::into)
    }

    /// The model the gate read, if it did.
    pub(crate) fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    /// Whether the gate asked for the stream's usage (read once the fetch
    /// has its answer: Ollama reads a request whole before it answers).
    pub(crate) fn asked_for_usage(&self) -> bool {
        self.asked.get()
    }

    /// Lets the upload go once it has ended. The gate behind it is asked
    /// about every later chunk until then, and an origin may answer — its
    /// head arriving here — before it has the whole body: a gate dropped
    /// with the head made the next chunk a refusal that cut the answer.
    pub(crate) fn release_when_ended(self) {
        if self._check.is_none() {
            return;
        }
        let ended = self
            .upload
            .as_ref()
            .and_then(|upload| Reflect::get(upload, &"ended".into()).ok())
            .and_then(|ended| ended.dyn_into::<js_sys::Promise>().ok());
        if let Some(ended) = ended {
            wasm_bindgen_futures::spawn_local(async move {
                let _ = JsFuture::from(ended).await;
                drop(self);
            });
        }
    }

    /// Why a fetch that failed did, when the upload was the cause.
    pub(crate) fn stopped(&self) -> Option<Stopped> {
        if let Some(refusal) = self.refusal.borrow().clone() {
            return Some(Stopped::Refused(refusal));
        }
        let flag = |name: &str| {
            self.upload.as_ref().is_some_and(|upload| {
                Reflect::get(upload, &name.into()).is_ok_and(|v| v.is_truthy())
            })
        };
        if flag("exceeded") {
            return Some(Stopped::Error(ProxyError::BodyTooLarge));
        }
        // The client's body broke: answered (and logged) as natively, and
        // not held against the box.
        flag("clientFailed").then_some(Stopped::Error(ProxyError::BadRequest))
    }

    fn from_js(
        upload: Object,
        refusal: Rc<RefCell<Option<Refusal>>>,
        asked: Rc<Cell<bool>>,
        check: Option<Closure<dyn FnMut(JsValue) -> JsValue>>,
    ) -> Result<Self, JsValue> {
        let field = |name: &str| Reflect::get(&upload, &name.into());
        Ok(Self {
            stream: Some(field("stream")?.unchecked_into()),
            signal: field("signal")?.unchecked_into(),
            upload: Some(upload),
            refusal,
            asked,
            _check: check,
            model: None,
        })
    }
}

/// The body as it is, passed through a stream of the Worker's own that
/// tells a client breaking it from an origin failing: a declared `length`
/// piped by the runtime into a FixedLengthStream (the origin still gets
/// that length); without one, a JS pull-stream counting it against `limit`.
pub(crate) fn plain(
    body: Option<ReadableStream>,
    limit: Option<u64>,
    length: Option<u64>,
    client_signal: AbortSignal,
) -> Result<Upload, JsValue> {
    let refusal = Rc::default();
    match body {
        // u64 → f64 is exact up to 2^53 bytes, far above any body limit.
        Some(body) => {
            let upload = match length {
                Some(length) => forward_fixed(&body, length as f64, &client_signal),
                None => {
                    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
                    forward_upload(
                        &Array::new(),
                        Some(&reader),
                        None,
                        limit.map_or(f64::INFINITY, |limit| limit as f64),
                        &client_signal,
                    )
                }
            };
            Upload::from_js(upload, refusal, Rc::default(), None)
        }
        stream => Ok(Upload {
            stream,
            signal: client_signal,
            upload: None,
            refusal,
            asked: Rc::default(),
            _check: None,
            model: None,
        }),
    }
}

/// Reads the body through `gate` until it decides, then returns the body to
/// forward. `limit`: count it, when no length was declared.
///
/// # Errors
/// The refusal or error to answer with; the client's body is cancelled.
pub(crate) async fn through_gate(
    body: Option<ReadableStream>,
    mut gate: ModelGate,
    limit: Option<u64>,
    client_signal: AbortSignal,
) -> Result<Upload, Stopped> {
    let Some(body) = body else {
        return without_body(gate, client_signal);
    };
    let limit = limit.unwrap_or(u64::MAX);
    let held = Array::new();
    let mut scratch = Vec::new();
    let mut seen: u64 = 0;
    let asked: Rc<Cell<bool>> = Rc::default();
    let reader: ReadableStreamDefaultReader = body.get_reader().unchecked_into();
    let step = loop {
        let next = match JsFuture::from(reader.read()).await {
            Ok(next) => next,
            // The client's body broke (it went away, or bad framing).
            Err(_) => return Err(Stopped::Error(ProxyError::BadRequest)),
        };
        if Reflect::get(&next, &"done".into()).is_ok_and(|d| d.is_truthy()) {
            break gate.finish();
        }
        let Ok(chunk) = Reflect::get(&next, &"value".into()) else {
            return Err(Stopped::Error(ProxyError::BadRequest));
        };
        let chunk: Uint8Array = chunk.unchecked_into();
        seen += u64::from(chunk.length());
        if seen > limit {
            let _ = reader.cancel();
            return Err(Stopped::Error(ProxyError::BodyTooLarge));
        }
        let step = push(&mut gate, &chunk, &mut scratch);
        if let GateStep::PassWithUsage { at } = step {
            asked.set(true);
            held.push(&Uint8Array::from(&with_usage(&scratch, at)[..]));
        } else {
            held.push(&chunk);
        }
        if step != GateStep::Hold {
            break step;
        }
    };
    let model = gate.model().map(str::to_owned);
    match step {
        GateStep::Refuse(refusal) => {
            let _ = reader.cancel();
            Err(Stopped::Refused(refusal))
        }
        _ => {
            let refusal: Rc<RefCell<Option<Refusal>>> = Rc::default();
            let check = gate
                .scanning()
                .then(|| checker(gate, Rc::clone(&refusal), Rc::clone(&asked)));
            let upload = forward_upload(
                &held,
                Some(&reader),
                check.as_ref().map(|c| c.as_ref().unchecked_ref()),
                if limit == u64::MAX {
                    f64::INFINITY
                } else {
                    limit as f64
                },
                &client_signal,
            );
            let mut upload = Upload::from_js(upload, refusal, asked, check)
                .map_err(|_| Stopped::Error(ProxyError::BadRequest))?;
            upload.model = model;
            Ok(upload)
        }
    }
}

/// A request without a body (a GET) through `gate`: it decides at once, on
/// the end of an empty body (a model the route requires is missing), so
/// this needs no promise.
///
/// # Errors
/// The refusal to answer with.
pub(crate) fn without_body(
    mut gate: ModelGate,
    client_signal: AbortSignal,
) -> Result<Upload, Stopped> {
    if let GateStep::Refuse(refusal) = gate.finish() {
        return Err(Stopped::Refused(refusal));
    }
    Ok(Upload {
        stream: None,
        signal: client_signal,
        upload: None,
        refusal: Rc::default(),
        asked: Rc::default(),
        _check: None,
        model: gate.model().map(str::to_owned),
    })
}

/// Copies a JS chunk into WASM memory, only to scan it.
fn push(gate: &mut ModelGate, chunk: &Uint8Array, scratch: &mut Vec<u8>) -> GateStep {
    scratch.resize(chunk.length() as usize, 0);
    chunk.copy_to(scratch);
    gate.push(scratch)
}

/// The callback JS asks about each chunk after the hold (`null` at the
/// end): pass, done scanning, or refuse; or, when the gate asks for the
/// stream's usage, the chunk to send instead (and done scanning).
fn checker(
    mut gate: ModelGate,
    refusal: Rc<RefCell<Option<Refusal>>>,
    asked: Rc<Cell<bool>>,
) -> Closure<dyn FnMut(JsValue) -> JsValue> {
    let mut scratch = Vec::new();
    Closure::new(move |chunk: JsValue| {
        let step = if chunk.is_null() {
            gate.finish()
        } else {
            push(&mut gate, chunk.unchecked_ref(), &mut scratch)
        };
        let verdict = match step {
            GateStep::Refuse(r) => {
                *refusal.borrow_mut() = Some(r);
                REFUSE
            }
            GateStep::PassWithUsage { at } => {
                asked.set(true);
                return Uint8Array::from(&with_usage(&scratch, at)[..]).into();
            }
            _ if gate.scanning() => PASS,
            _ => DONE,
        };
        verdict.into()
    })
}
