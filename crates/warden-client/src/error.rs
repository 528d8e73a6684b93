//! The typed outcome of a refused call.

use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::challenge::BearerChallenge;
use crate::problem::Problem;

/// An error from a [`TokenSource`](crate::TokenSource), shared by every request that waited
/// on the same token fetch or refresh.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync>;

/// Why a call through the middleware did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 401 after the one refresh and retry (or one that must not be refreshed, such as
    /// `error="invalid_request"`).
    #[error("unauthorized (401){}", describe(problem.as_deref(), challenge.as_ref()))]
    Unauthorized {
        /// The problem document of the response, if it had one.
        problem: Option<Box<Problem>>,
        /// The response's first Bearer challenge, if it had one.
        challenge: Option<BearerChallenge>,
    },
    /// 403: the caller is known and may not. Never refreshed, never retried.
    #[error("forbidden (403){}", describe(problem.as_deref(), None))]
    Forbidden {
        /// The problem document of the response, if it had one.
        problem: Option<Box<Problem>>,
        /// The scopes the resource requires: the `scope` of an `insufficient_scope`
        /// challenge, else the problem's `required_scopes` member; empty when neither.
        required_scopes: Vec<String>,
    },
    /// 429 when the attempts ran out or the server asked for a wait beyond the cap.
    #[error("rate limited (429){}{}", after(*retry_after), describe(problem.as_deref(), None))]
    RateLimited {
        /// The wait the server asked for, if it said.
        retry_after: Option<Duration>,
        /// The problem document of the response, if it had one.
        problem: Option<Box<Problem>>,
    },
    /// 503 when the attempts ran out or the server asked for a wait beyond the cap.
    #[error("service unavailable (503){}{}", after(*retry_after), describe(problem.as_deref(), None))]
    Unavailable {
        /// The wait the server asked for, if it said.
        retry_after: Option<Duration>,
        /// The problem document of the response, if it had one.
        problem: Option<Box<Problem>>,
    },
    /// Any other status of 400 or more.
    #[error("HTTP {status}{}", describe(problem.as_deref(), None))]
    Status {
        /// The status of the response.
        status: StatusCode,
        /// The problem document of the response, if it had one.
        problem: Option<Box<Problem>>,
    },
    /// The token source failed to hand out the first token (or handed out one that cannot
    /// be sent in a header).
    #[error("no access token: {0}")]
    Token(#[source] SharedError),
    /// The token source failed to refresh a rejected token.
    #[error("refreshing the access token failed: {0}")]
    Refresh(#[source] SharedError),
    /// The request could not be sent or its answer not read.
    #[error(transparent)]
    Request(reqwest_middleware::Error),
}

impl Error {
    /// The problem document of the response, for the variants that have one.
    #[must_use]
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Unauthorized { problem, .. }
            | Self::Forbidden { problem, .. }
            | Self::RateLimited { problem, .. }
            | Self::Unavailable { problem, .. }
            | Self::Status { problem, .. } => problem.as_deref(),
            Self::Token(_) | Self::Refresh(_) | Self::Request(_) => None,
        }
    }

    /// The HTTP status of the response, for the variants that come from one.
    #[must_use]
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            Self::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
            Self::RateLimited { .. } => Some(StatusCode::TOO_MANY_REQUESTS),
            Self::Unavailable { .. } => Some(StatusCode::SERVICE_UNAVAILABLE),
            Self::Status { status, .. } => Some(*status),
            Self::Token(_) | Self::Refresh(_) => None,
            Self::Request(e) => e.status(),
        }
    }

    /// The wait the server asked for, on a 429 or 503.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } | Self::Unavailable { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }
}

/// A middleware stack's error: ours when the middleware raised one, else the transport's.
impl From<reqwest_middleware::Error> for Error {
    fn from(error: reqwest_middleware::Error) -> Self {
        match error {
            reqwest_middleware::Error::Middleware(e) => match e.downcast::<Self>() {
                Ok(ours) => ours,
                Err(other) => Self::Request(reqwest_middleware::Error::Middleware(other)),
            },
            other => Self::Request(other),
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(error: reqwest::Error) -> Self {
        Self::Request(reqwest_middleware::Error::Reqwest(error))
    }
}

fn describe(problem: Option<&Problem>, challenge: Option<&BearerChallenge>) -> String {
    let code = problem
        .and_then(|p| p.code.as_deref())
        .or_else(|| challenge.and_then(|c| c.error.as_deref()));
    let detail = problem
        .and_then(|p| p.detail.as_deref().or(p.title.as_deref()))
        .or_else(|| challenge.and_then(|c| c.error_description.as_deref()));
    match (code, detail) {
        (Some(code), Some(detail)) => format!(": {code}: {detail}"),
        (Some(text), None) | (None, Some(text)) => format!(": {text}"),
        (None, None) => String::new(),
    }
}

fn after(retry_after: Option<Duration>) -> String {
    retry_after
        .map(|d| format!(", retry after {} s", d.as_secs_f64().ceil()))
        .unwrap_or_default()
}
