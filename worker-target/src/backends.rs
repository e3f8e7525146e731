//! Several Ollama boxes at the edge. An isolate cannot poll, so what the
//! core knows of the boxes ([`Backends`], one per isolate) is learnt from
//! the traffic: listings that pass (`/api/tags`, `/api/ps`), answers and
//! failures, and probes the requests themselves set off — before routing
//! when some box has never told its models (the first request of a fresh
//! isolate waits for them), else in the background (`ctx.waitUntil`) when
//! the core finds its lists stale. See README "Several Ollama boxes".

use std::cell::RefCell;

use http::{request, response};
use js_sys::{Array, Promise, Reflect, Uint8Array};
use ollama_proxy_core::{Backends, HealthPolicy, Probe, Proxy, MAX_LISTING_BYTES};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::convert::{upstream_init, upstream_response_head};

/// How long a probe or a listing may take.
const ASK_TIMEOUT_MS: u32 = 5_000;

thread_local! {
    static BACKENDS: RefCell<Option<Backends>> = const { RefCell::new(None) };
}

/// The isolate's clock, in microseconds.
pub(crate) fn now_us() -> u64 {
    (js_sys::Date::now().max(0.0) * 1000.0) as u64
}

/// Runs `f` on what this isolate knows of the `count` boxes.
pub(crate) fn with<R>(count: usize, f: impl FnOnce(&mut Backends) -> R) -> R {
    BACKENDS.with(|b| {
        let mut b = b.borrow_mut();
        let state = b.get_or_insert_with(|| Backends::new(count, HealthPolicy::default()));
        f(state)
    })
}

/// What to learn before routing (`inline`), or after (in the background).
/// The first call in an isolate sets it up with the configured policy.
pub(crate) fn due(proxy: &Proxy) -> (bool, Vec<(usize, Probe)>) {
    let config = proxy.config();
    BACKENDS.with(|b| {
        b.borrow_mut()
            .get_or_insert_with(|| Backends::new(config.origins().len(), config.health_policy()));
    });
    let now = now_us();
    with(config.origins().len(), |b| (b.unknown(now), b.due(now)))
}

/// Asks the boxes what `probes` want to know, all at once, and learns the
/// answers.
pub(crate) async fn refresh(proxy: &Proxy, probes: Vec<(usize, Probe)>) {
    let count = proxy.config().origins().len();
    let heads = probes
        .iter()
        .map(|&(b, probe)| proxy.probe_request(b, probe))
        .collect();
    let answers = fetch_all(heads).await;
    with(count, |state| {
        let now = now_us();
        for (&(backend, probe), answer) in probes.iter().zip(answers) {
            match answer {
                Some((head, body)) => {
                    if head.status.is_success() {
                        state.learnt(backend, probe, &body, now);
                    }
                    state.observed(backend, head.status.as_u16(), None, now);
                }
                None => state.failed(backend, now),
            }
        }
    });
}

/// Sends every bodiless request at once; each answer's head and whole
/// body (at most [`MAX_LISTING_BYTES`]), or `None` when it failed.
pub(crate) async fn fetch_all(
    heads: Vec<request::Parts>,
) -> Vec<Option<(response::Parts, Vec<u8>)>> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let fetches = Array::new();
    for head in &heads {
        let promise = timeout_signal()
            .and_then(|signal| upstream_init(head, None, &signal).ok())
            .map_or_else(
                || Promise::reject(&JsValue::NULL),
                |init| scope.fetch_with_str_and_init(&head.uri.to_string(), &init),
            );
        fetches.push(&promise);
    }
    let settled = settle(&fetches).await;
    let bodies = Array::new();
    let mut heads_back = Vec::with_capacity(heads.len());
    for response in &settled {
        let read = response.as_ref().and_then(|r| {
            let r: &web_sys::Response = r.unchecked_ref();
            Some((upstream_response_head(r).ok()?, r.array_buffer().ok()?))
        });
        match read {
            Some((head, buffer)) => {
                heads_back.push(Some(head));
                bodies.push(&buffer);
            }
            None => {
                heads_back.push(None);
                bodies.push(&Promise::reject(&JsValue::NULL));
            }
        }
    }
    let bodies = settle(&bodies).await;
    heads_back
        .into_iter()
        .zip(bodies)
        .map(|(head, body)| {
            let bytes = Uint8Array::new(&body?);
            if bytes.length() as usize > MAX_LISTING_BYTES {
                return None;
            }
            Some((head?, bytes.to_vec()))
        })
        .collect()
}

/// Waits for every promise; each one's value, or `None` when it rejected.
async fn settle(promises: &Array) -> Vec<Option<JsValue>> {
    let Ok(settled) = JsFuture::from(Promise::all_settled(promises)).await else {
        return vec![None; promises.length() as usize];
    };
    let settled: Array = settled.unchecked_into();
    settled
        .iter()
        .map(|outcome| {
            let fulfilled = Reflect::get(&outcome, &"status".into())
                .ok()
                .and_then(|s| s.as_string())
                .is_some_and(|s| s == "fulfilled");
            fulfilled
                .then(|| Reflect::get(&outcome, &"value".into()).ok())
                .flatten()
        })
        .collect()
}

/// `AbortSignal.timeout(ASK_TIMEOUT_MS)`.
fn timeout_signal() -> Option<web_sys::AbortSignal> {
    let class = Reflect::get(&js_sys::global(), &"AbortSignal".into()).ok()?;
    let timeout: js_sys::Function = Reflect::get(&class, &"timeout".into())
        .ok()?
        .dyn_into()
        .ok()?;
    timeout
        .call1(&class, &ASK_TIMEOUT_MS.into())
        .ok()?
        .dyn_into()
        .ok()
}
