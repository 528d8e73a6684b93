//! State held in this process: rate-limit counters, bans and revocations in bounded caches
//! (the least recently used keys go first), so a million distinct clients cannot grow memory
//! without limit. An evicted counter starts afresh and an evicted ban ends early, which can
//! only let through a request a larger store would have refused.
//!
//! This is data, not I/O: the gateway's memory backend and the tower layer both use it.
//!
//! Each thread keeps the counters it used last beside the shared cache and looks one up
//! there again only every 64 checks (`REFRESH_EVERY`): the shared cache's lookup records
//! every read in a log all threads write to, which is what stopped the workers from
//! scaling. The counter itself stays one atomic shared by all threads. A counter the cache
//! evicts meanwhile is still counted on by the threads holding it for at most that many
//! checks each, while new checks start a fresh one: as with any eviction, that can only let
//! through what a larger store would have refused.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;

use super::gcra::{self, Quota};
use super::{
    BanPolicy, StateAnswer, StateCheck, ban_key, failure_key, revoked_subject_key,
    revoked_token_key,
};

/// How many keys each cache holds unless told otherwise.
pub const DEFAULT_MAX_KEYS: u64 = 1_000_000;

/// How many checks a thread makes on a counter it holds before it looks the key up in the
/// shared cache again (which also keeps the key from going idle there).
const REFRESH_EVERY: u32 = 64;

/// How many counters a thread holds for one store; when full, it lets them all go and finds
/// them again in the shared cache. A thread holds counters of at most 9 stores at once.
const THREAD_COUNTERS: usize = 4096;

/// A counter a thread holds, and the checks it made on it since it last looked it up.
struct Held {
    tat: Arc<AtomicU64>,
    uses: u32,
}

thread_local! {
    /// By store, then by key.
    static HELD: RefCell<HashMap<u64, HashMap<String, Held>>> = RefCell::new(HashMap::new());
}

/// Counters, bans and revocations in this process; share it behind an `Arc`.
#[derive(Debug)]
pub struct MemoryState {
    /// Theoretical arrival times of limit and failure counters (µs since the epoch; 0 for
    /// a key not counted yet). Each is an atomic of its own: a check reads the cache, which
    /// costs far less than a compute under the key's lock, and moves the TAT with a
    /// compare-and-swap, so concurrent checks of one key never both take the same slot.
    counters: Cache<String, Arc<AtomicU64>>,
    /// Ban ends (µs since the epoch).
    bans: Cache<String, u64>,
    /// Revoked token ids and subjects' cut-off times (s), with the end of their memory (s).
    revoked: Cache<String, (u64, u64)>,
    /// Whether anything was ever revoked here: until then a check needs no lookup.
    any_revoked: AtomicBool,
    /// This store among others, for the counters the threads hold.
    id: u64,
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
            any_revoked: AtomicBool::new(false),
            id: {
                static NEXT_ID: AtomicU64 = AtomicU64::new(0);
                NEXT_ID.fetch_add(1, Ordering::Relaxed)
            },
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
                StateCheck::Revoked { .. } if !self.any_revoked.load(Ordering::Acquire) => {
                    StateAnswer::Revoked(false)
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
        HELD.with_borrow_mut(|stores| {
            if stores.len() > 8 && !stores.contains_key(&self.id) {
                // Counters of stores gone (reloads, tests) are not kept forever.
                stores.clear();
            }
            let held = stores.entry(self.id).or_default();
            if let Some(h) = held.get_mut(key) {
                if h.uses >= REFRESH_EVERY {
                    h.tat = self.shared_counter(key);
                    h.uses = 0;
                }
                h.uses += 1;
                return check_and_move(&h.tat, quota, now_us);
            }
            let tat = self.shared_counter(key);
            let outcome = check_and_move(&tat, quota, now_us);
            if held.len() >= THREAD_COUNTERS {
                held.clear();
            }
            held.insert(key.to_owned(), Held { tat, uses: 1 });
            outcome
        })
    }

    /// The counter of `key` in the shared cache, made if it has none.
    fn shared_counter(&self, key: &str) -> Arc<AtomicU64> {
        match self.counters.get(key) {
            Some(tat) => tat,
            // Of two first checks at once, one makes the counter and both count on it.
            None => self
                .counters
                .get_with(key.to_owned(), || Arc::new(AtomicU64::new(0))),
        }
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
        self.any_revoked.store(true, Ordering::Release);
        let now_s = micros(SystemTime::now()) / 1_000_000;
        self.revoked.insert(
            revoked_token_key(jti),
            (1, now_s.saturating_add(ttl.as_secs())),
        );
    }

    /// Refuse every token of `subject` issued before `issued_before` (and every token of it
    /// without an `iat`) for the next `ttl` (at least the longest token lifetime).
    pub fn revoke_subject(&self, subject: &str, issued_before: SystemTime, ttl: Duration) {
        self.any_revoked.store(true, Ordering::Release);
        let now_s = micros(SystemTime::now()) / 1_000_000;
        let before = micros(issued_before) / 1_000_000;
        self.revoked.insert(
            revoked_subject_key(subject),
            (before, now_s.saturating_add(ttl.as_secs())),
        );
    }
}

/// One GCRA check on the counter `tat`, moved by compare-and-swap so that concurrent checks
/// of one key never both take the same slot.
fn check_and_move(tat: &AtomicU64, quota: &Quota, now_us: u64) -> gcra::Outcome {
    let mut current = tat.load(Ordering::Acquire);
    loop {
        let stored = (current != 0).then_some(current);
        let (outcome, next) = gcra::check(quota, stored, now_us);
        let Some(next) = next else {
            return outcome;
        };
        match tat.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return outcome,
            // Another check of the key moved it first: judge again from where it is.
            Err(moved) => current = moved,
        }
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
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
    fn concurrent_checks_of_one_key_never_share_a_slot() {
        // 8 threads × 500 checks at one instant against a burst of 1,000: exactly 1,000
        // pass, whatever the interleaving of their compare-and-swaps.
        let store = Arc::new(MemoryState::new(1000));
        let quota = Quota {
            limit: 1000,
            window_us: 60_000_000,
            burst: 1000,
        };
        let now = at(2_000_000_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let check = StateCheck::Limit {
                        policy: Arc::from("p"),
                        key: "shared".into(),
                        quota,
                    };
                    (0..500)
                        .filter(|_| {
                            matches!(
                                &store.answer(std::slice::from_ref(&check), now)[0],
                                StateAnswer::Limit(o) if o.allowed
                            )
                        })
                        .count()
                })
            })
            .collect();
        let allowed: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(allowed, 1000);
    }

    #[test]
    fn a_thread_s_held_counters_belong_to_their_store_and_keep_counting_past_a_refresh() {
        // Two stores, one key: the counts never mix, on a thread that holds both.
        let (a, b) = (MemoryState::new(100), MemoryState::new(100));
        let quota = Quota {
            limit: 200,
            window_us: 60_000_000,
            burst: 200,
        };
        let now = at(2_000_000_000);
        let check = StateCheck::Limit {
            policy: Arc::from("p"),
            key: "k".into(),
            quota,
        };
        let allowed = |store: &MemoryState, n: usize| {
            (0..n)
                .filter(|_| {
                    matches!(
                        &store.answer(std::slice::from_ref(&check), now)[0],
                        StateAnswer::Limit(o) if o.allowed
                    )
                })
                .count()
        };
        // Past REFRESH_EVERY checks the held counter is looked up again: still the same one.
        assert_eq!(allowed(&a, 150), 150);
        assert_eq!(allowed(&b, 10), 10);
        assert_eq!(allowed(&a, 100), 50, "a's burst of 200 is spent");
        assert_eq!(allowed(&b, 300), 190);
    }

    #[test]
    fn nothing_revoked_answers_without_a_lookup_and_a_revocation_still_counts() {
        let store = MemoryState::new(100);
        let check = StateCheck::Revoked {
            token_id: Some("t9".into()),
            subject: "bob".into(),
            issued_at: Some(1),
        };
        let now = SystemTime::now();
        assert_eq!(
            store.answer(std::slice::from_ref(&check), now),
            vec![StateAnswer::Revoked(false)]
        );
        store.revoke_token("t9", Duration::from_secs(60));
        assert_eq!(
            store.answer(std::slice::from_ref(&check), now),
            vec![StateAnswer::Revoked(true)]
        );
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
