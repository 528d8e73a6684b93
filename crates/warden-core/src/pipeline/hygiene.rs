//! Hygiene: the body limit and the WAF pass before anything is charged or verified, and the
//! CSRF checks once the credential is known to be a cookie.

use super::{Ctx, Outcome, Routed, Stop};
use crate::config::Config;
use crate::decision::{Reason, Stage};
use crate::hygiene::WafMode;
use crate::identity::CredentialKind;
use crate::protocol::{Answer, BodyRead, Need};
use crate::request::{BodyView, RequestView};

/// The body limit by `Content-Length`, then the WAF over the target, the headers and (when
/// the route's WAF reads it) the body, which the driver is asked for.
pub(super) fn body(
    config: &Config,
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let settings = &config.hygiene;
    let route = routed.route;
    let limit = route.hygiene.max_body.unwrap_or(settings.max_body);
    let declared = request
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        cx.note(Stage::Hygiene, false, || {
            format!("Content-Length above the limit of {limit} bytes")
        });
        let reason = Reason::BodyTooLarge { limit };
        return Err(Outcome::deny(Stage::Hygiene, Some(route), reason).into());
    }
    let mode = route.hygiene.waf.unwrap_or(settings.waf);
    if mode == WafMode::Off {
        return Ok(());
    }
    match cx.asked.take() {
        Some((Need::Body { .. }, Answer::Body(read))) => cx.body = Some(read),
        Some(_) => return Err(super::limits::misanswered(Some(route))),
        None if cx.driven() && request.body == BodyView::NotRead => {
            return Err(Stop::Need(Need::Body {
                limit: settings.waf_body_limit,
            }));
        }
        None => {}
    }
    let body = match (&cx.body, request.body) {
        (Some(BodyRead::Complete(bytes)), _) => Some(bytes.as_ref()),
        (Some(BodyRead::Unreadable), _) => {
            cx.note(Stage::Hygiene, false, || {
                "the body could not be read".to_owned()
            });
            let reason = Reason::MalformedRequest {
                detail: "The request body could not be read",
            };
            // Refused before authentication: no challenges, nothing about the route.
            let mut outcome = Outcome::deny(Stage::Hygiene, None, reason);
            outcome.route = Some(std::sync::Arc::clone(&route.name));
            return Err(outcome.into());
        }
        (Some(BodyRead::TooLarge), _) | (None, BodyView::TooLarge) if mode == WafMode::On => {
            let limit = u64::try_from(settings.waf_body_limit).unwrap_or(u64::MAX);
            cx.note(Stage::Hygiene, false, || {
                format!("body above the WAF's inspection limit of {limit} bytes")
            });
            let reason = Reason::BodyTooLarge { limit };
            return Err(Outcome::deny(Stage::Hygiene, Some(route), reason).into());
        }
        (Some(BodyRead::TooLarge), _) | (None, BodyView::TooLarge | BodyView::NotRead) => None,
        (None, BodyView::Complete(bytes)) => Some(bytes),
    };
    let content_type = request
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let target = &routed.target;
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
            cx.note(Stage::Hygiene, true, || "the WAF found nothing".to_owned());
            Ok(())
        }
        Some(detection) if mode == WafMode::On => {
            cx.note(Stage::Hygiene, false, || detection.describe());
            let reason = Reason::WafBlocked(detection);
            Err(Outcome::deny(Stage::Hygiene, Some(route), reason).into())
        }
        Some(detection) => {
            cx.note(Stage::Hygiene, true, || {
                format!("detect only: {}", detection.describe())
            });
            cx.detections.push(detection);
            Ok(())
        }
    }
}

/// CSRF checks on a cookie-authenticated request with an unsafe method.
pub(super) fn csrf(
    config: &Config,
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let route = routed.route;
    let Some(identity) = &cx.identity else {
        return Ok(());
    };
    if !matches!(
        identity.kind,
        CredentialKind::Cookie | CredentialKind::Session
    ) || !route.hygiene.csrf
        || !crate::hygiene::csrf::unsafe_method(request.method)
    {
        return Ok(());
    }
    match config.hygiene.csrf.check(request.headers) {
        Ok(proof) => {
            cx.note(Stage::Csrf, true, || format!("same-site proof: {proof}"));
            Ok(())
        }
        Err(detail) => {
            let outcome = Outcome::deny(Stage::Csrf, Some(route), Reason::CsrfRejected { detail })
                .to(cx.identity.as_ref());
            cx.note(Stage::Csrf, false, || detail.to_owned());
            Err(outcome.into())
        }
    }
}
