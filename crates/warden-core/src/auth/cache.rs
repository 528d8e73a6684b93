//! The verified-token cache: a JWT whose signature and claims were checked once is not
//! checked again until it expires, the source's keys change, or a revocation flushes it.
//!
//! - The key is the SHA-256 of the token, never the token itself: a memory dump of the
//!   cache yields no bearer credential. SHA-256 is a collision-resistant digest, so a
//!   forged token cannot be made to land on the entry of a verified one (a fast
//!   non-cryptographic hash could, and would then hand out someone else's identity). With
//!   the SHA extensions of current x86-64 and ARM cores it costs well under a microsecond
//!   for a typical token (see the `token_digest` bench); a signature check costs tens.
//! - The value is the identity the token verified to, its `exp` and `nbf`, and the key
//!   generation of the source when it was verified.
//! - Each entry expires at the token's `exp` (never later), and a hit still checks `exp`
//!   and `nbf` against the decision's own clock: time is an argument of the engine, and
//!   the cache's clock is only for reclaiming memory.
//! - A key rotation (a JWKS refresh that changes the set) bumps the generation and flushes
//!   the cache; an entry of an older generation is never a hit, even if it was inserted
//!   by a verification that raced with the rotation. A reload builds new sources, with new
//!   caches.
//! - A revocation flushes every cache ([`crate::Engine::flush_token_cache`]). Revocation is
//!   still checked on every request, after identity: a hit never skips it.
//! - Only successful verifications of tokens with an `exp` are cached.
//! - Each thread keeps the hits it found in front of the shared cache, as copies of its
//!   own: a shared cache's lookup (its read log, the entry's counters) and the shared
//!   `Arc` of a hit are written by every worker on every request, and those writes, not
//!   the lookup, are what stops the workers from scaling. A thread's copy answers under
//!   the same rules as the shared entry (`exp`, `nbf`, the generation) and is dropped by
//!   every flush and rotation, which bump an epoch the copy is checked against.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;
use sha2::{Digest, Sha256};

use crate::identity::Identity;

/// The default number of verified tokens remembered per JWT source.
pub const DEFAULT_CAPACITY: u64 = 10_000;

/// How many hits each thread keeps in front of the shared caches (all sources together);
/// when full, the thread's copies are dropped and found again in the shared caches.
const THREAD_CAPACITY: usize = 1024;

/// The SHA-256 of a token.
pub(crate) type TokenDigest = [u8; 32];

/// The digest a token is cached under.
pub(crate) fn digest(token: &str) -> TokenDigest {
    digest_bytes(token.as_bytes())
}

/// The SHA-256 of some bytes.
pub(crate) fn digest_bytes(bytes: &[u8]) -> TokenDigest {
    Sha256::digest(bytes).into()
}

/// What a verification established about one token.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub identity: Identity,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `nbf`, seconds since the epoch, if the token had one.
    pub not_before: Option<u64>,
    /// The source's key generation the token was verified under.
    pub generation: u64,
    /// How long the entry may live: from the verification's `now` to `exp`.
    ttl: Duration,
}

/// Expire each entry at its token's `exp`.
struct AtExp;

impl Expiry<TokenDigest, Arc<Verified>> for AtExp {
    fn expire_after_create(
        &self,
        _key: &TokenDigest,
        value: &Arc<Verified>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The verified tokens of one JWT source.
pub(crate) struct TokenCache {
    /// `None` when disabled (a capacity of 0).
    entries: Option<Cache<TokenDigest, Arc<Verified>>>,
    /// Bumped on every key rotation.
    generation: AtomicU64,
    /// This cache among all others, for the threads' copies.
    id: u64,
    /// Bumped on every flush (a revocation, a rotation): a thread's copy made before it
    /// is never a hit.
    epoch: AtomicU64,
}

/// A thread's copy of a hit: the cache it came from, that cache's epoch then, the entry.
type ThreadCopies = HashMap<(u64, TokenDigest), (u64, Arc<Verified>)>;

thread_local! {
    static THREAD_COPIES: RefCell<ThreadCopies> = RefCell::new(HashMap::new());
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field(
                "capacity",
                &self
                    .entries
                    .as_ref()
                    .and_then(|c| c.policy().max_capacity()),
            )
            .field("generation", &self.generation())
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    /// A cache of at most `capacity` tokens; 0 disables caching.
    pub fn new(capacity: u64) -> Self {
        let entries = (capacity > 0).then(|| {
            Cache::builder()
                .max_capacity(capacity)
                .expire_after(AtExp)
                .build()
        });
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Self {
            entries,
            generation: AtomicU64::new(0),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
        }
    }

    /// Whether tokens are cached at all.
    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The current key generation. Read it *before* loading the keys a token is verified
    /// with, and insert with it: a rotation in between makes the entry a permanent miss.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// The identity of a token verified before, if it is still valid at `now` (seconds
    /// since the epoch). `leeway` applies to `nbf` as in a full verification; `exp` is
    /// honoured exactly, so a token within its leeway after `exp` is verified again.
    pub fn get(&self, digest: &TokenDigest, now: u64, leeway: u64) -> Option<Arc<Verified>> {
        let entries = self.entries.as_ref()?;
        // Read before the shared cache: a flush after this makes the copy below stale.
        let epoch = self.epoch.load(Ordering::Acquire);
        let key = (self.id, *digest);
        let copy = THREAD_COPIES.with_borrow(|copies| {
            copies
                .get(&key)
                .filter(|(made_in, _)| *made_in == epoch)
                .map(|(_, verified)| Arc::clone(verified))
        });
        let hit = match copy {
            Some(copy) => copy,
            None => {
                let shared = entries.get(digest)?;
                // A copy of the thread's own, so that its hits touch no shared count.
                let copy = Arc::new(Verified::clone(&shared));
                THREAD_COPIES.with_borrow_mut(|copies| {
                    if copies.len() >= THREAD_CAPACITY {
                        copies.clear();
                    }
                    copies.insert(key, (epoch, Arc::clone(&copy)));
                });
                copy
            }
        };
        if hit.generation != self.generation() || now >= hit.expires_at {
            THREAD_COPIES.with_borrow_mut(|copies| copies.remove(&key));
            entries.invalidate(digest);
            return None;
        }
        if hit
            .not_before
            .is_some_and(|nbf| nbf > now.saturating_add(leeway))
        {
            return None;
        }
        Some(hit)
    }

    /// Remember a successful verification made at `now` under key generation `generation`.
    /// Tokens without `exp`, or already expired at `now`, are not remembered.
    pub fn insert(
        &self,
        digest: TokenDigest,
        identity: &Identity,
        not_before: Option<u64>,
        now: u64,
        generation: u64,
    ) {
        let (Some(entries), Some(expires_at)) = (&self.entries, identity.expires_at) else {
            return;
        };
        let ttl = expires_at.saturating_sub(now);
        if ttl == 0 || generation != self.generation() {
            return;
        }
        entries.insert(
            digest,
            Arc::new(Verified {
                identity: identity.clone(),
                expires_at,
                not_before,
                generation,
                ttl: Duration::from_secs(ttl),
            }),
        );
    }

    /// Forget every token (a revocation).
    pub fn flush(&self) {
        if let Some(entries) = &self.entries {
            // Every thread's copies first: none may answer once the flush has returned.
            self.epoch.fetch_add(1, Ordering::AcqRel);
            entries.invalidate_all();
        }
    }

    /// The keys changed: no token verified before may be a hit again.
    pub fn rotate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.flush();
    }

    /// The number of entries, after pending evictions are applied.
    #[cfg(test)]
    pub fn len(&self) -> u64 {
        self.entries.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::CredentialKind;

    fn identity(exp: u64) -> Identity {
        Identity {
            subject: "alice".to_owned(),
            source: Arc::from("idp"),
            kind: CredentialKind::Bearer,
            roles: vec!["admin".to_owned()],
            scopes: Vec::new(),
            token_id: Some("t1".to_owned()),
            expires_at: Some(exp),
            issued_at: Some(exp.saturating_sub(3600)),
            attributes: std::collections::BTreeMap::new(),
        }
    }

    #[test]
    fn a_verified_token_is_a_hit_until_exp() {
        let cache = TokenCache::new(16);
        let d = digest("a.b.c");
        cache.insert(d, &identity(2_000), None, 1_000, cache.generation());
        assert_eq!(cache.get(&d, 1_500, 30).unwrap().identity.subject, "alice");
        assert!(cache.get(&d, 1_999, 30).is_some());
        assert!(
            cache.get(&d, 2_000, 30).is_none(),
            "exp is honoured exactly"
        );
        assert!(
            cache.get(&d, 1_500, 30).is_none(),
            "an expired entry is dropped"
        );
        assert!(cache.get(&digest("a.b.d"), 1_500, 30).is_none());
    }

    #[test]
    fn the_entry_lives_until_exp_and_no_longer() {
        let cache = TokenCache::new(16);
        let d = digest("a.b.c");
        cache.insert(d, &identity(1_060), None, 1_000, 0);
        let entry = cache.get(&d, 1_000, 0).unwrap();
        assert_eq!(
            AtExp.expire_after_create(&d, &entry, Instant::now()),
            Some(Duration::from_secs(60))
        );
        // Already expired, or no `exp` at all: nothing is remembered.
        let late = digest("late");
        cache.insert(late, &identity(1_000), None, 1_000, 0);
        assert!(cache.get(&late, 999, 0).is_none());
        let mut forever = identity(0);
        forever.expires_at = None;
        cache.insert(digest("forever"), &forever, None, 1_000, 0);
        assert!(cache.get(&digest("forever"), 1_000, 0).is_none());
    }

    #[test]
    fn a_hit_still_checks_nbf() {
        let cache = TokenCache::new(16);
        let d = digest("a.b.c");
        cache.insert(d, &identity(5_000), Some(1_000), 1_000, 0);
        assert!(
            cache.get(&d, 900, 30).is_none(),
            "before nbf (and its leeway)"
        );
        assert!(cache.get(&d, 980, 30).is_some(), "within the leeway");
        assert!(cache.get(&d, 1_200, 30).is_some(), "the entry survived");
    }

    #[test]
    fn flush_forgets_everything() {
        let cache = TokenCache::new(16);
        let d = digest("a.b.c");
        cache.insert(d, &identity(2_000), None, 1_000, 0);
        cache.flush();
        assert!(cache.get(&d, 1_500, 0).is_none());
    }

    #[test]
    fn a_rotation_refuses_entries_of_older_keys_even_late_ones() {
        let cache = TokenCache::new(16);
        let d = digest("a.b.c");
        let before = cache.generation();
        cache.insert(d, &identity(2_000), None, 1_000, before);
        cache.rotate();
        assert!(cache.get(&d, 1_500, 0).is_none());
        // A verification that started before the rotation and finishes after it.
        cache.insert(d, &identity(2_000), None, 1_000, before);
        assert!(cache.get(&d, 1_500, 0).is_none());
        cache.insert(d, &identity(2_000), None, 1_000, cache.generation());
        assert!(cache.get(&d, 1_500, 0).is_some());
    }

    #[test]
    fn a_thread_s_copy_answers_only_for_its_cache_and_until_a_flush() {
        let cache = TokenCache::new(16);
        let other = TokenCache::new(16);
        let d = digest("a.b.c");
        cache.insert(d, &identity(2_000), None, 1_000, cache.generation());
        // The first hit makes this thread's copy; the second is answered by it.
        assert!(cache.get(&d, 1_500, 0).is_some());
        assert!(cache.get(&d, 1_500, 0).is_some());
        assert!(
            other.get(&d, 1_500, 0).is_none(),
            "another source's cache never answers with this one's copy"
        );
        // Another thread finds the hit in the shared cache.
        std::thread::scope(|s| {
            s.spawn(|| assert!(cache.get(&d, 1_500, 0).is_some()));
        });
        cache.flush();
        assert!(
            cache.get(&d, 1_500, 0).is_none(),
            "a revocation's flush drops the thread's copy"
        );
        // The copy still checks the token's own times.
        cache.insert(d, &identity(2_000), Some(1_700), 1_000, cache.generation());
        assert!(cache.get(&d, 1_690, 30).is_some());
        assert!(cache.get(&d, 1_600, 30).is_none(), "nbf, from the copy");
        assert!(cache.get(&d, 2_000, 30).is_none(), "exp, from the copy");
    }

    #[test]
    fn the_capacity_is_a_bound() {
        let cache = TokenCache::new(10);
        for i in 0..200 {
            cache.insert(
                digest(&format!("token-{i}")),
                &identity(9_000),
                None,
                1_000,
                0,
            );
        }
        assert!(cache.len() <= 10, "{} entries", cache.len());
        let off = TokenCache::new(0);
        assert!(!off.enabled());
        off.insert(digest("x"), &identity(9_000), None, 1_000, 0);
        assert!(off.get(&digest("x"), 1_000, 0).is_none());
    }
}
