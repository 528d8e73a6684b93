//! Bans, rate limits and revocations: the checks the state backend answers. Before identity,
//! the ban and the limits keyed by address or route; after it, the revocation and the limits
//! keyed by subject, API key or claim. Each check is asked once and charged once.

use std::sync::Arc;

use super::{Ctx, Outcome, Routed, Stop};
use crate::config::{Config, FailMode};
use crate::decision::{Reason, Stage, TokenProblem};
use crate::identity::CredentialKind;
use crate::limit::{self, Applied, StateAnswer, StateCheck, StateUnavailable};
use crate::protocol::{Answer, Need};
use crate::route::Route;

/// The ban and the limits keyed by address or route.
pub(super) fn before_identity(
    config: &Config,
    routed: &Routed<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    ask_or_apply(config, routed.route, cx, |cx| {
        let mut checks = Vec::new();
        if config.bans.is_some() {
            checks.push(StateCheck::Ban {
                key: limit::ban_key(cx.client),
            });
        }
        checks.extend(limit::checks(
            &config.limits,
            false,
            cx.client,
            &routed.route.name,
            None,
        ));
        checks
    })
}

/// The revocation of the token and the limits keyed by subject, API key or claim.
pub(super) fn after_identity(
    config: &Config,
    routed: &Routed<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    if cx.identity.is_none() {
        return Ok(());
    }
    ask_or_apply(config, routed.route, cx, |cx| {
        let Some(identity) = &cx.identity else {
            return Vec::new();
        };
        let mut checks = Vec::new();
        if matches!(
            identity.kind,
            CredentialKind::Bearer | CredentialKind::Cookie | CredentialKind::ClientCertificate
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
            cx.client,
            &routed.route.name,
            Some(identity),
        ));
        checks
    })
}

/// Ask for the phase's checks, or apply the answers to them when resumed.
fn ask_or_apply(
    config: &Config,
    route: &Route,
    cx: &mut Ctx,
    checks: impl FnOnce(&Ctx) -> Vec<StateCheck>,
) -> Result<(), Stop> {
    if !cx.driven() {
        return Ok(());
    }
    match cx.asked.take() {
        None => {
            let checks = checks(cx);
            if checks.is_empty() {
                Ok(())
            } else {
                Err(Stop::Need(Need::State(checks)))
            }
        }
        Some((Need::State(checks), Answer::State(answers))) => {
            apply(config, route, &checks, answers, cx)
        }
        Some(_) => Err(misanswered(Some(route))),
    }
}

/// A driver answered a need with an answer of another kind: a driver's bug; fail closed.
pub(super) fn misanswered(route: Option<&Route>) -> Stop {
    Outcome::deny(Stage::RateLimit, route, Reason::StateUnavailable).into()
}

/// Whole seconds to wait, rounded up (a `Retry-After` of 0 would invite an immediate retry).
fn seconds_up(micros: u64) -> u64 {
    micros.div_ceil(1_000_000).max(1)
}

/// Apply the backend's answers: refuse on a ban, an exceeded limit or a revoked token;
/// otherwise remember the limits applied, for the `RateLimit` headers.
fn apply(
    config: &Config,
    route: &Route,
    checks: &[StateCheck],
    answers: Result<Vec<StateAnswer>, StateUnavailable>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let refuse = |cx: &Ctx, stage: Stage, reason: Reason| -> Stop {
        Outcome::deny(stage, Some(route), reason)
            .to(cx.identity.as_ref())
            .with_limits(&cx.applied)
            .into()
    };
    let answers = match answers {
        Ok(answers) if answers.len() == checks.len() => answers,
        Ok(_) => return Err(refuse(cx, Stage::RateLimit, Reason::StateUnavailable)),
        Err(_) if config.state.fail == FailMode::Open => {
            cx.state_unavailable = true;
            return Ok(());
        }
        Err(_) => return Err(refuse(cx, Stage::RateLimit, Reason::StateUnavailable)),
    };
    for (check, answer) in checks.iter().zip(answers) {
        match (check, answer) {
            (StateCheck::Ban { .. }, StateAnswer::Ban(Some(remaining))) => {
                cx.note(Stage::RateLimit, false, || {
                    "the client is banned".to_owned()
                });
                let reason = Reason::Banned {
                    retry_after_secs: seconds_up(remaining),
                };
                return Err(refuse(cx, Stage::RateLimit, reason));
            }
            (StateCheck::Revoked { .. }, StateAnswer::Revoked(true)) => {
                let certificate = cx
                    .identity
                    .as_ref()
                    .is_some_and(|i| i.kind == CredentialKind::ClientCertificate);
                cx.note(Stage::Authenticate, false, || {
                    if certificate {
                        "the client certificate's subject is revoked".to_owned()
                    } else {
                        "the token is revoked".to_owned()
                    }
                });
                let reason = if certificate {
                    Reason::InvalidCertificate(crate::auth::mtls::CertificateProblem::Revoked)
                } else {
                    Reason::InvalidToken(TokenProblem::Revoked)
                };
                return Err(refuse(cx, Stage::Authenticate, reason));
            }
            (StateCheck::Limit { policy, quota, .. }, StateAnswer::Limit(outcome)) => {
                cx.applied.push(Applied {
                    policy: Arc::clone(policy),
                    quota: *quota,
                    outcome,
                });
                if !outcome.allowed {
                    cx.note(Stage::RateLimit, false, || {
                        format!("limit `{policy}` exceeded")
                    });
                    let reason = Reason::RateLimited {
                        policy: Arc::clone(policy),
                        retry_after_secs: seconds_up(outcome.retry_after_us),
                    };
                    return Err(refuse(cx, Stage::RateLimit, reason));
                }
            }
            (StateCheck::Ban { .. }, StateAnswer::Ban(None))
            | (StateCheck::Revoked { .. }, StateAnswer::Revoked(false)) => {}
            // An answer of the wrong kind is a backend bug: fail closed.
            _ => return Err(refuse(cx, Stage::RateLimit, Reason::StateUnavailable)),
        }
    }
    Ok(())
}
