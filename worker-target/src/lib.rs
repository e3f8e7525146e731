//! The Ollama proxy as a Cloudflare Worker, driving the pure core.
//!
//! The handler works on `web_sys::Request`/`Response` directly rather than
//! the `worker` crate's `http` feature, so bodies stay JS streams: the
//! request body is handed to the subrequest and the origin's body returned
//! as is, and no chunk is copied through WASM memory. Only headers cross into
//! Rust, where they become `http` types for the core; every decision (auth,
//! policy, CORS, header rewrite, proxy-made errors) comes from the core.
#![forbid(unsafe_code)]

mod convert;
mod log;
#[cfg(all(test, target_arch = "wasm32"))]
mod wasm_tests;

use std::cell::RefCell;
use std::rc::Rc;

use ollama_proxy_core::{
    early_error_response, Action, Config, ConfigVar, Proxy, ProxyError, RequestIds,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{event, Context, Env};

use crate::convert::{
    js_response, local_response, request_parts, upstream_init, upstream_response_head,
};

#[wasm_bindgen(module = "/js/guard.js")]
extern "C" {
    /// Passes `body` through, appending `notice` if it breaks off (see js/guard.js).
    #[wasm_bindgen(js_name = guardStream)]
    fn guard_stream(
        body: &web_sys::ReadableStream,
        notice: &js_sys::Uint8Array,
    ) -> web_sys::ReadableStream;

    /// Passes `body` through, aborting the subrequest past `limit` bytes:
    /// `{ stream, signal, exceeded }` (see js/guard.js).
    #[wasm_bindgen(js_name = limitUpload)]
    fn limit_upload(
        body: &web_sys::ReadableStream,
        limit: f64,
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
    let lookup = |var: ConfigVar| env.var(var.name()).ok().map(|v| v.to_string());
    let proxy = Rc::new(Proxy::new(Config::from_lookup(lookup)?));
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
    _ctx: Context,
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
    let decision = proxy.decide_with_request_id(parts, fresh_request_id());
    let exchange = decision.exchange;
    let head = match decision.action {
        Action::Respond(response) => {
            line.finish(&exchange, response.status(), None, &env);
            return local_response(response);
        }
        Action::Forward(head) => head,
    };

    // Body and abort signal ride along: the client going away cancels the
    // subrequest, and the body never enters WASM memory. Without a declared
    // length, a JS pull-stream counts it against the limit (js/guard.js).
    let client_signal = request.signal();
    let (body, signal, upload) = match (request.body(), exchange.streamed_body_limit()) {
        // u64 → f64 is exact up to 2^53 bytes, far above any body limit.
        (Some(body), Some(limit)) => {
            let upload = limit_upload(&body, limit as f64, &client_signal);
            let field = |name: &str| js_sys::Reflect::get(&upload, &name.into());
            (
                Some(field("stream")?.unchecked_into()),
                field("signal")?.unchecked_into(),
                Some(upload),
            )
        }
        (body, _) => (body, client_signal, None),
    };
    let init = upstream_init(&head, body.as_ref(), &signal)?;
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let url = head.uri.to_string();
    let upstream = match JsFuture::from(scope.fetch_with_str_and_init(&url, &init)).await {
        Ok(response) => response.unchecked_into::<web_sys::Response>(),
        Err(_) => {
            let exceeded = upload.is_some_and(|upload| {
                js_sys::Reflect::get(&upload, &"exceeded".into()).is_ok_and(|v| v.is_truthy())
            });
            let error = if exceeded {
                ProxyError::BodyTooLarge
            } else {
                ProxyError::OriginUnreachable
            };
            let response = exchange.error_response(error);
            line.finish(&exchange, response.status(), Some(error), &env);
            return local_response(response);
        }
    };
    let mut head = upstream_response_head(&upstream)?;
    exchange.rewrite_response(&mut head);
    line.finish(&exchange, head.status, None, &env);
    let body = match (upstream.body(), exchange.interrupted_stream_notice(&head)) {
        (Some(body), Some(notice)) => Some(guard_stream(&body, &notice[..].into())),
        (body, _) => body,
    };
    js_response(&head, body.as_ref())
}
