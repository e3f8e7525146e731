//! A labelled metric family's series, found without the family's shared
//! lock. prometheus-client keeps a family's series in a map behind one
//! read-write lock, hashed with SipHash: every observation took that lock
//! (its counter bouncing between the cores' caches) and hashed its labels
//! with SipHash. [`Handles`] keeps, per server thread, the series it has
//! used (a metric is a handle to shared atomics: the family and the copy
//! here count into the same series), so an observation takes an
//! uncontended lock of its own thread's shard and a fast hash. A family
//! never drops a series, so a kept handle never goes stale; each shard is
//! bounded (it starts afresh past [`MAX_PER_SHARD`]).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use ollama_proxy_core::NameHasher;
use prometheus_client::metrics::family::{Family, MetricConstructor};

/// Shards: one per server thread on machines of up to this many cores
/// (threads past them share).
const SHARDS: usize = 16;
/// Label sets kept per shard. Label values are bounded (key names from the
/// configuration, at most 66 model values), but their products can pass
/// this with hundreds of keys; the shard then starts afresh, which costs a
/// family lookup per series again, never a count.
const MAX_PER_SHARD: usize = 4096;

/// Each shard on a cache line of its own.
#[repr(align(128))]
struct Shard<L, M>(Mutex<HashMap<L, M, BuildHasherDefault<NameHasher>>>);

/// A family and the series each thread has used (see the module docs).
pub(crate) struct Handles<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    shards: Box<[Shard<L, M>]>,
}

impl<L, M, C> Handles<L, M, C>
where
    L: Clone + Hash + Eq,
    M: Clone,
    C: MetricConstructor<M>,
{
    /// Handles on `family`'s series (register the family itself).
    pub(crate) fn new(family: Family<L, M, C>) -> Self {
        Self {
            family,
            shards: (0..SHARDS)
                .map(|_| Shard(Mutex::new(HashMap::default())))
                .collect(),
        }
    }

    /// Calls `f` with the series for `labels`, created if new. `f` runs
    /// under this thread's shard lock: it must not use the same `Handles`.
    pub(crate) fn with<T>(&self, labels: &L, f: impl FnOnce(&M) -> T) -> T {
        let mut shard = self.shards[shard()]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(metric) = shard.get(labels) {
            return f(metric);
        }
        let metric = self.family.get_or_create_owned(labels);
        if shard.len() >= MAX_PER_SHARD {
            shard.clear();
        }
        f(shard.entry(labels.clone()).or_insert(metric))
    }
}

/// This thread's shard, given out in turn as threads first record.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    /// What is counted through the handles is the family's series, from
    /// any thread, and a shard past its bound starts afresh without losing
    /// a count.
    #[test]
    fn counts_land_in_the_familys_series() {
        let family = Family::<[(&'static str, String); 1], Counter>::default();
        let handles = std::sync::Arc::new(Handles::new(family.clone()));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let handles = std::sync::Arc::clone(&handles);
                std::thread::spawn(move || {
                    for i in 0..(MAX_PER_SHARD + 10) {
                        handles.with(&[("n", (i % 3).to_string())], |c| c.inc());
                        handles.with(&[("unique", i.to_string())], |c| c.inc());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let total = (MAX_PER_SHARD + 10) as u64 * 4;
        let counted: u64 = (0..3)
            .map(|n| family.get_or_create(&[("n", n.to_string())]).get())
            .sum();
        assert_eq!(counted, total);
        assert_eq!(
            family.get_or_create(&[("unique", "7".to_string())]).get(),
            4
        );
    }
}
