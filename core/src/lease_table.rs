//! Leases held by id for holders elsewhere — the Worker's isolates, which
//! renew them while their answer streams — taken back when not renewed in
//! time. Sans-IO, like the doorman; the edge's doorman holds one (see
//! [`crate::shared_turns`]).

use std::collections::HashMap;

use crate::auth::KeyName;
use crate::turns::Lease;

/// Leases held by id for holders elsewhere (the Worker's isolates, which
/// renew them while their answer streams): a lease not renewed within its
/// time to live is taken back. Sans-IO, like the doorman.
#[derive(Debug)]
pub struct LeaseTable {
    ttl_us: u64,
    held: HashMap<u64, (Lease, u64)>,
    next_id: u64,
}

impl LeaseTable {
    /// Leases that live `ttl_us` unless renewed.
    pub fn new(ttl_us: u64) -> Self {
        Self {
            ttl_us,
            held: HashMap::new(),
            next_id: 0,
        }
    }

    /// Holds `lease` from `now_us`; the id its holder renews and returns it by.
    pub fn hold(&mut self, lease: Lease, now_us: u64) -> u64 {
        self.hold_for(lease, now_us, self.ttl_us)
    }

    /// Holds `lease` for `ttl_us` from `now_us` unless renewed (a renewal
    /// gives it the table's whole time to live).
    pub fn hold_for(&mut self, lease: Lease, now_us: u64, ttl_us: u64) -> u64 {
        self.next_id += 1;
        self.held
            .insert(self.next_id, (lease, now_us.saturating_add(ttl_us)));
        self.next_id
    }

    /// Extends lease `id` from `now_us`: false when it is not held (it was
    /// returned, or expired and was taken back).
    pub fn renew(&mut self, id: u64, now_us: u64) -> bool {
        match self.held.get_mut(&id) {
            Some((_, expires)) => {
                *expires = now_us.saturating_add(self.ttl_us);
                true
            }
            None => false,
        }
    }

    /// Lease `id` returned by its holder (to give back to the doorman).
    pub fn take(&mut self, id: u64) -> Option<Lease> {
        self.held.remove(&id).map(|(lease, _)| lease)
    }

    /// The leases not renewed in time at `now_us`, with their ids (to give
    /// back).
    pub fn expired(&mut self, now_us: u64) -> Vec<(u64, Lease)> {
        let ids: Vec<u64> = self
            .held
            .iter()
            .filter(|(_, (_, expires))| *expires <= now_us)
            .map(|(&id, _)| id)
            .collect();
        ids.into_iter()
            .filter_map(|id| Some((id, self.take(id)?)))
            .collect()
    }

    /// The earliest expiry of a lease held.
    pub(crate) fn next_expiry(&self) -> Option<u64> {
        self.held.values().map(|&(_, expires)| expires).min()
    }

    /// Leases held.
    pub fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Lease `id`'s key and expiry.
    pub(crate) fn get(&self, id: u64) -> Option<(&KeyName, u64)> {
        self.held
            .get(&id)
            .map(|(lease, expires)| (lease.key(), *expires))
    }

    /// Puts back lease `id` as it was kept.
    pub(crate) fn restore(&mut self, id: u64, lease: Lease, expires_us: u64) {
        self.held.insert(id, (lease, expires_us));
        self.resume_after(id);
    }

    /// The next lease handed out gets an id above `id`.
    pub(crate) fn resume_after(&mut self, id: u64) {
        self.next_id = self.next_id.max(id);
    }
}
