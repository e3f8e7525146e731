//! The doorman kept for holders elsewhere: the Worker's Durable Object,
//! which every isolate asks over RPC before a limited request goes on. It
//! decides as the native [`Doorman`] does, with three differences:
//!
//! - **Waiting elsewhere.** A request that finds every slot taken waits in
//!   the same fair queue, as a call to the object held open: it gets a
//!   ticket ([`SharedAdmission::Wait`]), and the object answers the call
//!   when [`SharedDoorman::take_grants`] names it or
//!   [`SharedDoorman::expire`] times it out. Tickets are not kept: a new
//!   object has nobody waiting (the calls waiting on the old one failed).
//! - **Leases.** A slot is held by id for its holder ([`LeaseTable`]), which
//!   renews it while its answer streams; one not renewed within
//!   [`LEASE_TTL_US`] is taken back, so a holder that dies cannot keep it.
//!   A slot granted to a waiting request must be claimed (renewed once) within
//!   [`CLAIM_TTL_US`]: the call it answers may have nobody behind it any
//!   more (its client left while it waited, its isolate gone), and then the
//!   slot goes to the next in the queue within seconds, not a lease's life.
//! - **Kept state.** The object can be evicted (idle a few seconds) or
//!   restarted (a new deployment) at any moment, and its memory goes with
//!   it. Every change to what must outlive it — each key's rate bucket, each
//!   lease and its expiry, the last lease id — comes out as [`Changes`] for
//!   the object to write to its storage, and [`SharedDoorman::restore`]
//!   picks up from what was written: a key's `requests_per_minute` holds
//!   across evictions, and a holder still streaming through a redeploy keeps
//!   its slot.
//!
//! Sans-IO: the caller passes the time — microseconds of the wall clock, the
//! one clock every instance of the object shares — and stores the records.
//! Records are text pairs: `rate:<key>` → the bucket's theoretical arrival
//! time in nanoseconds; `lease:<id>` → `<expires_us> <key>`; `lease-next` →
//! the end of the block of lease ids in use (ids are never reused, so a late
//! renewal from a holder whose lease was taken back cannot renew someone
//! else's). Writes are what storage bills: a request with a rate writes its
//! bucket; one with a slot its lease too (and `lease-next` once per 1,024),
//! then once every four renewals while it streams, and deletes it at the
//! end; one that waited for its slot writes its lease once more (the claim).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::auth::KeyName;
use crate::lease_table::LeaseTable;
use crate::rate::{Bucket, Rate, RateState};
use crate::turns::{Admission, Doorman, Lease, Turn, TurnLimits, TurnRefusal};

/// How long a lease held across isolates (the Worker's Durable Object)
/// lasts unless renewed: an isolate that dies mid-answer leaks its slot
/// for this long at most.
pub const LEASE_TTL_US: u64 = 30_000_000;

/// How long a slot granted to a waiting request stays its own before its
/// holder claims it ([`SharedDoorman::renew`], at once when the grant
/// arrives): a holder that does not was gone when its turn came. Twice the
/// isolates' renewal period: a holder running the previous version of the
/// Worker during a rollout (it renews first after 5 s, and knows no claim)
/// keeps its slot, and a busy object has slack.
pub const CLAIM_TTL_US: u64 = 10_000_000;

const RATE: &str = "rate:";
const LEASE: &str = "lease:";
const NEXT_LEASE: &str = "lease-next";

/// Records to write to the object's storage: by name, the value to put, or
/// `None` to delete it. The last change to a name wins.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes(BTreeMap<String, Option<String>>);

impl Changes {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Records to put: name and value.
    pub fn puts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(name, value)| Some((name.as_str(), value.as_deref()?)))
    }

    /// Records to delete.
    pub fn deletes(&self) -> impl Iterator<Item = &str> {
        self.0
            .iter()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name.as_str())
    }

    fn put(&mut self, name: String, value: String) {
        self.0.insert(name, Some(value));
    }

    fn delete(&mut self, name: String) {
        self.0.insert(name, None);
    }
}

/// The answer to [`SharedDoorman::admit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SharedAdmission {
    /// Go on; hold `lease` (by id) while the answer streams, if it took a
    /// slot; `rate` is the key's bucket for the rate headers.
    Go {
        /// The lease's id.
        lease: Option<u64>,
        /// Where the key's rate stands.
        rate: Option<RateState>,
    },
    /// Every slot is taken: wait, as `ticket`, for a grant (see
    /// [`SharedDoorman::take_grants`]) or the deadline
    /// ([`SharedDoorman::expire`]); `rate` as for `Go`.
    Wait {
        /// The waiting request's number.
        ticket: u64,
        /// Where the key's rate stands.
        rate: Option<RateState>,
    },
    /// No turn.
    Refused(TurnRefusal),
}

/// The doorman, its leases and the changes to keep. See the module docs.
#[derive(Debug)]
pub struct SharedDoorman {
    doorman: Doorman,
    leases: LeaseTable,
    /// Each held lease's expiry as written (see [`SharedDoorman::renew`]).
    kept_expiry: HashMap<u64, u64>,
    /// Lease ids up to this are reserved by the `lease-next` record.
    kept_ids: u64,
    /// Keys whose bucket has a record.
    rated: HashSet<KeyName>,
    changes: Changes,
    /// Slots that went to waiting requests: (ticket, lease id).
    granted: Vec<(u64, u64)>,
}

/// Lease ids are reserved this many at a time: `lease-next` is written once
/// per block, not per lease.
const ID_BLOCK: u64 = 1024;

impl SharedDoorman {
    /// Picks up from `records` (every record the object's storage holds) at
    /// `now_us`, under `limits`. Nobody waits in a new object (waiting
    /// requests are calls to the old one, which failed with it). Records
    /// with nothing left to keep — a bucket full again, a lease expired —
    /// and any it cannot read come out as deletions in the first
    /// [`Changes`]. With no `lease-next` (storage new, or wiped) lease ids
    /// start at `now_us`, above any a previous object's isolates may still
    /// hold.
    pub fn restore<'a>(
        limits: TurnLimits,
        records: impl IntoIterator<Item = (&'a str, &'a str)>,
        now_us: u64,
    ) -> Self {
        let mut kept = Self {
            doorman: Doorman::new(limits),
            leases: LeaseTable::new(LEASE_TTL_US),
            kept_expiry: HashMap::new(),
            kept_ids: 0,
            rated: HashSet::new(),
            changes: Changes::default(),
            granted: Vec::new(),
        };
        let mut ids_kept = false;
        for (name, value) in records {
            ids_kept |= name == NEXT_LEASE;
            if !kept.restore_record(name, value, now_us) {
                kept.changes.delete(name.to_owned());
            }
        }
        if !ids_kept {
            kept.leases.resume_after(now_us);
        }
        kept
    }

    /// A request asks for its turn at `now_us`.
    pub fn admit(&mut self, turn: &Turn, now_us: u64) -> SharedAdmission {
        self.take_back(now_us);
        let admission = match self.doorman.admit(turn, now_us) {
            Admission::Go { lease, rate } => {
                if rate.is_some() {
                    self.keep_bucket(turn.key(), now_us);
                }
                let lease = lease.map(|lease| self.hold(lease, now_us, LEASE_TTL_US));
                SharedAdmission::Go { lease, rate }
            }
            Admission::Wait { ticket, rate, .. } => {
                if rate.is_some() {
                    self.keep_bucket(turn.key(), now_us);
                }
                SharedAdmission::Wait {
                    ticket: ticket.id(),
                    rate,
                }
            }
            Admission::Refuse(refusal) => SharedAdmission::Refused(refusal),
        };
        self.forget_idle(now_us);
        admission
    }

    /// The waiting requests whose `QUEUE_TIMEOUT` has passed at `now_us`
    /// (answer them with [`TurnRefusal::QueueTimeout`]); slots of holders
    /// gone quiet are taken back first (and may go to waiting requests).
    pub fn expire(&mut self, now_us: u64) -> Vec<u64> {
        self.take_back(now_us);
        let expired = self.doorman.expire(now_us);
        expired.into_iter().map(|ticket| ticket.id()).collect()
    }

    /// A waiting request gave up (its client left): true if it was still
    /// waiting; false if it was granted meanwhile (release that lease) or
    /// had expired.
    pub fn cancel(&mut self, ticket: u64) -> bool {
        self.doorman.cancel(crate::turns::Ticket::from_id(ticket))
    }

    /// Slots that went to waiting requests since the last call: (ticket,
    /// lease id). Each holder claims its lease at once (a first
    /// [`SharedDoorman::renew`], within [`CLAIM_TTL_US`]), then renews and
    /// releases it as one that went at once.
    pub fn take_grants(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.granted)
    }

    /// When to call [`SharedDoorman::expire`] next: the earliest deadline of
    /// a waiting request, or, while any waits, the earliest expiry of a
    /// lease (a holder gone quiet frees its slot for them then).
    pub fn next_wake(&self) -> Option<u64> {
        let deadline = self.doorman.next_deadline()?;
        Some(
            self.leases
                .next_expiry()
                .map_or(deadline, |e| e.min(deadline)),
        )
    }

    /// Requests waiting.
    pub fn queued(&self) -> usize {
        self.doorman.queued()
    }

    /// Lease `id`'s answer still streams at `now_us`: false if the lease had
    /// expired (and was taken back) or is unknown. The new expiry is written
    /// only once the one written has less than half a lease's life left: a
    /// holder renewing every sixth of it (as the Worker's isolates do) has
    /// its written expiry at least a third of a life ahead at any moment, so
    /// it keeps its lease through a restart, with a write every four
    /// renewals instead of each; a holder gone is taken back sooner after a
    /// restart, never later.
    pub fn renew(&mut self, id: u64, now_us: u64) -> bool {
        self.take_back(now_us);
        let renewed = self.leases.renew(id, now_us);
        let kept = self.kept_expiry.get(&id).copied().unwrap_or(0);
        if renewed && kept.saturating_sub(now_us) < LEASE_TTL_US / 2 {
            self.keep_lease(id);
        }
        renewed
    }

    /// Lease `id`'s answer ended: its slot comes back.
    pub fn release(&mut self, id: u64, now_us: u64) {
        if let Some(lease) = self.leases.take(id) {
            self.drop_lease(id);
            let grants = self.doorman.release_at(lease, now_us);
            self.grant(grants, now_us);
        }
        self.take_back(now_us);
        self.forget_idle(now_us);
    }

    /// What changed since the last call, to write to storage before the
    /// answer goes out.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Slots in use.
    pub fn in_flight(&self) -> u32 {
        self.doorman.in_flight()
    }

    /// Leases whose holders went quiet go back to the doorman.
    fn take_back(&mut self, now_us: u64) {
        for (id, lease) in self.leases.expired(now_us) {
            self.drop_lease(id);
            let grants = self.doorman.release_at(lease, now_us);
            self.grant(grants, now_us);
        }
    }

    /// Holds a lease for `ttl_us` from `now_us`: its id, kept with its block.
    fn hold(&mut self, lease: Lease, now_us: u64, ttl_us: u64) -> u64 {
        let id = self.leases.hold_for(lease, now_us, ttl_us);
        self.keep_lease(id);
        if id > self.kept_ids {
            self.kept_ids = id.div_ceil(ID_BLOCK) * ID_BLOCK;
            self.changes
                .put(NEXT_LEASE.to_owned(), self.kept_ids.to_string());
        }
        id
    }

    fn grant(&mut self, grants: Vec<crate::turns::Grant>, now_us: u64) {
        for grant in grants {
            // Until its holder claims it: the call it answers may have
            // nobody behind it any more.
            let id = self.hold(grant.lease, now_us, CLAIM_TTL_US);
            self.granted.push((grant.ticket.id(), id));
        }
    }

    /// Forgets the records of buckets full again (storage holds the keys in
    /// use only), and keys with nothing held, a full bucket and no turn to
    /// remember. Done after every call: at the edge records, not only
    /// memory, are at stake.
    fn forget_idle(&mut self, now_us: u64) {
        self.doorman.forget_idle(now_us);
        let Self {
            doorman,
            rated,
            changes,
            ..
        } = self;
        rated.retain(|key| {
            let held = doorman.bucket(key, now_us).is_some();
            if !held {
                changes.delete(rate_name(key));
            }
            held
        });
    }

    fn keep_bucket(&mut self, key: &KeyName, now_us: u64) {
        if let Some(bucket) = self.doorman.bucket(key, now_us) {
            self.changes
                .put(rate_name(key), bucket.tat_ns().to_string());
            self.rated.insert(key.clone());
        }
    }

    fn keep_lease(&mut self, id: u64) {
        if let Some((key, expires_us)) = self.leases.get(id) {
            let value = format!("{expires_us} {}", key.as_str());
            self.changes.put(lease_name(id), value);
            self.kept_expiry.insert(id, expires_us);
        }
    }

    fn drop_lease(&mut self, id: u64) {
        self.changes.delete(lease_name(id));
        self.kept_expiry.remove(&id);
    }

    /// Takes one record back in; false if there is nothing to keep of it.
    fn restore_record(&mut self, name: &str, value: &str, now_us: u64) -> bool {
        if let Some(key) = name.strip_prefix(RATE) {
            let Ok(tat_ns) = value.parse::<u64>() else {
                return false;
            };
            let bucket = Bucket::from_tat_ns(tat_ns);
            if key.is_empty() || Rate::is_full(bucket, now_us) {
                return false;
            }
            let key = KeyName::new(key);
            self.doorman.restore_bucket(&key, bucket);
            self.rated.insert(key);
            return true;
        }
        if let Some(id) = name.strip_prefix(LEASE) {
            let lease = value
                .split_once(' ')
                .and_then(|(expires, key)| Some((expires.parse::<u64>().ok()?, key)));
            let (Ok(id), Some((expires_us, key))) = (id.parse::<u64>(), lease) else {
                return false;
            };
            // Even expired, its id stays used.
            self.leases.resume_after(id);
            if key.is_empty() || expires_us <= now_us {
                return false;
            }
            let lease = self.doorman.restore_slot(&KeyName::new(key));
            self.leases.restore(id, lease, expires_us);
            self.kept_expiry.insert(id, expires_us);
            return true;
        }
        if name == NEXT_LEASE {
            let Ok(id) = value.parse::<u64>() else {
                return false;
            };
            self.leases.resume_after(id);
            self.kept_ids = self.kept_ids.max(id);
            return true;
        }
        false
    }
}

fn rate_name(key: &KeyName) -> String {
    format!("{RATE}{}", key.as_str())
}

fn lease_name(id: u64) -> String {
    format!("{LEASE}{id}")
}

#[cfg(test)]
#[path = "shared_turns_tests.rs"]
mod tests;
