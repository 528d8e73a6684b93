//! Authorize: the route's own requirements (roles, scopes), then the Cedar
//! policies. Only an authenticated caller gets here with an identity; a 403 never goes to a
//! request without one on a route that needs one.

use super::{Ctx, Outcome, Routed, Stop};
use crate::authz::{AuthzInput, ShadowDisagreement, Verdict as AuthzVerdict};
use crate::config::Config;
use crate::decision::{Reason, Stage};
use crate::identity::Identity;
use crate::request::RequestView;
use crate::route::Route;

/// What authorization decided for an allowed request: the policies that permitted it, and
/// where shadow policies disagreed.
#[derive(Debug, Default)]
pub(super) struct Permitted {
    pub policies: Vec<String>,
    pub shadow: Option<ShadowDisagreement>,
}

pub(super) fn run(
    config: &Config,
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<Permitted, Stop> {
    let Some(identity) = cx.identity.as_ref() else {
        return Ok(Permitted::default());
    };
    let route = routed.route;
    let input = AuthzInput {
        identity,
        target: &route.target,
        params: &routed.params,
        client: cx.client,
        method: request.method.as_str(),
        path: &routed.target.path,
        now_ms: cx.now_ms,
    };
    let mut permitted = Permitted::default();
    let refusal = match requirements(route, identity) {
        Some(reason) => Some(reason),
        None => match &config.authorization {
            Some(authz) => {
                let (verdict, disagreement) = authz.evaluate(&input);
                permitted.shadow = disagreement;
                match verdict {
                    AuthzVerdict::Allow { policies } => {
                        permitted.policies = policies;
                        None
                    }
                    AuthzVerdict::Forbidden { policies } => {
                        permitted.policies.clone_from(&policies);
                        Some(Reason::PolicyForbids { policies })
                    }
                    AuthzVerdict::NoPermit => Some(Reason::NoPolicyPermits),
                    AuthzVerdict::Errors { errors } => Some(Reason::PolicyError { errors }),
                }
            }
            None => None,
        },
    };
    // For an explanation: the roles that would have turned a policy denial into an allow.
    if let (Some(Reason::NoPolicyPermits | Reason::PolicyForbids { .. }), Some(authz), true) =
        (&refusal, &config.authorization, cx.trace.is_some())
    {
        for role in authz
            .roles_in_policies
            .iter()
            .filter(|r| !identity.roles.contains(r))
        {
            if authz.allowed_with_role(&input, role) {
                let held = crate::decision::list_or_none(&identity.roles);
                cx.hints.push(format!(
                    "would be allowed with role {role}; the caller has {held}"
                ));
            }
        }
    }
    let Some(reason) = refusal else {
        cx.note(Stage::Authorize, true, || {
            if permitted.policies.is_empty() {
                "the route's requirements are met".to_owned()
            } else {
                format!("permitted by {}", permitted.policies.join(", "))
            }
        });
        return Ok(permitted);
    };
    cx.note(Stage::Authorize, false, || reason.log_detail());
    let mut outcome = Outcome::deny(Stage::Authorize, Some(route), reason)
        .to(cx.identity.as_ref())
        .with_limits(&cx.applied);
    outcome.policies = permitted.policies;
    outcome.shadow = permitted.shadow;
    Err(outcome.into())
}

/// The route's roles (any one) and scopes (all).
fn requirements(route: &Route, identity: &Identity) -> Option<Reason> {
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
