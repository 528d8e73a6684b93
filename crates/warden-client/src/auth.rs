//! Access tokens: where they come from ([`TokenSource`]), when a 401 calls for a new one
//! ([`refreshable`]), and the single-flight cache that makes a hundred concurrent 401s cost
//! one refresh.
//!
//! The cache holds the current token and a generation number. Every request remembers the
//! generation it was sent with. On a 401 it asks the cache to refresh *that* generation:
//! the first asker calls [`TokenSource::refresh`] while holding the lock; everyone who was
//! waiting behind it finds a newer generation and takes the new token without calling the
//! source again. A refresh that fails is shared the same way: requests that were sent
//! before that refresh started get its error instead of starting another one.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::Mutex;

use crate::challenge::{BearerChallenge, Challenge};
use crate::error::{Error, SharedError};

/// A boxed error from a [`TokenSource`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the middleware gets access tokens.
///
/// [`token`](TokenSource::token) is asked once, for the first token (and again only if that
/// failed); after that the middleware keeps the token it has until the server rejects it,
/// then calls [`refresh`](TokenSource::refresh) once for all the requests that were
/// rejected with it.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// The first token.
    async fn token(&self) -> Result<String, BoxError>;

    /// A new token to replace `rejected`, which the server answered with a 401
    /// (`error="invalid_token"`, or no `error` at all).
    async fn refresh(&self, rejected: &str) -> Result<String, BoxError>;
}

#[async_trait]
impl<T: TokenSource + ?Sized> TokenSource for Arc<T> {
    async fn token(&self) -> Result<String, BoxError> {
        (**self).token().await
    }

    async fn refresh(&self, rejected: &str) -> Result<String, BoxError> {
        (**self).refresh(rejected).await
    }
}

/// Whether a 401 with these challenges calls for a refresh (RFC 6750 §3.1):
///
/// - a Bearer challenge with `error="invalid_token"` or with no `error` (the token was not
///   accepted, or not seen) — yes;
/// - a Bearer challenge with any other error (`invalid_request`, `insufficient_scope`) —
///   no: a new token would be refused the same way;
/// - challenges for other schemes only — no: the server does not take Bearer tokens;
/// - no readable challenge at all (a server that breaks RFC 9110 §15.5.2) — yes, once.
#[must_use]
pub fn refreshable(challenges: &[Challenge]) -> bool {
    if challenges.is_empty() {
        return true;
    }
    BearerChallenge::find(challenges)
        .is_some_and(|b| matches!(b.error.as_deref(), None | Some("invalid_token")))
}

/// The token a request was sent with.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// The token.
    pub(crate) token: String,
    /// The cache generation it belongs to.
    generation: u64,
    /// How many source calls had started when the token was handed out.
    calls_seen: u64,
}

/// The single-flight token cache.
pub(crate) struct TokenCache {
    source: Arc<dyn TokenSource>,
    state: Mutex<State>,
    /// Source calls started, incremented under the lock and read by [`Lease`]s.
    calls: AtomicU64,
}

#[derive(Default)]
struct State {
    token: Option<String>,
    generation: u64,
    /// The number of the last source call, if it failed, with its error.
    failure: Option<(u64, SharedError)>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("calls", &self.calls.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenCache {
    pub(crate) fn new(source: Arc<dyn TokenSource>) -> Self {
        Self {
            source,
            state: Mutex::new(State::default()),
            calls: AtomicU64::new(0),
        }
    }

    /// The current token, fetching the first one if there is none yet.
    pub(crate) async fn current(&self) -> Result<Lease, Error> {
        let calls_seen = self.calls.load(Ordering::Acquire);
        let mut state = self.state.lock().await;
        if let Some(token) = &state.token {
            return Ok(self.lease(token.clone(), state.generation));
        }
        if let Some(error) = shared_failure(&state, calls_seen) {
            return Err(Error::Token(error));
        }
        let call = self.calls.fetch_add(1, Ordering::AcqRel) + 1;
        match self.source.token().await {
            Ok(token) => {
                state.token = Some(token.clone());
                state.failure = None;
                Ok(self.lease(token, state.generation))
            }
            Err(e) => {
                let e: SharedError = Arc::from(e);
                state.failure = Some((call, Arc::clone(&e)));
                Err(Error::Token(e))
            }
        }
    }

    /// A replacement for `rejected`: the token of a newer generation if someone already
    /// refreshed, else a new one from the source (and a new generation).
    pub(crate) async fn refresh(&self, rejected: &Lease) -> Result<Lease, Error> {
        let mut state = self.state.lock().await;
        if state.generation != rejected.generation
            && let Some(token) = &state.token
        {
            return Ok(self.lease(token.clone(), state.generation));
        }
        if let Some(error) = shared_failure(&state, rejected.calls_seen) {
            return Err(Error::Refresh(error));
        }
        let call = self.calls.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::debug!(generation = state.generation, "refreshing the access token");
        match self.source.refresh(&rejected.token).await {
            Ok(token) => {
                state.generation += 1;
                state.token = Some(token.clone());
                state.failure = None;
                Ok(self.lease(token, state.generation))
            }
            Err(e) => {
                let e: SharedError = Arc::from(e);
                tracing::debug!(error = %e, "refreshing the access token failed");
                state.failure = Some((call, Arc::clone(&e)));
                Err(Error::Refresh(e))
            }
        }
    }

    fn lease(&self, token: String, generation: u64) -> Lease {
        Lease {
            token,
            generation,
            calls_seen: self.calls.load(Ordering::Acquire),
        }
    }
}

/// The error of a source call that failed after `calls_seen` calls had started: the
/// caller was waiting for (or sent its request before) that call, so it shares the result.
fn shared_failure(state: &State, calls_seen: u64) -> Option<SharedError> {
    state
        .failure
        .as_ref()
        .filter(|(call, _)| *call > calls_seen)
        .map(|(_, e)| Arc::clone(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::challenge::parse;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn which_401s_are_refreshed() {
        let yes = [
            r#"Bearer realm="w""#,
            r#"Bearer realm="w", error="invalid_token", error_description="expired""#,
            r#"Basic realm="w", Bearer realm="w""#,
            "",
        ];
        for field in yes {
            assert!(refreshable(&parse(field)), "{field}");
        }
        let no = [
            r#"Bearer realm="w", error="invalid_request""#,
            r#"Bearer error="insufficient_scope", scope="a""#,
            r#"Basic realm="w""#,
        ];
        for field in no {
            assert!(!refreshable(&parse(field)), "{field}");
        }
    }

    #[derive(Default)]
    struct Counting {
        refreshes: AtomicUsize,
        fail: bool,
    }

    #[async_trait]
    impl TokenSource for Counting {
        async fn token(&self) -> Result<String, BoxError> {
            Ok("t0".to_owned())
        }
        async fn refresh(&self, rejected: &str) -> Result<String, BoxError> {
            let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if self.fail {
                return Err("no".into());
            }
            Ok(format!("{rejected}-r{n}"))
        }
    }

    #[tokio::test]
    async fn concurrent_refreshes_of_one_generation_call_the_source_once() {
        let source = Arc::new(Counting::default());
        let cache = Arc::new(TokenCache::new(source.clone()));
        let stale = cache.current().await.unwrap();
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let stale = stale.clone();
                tokio::spawn(async move { cache.refresh(&stale).await.unwrap().token })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), "t0-r1");
        }
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
        // A rejection of the new token is a new generation: one more refresh.
        let fresh = cache.current().await.unwrap();
        assert_eq!(cache.refresh(&fresh).await.unwrap().token, "t0-r1-r2");
    }

    #[tokio::test]
    async fn a_failed_refresh_is_shared_by_the_requests_waiting_for_it() {
        let source = Arc::new(Counting {
            fail: true,
            ..Counting::default()
        });
        let cache = Arc::new(TokenCache::new(source.clone()));
        let stale = cache.current().await.unwrap();
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let cache = Arc::clone(&cache);
                let stale = stale.clone();
                tokio::spawn(async move { cache.refresh(&stale).await })
            })
            .collect();
        for t in tasks {
            assert!(matches!(t.await.unwrap(), Err(Error::Refresh(_))));
        }
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 1);
        // A request sent after the failure tries again.
        let later = cache.current().await.unwrap();
        assert!(cache.refresh(&later).await.is_err());
        assert_eq!(source.refreshes.load(Ordering::SeqCst), 2);
    }
}
