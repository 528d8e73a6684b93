//! What the engine decides: a [`Decision`] with a typed [`Reason`] for every refusal.
//!
//! Reasons are small typed values; [`crate::response`] is the one place that turns them
//! into status, headers and body.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

pub use crate::auth::mtls::CertificateProblem;
use crate::identity::Identity;

/// The pipeline stages, in the order a request meets them (`pipeline::run`). A decision
/// names the stage that ended it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Canonical path and header hygiene.
    Normalize,
    /// Client address and network rules.
    Network,
    /// Method and path template to route.
    Route,
    /// CORS preflights.
    Cors,
    /// Body limits and the WAF.
    Hygiene,
    /// Bans and rate limits (before identity, and after it with the revocation).
    RateLimit,
    /// Credentials to a verified identity.
    Authenticate,
    /// Cross-site request forgery checks on cookie-authenticated unsafe requests.
    Csrf,
    /// Identity against the route's requirements.
    Authorize,
    /// The request is allowed and goes to the upstream.
    Forward,
}

impl Stage {
    /// The stable name of the stage, as it appears in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normalize => "normalize",
            Self::Network => "network",
            Self::RateLimit => "rate_limit",
            Self::Route => "route",
            Self::Hygiene => "hygiene",
            Self::Cors => "cors",
            Self::Authenticate => "authenticate",
            Self::Csrf => "csrf",
            Self::Authorize => "authorize",
            Self::Forward => "forward",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a bearer or cookie token was not accepted. Each maps to `error="invalid_token"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenProblem {
    /// Not three base64url parts, or a part that does not decode to JSON.
    Garbled,
    /// Longer than the source's size limit.
    TooLarge,
    /// The `alg` is `none` or not one the source pins.
    AlgorithmNotAllowed,
    /// The header carries a key or key location (`jwk`, `jku`, `x5u`, `x5c`).
    EmbeddedKey,
    /// The header has `crit` extensions warden does not understand.
    UnsupportedCritical,
    /// No configured key has the token's `kid` (or no key fits the algorithm).
    UnknownKey,
    /// The signature does not verify.
    BadSignature,
    /// `exp` is in the past (beyond leeway).
    Expired,
    /// `nbf` is in the future (beyond leeway).
    NotYetValid,
    /// The issuer is not the configured one.
    WrongIssuer,
    /// The audience is not one of the configured ones.
    WrongAudience,
    /// A claim the source requires (such as `exp` or `sub`) is missing or malformed.
    MissingClaim,
    /// The token, or every token of its subject issued before a time, was revoked.
    Revoked,
    /// An ID token's `nonce` is not the one the login sent.
    WrongNonce,
    /// An ID token's `at_hash` does not match the access token it came with.
    WrongAccessTokenHash,
}

impl TokenProblem {
    /// The `error_description` sent with `error="invalid_token"` (RFC 6750 §3).
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            Self::Garbled => "The access token is malformed",
            Self::TooLarge => "The access token is too large",
            Self::AlgorithmNotAllowed => "The token's signing algorithm is not accepted",
            Self::EmbeddedKey => "Keys embedded in or referenced by the token are not accepted",
            Self::UnsupportedCritical => {
                "The token has critical header parameters that are not supported"
            }
            Self::UnknownKey => "The token was signed by an unknown key",
            Self::BadSignature => "The token signature is invalid",
            Self::Expired => "The access token expired",
            Self::NotYetValid => "The access token is not yet valid",
            Self::WrongIssuer => "The token issuer is not accepted",
            Self::WrongAudience => "The token audience is not accepted",
            Self::MissingClaim => "The token lacks a required claim",
            Self::Revoked => "The access token was revoked",
            Self::WrongNonce => "The ID token does not belong to this login",
            Self::WrongAccessTokenHash => "The ID token does not match its access token",
        }
    }

    /// The stable code of the problem, as it appears in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Garbled => "garbled",
            Self::TooLarge => "too_large",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::EmbeddedKey => "embedded_key",
            Self::UnsupportedCritical => "unsupported_crit",
            Self::UnknownKey => "unknown_key",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::Revoked => "revoked",
            Self::WrongNonce => "wrong_nonce",
            Self::WrongAccessTokenHash => "wrong_at_hash",
        }
    }
}

/// Why a request was refused. Each reason has one status and one stable code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The request line or a header is malformed or ambiguous.
    MalformedRequest {
        /// What was wrong, safe to show to the client.
        detail: &'static str,
    },
    /// No route has this path.
    RouteNotFound,
    /// A route has this path, but not for this method.
    MethodNotAllowed {
        /// The methods the path accepts, for the `Allow` header.
        allow: Vec<Method>,
    },
    /// The credentials are syntactically malformed (RFC 6750 `invalid_request`).
    MalformedCredentials {
        /// What was wrong, safe to show to the client.
        detail: &'static str,
    },
    /// The route needs credentials and none were sent.
    NoCredentials,
    /// A bearer or cookie token was sent and is not acceptable.
    InvalidToken(TokenProblem),
    /// An API key or a user name and password were sent and do not match.
    InvalidCredentials,
    /// The client certificate of the connection was presented to an `mtls` source and is
    /// not acceptable (another CA, expired, not for client authentication...).
    InvalidCertificate(crate::auth::mtls::CertificateProblem),
    /// A network rule denies the client address.
    AddressDenied {
        /// Which rule list (`global` or the route's) and the rule's position, for the log.
        list: &'static str,
        /// The rule's position in its list.
        rule: u32,
    },
    /// A geo rule denies the client's country (403, or 451 for a legal block).
    GeoDenied {
        /// The country, when known (log only).
        country: Option<String>,
        /// The legal notice of a 451.
        blocked_by: Option<Arc<str>>,
    },
    /// The identity lacks every role the route accepts.
    MissingRole {
        /// The roles any one of which would be enough.
        needed: Vec<String>,
        /// The roles the caller has.
        held: Vec<String>,
    },
    /// The identity lacks OAuth scopes the route requires (RFC 6750 `insufficient_scope`).
    InsufficientScope {
        /// All scopes the route requires.
        required: Vec<String>,
        /// The required scopes the caller lacks.
        missing: Vec<String>,
    },
    /// A Cedar `forbid` policy matched.
    PolicyForbids {
        /// The policies that forbade it (log only, never in a body).
        policies: Vec<String>,
    },
    /// No Cedar `permit` policy matched (Cedar's default deny, which has no reason of its own).
    NoPolicyPermits,
    /// Policy evaluation failed; denied, fail closed.
    PolicyError {
        /// Cedar's errors (log only).
        errors: Vec<String>,
    },
    /// A rate limit is exceeded (429).
    RateLimited {
        /// The limit's name.
        policy: Arc<str>,
        /// Seconds until a request would conform.
        retry_after_secs: u64,
    },
    /// The client is banned after a burst of refusals (429).
    Banned {
        /// Seconds left of the ban.
        retry_after_secs: u64,
    },
    /// The state backend could not answer and the fail mode is closed (503).
    StateUnavailable,
    /// The body is larger than the route allows (413).
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The WAF found an attack (403; the rule goes to the log only).
    WafBlocked(crate::hygiene::Detection),
    /// A cookie-authenticated unsafe request failed the CSRF checks (403).
    CsrfRejected {
        /// Why (log only).
        detail: &'static str,
    },
    /// A CORS preflight was refused (403, no CORS headers).
    CorsRejected {
        /// Why (log only).
        detail: &'static str,
    },
    /// A browser navigation without a (valid) session on a route of an `oidc` source: 302
    /// to warden's login start, which sends the browser to the provider. API clients get
    /// [`Reason::NoCredentials`] or [`Reason::Session`] instead.
    LoginRequired {
        /// The source to sign in with.
        source: Arc<str>,
        /// Where to come back to: the request's own canonical path and query.
        return_to: String,
        /// Why there was no session to use (`None`: no session cookie at all).
        problem: Option<crate::session::SessionProblem>,
    },
    /// A session cookie was sent and is not acceptable (401).
    Session(crate::session::SessionProblem),
    /// The sign-in could not be completed: the callback's state, code, PKCE or ID token did
    /// not check out, or the return target is not a same-origin path (400).
    LoginFailed {
        /// Why, safe to show.
        detail: &'static str,
    },
}

impl Reason {
    /// The HTTP status this reason is answered with (before concealment).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MalformedRequest { .. }
            | Self::MalformedCredentials { .. }
            | Self::LoginFailed { .. } => StatusCode::BAD_REQUEST,
            Self::LoginRequired { .. } => StatusCode::FOUND,
            Self::Session(_) => StatusCode::UNAUTHORIZED,
            Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::NoCredentials
            | Self::InvalidToken(_)
            | Self::InvalidCredentials
            | Self::InvalidCertificate(_) => StatusCode::UNAUTHORIZED,
            Self::MissingRole { .. }
            | Self::AddressDenied { .. }
            | Self::InsufficientScope { .. }
            | Self::PolicyForbids { .. }
            | Self::NoPolicyPermits
            | Self::PolicyError { .. }
            | Self::WafBlocked(_)
            | Self::CsrfRejected { .. }
            | Self::CorsRejected { .. } => StatusCode::FORBIDDEN,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::GeoDenied {
                blocked_by: Some(_),
                ..
            } => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            Self::GeoDenied {
                blocked_by: None, ..
            } => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } | Self::Banned { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::StateUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable machine-readable code (the problem document's `code` member).
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::MalformedRequest { .. } => "bad_request",
            Self::RouteNotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::MalformedCredentials { .. } => "invalid_request",
            Self::NoCredentials => "unauthenticated",
            Self::InvalidToken(_) => "invalid_token",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidCertificate(_) => "invalid_certificate",
            Self::MissingRole { .. }
            | Self::AddressDenied { .. }
            | Self::PolicyForbids { .. }
            | Self::NoPolicyPermits
            | Self::PolicyError { .. } => "forbidden",
            Self::InsufficientScope { .. } => "insufficient_scope",
            Self::BodyTooLarge { .. } => "content_too_large",
            Self::WafBlocked(_) => "request_rejected",
            Self::CsrfRejected { .. } => "csrf_rejected",
            Self::CorsRejected { .. } => "cors_rejected",
            Self::GeoDenied {
                blocked_by: Some(_),
                ..
            } => "unavailable_for_legal_reasons",
            Self::GeoDenied {
                blocked_by: None, ..
            } => "forbidden",
            Self::RateLimited { .. } => "rate_limited",
            Self::Banned { .. } => "too_many_failures",
            Self::StateUnavailable => "temporarily_unavailable",
            Self::LoginRequired { .. } => "login_required",
            Self::Session(_) => "invalid_session",
            Self::LoginFailed { .. } => "login_failed",
        }
    }

    /// The detail of the reason for logs: more specific than any body is allowed to be.
    #[must_use]
    pub fn log_detail(&self) -> String {
        match self {
            Self::MalformedRequest { detail }
            | Self::MalformedCredentials { detail }
            | Self::CsrfRejected { detail }
            | Self::CorsRejected { detail }
            | Self::LoginFailed { detail } => (*detail).to_owned(),
            Self::Session(problem) => problem.stage_note().to_owned(),
            Self::LoginRequired {
                source, problem, ..
            } => match problem {
                None => format!("no session → redirect to login with `{source}`"),
                Some(p) => format!("{} → redirect to login with `{source}`", p.stage_note()),
            },
            Self::BodyTooLarge { limit } => format!("body larger than {limit} bytes"),
            Self::WafBlocked(detection) => detection.describe(),
            Self::InvalidToken(problem) => problem.as_str().to_owned(),
            Self::InvalidCertificate(problem) => format!("client certificate {}", problem.as_str()),
            Self::MissingRole { needed, held } => {
                format!(
                    "needs role {}; caller has {}",
                    needed.join(" or "),
                    list_or_none(held)
                )
            }
            Self::InsufficientScope { missing, .. } => {
                format!("missing scope {}", missing.join(" "))
            }
            Self::MethodNotAllowed { allow } => {
                let allow: Vec<&str> = allow.iter().map(Method::as_str).collect();
                format!("allowed methods {}", allow.join(", "))
            }
            Self::AddressDenied { list, rule } => {
                format!("address denied by {list} network rule {rule}")
            }
            Self::PolicyForbids { policies } => {
                format!("forbidden by policy {}", policies.join(", "))
            }
            Self::NoPolicyPermits => "no policy permits this request".to_owned(),
            Self::PolicyError { errors } => {
                format!("policy evaluation failed (denied): {}", errors.join("; "))
            }
            Self::RateLimited {
                policy,
                retry_after_secs,
            } => {
                format!("limit {policy} exceeded; retry after {retry_after_secs}s")
            }
            Self::Banned { retry_after_secs } => format!("banned for {retry_after_secs}s more"),
            Self::GeoDenied { country, .. } => {
                format!(
                    "country {} denied by a geo rule",
                    country.as_deref().unwrap_or("unknown")
                )
            }
            Self::RouteNotFound
            | Self::StateUnavailable
            | Self::NoCredentials
            | Self::InvalidCredentials => self.code().to_owned(),
        }
    }
}

pub(crate) fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// How much a refusal's body may say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verbosity {
    /// The class of refusal and the decision id only.
    #[default]
    Public,
    /// Also the missing role or scope, for APIs used by trusted teams.
    Internal,
}

/// An authentication scheme the route accepts, for its `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `Basic` (RFC 7617).
    Basic,
    /// An API key in a named header (no registered scheme: `ApiKey header="…"`).
    ApiKey {
        /// The header the key is read from.
        header: Arc<str>,
    },
    /// A session cookie carrying a token (`Cookie cookie-name="…"`).
    Cookie {
        /// The cookie the token is read from.
        name: Arc<str>,
    },
    /// The client certificate of the TLS connection (`ClientCertificate realm="…"`). No
    /// scheme is registered for it: RFC 8120's `Mutual` is a password-based protocol, and a
    /// 401 must carry at least one challenge (RFC 9110 §15.5.2), so warden names it as it
    /// names API keys.
    ClientCertificate,
}

/// A unique id for each decision, sent in the problem's `instance` and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DecisionId(uuid::Uuid);

impl DecisionId {
    /// A fresh, time-ordered id. `Uuid::now_v7` orders ids through one process-wide
    /// mutex; each thread has its own context instead (ids stay unique: 74 bits of counter and randomness after the millisecond;
    /// ordered per thread, and across threads by millisecond).
    #[must_use]
    pub fn new() -> Self {
        thread_local! {
            static CONTEXT: uuid::timestamp::context::ContextV7 =
                const { uuid::timestamp::context::ContextV7::new() };
        }
        Self(CONTEXT.with(|context| uuid::Uuid::new_v7(uuid::Timestamp::now(context))))
    }
}

impl Default for DecisionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for DecisionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.as_hyphenated(), f)
    }
}

/// Headers to change on the way to the upstream.
#[derive(Debug, Clone, Default)]
pub struct ForwardHeaders {
    /// Headers removed from the client's request (identity headers it must not set).
    pub remove: Arc<[HeaderName]>,
    /// Cookies removed from the client's request: warden's own session and sign-in cookies,
    /// which hold a session's credential and are no business of the upstream's.
    pub remove_cookies: Arc<[Arc<str>]>,
    /// Headers warden sets, after removal, from the verified identity.
    pub add: Vec<(HeaderName, HeaderValue)>,
}

/// Remove every field whose name `doomed` picks. The map is read once and only the names
/// it holds are removed: a request rarely carries any of them, and each `remove` hashes its
/// name, so asking for every doomed name in turn costs more than this scan of the few the
/// request has.
pub fn remove_present(headers: &mut HeaderMap, doomed: impl Fn(&HeaderName) -> bool) {
    let present: Vec<HeaderName> = headers.keys().filter(|n| doomed(n)).cloned().collect();
    for name in &present {
        headers.remove(name);
    }
}

impl ForwardHeaders {
    /// Apply the changes to the request's headers: the identity headers the client sent
    /// out, warden's own cookies out, warden's identity headers in.
    pub fn apply(&self, headers: &mut HeaderMap) {
        remove_present(headers, |name| self.remove.contains(name));
        self.apply_removed(headers);
    }

    /// [`ForwardHeaders::apply`] for a caller that has removed the [`ForwardHeaders::remove`]
    /// names already, in its own pass over the headers.
    pub fn apply_removed(&self, headers: &mut HeaderMap) {
        self.strip_cookies(headers);
        for (name, value) in &self.add {
            headers.insert(name.clone(), value.clone());
        }
    }

    /// Every `Cookie` field rewritten without warden's own cookies (see
    /// [`ForwardHeaders::cookie_change`]).
    fn strip_cookies(&self, headers: &mut HeaderMap) {
        match self.cookie_change(headers) {
            CookieChange::Keep => {}
            CookieChange::Remove => {
                headers.remove(http::header::COOKIE);
            }
            CookieChange::Replace(value) => {
                headers.insert(http::header::COOKIE, value);
            }
        }
    }

    /// What becomes of the request's `Cookie` fields on the way to the upstream: the
    /// fields (HTTP/2 may send one per cookie) become one without warden's own cookies, and
    /// none when nothing is left. A field that is not text cannot be split with certainty,
    /// so it is dropped whole. A request that carries none of warden's cookies keeps its
    /// fields as they are, and costs no allocation.
    ///
    /// Front ends that do not forward the request themselves (forward-auth, `ext_authz`)
    /// tell the other proxy what to send instead.
    #[must_use]
    pub fn cookie_change(&self, headers: &HeaderMap) -> CookieChange {
        if self.remove_cookies.is_empty() {
            return CookieChange::Keep;
        }
        let own = |pair: &str| {
            crate::request::cookie_pair(pair)
                .is_some_and(|(n, _)| self.remove_cookies.iter().any(|c| **c == *n))
        };
        let touched = headers
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| v.to_str().map_or(true, |t| t.split(';').any(own)));
        if !touched {
            return CookieChange::Keep;
        }
        let kept: Vec<&str> = headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|t| t.split(';'))
            .map(str::trim)
            .filter(|p| !p.is_empty() && !own(p))
            .collect();
        match HeaderValue::from_str(&kept.join("; ")) {
            Ok(v) if !v.is_empty() => CookieChange::Replace(v),
            _ => CookieChange::Remove,
        }
    }
}

/// What becomes of a request's `Cookie` fields on the way to the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CookieChange {
    /// They go as the client sent them.
    Keep,
    /// They become this one field.
    Replace(HeaderValue),
    /// None goes: the request carried only warden's cookies (or fields that are not text).
    Remove,
}

/// An allowed request: where it goes and what warden adds.
#[derive(Debug, Clone)]
pub struct Allow {
    /// The upstream's name in the configuration.
    pub upstream: Arc<str>,
    /// The normalized path and query to send: exactly what was authorized.
    pub path_and_query: String,
    /// The verified identity, if the route authenticates.
    pub identity: Option<Identity>,
    /// Header changes for the upstream request.
    pub headers: ForwardHeaders,
    /// Whether the route is concealed (the upstream's own 404 is replaced by the canonical one).
    pub concealed: bool,
    /// The route's body limit: the driver enforces it while streaming the body (413 above).
    pub body_limit: u64,
}

/// A refused request.
#[derive(Debug, Clone)]
pub struct Deny {
    /// Why it was refused.
    pub reason: Reason,
    /// The challenges for the route's accepted schemes (sent on 401, and on 400/403 for Bearer errors).
    pub challenges: Vec<Scheme>,
    /// How much the body may say.
    pub verbosity: Verbosity,
    /// Whether the refusal must look exactly like an unknown path.
    pub concealed: bool,
    /// The identity, when one was verified before the refusal (for the log).
    pub identity: Option<Identity>,
}

/// Either outcome.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Verdict {
    /// Forward to the upstream.
    Allow(Allow),
    /// Answer with a refusal.
    Deny(Deny),
    /// Answer a CORS preflight (204 with the grant in [`Decision::cors`]); nothing is
    /// forwarded.
    Preflight,
}

/// One decision of the engine.
#[derive(Debug, Clone)]
pub struct Decision {
    /// Unique id, logged and sent as the problem `instance`.
    pub id: DecisionId,
    /// The stage that ended the pipeline (`Forward` for an allow).
    pub stage: Stage,
    /// The route's name, when the path matched one.
    pub route: Option<Arc<str>>,
    /// Allow or deny.
    pub verdict: Verdict,
    /// How long the decision took.
    pub elapsed: Duration,
    /// The Cedar policies that decided (empty when Cedar was not consulted or none matched).
    pub policies: Vec<String>,
    /// Where shadow policies disagreed with the active ones (never enforced).
    pub shadow: Option<crate::authz::ShadowDisagreement>,
    /// The client address: the peer, or what trusted proxies reported.
    pub client: std::net::IpAddr,
    /// The rate limits applied, for the `RateLimit` headers.
    pub limits: Vec<crate::limit::Applied>,
    /// The state backend could not answer and the fail mode let the request through.
    pub state_unavailable: bool,
    /// WAF findings of a detect-only route (logged, not enforced).
    pub detections: Vec<crate::hygiene::Detection>,
    /// CORS headers to add to whatever answers the request (an allowed origin only).
    pub cors: Option<crate::hygiene::CorsGrant>,
    /// How many times the path was looked up in the router (one for a routed request).
    #[doc(hidden)]
    pub path_lookups: u32,
}

impl Decision {
    /// Whether the request is allowed.
    #[must_use]
    pub fn is_allowed(&self) -> bool {
        matches!(self.verdict, Verdict::Allow(_))
    }

    /// The refusal reason, if denied.
    #[must_use]
    pub fn reason(&self) -> Option<&Reason> {
        match &self.verdict {
            Verdict::Deny(deny) => Some(&deny.reason),
            Verdict::Allow(_) | Verdict::Preflight => None,
        }
    }

    /// The identity, verified or not yet refused, if any.
    #[must_use]
    pub fn identity(&self) -> Option<&Identity> {
        match &self.verdict {
            Verdict::Allow(allow) => allow.identity.as_ref(),
            Verdict::Deny(deny) => deny.identity.as_ref(),
            Verdict::Preflight => None,
        }
    }

    /// The status the client will see (a concealed refusal is a 404).
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match &self.verdict {
            Verdict::Allow(_) => StatusCode::OK,
            Verdict::Preflight => StatusCode::NO_CONTENT,
            Verdict::Deny(deny) if deny.concealed => StatusCode::NOT_FOUND,
            Verdict::Deny(deny) => deny.reason.status(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::{HeaderMap, HeaderValue, header};

    use super::{DecisionId, ForwardHeaders};

    fn stripping(cookies: &[&'static [u8]]) -> Vec<String> {
        let forward = ForwardHeaders {
            remove_cookies: Arc::from([
                Arc::from("__Host-warden"),
                Arc::from("__Host-warden_login"),
            ]),
            ..ForwardHeaders::default()
        };
        let mut headers = HeaderMap::new();
        for c in cookies {
            headers.append(header::COOKIE, HeaderValue::from_bytes(c).unwrap());
        }
        forward.apply(&mut headers);
        headers
            .get_all(header::COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn warden_cookies_never_reach_the_upstream() {
        assert_eq!(
            stripping(&[b"a=1; __Host-warden=sealed; b=2"]),
            ["a=1; b=2"]
        );
        // HTTP/2 sends a field per cookie; spaces around the name change nothing.
        assert_eq!(
            stripping(&[b"a=1", b" __Host-warden_login =x", b"b=2"]),
            ["a=1; b=2"]
        );
        assert!(stripping(&[b"__Host-warden=sealed"]).is_empty());
        // A field that is not text cannot be split with certainty: it goes whole.
        assert_eq!(stripping(&[b"a=1", b"__Host-warden=\xff\xfe"]), ["a=1"]);
        // Similar names and values that merely contain the name stay.
        assert_eq!(
            stripping(&[b"__Host-wardenx=1; c=__Host-warden=2"]),
            ["__Host-wardenx=1; c=__Host-warden=2"]
        );
        // Without warden's cookies the fields are left exactly as sent.
        assert_eq!(stripping(&[b"a=1", b"b=2"]), ["a=1", "b=2"]);
    }

    #[test]
    fn decision_ids_are_unique_across_threads_and_ordered_within_one() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| (0..20_000).map(|_| DecisionId::new()).collect::<Vec<_>>())
            })
            .collect();
        let mut all = std::collections::HashSet::new();
        for thread in threads {
            let ids = thread.join().unwrap();
            assert!(
                ids.windows(2).all(|w| w[0].0 < w[1].0),
                "ordered per thread"
            );
            for id in ids {
                assert!(all.insert(id), "{id} twice");
            }
        }
        assert_eq!(all.len(), 80_000);
    }
}
