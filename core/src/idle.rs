//! Which kept-alive origin connection a request reuses, and when an unused
//! one is let go: the pool's bookkeeping, without the connections' I/O.
//!
//! The adapter keeps a pool per server thread; what sits in it (a hyper
//! connection, here just a `T`) is opaque. Time is passed in as
//! microseconds from any fixed start, so expiry is tested with virtual time.

/// Kept-alive connections, per origin, newest last.
#[derive(Debug)]
pub struct IdlePool<K, T> {
    per_origin: usize,
    max_idle_us: u64,
    // Few origins (at most 16): a list beats a map.
    origins: Vec<(K, Vec<(u64, T)>)>,
    // Exchanges begun or ended since the last sweep (a connection asked
    // for, given back, or dropped with its exchange): the end of a long
    // stream is work too, as it frees memory.
    activity: u64,
    // Work (requests, closed connections) since memory was last released.
    unreleased: bool,
}

/// What a sweep let go of, and whether now is the time to give freed
/// memory back to the system.
#[derive(Debug)]
pub struct Swept<T> {
    /// The connections idle too long (the caller closes them).
    pub closed: Vec<T>,
    /// The load has passed: no request since the last sweep, after some
    /// work. Once per quiet spell, so an idle proxy does nothing.
    pub release_memory: bool,
}

impl<K: PartialEq, T> IdlePool<K, T> {
    /// Keeps at most `per_origin` connections for each origin, each for at
    /// most `max_idle_us` after it was last given back.
    #[must_use]
    pub fn new(per_origin: usize, max_idle_us: u64) -> Self {
        Self {
            per_origin,
            max_idle_us,
            origins: Vec::new(),
            activity: 0,
            unreleased: false,
        }
    }

    /// The most recently used connection to `key` that has not been idle
    /// too long (the warmest; the others age out first). Ones idle too long
    /// are dropped on the way.
    pub fn take(&mut self, key: &K, now_us: u64) -> Option<T> {
        self.activity += 1;
        let list = &mut self.origins.iter_mut().find(|(k, _)| k == key)?.1;
        let (since, conn) = list.pop()?;
        if now_us.saturating_sub(since) <= self.max_idle_us {
            return Some(conn);
        }
        // The newest is too old: so are all the others.
        list.clear();
        None
    }

    /// Gives a connection back. Returns the one let go to stay within the
    /// limit (the oldest), if any.
    pub fn put(&mut self, key: K, conn: T, now_us: u64) -> Option<T> {
        self.activity += 1;
        let at = match self.origins.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.origins.push((key, Vec::new()));
                self.origins.len() - 1
            }
        };
        let list = &mut self.origins[at].1;
        list.push((now_us, conn));
        (list.len() > self.per_origin).then(|| list.remove(0).1)
    }

    /// An exchange ended without giving its connection back (closed by
    /// either side, or not reusable): for the sweeps, work like any other.
    pub fn ended(&mut self) {
        self.activity += 1;
    }

    /// Run every few seconds: lets go of the connections idle too long,
    /// and says whether the load has passed (see [`Swept`]).
    pub fn sweep(&mut self, now_us: u64) -> Swept<T> {
        let closed = self.expire(now_us);
        let busy = self.activity > 0;
        self.activity = 0;
        if busy || !closed.is_empty() {
            self.unreleased = true;
        }
        let release_memory = !busy && self.unreleased;
        if release_memory {
            self.unreleased = false;
        }
        Swept {
            closed,
            release_memory,
        }
    }

    /// Lets go of every connection idle for longer than allowed; returns
    /// them (the caller closes them outside any lock).
    pub fn expire(&mut self, now_us: u64) -> Vec<T> {
        let mut gone = Vec::new();
        for (_, list) in &mut self.origins {
            // Given back in time order: the expired ones are at the front.
            let old =
                list.partition_point(|(since, _)| now_us.saturating_sub(*since) > self.max_idle_us);
            gone.extend(list.drain(..old).map(|(_, conn)| conn));
        }
        gone
    }

    /// How many connections are kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.origins.iter().map(|(_, list)| list.len()).sum()
    }

    /// Whether none is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::IdlePool;

    const S: u64 = 1_000_000;

    #[test]
    fn the_warmest_goes_first_and_only_to_its_origin() {
        let mut pool = IdlePool::new(8, 30 * S);
        assert_eq!(pool.put("a", 1, 0), None);
        assert_eq!(pool.put("a", 2, S), None);
        assert_eq!(pool.put("b", 3, 2 * S), None);
        assert_eq!(pool.take(&"a", 3 * S), Some(2));
        assert_eq!(pool.take(&"a", 3 * S), Some(1));
        assert_eq!(pool.take(&"a", 3 * S), None);
        assert_eq!(pool.take(&"c", 3 * S), None);
        assert_eq!(pool.take(&"b", 3 * S), Some(3));
        assert!(pool.is_empty());
    }

    #[test]
    fn past_the_limit_the_oldest_is_let_go() {
        let mut pool = IdlePool::new(2, 30 * S);
        pool.put("a", 1, 0);
        pool.put("a", 2, 1);
        assert_eq!(pool.put("a", 3, 2), Some(1));
        assert_eq!(pool.put("b", 4, 3), None, "the limit is per origin");
        assert_eq!(pool.len(), 3);
    }

    #[test]
    fn idle_too_long_is_never_handed_out() {
        let mut pool = IdlePool::new(8, 30 * S);
        pool.put("a", 1, 0);
        pool.put("a", 2, 10 * S);
        // Exactly the limit still counts as fresh.
        assert_eq!(pool.take(&"a", 40 * S), Some(2));
        pool.put("a", 2, 10 * S);
        assert_eq!(pool.take(&"a", 40 * S + 1), None);
        assert!(pool.is_empty(), "an expired newest means all are expired");
    }

    #[test]
    fn expire_lets_go_of_the_old_ones_only() {
        let mut pool = IdlePool::new(8, 30 * S);
        pool.put("a", 1, 0);
        pool.put("b", 2, 5 * S);
        pool.put("a", 3, 20 * S);
        assert_eq!(pool.expire(30 * S), Vec::<i32>::new());
        let mut gone = pool.expire(36 * S);
        gone.sort_unstable();
        assert_eq!(gone, vec![1, 2]);
        assert_eq!(pool.take(&"a", 36 * S), Some(3));
        // A clock that went backwards (virtual or not) expires nothing.
        pool.put("a", 4, 50 * S);
        assert!(pool.expire(40 * S).is_empty());
    }

    #[test]
    fn memory_is_released_once_when_the_load_has_passed() {
        let mut pool = IdlePool::new(8, 30 * S);
        // Never used: nothing to give back, ever.
        assert!(!pool.sweep(5 * S).release_memory);
        assert!(!pool.sweep(10 * S).release_memory);
        // Busy during this period: not yet.
        assert_eq!(pool.take(&"a", 11 * S), None);
        pool.put("a", 1, 12 * S);
        assert!(!pool.sweep(15 * S).release_memory);
        // The first quiet period after it: once.
        assert!(pool.sweep(20 * S).release_memory);
        assert!(!pool.sweep(25 * S).release_memory);
        assert!(!pool.sweep(40 * S).release_memory);
        // The kept connection ages out on a quiet tick: its buffers are
        // freed now, so once more.
        let swept = pool.sweep(45 * S);
        assert_eq!(swept.closed, vec![1]);
        assert!(swept.release_memory);
        assert!(!pool.sweep(50 * S).release_memory);
    }

    #[test]
    fn the_end_of_long_exchanges_counts_as_work() {
        // Streams longer than two sweeps: memory is given back while they
        // run, and again once they have ended (given back to the pool, or
        // dropped with their connection).
        let mut pool = IdlePool::new(1, 30 * S);
        assert_eq!(pool.take(&"a", S), None);
        assert_eq!(pool.take(&"a", S), None);
        assert!(!pool.sweep(5 * S).release_memory);
        assert!(pool.sweep(10 * S).release_memory);
        assert!(!pool.sweep(15 * S).release_memory);
        assert_eq!(pool.put("a", 1, 17 * S), None);
        pool.ended();
        assert!(!pool.sweep(20 * S).release_memory, "still busy");
        assert!(pool.sweep(25 * S).release_memory);
        // One that only ended (its connection dropped) counts the same.
        pool.ended();
        assert!(!pool.sweep(30 * S).release_memory);
        assert!(pool.sweep(35 * S).release_memory);
    }
}
