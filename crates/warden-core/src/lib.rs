//! warden-core: the sans-IO decision engine of warden.
//!
//! One call, [`Engine::decide`], takes a [`RequestView`] and the time, and returns a
//! [`Decision`]: allow (with the verified identity and the headers to forward) or deny (with
//! a typed [`Reason`]). [`response`] turns refusals into responses. No sockets, no runtime:
//! the gateway, the tower layer and the CLI all drive this same engine.
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

pub mod auth;
mod authz;
pub mod config;
pub mod decision;
#[doc(hidden)]
pub mod fuzzing;
pub mod hygiene;
pub mod identity;
pub mod limit;
pub mod network;
pub mod normalize;
mod pipeline;
pub mod request;
pub mod response;
pub mod route;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use authz::ShadowDisagreement;
pub use config::{Config, ConfigError, ConfigErrors};
pub use decision::{Decision, DecisionId, Reason, Stage, Verdict};
pub use identity::Identity;
pub use limit::{StateAnswer, StateCheck, StateUnavailable};
pub use pipeline::Step;
pub use request::RequestView;

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
            if let auth::Source::Jwt(jwt) = source.as_ref() {
                jwt.cache.flush();
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

    /// Decide one request at time `now`, without a state backend: rate limits, bans and
    /// revocations are not evaluated. The gateway uses [`Engine::begin`] instead.
    #[must_use]
    pub fn decide(&self, request: &RequestView<'_>, now: SystemTime) -> Decision {
        let mut run = Run::new(request, now, None, false);
        match self.step(request, &mut run, None, pipeline::Resume::Start) {
            Progress::Decided(decision) => decision,
            // Without a state backend the pipeline never waits; this arm is unreachable in
            // practice and fails closed if it is not.
            Progress::NeedsState(_) => self.unavailable(request, now),
        }
    }

    /// Start deciding one request with a state backend. The engine either decides or asks
    /// for the answers to some [`StateCheck`]s; answer them (in order) and call
    /// [`Engine::resume`], until it decides.
    #[must_use]
    pub fn begin(&self, request: &RequestView<'_>, now: SystemTime) -> Progress {
        let mut run = Run::new(request, now, None, true);
        self.step(request, &mut run, None, pipeline::Resume::Start)
    }

    /// Continue a decision with the backend's answers (or its failure).
    #[must_use]
    pub fn resume(
        &self,
        request: &RequestView<'_>,
        pending: Pending,
        answers: Result<Vec<StateAnswer>, StateUnavailable>,
    ) -> Progress {
        let mut run = pending.run;
        self.step(request, &mut run, Some(answers), pending.resume)
    }

    /// What the driver must do with the request's body before deciding: the limit to
    /// enforce while streaming it, and whether to read it for the WAF first.
    #[must_use]
    pub fn body_plan(&self, request: &RequestView<'_>) -> hygiene::BodyPlan {
        let settings = &self.config.hygiene;
        let route = normalize::normalize(request.target)
            .ok()
            .map(|mut target| {
                pipeline::apply_path_policies(settings, &mut target);
                target
            })
            .and_then(
                |target| match self.config.router.at(request.method, &target.path) {
                    route::RouteMatch::Found(_, route, _) => Some(route),
                    _ => None,
                },
            );
        let Some(route) = route else {
            // Refused before the body matters (400, 404, 405).
            return hygiene::BodyPlan {
                max: settings.max_body,
                inspect: None,
            };
        };
        let mode = route.hygiene.waf.unwrap_or(settings.waf);
        hygiene::BodyPlan {
            max: route.hygiene.max_body.unwrap_or(settings.max_body),
            inspect: (mode != hygiene::WafMode::Off).then_some(settings.waf_body_limit),
        }
    }

    /// A refusal for a request the driver could not finish deciding (the state backend or
    /// the runtime failed): 503, never an allow.
    #[must_use]
    pub fn unavailable(&self, request: &RequestView<'_>, now: SystemTime) -> Decision {
        let mut run = Run::new(request, now, None, false);
        let opts = run.options(None, None);
        run.decision(
            pipeline::Outcome::refused(Stage::RateLimit, Reason::StateUnavailable),
            &opts,
        )
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
        let mut steps = Vec::new();
        let mut run = Run::new(request, now, assume, false);
        let mut opts = run.options(Some(&mut steps), None);
        let progress = pipeline::run(&self.config, request, &mut opts, pipeline::Resume::Start);
        let mut hints = std::mem::take(&mut opts.hints);
        let decision = match progress {
            pipeline::Progress::Done(outcome) => run.decision(outcome, &opts),
            pipeline::Progress::Need { .. } => {
                let outcome =
                    pipeline::Outcome::refused(Stage::RateLimit, Reason::StateUnavailable);
                run.decision(outcome, &opts)
            }
        };
        if let Some(reason) = decision.reason() {
            hints.extend(hint(reason));
        }
        Explanation {
            decision,
            steps,
            hints,
        }
    }

    fn step(
        &self,
        request: &RequestView<'_>,
        run: &mut Run,
        answers: Option<Result<Vec<StateAnswer>, StateUnavailable>>,
        resume: pipeline::Resume,
    ) -> Progress {
        let mut opts = run.options(None, answers);
        match pipeline::run(&self.config, request, &mut opts, resume) {
            pipeline::Progress::Done(outcome) => Progress::Decided(run.decision(outcome, &opts)),
            pipeline::Progress::Need { checks, resume } => {
                run.client = opts.client;
                run.state_unavailable |= opts.state_unavailable;
                run.detections = std::mem::take(&mut opts.detections);
                run.cors = opts.cors.take();
                Progress::NeedsState(Pending {
                    checks,
                    resume,
                    run: run.clone(),
                })
            }
        }
    }
}

/// A decision in progress: the identity of the decision and what it has learnt so far.
#[derive(Debug, Clone)]
struct Run {
    id: DecisionId,
    started: Instant,
    now_ms: i64,
    assume: Option<Identity>,
    stateful: bool,
    client: std::net::IpAddr,
    state_unavailable: bool,
    detections: Vec<hygiene::Detection>,
    cors: Option<hygiene::CorsGrant>,
}

impl Run {
    fn new(
        request: &RequestView<'_>,
        now: SystemTime,
        assume: Option<Identity>,
        stateful: bool,
    ) -> Self {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            id: DecisionId::new(),
            started: Instant::now(),
            now_ms,
            assume,
            stateful,
            client: request.peer,
            state_unavailable: false,
            detections: Vec::new(),
            cors: None,
        }
    }

    fn options<'t>(
        &mut self,
        trace: Option<&'t mut Vec<Step>>,
        answers: Option<Result<Vec<StateAnswer>, StateUnavailable>>,
    ) -> pipeline::RunOptions<'t> {
        pipeline::RunOptions {
            now_ms: self.now_ms,
            decision_id: self.id,
            assume: self.assume.take(),
            trace,
            hints: Vec::new(),
            client: self.client,
            stateful: self.stateful,
            answers,
            state_unavailable: self.state_unavailable,
            detections: std::mem::take(&mut self.detections),
            cors: self.cors.take(),
        }
    }

    fn decision(&self, outcome: pipeline::Outcome, opts: &pipeline::RunOptions<'_>) -> Decision {
        // A refusal on a concealed route must be byte-identical to an unknown path's 404:
        // no CORS headers there.
        let concealed = matches!(&outcome.verdict, Verdict::Deny(d) if d.concealed);
        Decision {
            id: self.id,
            stage: outcome.stage,
            route: outcome.route,
            verdict: outcome.verdict,
            elapsed: self.started.elapsed(),
            policies: outcome.policies,
            shadow: outcome.shadow,
            client: opts.client,
            limits: outcome.limits,
            state_unavailable: opts.state_unavailable,
            detections: opts.detections.clone(),
            cors: if concealed { None } else { opts.cors.clone() },
        }
    }
}

/// Where a decision stands.
#[derive(Debug)]
pub enum Progress {
    /// Decided.
    Decided(Decision),
    /// Waiting for the state backend's answers to [`Pending::checks`].
    NeedsState(Pending),
}

/// A decision waiting for state answers; pass it back to [`Engine::resume`].
#[derive(Debug)]
pub struct Pending {
    checks: Vec<StateCheck>,
    resume: pipeline::Resume,
    run: Run,
}

impl Pending {
    /// The questions for the backend, to be answered in this order.
    #[must_use]
    pub fn checks(&self) -> &[StateCheck] {
        &self.checks
    }

    /// The client address the checks are about.
    #[must_use]
    pub fn client(&self) -> std::net::IpAddr {
        self.run.client
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
        Reason::WafBlocked(_)
        | Reason::PolicyForbids { .. }
        | Reason::NoPolicyPermits
        | Reason::UpstreamUnavailable
        | Reason::UpstreamTimeout => {
            return None;
        }
    })
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
