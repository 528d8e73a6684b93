//! The pipeline: normalize → route → authenticate → authorize → forward.
//! Each stage either passes the request on or ends it with a typed reason.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::auth;
use crate::authz::{AuthzInput, ShadowDisagreement, Verdict as AuthzVerdict};
use crate::config::{Config, FailMode};
use crate::decision::TokenProblem;
use crate::identity::CredentialKind;
use crate::limit::{self, Applied, StateAnswer, StateCheck, StateUnavailable};

use crate::decision::{Allow, Deny, ForwardHeaders, Reason, Scheme, Stage, Verdict};
use crate::identity::Identity;
use crate::network::client::client_address;
use crate::normalize::Normalized;
use crate::normalize::normalize;
use crate::request::RequestView;
use crate::route::{Route, RouteMatch};
use std::net::IpAddr;

/// Characters escaped in forwarded identity values: controls, non-ASCII, and the list
/// separators, so a claim can never forge a second value or header.
const IDENTITY_VALUE: &AsciiSet = &CONTROLS.add(b'%').add(b',').add(b' ').add(b'"');

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
    /// A refusal outside any route.
    pub(crate) fn refused(stage: Stage, reason: Reason) -> Self {
        deny(stage, None, reason)
    }
}

/// What routing established, carried across a wait for the state backend.
#[derive(Debug, Clone)]
pub(crate) struct Front {
    target: Normalized,
    client: IpAddr,
    route: usize,
    params: Vec<(String, String)>,
    applied: Vec<Applied>,
}

/// Where a pipeline waiting for state answers resumes.
#[derive(Debug, Clone)]
pub(crate) enum Resume {
    /// From the beginning.
    Start,
    /// After the checks before identity (bans, limits by address or route).
    Front {
        front: Front,
        checks: Vec<StateCheck>,
    },
    /// After the checks after identity (revocation, limits by subject, key or claim).
    Identity {
        front: Front,
        identity: Option<Identity>,
        checks: Vec<StateCheck>,
    },
}

/// A pipeline run either decides or asks the state backend first.
#[derive(Debug)]
pub(crate) enum Progress {
    Done(Outcome),
    Need {
        checks: Vec<StateCheck>,
        resume: Resume,
    },
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

/// What the pipeline is run with besides the request.
#[derive(Debug)]
pub(crate) struct RunOptions<'t> {
    /// Seconds and milliseconds since the epoch.
    pub now_ms: i64,
    pub decision_id: crate::decision::DecisionId,
    /// Skip credential verification and take this identity (explain and test tools).
    pub assume: Option<Identity>,
    /// Record every stage (explain).
    pub trace: Option<&'t mut Vec<Step>>,
    /// What would change the answer (filled only when tracing).
    pub hints: Vec<String>,
    /// The client address, once known (the peer until then).
    pub client: std::net::IpAddr,
    /// Whether a state backend answers checks; without one, limits, bans and revocations
    /// are not evaluated (explain, test).
    pub stateful: bool,
    /// The backend's answers to the checks of the phase being resumed.
    pub answers: Option<Result<Vec<StateAnswer>, StateUnavailable>>,
    /// The backend could not answer and the fail mode let the request through.
    pub state_unavailable: bool,
    /// WAF findings on a detect-only route.
    pub detections: Vec<crate::hygiene::Detection>,
    /// CORS headers for the answer, when the origin is allowed.
    pub cors: Option<crate::hygiene::CorsGrant>,
}

impl RunOptions<'_> {
    fn note(&mut self, stage: Stage, passed: bool, note: impl FnOnce() -> String) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.push(Step {
                stage,
                passed,
                note: note(),
            });
        }
    }
}

fn deny(stage: Stage, route: Option<&Route>, reason: Reason) -> Outcome {
    Outcome {
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

pub(crate) fn run(
    config: &Config,
    request: &RequestView<'_>,
    opts: &mut RunOptions<'_>,
    resume: Resume,
) -> Progress {
    let now_secs = u64::try_from(opts.now_ms / 1000).unwrap_or(0);
    let (front, authenticated) = match resume {
        Resume::Start => {
            let front = match front_stages(config, request, opts) {
                Ok(front) => front,
                Err(outcome) => return Progress::Done(*outcome),
            };
            if opts.stateful {
                let checks = pre_identity_checks(config, &front);
                if !checks.is_empty() {
                    return Progress::Need {
                        checks: checks.clone(),
                        resume: Resume::Front { front, checks },
                    };
                }
            }
            (front, None)
        }
        Resume::Front { mut front, checks } => {
            if let Err(outcome) = apply_answers(config, &mut front, &checks, None, opts) {
                return Progress::Done(*outcome);
            }
            (front, None)
        }
        Resume::Identity {
            mut front,
            identity,
            checks,
        } => {
            if let Err(outcome) =
                apply_answers(config, &mut front, &checks, identity.as_ref(), opts)
            {
                return Progress::Done(*outcome);
            }
            (front, Some(identity))
        }
    };
    let Some(route) = config.router.routes().get(front.route) else {
        return Progress::Done(deny(Stage::Route, None, Reason::RouteNotFound));
    };

    // 5. authenticate
    let identity = match authenticated {
        Some(identity) => identity,
        None => {
            let identity = match authenticate(route, request, now_secs, opts) {
                Ok(identity) => identity,
                Err(outcome) => return Progress::Done(*outcome),
            };
            if let Err(outcome) = csrf(config, route, request, identity.as_ref(), opts) {
                return Progress::Done(*outcome);
            }
            if opts.stateful {
                let checks = post_identity_checks(config, &front, route, identity.as_ref());
                if !checks.is_empty() {
                    return Progress::Need {
                        checks: checks.clone(),
                        resume: Resume::Identity {
                            front,
                            identity,
                            checks,
                        },
                    };
                }
            }
            identity
        }
    };
    let Front {
        target,
        client,
        params,
        applied,
        ..
    } = front;

    // 6. authorize: the route's own requirements, then the policies.
    let mut policies = Vec::new();
    let mut shadow = None;
    if let Some(identity) = &identity {
        let input = AuthzInput {
            identity,
            target: &route.target,
            params: &params,
            client,
            method: request.method.as_str(),
            path: &target.path,
            now_ms: opts.now_ms,
        };
        let refusal = match authorize(route, identity) {
            Some(reason) => Some(reason),
            None => match &config.authorization {
                Some(authz) => {
                    let (verdict, disagreement) = authz.evaluate(&input);
                    shadow = disagreement;
                    match verdict {
                        AuthzVerdict::Allow { policies: p } => {
                            policies = p;
                            None
                        }
                        AuthzVerdict::Forbidden { policies: p } => {
                            policies.clone_from(&p);
                            Some(Reason::PolicyForbids { policies: p })
                        }
                        AuthzVerdict::NoPermit => Some(Reason::NoPolicyPermits),
                        AuthzVerdict::Errors { errors } => Some(Reason::PolicyError { errors }),
                    }
                }
                None => None,
            },
        };
        if let (Some(Reason::NoPolicyPermits | Reason::PolicyForbids { .. }), Some(authz), true) =
            (&refusal, &config.authorization, opts.trace.is_some())
        {
            for role in authz
                .roles_in_policies
                .iter()
                .filter(|r| !identity.roles.contains(r))
            {
                if authz.allowed_with_role(&input, role) {
                    let held = crate::decision::list_or_none(&identity.roles);
                    opts.hints.push(format!(
                        "would be allowed with role {role}; the caller has {held}"
                    ));
                }
            }
        }
        if let Some(reason) = refusal {
            opts.note(Stage::Authorize, false, || reason.log_detail());
            let mut outcome = deny(Stage::Authorize, Some(route), reason);
            if let Verdict::Deny(d) = &mut outcome.verdict {
                d.identity = Some(identity.clone());
            }
            outcome.policies = policies;
            outcome.shadow = shadow;
            outcome.limits = applied;
            return Progress::Done(outcome);
        }
        opts.note(Stage::Authorize, true, || {
            if policies.is_empty() {
                "the route's requirements are met".to_owned()
            } else {
                format!("permitted by {}", policies.join(", "))
            }
        });
    }

    // 7. forward
    let headers = forward_headers(config, identity.as_ref(), opts.decision_id);
    opts.note(Stage::Forward, true, || {
        format!(
            "to upstream `{}` as {}",
            route.upstream,
            target.path_and_query()
        )
    });
    Progress::Done(Outcome {
        stage: Stage::Forward,
        route: Some(Arc::clone(&route.name)),
        verdict: Verdict::Allow(Allow {
            upstream: Arc::clone(&route.upstream),
            path_and_query: target.path_and_query(),
            identity,
            headers,
            concealed: route.concealed,
        }),
        policies,
        shadow,
        limits: applied,
    })
}

/// Stages 1–4: normalize, client address, network rules, route.
fn front_stages(
    config: &Config,
    request: &RequestView<'_>,
    opts: &mut RunOptions<'_>,
) -> Result<Front, Box<Outcome>> {
    // 1. normalize: framing first (request smuggling), then the target.
    if let Some(detail) = ambiguous_framing(request.headers) {
        opts.note(Stage::Normalize, false, || detail.to_owned());
        return Err(Box::new(deny(
            Stage::Normalize,
            None,
            Reason::MalformedRequest { detail },
        )));
    }
    let mut target = match normalize(request.target) {
        Ok(t) => t,
        Err(e) => {
            opts.note(Stage::Normalize, false, || e.detail().to_owned());
            return Err(Box::new(deny(
                Stage::Normalize,
                None,
                Reason::MalformedRequest { detail: e.detail() },
            )));
        }
    };
    apply_path_policies(&config.hygiene, &mut target);
    opts.note(Stage::Normalize, true, || {
        format!("canonical path {}", target.path)
    });

    // 2. client address, 3. global network rules
    let gateway = &config.gateway;
    let client = client_address(
        request.peer,
        request.headers,
        &gateway.trusted_proxies,
        gateway.client_address_header,
    );
    opts.client = client;
    if let Some(rule) = config.network.denies(client) {
        opts.note(Stage::Network, false, || {
            format!("{client} denied by global network rule {}", rule.index)
        });
        return Err(Box::new(deny(
            Stage::Network,
            None,
            Reason::AddressDenied {
                list: "global",
                rule: rule.index,
            },
        )));
    }
    if let Some(denial) = config.geo.as_ref().and_then(|geo| geo.check(client)) {
        opts.note(Stage::Network, false, || {
            format!(
                "{client} ({}) denied by a geo rule",
                denial.country.as_deref().unwrap_or("unknown country")
            )
        });
        let reason = Reason::GeoDenied {
            country: denial.country,
            blocked_by: denial.blocked_by,
        };
        return Err(Box::new(deny(Stage::Network, None, reason)));
    }
    opts.note(Stage::Network, true, || {
        if client == request.peer {
            format!("client {client}")
        } else {
            format!("client {client} (via trusted proxy {})", request.peer)
        }
    });

    // 4. route; a CORS preflight is routed by the method it asks for.
    let mut preflight_method = config
        .hygiene
        .cors
        .as_ref()
        .filter(|_| crate::hygiene::cors::is_preflight(request.method, request.headers))
        .and_then(|_| {
            request
                .headers
                .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        })
        .and_then(|v| http::Method::from_bytes(v.as_bytes()).ok());
    let mut routed = config.router.at(
        preflight_method.as_ref().unwrap_or(request.method),
        &target.path,
    );
    if preflight_method.is_some() {
        match &routed {
            RouteMatch::Found(_, r, _) if r.hygiene.cors && !r.concealed => {}
            RouteMatch::WrongMethod {
                concealed: false, ..
            } => {
                let detail = "the requested method is not allowed";
                opts.note(Stage::Cors, false, || {
                    format!("preflight refused: {detail}")
                });
                return Err(Box::new(deny(
                    Stage::Cors,
                    None,
                    Reason::CorsRejected { detail },
                )));
            }
            // Not a CORS resource (or a concealed one): answered as any OPTIONS request.
            _ => {
                preflight_method = None;
                routed = config.router.at(request.method, &target.path);
            }
        }
    }
    let (index, route, params) = match routed {
        RouteMatch::Found(index, route, params) => (index, route, params),
        RouteMatch::NotFound => {
            opts.note(Stage::Route, false, || "no route has this path".to_owned());
            return Err(Box::new(deny(Stage::Route, None, Reason::RouteNotFound)));
        }
        RouteMatch::WrongMethod { allow, concealed } => {
            opts.note(Stage::Route, false, || {
                format!("the path exists, but not for {}", request.method)
            });
            let mut outcome = deny(Stage::Route, None, Reason::MethodNotAllowed { allow });
            if let Verdict::Deny(d) = &mut outcome.verdict {
                d.concealed = concealed;
            }
            return Err(Box::new(outcome));
        }
    };
    opts.note(Stage::Route, true, || {
        format!(
            "route `{}` ({} {})",
            route.name, request.method, route.template
        )
    });

    if let Some(rule) = route
        .network
        .as_ref()
        .and_then(|rules| rules.denies(client))
    {
        opts.note(Stage::Network, false, || {
            format!("{client} denied by route network rule {}", rule.index)
        });
        return Err(Box::new(deny(
            Stage::Network,
            Some(route),
            Reason::AddressDenied {
                list: "route",
                rule: rule.index,
            },
        )));
    }

    if let Some(cors) = config
        .hygiene
        .cors
        .as_ref()
        .filter(|_| route.hygiene.cors && !route.concealed)
    {
        if preflight_method.is_some() {
            return Err(Box::new(preflight(
                config, cors, route, request, &target, opts,
            )));
        }
        opts.cors = cors.actual(request.headers);
    }

    hygiene(config, route, request, &target, opts)?;

    Ok(Front {
        target,
        client,
        route: index,
        params,
        applied: Vec::new(),
    })
}

/// The configured case and trailing-slash policies, applied to the canonical path (which is
/// then both routed and forwarded).
pub(crate) fn apply_path_policies(
    settings: &crate::hygiene::HygieneSettings,
    target: &mut Normalized,
) {
    use crate::hygiene::{PathCase, TrailingSlash};
    if settings.trailing_slash == TrailingSlash::Ignore && target.path.len() > 1 {
        while target.path.len() > 1 && target.path.ends_with('/') {
            target.path.pop();
        }
    }
    if settings.path_case == PathCase::Insensitive {
        target.path.make_ascii_lowercase();
    }
}

/// A CORS preflight for a route that accepts the requested method: granted from the
/// configuration, or refused with 403 and no CORS headers.
fn preflight(
    config: &Config,
    cors: &Arc<crate::hygiene::CorsSettings>,
    route: &Route,
    request: &RequestView<'_>,
    target: &Normalized,
    opts: &mut RunOptions<'_>,
) -> Outcome {
    // The methods of every route at this path, as a 405 would list them.
    let path_methods = match config.router.at(&http::Method::OPTIONS, &target.path) {
        RouteMatch::WrongMethod { allow, .. } => allow,
        _ => route.methods.clone(),
    };
    match cors.preflight(request.headers, &path_methods) {
        Ok(grant) => {
            opts.note(Stage::Cors, true, || {
                format!("preflight from {:?} granted", grant.origin)
            });
            opts.cors = Some(grant);
            Outcome {
                stage: Stage::Cors,
                route: Some(Arc::clone(&route.name)),
                verdict: Verdict::Preflight,
                policies: Vec::new(),
                shadow: None,
                limits: Vec::new(),
            }
        }
        Err(detail) => {
            opts.note(Stage::Cors, false, || {
                format!("preflight refused: {detail}")
            });
            deny(Stage::Cors, Some(route), Reason::CorsRejected { detail })
        }
    }
}

/// Body limit and the WAF pass.
fn hygiene(
    config: &Config,
    route: &Route,
    request: &RequestView<'_>,
    target: &Normalized,
    opts: &mut RunOptions<'_>,
) -> Result<(), Box<Outcome>> {
    use crate::hygiene::WafMode;
    use crate::request::BodyView;
    let settings = &config.hygiene;
    let limit = route.hygiene.max_body.unwrap_or(settings.max_body);
    let declared = request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        opts.note(Stage::Hygiene, false, || {
            format!("Content-Length above the limit of {limit} bytes")
        });
        return Err(Box::new(deny(
            Stage::Hygiene,
            Some(route),
            Reason::BodyTooLarge { limit },
        )));
    }
    let mode = route.hygiene.waf.unwrap_or(settings.waf);
    if mode == WafMode::Off {
        return Ok(());
    }
    let body = match request.body {
        BodyView::Complete(bytes) => Some(bytes),
        BodyView::NotRead => None,
        BodyView::TooLarge if mode == WafMode::On => {
            let limit = u64::try_from(settings.waf_body_limit).unwrap_or(u64::MAX);
            opts.note(Stage::Hygiene, false, || {
                format!("body above the WAF's inspection limit of {limit} bytes")
            });
            return Err(Box::new(deny(
                Stage::Hygiene,
                Some(route),
                Reason::BodyTooLarge { limit },
            )));
        }
        BodyView::TooLarge => None,
    };
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let found = settings.rules.scan(
        &target.path,
        target.query.as_deref(),
        request.headers,
        &settings.credential_headers,
        body.map(|b| (b, content_type)),
        &settings.session_cookies,
    );
    match found {
        None => {
            opts.note(Stage::Hygiene, true, || "the WAF found nothing".to_owned());
            Ok(())
        }
        Some(detection) if mode == WafMode::On => {
            opts.note(Stage::Hygiene, false, || detection.describe());
            Err(Box::new(deny(
                Stage::Hygiene,
                Some(route),
                Reason::WafBlocked(detection),
            )))
        }
        Some(detection) => {
            opts.note(Stage::Hygiene, true, || {
                format!("detect only: {}", detection.describe())
            });
            opts.detections.push(detection);
            Ok(())
        }
    }
}

/// CSRF checks on a cookie-authenticated request with an unsafe method.
fn csrf(
    config: &Config,
    route: &Route,
    request: &RequestView<'_>,
    identity: Option<&Identity>,
    opts: &mut RunOptions<'_>,
) -> Result<(), Box<Outcome>> {
    let Some(identity) = identity else {
        return Ok(());
    };
    if identity.kind != CredentialKind::Cookie
        || !route.hygiene.csrf
        || !crate::hygiene::csrf::unsafe_method(request.method)
    {
        return Ok(());
    }
    match config.hygiene.csrf.check(request.headers) {
        Ok(proof) => {
            opts.note(Stage::Csrf, true, || format!("same-site proof: {proof}"));
            Ok(())
        }
        Err(detail) => {
            opts.note(Stage::Csrf, false, || detail.to_owned());
            let mut outcome = deny(Stage::Csrf, Some(route), Reason::CsrfRejected { detail });
            if let Verdict::Deny(d) = &mut outcome.verdict {
                d.identity = Some(identity.clone());
            }
            Err(Box::new(outcome))
        }
    }
}

/// Stage 5: the verified (or assumed) identity, `None` on a public route.
fn authenticate(
    route: &Route,
    request: &RequestView<'_>,
    now_secs: u64,
    opts: &mut RunOptions<'_>,
) -> Result<Option<Identity>, Box<Outcome>> {
    if !route.authenticates() {
        opts.note(Stage::Authenticate, true, || {
            "public route: no credentials needed".to_owned()
        });
        Ok(None)
    } else if let Some(assumed) = opts.assume.take() {
        opts.note(Stage::Authenticate, true, || {
            format!("assumed identity `{}`", assumed.subject)
        });
        Ok(Some(assumed))
    } else {
        match auth::authenticate(&route.sources, request.headers, now_secs) {
            Ok(identity) => {
                opts.note(Stage::Authenticate, true, || {
                    format!(
                        "`{}` verified by source `{}`",
                        identity.subject, identity.source
                    )
                });
                Ok(Some(identity))
            }
            Err(reason) => {
                opts.note(Stage::Authenticate, false, || reason.log_detail());
                Err(Box::new(deny(Stage::Authenticate, Some(route), reason)))
            }
        }
    }
}

/// The checks before identity: is the client banned, and the limits keyed by address or route.
fn pre_identity_checks(config: &Config, front: &Front) -> Vec<StateCheck> {
    let Some(route) = config.router.routes().get(front.route) else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if config.bans.is_some() {
        checks.push(StateCheck::Ban {
            key: limit::ban_key(front.client),
        });
    }
    checks.extend(limit::checks(
        &config.limits,
        false,
        front.client,
        &route.name,
        None,
    ));
    checks
}

/// The checks after identity: is the token revoked, and the limits keyed by subject, API key or claim.
fn post_identity_checks(
    config: &Config,
    front: &Front,
    route: &Route,
    identity: Option<&Identity>,
) -> Vec<StateCheck> {
    let Some(identity) = identity else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    if matches!(
        identity.kind,
        CredentialKind::Bearer | CredentialKind::Cookie
    ) {
        checks.push(StateCheck::Revoked {
            token_id: identity.token_id.clone(),
            subject: identity.subject.clone(),
            issued_at: identity.issued_at,
        });
    }
    checks.extend(limit::checks(
        &config.limits,
        true,
        front.client,
        &route.name,
        Some(identity),
    ));
    checks
}

/// Whole seconds to wait, rounded up (a `Retry-After` of 0 would invite an immediate retry).
fn seconds_up(micros: u64) -> u64 {
    micros.div_ceil(1_000_000).max(1)
}

/// Apply the backend's answers: refuse on a ban, an exceeded limit or a revoked token;
/// otherwise remember the limits applied, for the `RateLimit` headers.
fn apply_answers(
    config: &Config,
    front: &mut Front,
    checks: &[StateCheck],
    identity: Option<&Identity>,
    opts: &mut RunOptions<'_>,
) -> Result<(), Box<Outcome>> {
    let route = config.router.routes().get(front.route);
    let refuse = |stage: Stage, reason: Reason, applied: &[Applied]| {
        let mut outcome = deny(stage, route, reason);
        if let Verdict::Deny(d) = &mut outcome.verdict {
            d.identity = identity.cloned();
        }
        outcome.limits = applied.to_vec();
        outcome
    };
    let answers = match opts.answers.take() {
        Some(Ok(answers)) if answers.len() == checks.len() => answers,
        Some(Ok(_)) => {
            return Err(Box::new(refuse(
                Stage::RateLimit,
                Reason::StateUnavailable,
                &front.applied,
            )));
        }
        Some(Err(_)) | None if config.state.fail == FailMode::Open => {
            opts.state_unavailable = true;
            return Ok(());
        }
        Some(Err(_)) | None => {
            return Err(Box::new(refuse(
                Stage::RateLimit,
                Reason::StateUnavailable,
                &front.applied,
            )));
        }
    };
    for (check, answer) in checks.iter().zip(answers) {
        match (check, answer) {
            (StateCheck::Ban { .. }, StateAnswer::Ban(Some(remaining))) => {
                opts.note(Stage::RateLimit, false, || {
                    "the client is banned".to_owned()
                });
                let reason = Reason::Banned {
                    retry_after_secs: seconds_up(remaining),
                };
                return Err(Box::new(refuse(Stage::RateLimit, reason, &front.applied)));
            }
            (StateCheck::Revoked { .. }, StateAnswer::Revoked(true)) => {
                opts.note(Stage::Authenticate, false, || {
                    "the token is revoked".to_owned()
                });
                return Err(Box::new(refuse(
                    Stage::Authenticate,
                    Reason::InvalidToken(TokenProblem::Revoked),
                    &front.applied,
                )));
            }
            (StateCheck::Limit { policy, quota, .. }, StateAnswer::Limit(outcome)) => {
                front.applied.push(Applied {
                    policy: Arc::clone(policy),
                    quota: *quota,
                    outcome,
                });
                if !outcome.allowed {
                    opts.note(Stage::RateLimit, false, || {
                        format!("limit `{policy}` exceeded")
                    });
                    let reason = Reason::RateLimited {
                        policy: Arc::clone(policy),
                        retry_after_secs: seconds_up(outcome.retry_after_us),
                    };
                    return Err(Box::new(refuse(Stage::RateLimit, reason, &front.applied)));
                }
            }
            (StateCheck::Ban { .. }, StateAnswer::Ban(None))
            | (StateCheck::Revoked { .. }, StateAnswer::Revoked(false)) => {}
            // An answer of the wrong kind is a backend bug: fail closed.
            _ => {
                return Err(Box::new(refuse(
                    Stage::RateLimit,
                    Reason::StateUnavailable,
                    &front.applied,
                )));
            }
        }
    }
    Ok(())
}

fn authorize(route: &Route, identity: &Identity) -> Option<Reason> {
    if !route.roles.is_empty() && !route.roles.iter().any(|r| identity.roles.contains(r)) {
        return Some(Reason::MissingRole {
            needed: route.roles.clone(),
            held: identity.roles.clone(),
        });
    }
    let missing: Vec<String> = route
        .scopes
        .iter()
        .filter(|s| !identity.scopes.contains(s))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Some(Reason::InsufficientScope {
            required: route.scopes.clone(),
            missing,
        });
    }
    None
}

/// A message whose length two parsers could read differently (RFC 9112 §6.3): both
/// `Transfer-Encoding` and `Content-Length`, or `Content-Length` more than once.
fn ambiguous_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    if lengths > 0 && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Some("The request has both Transfer-Encoding and Content-Length");
    }
    if lengths > 1 {
        return Some("The request has more than one Content-Length");
    }
    None
}

/// The identity headers for the upstream. Each value is built in one buffer that becomes
/// the header's bytes without a copy.
fn forward_headers(
    config: &Config,
    identity: Option<&Identity>,
    decision_id: crate::decision::DecisionId,
) -> ForwardHeaders {
    let names = &config.identity_headers;
    let mut add: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(5);
    let mut push = |name: &HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            add.push((name.clone(), v));
        }
    };
    push(&names.decision_id, decision_id.to_string());
    if let Some(id) = identity {
        let encoded = |items: &[String], separator: char| {
            let mut value = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    value.push(separator);
                }
                value.extend(utf8_percent_encode(item, IDENTITY_VALUE));
            }
            value
        };
        push(
            &names.subject,
            encoded(std::slice::from_ref(&id.subject), ','),
        );
        push(
            &names.source,
            utf8_percent_encode(&id.source, IDENTITY_VALUE).collect(),
        );
        if !id.roles.is_empty() {
            push(&names.roles, encoded(&id.roles, ','));
        }
        if !id.scopes.is_empty() {
            push(&names.scopes, encoded(&id.scopes, ' '));
        }
    }
    ForwardHeaders {
        remove: names.all(),
        add,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_framing_is_found() {
        let mut h = http::HeaderMap::new();
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert!(ambiguous_framing(&h).is_some(), "two Content-Length fields");
        let mut h = http::HeaderMap::new();
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        h.append(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(ambiguous_framing(&h).is_some(), "CL and TE");
    }
}
