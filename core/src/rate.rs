//! A key's request rate: a bucket of `requests_per_minute` requests that
//! refills continuously, kept as GCRA's one number (the theoretical arrival
//! time). Sans-IO: the caller passes the time, in microseconds of a clock
//! of its own that never goes back.

/// Nanoseconds in a minute: the bucket counts in nanoseconds, so a rate of
/// up to 10⁹ requests a minute still has a whole interval.
const MINUTE_NS: u64 = 60_000_000_000;

/// A rate: `per_minute` requests a minute, all of them at once if saved up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    per_minute: u32,
    /// Time between two requests at the steady rate, in nanoseconds.
    interval_ns: u64,
}

/// One key's bucket: when it would be full again, as GCRA's theoretical
/// arrival time (a full bucket has it at or before now).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Bucket {
    /// In nanoseconds of the caller's clock.
    tat_ns: u64,
}

impl Bucket {
    /// A bucket as it was kept: its theoretical arrival time, in
    /// nanoseconds of the caller's clock.
    pub(crate) fn from_tat_ns(tat_ns: u64) -> Self {
        Self { tat_ns }
    }

    /// Its theoretical arrival time, to keep.
    pub(crate) fn tat_ns(self) -> u64 {
        self.tat_ns
    }
}

/// Where a key stands after a request was let through, for the
/// `x-ratelimit-*-requests` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateState {
    /// The limit: requests a minute.
    pub limit: u32,
    /// Requests that could go now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset_us: u64,
}

/// A request over the rate: when the next one may go, and the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRefusal {
    /// Until one more request may go.
    pub retry_in_us: u64,
    /// The limit, requests a minute.
    pub limit: u32,
    /// Until the bucket is full again.
    pub reset_us: u64,
}

impl Rate {
    /// `per_minute` requests a minute (at least one).
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        // Above 10⁹ a minute the interval would round to nothing.
        let per_minute = per_minute.clamp(1, 1_000_000_000);
        Self {
            per_minute,
            interval_ns: MINUTE_NS / u64::from(per_minute),
        }
    }

    /// The bucket holds `per_minute` requests.
    fn capacity_ns(self) -> u64 {
        self.interval_ns * u64::from(self.per_minute)
    }

    /// Takes one request from `bucket` at `now_us`, or says when one may go.
    pub(crate) fn take(self, bucket: &mut Bucket, now_us: u64) -> Result<RateState, RateRefusal> {
        let now = now_us.saturating_mul(1_000);
        let tat = bucket.tat_ns.max(now) + self.interval_ns;
        let limit = now.saturating_add(self.capacity_ns());
        if tat > limit {
            return Err(RateRefusal {
                retry_in_us: (tat - limit).div_ceil(1_000),
                limit: self.per_minute,
                reset_us: bucket.tat_ns.saturating_sub(now).div_ceil(1_000),
            });
        }
        bucket.tat_ns = tat;
        Ok(RateState {
            limit: self.per_minute,
            remaining: ((limit - tat) / self.interval_ns) as u32,
            reset_us: (tat - now).div_ceil(1_000),
        })
    }

    /// Whether `bucket` is full at `now_us` (nothing to remember).
    pub(crate) fn is_full(bucket: Bucket, now_us: u64) -> bool {
        bucket.tat_ns <= now_us.saturating_mul(1_000)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000;
    const MINUTE_US: u64 = 60 * SECOND;

    #[test]
    fn a_full_bucket_lets_a_minutes_worth_through_then_refills() {
        let rate = Rate::per_minute(6);
        let mut bucket = Bucket::default();
        let now = 100 * SECOND;
        for left in (0..6).rev() {
            let state = rate.take(&mut bucket, now).unwrap();
            assert_eq!(state.remaining, left);
            assert_eq!(state.limit, 6);
        }
        // Empty: the next one may go in one interval (10 s).
        let refused = rate.take(&mut bucket, now).unwrap_err();
        assert_eq!(refused.retry_in_us, 10 * SECOND);
        assert_eq!(refused.reset_us, 60 * SECOND);
        assert!(rate.take(&mut bucket, now + 10 * SECOND - 1).is_err());
        let state = rate.take(&mut bucket, now + 10 * SECOND).unwrap();
        assert_eq!(state.remaining, 0);
        assert!(!Rate::is_full(bucket, now + 10 * SECOND));
        assert!(Rate::is_full(bucket, now + 70 * SECOND));
    }

    proptest! {
        /// Over any window of a minute, at most `per_minute` plus what the
        /// bucket held at its start go through: never more than twice the
        /// rate, and never more than the rate once steady.
        #[test]
        fn no_window_lets_more_through_than_the_bucket_allows(
            per_minute in prop_oneof![1u32..120, 120u32..=1_000_000_000],
            gaps in prop::collection::vec(0u64..5 * SECOND, 1..300),
        ) {
            let rate = Rate::per_minute(per_minute);
            let mut bucket = Bucket::default();
            let mut now = 0;
            let mut passed = Vec::new();
            for gap in gaps {
                now += gap;
                if rate.take(&mut bucket, now).is_ok() {
                    passed.push(now);
                }
            }
            for (i, &start) in passed.iter().enumerate() {
                let in_window = passed[i..].iter().take_while(|&&t| t < start + MINUTE_US).count();
                prop_assert!(in_window as u32 <= 2 * per_minute, "{in_window} in a minute");
            }
            // Steady state: once the first minute is over, any minute's
            // requests beyond the first `per_minute` are spaced by at least
            // one interval on average.
            let interval = MINUTE_US / u64::from(per_minute);
            for w in passed.windows(per_minute as usize + 1) {
                prop_assert!(w[per_minute as usize] - w[0] >= interval, "{w:?}");
            }
        }
    }
}
