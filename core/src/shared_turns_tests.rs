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
    store.write(d.take_changes());
    let names: Vec<&str> = store.0.keys().map(String::as_str).collect();
    assert_eq!(names, ["lease-next", "lease:1", "lease:2", "rate:alice"]);
    assert_eq!(store.0["lease:1"], format!("{} alice", T0 + LEASE_TTL_US));
    assert_eq!(store.0["lease-next"], "2");
    // Both answers end once alice's bucket is full again: nothing is left
    // but the last id.
    d.release(a, T0 + 5 * SECOND);
    d.release(b, T0 + 5 * SECOND);
    store.write(d.take_changes());
    assert_eq!(store.0.keys().collect::<Vec<_>>(), ["lease-next"]);
    drop(d);
    // Records a restart finds stale or cannot read are deleted, and ids
    // stay above any seen.
    store.0.insert("lease:7".into(), format!("{T0} carol"));
    store.0.insert("rate:dave".into(), T0.to_string());
    store.0.insert("rate:erin".into(), "not a number".into());
    store.0.insert("lease:x".into(), "1 frank".into());
    store.0.insert("something-else".into(), "1".into());
    let mut d = store.restart(limits(Some(2)), T0 + 6 * SECOND);
    assert_eq!(store.0.keys().collect::<Vec<_>>(), ["lease-next"]);
    assert_eq!(d.in_flight(), 0);
    assert_eq!(lease_of(d.admit(&slot("bob"), T0 + 6 * SECOND)), 8);
}

#[derive(Clone, Debug)]
enum Op {
    Admit {
        key: usize,
        slot: bool,
        cap: Option<u32>,
        per_minute: Option<u32>,
    },
    Renew(usize),
    Release(usize),
    Wait(u64),
    /// The object evicted and started again from its storage.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>(), prop::option::of(1..3u32), prop::option::of(1..10u32))
            .prop_map(|(key, slot, cap, per_minute)| Op::Admit { key, slot, cap, per_minute }),
        2 => (0..8usize).prop_map(Op::Renew),
        2 => (0..8usize).prop_map(Op::Release),
        2 => (0..40 * SECOND).prop_map(Op::Wait),
        1 => Just(Op::Restart),
    ]
}

proptest! {
    /// Whatever happens and whenever the object is evicted, it decides
    /// exactly as one that never was: every admission, renewal and lease id.
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
        let mut leases: Vec<u64> = Vec::new();
        for op in ops {
            match op {
                Op::Admit { key, slot, cap, per_minute } => {
                    let turn = Turn::from_parts(KEYS[key], slot, cap, per_minute);
                    let answer = kept.admit(&turn, now);
                    prop_assert_eq!(answer, never.admit(&turn, now));
                    if let SharedAdmission::Go { lease: Some(id), .. } = answer {
                        leases.push(id);
                    }
                }
                Op::Renew(i) => {
                    if let Some(&id) = leases.get(i) {
                        prop_assert_eq!(kept.renew(id, now), never.renew(id, now));
                    }
                }
                Op::Release(i) => {
                    if i < leases.len() {
                        let id = leases.swap_remove(i);
                        kept.release(id, now);
                        never.release(id, now);
                    }
                }
                Op::Wait(us) => now += us,
                Op::Restart => kept = store.restart(limits, now),
            }
            store.write(kept.take_changes());
            let _ = never.take_changes();
        }
        // Every answer ended and every bucket refilled: nothing is kept
        // but the last id.
        for id in leases {
            kept.release(id, now);
        }
        kept.release(0, now + 60 * SECOND);
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
                Op::Renew(_) | Op::Release(_) | Op::Restart => {}
            }
            let _ = edge.take_changes();
        }
        prop_assert_eq!(native.in_flight(), edge.in_flight());
    }
}
