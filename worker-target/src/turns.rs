//! Fair turns at the edge. An isolate's memory is not global, so the
//! doorman lives in one Durable Object (`DOORMAN`, class `Doorman` in
//! js/index.js) that every isolate asks, over RPC, before a limited request
//! goes on: the core's [`SharedDoorman`] — the same doorman as natively,
//! holding every key's rate bucket and slots, with slots held by lease
//! (renewed by its isolate while the answer streams, taken back if it is
//! not: an isolate that dies cannot keep a slot), the same fair queue (a
//! request that finds every slot taken waits, its call to the object held
//! open until a slot is its — claimed at once, see [`claim`] — or
//! `QUEUE_TIMEOUT` passes), and its state kept in the object's storage: an
//! object evicted (idle) or restarted (a new deployment) picks up every
//! bucket and lease where it was.

use js_sys::{Array, Map, Object, Promise, Reflect};
use ollama_proxy_core::{
    Config, ConfigVar, RateRefusal, RateState, SharedAdmission, SharedDoorman, Turn, TurnRefusal,
    LEASE_TTL_US,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen(module = "/js/turns.js")]
extern "C" {
    #[wasm_bindgen(js_name = hasDoorman)]
    fn has_doorman(env: &JsValue) -> bool;
    #[wasm_bindgen(js_name = doormanAdmit)]
    fn doorman_admit(
        env: &JsValue,
        key: &str,
        slot: bool,
        cap: Option<u32>,
        per_minute: Option<u32>,
    ) -> Promise;
    #[wasm_bindgen(js_name = doormanRenew)]
    fn doorman_renew(env: &JsValue, lease: f64) -> Promise;
    #[wasm_bindgen(js_name = doormanRelease)]
    fn doorman_release(env: &JsValue, lease: f64) -> Promise;
    /// Resolves with `"timer"` after `ms`.
    fn sleep(ms: f64) -> Promise;
}

/// Microseconds since the epoch (the object's clock).
fn now_us(now_ms: f64) -> u64 {
    (now_ms.max(0.0) * 1000.0) as u64
}

/// Most keys one storage call takes.
const STORAGE_BATCH: usize = 128;

/// The doorman's state inside the Durable Object: the core's
/// [`SharedDoorman`], picked up from the object's storage when the object
/// starts, its changes written back after every call. See the module docs.
#[wasm_bindgen]
pub struct EdgeDoorman {
    doorman: SharedDoorman,
}

#[wasm_bindgen]
impl EdgeDoorman {
    /// From the object's bindings (the Worker's own vars: `MAX_CONCURRENT`,
    /// `MAX_QUEUE`, `QUEUE_TIMEOUT`) and `stored`, everything its storage holds (a `Map`
    /// of text records, as `storage.list()` gives it), at `now_ms`.
    #[wasm_bindgen(constructor)]
    pub fn new(env: &JsValue, stored: &Map, now_ms: f64) -> EdgeDoorman {
        let lookup = |var: ConfigVar| {
            Reflect::get(env, &var.name().into())
                .ok()
                .and_then(|v| v.as_string())
        };
        // A configuration the Worker refuses never reaches the object.
        let limits = Config::from_lookup(lookup)
            .map(|c| c.turn_limits())
            .unwrap_or_default();
        let mut records = Vec::with_capacity(stored.size() as usize);
        stored.for_each(&mut |value, name| {
            // A record that is not text is not one of ours: read as empty
            // (and deleted as unreadable).
            records.push((
                name.as_string().unwrap_or_default(),
                value.as_string().unwrap_or_default(),
            ));
        });
        let doorman = SharedDoorman::restore(
            limits,
            records.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            now_us(now_ms),
        );
        EdgeDoorman { doorman }
    }

    /// A request asks for its turn: `{ go, lease?, limit?, remaining?,
    /// reset_us? }` or `{ go: false, refuse, retry_in_us?, limit?,
    /// reset_us?, cap? }`.
    pub fn admit(
        &mut self,
        key: &str,
        slot: bool,
        cap: Option<u32>,
        per_minute: Option<u32>,
        now_ms: f64,
    ) -> Object {
        let turn = Turn::from_parts(key, slot, cap, per_minute);
        let answer = Object::new();
        let set = |name: &str, value: JsValue| {
            let _ = Reflect::set(&answer, &name.into(), &value);
        };
        match self.doorman.admit(&turn, now_us(now_ms)) {
            SharedAdmission::Go { lease, rate } => {
                set("go", true.into());
                if let Some(lease) = lease {
                    set("lease", (lease as f64).into());
                }
                set_rate(&set, rate);
            }
            // The object holds the call open until the ticket is granted
            // (then `go` with its lease) or times out (js/index.js).
            SharedAdmission::Wait { ticket, rate } => {
                set("go", false.into());
                set("ticket", (ticket as f64).into());
                set_rate(&set, rate);
            }
            SharedAdmission::Refused(refusal) => {
                set("go", false.into());
                match refusal {
                    TurnRefusal::RateLimited(rate) => {
                        set("refuse", "rate".into());
                        set("retry_in_us", (rate.retry_in_us as f64).into());
                        set("limit", rate.limit.into());
                        set("reset_us", (rate.reset_us as f64).into());
                    }
                    TurnRefusal::KeyBusy { cap } => {
                        set("refuse", "key_busy".into());
                        set("cap", cap.into());
                    }
                    TurnRefusal::QueueFull => set("refuse", "queue_full".into()),
                    TurnRefusal::QueueTimeout => set("refuse", "queue_timeout".into()),
                }
            }
        }
        answer
    }

    /// The isolate's answer still streams: false if the lease had expired.
    pub fn renew(&mut self, lease: f64, now_ms: f64) -> bool {
        self.doorman.renew(lease as u64, now_us(now_ms))
    }

    /// The isolate's answer ended.
    pub fn release(&mut self, lease: f64, now_ms: f64) {
        self.doorman.release(lease as u64, now_us(now_ms));
    }

    /// Waiting requests timed out at `now_ms`: their tickets.
    pub fn expire(&mut self, now_ms: f64) -> Vec<f64> {
        let expired = self.doorman.expire(now_us(now_ms));
        expired.into_iter().map(|t| t as f64).collect()
    }

    /// Slots given to waiting requests since the last call: a flat array of
    /// ticket, lease, ticket, lease, …
    pub fn grants(&mut self) -> Vec<f64> {
        let grants = self.doorman.take_grants();
        grants
            .into_iter()
            .flat_map(|(ticket, lease)| [ticket as f64, lease as f64])
            .collect()
    }

    /// When to call `expire` next (ms since the epoch), if anyone waits.
    #[wasm_bindgen(js_name = nextWake)]
    pub fn next_wake(&self) -> Option<f64> {
        self.doorman.next_wake().map(|us| us as f64 / 1000.0)
    }

    /// What to write to the object's storage since the last call: an array
    /// of `["put", { name: value, … }]` and `["delete", [name, …]]`, each
    /// within what one storage call takes.
    pub fn changes(&mut self) -> Array {
        let changes = self.doorman.take_changes();
        let ops = Array::new();
        if changes.is_empty() {
            return ops;
        }
        let puts: Vec<(&str, &str)> = changes.puts().collect();
        for batch in puts.chunks(STORAGE_BATCH) {
            let entries = Object::new();
            for (name, value) in batch {
                let _ = Reflect::set(&entries, &(*name).into(), &(*value).into());
            }
            ops.push(&Array::of2(&"put".into(), &entries));
        }
        let deletes: Vec<&str> = changes.deletes().collect();
        for batch in deletes.chunks(STORAGE_BATCH) {
            let names: Array = batch.iter().map(|name| JsValue::from(*name)).collect();
            ops.push(&Array::of2(&"delete".into(), &names));
        }
        ops
    }
}

/// Puts where a key's rate stands on an answer.
fn set_rate(set: &impl Fn(&str, JsValue), rate: Option<RateState>) {
    if let Some(rate) = rate {
        set("limit", rate.limit.into());
        set("remaining", rate.remaining.into());
        set("reset_us", (rate.reset_us as f64).into());
    }
}

/// Why an isolate got no turn.
pub(crate) enum NoTurn {
    /// The doorman's refusal.
    Refused(TurnRefusal),
    /// No `DOORMAN` binding: limits are configured but cannot be kept, so
    /// the request is refused rather than let through.
    Missing,
    /// The object could not be asked (its storage failing, say — past the
    /// Free plan's daily writes): refused likewise; why, for the log.
    Failed(String),
}

/// A turn taken: the lease to hold while the answer streams, and the key's
/// bucket for the rate headers.
pub(crate) struct Taken {
    pub(crate) lease: Option<f64>,
    pub(crate) rate: Option<RateState>,
}

/// Asks the doorman object for `turn`.
pub(crate) async fn take(env: &JsValue, turn: &Turn) -> Result<Taken, NoTurn> {
    if !has_doorman(env) {
        return Err(NoTurn::Missing);
    }
    let answer = JsFuture::from(doorman_admit(
        env,
        turn.key().as_str(),
        turn.slot(),
        turn.key_cap(),
        turn.per_minute(),
    ))
    .await
    .map_err(|error| NoTurn::Failed(why(&error)))?;
    let field = |name: &str| Reflect::get(&answer, &name.into()).ok();
    let number = |name: &str| field(name).and_then(|v| v.as_f64());
    let limit = number("limit").map(|n| n as u32);
    if field("go").is_some_and(|v| v.is_truthy()) {
        let rate = limit.map(|limit| RateState {
            limit,
            remaining: number("remaining").unwrap_or(0.0) as u32,
            reset_us: number("reset_us").unwrap_or(0.0) as u64,
        });
        let lease = number("lease");
        if let (Some(lease), true) = (lease, field("claim").is_some_and(|v| v.is_truthy())) {
            claim(env, lease).await?;
        }
        return Ok(Taken { lease, rate });
    }
    let refusal = match field("refuse").and_then(|v| v.as_string()).as_deref() {
        Some("rate") => TurnRefusal::RateLimited(RateRefusal {
            retry_in_us: number("retry_in_us").unwrap_or(0.0) as u64,
            limit: limit.unwrap_or(0),
            reset_us: number("reset_us").unwrap_or(0.0) as u64,
        }),
        Some("key_busy") => TurnRefusal::KeyBusy {
            cap: number("cap").unwrap_or(0.0) as u32,
        },
        Some("queue_full") => TurnRefusal::QueueFull,
        Some("queue_timeout") => TurnRefusal::QueueTimeout,
        _ => return Err(NoTurn::Failed("an answer it could not read".to_owned())),
    };
    Err(NoTurn::Refused(refusal))
}

/// Claims a slot granted after a wait (the core's `CLAIM_TTL_US`), trying
/// again if the call fails (the object briefly unreachable: the window is
/// seconds long). A slot the object has taken back meanwhile, or one that
/// cannot be claimed, refuses the request (503, the reason logged); one
/// whose claim may have landed unanswered is given back.
async fn claim(env: &JsValue, lease: f64) -> Result<(), NoTurn> {
    const TRIES: u32 = 3;
    let mut error = String::new();
    for _ in 0..TRIES {
        match JsFuture::from(doorman_renew(env, lease)).await {
            Ok(claimed) if claimed.is_truthy() => return Ok(()),
            Ok(_) => {
                return Err(NoTurn::Failed(
                    "the slot granted after its wait was taken back before it was claimed"
                        .to_owned(),
                ))
            }
            Err(e) => error = why(&e),
        }
    }
    let _ = JsFuture::from(doorman_release(env, lease)).await;
    Err(NoTurn::Failed(format!(
        "the slot granted after its wait could not be claimed: {error}"
    )))
}

/// A failed call's reason: the error's message.
fn why(error: &JsValue) -> String {
    error
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| error.as_string())
        .unwrap_or_else(|| "an error without a message".to_owned())
}

/// Holds `lease` until `done` settles (the answer ended; `None`: it has
/// already), renewing it a sixth of its life at a time, then gives it back.
/// That often, the Durable Object is never quiet long enough to be evicted
/// while a slot is held (workerd evicts an idle object after about 10 s; its
/// state is kept in storage, so an eviction would lose nothing, but a busy
/// object answers without reading it back).
pub(crate) async fn hold(env: JsValue, lease: f64, done: Option<Promise>) {
    if let Some(done) = done {
        let every = (LEASE_TTL_US / 6_000) as f64;
        loop {
            let race = Promise::race(&js_sys::Array::of2(&done, &sleep(every)));
            let woke = JsFuture::from(race).await.unwrap_or(JsValue::UNDEFINED);
            if woke.as_string().as_deref() != Some("timer") {
                break;
            }
            // A lease that expired meanwhile is gone: stop renewing. A call
            // that failed (the object briefly unreachable) is tried again
            // at the next tick: the lease lives for several of them.
            match JsFuture::from(doorman_renew(&env, lease)).await {
                Ok(renewed) if !renewed.is_truthy() => return,
                Ok(_) | Err(_) => {}
            }
        }
    }
    let _ = JsFuture::from(doorman_release(&env, lease)).await;
}
