use std::collections::{BTreeMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::turns::{Grant, Ticket};

#[path = "shared_turns_props.rs"]
mod props;

const SECOND: u64 = 1_000_000;
/// A wall clock well past zero, as `Date.now()` gives.
const T0: u64 = 1_790_000_000 * SECOND;

fn limits(max: Option<u32>) -> TurnLimits {
    TurnLimits {
        max_concurrent: max,
        ..TurnLimits::default()
    }
}

fn queue_limits(max: Option<u32>, queue: u32) -> TurnLimits {
    TurnLimits {
        max_concurrent: max,
        max_queue: queue,
        queue_timeout_us: 20 * SECOND,
    }
}

/// An object's storage: what its writes leave.
#[derive(Default)]
struct Store(BTreeMap<String, String>);

impl Store {
    fn write(&mut self, changes: Changes) {
        for name in changes.deletes() {
            self.0.remove(name);
        }
        for (name, value) in changes.puts() {
            self.0.insert(name.to_owned(), value.to_owned());
        }
    }

    /// The object evicted and started again at `now_us`: what it reads back.
    fn restart(&mut self, limits: TurnLimits, now_us: u64) -> SharedDoorman {
        let mut d = SharedDoorman::restore(
            limits,
            self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())),
            now_us,
        );
        self.write(d.take_changes());
        d
    }
}

fn rated(name: &str, per_minute: u32) -> Turn {
    Turn::from_parts(name, false, None, Some(per_minute))
}

fn slot(name: &str) -> Turn {
    Turn::from_parts(name, true, None, None)
}

fn lease_of(admission: SharedAdmission) -> u64 {
    match admission {
        SharedAdmission::Go {
            lease: Some(id), ..
        } => id,
        other => panic!("expected a slot: {other:?}"),
    }
}

#[test]
fn leases_not_renewed_are_taken_back() {
    let mut d = Doorman::new(limits(Some(1)));
    let mut table = LeaseTable::new(30 * SECOND);
    let Admission::Go {
        lease: Some(lease), ..
    } = d.admit(&slot("a"), 0)
    else {
        panic!("expected a slot")
    };
    let id = table.hold(lease, 0);
    assert!(table.renew(id, 20 * SECOND));
    assert!(table.expired(49 * SECOND).is_empty());
    // Its holder went quiet: the slot comes back, and the holder's late
    // renewal or return finds nothing.
    let expired = table.expired(50 * SECOND);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].0, id);
    for (_, l) in expired {
        d.release(l);
    }
    assert!(!table.renew(id, 51 * SECOND));
    assert!(table.take(id).is_none());
    assert!(table.is_empty());
    assert!(matches!(
        d.admit(&slot("b"), 51 * SECOND),
        Admission::Go { lease: Some(_), .. }
    ));
}

/// The bug this module exists for: the object evicted after a quiet spell
/// started every bucket full again.
#[test]
fn a_keys_rate_holds_across_a_restart() {
    let mut store = Store::default();
    let mut d = store.restart(limits(None), T0);
    for _ in 0..3 {
        assert!(matches!(
            d.admit(&rated("alice", 3), T0),
            SharedAdmission::Go { .. }
        ));
    }
    store.write(d.take_changes());
    drop(d);
    // Evicted; a request a second later finds the bucket still empty.
    let mut d = store.restart(limits(None), T0 + SECOND);
    match d.admit(&rated("alice", 3), T0 + SECOND) {
        SharedAdmission::Refused(TurnRefusal::RateLimited(r)) => {
            assert_eq!(r.retry_in_us, 19 * SECOND);
            assert_eq!(r.limit, 3);
        }
        other => panic!("expected a rate refusal: {other:?}"),
    }
    // Another key is untouched, and the bucket refills on time.
    assert!(matches!(
        d.admit(&rated("bob", 3), T0 + SECOND),
        SharedAdmission::Go { .. }
    ));
    assert!(matches!(
        d.admit(&rated("alice", 3), T0 + 20 * SECOND),
        SharedAdmission::Go { .. }
    ));
}

#[test]
fn a_lease_holds_across_a_restart_and_ids_are_not_reused() {
    let mut store = Store::default();
    let limits = queue_limits(Some(1), 0);
    let mut d = store.restart(limits, T0);
    let id = lease_of(d.admit(&slot("alice"), T0));
    store.write(d.take_changes());
    drop(d);
    let mut d = store.restart(limits, T0 + 10 * SECOND);
    assert_eq!(d.in_flight(), 1);
    assert_eq!(
        d.admit(&slot("bob"), T0 + 10 * SECOND),
        SharedAdmission::Refused(TurnRefusal::QueueFull)
    );
    // Its holder, still streaming, renews and gives it back.
    assert!(d.renew(id, T0 + 10 * SECOND));
    d.release(id, T0 + 11 * SECOND);
    assert_eq!(d.in_flight(), 0);
    let next = lease_of(d.admit(&slot("bob"), T0 + 11 * SECOND));
    assert!(next > id, "{next} reuses an id up to {id}");
}

#[test]
fn what_is_kept_is_only_what_is_still_needed() {
    let mut store = Store::default();
    let mut d = store.restart(limits(Some(2)), T0);
    let a = lease_of(d.admit(&Turn::from_parts("alice", true, None, Some(60)), T0));
    let b = lease_of(d.admit(&slot("bob"), T0));
    // A fresh store: ids start at the clock, above any an earlier object's
    // isolates may hold, and are reserved a block at a time.
    assert_eq!((a, b), (T0 + 1, T0 + 2));
    store.write(d.take_changes());
    let names: Vec<&str> = store.0.keys().map(String::as_str).collect();
    let (la, lb) = (format!("lease:{a}"), format!("lease:{b}"));
    assert_eq!(names, ["lease-next", &la, &lb, "rate:alice"]);
    assert_eq!(store.0[&la], format!("{} alice", T0 + LEASE_TTL_US));
    let block: u64 = store.0["lease-next"].parse().unwrap();
    assert!(block >= b && block % ID_BLOCK == 0, "{block}");
    // Both answers end once alice's bucket is full again: nothing is left
    // but the block.
    d.release(a, T0 + 5 * SECOND);
    d.release(b, T0 + 5 * SECOND);
    store.write(d.take_changes());
    assert_eq!(store.0.keys().collect::<Vec<_>>(), ["lease-next"]);
    drop(d);
    // Records a restart finds stale or cannot read are deleted, and ids
    // stay above any seen.
    let stale = block + 7;
    store
        .0
        .insert(format!("lease:{stale}"), format!("{T0} carol"));
    store.0.insert("rate:dave".into(), T0.to_string());
    store.0.insert("rate:erin".into(), "not a number".into());
    store.0.insert("lease:x".into(), "1 frank".into());
    store.0.insert("something-else".into(), "1".into());
    let mut d = store.restart(limits(Some(2)), T0 + 6 * SECOND);
    assert_eq!(store.0.keys().collect::<Vec<_>>(), ["lease-next"]);
    assert_eq!(d.in_flight(), 0);
    assert_eq!(lease_of(d.admit(&slot("bob"), T0 + 6 * SECOND)), stale + 1);
}

/// A key with a rate and no slot never releases anything: its record goes
/// once its bucket is full again all the same.
#[test]
fn rate_records_go_without_any_release() {
    let mut store = Store::default();
    let mut d = store.restart(limits(None), T0);
    for key in ["a", "b", "c"] {
        assert!(matches!(
            d.admit(&rated(key, 60), T0),
            SharedAdmission::Go { .. }
        ));
    }
    store.write(d.take_changes());
    assert_eq!(store.0.len(), 3);
    assert!(matches!(
        d.admit(&rated("a", 60), T0 + 60 * SECOND),
        SharedAdmission::Go { .. }
    ));
    store.write(d.take_changes());
    assert_eq!(store.0.keys().collect::<Vec<_>>(), ["rate:a"]);
}

/// A holder renewing every 5 s writes its lease once every four renewals,
/// and keeps it through a restart at any moment.
#[test]
fn renewals_are_written_a_quarter_of_the_time_and_still_hold() {
    let mut store = Store::default();
    let mut d = store.restart(limits(Some(1)), T0);
    let id = lease_of(d.admit(&slot("alice"), T0));
    store.write(d.take_changes());
    let mut writes = 0;
    for i in 1..=24u64 {
        let now = T0 + i * 5 * SECOND;
        // Evicted at any moment, the object still knows the lease.
        d = store.restart(limits(Some(1)), now);
        assert!(d.renew(id, now), "lost at {i}");
        let changes = d.take_changes();
        writes += usize::from(!changes.is_empty());
        store.write(changes);
    }
    assert_eq!(writes, 6, "two minutes of renewals");
    // The holder gone, its slot comes back no later than a lease's life
    // after its last renewal.
    let last = T0 + 120 * SECOND;
    let mut d = store.restart(limits(Some(1)), last + LEASE_TTL_US);
    assert!(matches!(
        d.admit(&slot("bob"), last + LEASE_TTL_US),
        SharedAdmission::Go { lease: Some(_), .. }
    ));
}

/// A holder that died leaves its slot to the request waiting for one once
/// its lease lapses, and `next_wake` says when to look.
#[test]
fn a_dead_holders_slot_goes_to_a_waiting_request() {
    let limits = TurnLimits {
        queue_timeout_us: 60 * SECOND,
        ..queue_limits(Some(1), 5)
    };
    let mut d = SharedDoorman::restore(limits, [], T0);
    let dead = lease_of(d.admit(&slot("alice"), T0));
    let SharedAdmission::Wait { ticket, .. } = d.admit(&slot("bob"), T0 + SECOND) else {
        panic!("expected to wait")
    };
    // The lease lapses before the waiting request's deadline.
    assert_eq!(d.next_wake(), Some(T0 + LEASE_TTL_US));
    assert!(d.expire(T0 + LEASE_TTL_US - 1).is_empty());
    assert!(d.take_grants().is_empty());
    assert!(d.expire(T0 + LEASE_TTL_US).is_empty());
    let grants = d.take_grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].0, ticket);
    assert!(grants[0].1 > dead);
    assert!(!d.renew(dead, T0 + LEASE_TTL_US));
    assert!(d.renew(grants[0].1, T0 + LEASE_TTL_US));
    // Nobody waits: nothing to wake for.
    assert_eq!(d.next_wake(), None);
}

/// A waiting request that is neither granted nor cancelled times out at
/// its deadline.
#[test]
fn a_waiting_request_times_out() {
    let mut d = SharedDoorman::restore(queue_limits(Some(1), 5), [], T0);
    let held = lease_of(d.admit(&slot("alice"), T0));
    let SharedAdmission::Wait { ticket, .. } = d.admit(&slot("bob"), T0) else {
        panic!("expected to wait")
    };
    assert_eq!(d.next_wake(), Some(T0 + 20 * SECOND));
    assert!(d.renew(held, T0 + 19 * SECOND));
    assert_eq!(d.expire(T0 + 20 * SECOND), [ticket]);
    assert_eq!(d.queued(), 0);
    assert!(!d.cancel(ticket));
}

/// A slot granted to a waiting request whose holder never claims it (the
/// call it answered had nobody behind it: the client left while it waited)
/// goes to the next in line after `CLAIM_TTL_US`, not a lease's life; one
/// claimed at once is held as any other.
#[test]
fn an_unclaimed_grant_goes_to_the_next_in_line() {
    let limits = TurnLimits {
        queue_timeout_us: 60 * SECOND,
        ..queue_limits(Some(1), 5)
    };
    for claimed in [false, true] {
        let mut d = SharedDoorman::restore(limits, [], T0);
        let first = lease_of(d.admit(&slot("alice"), T0));
        let SharedAdmission::Wait { ticket: gone, .. } = d.admit(&slot("bob"), T0) else {
            panic!("expected to wait")
        };
        let SharedAdmission::Wait { ticket: next, .. } = d.admit(&slot("carol"), T0) else {
            panic!("expected to wait")
        };
        let at = T0 + SECOND;
        d.release(first, at);
        let grants = d.take_grants();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].0, gone);
        let granted = grants[0].1;
        if claimed {
            assert!(d.renew(granted, at));
            // Held for a lease's life from its claim, like any other.
            assert!(d.expire(at + LEASE_TTL_US - 1).is_empty());
            assert!(d.take_grants().is_empty());
            assert!(d.renew(granted, at + LEASE_TTL_US - 1));
            continue;
        }
        assert_eq!(d.next_wake(), Some(at + CLAIM_TTL_US));
        assert!(d.expire(at + CLAIM_TTL_US - 1).is_empty());
        assert!(d.take_grants().is_empty());
        assert!(d.expire(at + CLAIM_TTL_US).is_empty());
        let grants = d.take_grants();
        assert_eq!(grants.len(), 1);
        assert_eq!(grants[0].0, next, "the slot goes to the next in line");
        assert!(
            !d.renew(granted, at + CLAIM_TTL_US),
            "a late claim finds nothing"
        );
        assert!(d.renew(grants[0].1, at + CLAIM_TTL_US));
    }
}

/// A grant is kept with its claim window: an object restarted before the
/// claim still has the slot for its holder until the window ends (the claim
/// then holds it a lease's life, and is written), and takes it back after.
#[test]
fn an_unclaimed_grant_outlives_a_restart_only_until_its_window_ends() {
    let limits = TurnLimits {
        queue_timeout_us: 60 * SECOND,
        ..queue_limits(Some(1), 5)
    };
    for claim_at in [CLAIM_TTL_US - 1, CLAIM_TTL_US] {
        let mut store = Store::default();
        let mut d = store.restart(limits, T0);
        let first = lease_of(d.admit(&slot("alice"), T0));
        assert!(matches!(
            d.admit(&slot("bob"), T0),
            SharedAdmission::Wait { .. }
        ));
        d.release(first, T0);
        let granted = d.take_grants()[0].1;
        store.write(d.take_changes());
        let mut d = store.restart(limits, T0 + SECOND);
        let in_time = claim_at < CLAIM_TTL_US;
        assert_eq!(d.renew(granted, T0 + claim_at), in_time);
        store.write(d.take_changes());
        // The claim was written: another restart keeps the slot a lease's
        // life from it; a late claim found nothing to keep.
        let mut d = store.restart(limits, T0 + claim_at + SECOND);
        assert_eq!(d.in_flight(), u32::from(in_time));
        assert_eq!(d.renew(granted, T0 + claim_at + LEASE_TTL_US - 1), in_time);
    }
}
