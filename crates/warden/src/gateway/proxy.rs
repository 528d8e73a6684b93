//! One request through the gateway: view → decide → refuse or forward → log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use warden_core::decision::{Allow, Verbosity};
use warden_core::response::{self, Branding, Rendered};
use warden_core::{Decision, Engine, Reason, RequestView};

use super::Shared;
use super::body::{Body, from_rendered};
use super::decide::GatewayHost;
use super::outcome;
use super::request_body::CappedBody;
use super::upstream::{self, UpstreamFailure};
use crate::decision_log::RequestFacts;

/// Handle one request. Never fails: every error is an answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let at = SystemTime::now();
    let engine = shared.engine.load_full();
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
        .to_owned();
    let (body, body_view) = warden_core::body::split(body);
    let view =
        RequestView::new(&parts.method, &target, &parts.headers, peer.ip()).with_body(body_view);
    let html = view.prefers_html();

    let mut host = GatewayHost::new(&shared, &engine, body);
    let decision = warden_core::drive(&engine, &view, at, &mut host).await;
    let method = parts.method.clone();
    let branding = Branding::from(engine.config());
    let mut response = match response::render(&decision, branding, html) {
        Rendered::Forward(allow) => {
            let (read, unread) = host.into_body();
            let (body, exceeded) = CappedBody::new(read, unread, allow.body_limit);
            let upstream_request = Request::from_parts(parts, body);
            let mut answer =
                forward(&shared, &engine, &decision, allow, upstream_request, html).await;
            if exceeded.fired() {
                // The body outgrew the limit while streaming: 413, whatever the upstream made
                // of the cut-off request.
                let reason = Reason::BodyTooLarge {
                    limit: allow.body_limit,
                };
                answer = gateway_answer(decision.id, &reason, branding, html);
            }
            answer
        }
        Rendered::Respond(answer) => from_rendered(answer),
    };
    response::add_decision_headers(
        response.headers_mut(),
        response::decision_headers(&decision),
    );
    let facts = RequestFacts {
        client: decision.client,
        method: &method,
        target: &target,
        at,
    };
    outcome::record(&shared, &decision, facts, response.status());
    Ok(response)
}

/// A refusal the gateway makes itself, outside the engine's decision (body, upstream).
fn gateway_answer(
    id: warden_core::DecisionId,
    reason: &Reason,
    branding: Branding<'_>,
    html: bool,
) -> Response<Body> {
    from_rendered(response::render_reason(
        id,
        reason,
        &[],
        Verbosity::Public,
        branding,
        html,
    ))
}

async fn forward(
    shared: &Shared,
    engine: &Engine,
    decision: &Decision,
    allow: &Allow,
    mut request: Request<CappedBody>,
    html: bool,
) -> Response<Body> {
    let branding = Branding::from(engine.config());
    let failure = |failure: UpstreamFailure| {
        from_rendered(response::render_problem(
            decision.id,
            &failure.problem(),
            branding,
            html,
        ))
    };
    let Some(target) = engine.config().upstreams.get(&allow.upstream) else {
        return failure(UpstreamFailure::Unavailable("no_upstream"));
    };
    let Ok(uri) = upstream::upstream_uri(target, &allow.path_and_query) else {
        return failure(UpstreamFailure::Unavailable("bad_uri"));
    };
    let host = uri.authority().map(|a| a.as_str().to_owned());
    upstream::prepare_request_headers(
        request.headers_mut(),
        &allow.headers,
        decision.client,
        host.as_deref(),
    );
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_11;

    let client = shared.upstream.load_full();
    match client.send(request).await {
        Ok(mut response) => {
            if allow.concealed && response.status() == StatusCode::NOT_FOUND {
                // The upstream's own 404 would differ from warden's: send the canonical one.
                return from_rendered(response::not_found(decision.id, branding, html));
            }
            upstream::strip_hop_by_hop(response.headers_mut());
            response
                .headers_mut()
                .remove(http::header::TRANSFER_ENCODING);
            response.map(BodyExt::boxed)
        }
        Err(UpstreamFailure::Timeout) => {
            shared
                .metrics
                .upstream_errors
                .with_label_values(&["timeout"])
                .inc();
            tracing::warn!(decision_id = %decision.id, upstream = %allow.upstream, "upstream timed out");
            failure(UpstreamFailure::Timeout)
        }
        Err(UpstreamFailure::Unavailable(kind)) => {
            shared
                .metrics
                .upstream_errors
                .with_label_values(&[kind])
                .inc();
            tracing::warn!(decision_id = %decision.id, upstream = %allow.upstream, kind, "upstream unavailable");
            failure(UpstreamFailure::Unavailable(kind))
        }
    }
}
