//! warden-core: the sans-IO decision engine of warden.
//!
//! One call, [`Engine::decide`], takes a [`RequestView`] and the time, and returns a
//! [`Decision`]: allow (with the verified identity and the headers to forward) or deny (with
//! a typed [`Reason`]). [`response`] turns refusals into responses. No sockets, no runtime.
//!
//! A front end with state, bodies and slow work to hand out calls [`drive`] with its
//! [`Host`] instead: the engine says what it [`Need`]s (the body for the WAF, state checks,
//! a password check, a key refresh), the host answers, and the pipeline resumes at the stage
//! that asked. The gateway, its forward-auth and `ext_authz` endpoints and the tower layer
//! are such hosts; the CLI uses [`Engine::decide`] and [`Engine::explain`].
//!
//! ```
//! use std::path::Path;
//! use std::time::SystemTime;
//! use warden_core::{Config, Engine, RequestView};
//!
//! let config = Config::parse(r#"
//! [upstreams.app]
//! url = "http://127.0.0.1:3000"
//! [[routes]]
//! path = "/public"
//! upstream = "app"
//! "#, Path::new("example.toml")).unwrap();
//! let engine = Engine::new(config);
//! let headers = http::HeaderMap::new();
//! let request = RequestView::new(&http::Method::GET, "/public", &headers, [127, 0, 0, 1].into());
//! assert!(engine.decide(&request, SystemTime::now()).is_allowed());
//! let request = RequestView::new(&http::Method::GET, "/nowhere", &headers, [127, 0, 0, 1].into());
//! assert_eq!(engine.decide(&request, SystemTime::now()).status(), http::StatusCode::NOT_FOUND);
//! ```

#![deny(missing_docs)]

pub mod auth;
mod authz;
pub mod body;
pub mod config;
pub mod decision;
mod driver;
#[doc(hidden)]
pub mod fuzzing;
pub mod hygiene;
pub mod identity;
pub mod limit;
pub mod network;
mod normalize;
mod pipeline;
mod protocol;
pub mod request;
pub mod response;
mod route;
pub mod session;

use std::time::{SystemTime, UNIX_EPOCH};

pub use auth::{PasswordCheck, PasswordVerdict};
pub use authz::ShadowDisagreement;
pub use config::{Config, ConfigError, ConfigErrors};
pub use decision::{Decision, DecisionId, Reason, Stage, Verdict};
pub use driver::{Host, drive};
pub use identity::Identity;
pub use limit::{StateAnswer, StateCheck, StateUnavailable};
pub use protocol::{Answer, BodyRead, Need, Pending, Progress};
pub use request::RequestView;
pub use route::Route;

use pipeline::{Ctx, Mode};

/// The decision engine for one configuration. Cheap to share behind an `Arc`; a reload
/// builds a new engine and swaps it whole.
#[derive(Debug)]
pub struct Engine {
    config: Config,
}

impl Engine {
    /// An engine for a checked configuration. Cedar policies are sliced by the routes'
    /// actions here, once.
    #[must_use]
    pub fn new(mut config: Config) -> Self {
        if let Some(authz) = &mut config.authorization {
            authz.slice(config.router.routes().iter().map(|r| &r.target.action));
        }
        Self { config }
    }

    /// The configuration the engine decides with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Forget every verified token of every JWT source; call it after a revocation. (A hit
    /// never skips the revocation check; flushing keeps a revoked token from even being
    /// remembered as verified.)
    pub fn flush_token_cache(&self) {
        for source in self.config.sources.values() {
            match source.as_ref() {
                auth::Source::Jwt(jwt) => jwt.cache.flush(),
                auth::Source::Mtls(mtls) => mtls.cache.flush(),
                _ => {}
            }
        }
    }

    /// Verify a token with the named JWT source at `now`, without reading or filling the
    /// verified-token cache: for tools and measurements. `None` when no JWT source has
    /// that name.
    #[must_use]
    pub fn verify_token(
        &self,
        source: &str,
        token: &str,
        now: SystemTime,
    ) -> Option<Result<Identity, decision::TokenProblem>> {
        let auth::Source::Jwt(jwt) = self.config.sources.get(source)?.as_ref() else {
            return None;
        };
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let kind = if jwt.cookie.is_some() {
            identity::CredentialKind::Cookie
        } else {
            identity::CredentialKind::Bearer
        };
        Some(jwt.verify_uncached(token, now, kind).map(|(id, _)| id))
    }

    /// Decide one request at time `now`, without a driver: rate limits, bans and
    /// revocations are not evaluated, the WAF reads only a body the view carries, and
    /// passwords are checked in this call. Front ends use [`drive`] instead.
    #[must_use]
    pub fn decide(&self, request: &RequestView<'_>, now: SystemTime) -> Decision {
        let mut cx = Ctx::new(request, now, Mode::Alone);
        self.run(request, &mut cx, &mut None)
            .unwrap_or_else(|_| self.unavailable(request, now))
    }

    /// Start deciding one request with a driver. The engine either decides or says what it
    /// [`Need`]s; answer it and call [`Engine::resume`] until it decides. [`drive`] is
    /// that loop.
    pub fn begin<'e>(&'e self, request: &RequestView<'_>, now: SystemTime) -> Progress<'e> {
        let cx = Ctx::new(request, now, Mode::Driven);
        self.step(request, cx, None)
    }

    /// Continue a decision with the driver's answer to its need. Only the stages from the
    /// one that asked run again.
    pub fn resume<'e>(
        &'e self,
        request: &RequestView<'_>,
        pending: Pending<'e>,
        answer: Answer,
    ) -> Progress<'e> {
        let Pending {
            mut cx,
            routed,
            need,
        } = pending;
        cx.asked = Some((need, answer));
        self.step(request, cx, routed)
    }

    /// A refusal a front end makes before the pipeline can run (a malformed forward-auth
    /// question, a peer that may not ask): a decision like any other, with its own id, so it
    /// is logged, counted and rendered as every refusal is.
    #[must_use]
    pub fn refuse(
        &self,
        request: &RequestView<'_>,
        now: SystemTime,
        stage: Stage,
        reason: Reason,
    ) -> Decision {
        Ctx::new(request, now, Mode::Alone).decision(pipeline::Outcome::deny(stage, None, reason))
    }

    /// A refusal for a request the driver could not finish deciding (the state backend or
    /// the runtime failed): 503, never an allow.
    #[must_use]
    pub fn unavailable(&self, request: &RequestView<'_>, now: SystemTime) -> Decision {
        Ctx::new(request, now, Mode::Alone).decision(pipeline::Outcome::deny(
            Stage::RateLimit,
            None,
            Reason::StateUnavailable,
        ))
    }

    /// Decide one request and record every stage it went through. With `assume`, the
    /// credentials are not verified and the given identity is taken instead (for
    /// `warden explain` and `warden test`). Rate limits are not evaluated.
    #[must_use]
    pub fn explain(
        &self,
        request: &RequestView<'_>,
        now: SystemTime,
        assume: Option<Identity>,
    ) -> Explanation {
        let mut cx = Ctx::new(request, now, Mode::Alone);
        cx.assume = assume;
        cx.trace = Some(Vec::new());
        let decision = self
            .run(request, &mut cx, &mut None)
            .unwrap_or_else(|_| self.unavailable(request, now));
        let mut hints = std::mem::take(&mut cx.hints);
        if let Some(reason) = decision.reason() {
            hints.extend(hint(reason));
        }
        Explanation {
            decision,
            steps: cx.trace.take().unwrap_or_default(),
            hints,
        }
    }

    fn step<'e>(
        &'e self,
        request: &RequestView<'_>,
        mut cx: Ctx,
        mut routed: Option<pipeline::Routed<'e>>,
    ) -> Progress<'e> {
        match self.run(request, &mut cx, &mut routed) {
            Ok(decision) => Progress::Decided(decision),
            Err(need) => Progress::Needs(Pending { cx, routed, need }),
        }
    }

    /// The stages, from where `cx` stands: a decision, or what the driver must answer.
    fn run<'e>(
        &'e self,
        request: &RequestView<'_>,
        cx: &mut Ctx,
        routed: &mut Option<pipeline::Routed<'e>>,
    ) -> Result<Decision, Need> {
        match pipeline::run(&self.config, request, cx, routed) {
            Ok(outcome) => Ok(cx.decision(outcome)),
            Err(pipeline::Stop::Done(outcome)) => Ok(cx.decision(*outcome)),
            Err(pipeline::Stop::Need(need)) => Err(need),
        }
    }
}

/// What a client could do about a refusal, for explanations.
fn hint(reason: &Reason) -> Option<String> {
    Some(match reason {
        Reason::MalformedRequest { .. } => "send an unambiguous request target".to_owned(),
        Reason::RouteNotFound => "no route has this path; check the path or the routes".to_owned(),
        Reason::MethodNotAllowed { allow } => {
            let allow: Vec<&str> = allow.iter().map(http::Method::as_str).collect();
            format!("use one of: {}", allow.join(", "))
        }
        Reason::MalformedCredentials { .. } => "send exactly one well-formed credential".to_owned(),
        Reason::NoCredentials => "send credentials of a scheme the route accepts".to_owned(),
        Reason::InvalidToken(p) => {
            format!("get a valid token ({})", p.description().to_lowercase())
        }
        Reason::InvalidCredentials => "send a valid key or user name and password".to_owned(),
        Reason::InvalidCertificate(p) => format!(
            "present a valid client certificate of the source's CA ({})",
            p.description().to_lowercase()
        ),
        Reason::GeoDenied { .. } => "the client's country is denied by a geo rule".to_owned(),
        Reason::AddressDenied { .. } => "the client address is denied by a network rule".to_owned(),
        Reason::MissingRole { needed, held } => {
            format!(
                "needs role {}; the caller has {}",
                needed.join(" or "),
                decision::list_or_none(held)
            )
        }
        Reason::InsufficientScope { missing, .. } => format!("needs scope {}", missing.join(" ")),
        Reason::RateLimited {
            retry_after_secs, ..
        }
        | Reason::Banned { retry_after_secs } => {
            format!("wait {retry_after_secs}s (Retry-After) before retrying")
        }
        Reason::StateUnavailable => "retry shortly; the state backend is unreachable".to_owned(),
        Reason::PolicyError { .. } => {
            "fix the policy or the attributes it reads (see the errors)".to_owned()
        }
        Reason::BodyTooLarge { limit } => format!("send a body of at most {limit} bytes"),
        Reason::CsrfRejected { .. } => {
            "send the request from the site itself (same-origin Origin or Sec-Fetch-Site)"
                .to_owned()
        }
        Reason::CorsRejected { .. } => {
            "add the origin, method or header to the CORS configuration".to_owned()
        }
        Reason::LoginRequired { .. } => "sign in: the browser is sent to the provider".to_owned(),
        Reason::Session(p) => format!("sign in again ({})", p.description().to_lowercase()),
        Reason::LoginFailed { .. } => "start the sign-in again from the page".to_owned(),
        Reason::WafBlocked(_) | Reason::PolicyForbids { .. } | Reason::NoPolicyPermits => {
            return None;
        }
    })
}

/// One stage of an explained decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The stage.
    pub stage: Stage,
    /// Whether the request passed it.
    pub passed: bool,
    /// What the stage saw or decided.
    pub note: String,
}

/// A decision with the stages it went through.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The decision.
    pub decision: Decision,
    /// Every stage reached, in order.
    pub steps: Vec<Step>,
    /// What would change the answer.
    pub hints: Vec<String>,
}
