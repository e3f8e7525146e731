//! The Ollama proxy as a Cloudflare Worker, driving the pure core.
//!
//! The handler works on `web_sys::Request`/`Response` directly rather than
//! the `worker` crate's `http` feature, so bodies stay JS streams: the
//! request body is handed to the subrequest and the origin's body returned
//! as is, and no chunk is copied through WASM memory. Only headers cross into
//! Rust, where they become `http` types for the core; every decision (auth,
//! policy, CORS, header rewrite, proxy-made errors) comes from the core.
#![forbid(unsafe_code)]

mod answer;
mod backends;
mod convert;
mod log;
mod turns;
mod upload;
#[cfg(all(test, target_arch = "wasm32"))]
mod wasm_tests;

use std::cell::RefCell;
use std::rc::Rc;

use ollama_proxy_core::{
    early_error_response, Action, Backends, Config, Exchange, Failure, Proxy, ProxyError,
    RequestIds, UnixTime, MAX_LISTING_BYTES,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{event, Context, Env};

use crate::convert::{
    js_response, local_response, request_parts, upstream_init, upstream_response_head,
};
use crate::upload::Stopped;

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
    /// (see js/guard.js).
    #[wasm_bindgen(js_name = meterStream)]
    fn meter_stream(
        body: &web_sys::ReadableStream,
        notice: Option<js_sys::Uint8Array>,
        length: Option<f64>,
        meter: answer::AnswerMeter,
        client_signal: &web_sys::AbortSignal,
    ) -> js_sys::Object;

}

thread_local! {
    /// The parsed configuration, kept for the life of the isolate: vars and
    /// secrets cannot change without a new deployment (and a new isolate).
    /// Shared by reference: a request costs a reference count, not a copy.
    static PROXY: RefCell<Option<Rc<Proxy>>> = const { RefCell::new(None) };
}

/// Reads the configuration from vars and secrets (the same names as native),
/// once per isolate.
fn proxy(env: &Env) -> Result<Rc<Proxy>, ollama_proxy_core::ConfigError> {
    if let Some(proxy) = PROXY.with(|p| p.borrow().clone()) {
        return Ok(proxy);
    }
    let proxy = Rc::new(Proxy::new(Config::from_lookup(|var| {
        turns::edge_var(var, || env.var(var.name()).ok().map(|v| v.to_string()))
    })?));
    PROXY.with(|p| *p.borrow_mut() = Some(Rc::clone(&proxy)));
    Ok(proxy)
}

thread_local! {
    /// This isolate's request ids: a random seed drawn once, then the core's
    /// generator. (Drawing random bytes per request looked costly in workerd.)
    static IDS: RefCell<RequestIds> = RefCell::new(RequestIds::new(
        random_u64().unwrap_or_default(),
        random_u64().unwrap_or_default(),
    ));
}

/// 64 bits from the runtime's random source.
fn random_u64() -> Option<u64> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let mut bytes = [0u8; 8];
    scope
        .crypto()
        .ok()?
        .get_random_values_with_u8_array(&mut bytes)
        .ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A new request id, 32 hex digits as natively.
fn fresh_request_id() -> Option<http::HeaderValue> {
    Some(IDS.with(|ids| ids.borrow_mut().next()))
}

#[event(fetch)]
async fn fetch(
    request: web_sys::Request,
    env: Env,
    ctx: Context,
) -> worker::Result<web_sys::Response> {
    let started = js_sys::Date::now();
    let proxy = match proxy(&env) {
        Ok(proxy) => proxy,
        Err(error) => {
            // The variable's name and the rule it broke; never its value.
            worker::console_error!("ollama-proxy: config error: {error}");
            return local_response(early_error_response(ProxyError::Misconfigured));
        }
    };
    let Ok(parts) = request_parts(&request) else {
        // A URL or method `http` cannot represent; hyper refuses such a
        // request line natively with 400 too.
        return local_response(early_error_response(ProxyError::BadRequest));
    };
    let mut line = log::Line::start(&parts, started);
    let now = UnixTime::from_millis(started);
    let decision = proxy.decide_at(parts, fresh_request_id(), now);
    let mut exchange = decision.exchange;
    let head = match decision.action {
        Action::Respond(response) => {
            line.finish(&exchange, response.status(), None, &env, None);
            return local_response(response);
        }
        Action::Forward(head) => head,
    };

    // A limited key, or a generation under MAX_CONCURRENT: its turn first,
    // from the doorman object. The lease is held (renewed) until the
    // answer ends, then given back, whichever way this request ends.
    let lease = match exchange.turn().cloned() {
        None => None,
        Some(turn) => match turns::take(&env, &turn).await {
            Ok(taken) => {
                exchange.admitted(taken.rate);
                taken.lease
            }
            Err(turns::NoTurn::Refused(refusal)) => {
                let response = exchange.turn_refusal_response(&refusal);
                line.finish(&exchange, response.status(), None, &env, None);
                return local_response(response);
            }
            Err(turns::NoTurn::Unavailable) => {
                worker::console_error!(
                    "ollama-proxy: config error: limits are configured (MAX_CONCURRENT, or a key's max_concurrent or requests_per_minute) but the DOORMAN Durable Object binding is missing or failed; see README \"Fair share\""
                );
                let error = ProxyError::Misconfigured;
                let response = exchange.error_response(error);
                line.finish(&exchange, response.status(), Some(error), &env, None);
                return local_response(response);
            }
        },
    };
    let forwarded = forward(&request, &env, &ctx, &proxy, &mut exchange, head, line).await;
    let done = forwarded.as_ref().ok().and_then(|(_, done)| done.clone());
    if let Some(done) = &done {
        let done = done.clone();
        ctx.wait_until(async move {
            let _ = JsFuture::from(done).await;
        });
    }
    if let Some(lease) = lease {
        ctx.wait_until(turns::hold(env.clone().into(), lease, done));
    }
    forwarded.map(|(response, _)| response)
}

/// Sends the request on and answers with the origin's answer: the response,
/// and for an LLM's answer a promise that settles when it has ended.
#[allow(clippy::too_many_lines)]
async fn forward(
    request: &web_sys::Request,
    env: &Env,
    ctx: &Context,
    proxy: &Rc<Proxy>,
    exchange: &mut Exchange,
    head: http::request::Parts,
    mut line: log::Line,
) -> worker::Result<(web_sys::Response, Option<js_sys::Promise>)> {
    let env = env.clone();
    let done_none = |response: worker::Result<web_sys::Response>| response.map(|r| (r, None));
    let count = proxy.config().origins().len();
    // Body and abort signal ride along: the client going away cancels the
    // subrequest, and the body stays a JS stream (see upload.rs).
    let body = request.body();
    let limit = exchange.streamed_body_limit();
    let upload = match exchange.model_gate() {
        None => upload::plain(body, limit, request.signal())?,
        Some(gate) => match upload::through_gate(body, gate, limit, request.signal()).await {
            Ok(upload) => upload,
            Err(stopped) => return done_none(stopped_response(exchange, stopped, &mut line, &env)),
        },
    };

    // With several Ollama boxes: which one (or all, for a listing).
    let mut routed = None;
    if count > 1 {
        let (inline, due) = backends::due(proxy);
        if inline {
            backends::refresh(proxy, due).await;
        } else if !due.is_empty() {
            let proxy = Rc::clone(proxy);
            ctx.wait_until(async move { backends::refresh(&proxy, due).await });
        }
        let now = backends::now_us();
        let chosen = backends::with(count, |b| exchange.choose_backends(b, upload.model(), now));
        let route = match chosen {
            Ok(route) => route,
            Err(response) => {
                line.finish(exchange, response.status(), None, &env, None);
                return done_none(local_response(*response));
            }
        };
        if exchange.fans_out() {
            let response = fan_out(proxy, head, &route, exchange, &mut line, &env).await;
            return done_none(response);
        }
        routed = Some((route, 0usize));
    }

    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let upstream = loop {
        let backend = routed.as_ref().map(|(route, at)| route.candidates[*at]);
        let aimed;
        let sent = match backend {
            Some(backend) => {
                let mut copy = head.clone();
                proxy.aim(&mut copy, backend);
                aimed = copy;
                &aimed
            }
            None => &head,
        };
        let init = upstream_init(sent, upload.body().as_ref(), &upload.signal)?;
        let url = sent.uri.to_string();
        if let Ok(response) = JsFuture::from(scope.fetch_with_str_and_init(&url, &init)).await {
            break response.unchecked_into::<web_sys::Response>();
        }
        let stopped = upload.stopped();
        // A client that left aborted the fetch: not the box's failure.
        let box_failed = stopped.is_none() && !upload.signal.aborted();
        if let (true, Some(backend), Some((route, at))) = (box_failed, backend, routed.as_mut()) {
            backends::with(count, |b| b.failed(backend, backends::now_us()));
            // workerd reports a connection refused and one lost after the
            // request went out alike ("Network connection lost"), so only
            // a request without a body or side effects is tried again.
            let failure = if bodiless(&head) {
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
        return done_none(stopped_response(exchange, stopped, &mut line, &env));
    };
    if let Some((route, at)) = &routed {
        let backend = route.candidates[*at];
        let status = upstream.status();
        let model = upload.model().filter(|_| exchange.is_llm());
        backends::with(count, |b| {
            b.observed(backend, status, model, backends::now_us())
        });
    }
    let asked = upload.asked_for_usage();
    drop(upload);
    let mut head = upstream_response_head(&upstream)?;
    exchange.rewrite_response(&mut head);
    if exchange.filters_listing(head.status) {
        let filtered = read_listing(&upstream)
            .await
            .and_then(|all| exchange.filter_listing(&all));
        let (response, error) = match filtered {
            Ok(listing) => (http::Response::from_parts(head, listing), None),
            Err(error) => (exchange.error_response(error), Some(error)),
        };
        line.finish(exchange, response.status(), error, &env, None);
        return done_none(local_response(response));
    }
    let notice = exchange.interrupted_stream_notice(&head);
    let mut done = None;
    let body = match (upstream.body(), exchange.usage_meter(&head)) {
        // An LLM's answer: read for its usage as it passes, logged at its end.
        (Some(body), Some(meter)) => {
            let status = head.status;
            let filter = exchange.usage_filter(asked, &mut head);
            let length = head
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                .map(|n| n as f64);
            let backend = routed
                .as_ref()
                .map(|(route, at)| (route.candidates[*at], count));
            let meter =
                answer::AnswerMeter::new(meter, filter, line, exchange.clone(), status, env)
                    .with_backend(backend);
            let metered = meter_stream(
                &body,
                notice.map(|n| n[..].into()),
                length,
                meter,
                &request.signal(),
            );
            let field = |name: &str| js_sys::Reflect::get(&metered, &name.into());
            done = Some(field("done")?.unchecked_into());
            Some(field("stream")?.unchecked_into())
        }
        (body, _) => {
            line.finish(exchange, head.status, None, &env, None);
            match (body, notice) {
                (Some(body), Some(notice)) => Some(guard_stream(&body, &notice[..].into())),
                (body, _) => body,
            }
        }
    };
    Ok((js_response(&head, body.as_ref())?, done))
}

/// A `GET` or `HEAD`: sent again after a failed connection it cannot
/// change anything (nor carry a body that is gone).
fn bodiless(head: &http::request::Parts) -> bool {
    head.method == http::Method::GET || head.method == http::Method::HEAD
}

/// A listing with several boxes: asked of each available one at once,
/// each answer read whole, merged (then filtered for the key). A box that
/// fails is left out; none answering is the first error.
async fn fan_out(
    proxy: &Proxy,
    head: http::request::Parts,
    route: &ollama_proxy_core::Route,
    exchange: &mut Exchange,
    line: &mut log::Line,
    env: &Env,
) -> worker::Result<web_sys::Response> {
    let count = proxy.config().origins().len();
    let heads = route
        .candidates
        .iter()
        .map(|&b| {
            let mut sent = head.clone();
            proxy.aim(&mut sent, b);
            sent
        })
        .collect();
    let answers = backends::fetch_all(heads).await;
    let answers = backends::with(count, |state| {
        let now = backends::now_us();
        route
            .candidates
            .iter()
            .zip(answers)
            .map(|(&backend, answer)| match answer {
                Some((head, body)) => {
                    state.observed(backend, head.status.as_u16(), None, now);
                    if let (true, Some(probe)) = (head.status.is_success(), exchange.probe()) {
                        state.learnt(backend, probe, &body, now);
                    }
                    Ok((head, bytes::Bytes::from(body)))
                }
                None => {
                    state.failed(backend, now);
                    Err(ProxyError::OriginUnreachable)
                }
            })
            .collect()
    });
    let (response, error) = exchange.fan_in(answers);
    line.finish(exchange, response.status(), error, env, None);
    local_response(response)
}

/// The answer when the body was not forwarded: refused for its model, over
/// the limit, broken; or the origin could not be reached.
fn stopped_response(
    exchange: &mut Exchange,
    stopped: Stopped,
    line: &mut log::Line,
    env: &Env,
) -> worker::Result<web_sys::Response> {
    let (response, error) = match stopped {
        Stopped::Refused(refusal) => (exchange.refusal_response(&refusal), None),
        Stopped::Error(error) => (exchange.error_response(error), Some(error)),
    };
    line.finish(exchange, response.status(), error, env, None);
    local_response(response)
}

/// A listing's whole body (a small JSON document), at most
/// [`MAX_LISTING_BYTES`] of it.
async fn read_listing(response: &web_sys::Response) -> Result<Vec<u8>, ProxyError> {
    let unreadable = ProxyError::OriginListingUnreadable;
    let buffer = response.array_buffer().map_err(|_| unreadable)?;
    let buffer = JsFuture::from(buffer).await.map_err(|_| unreadable)?;
    let bytes = js_sys::Uint8Array::new(&buffer);
    if bytes.length() as usize > MAX_LISTING_BYTES {
        return Err(unreadable);
    }
    Ok(bytes.to_vec())
}
