//! The generic cell rate algorithm (GCRA), as arithmetic on one stored number per key: the
//! theoretical arrival time (TAT). The same arithmetic runs in memory and, as a Lua script,
//! in Redis; it is written here once so both backends can be checked against it.
//!
//! Why by hand: `governor` implements GCRA over its own in-process state, but warden needs
//! the bare arithmetic to share one state across instances through Redis.

/// A rate: `limit` requests per `window`, with bursts of up to `burst` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per window.
    pub limit: u64,
    /// The window, in microseconds.
    pub window_us: u64,
    /// The largest burst (defaults to `limit`).
    pub burst: u64,
}

impl Quota {
    /// Time between two requests at the sustained rate, in microseconds.
    #[must_use]
    pub fn emission_interval_us(&self) -> u64 {
        (self.window_us / self.limit.max(1)).max(1)
    }

    /// How far ahead of now the TAT may run: the whole burst. With a burst of 0 nothing
    /// conforms (used to count failures: the first one past the allowance is refused).
    #[must_use]
    pub fn tolerance_us(&self) -> u64 {
        self.emission_interval_us().saturating_mul(self.burst)
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the request conforms.
    pub allowed: bool,
    /// Requests left in the current burst after this one.
    pub remaining: u64,
    /// Microseconds until the next request would conform (0 when allowed).
    pub retry_after_us: u64,
    /// Microseconds until the quota is full again.
    pub reset_us: u64,
}

/// Check one request at `now_us` against the stored `tat_us` (absent: a fresh key).
/// Returns the outcome and the TAT to store (unchanged when refused).
#[must_use]
pub fn check(quota: &Quota, tat_us: Option<u64>, now_us: u64) -> (Outcome, Option<u64>) {
    let t = quota.emission_interval_us();
    let tau = quota.tolerance_us();
    let tat = tat_us.unwrap_or(now_us).max(now_us);
    let new_tat = tat.saturating_add(t);
    let ahead = new_tat - now_us;
    if ahead > tau {
        let outcome = Outcome {
            allowed: false,
            remaining: 0,
            retry_after_us: ahead - tau,
            reset_us: tat - now_us,
        };
        return (outcome, None);
    }
    let remaining = (tau - ahead) / t;
    (
        Outcome {
            allowed: true,
            remaining,
            retry_after_us: 0,
            reset_us: ahead,
        },
        Some(new_tat),
    )
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn a_burst_then_the_sustained_rate() {
        let q = Quota {
            limit: 10,
            window_us: 10 * SECOND,
            burst: 3,
        };
        let mut tat = None;
        for expected_remaining in [2, 1, 0] {
            let (o, t) = check(&q, tat, 0);
            assert!(o.allowed);
            assert_eq!(o.remaining, expected_remaining);
            tat = t;
        }
        let (o, t) = check(&q, tat, 0);
        assert!(!o.allowed);
        assert_eq!(t, None, "a refused request changes nothing");
        assert_eq!(o.retry_after_us, SECOND);
        // One emission interval later, one more request conforms.
        let (o, _) = check(&q, tat, SECOND);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
    }

    proptest! {
        #[test]
        fn never_more_than_burst_plus_rate_over_any_run(
            limit in 1u64..50, burst in 1u64..50, gaps in proptest::collection::vec(0u64..200_000, 1..300)
        ) {
            let q = Quota { limit, window_us: SECOND, burst };
            let (mut now, mut tat, mut allowed) = (0u64, None, 0u64);
            for gap in gaps {
                now += gap;
                let (o, t) = check(&q, tat, now);
                if o.allowed { allowed += 1; tat = t; }
            }
            // At most the burst plus what the rate earns over the elapsed time.
            let earned = now / q.emission_interval_us();
            prop_assert!(allowed <= burst + earned, "allowed {} > burst {} + earned {}", allowed, burst, earned);
        }
    }
}
