//! The pipeline: one request through the stages, in the order they run.
//!
//! ```text
//! normalize → network (client address, global lists, geo) → route (route lists, CORS preflight)
//!   → hygiene: body limit and WAF            may need the body
//!   → limits before identity (ban, address)  may need the state backend
//!   → authenticate                           may need a password checked or the keys refreshed
//!   → hygiene: CSRF
//!   → limits after identity (revocation, subject)  may need the state backend
//!   → authorize (route roles and scopes, Cedar) → forward
//! ```
//!
//! Each stage is a function of its own module that passes the request on (`Ok`) or stops it
//! ([`Stop`]): with a refusal, or with a [`Need`] the driver must answer first. A stopped
//! request resumes at the stage that asked; the stages before it are not run again, so a
//! request is normalized and routed once and every limit is charged once.

mod authenticate;
mod authorize;
mod forward;
mod hygiene;
mod limits;
mod network;
mod normalize;
mod route;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::authz::ShadowDisagreement;
use crate::config::Config;
use crate::decision::{Decision, DecisionId, Deny, Reason, Scheme, Stage, Verdict};
use crate::hygiene::{CorsGrant, Detection};
use crate::identity::Identity;
use crate::limit::Applied;
use crate::normalize::Normalized;
use crate::protocol::{Answer, BodyRead, Need};
use crate::request::RequestView;
use crate::route::Route;

/// Run the stages from where `cx` stands: decided, or stopped for a need.
pub(crate) fn run<'e>(
    config: &'e Config,
    request: &RequestView<'_>,
    cx: &mut Ctx,
    routed: &mut Option<Routed<'e>>,
) -> Result<Outcome, Stop> {
    let routed: &Routed<'e> = match routed {
        Some(routed) => routed,
        None => routed.insert(front(config, request, cx)?),
    };
    cx.once(Phase::Body, |cx| hygiene::body(config, routed, request, cx))?;
    cx.once(Phase::LimitsBefore, |cx| {
        limits::before_identity(config, routed, cx)
    })?;
    cx.once(Phase::Authenticate, |cx| {
        authenticate::run(routed, request, cx)
    })?;
    cx.once(Phase::Csrf, |cx| hygiene::csrf(config, routed, request, cx))?;
    cx.once(Phase::LimitsAfter, |cx| {
        limits::after_identity(config, routed, cx)
    })?;
    let policies = authorize::run(config, routed, request, cx)?;
    Ok(forward::run(config, routed, cx, policies))
}

/// The stages that run once, without waiting: normalize, network, route.
fn front<'e>(
    config: &'e Config,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<Routed<'e>, Stop> {
    let target = normalize::run(config, request, cx)?;
    network::client(config, request, cx)?;
    let routed = route::run(config, request, target, cx)?;
    network::route_rules(routed.route, cx)?;
    route::cors(config, &routed, request, cx)?;
    Ok(routed)
}

/// What routing found: the route, the canonical target and the path parameters.
#[derive(Debug)]
pub(crate) struct Routed<'e> {
    pub route: &'e Route,
    pub target: Normalized,
    pub params: Vec<(String, String)>,
    /// For a CORS preflight: every method of the path, as a 405 would list them.
    pub preflight: Option<Vec<http::Method>>,
}

/// Why the stages stopped before the end.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Decided before the end: a refusal, or a preflight answered.
    Done(Box<Outcome>),
    /// The driver must answer this first.
    Need(Need),
}

impl From<Outcome> for Stop {
    fn from(outcome: Outcome) -> Self {
        Self::Done(Box::new(outcome))
    }
}

/// The stages that wait for the driver, in order. A stage that asked is run again with the
/// answer; the ones before it are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Body,
    LimitsBefore,
    Authenticate,
    Csrf,
    LimitsAfter,
    Authorize,
}

impl Phase {
    fn next(self) -> Self {
        match self {
            Self::Body => Self::LimitsBefore,
            Self::LimitsBefore => Self::Authenticate,
            Self::Authenticate => Self::Csrf,
            Self::Csrf => Self::LimitsAfter,
            Self::LimitsAfter | Self::Authorize => Self::Authorize,
        }
    }
}

/// How a decision is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// A driver answers every need: state, body, passwords, keys.
    Driven,
    /// No driver (`decide`, `explain`): limits, bans and revocations are not evaluated, the
    /// WAF sees only a body the view carries, passwords are checked in the call, keys are
    /// not refreshed.
    Alone,
}

/// One request's context, carried through every stage and across every wait.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub id: DecisionId,
    started: Instant,
    /// Milliseconds since the epoch.
    pub now_ms: i64,
    pub mode: Mode,
    /// Take this identity instead of verifying credentials (explain and test tools).
    pub assume: Option<Identity>,
    /// Every stage reached (explain).
    pub trace: Option<Vec<crate::Step>>,
    /// What would change the answer (explain).
    pub hints: Vec<String>,
    /// The client address: the peer until the network stage knows better.
    pub client: IpAddr,
    /// CORS headers for the answer, when the origin is allowed.
    pub cors: Option<CorsGrant>,
    /// WAF findings on a detect-only route.
    pub detections: Vec<Detection>,
    /// The limits applied so far, for the `RateLimit` headers.
    pub applied: Vec<Applied>,
    /// The state backend could not answer and the fail mode let the request through.
    pub state_unavailable: bool,
    /// The verified (or assumed) identity, once authenticated; `None` on a public route.
    pub identity: Option<Identity>,
    /// The body the driver read for the WAF.
    pub body: Option<BodyRead>,
    /// Whether the key sets were refreshed for this request already.
    pub keys_refreshed: bool,
    /// Whether the session's tokens were refreshed for this request already.
    pub session_refreshed: bool,
    /// How many times the path was looked up in the router (one, once routed).
    pub path_lookups: u32,
    /// The next stage to run.
    phase: Phase,
    /// What the stage that stopped asked for, and the driver's answer.
    pub asked: Option<(Need, Answer)>,
}

impl Ctx {
    pub(crate) fn new(request: &RequestView<'_>, now: SystemTime, mode: Mode) -> Self {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Self {
            id: DecisionId::new(),
            started: Instant::now(),
            now_ms,
            mode,
            assume: None,
            trace: None,
            hints: Vec::new(),
            client: request.peer,
            cors: None,
            detections: Vec::new(),
            applied: Vec::new(),
            state_unavailable: false,
            identity: None,
            body: None,
            keys_refreshed: false,
            session_refreshed: false,
            path_lookups: 0,
            phase: Phase::Body,
            asked: None,
        }
    }

    /// Seconds since the epoch.
    pub fn now_secs(&self) -> u64 {
        u64::try_from(self.now_ms / 1000).unwrap_or(0)
    }

    pub fn driven(&self) -> bool {
        self.mode == Mode::Driven
    }

    /// Run `stage` unless a later one has already been reached; move past it when it passes.
    fn once(
        &mut self,
        phase: Phase,
        stage: impl FnOnce(&mut Self) -> Result<(), Stop>,
    ) -> Result<(), Stop> {
        if self.phase > phase {
            return Ok(());
        }
        stage(self)?;
        self.phase = phase.next();
        Ok(())
    }

    /// Record a stage for an explanation (nothing is built without one).
    pub fn note(&mut self, stage: Stage, passed: bool, note: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_mut() {
            trace.push(crate::Step {
                stage,
                passed,
                note: note(),
            });
        }
    }

    /// The decision for an outcome.
    pub(crate) fn decision(&self, outcome: Outcome) -> Decision {
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
            client: self.client,
            limits: outcome.limits,
            state_unavailable: self.state_unavailable,
            detections: self.detections.clone(),
            cors: if concealed { None } else { self.cors.clone() },
            path_lookups: self.path_lookups,
        }
    }
}

/// How the pipeline ended.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub stage: Stage,
    pub route: Option<Arc<str>>,
    pub verdict: Verdict,
    pub policies: Vec<String>,
    pub shadow: Option<ShadowDisagreement>,
    pub limits: Vec<Applied>,
}

impl Outcome {
    /// A refusal at `stage`, with the route's challenges, verbosity and concealment.
    pub(crate) fn deny(stage: Stage, route: Option<&Route>, reason: Reason) -> Self {
        Self {
            stage,
            route: route.map(|r| Arc::clone(&r.name)),
            verdict: Verdict::Deny(Deny {
                challenges: route.map(challenges).unwrap_or_default(),
                verbosity: route.map(|r| r.verbosity).unwrap_or_default(),
                concealed: route.is_some_and(|r| r.concealed),
                reason,
                identity: None,
            }),
            policies: Vec::new(),
            shadow: None,
            limits: Vec::new(),
        }
    }

    /// The same refusal, naming the identity it was refused to (for the log).
    pub(crate) fn to(mut self, identity: Option<&Identity>) -> Self {
        if let Verdict::Deny(d) = &mut self.verdict {
            d.identity = identity.cloned();
        }
        self
    }

    /// The same outcome, with the limits applied so far (for the `RateLimit` headers).
    pub(crate) fn with_limits(mut self, applied: &[Applied]) -> Self {
        self.limits = applied.to_vec();
        self
    }
}

/// The challenge schemes of a route's sources, each once, in order.
fn challenges(route: &Route) -> Vec<Scheme> {
    let mut out: Vec<Scheme> = Vec::new();
    for source in &route.sources {
        let scheme = source.scheme();
        if !out.contains(&scheme) {
            out.push(scheme);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use http::{HeaderMap, HeaderValue, Method};

    use crate::protocol::{Answer, BodyRead, Need, Progress};
    use crate::{Config, Decision, Engine, RequestView};

    const CONFIG: &str = r#"
[hygiene]
waf = "on"
[cors]
origins = ["https://app.example.com"]
[upstreams.app]
url = "http://127.0.0.1:9"
[[routes]]
name = "search"
path = "/search"
methods = ["GET", "POST"]
upstream = "app"
[[limits]]
name = "per-client"
key = ["client"]
limit = 10
window = "1m"
"#;

    fn engine() -> Engine {
        Engine::new(Config::parse(CONFIG, Path::new("test.toml")).unwrap())
    }

    /// Drive a request to its decision, answering the body need with `body` and every
    /// state check as allowed; returns the decision and the needs in the order asked.
    fn drive(engine: &Engine, view: &RequestView<'_>, body: &[u8]) -> (Decision, Vec<String>) {
        let now = SystemTime::now();
        let state = crate::limit::memory::MemoryState::new(100);
        let mut asked = Vec::new();
        let mut progress = engine.begin(view, now);
        loop {
            let pending = match progress {
                Progress::Decided(decision) => return (decision, asked),
                Progress::Needs(pending) => pending,
            };
            let answer = match pending.need() {
                Need::Body { .. } => {
                    asked.push("body".to_owned());
                    Answer::Body(BodyRead::Complete(bytes::Bytes::copy_from_slice(body)))
                }
                Need::State(checks) => {
                    asked.push(format!("state x{}", checks.len()));
                    Answer::State(Ok(state.answer(checks, now)))
                }
                other => panic!("unexpected need {other:?}"),
            };
            progress = engine.resume(view, pending, answer);
        }
    }

    #[test]
    fn a_request_with_a_body_is_routed_once_and_charged_once() {
        let engine = engine();
        let headers = HeaderMap::new();
        let view = RequestView::new(&Method::POST, "/search", &headers, [127, 0, 0, 1].into());
        let (decision, asked) = drive(&engine, &view, b"q=hello");
        assert!(decision.is_allowed(), "{decision:?}");
        assert_eq!(asked, ["body", "state x1"]);
        assert_eq!(decision.path_lookups, 1);
        assert_eq!(decision.limits.len(), 1, "the limit applied once");

        // The body decides: an attack in it is refused, still after one routing.
        let (decision, asked) = drive(&engine, &view, b"q=1' OR '1'='1");
        assert_eq!(decision.status(), http::StatusCode::FORBIDDEN);
        assert_eq!(asked, ["body"], "refused before anything is charged");
        assert_eq!(decision.path_lookups, 1);
    }

    #[test]
    fn a_cors_preflight_is_routed_once() {
        let engine = engine();
        let mut headers = HeaderMap::new();
        headers.insert(
            "origin",
            HeaderValue::from_static("https://app.example.com"),
        );
        headers.insert(
            "access-control-request-method",
            HeaderValue::from_static("POST"),
        );
        let view = RequestView::new(&Method::OPTIONS, "/search", &headers, [127, 0, 0, 1].into());
        let (decision, asked) = drive(&engine, &view, b"");
        assert_eq!(
            decision.status(),
            http::StatusCode::NO_CONTENT,
            "{decision:?}"
        );
        assert!(asked.is_empty());
        assert_eq!(decision.path_lookups, 1);
    }

    #[test]
    fn without_a_driver_nothing_is_asked() {
        let engine = engine();
        let headers = HeaderMap::new();
        let view = RequestView::new(&Method::POST, "/search", &headers, [127, 0, 0, 1].into());
        let decision = engine.decide(&view, SystemTime::now());
        assert!(decision.is_allowed());
        assert!(decision.limits.is_empty(), "no state backend, no limits");
        assert_eq!(decision.path_lookups, 1);
    }

    #[test]
    fn an_answer_of_the_wrong_kind_fails_closed() {
        let engine = engine();
        let headers = HeaderMap::new();
        let view = RequestView::new(&Method::POST, "/search", &headers, [127, 0, 0, 1].into());
        let Progress::Needs(pending) = engine.begin(&view, SystemTime::now()) else {
            panic!("the WAF asks for the body");
        };
        let progress = engine.resume(&view, pending, Answer::Keys { changed: true });
        let Progress::Decided(decision) = progress else {
            panic!("a wrong answer decides");
        };
        assert_eq!(decision.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    }
}
