//! The gateway as the engine's [`Host`]: the request body is read from the connection (for
//! the WAF, bounded in size and time), state checks go to the configured store, passwords
//! are checked on the blocking pool (argon2 and bcrypt are slow by design and must not stall
//! the I/O threads), key sets are refreshed by the JWKS refresher, refusals count towards
//! bans off the request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use warden_core::limit::BanPolicy;
use warden_core::{
    BodyRead, Engine, Host, PasswordCheck, PasswordVerdict, StateAnswer, StateCheck,
    StateUnavailable,
};

use super::Shared;
use super::request_body;
use warden_core::body::Held;
use warden_core::session::{SessionAnswer, SessionLookup};

/// One request's host: the gateway's shared parts and the request's body.
pub(crate) struct GatewayHost<'a> {
    shared: &'a Arc<Shared>,
    engine: &'a Engine,
    body: Held<Incoming>,
    timeout: Duration,
    /// The session record this request's lookup found, for a refresh to compare against.
    session_seen: Option<String>,
}

impl<'a> GatewayHost<'a> {
    pub(crate) fn new(shared: &'a Arc<Shared>, engine: &'a Engine, body: Option<Incoming>) -> Self {
        Self {
            shared,
            engine,
            body: Held::new(body),
            timeout: engine.config().serve.upstream_timeout,
            session_seen: None,
        }
    }

    /// The body to forward: what was read, and the rest.
    pub(crate) fn into_body(self) -> (Option<Bytes>, Option<Incoming>) {
        self.body.into_parts()
    }
}

impl Host for GatewayHost<'_> {
    async fn read_body(&mut self, limit: usize) -> BodyRead {
        let Some(body) = self.body.take_unread() else {
            return BodyRead::Complete(Bytes::new());
        };
        let prefix = request_body::read_for_inspection(body, limit, self.timeout).await;
        let read = self.body.settle(prefix);
        if read == BodyRead::Unreadable {
            tracing::info!(
                "the request body could not be read (broken off, malformed or too slow)"
            );
        }
        read
    }

    async fn answer_state(
        &mut self,
        checks: &[StateCheck],
    ) -> Result<Vec<StateAnswer>, StateUnavailable> {
        let store = self.shared.store.load_full();
        let started = std::time::Instant::now();
        let answers = store.answer(checks).await;
        self.shared
            .metrics
            .state_histogram(store.backend())
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = &answers {
            self.shared.metrics.state_unavailable.inc();
            warn_throttled(&format!("{e}; the configured fail mode decides"));
        }
        answers
    }

    async fn check_password(&mut self, check: PasswordCheck) -> PasswordVerdict {
        // The blocking pool is gone only while the runtime shuts down: refuse, never skip.
        tokio::task::spawn_blocking(move || check.verify())
            .await
            .unwrap_or_else(|_| PasswordVerdict::not_checked())
    }

    async fn refresh_keys(&mut self) -> bool {
        self.shared.jwks.refresh_on_unknown_key(self.engine).await
    }

    async fn lookup_session(&mut self, lookup: &SessionLookup) -> SessionAnswer {
        let (answer, seen) = super::oidc::lookup(self.shared, lookup).await;
        self.session_seen = seen;
        answer
    }

    async fn refresh_session(&mut self, lookup: &SessionLookup) -> SessionAnswer {
        super::oidc::refresh(
            self.shared,
            self.engine,
            lookup,
            self.session_seen.as_deref(),
        )
        .await
    }

    /// Counted off the request's path: the refusal is answered at once.
    async fn record_refusal(&mut self, client: IpAddr, policy: &BanPolicy) {
        let (shared, policy) = (Arc::clone(self.shared), *policy);
        tokio::spawn(async move {
            let store = shared.store.load_full();
            match store.record_failure(client, &policy).await {
                Ok(true) => {
                    shared.metrics.bans.inc();
                    tracing::warn!(%client, failures = policy.failures, "client banned after repeated refusals");
                }
                Ok(false) => {}
                Err(e) => {
                    shared.metrics.state_unavailable.inc();
                    tracing::warn!(%client, error = %e, "could not count a refusal towards a ban");
                }
            }
        });
    }
}

/// A warning at most once a second: an outage must not flood the log.
fn warn_throttled(message: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("{message}");
    }
}
