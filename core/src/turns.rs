//! Fair turns on the GPU: the doorman every forwarded request of a limited
//! key, and every generation or embedding request under `MAX_CONCURRENT`,
//! asks before it goes on. Sans-IO: the adapter owns the clock (passing
//! microseconds of its own monotonic time), the waiting, and the delivery of
//! grants; the doorman decides.
//!
//! - A key's `requests_per_minute` is a bucket (see [`crate::rate`]); over it
//!   → refused, with when to retry.
//! - A key's `max_concurrent` counts its generation and embedding requests in
//!   flight or waiting; over it → refused at once (a key may not fill the
//!   queue with its own requests).
//! - `MAX_CONCURRENT` caps the generation and embedding requests in flight
//!   across keys; above it a request waits in one bounded queue
//!   (`MAX_QUEUE`, `QUEUE_TIMEOUT`), and each slot that frees goes to the
//!   waiting key served least recently, so a key with 50 waiting and a key
//!   with one alternate, and a key never served goes first. A key's last
//!   turn is remembered while it is idle too: keys that each ask again the
//!   moment their answer ends cannot take every turn from a key that waits
//!   (had they started afresh each time, two of them would). Turns are
//!   forgotten when nobody is in flight or waiting, and by a new doorman (a
//!   restart, at the edge a new object); nothing else depends on them.
//!
//! A [`Lease`] is held until the answer has ended (its last byte, or its
//! client gone) and must be given back ([`Doorman::release`]); a [`Ticket`]
//! waits until a [`Grant`] names it, it expires ([`Doorman::expire`]) or its
//! client leaves ([`Doorman::cancel`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::BuildHasherDefault;

use crate::auth::KeyName;
use crate::name_hash::NameHasher;
use crate::rate::{Bucket, Rate, RateRefusal, RateState};

/// The proxy-wide limits (from `MAX_CONCURRENT`, `MAX_QUEUE`, `QUEUE_TIMEOUT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TurnLimits {
    /// Generation and embedding requests in flight at once; `None`: no cap.
    pub max_concurrent: Option<u32>,
    /// Requests that may wait for a turn.
    pub max_queue: u32,
    /// How long one may wait.
    pub queue_timeout_us: u64,
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self {
            max_concurrent: None,
            max_queue: DEFAULT_MAX_QUEUE,
            queue_timeout_us: DEFAULT_QUEUE_TIMEOUT_SECS * 1_000_000,
        }
    }
}

/// `MAX_QUEUE` when unset.
pub const DEFAULT_MAX_QUEUE: u32 = 100;
/// `QUEUE_TIMEOUT` when unset, in seconds.
pub const DEFAULT_QUEUE_TIMEOUT_SECS: u64 = 60;

/// What one request asks of the doorman (see [`crate::Exchange::turn`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    pub(crate) key: KeyName,
    /// A generation or embedding request: it takes a slot.
    pub(crate) slot: bool,
    /// The key's own `max_concurrent`.
    pub(crate) key_cap: Option<u32>,
    /// The key's own `requests_per_minute`.
    pub(crate) per_minute: Option<u32>,
}

impl Turn {
    /// The key asking.
    pub fn key(&self) -> &KeyName {
        &self.key
    }
}

/// The doorman's answer to [`Doorman::admit`].
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Go on now, holding `lease` (when the request takes a slot) until the
    /// answer has ended.
    Go {
        /// The slot, for a generation or embedding request.
        lease: Option<Lease>,
        /// The key's bucket after this request, when it has a rate.
        rate: Option<RateState>,
    },
    /// Wait for a [`Grant`] naming `ticket`, until `deadline_us` at most.
    Wait {
        /// What the grant will name.
        ticket: Ticket,
        /// When to give up ([`Doorman::expire`]).
        deadline_us: u64,
        /// The key's bucket after this request, when it has a rate.
        rate: Option<RateState>,
    },
    /// Answer with [`crate::Exchange::turn_refusal_response`].
    Refuse(TurnRefusal),
}

/// Why a request gets no turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnRefusal {
    /// The key is over its `requests_per_minute` (429).
    RateLimited(RateRefusal),
    /// The key has `max_concurrent` requests in flight or waiting (429).
    KeyBusy {
        /// Its `max_concurrent`.
        cap: u32,
    },
    /// The queue is full (503).
    QueueFull,
    /// The request waited `QUEUE_TIMEOUT` (503).
    QueueTimeout,
}

/// A waiting request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    /// Its number, for a waiter elsewhere (see [`crate::SharedDoorman`]).
    pub(crate) fn id(self) -> u64 {
        self.0
    }

    /// The ticket numbered `id`.
    pub(crate) fn from_id(id: u64) -> Self {
        Self(id)
    }
}

/// A slot held by a request in flight. Give it back with
/// [`Doorman::release`] once the answer has ended.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lease holds a slot until it is released"]
pub struct Lease {
    id: u64,
    key: KeyName,
}

impl Lease {
    /// The key holding it.
    pub fn key(&self) -> &KeyName {
        &self.key
    }
}

/// A slot that went to a waiting request.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    /// The request it goes to.
    pub ticket: Ticket,
    /// Its slot.
    pub lease: Lease,
}

#[derive(Debug, Default)]
struct KeyTurns {
    in_flight: u32,
    waiting: VecDeque<Ticket>,
    /// When it was last given a slot (a sequence number; 0: never, or not
    /// by this doorman).
    last_served: u64,
    bucket: Bucket,
}

/// The doorman. See the module docs.
#[derive(Debug, Default)]
pub struct Doorman {
    limits: TurnLimits,
    keys: HashMap<KeyName, KeyTurns, BuildHasherDefault<NameHasher>>,
    in_flight: u32,
    /// Waiting tickets: their key and deadline.
    tickets: HashMap<Ticket, (KeyName, u64)>,
    deadlines: BTreeSet<(u64, Ticket)>,
    /// Keys with waiting tickets, least recently served first.
    order: BTreeSet<(u64, KeyName)>,
    next_id: u64,
    served: u64,
    /// Admissions and releases so far, to forget idle keys now and then.
    calls: u64,
}

/// Idle keys are forgotten once every this many admissions and releases
/// (see [`Doorman::forget_idle`]): memory stays bounded by the keys in use,
/// at no cost per request.
pub(crate) const FORGET_EVERY: u64 = 1024;

impl Doorman {
    /// A doorman with `limits` and nobody in flight.
    pub fn new(limits: TurnLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// New limits (a reload): in-flight leases and waiting tickets stay; a
    /// raised `MAX_CONCURRENT` lets waiting requests go at once.
    pub fn set_limits(&mut self, limits: TurnLimits) -> Vec<Grant> {
        self.limits = limits;
        self.fill()
    }

    /// The limits in force.
    pub fn limits(&self) -> TurnLimits {
        self.limits
    }

    /// A request asks for its turn at `now_us`.
    pub fn admit(&mut self, turn: &Turn, now_us: u64) -> Admission {
        let admission = self.decide(turn, now_us);
        self.count_call(now_us);
        admission
    }

    /// A request's answer has ended at `now_us`: as [`Doorman::release`],
    /// counted towards forgetting idle keys (every 1,024 admissions and
    /// releases).
    pub fn release_at(&mut self, lease: Lease, now_us: u64) -> Vec<Grant> {
        let grants = self.release(lease);
        self.count_call(now_us);
        grants
    }

    fn count_call(&mut self, now_us: u64) {
        self.calls += 1;
        if self.calls % FORGET_EVERY == 0 {
            self.forget_idle(now_us);
        }
    }

    fn decide(&mut self, turn: &Turn, now_us: u64) -> Admission {
        let queue_len = self.tickets.len() as u32;
        let limits = self.limits;
        let free = limits.max_concurrent.is_none_or(|max| self.in_flight < max);
        let state = self.keys.entry(turn.key.clone()).or_default();
        if turn.slot {
            if let Some(cap) = turn.key_cap {
                if state.in_flight + state.waiting.len() as u32 >= cap {
                    return Admission::Refuse(TurnRefusal::KeyBusy { cap });
                }
            }
            if !free && queue_len >= limits.max_queue {
                return Admission::Refuse(TurnRefusal::QueueFull);
            }
        }
        let rate = match turn.per_minute {
            None => None,
            Some(per_minute) => {
                match Rate::per_minute(per_minute).take(&mut state.bucket, now_us) {
                    Ok(rate) => Some(rate),
                    Err(refusal) => return Admission::Refuse(TurnRefusal::RateLimited(refusal)),
                }
            }
        };
        if !turn.slot {
            return Admission::Go { lease: None, rate };
        }
        if free {
            // Free slots are handed out as they free, so none is free while
            // anyone waits: going at once jumps no queue.
            debug_assert!(self.tickets.is_empty());
            self.served += 1;
            self.in_flight += 1;
            self.next_id += 1;
            state.in_flight += 1;
            state.last_served = self.served;
            let lease = Lease {
                id: self.next_id,
                key: turn.key.clone(),
            };
            return Admission::Go {
                lease: Some(lease),
                rate,
            };
        }
        self.next_id += 1;
        let ticket = Ticket(self.next_id);
        let deadline_us = now_us.saturating_add(limits.queue_timeout_us);
        let state = self.keys.get_mut(&turn.key).expect("entered above");
        if state.waiting.is_empty() {
            self.order.insert((state.last_served, turn.key.clone()));
        }
        state.waiting.push_back(ticket);
        self.tickets.insert(ticket, (turn.key.clone(), deadline_us));
        self.deadlines.insert((deadline_us, ticket));
        Admission::Wait {
            ticket,
            deadline_us,
            rate,
        }
    }

    /// A request's answer has ended: its slot goes to whoever's turn it is.
    pub fn release(&mut self, lease: Lease) -> Vec<Grant> {
        self.in_flight -= 1;
        if let Some(state) = self.keys.get_mut(&lease.key) {
            state.in_flight -= 1;
        }
        self.rest_if_idle();
        self.fill()
    }

    /// A waiting request's client left: true if it was still waiting (it is
    /// gone now); false if it was granted already (its [`Grant`] is out:
    /// release that lease) or had expired.
    pub fn cancel(&mut self, ticket: Ticket) -> bool {
        self.remove(ticket)
    }

    /// The waiting requests whose deadline has passed at `now_us`; they are
    /// gone from the queue (answer them with [`TurnRefusal::QueueTimeout`]).
    pub fn expire(&mut self, now_us: u64) -> Vec<Ticket> {
        let expired: Vec<Ticket> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_us)
            .map(|&(_, ticket)| ticket)
            .collect();
        for &ticket in &expired {
            self.remove(ticket);
        }
        expired
    }

    /// The earliest deadline of a waiting request.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.tickets.len()
    }

    /// Slots in use.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Slots `key` holds.
    pub fn in_flight_of(&self, key: &KeyName) -> u32 {
        self.keys.get(key).map_or(0, |s| s.in_flight)
    }

    /// Forgets keys with nothing in flight, nothing waiting, a full bucket
    /// at `now_us` and no turn to remember (memory stays bounded by the
    /// keys of the configuration in force, whose names the turns carry).
    pub fn forget_idle(&mut self, now_us: u64) {
        self.keys.retain(|_, s| {
            s.in_flight > 0
                || !s.waiting.is_empty()
                || s.last_served != 0
                || !Rate::is_full(s.bucket, now_us)
        });
    }

    /// `key`'s bucket, if the doorman holds one that is not full at
    /// `now_us` (see [`crate::shared_turns`]: a full one needs no record).
    pub(crate) fn bucket(&self, key: &KeyName, now_us: u64) -> Option<Bucket> {
        self.keys
            .get(key)
            .map(|s| s.bucket)
            .filter(|&b| !Rate::is_full(b, now_us))
    }

    /// Puts back `key`'s bucket as it was kept.
    pub(crate) fn restore_bucket(&mut self, key: &KeyName, bucket: Bucket) {
        self.keys.entry(key.clone()).or_default().bucket = bucket;
    }

    /// Puts back a slot `key` held when the state was kept: it counts as in
    /// flight again, whatever the limits now are (it was granted). Its turn
    /// is not remembered: a new doorman starts every key afresh.
    pub(crate) fn restore_slot(&mut self, key: &KeyName) -> Lease {
        let lease = self.start(key);
        self.keys.get_mut(key).expect("started above").last_served = 0;
        lease
    }

    /// Forgets every key's last turn, as a new doorman would know none
    /// (for the properties that compare one with a restarted one).
    #[cfg(test)]
    pub(crate) fn forget_turns(&mut self) {
        for state in self.keys.values_mut() {
            state.last_served = 0;
        }
    }

    /// A slot for `key` (the free path of [`Doorman::decide`] does the
    /// same with the key's state at hand).
    fn start(&mut self, key: &KeyName) -> Lease {
        self.served += 1;
        self.in_flight += 1;
        let state = self.keys.entry(key.clone()).or_default();
        state.in_flight += 1;
        state.last_served = self.served;
        self.next_id += 1;
        Lease {
            id: self.next_id,
            key: key.clone(),
        }
    }

    /// Hands free slots to waiting requests, least recently served key first.
    fn fill(&mut self) -> Vec<Grant> {
        let mut grants = Vec::new();
        while self
            .limits
            .max_concurrent
            .is_none_or(|max| self.in_flight < max)
        {
            let Some((_, key)) = self.order.pop_first() else {
                break;
            };
            let state = self.keys.get_mut(&key).expect("a waiting key has a state");
            let ticket = state
                .waiting
                .pop_front()
                .expect("a waiting key has tickets");
            let (_, deadline) = self.tickets.remove(&ticket).expect("a waiting ticket");
            self.deadlines.remove(&(deadline, ticket));
            let lease = self.start(&key);
            let state = &self.keys[&key];
            if !state.waiting.is_empty() {
                self.order.insert((state.last_served, key));
            }
            grants.push(Grant { ticket, lease });
        }
        grants
    }

    fn remove(&mut self, ticket: Ticket) -> bool {
        let Some((key, deadline)) = self.tickets.remove(&ticket) else {
            return false;
        };
        self.deadlines.remove(&(deadline, ticket));
        let state = self.keys.get_mut(&key).expect("a waiting key has a state");
        state.waiting.retain(|&t| t != ticket);
        if state.waiting.is_empty() {
            self.order.remove(&(state.last_served, key));
        }
        self.rest_if_idle();
        true
    }

    /// Nobody in flight and nobody waiting: no turn is worth remembering
    /// (the next contention starts afresh), so every key's is forgotten.
    fn rest_if_idle(&mut self) {
        if self.in_flight == 0 && self.tickets.is_empty() {
            for state in self.keys.values_mut() {
                state.last_served = 0;
            }
        }
    }
}

#[cfg(test)]
#[path = "turns_tests.rs"]
mod tests;

/// What `key`'s request on a generation or embedding route (`slot`) asks
/// of the doorman under `limits`; `None` when no limit applies to it.
pub(crate) fn turn_for(key: &crate::auth::Key, slot: bool, limits: &TurnLimits) -> Option<Turn> {
    let policy = &key.policy;
    let slot = slot && (limits.max_concurrent.is_some() || policy.max_concurrent.is_some());
    (slot || policy.requests_per_minute.is_some()).then(|| Turn {
        key: key.name.clone(),
        slot,
        key_cap: policy.max_concurrent,
        per_minute: policy.requests_per_minute,
    })
}

impl Turn {
    /// A turn as the Worker's Durable Object receives it (see
    /// [`Turn::slot`] and the rest, which the isolate sends).
    pub fn from_parts(
        key: &str,
        slot: bool,
        key_cap: Option<u32>,
        per_minute: Option<u32>,
    ) -> Self {
        Self {
            key: KeyName::new(key),
            slot,
            key_cap,
            per_minute,
        }
    }

    /// Whether it takes a slot.
    pub fn slot(&self) -> bool {
        self.slot
    }

    /// The key's `max_concurrent`.
    pub fn key_cap(&self) -> Option<u32> {
        self.key_cap
    }

    /// The key's `requests_per_minute`.
    pub fn per_minute(&self) -> Option<u32> {
        self.per_minute
    }
}
