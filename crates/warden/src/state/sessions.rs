//! Browser session records, in this process (bounded) or in Redis (so a logout, a
//! revocation or a back-channel logout on one instance ends the session on all of them).
//!
//! A record is stored sealed (see `warden_core::session`): the backend never holds a token
//! in the clear. Its lifetime is the idle timeout, renewed on every use, never past the
//! session's absolute end. Two indexes find a user's sessions for a back-channel logout: by
//! the provider's session id (`sid`) and by subject.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use warden_core::StateUnavailable;
use warden_core::config::{Backend, StateSettings};

use super::RedisStore;

/// The most sessions (and index entries) kept in memory; the least recently used go first.
const MEMORY_CAPACITY: u64 = 100_000;

/// One session kept in memory.
#[derive(Debug, Clone)]
pub struct Entry {
    sealed: Arc<str>,
    idle_until: Instant,
    ends: Instant,
}

/// Where session records live.
#[derive(Debug)]
pub enum SessionStore {
    /// In this process.
    Memory {
        /// Records by session id.
        records: moka::sync::Cache<String, Entry>,
        /// Session ids by index key.
        index: moka::sync::Cache<String, Arc<Mutex<Vec<String>>>>,
    },
    /// In Redis (a connection of its own, with the state settings' prefix and timeout).
    Redis(Box<RedisStore>),
}

/// The key of a session's record.
fn record_key(id: &str) -> String {
    format!("session:{id}")
}

/// The key of the lock a refresh of a session holds across instances.
fn refresh_lock_key(id: &str) -> String {
    format!("session-refresh:{id}")
}

/// Deletes the lock only if it is still this holder's: a holder that outlived its lock's
/// lifetime must not release the next holder's.
const UNLOCK: &str =
    r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

/// An index of a source's sessions by the provider's session id.
#[must_use]
pub fn by_sid(source: &str, sid: &str) -> String {
    format!("session-sid:{source}:{sid}")
}

/// An index of a source's sessions by subject.
#[must_use]
pub fn by_subject(source: &str, subject: &str) -> String {
    format!("session-sub:{source}:{subject}")
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl SessionStore {
    /// The store the state settings name.
    #[must_use]
    pub fn new(settings: &StateSettings) -> Self {
        match &settings.backend {
            Backend::Memory { .. } => Self::Memory {
                records: moka::sync::Cache::new(MEMORY_CAPACITY),
                index: moka::sync::Cache::new(MEMORY_CAPACITY),
            },
            Backend::Redis { url } => Self::Redis(Box::new(RedisStore::new(url, settings))),
        }
    }

    /// Store a new session's record, living `idle` (at most `lifetime`), listed under
    /// `indexes` until `lifetime` is over.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn create(
        &self,
        id: &str,
        sealed: &str,
        idle: Duration,
        lifetime: Duration,
        indexes: &[String],
    ) -> Result<(), StateUnavailable> {
        let idle = idle.min(lifetime);
        match self {
            Self::Memory { records, index } => {
                let now = Instant::now();
                records.insert(
                    id.to_owned(),
                    Entry {
                        sealed: Arc::from(sealed),
                        idle_until: now + idle,
                        ends: now + lifetime,
                    },
                );
                for key in indexes {
                    let ids = index.get_with(key.clone(), Arc::default);
                    if let Ok(mut ids) = ids.lock() {
                        ids.push(id.to_owned());
                    }
                }
                Ok(())
            }
            Self::Redis(redis) => {
                let prefix = redis.prefix();
                let mut set = redis::cmd("SET");
                set.arg(format!("{prefix}{}", record_key(id)))
                    .arg(sealed)
                    .arg("PX")
                    .arg(millis(idle));
                redis.query::<()>(&set).await?;
                for key in indexes {
                    let key = format!("{prefix}{key}");
                    redis
                        .query::<()>(redis::cmd("SADD").arg(&key).arg(id))
                        .await?;
                    redis
                        .query::<()>(redis::cmd("PEXPIRE").arg(&key).arg(millis(lifetime)))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// The sealed record of a session, its idle lifetime renewed (never past `ends`,
    /// seconds since the epoch); `None` when there is none.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn get(
        &self,
        id: &str,
        idle: Duration,
        ends: u64,
    ) -> Result<Option<String>, StateUnavailable> {
        let left = Duration::from_secs(ends.saturating_sub(now_secs()));
        let idle = idle.min(left);
        match self {
            Self::Memory { records, .. } => {
                let now = Instant::now();
                let Some(mut entry) = records.get(id) else {
                    return Ok(None);
                };
                if entry.idle_until <= now || entry.ends <= now {
                    records.invalidate(id);
                    return Ok(None);
                }
                entry.idle_until = now + idle;
                let sealed = entry.sealed.to_string();
                records.insert(id.to_owned(), entry);
                Ok(Some(sealed))
            }
            Self::Redis(redis) => {
                let mut get = redis::cmd("GETEX");
                get.arg(format!("{}{}", redis.prefix(), record_key(id)))
                    .arg("PX")
                    .arg(millis(idle));
                redis.query::<Option<String>>(&get).await
            }
        }
    }

    /// Replace a session's record (after a refresh), only while the session still exists:
    /// a logout that raced the refresh wins.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn replace(
        &self,
        id: &str,
        sealed: &str,
        idle: Duration,
    ) -> Result<bool, StateUnavailable> {
        match self {
            Self::Memory { records, .. } => {
                let Some(mut entry) = records.get(id) else {
                    return Ok(false);
                };
                entry.sealed = Arc::from(sealed);
                entry.idle_until = (Instant::now() + idle).min(entry.ends);
                records.insert(id.to_owned(), entry);
                Ok(true)
            }
            Self::Redis(redis) => {
                let mut set = redis::cmd("SET");
                set.arg(format!("{}{}", redis.prefix(), record_key(id)))
                    .arg(sealed)
                    .arg("PX")
                    .arg(millis(idle))
                    .arg("XX");
                let reply: Option<String> = redis.query(&set).await?;
                Ok(reply.is_some())
            }
        }
    }

    /// Take the lock that lets one instance at a time refresh a session, for at most
    /// `ttl`: `Some(token)` (the holder's proof, for [`SessionStore::unlock_refresh`]) when
    /// it was free, `None` when another instance holds it. In memory there is no other
    /// instance: the process's own single-flight is the whole lock.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn try_lock_refresh(
        &self,
        id: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StateUnavailable> {
        let token = warden_core::session::random_token(16);
        match self {
            Self::Memory { .. } => Ok(Some(token)),
            Self::Redis(redis) => {
                let mut set = redis::cmd("SET");
                set.arg(format!("{}{}", redis.prefix(), refresh_lock_key(id)))
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(millis(ttl));
                let reply: Option<String> = redis.query(&set).await?;
                Ok(reply.map(|_| token))
            }
        }
    }

    /// Release the refresh lock taken with `token` (a lock that expired and was taken by
    /// another instance is left to it).
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn unlock_refresh(&self, id: &str, token: &str) -> Result<(), StateUnavailable> {
        match self {
            Self::Memory { .. } => Ok(()),
            Self::Redis(redis) => {
                let key = format!("{}{}", redis.prefix(), refresh_lock_key(id));
                redis
                    .query::<i64>(redis::cmd("EVAL").arg(UNLOCK).arg(1).arg(key).arg(token))
                    .await
                    .map(drop)
            }
        }
    }

    /// End a session.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn delete(&self, id: &str) -> Result<(), StateUnavailable> {
        match self {
            Self::Memory { records, .. } => {
                records.invalidate(id);
                Ok(())
            }
            Self::Redis(redis) => {
                let key = format!("{}{}", redis.prefix(), record_key(id));
                redis.query::<()>(redis::cmd("DEL").arg(key)).await
            }
        }
    }

    /// End every session listed under an index; returns how many ids it listed.
    ///
    /// # Errors
    /// When the backend cannot answer in time.
    pub async fn delete_indexed(&self, key: &str) -> Result<usize, StateUnavailable> {
        let ids: Vec<String> = match self {
            Self::Memory { index, .. } => index
                .remove(key)
                .and_then(|ids| ids.lock().ok().map(|ids| ids.clone()))
                .unwrap_or_default(),
            Self::Redis(redis) => {
                let key = format!("{}{key}", redis.prefix());
                let ids: Vec<String> = redis.query(redis::cmd("SMEMBERS").arg(&key)).await?;
                redis.query::<()>(redis::cmd("DEL").arg(&key)).await?;
                ids
            }
        };
        for id in &ids {
            self.delete(id).await?;
        }
        Ok(ids.len())
    }
}
