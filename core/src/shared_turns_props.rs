//! The doorman properties: an edge doorman evicted and restarted at any
//! moment decides as one never evicted, and as the native doorman.

use super::*;

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
    /// A waiting request's client leaves.
    Cancel(usize),
    /// A waiting request's client leaves unseen (at the edge: its call is
    /// answered to nobody, so its grant is never claimed).
    Leave(usize),
    /// The object evicted and started again from its storage.
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, any::<bool>(), prop::option::of(1..4u32), prop::option::of(1..10u32))
            .prop_map(|(key, slot, cap, per_minute)| Op::Admit { key, slot, cap, per_minute }),
        2 => (0..8usize).prop_map(Op::Release),
        2 => (0..40 * SECOND).prop_map(Op::Wait),
        1 => (0..8usize).prop_map(Op::Die),
        1 => (0..8usize).prop_map(Op::Cancel),
        1 => (0..8usize).prop_map(Op::Leave),
        1 => Just(Op::Restart),
    ]
}

/// Two doormen run side by side: the one under test (`a`) and the one it
/// must decide as (`b`), through this interface.
trait Side {
    /// Go: the lease (if a slot); Wait: the ticket; or the refusal.
    fn admit(
        &mut self,
        turn: &Turn,
        now: u64,
    ) -> Result<(Option<u64>, Option<RateState>, bool), TurnRefusal>;
    fn release(&mut self, lease: u64, now: u64);
    fn renew(&mut self, lease: u64, now: u64) -> bool;
    fn expire(&mut self, now: u64) -> Vec<u64>;
    fn cancel(&mut self, ticket: u64) -> bool;
    /// Slots granted to waiting requests since the last call.
    fn grants(&mut self) -> Vec<(u64, u64)>;
    /// The holder of `lease` died: it renews no more.
    fn die(&mut self, lease: u64, now: u64);
    /// Drops what the side has to write.
    fn settle(&mut self) {}
    /// Forgets every key's last turn (as a restarted object knows none).
    fn forget_turns(&mut self);
}

impl Side for SharedDoorman {
    fn forget_turns(&mut self) {
        self.doorman.forget_turns();
    }

    fn admit(
        &mut self,
        turn: &Turn,
        now: u64,
    ) -> Result<(Option<u64>, Option<RateState>, bool), TurnRefusal> {
        match SharedDoorman::admit(self, turn, now) {
            SharedAdmission::Go { lease, rate } => Ok((lease, rate, false)),
            SharedAdmission::Wait { ticket, rate } => Ok((Some(ticket), rate, true)),
            SharedAdmission::Refused(r) => Err(r),
        }
    }
    fn release(&mut self, lease: u64, now: u64) {
        SharedDoorman::release(self, lease, now);
    }
    fn renew(&mut self, lease: u64, now: u64) -> bool {
        SharedDoorman::renew(self, lease, now)
    }
    fn expire(&mut self, now: u64) -> Vec<u64> {
        SharedDoorman::expire(self, now)
    }
    fn cancel(&mut self, ticket: u64) -> bool {
        SharedDoorman::cancel(self, ticket)
    }
    fn grants(&mut self) -> Vec<(u64, u64)> {
        self.take_grants()
    }
    fn die(&mut self, _lease: u64, _now: u64) {}
    fn settle(&mut self) {
        let _ = self.take_changes();
    }
}

/// The native doorman, its leases numbered here (it needs no renewal).
struct Native {
    doorman: Doorman,
    leases: std::collections::HashMap<u64, Lease>,
    next: u64,
    granted: Vec<(u64, u64)>,
}

impl Native {
    fn number(&mut self, lease: Lease) -> u64 {
        self.next += 1;
        self.leases.insert(self.next, lease);
        self.next
    }
    fn take(&mut self, grants: Vec<Grant>) {
        for grant in grants {
            let id = self.number(grant.lease);
            self.granted.push((grant.ticket.id(), id));
        }
    }
}

impl Side for Native {
    fn forget_turns(&mut self) {
        self.doorman.forget_turns();
    }

    fn admit(
        &mut self,
        turn: &Turn,
        now: u64,
    ) -> Result<(Option<u64>, Option<RateState>, bool), TurnRefusal> {
        match self.doorman.admit(turn, now) {
            Admission::Go { lease, rate } => Ok((lease.map(|l| self.number(l)), rate, false)),
            Admission::Wait { ticket, rate, .. } => Ok((Some(ticket.id()), rate, true)),
            Admission::Refuse(r) => Err(r),
        }
    }
    fn release(&mut self, lease: u64, _now: u64) {
        if let Some(lease) = self.leases.remove(&lease) {
            let grants = self.doorman.release(lease);
            self.take(grants);
        }
    }
    fn renew(&mut self, lease: u64, _now: u64) -> bool {
        self.leases.contains_key(&lease)
    }
    fn expire(&mut self, now: u64) -> Vec<u64> {
        self.doorman
            .expire(now)
            .into_iter()
            .map(Ticket::id)
            .collect()
    }
    fn cancel(&mut self, ticket: u64) -> bool {
        self.doorman.cancel(Ticket::from_id(ticket))
    }
    fn grants(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.granted)
    }
    /// Natively a request's end always gives its slot back.
    fn die(&mut self, lease: u64, now: u64) {
        Side::release(self, lease, now);
    }
}

/// What both sides hold: leases and waiting tickets, as (a's, b's).
#[derive(Default)]
struct Pairs {
    leases: Vec<(u64, u64)>,
    waiting: Vec<(u64, u64)>,
    /// Waiting tickets whose client left unseen.
    left: Vec<(u64, u64)>,
    /// Slots granted to those, never claimed: (a's, b's, when granted).
    unclaimed: Vec<(u64, u64, u64)>,
    /// The key (its index) of each of side a's tickets and leases.
    keys: std::collections::HashMap<u64, usize>,
}

impl Pairs {
    /// Both sides' grants must name the same waiting requests, in order;
    /// each holder claims its slot as its grant arrives (at `now`), as an
    /// isolate does.
    fn granted(
        &mut self,
        a: &mut impl Side,
        b: &mut impl Side,
        issued: &mut HashSet<u64>,
        now: u64,
    ) -> Result<(), TestCaseError> {
        let (ga, gb) = (a.grants(), b.grants());
        prop_assert_eq!(ga.len(), gb.len());
        for ((ta, la), (tb, lb)) in ga.into_iter().zip(gb) {
            prop_assert!(issued.insert(la), "lease id {} reused", la);
            let key = self.keys[&ta];
            self.keys.insert(la, key);
            if let Some(at) = self.left.iter().position(|&(x, _)| x == ta) {
                let (_, want) = self.left.remove(at);
                prop_assert_eq!(want, tb, "granted to another request");
                self.unclaimed.push((la, lb, now));
                continue;
            }
            let at = self.waiting.iter().position(|&(x, _)| x == ta);
            prop_assert!(at.is_some(), "a grant for no waiting request");
            let (_, want) = self.waiting.remove(at.unwrap());
            prop_assert_eq!(want, tb, "granted to another request");
            prop_assert!(a.renew(la, now), "a granted slot lost before its claim");
            prop_assert!(b.renew(lb, now));
            self.leases.push((la, lb));
        }
        Ok(())
    }

    fn expired(&mut self, ea: Vec<u64>, eb: Vec<u64>) -> Result<(), TestCaseError> {
        let mut mapped: Vec<u64> = Vec::new();
        for t in &ea {
            if let Some(at) = self.left.iter().position(|&(x, _)| x == *t) {
                mapped.push(self.left.remove(at).1);
                continue;
            }
            let at = self.waiting.iter().position(|&(x, _)| x == *t);
            prop_assert!(at.is_some(), "an expiry for no waiting request");
            mapped.push(self.waiting.remove(at.unwrap()).1);
        }
        mapped.sort_unstable();
        let mut eb = eb;
        eb.sort_unstable();
        prop_assert_eq!(mapped, eb);
        Ok(())
    }
}

/// Time passes to `until` in steps of at most 5 s: holders renew, both
/// sides expire waiting requests and hand out slots alike.
fn pass_time(
    now: &mut u64,
    until: u64,
    pairs: &mut Pairs,
    a: &mut impl Side,
    b: &mut impl Side,
    issued: &mut HashSet<u64>,
) -> Result<(), TestCaseError> {
    while *now < until {
        *now = until.min(*now + 5 * SECOND);
        for &(la, lb) in &pairs.leases {
            prop_assert!(a.renew(la, *now), "a live lease lost");
            prop_assert!(b.renew(lb, *now));
        }
        // A grant nobody claimed is taken back once its window is over.
        let mut lapsed = Vec::new();
        pairs.unclaimed.retain(|&(la, lb, at)| {
            let over = *now >= at + CLAIM_TTL_US;
            if over {
                lapsed.push((la, lb));
            }
            !over
        });
        for (la, lb) in lapsed {
            prop_assert!(!a.renew(la, *now), "an unclaimed grant outlived its window");
            prop_assert!(!b.renew(lb, *now));
        }
        let (ea, eb) = (a.expire(*now), b.expire(*now));
        pairs.expired(ea, eb)?;
        pairs.granted(a, b, issued, *now)?;
    }
    Ok(())
}

/// Runs `ops` on both sides and checks they decide alike: side `a` keeps
/// its records in `store` and is started again from them at each
/// `Restart` (side b's waiting requests then fail too, as the calls waiting
/// on the old object do). `Leave` only when both sides are edge doormen
/// (`leaves`): natively a client that leaves is seen, and its turn goes on
/// at once.
fn run_both(
    ops: Vec<Op>,
    limits: TurnLimits,
    leaves: bool,
    store: &mut Store,
    a: &mut SharedDoorman,
    b: &mut impl Side,
    now: &mut u64,
) -> Result<Pairs, TestCaseError> {
    const KEYS: [&str; 3] = ["alice", "bob", "carol"];
    let mut pairs = Pairs::default();
    let mut issued = HashSet::new();
    for op in ops {
        match op {
            Op::Admit {
                key,
                slot,
                cap,
                per_minute,
            } => {
                let turn = Turn::from_parts(KEYS[key], slot, cap, per_minute);
                match (Side::admit(a, &turn, *now), b.admit(&turn, *now)) {
                    (Ok((ia, ra, wa)), Ok((ib, rb, wb))) => {
                        prop_assert_eq!(ra, rb);
                        prop_assert_eq!(wa, wb);
                        prop_assert_eq!(ia.is_some(), ib.is_some());
                        if let (Some(ia), Some(ib)) = (ia, ib) {
                            pairs.keys.insert(ia, key);
                            if wa {
                                pairs.waiting.push((ia, ib));
                            } else {
                                prop_assert!(issued.insert(ia), "lease id {} reused", ia);
                                pairs.leases.push((ia, ib));
                            }
                        }
                    }
                    (x, y) => prop_assert_eq!(x, y),
                }
            }
            Op::Release(i) if i < pairs.leases.len() => {
                let (la, lb) = pairs.leases.swap_remove(i);
                Side::release(a, la, *now);
                b.release(lb, *now);
            }
            Op::Wait(us) => {
                let until = *now + us;
                pass_time(now, until, &mut pairs, a, b, &mut issued)?;
            }
            // With nobody waiting, so that a slot freed at any moment of the
            // lease's last life goes to nobody (see
            // `a_dead_holders_slot_goes_to_a_waiting_request`).
            Op::Die(i)
                if i < pairs.leases.len() && pairs.waiting.is_empty() && pairs.left.is_empty() =>
            {
                let (la, lb) = pairs.leases.swap_remove(i);
                b.die(lb, *now);
                let until = *now + LEASE_TTL_US;
                pass_time(now, until, &mut pairs, a, b, &mut issued)?;
                prop_assert!(
                    !Side::renew(a, la, *now),
                    "a dead holder's lease outlived its life"
                );
                prop_assert!(!b.renew(lb, *now));
            }
            Op::Cancel(i) if i < pairs.waiting.len() => {
                let (ta, tb) = pairs.waiting.swap_remove(i);
                prop_assert_eq!(Side::cancel(a, ta), b.cancel(tb));
            }
            Op::Leave(i) if leaves && i < pairs.waiting.len() => {
                let left = pairs.waiting.swap_remove(i);
                pairs.left.push(left);
            }
            // A restarted object remembers no key's last turn (it keeps
            // what limits need: buckets and leases): the one never evicted
            // forgets them too, and from there both must decide alike (a
            // deployment may reorder the next grants, nothing else).
            Op::Restart => {
                for (_, tb) in pairs.waiting.drain(..).chain(pairs.left.drain(..)) {
                    prop_assert!(b.cancel(tb));
                }
                b.forget_turns();
                *a = store.restart(limits, *now);
            }
            Op::Release(_) | Op::Die(_) | Op::Cancel(_) | Op::Leave(_) => {}
        }
        pairs.granted(a, b, &mut issued, *now)?;
        store.write(a.take_changes());
        b.settle();
    }
    Ok(pairs)
}

fn limits_strategy() -> impl Strategy<Value = TurnLimits> {
    (prop::option::of(1..4u32), 0..3u32).prop_map(|(max, queue)| queue_limits(max, queue))
}

proptest! {
    /// Whatever happens and whenever the object is evicted, it decides as
    /// one that never was — every admission, wait, grant, time-out and
    /// refusal, every rate header, every live holder's renewal — and never
    /// reuses a lease id; a holder that died is taken back within a
    /// lease's life; at the end, nothing is kept but the block of ids.
    #[test]
    fn an_evicted_object_decides_as_one_that_never_was(
        limits in limits_strategy(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut store = Store::default();
        let mut kept = store.restart(limits, T0);
        let mut never = SharedDoorman::restore(limits, [], T0);
        let mut now = T0;
        let pairs = run_both(ops, limits, true, &mut store, &mut kept, &mut never, &mut now)?;
        for (ta, _) in pairs.waiting.into_iter().chain(pairs.left) {
            kept.cancel(ta);
        }
        for (la, _) in pairs.leases {
            kept.release(la, now);
        }
        let _ = kept.admit(&Turn::from_parts("zed", false, None, None), now + 60 * SECOND);
        store.write(kept.take_changes());
        prop_assert!(store.0.keys().all(|name| name == "lease-next"), "{:?}", store.0);
    }

    /// The edge's doorman decides as the native one: the same admissions,
    /// waits, grants (the same fair order), time-outs and refusals, the same
    /// rate headers, holders renewing as isolates do — evicted or not.
    #[test]
    fn the_edge_decides_as_natively(
        limits in limits_strategy(),
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let mut store = Store::default();
        let mut edge = store.restart(limits, T0);
        let mut native = Native {
            doorman: Doorman::new(limits),
            leases: std::collections::HashMap::new(),
            next: 0,
            granted: Vec::new(),
        };
        let mut now = T0;
        run_both(ops, limits, false, &mut store, &mut edge, &mut native, &mut now)?;
        prop_assert_eq!(edge.in_flight(), native.doorman.in_flight());
    }
}
