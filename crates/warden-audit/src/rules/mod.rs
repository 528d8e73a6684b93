//! The rules: what a correct answer to an access question looks like, written once.
//!
//! [`answer::explain`] judges one answer (the rules `warden probe` and `warden audit` both
//! apply); [`matrix`] judges the answers of many identities to many operations (the rules
//! only an audit can see: BFLA, BOLA, existence leaks, ignored authentication). Every rule
//! either front end reports is a [`Rule`].

pub mod answer;
pub mod matrix;

use std::fmt;

use http::{HeaderMap, StatusCode};
use serde::Serialize;

/// How serious a broken rule is; `--fail-on` compares with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Clients are misled (a wrong status or a missing header).
    Low,
    /// Something leaks, or errors pass as successes.
    Medium,
    /// Access is granted that should not be.
    High,
    /// Authentication is not enforced at all.
    Critical,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Info => "info",
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Critical => "critical",
        })
    }
}

/// A rule an answer can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A 401 must carry `WWW-Authenticate` (RFC 9110 §15.5.2).
    MissingChallenge,
    /// A request without credentials is answered 401 with a challenge, not 403.
    ForbiddenWithoutCredentials,
    /// An authenticated caller who lacks permission gets 403, not 401.
    UnauthorizedForAuthenticated,
    /// An error is not a success: no 2xx with an error body.
    SuccessWithError,
    /// Rate limiting answers 429 (with `Retry-After`), not 403.
    ForbiddenForRateLimit,
    /// A 429 says when to come back (`Retry-After`, RFC 6585 §4).
    MissingRetryAfter,
    /// A 405 lists the allowed methods (`Allow`, RFC 9110 §15.5.6).
    MissingAllow,
    /// A 451 links to who blocked it (`Link: rel="blocked-by"`, RFC 7725).
    MissingBlockedBy,
    /// An access decision is never a 500.
    ServerError,
    /// For one caller, an existing object it may not see and a missing one look the same.
    ExistenceLeak,
    /// An identity the expectations exclude is allowed (broken function-level authorization).
    Bfla,
    /// One identity reaches another's object (broken object-level authorization).
    Bola,
    /// An operation that requires authentication answers 2xx without valid credentials.
    IgnoredAuthentication,
}

impl Rule {
    /// Every rule, in report order.
    pub const ALL: [Self; 13] = [
        Self::IgnoredAuthentication,
        Self::Bola,
        Self::Bfla,
        Self::ExistenceLeak,
        Self::SuccessWithError,
        Self::ServerError,
        Self::MissingChallenge,
        Self::ForbiddenWithoutCredentials,
        Self::UnauthorizedForAuthenticated,
        Self::ForbiddenForRateLimit,
        Self::MissingRetryAfter,
        Self::MissingAllow,
        Self::MissingBlockedBy,
    ];

    /// The stable id, as in JSON and JUnit.
    #[must_use]
    pub fn id(self) -> &'static str {
        match self {
            Self::MissingChallenge => "missing-challenge",
            Self::ForbiddenWithoutCredentials => "forbidden-without-credentials",
            Self::UnauthorizedForAuthenticated => "unauthorized-for-authenticated",
            Self::SuccessWithError => "success-with-error",
            Self::ForbiddenForRateLimit => "forbidden-for-rate-limit",
            Self::MissingRetryAfter => "missing-retry-after",
            Self::MissingAllow => "missing-allow",
            Self::MissingBlockedBy => "missing-blocked-by",
            Self::ServerError => "server-error",
            Self::ExistenceLeak => "existence-leak",
            Self::Bfla => "bfla",
            Self::Bola => "bola",
            Self::IgnoredAuthentication => "ignored-authentication",
        }
    }

    /// How serious breaking it is.
    #[must_use]
    pub fn severity(self) -> Severity {
        match self {
            Self::MissingChallenge
            | Self::ForbiddenWithoutCredentials
            | Self::UnauthorizedForAuthenticated
            | Self::ForbiddenForRateLimit
            | Self::MissingRetryAfter
            | Self::MissingAllow
            | Self::MissingBlockedBy => Severity::Low,
            Self::SuccessWithError | Self::ServerError | Self::ExistenceLeak => Severity::Medium,
            Self::Bfla | Self::Bola => Severity::High,
            Self::IgnoredAuthentication => Severity::Critical,
        }
    }

    /// The rule, as one sentence with its source.
    #[must_use]
    pub fn statement(self) -> &'static str {
        match self {
            Self::MissingChallenge => "a 401 must carry WWW-Authenticate (RFC 9110 §15.5.2)",
            Self::ForbiddenWithoutCredentials => {
                "a request without credentials is answered 401 with a challenge, not 403 (RFC 9110 §15.5.2, §15.5.4)"
            }
            Self::UnauthorizedForAuthenticated => {
                "an authenticated caller who lacks permission gets 403, not 401 (RFC 9110 §15.5.4; RFC 6750 §3.1 insufficient_scope)"
            }
            Self::SuccessWithError => {
                "an error is answered with a 4xx or 5xx status, not a 2xx with an error body (RFC 9110 §15.3, RFC 9457)"
            }
            Self::ForbiddenForRateLimit => {
                "rate limiting is answered 429 with Retry-After, not 403 (RFC 6585 §4)"
            }
            Self::MissingRetryAfter => "a 429 says when to retry with Retry-After (RFC 6585 §4)",
            Self::MissingAllow => "a 405 lists the allowed methods in Allow (RFC 9110 §15.5.6)",
            Self::MissingBlockedBy => "a 451 links rel=\"blocked-by\" (RFC 7725 §3)",
            Self::ServerError => "an access decision is never a 500",
            Self::ExistenceLeak => {
                "for one caller, an object it may not see answers like a missing one (both 404, or both 403)"
            }
            Self::Bfla => {
                "an identity the expectations exclude from an operation is refused (OWASP API5:2023)"
            }
            Self::Bola => "an identity cannot reach another identity's object (OWASP API1:2023)",
            Self::IgnoredAuthentication => {
                "an operation that requires authentication refuses requests without valid credentials (OWASP API2:2023)"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

/// An answer as received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (a bounded prefix of it).
    pub body: Vec<u8>,
}

impl Answer {
    /// A header as text, when present and visible ASCII.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<String> {
        header(&self.headers, name)
    }
}

pub(crate) fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
