use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

const SECOND: u64 = 1_000_000;
/// A wall clock well past zero, as `Date.now()` gives.
const T0: u64 = 1_790_000_000 * SECOND;

fn limits(max: Option<u32>) -> TurnLimits {
    TurnLimits {
        max_concurrent: max,
        ..TurnLimits::default()
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
    let mut d = store.restart(limits(Some(1)), T0);
    let id = lease_of(d.admit(&slot("alice"), T0));
    store.write(d.take_changes());
    drop(d);
    let mut d = store.restart(limits(Some(1)), T0 + 10 * SECOND);
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

#[derive(Clone, Debug)]
enum Op {
    Admit {
        key: usize,
        slot: bool,
        cap: Option<u32>,
        per_minute: Option<u32>,
    },
    Release(usize),
    /// Time passes; every holder renews every 5 s, as isolates do.
    Wait(u64),
    /// A holder stops renewing (its isolate died); a lease's life passes.
    Die(usize),
    /// The object evicted and started again from its storage.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>(), prop::option::of(1..3u32), prop::option::of(1..10u32))
            .prop_map(|(key, slot, cap, per_minute)| Op::Admit { key, slot, cap, per_minute }),
        2 => (0..8usize).prop_map(Op::Release),
        2 => (0..40 * SECOND).prop_map(Op::Wait),
        1 => (0..8usize).prop_map(Op::Die),
        1 => Just(Op::Restart),
    ]
}

/// Both objects' holders renew, in steps of at most 5 s up to `until`.
fn pass_time(
    now: &mut u64,
    until: u64,
    held: &[(u64, u64)],
    kept: &mut SharedDoorman,
    never: &mut SharedDoorman,
) -> Result<(), TestCaseError> {
    while *now < until {
        *now = until.min(*now + 5 * SECOND);
        for &(k, n) in held {
            prop_assert!(kept.renew(k, *now), "a live lease lost");
            prop_assert!(never.renew(n, *now));
        }
    }
    Ok(())
}

proptest! {
    /// Whatever happens and whenever the object is evicted, it decides as
    /// one that never was — every admission, refusal and rate header, every
    /// live holder's renewal — and never reuses a lease id; a holder that
    /// died is taken back by both within a lease's life.
    #[test]
    fn an_evicted_object_decides_as_one_that_never_was(
        max in prop::option::of(1..4u32),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        const KEYS: [&str; 3] = ["alice", "bob", "carol"];
        let limits = limits(max);
        let mut store = Store::default();
        let mut kept = store.restart(limits, T0);
        let mut never = SharedDoorman::restore(limits, [], T0);
        let mut now = T0;
        // Live leases: (the evicted object's id, the other's).
        let mut held: Vec<(u64, u64)> = Vec::new();
        let mut issued = std::collections::HashSet::new();
        for op in ops {
            match op {
                Op::Admit { key, slot, cap, per_minute } => {
                    let turn = Turn::from_parts(KEYS[key], slot, cap, per_minute);
                    match (kept.admit(&turn, now), never.admit(&turn, now)) {
                        (
                            SharedAdmission::Go { lease: k, rate },
                            SharedAdmission::Go { lease: n, rate: never_rate },
                        ) => {
                            prop_assert_eq!(rate, never_rate);
                            prop_assert_eq!(k.is_some(), n.is_some());
                            if let (Some(k), Some(n)) = (k, n) {
                                prop_assert!(issued.insert(k), "id {} reused", k);
                                held.push((k, n));
                            }
                        }
                        (k, n) => prop_assert_eq!(k, n),
                    }
                }
                Op::Release(i) if i < held.len() => {
                    let (k, n) = held.swap_remove(i);
                    kept.release(k, now);
                    never.release(n, now);
                }
                Op::Wait(us) => {
                    let until = now + us;
                    pass_time(&mut now, until, &held, &mut kept, &mut never)?;
                }
                Op::Die(i) if i < held.len() => {
                    let (k, n) = held.swap_remove(i);
                    let until = now + LEASE_TTL_US;
                    pass_time(&mut now, until, &held, &mut kept, &mut never)?;
                    prop_assert!(!kept.renew(k, now), "a dead holder's lease outlived its life");
                    prop_assert!(!never.renew(n, now));
                }
                Op::Release(_) | Op::Die(_) => {}
                Op::Restart => kept = store.restart(limits, now),
            }
            store.write(kept.take_changes());
            let _ = never.take_changes();
        }
        // Every answer ended and every bucket refilled: nothing is kept
        // but the block of ids.
        for (k, _) in held {
            kept.release(k, now);
        }
        let _ = kept.admit(&Turn::from_parts("zed", false, None, None), now + 60 * SECOND);
        store.write(kept.take_changes());
        prop_assert!(store.0.keys().all(|name| name == "lease-next"), "{:?}", store.0);
    }
}

proptest! {
    /// The edge's doorman decides as the native one does with no queue
    /// (`MAX_QUEUE=0`): the same admissions and refusals, the same rate
    /// headers, whatever the keys, caps, rates and order.
    #[test]
    fn the_edge_decides_as_natively_without_a_queue(
        max in prop::option::of(1..4u32),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        const KEYS: [&str; 3] = ["alice", "bob", "carol"];
        let limits = TurnLimits { max_queue: 0, ..limits(max) };
        let mut native = Doorman::new(limits);
        let mut edge = SharedDoorman::restore(limits, [], T0);
        let mut now = T0;
        let mut held: Vec<(Lease, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Admit { key, slot, cap, per_minute } => {
                    let turn = Turn::from_parts(KEYS[key], slot, cap, per_minute);
                    match (native.admit(&turn, now), edge.admit(&turn, now)) {
                        (
                            Admission::Go { lease, rate },
                            SharedAdmission::Go { lease: id, rate: edge_rate },
                        ) => {
                            prop_assert_eq!(rate, edge_rate);
                            prop_assert_eq!(lease.is_some(), id.is_some());
                            if let (Some(lease), Some(id)) = (lease, id) {
                                held.push((lease, id));
                            }
                        }
                        (Admission::Refuse(refusal), SharedAdmission::Refused(edge_refusal)) => {
                            prop_assert_eq!(refusal, edge_refusal);
                        }
                        (native, edge) => {
                            prop_assert!(false, "native {:?}, edge {:?}", native, edge);
                        }
                    }
                }
                Op::Release(i) if i < held.len() => {
                    let (lease, id) = held.swap_remove(i);
                    prop_assert!(native.release(lease).is_empty());
                    edge.release(id, now);
                }
                // Time passes with every holder renewing as an isolate does
                // (natively a slot needs no renewal).
                Op::Wait(us) => {
                    let end = now + us;
                    while now < end {
                        now = end.min(now + 5 * SECOND);
                        for &(_, id) in &held {
                            prop_assert!(edge.renew(id, now));
                        }
                    }
                }
                Op::Die(_) | Op::Release(_) | Op::Restart => {}
            }
            let _ = edge.take_changes();
        }
        prop_assert_eq!(native.in_flight(), edge.in_flight());
    }
}
