//! Rate limits and abuse bans: what to count, under which key, and at which stage.
//!
//! The engine never touches state. It names the checks a request needs — a ban lookup and
//! the limits keyed by client address or route before authentication, the revocation
//! lookup and the limits keyed by subject, API key or a claim after it — and the driver
//! (the gateway, the tower layer) answers them from memory or Redis, then resumes the
//! engine with the answers. See [`crate::Engine::begin`].

pub mod gcra;
pub mod memory;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

pub use self::gcra::{Outcome, Quota};

/// A boxed future, as [`StateStore`]'s methods return them (the trait is used as
/// `dyn StateStore`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where a front end's counters, bans and revocations live, shared by every decider that
/// holds it: [`memory::MemoryState`] in this process, the `warden` gateway's store (memory
/// or Redis, as its `[state]` says) across a fleet. A front end answers the engine's state
/// checks from it and counts refusals towards bans in it.
pub trait StateStore: Send + Sync + std::fmt::Debug {
    /// Answer the checks, in order, at `now`.
    fn answer<'a>(
        &'a self,
        checks: &'a [StateCheck],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<StateAnswer>, StateUnavailable>>;

    /// Count a 401 or 403 of `client` towards its ban; `true` when the client is banned now.
    fn record_failure<'a>(
        &'a self,
        client: IpAddr,
        policy: &'a BanPolicy,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, StateUnavailable>>;
}

impl StateStore for memory::MemoryState {
    fn answer<'a>(
        &'a self,
        checks: &'a [StateCheck],
        now: SystemTime,
    ) -> BoxFuture<'a, Result<Vec<StateAnswer>, StateUnavailable>> {
        Box::pin(std::future::ready(Ok(Self::answer(self, checks, now))))
    }

    fn record_failure<'a>(
        &'a self,
        client: IpAddr,
        policy: &'a BanPolicy,
        now: SystemTime,
    ) -> BoxFuture<'a, Result<bool, StateUnavailable>> {
        Box::pin(std::future::ready(Ok(Self::record_failure(
            self, client, policy, now,
        ))))
    }
}
use crate::identity::Identity;

/// What a limit's key is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address.
    Client,
    /// The route's name.
    Route,
    /// The verified subject.
    Subject,
    /// The API key's id (the subject for other credentials).
    ApiKey,
    /// A claim or attribute of the identity, such as a plan.
    Claim(String),
}

impl KeyPart {
    /// Whether the part needs a verified identity.
    #[must_use]
    pub fn needs_identity(&self) -> bool {
        matches!(self, Self::Subject | Self::ApiKey | Self::Claim(_))
    }
}

/// A configured limit.
#[derive(Debug, Clone)]
pub struct LimitPolicy {
    /// Its name, in headers and logs.
    pub name: Arc<str>,
    /// What the key is made of.
    pub key: Vec<KeyPart>,
    /// The rate.
    pub quota: Quota,
    /// The routes it applies to; all when `None`.
    pub routes: Option<Vec<Arc<str>>>,
}

impl LimitPolicy {
    /// Whether the limit is checked after authentication.
    #[must_use]
    pub fn after_identity(&self) -> bool {
        self.key.iter().any(KeyPart::needs_identity)
    }

    fn applies_to(&self, route: &str) -> bool {
        self.routes
            .as_ref()
            .is_none_or(|r| r.iter().any(|n| n.as_ref() == route))
    }

    /// The key for a request, or `None` when a part is unknown (no identity, no claim).
    fn key_for(
        &self,
        client: std::net::IpAddr,
        route: &str,
        identity: Option<&Identity>,
    ) -> Option<String> {
        let mut key = format!("limit:{}", self.name);
        for part in &self.key {
            key.push(':');
            match part {
                KeyPart::Client => key.push_str(&client.to_canonical().to_string()),
                KeyPart::Route => key.push_str(route),
                KeyPart::Subject => key.push_str(&identity?.subject),
                KeyPart::ApiKey => {
                    let id = identity?;
                    key.push_str(
                        id.token_id
                            .as_deref()
                            .filter(|_| id.kind == crate::identity::CredentialKind::ApiKey)
                            .unwrap_or(&id.subject),
                    );
                }
                KeyPart::Claim(name) => {
                    let value = identity?.attributes.get(name)?;
                    key.push_str(
                        &value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned),
                    );
                }
            }
        }
        Some(key)
    }
}

/// Abuse bans: too many refusals from one client within a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BanPolicy {
    /// 401s and 403s that trigger a ban...
    pub failures: u64,
    /// ...within this window (microseconds).
    pub window_us: u64,
    /// How long a ban lasts (microseconds).
    pub duration_us: u64,
}

impl BanPolicy {
    /// The quota that counts failures: `failures` per window. Its burst is one less, so the
    /// check of the `failures`-th failure within the window is the one refused: the ban.
    #[must_use]
    pub fn quota(&self) -> Quota {
        Quota {
            limit: self.failures,
            window_us: self.window_us,
            burst: self.failures.saturating_sub(1),
        }
    }
}

/// One question for the state backend. Deliberately exhaustive: a backend must answer every
/// kind of check, and a new kind is a compile error in each backend, never a silent pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateCheck {
    /// Is this client banned? (answer: the ban's remaining time)
    Ban {
        /// The ban key.
        key: String,
    },
    /// Count a request against a limit.
    Limit {
        /// The policy's name.
        policy: Arc<str>,
        /// The key.
        key: String,
        /// The rate.
        quota: Quota,
    },
    /// Is this token revoked? (by its id, or every token of the subject issued before a time)
    Revoked {
        /// The token id (`jti`), if any.
        token_id: Option<String>,
        /// The subject.
        subject: String,
        /// When the token was issued (seconds since the epoch), if known.
        issued_at: Option<u64>,
    },
}

/// The backend's answer to one [`StateCheck`], in the same order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateAnswer {
    /// Banned for this many more microseconds, or not banned.
    Ban(Option<u64>),
    /// The limit's outcome.
    Limit(Outcome),
    /// Whether the token is revoked.
    Revoked(bool),
}

/// The state backend could not answer (unreachable, timed out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state backend unavailable: {0}")]
pub struct StateUnavailable(pub String);

/// A limit that was applied to a request, for the `RateLimit` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The policy's name.
    pub policy: Arc<str>,
    /// Its rate.
    pub quota: Quota,
    /// The outcome.
    pub outcome: Outcome,
}

/// The ban key of a client.
#[must_use]
pub fn ban_key(client: std::net::IpAddr) -> String {
    format!("ban:{}", client.to_canonical())
}

/// The failure-counting key of a client.
#[must_use]
pub fn failure_key(client: std::net::IpAddr) -> String {
    format!("failures:{}", client.to_canonical())
}

/// The limit checks of a phase.
pub(crate) fn checks(
    policies: &[LimitPolicy],
    after_identity: bool,
    client: std::net::IpAddr,
    route: &str,
    identity: Option<&Identity>,
) -> Vec<StateCheck> {
    policies
        .iter()
        .filter(|p| p.after_identity() == after_identity && p.applies_to(route))
        .filter_map(|p| {
            p.key_for(client, route, identity)
                .map(|key| StateCheck::Limit {
                    policy: Arc::clone(&p.name),
                    key,
                    quota: p.quota,
                })
        })
        .collect()
}

/// Why a limit's key part could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyPartError {
    /// Not one of the known parts. Holds the text.
    #[error("`{0}` is not a key part; use client, route, subject, api_key or claim:NAME")]
    Unknown(String),
    /// `claim:` with no claim name after it.
    #[error("`claim:` is not a key part; use client, route, subject, api_key or claim:NAME")]
    EmptyClaimName,
}

/// Parse `client`, `route`, `subject`, `api_key` or `claim:NAME`.
///
/// # Errors
/// [`KeyPartError::EmptyClaimName`] for `claim:` alone, [`KeyPartError::Unknown`] for any
/// other text.
pub fn parse_key_part(text: &str) -> Result<KeyPart, KeyPartError> {
    Ok(match text {
        "client" => KeyPart::Client,
        "route" => KeyPart::Route,
        "subject" => KeyPart::Subject,
        "api_key" => KeyPart::ApiKey,
        other => match other.strip_prefix("claim:") {
            Some("") => return Err(KeyPartError::EmptyClaimName),
            Some(name) => KeyPart::Claim(name.to_owned()),
            None => return Err(KeyPartError::Unknown(other.to_owned())),
        },
    })
}

/// The key of a revoked token id.
#[must_use]
pub fn revoked_token_key(jti: &str) -> String {
    format!("revoked:jti:{jti}")
}

/// The key of a subject's revocation cut-off.
#[must_use]
pub fn revoked_subject_key(subject: &str) -> String {
    format!("revoked:sub:{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parts_are_parsed_and_refused_with_their_reason() {
        assert_eq!(parse_key_part("client"), Ok(KeyPart::Client));
        assert_eq!(
            parse_key_part("claim:plan"),
            Ok(KeyPart::Claim("plan".to_owned()))
        );
        assert_eq!(parse_key_part("claim:"), Err(KeyPartError::EmptyClaimName));
        let unknown = parse_key_part("ip").unwrap_err();
        assert_eq!(unknown, KeyPartError::Unknown("ip".to_owned()));
        assert_eq!(
            unknown.to_string(),
            "`ip` is not a key part; use client, route, subject, api_key or claim:NAME"
        );
    }
}
