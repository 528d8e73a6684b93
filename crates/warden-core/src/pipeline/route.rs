//! Route: method and canonical path to a route (404, 405 with `Allow`), with one
//! lookup of the path. A CORS preflight is routed by the method it announces and answered
//! here; an actual cross-origin request gets its CORS grant here.

use http::Method;

use super::{Ctx, Outcome, Routed, Stop};
use crate::config::Config;
use crate::decision::{Reason, Stage, Verdict};
use crate::hygiene::cors;
use crate::normalize::Normalized;
use crate::request::RequestView;
use crate::route::MethodMatch;

pub(super) fn run<'e>(
    config: &'e Config,
    request: &RequestView<'_>,
    target: Normalized,
    cx: &mut Ctx,
) -> Result<Routed<'e>, Stop> {
    cx.path_lookups += 1;
    let Some(at_path) = config.router.lookup(&target.path) else {
        cx.note(Stage::Route, false, || "no route has this path".to_owned());
        return Err(Outcome::deny(Stage::Route, None, Reason::RouteNotFound).into());
    };
    // A preflight asks for the route of the method it announces; when that is no CORS
    // resource (or a concealed one), it is answered as any OPTIONS request.
    let mut preflight = None;
    if let Some(announced) = announced_method(config, request) {
        match at_path.method(&announced) {
            MethodMatch::Found(route) if route.hygiene.cors && !route.concealed => {
                let path_methods = match at_path.method(&Method::OPTIONS) {
                    MethodMatch::WrongMethod { allow, .. } => allow,
                    MethodMatch::Found(_) => route.methods.clone(),
                };
                preflight = Some((route, path_methods));
            }
            MethodMatch::WrongMethod {
                concealed: false, ..
            } => {
                let detail = "the requested method is not allowed";
                cx.note(Stage::Cors, false, || {
                    format!("preflight refused: {detail}")
                });
                let reason = Reason::CorsRejected { detail };
                return Err(Outcome::deny(Stage::Cors, None, reason).into());
            }
            _ => {}
        }
    }
    let (route, preflight) = match preflight {
        Some((route, path_methods)) => (route, Some(path_methods)),
        None => match at_path.method(request.method) {
            MethodMatch::Found(route) => (route, None),
            MethodMatch::WrongMethod { allow, concealed } => {
                cx.note(Stage::Route, false, || {
                    format!("the path exists, but not for {}", request.method)
                });
                let mut outcome =
                    Outcome::deny(Stage::Route, None, Reason::MethodNotAllowed { allow });
                if let Verdict::Deny(d) = &mut outcome.verdict {
                    d.concealed = concealed;
                }
                return Err(outcome.into());
            }
        },
    };
    cx.note(Stage::Route, true, || {
        format!(
            "route `{}` ({} {})",
            route.name, request.method, route.template
        )
    });
    Ok(Routed {
        route,
        target,
        params: at_path.into_params(),
        preflight,
    })
}

/// The method a CORS preflight announces, when CORS is configured and this is one.
fn announced_method(config: &Config, request: &RequestView<'_>) -> Option<Method> {
    config.hygiene.cors.as_ref()?;
    if !cors::is_preflight(request.method, request.headers) {
        return None;
    }
    let value = request
        .headers
        .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(value.as_bytes()).ok()
}

/// CORS for a CORS resource: a preflight is granted from the configuration or refused with
/// 403 and no CORS headers; an actual request from an allowed origin gets its grant.
pub(super) fn cors(
    config: &Config,
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let route = routed.route;
    let Some(settings) = config
        .hygiene
        .cors
        .as_ref()
        .filter(|_| route.hygiene.cors && !route.concealed)
    else {
        return Ok(());
    };
    let Some(path_methods) = &routed.preflight else {
        cx.cors = settings.actual(request.headers);
        return Ok(());
    };
    match settings.preflight(request.headers, path_methods) {
        Ok(grant) => {
            cx.note(Stage::Cors, true, || {
                format!("preflight from {:?} granted", grant.origin)
            });
            cx.cors = Some(grant);
            Err(Outcome {
                stage: Stage::Cors,
                route: Some(std::sync::Arc::clone(&route.name)),
                verdict: Verdict::Preflight,
                policies: Vec::new(),
                shadow: None,
                limits: Vec::new(),
            }
            .into())
        }
        Err(detail) => {
            cx.note(Stage::Cors, false, || {
                format!("preflight refused: {detail}")
            });
            let reason = Reason::CorsRejected { detail };
            Err(Outcome::deny(Stage::Cors, Some(route), reason).into())
        }
    }
}
