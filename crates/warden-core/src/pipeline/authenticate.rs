//! Authenticate: the one credential the request presents, verified by the route's
//! sources (or the identity an explanation assumes). A password is handed to the driver to
//! check; a token naming an unknown key asks the driver, once, to refresh the key sets.

use super::{Ctx, Outcome, Routed, Stop};
use crate::auth::{self, Verified};
use crate::decision::{Reason, Stage, TokenProblem};
use crate::protocol::{Answer, Need};
use crate::request::RequestView;

pub(super) fn run(
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let route = routed.route;
    if !route.authenticates() {
        cx.note(Stage::Authenticate, true, || {
            "public route: no credentials needed".to_owned()
        });
        return Ok(());
    }
    if let Some(assumed) = cx.assume.take() {
        cx.note(Stage::Authenticate, true, || {
            format!("assumed identity `{}`", assumed.subject)
        });
        cx.identity = Some(assumed);
        return Ok(());
    }
    let verify = |cx: &Ctx| auth::authenticate(&route.sources, request.headers, cx.now_secs());
    let verified = match cx.asked.take() {
        None => verify(cx),
        Some((Need::Password(_), Answer::Password(verdict))) => match verdict.0 {
            Some(identity) => identity
                .map(Verified::Identity)
                .ok_or(Reason::InvalidCredentials),
            None => Err(Reason::StateUnavailable),
        },
        Some((Need::Keys, Answer::Keys { changed: true })) => verify(cx),
        Some((Need::Keys, Answer::Keys { changed: false })) => {
            Err(Reason::InvalidToken(TokenProblem::UnknownKey))
        }
        Some(_) => return Err(super::limits::misanswered(Some(route))),
    };
    let identity = match verified {
        Ok(Verified::Identity(identity)) => identity,
        Ok(Verified::Password(check)) if cx.driven() => {
            return Err(Stop::Need(Need::Password(check)));
        }
        Ok(Verified::Password(check)) => match check.verify().0.flatten() {
            Some(identity) => identity,
            None => return Err(refuse(routed, cx, Reason::InvalidCredentials)),
        },
        Err(Reason::InvalidToken(TokenProblem::UnknownKey))
            if cx.driven()
                && !cx.keys_refreshed
                && route.sources.iter().any(|s| s.refreshable()) =>
        {
            // The key set may have changed since it was fetched: the driver refreshes it and
            // the token is verified again here, without running the stages before.
            cx.keys_refreshed = true;
            return Err(Stop::Need(Need::Keys));
        }
        Err(reason) => return Err(refuse(routed, cx, reason)),
    };
    cx.note(Stage::Authenticate, true, || {
        format!(
            "`{}` verified by source `{}`",
            identity.subject, identity.source
        )
    });
    cx.identity = Some(identity);
    Ok(())
}

fn refuse(routed: &Routed<'_>, cx: &mut Ctx, reason: Reason) -> Stop {
    cx.note(Stage::Authenticate, false, || reason.log_detail());
    Outcome::deny(Stage::Authenticate, Some(routed.route), reason).into()
}
