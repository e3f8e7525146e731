//! A request the core sends on, from the origin's answer to the client's
//! response: driven from JS for the common request, or the whole way in
//! Rust ([`Forward::run`]).

use std::rc::Rc;

use ollama_proxy_core::{Backends, Exchange, Failure, Proxy, ProxyError};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use worker::worker_sys::Context as JsContext;
use worker::Env;

use crate::convert::{js_response, local_response, upstream_init, upstream_response_head};
use crate::upload::{self, Stopped, Upload};
use crate::{answer, answered, backends, log, turns};

mod listings;

#[wasm_bindgen(module = "/js/guard.js")]
extern "C" {
    /// Passes `body` through, appending `notice` if it breaks off (see js/guard.js).
    #[wasm_bindgen(js_name = guardStream)]
    fn guard_stream(
        body: &web_sys::ReadableStream,
        notice: &js_sys::Uint8Array,
    ) -> web_sys::ReadableStream;

    /// Passes an LLM's answer through `meter` (and `notice` if it breaks
    /// off): `{ stream, done }`, `done` settling once `meter` has finished
    /// — or, without a meter, once the answer has ended (see js/guard.js).
    #[wasm_bindgen(js_name = meterStream)]
    fn meter_stream(
        body: &web_sys::ReadableStream,
        notice: Option<js_sys::Uint8Array>,
        length: Option<f64>,
        meter: Option<answer::AnswerMeter>,
        client_signal: &web_sys::AbortSignal,
    ) -> js_sys::Object;

}

/// A request the core sends on. The common case (one Ollama box, no turn
/// to take, no body to read through a model gate) is driven from JS
/// (js/index.js): [`send`] the
/// subrequest, then [`answer`] with the origin's response, or [`failed`]
/// if the fetch failed, each a plain call; the others go through
/// [`run`], which awaits the doorman, the gate and the boxes' state in
/// Rust. Both use the same steps below.
///
/// [`send`]: Forward::send
/// [`answer`]: Forward::answer
/// [`failed`]: Forward::failed
/// [`run`]: Forward::run
#[wasm_bindgen]
pub struct Forward {
    proxy: Rc<Proxy>,
    exchange: Exchange,
    head: http::request::Parts,
    line: log::Line,
    env: Env,
    /// The body on its way, once sent.
    upload: Option<Upload>,
    /// Why it was not sent, when the gate refused it.
    stopped: Option<Stopped>,
}

impl Forward {
    pub(crate) fn new(
        proxy: Rc<Proxy>,
        exchange: Exchange,
        head: http::request::Parts,
        line: log::Line,
        env: Env,
    ) -> Self {
        Self {
            proxy,
            exchange,
            head,
            line,
            env,
            upload: None,
            stopped: None,
        }
    }
}

#[wasm_bindgen]
impl Forward {
    /// Whether JS can drive it: one origin, no turn to take, and no model
    /// gate to read a body through (a gate on a request without a body
    /// decides at once). Otherwise [`Forward::run`].
    pub fn direct(&self, request: &web_sys::Request) -> bool {
        self.proxy.config().origins().len() == 1
            && self.exchange.turn().is_none()
            && (!self.exchange.has_model_gate() || request.body().is_none())
    }

    /// Sends the request to the origin as it is: the fetch's promise.
    ///
    /// # Errors
    /// The gate refused it, or the subrequest could not be built: JS
    /// throws and answers with [`Forward::failed`].
    pub fn send(&mut self, request: &web_sys::Request) -> Result<js_sys::Promise, JsValue> {
        let limit = self.exchange.streamed_body_limit();
        let length = self.exchange.declared_length();
        let upload = match self.exchange.model_gate() {
            None => upload::plain(body(&self.head, request), limit, length, request.signal())?,
            Some(gate) => match upload::without_body(gate, request.signal()) {
                Ok(upload) => upload,
                Err(stopped) => {
                    self.stopped = Some(stopped);
                    return Err(JsValue::NULL);
                }
            },
        };
        let upload = self.upload.insert(upload);
        Ok(subrequest(&self.head, upload)?)
    }

    /// The origin's answer to [`Forward::send`]: the response for the client
    /// (a promise of it for a listing filtered for the key, which is read
    /// whole first). An LLM's answer is metered as it passes; `ctx` keeps
    /// the request alive until it has been logged.
    pub fn answer(
        mut self,
        upstream: web_sys::Response,
        request: &web_sys::Request,
        ctx: &JsContext,
    ) -> JsValue {
        let asked = self.upload.take().is_some_and(|u| u.asked_for_usage());
        let head = match self.upstream_head(&upstream) {
            Ok(head) => head,
            Err(error) => return answered(Err(error)),
        };
        if self.exchange.filters_listing(head.status) {
            return wasm_bindgen_futures::future_to_promise(async move {
                let response = self.listing(head, &upstream).await;
                Ok(answered(response))
            })
            .into();
        }
        let answered_with = self.stream(head, upstream.body(), asked, None, request);
        match answered_with {
            Ok((response, done)) => {
                if let Some(done) = done {
                    let _ = ctx.wait_until(&done);
                }
                response.into()
            }
            Err(error) => answered(Err(error)),
        }
    }

    /// The fetch from [`Forward::send`] failed: why, as the client's answer
    /// (the body refused or over the limit, else the origin unreachable).
    pub fn failed(mut self) -> web_sys::Response {
        let stopped = self
            .stopped
            .take()
            .or_else(|| self.upload.take().and_then(|u| u.stopped()));
        let stopped = stopped.unwrap_or(Stopped::Error(ProxyError::OriginUnreachable));
        let response = self.stopped_response(stopped);
        answered(response).unchecked_into()
    }

    /// The whole way in Rust: the doorman's turn (a limited key, or a
    /// generation under `MAX_CONCURRENT`; its lease held, renewed, until
    /// the answer ends, then given back, whichever way this request ends),
    /// then the model gate (after the turn, so the key's limits bound the
    /// bodies held in the isolate for it), several boxes.
    ///
    /// # Errors
    /// Never: every failure is an answer.
    pub async fn run(
        mut self,
        request: web_sys::Request,
        ctx: JsContext,
    ) -> Result<JsValue, JsValue> {
        let lease = match self.exchange.turn().cloned() {
            None => None,
            Some(turn) => match turns::take(&self.env, &turn).await {
                Ok(taken) => {
                    self.exchange.admitted(taken.rate);
                    taken.lease
                }
                Err(turns::NoTurn::Refused(refusal)) => {
                    let response = self.exchange.turn_refusal_response(&refusal);
                    self.finish_line(response.status(), None);
                    return Ok(answered(local_response(response)));
                }
                Err(unavailable) => {
                    // Limits that cannot be kept refuse the request, never
                    // let it through: a missing binding is a configuration
                    // error; a call that failed (the object restarting, its
                    // storage failing) is worth trying again.
                    let error = match unavailable {
                        turns::NoTurn::Failed(why) => {
                            worker::console_error!(
                                "ollama-proxy: the DOORMAN Durable Object could not be asked for a turn ({why}); the request is refused"
                            );
                            ProxyError::ServerBusy
                        }
                        _ => {
                            worker::console_error!(
                                "ollama-proxy: config error: limits are configured (MAX_CONCURRENT, or a key's max_concurrent or requests_per_minute) but the DOORMAN Durable Object binding is missing; see README \"Fair share\""
                            );
                            ProxyError::Misconfigured
                        }
                    };
                    let response = self.exchange.error_response(error);
                    self.finish_line(response.status(), Some(error));
                    return Ok(answered(local_response(response)));
                }
            },
        };
        // The lease is held from now until the answer ends: renewed while
        // the origin takes its time before the head too (a generation that
        // is not streamed sends nothing until it is done, longer than a
        // lease lives). `until` settles as the answer's end does, once
        // that is known.
        let settle = lease.map(|lease| {
            let mut settle = None;
            let until = js_sys::Promise::new(&mut |resolve, _| settle = Some(resolve));
            let hold = turns::hold(self.env.clone().into(), lease, Some(until));
            let _ = ctx.wait_until(&wasm_bindgen_futures::future_to_promise(async move {
                hold.await;
                Ok(JsValue::UNDEFINED)
            }));
            settle
        });
        let forwarded = self.forward(&request, &ctx).await;
        let done = forwarded.as_ref().ok().and_then(|(_, done)| done.clone());
        if let Some(done) = &done {
            let _ = ctx.wait_until(done);
        }
        // Resolved with the answer's end (a promise it then follows), or at
        // once when the answer has already ended.
        if let Some(settle) = settle.flatten() {
            let end = done.map_or(JsValue::UNDEFINED, JsValue::from);
            let _ = settle.call1(&JsValue::UNDEFINED, &end);
        }
        Ok(answered(forwarded.map(|(response, _)| response)))
    }
}

/// The subrequest for `head` with `upload`'s body and signal: the fetch's
/// promise.
/// The client's body to send on. workerd's fetch refuses a GET or HEAD
/// with a body (a TypeError, read as the box being unreachable): such a
/// request goes on without it, and its body is not read.
fn body(
    head: &http::request::Parts,
    request: &web_sys::Request,
) -> Option<web_sys::ReadableStream> {
    if bodiless(head) {
        None
    } else {
        request.body()
    }
}

fn subrequest(head: &http::request::Parts, upload: &Upload) -> worker::Result<js_sys::Promise> {
    let init = upstream_init(head, upload.body().as_ref(), &upload.signal)?;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    Ok(scope.fetch_with_str_and_init(&head.uri.to_string(), &init))
}

impl Forward {
    fn finish_line(&mut self, status: http::StatusCode, error: Option<ProxyError>) {
        self.line
            .finish(&self.exchange, status, error, &self.env, None);
    }

    /// Sends the request on and answers with the origin's answer: the
    /// response, and for an LLM's answer a promise that settles when it has
    /// ended.
    async fn forward(
        mut self,
        request: &web_sys::Request,
        ctx: &JsContext,
    ) -> worker::Result<(web_sys::Response, Option<js_sys::Promise>)> {
        let done_none = |response: worker::Result<web_sys::Response>| response.map(|r| (r, None));
        let proxy = Rc::clone(&self.proxy);
        let count = proxy.config().origins().len();
        // Body and abort signal ride along: the client going away cancels
        // the subrequest, and the body stays a JS stream (see upload.rs).
        let body = body(&self.head, request);
        let limit = self.exchange.streamed_body_limit();
        let length = self.exchange.declared_length();
        let upload = match self.exchange.model_gate() {
            None => upload::plain(body, limit, length, request.signal())?,
            Some(gate) => match upload::through_gate(body, gate, limit, request.signal()).await {
                Ok(upload) => upload,
                Err(stopped) => return done_none(self.stopped_response(stopped)),
            },
        };

        // With several Ollama boxes: which one (or all, for a listing).
        let mut routed = None;
        if count > 1 {
            let (inline, due) = backends::due(&proxy);
            if inline {
                backends::refresh(&proxy, due).await;
            } else if !due.is_empty() {
                let proxy = Rc::clone(&proxy);
                let _ = ctx.wait_until(&wasm_bindgen_futures::future_to_promise(async move {
                    backends::refresh(&proxy, due).await;
                    Ok(JsValue::UNDEFINED)
                }));
            }
            let now = backends::now_us();
            let chosen = backends::with(count, |b| {
                self.exchange.choose_backends(b, upload.model(), now)
            });
            let route = match chosen {
                Ok(route) => route,
                Err(response) => {
                    self.finish_line(response.status(), None);
                    return done_none(local_response(*response));
                }
            };
            if self.exchange.fans_out() {
                return done_none(self.fan_out(&route).await);
            }
            routed = Some((route, 0usize));
        }

        let upstream = loop {
            let backend = routed.as_ref().map(|(route, at)| route.candidates[*at]);
            let sent = match backend {
                Some(backend) => {
                    let mut copy = self.head.clone();
                    proxy.aim(&mut copy, backend);
                    subrequest(&copy, &upload)?
                }
                None => subrequest(&self.head, &upload)?,
            };
            if let Ok(response) = JsFuture::from(sent).await {
                break response.unchecked_into::<web_sys::Response>();
            }
            let stopped = upload.stopped();
            // A client that left aborted the fetch: not the box's failure.
            let box_failed = stopped.is_none() && !upload.signal.aborted();
            if let (true, Some(backend), Some((route, at))) = (box_failed, backend, routed.as_mut())
            {
                backends::with(count, |b| b.failed(backend, backends::now_us()));
                // workerd reports a connection refused and one lost after
                // the request went out alike ("Network connection lost"),
                // so only a request without a body or side effects is
                // tried again.
                let failure = if bodiless(&self.head) {
                    Failure::BeforeSent
                } else {
                    Failure::AfterSent
                };
                if let Some(next) = Backends::retry(route, *at, failure) {
                    *at = route
                        .candidates
                        .iter()
                        .position(|&b| b == next)
                        .unwrap_or(*at + 1);
                    continue;
                }
            }
            let stopped = stopped.unwrap_or(Stopped::Error(ProxyError::OriginUnreachable));
            return done_none(self.stopped_response(stopped));
        };
        let backend = routed
            .as_ref()
            .map(|(route, at)| (route.candidates[*at], count));
        if let Some((backend, _)) = backend {
            let model = upload.model().filter(|_| self.exchange.is_llm());
            let status = upstream.status();
            backends::with(count, |b| {
                b.observed(backend, status, model, backends::now_us())
            });
        }
        let asked = upload.asked_for_usage();
        upload.release_when_ended();
        let head = self.upstream_head(&upstream)?;
        if self.exchange.filters_listing(head.status) {
            return done_none(self.listing(head, &upstream).await);
        }
        self.stream(head, upstream.body(), asked, backend, request)
    }

    /// The origin's response head, rewritten by the core.
    fn upstream_head(&self, upstream: &web_sys::Response) -> worker::Result<http::response::Parts> {
        let mut head = upstream_response_head(upstream)?;
        self.exchange.rewrite_response(&mut head);
        Ok(head)
    }

    /// The client's response with the origin's body: an LLM's answer read
    /// for its usage as it passes (logged at its end: the promise settles
    /// then), any other body passed through (logged now); a stream that
    /// can break off gets the core's notice appended if it does.
    fn stream(
        mut self,
        mut head: http::response::Parts,
        body: Option<web_sys::ReadableStream>,
        asked: bool,
        backend: Option<(usize, usize)>,
        request: &web_sys::Request,
    ) -> worker::Result<(web_sys::Response, Option<js_sys::Promise>)> {
        let notice = self.exchange.interrupted_stream_notice(&head);
        let mut done = None;
        // The length the client is held to, when it is the one of the
        // bytes passed on: workerd hands JS an encoded answer decoded (and
        // encodes it again on the way out), so an encoded answer's length
        // frames nothing here.
        let length = |head: &http::response::Parts| {
            let encoded = head
                .headers
                .get(http::header::CONTENT_ENCODING)
                .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
            ollama_proxy_core::declared_length(&head.headers)
                .ok()
                .flatten()
                .filter(|_| !encoded)
                .map(|n| n as f64)
        };
        let meter = self.exchange.usage_meter(&head);
        // A request holding a slot keeps it until its answer's last byte
        // (natively the response body does): without a meter, its answer
        // goes through a pass-through whose `done` says when.
        let held = self.exchange.turn().is_some_and(|t| t.slot());
        let body = match (body, meter) {
            (Some(body), None) if held => {
                self.finish_line(head.status, None);
                let passed = meter_stream(
                    &body,
                    notice.map(|n| n[..].into()),
                    length(&head),
                    None,
                    &request.signal(),
                );
                let field = |name: &str| js_sys::Reflect::get(&passed, &name.into());
                done = Some(field("done")?.unchecked_into());
                Some(field("stream")?.unchecked_into())
            }
            (Some(body), Some(meter)) => {
                let status = head.status;
                let filter = self.exchange.usage_filter(asked, &mut head);
                let length = length(&head);
                let Self {
                    exchange,
                    line,
                    env,
                    ..
                } = self;
                let meter = answer::AnswerMeter::new(meter, filter, line, exchange, status, env)
                    .with_backend(backend);
                let metered = meter_stream(
                    &body,
                    notice.map(|n| n[..].into()),
                    length,
                    Some(meter),
                    &request.signal(),
                );
                let field = |name: &str| js_sys::Reflect::get(&metered, &name.into());
                done = Some(field("done")?.unchecked_into());
                Some(field("stream")?.unchecked_into())
            }
            (body, _) => {
                self.finish_line(head.status, None);
                match (body, notice) {
                    (Some(body), Some(notice)) => Some(guard_stream(&body, &notice[..].into())),
                    (body, _) => body,
                }
            }
        };
        Ok((js_response(&head, body.as_ref())?, done))
    }

    /// The answer when the body was not forwarded: refused for its model,
    /// over the limit, broken; or the origin could not be reached.
    fn stopped_response(&mut self, stopped: Stopped) -> worker::Result<web_sys::Response> {
        let (response, error) = match stopped {
            Stopped::Refused(refusal) => (self.exchange.refusal_response(&refusal), None),
            Stopped::Error(error) => (self.exchange.error_response(error), Some(error)),
        };
        self.finish_line(response.status(), error);
        local_response(response)
    }
}

/// A `GET` or `HEAD`: sent again after a failed connection it cannot
/// change anything (nor carry a body that is gone).
fn bodiless(head: &http::request::Parts) -> bool {
    head.method == http::Method::GET || head.method == http::Method::HEAD
}
