//! [`drive`]: the one loop that takes a request from [`Engine::begin`] to a [`Decision`],
//! answering each [`Need`] through a [`Host`]. The gateway, the tower layer and every other
//! front end call it; only the host differs (where the state lives, how a body is read,
//! where slow work runs).
//!
//! It is `async` without a runtime of its own: the host's futures do the waiting.

use std::future::Future;
use std::net::IpAddr;
use std::time::SystemTime;

use http::StatusCode;

use crate::auth::{PasswordCheck, PasswordVerdict};
use crate::limit::{BanPolicy, StateAnswer, StateCheck, StateUnavailable};
use crate::protocol::{Answer, BodyRead, Need, Progress};
use crate::session::{SessionAnswer, SessionLookup};
use crate::{Decision, Engine, RequestView};

/// More needs than the engine ever has for one request (body, two state phases, a password
/// or a key refresh, a session and its refresh): a host answering more is talking to a broken engine, and the request
/// is refused.
const MAX_NEEDS: usize = 8;

/// What a front end supplies to [`drive`].
pub trait Host: Send {
    /// Read the request body, at most `limit` bytes, keeping it to forward later.
    fn read_body(&mut self, limit: usize) -> impl Future<Output = BodyRead> + Send;

    /// Answer state checks (bans, limits, revocations) in order.
    fn answer_state(
        &mut self,
        checks: &[StateCheck],
    ) -> impl Future<Output = Result<Vec<StateAnswer>, StateUnavailable>> + Send;

    /// Check a password. The default checks it in place; a server should run it where
    /// blocking is allowed.
    fn check_password(
        &mut self,
        check: PasswordCheck,
    ) -> impl Future<Output = PasswordVerdict> + Send {
        std::future::ready(check.verify())
    }

    /// Refresh the key sets fetched from URLs; `true` when any changed. The default has none
    /// to refresh.
    fn refresh_keys(&mut self) -> impl Future<Output = bool> + Send {
        std::future::ready(false)
    }

    /// Look a browser session up, renewing its idle lifetime. The default has no session
    /// store: sessions are refused (503), never let through.
    fn lookup_session(
        &mut self,
        lookup: &SessionLookup,
    ) -> impl Future<Output = SessionAnswer> + Send {
        let _ = lookup;
        std::future::ready(SessionAnswer::Unavailable)
    }

    /// Refresh a session's tokens at its provider, store and return the new record. The
    /// default cannot: the refresh fails and the session is not accepted.
    fn refresh_session(
        &mut self,
        lookup: &SessionLookup,
    ) -> impl Future<Output = SessionAnswer> + Send {
        let _ = lookup;
        std::future::ready(SessionAnswer::RefreshFailed)
    }

    /// Count a 401 or 403 towards the client's ban (a server may do it off the request's
    /// path and return at once).
    fn record_refusal(
        &mut self,
        client: IpAddr,
        policy: &BanPolicy,
    ) -> impl Future<Output = ()> + Send;
}

/// Decide one request at `now`, answering every need through `host`, and count a 401 or
/// 403 towards the client's ban (when the configuration has bans).
pub async fn drive<H: Host>(
    engine: &Engine,
    request: &RequestView<'_>,
    now: SystemTime,
    host: &mut H,
) -> Decision {
    let mut progress = engine.begin(request, now);
    let mut needs = 0;
    let decision = loop {
        let pending = match progress {
            Progress::Decided(decision) => break decision,
            Progress::Needs(_) if needs == MAX_NEEDS => break engine.unavailable(request, now),
            Progress::Needs(pending) => pending,
        };
        needs += 1;
        let answer = match pending.need() {
            Need::Body { limit } => Answer::Body(host.read_body(*limit).await),
            Need::State(checks) => Answer::State(host.answer_state(checks).await),
            Need::Password(check) => Answer::Password(host.check_password(check.clone()).await),
            Need::Keys => Answer::Keys {
                changed: host.refresh_keys().await,
            },
            Need::Session(lookup) => Answer::Session(host.lookup_session(lookup).await),
            Need::RefreshSession(lookup) => Answer::Session(host.refresh_session(lookup).await),
        };
        progress = engine.resume(request, pending, answer);
    };
    if let (Some(policy), Some(reason)) = (&engine.config().bans, decision.reason())
        && matches!(
            reason.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        )
    {
        host.record_refusal(decision.client, policy).await;
    }
    decision
}
