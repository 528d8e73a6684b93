//! Shared state for the gateway: rate-limit counters, bans and revoked tokens, in this
//! process (bounded) or in Redis (one truth for many instances). The engine asks
//! [`warden_core::StateCheck`]s; this module answers them.

mod redis;
pub mod sessions;

use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use warden_core::config::{Backend, StateSettings};
use warden_core::limit::memory::MemoryState;
use warden_core::limit::{BanPolicy, BoxFuture, StateStore};
use warden_core::{StateAnswer, StateCheck, StateUnavailable};

pub use self::redis::RedisStore;

/// A revocation to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// One token, by its `jti`, until it would have expired.
    Token {
        /// The token id.
        jti: String,
        /// How long to remember it (at least the token's remaining lifetime).
        ttl_secs: u64,
    },
    /// Every token of a subject issued before a time (seconds since the epoch).
    Subject {
        /// The subject.
        subject: String,
        /// Tokens issued before this are refused.
        before: u64,
        /// How long to remember it (at least the longest token lifetime).
        ttl_secs: u64,
    },
}

/// The state backend of a gateway; also a [`StateStore`] that warden-tower layers can
/// share (`WardenLayer::with_store`), so an app and the gateways count one limit in Redis.
#[derive(Debug)]
pub enum Store {
    /// In this process.
    Memory(MemoryState),
    /// In Redis.
    Redis(RedisStore),
}

impl Store {
    /// The backend the settings name. Redis is connected lazily: a gateway starts even when
    /// Redis is down, and answers by its fail mode until Redis is back.
    #[must_use]
    pub fn new(settings: &StateSettings) -> Self {
        match &settings.backend {
            Backend::Memory { max_keys } => Self::Memory(MemoryState::new(*max_keys)),
            Backend::Redis { url } => Self::Redis(RedisStore::new(url, settings)),
        }
    }

    /// The backend's name in metrics: `memory` or `redis`.
    #[must_use]
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }

    /// Answer the engine's checks, in order.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn answer(
        &self,
        checks: &[StateCheck],
    ) -> Result<Vec<StateAnswer>, StateUnavailable> {
        match self {
            Self::Memory(m) => Ok(m.answer(checks, SystemTime::now())),
            Self::Redis(r) => r.answer(checks).await,
        }
    }

    /// Count a refusal (401 or 403) from a client; returns whether it is now banned.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn record_failure(
        &self,
        client: IpAddr,
        policy: &BanPolicy,
    ) -> Result<bool, StateUnavailable> {
        match self {
            Self::Memory(m) => Ok(m.record_failure(client, policy, SystemTime::now())),
            Self::Redis(r) => r.record_failure(client, policy).await,
        }
    }

    /// Whether the backend answers now (memory always does; Redis answers a `PING`).
    ///
    /// # Errors
    /// When Redis cannot be reached in time.
    pub async fn ready(&self) -> Result<(), StateUnavailable> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => r.ping().await,
        }
    }

    /// Record a revocation.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn revoke(&self, revocation: &Revocation) -> Result<(), StateUnavailable> {
        match self {
            Self::Memory(m) => {
                match revocation {
                    Revocation::Token { jti, ttl_secs } => {
                        m.revoke_token(jti, Duration::from_secs(*ttl_secs))
                    }
                    Revocation::Subject {
                        subject,
                        before,
                        ttl_secs,
                    } => m.revoke_subject(
                        subject,
                        UNIX_EPOCH + Duration::from_secs(*before),
                        Duration::from_secs(*ttl_secs),
                    ),
                }
                Ok(())
            }
            Self::Redis(r) => r.revoke(revocation).await,
        }
    }
}

impl StateStore for Store {
    fn answer<'a>(
        &'a self,
        checks: &'a [StateCheck],
        _now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<StateAnswer>, StateUnavailable>> {
        // The gateway's store reads its own clock (Redis's, for a Redis backend).
        Box::pin(Self::answer(self, checks))
    }

    fn record_failure<'a>(
        &'a self,
        client: IpAddr,
        policy: &'a BanPolicy,
        _now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, StateUnavailable>> {
        Box::pin(Self::record_failure(self, client, policy))
    }
}
