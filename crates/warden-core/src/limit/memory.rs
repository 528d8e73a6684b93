//! State held in this process: rate-limit counters, bans and revocations in bounded caches
//! (the least recently used keys go first), so a million distinct clients cannot grow memory
//! without limit. An evicted counter starts afresh and an evicted ban ends early, which can
//! only let through a request a larger store would have refused.
//!
//! This is data, not I/O: the gateway's memory backend and the tower layer both use it.

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::ops::compute::Op;
use moka::sync::Cache;

use super::gcra::{self, Quota};
use super::{
    BanPolicy, StateAnswer, StateCheck, ban_key, failure_key, revoked_subject_key,
    revoked_token_key,
};

/// How many keys each cache holds unless told otherwise.
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;

/// Counters, bans and revocations in this process; share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryState {
    /// Theoretical arrival times of limit and failure counters (µs since the epoch).
    counters: Cache<String, u64>,
    /// Ban ends (µs since the epoch).
    bans: Cache<String, u64>,
    /// Revoked token ids and subjects' cut-off times (s), with the end of their memory (s).
    revoked: Cache<String, (u64, u64)>,
}

impl Default for MemoryState {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_KEYS)
    }
}

impl MemoryState {
    /// A state holding at most `max_keys` entries in each of its caches.
    #[must_use]
    pub fn new(max_keys: u64) -> Self {
        let max_keys = max_keys.max(1);
        Self {
            counters: Cache::builder()
                .max_capacity(max_keys)
                .time_to_idle(Duration::from_secs(24 * 3600))
                .build(),
            bans: Cache::builder().max_capacity(max_keys).build(),
            revoked: Cache::builder().max_capacity(max_keys).build(),
        }
    }

    /// How many counters are held now (after pending evictions ran).
    #[must_use]
    pub fn counters(&self) -> u64 {
        self.counters.run_pending_tasks();
        self.counters.entry_count()
    }

    /// Answer the engine's checks, in order, at time `now`.
    #[must_use]
    pub fn answer(&self, checks: &[StateCheck], now: SystemTime) -> Vec<StateAnswer> {
        let now_us = micros(now);
        let now_s = now_us / 1_000_000;
        checks
            .iter()
            .map(|check| match check {
                StateCheck::Ban { key } => StateAnswer::Ban(
                    self.bans
                        .get(key)
                        .filter(|end| *end > now_us)
                        .map(|end| end - now_us),
                ),
                StateCheck::Limit { key, quota, .. } => {
                    StateAnswer::Limit(self.count(key, quota, now_us))
                }
                StateCheck::Revoked {
                    token_id,
                    subject,
                    issued_at,
                } => {
                    let live = |key: &str| {
                        self.revoked
                            .get(key)
                            .filter(|(_, until)| *until > now_s)
                            .map(|(v, _)| v)
                    };
                    let by_id = token_id
                        .as_deref()
                        .is_some_and(|jti| live(&revoked_token_key(jti)).is_some());
                    // A token with no `iat` cannot prove it was issued after the cut-off.
                    let by_subject = live(&revoked_subject_key(subject))
                        .is_some_and(|before| issued_at.is_none_or(|iat| iat < before));
                    StateAnswer::Revoked(by_id || by_subject)
                }
            })
            .collect()
    }

    /// One GCRA check, atomic for its key.
    fn count(&self, key: &str, quota: &Quota, now_us: u64) -> gcra::Outcome {
        let mut result = None;
        self.counters
            .entry(key.to_owned())
            .and_compute_with(|entry| {
                let (outcome, new_tat) = gcra::check(quota, entry.map(|e| e.into_value()), now_us);
                result = Some(outcome);
                match new_tat {
                    Some(tat) => Op::Put(tat),
                    None => Op::Nop,
                }
            });
        // The closure always runs; refusing is the safe answer should it not.
        result.unwrap_or(gcra::Outcome {
            allowed: false,
            remaining: 0,
            retry_after_us: 1_000_000,
            reset_us: 0,
        })
    }

    /// Count a refusal (401 or 403) from `client` towards a ban; returns whether the client
    /// is now banned.
    pub fn record_failure(&self, client: IpAddr, policy: &BanPolicy, now: SystemTime) -> bool {
        let now_us = micros(now);
        let outcome = self.count(&failure_key(client), &policy.quota(), now_us);
        if outcome.allowed {
            return false;
        }
        self.bans
            .insert(ban_key(client), now_us.saturating_add(policy.duration_us));
        self.counters.invalidate(&failure_key(client));
        true
    }

    /// Refuse the token with this id (`jti`) for the next `ttl` (at least the token's
    /// remaining lifetime).
    pub fn revoke_token(&self, jti: &str, ttl: Duration) {
        let now_s = micros(SystemTime::now()) / 1_000_000;
        self.revoked.insert(
            revoked_token_key(jti),
            (1, now_s.saturating_add(ttl.as_secs())),
        );
    }

    /// Refuse every token of `subject` issued before `issued_before` (and every token of it
    /// without an `iat`) for the next `ttl` (at least the longest token lifetime).
    pub fn revoke_subject(&self, subject: &str, issued_before: SystemTime, ttl: Duration) {
        let now_s = micros(SystemTime::now()) / 1_000_000;
        let before = micros(issued_before) / 1_000_000;
        self.revoked.insert(
            revoked_subject_key(subject),
            (before, now_s.saturating_add(ttl.as_secs())),
        );
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn at(us: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(us)
    }

    #[test]
    fn limits_bans_and_revocations() {
        let store = MemoryState::new(1000);
        let quota = Quota {
            limit: 2,
            window_us: 1_000_000,
            burst: 2,
        };
        let check = StateCheck::Limit {
            policy: Arc::from("p"),
            key: "k".into(),
            quota,
        };
        let allowed = |a: &StateAnswer| matches!(a, StateAnswer::Limit(o) if o.allowed);
        let t0 = at(1_000_000_000);
        assert!(allowed(&store.answer(std::slice::from_ref(&check), t0)[0]));
        assert!(allowed(&store.answer(std::slice::from_ref(&check), t0)[0]));
        assert!(!allowed(&store.answer(std::slice::from_ref(&check), t0)[0]));

        let client: IpAddr = [192, 0, 2, 1].into();
        let bans = BanPolicy {
            failures: 3,
            window_us: 60_000_000,
            duration_us: 10_000_000,
        };
        assert!(!store.record_failure(client, &bans, t0));
        assert!(!store.record_failure(client, &bans, t0));
        assert!(
            store.record_failure(client, &bans, t0),
            "the third failure bans"
        );
        let ban = StateCheck::Ban {
            key: ban_key(client),
        };
        assert_eq!(
            store.answer(std::slice::from_ref(&ban), at(1_005_000_000)),
            vec![StateAnswer::Ban(Some(5_000_000))]
        );
        assert_eq!(
            store.answer(std::slice::from_ref(&ban), at(1_010_000_001)),
            vec![StateAnswer::Ban(None)]
        );

        let revoked = |jti: Option<&str>, iat: Option<u64>| StateCheck::Revoked {
            token_id: jti.map(str::to_owned),
            subject: "alice".into(),
            issued_at: iat,
        };
        let now = SystemTime::now();
        let now_s = micros(now) / 1_000_000;
        store.revoke_token("t1", Duration::from_secs(60));
        store.revoke_subject(
            "alice",
            at((now_s - 100) * 1_000_000),
            Duration::from_secs(3600),
        );
        let answers = store.answer(
            &[
                revoked(Some("t1"), Some(now_s)),
                revoked(Some("t2"), Some(now_s - 101)),
                revoked(Some("t2"), Some(now_s - 100)),
                revoked(None, None),
            ],
            now,
        );
        let expected = [true, true, false, true].map(StateAnswer::Revoked).to_vec();
        assert_eq!(answers, expected);
    }

    #[test]
    fn distinct_keys_beyond_the_bound_are_evicted() {
        let store = MemoryState::new(10_000);
        let quota = Quota {
            limit: 10,
            window_us: 1_000_000,
            burst: 10,
        };
        for i in 0..200_000u32 {
            let check = StateCheck::Limit {
                policy: Arc::from("p"),
                key: format!("k{i}"),
                quota,
            };
            let _ = store.answer(std::slice::from_ref(&check), UNIX_EPOCH);
        }
        assert!(
            store.counters() <= 10_000,
            "{} counters held",
            store.counters()
        );
    }
}
