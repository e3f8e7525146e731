//! The Ollama proxy as a Cloudflare Worker, driving the pure core.
//!
//! The handler works on `web_sys::Request`/`Response` directly rather than
//! the `worker` crate's `http` feature, so bodies stay JS streams: the
//! request body is handed to the subrequest and the origin's body returned
//! as is, and no chunk is copied through WASM memory. Only headers cross into
//! Rust, where they become `http` types for the core; every decision (auth,
//! policy, CORS, header rewrite, proxy-made errors) comes from the core.
//!
//! The entry module (js/index.js) asks [`begin`] for the core's decision,
//! then drives the common request itself with two more plain calls (see
//! [`Forward`]): no futures executor on that path.
#![forbid(unsafe_code)]

mod answer;
mod backends;
mod convert;
mod forward;
mod log;
mod turns;
mod upload;
#[cfg(all(test, target_arch = "wasm32"))]
mod wasm_tests;

use std::cell::RefCell;
use std::rc::Rc;

use ollama_proxy_core::{
    early_error_response, Action, Config, Proxy, ProxyError, RequestIds, UnixTime,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use worker::Env;

use crate::convert::{local_response, request_parts};
use crate::forward::Forward;

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
        env.var(var.name()).ok().map(|v| v.to_string())
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

/// The core's decision on a request, taken at once (no promise, no
/// future): a `Response` when the proxy answers it itself, else a
/// [`Forward`] for the entry module (js/index.js) to send on.
#[wasm_bindgen]
pub fn begin(request: &web_sys::Request, env: Env) -> JsValue {
    let started = js_sys::Date::now();
    let proxy = match proxy(&env) {
        Ok(proxy) => proxy,
        Err(error) => {
            // The variable's name and the rule it broke; never its value.
            worker::console_error!("ollama-proxy: config error: {error}");
            return answered(local_response(early_error_response(
                ProxyError::Misconfigured,
            )));
        }
    };
    let Ok(parts) = request_parts(request) else {
        // A URL or method `http` cannot represent; hyper refuses such a
        // request line natively with 400 too.
        return answered(local_response(early_error_response(ProxyError::BadRequest)));
    };
    let mut line = log::Line::start(&parts, started);
    let now = UnixTime::from_millis(started);
    let decision = proxy.decide_at(parts, fresh_request_id(), now);
    let exchange = decision.exchange;
    match decision.action {
        Action::Respond(response) => {
            line.finish(&exchange, response.status(), None, &env, None);
            answered(local_response(response))
        }
        Action::Forward(head) => Forward::new(proxy, exchange, head, line, env).into(),
    }
}

/// A response for JS, or the runtime's plain 500 if it could not be built
/// (as the `worker` crate's entry glue answers an error; never reached in
/// practice: building a response from valid parts does not fail).
pub(crate) fn answered(response: worker::Result<web_sys::Response>) -> JsValue {
    match response {
        Ok(response) => response.into(),
        Err(error) => {
            worker::console_error!("ollama-proxy: {error}");
            web_sys::Response::new_with_opt_str_and_init(Some("INTERNAL SERVER ERROR"), &{
                let init = web_sys::ResponseInit::new();
                init.set_status(500);
                init
            })
            .map_or(JsValue::UNDEFINED, Into::into)
        }
    }
}
