//! Fair turns at the edge. An isolate's memory is not global, so the
//! doorman lives in one Durable Object (`DOORMAN`, class `Doorman` in
//! js/index.js) that every isolate asks, over RPC, before a limited request
//! goes on: the same core [`Doorman`] as natively, holding every key's rate
//! bucket and slots, plus a [`LeaseTable`]: a slot is held by lease, renewed
//! by its isolate while the answer streams, and taken back if it is not
//! (an isolate that dies cannot keep a slot).
//!
//! There is no queue at the edge: a request that finds every slot taken is
//! refused with 503 `server_busy` and `Retry-After` rather than held in an
//! object that may be evicted. The object keeps its state in memory: if it
//! is evicted (idle, or a new deployment), buckets start full again and no
//! slot is held.

use js_sys::{Object, Promise, Reflect};
use ollama_proxy_core::{
    Admission, Config, ConfigVar, Doorman, LeaseTable, RateRefusal, RateState, Turn, TurnRefusal,
    LEASE_TTL_US,
};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::JsValue;
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

/// A variable as the edge reads it: `MAX_QUEUE` is 0 there (there is no
/// queue at the edge, so a request finding every slot taken is refused at
/// once), whatever it is set to; the rest as `read` finds them.
pub(crate) fn edge_var(var: ConfigVar, read: impl FnOnce() -> Option<String>) -> Option<String> {
    match var {
        ConfigVar::MaxQueue => Some("0".to_owned()),
        _ => read(),
    }
}

/// Microseconds since the epoch (the object's clock).
fn now_us(now_ms: f64) -> u64 {
    (now_ms.max(0.0) * 1000.0) as u64
}

/// The doorman's state inside the Durable Object. See the module docs.
#[wasm_bindgen]
pub struct EdgeDoorman {
    doorman: Doorman,
    leases: LeaseTable,
}

#[wasm_bindgen]
impl EdgeDoorman {
    /// From the object's bindings (the Worker's own vars): `MAX_CONCURRENT`,
    /// with no queue.
    #[wasm_bindgen(constructor)]
    pub fn new(env: &JsValue) -> EdgeDoorman {
        let lookup = |var: ConfigVar| {
            edge_var(var, || {
                Reflect::get(env, &var.name().into())
                    .ok()
                    .and_then(|v| v.as_string())
            })
        };
        // A configuration the Worker refuses never reaches the object.
        let limits = Config::from_lookup(lookup)
            .map(|c| c.turn_limits())
            .unwrap_or_default();
        EdgeDoorman {
            doorman: Doorman::new(limits),
            leases: LeaseTable::new(LEASE_TTL_US),
        }
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
        let now = now_us(now_ms);
        self.take_back(now);
        let turn = Turn::from_parts(key, slot, cap, per_minute);
        let answer = Object::new();
        let set = |name: &str, value: JsValue| {
            let _ = Reflect::set(&answer, &name.into(), &value);
        };
        match self.doorman.admit(&turn, now) {
            Admission::Go { lease, rate } => {
                set("go", true.into());
                if let Some(lease) = lease {
                    set("lease", (self.leases.hold(lease, now) as f64).into());
                }
                if let Some(rate) = rate {
                    set("limit", rate.limit.into());
                    set("remaining", rate.remaining.into());
                    set("reset_us", (rate.reset_us as f64).into());
                }
            }
            // Without a queue nobody waits; should one, it is told the
            // server is busy and leaves the queue again.
            Admission::Wait { ticket, .. } => {
                self.doorman.cancel(ticket);
                set("go", false.into());
                set("refuse", "queue_full".into());
            }
            Admission::Refuse(refusal) => {
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
                    TurnRefusal::QueueFull | TurnRefusal::QueueTimeout => {
                        set("refuse", "queue_full".into());
                    }
                }
            }
        }
        answer
    }

    /// The isolate's answer still streams: false if the lease had expired.
    pub fn renew(&mut self, lease: f64, now_ms: f64) -> bool {
        let now = now_us(now_ms);
        self.take_back(now);
        self.leases.renew(lease as u64, now)
    }

    /// The isolate's answer ended.
    pub fn release(&mut self, lease: f64, now_ms: f64) {
        let now = now_us(now_ms);
        if let Some(lease) = self.leases.take(lease as u64) {
            let _ = self.doorman.release(lease);
        }
        self.take_back(now);
        self.doorman.forget_idle(now);
    }

    /// Leases whose isolates went quiet go back to the doorman.
    fn take_back(&mut self, now: u64) {
        for lease in self.leases.expired(now) {
            let _ = self.doorman.release(lease);
        }
    }
}

/// Why an isolate got no turn.
pub(crate) enum NoTurn {
    /// The doorman's refusal.
    Refused(TurnRefusal),
    /// No `DOORMAN` binding (or it failed): limits are configured but
    /// cannot be kept, so the request is refused rather than let through.
    Unavailable,
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
        return Err(NoTurn::Unavailable);
    }
    let answer = JsFuture::from(doorman_admit(
        env,
        turn.key().as_str(),
        turn.slot(),
        turn.key_cap(),
        turn.per_minute(),
    ))
    .await
    .map_err(|_| NoTurn::Unavailable)?;
    let field = |name: &str| Reflect::get(&answer, &name.into()).ok();
    let number = |name: &str| field(name).and_then(|v| v.as_f64());
    let limit = number("limit").map(|n| n as u32);
    if field("go").is_some_and(|v| v.is_truthy()) {
        let rate = limit.map(|limit| RateState {
            limit,
            remaining: number("remaining").unwrap_or(0.0) as u32,
            reset_us: number("reset_us").unwrap_or(0.0) as u64,
        });
        return Ok(Taken {
            lease: number("lease"),
            rate,
        });
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
        _ => return Err(NoTurn::Unavailable),
    };
    Err(NoTurn::Refused(refusal))
}

/// Holds `lease` until `done` settles (the answer ended; `None`: it has
/// already), renewing it a sixth of its life at a time, then gives it back.
/// That often, the Durable Object is never quiet long enough to be evicted
/// while a slot is held (its state is in memory; workerd evicts an idle
/// object after about 10 s).
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
