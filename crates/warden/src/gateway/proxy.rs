//! One request through the gateway: view → decide → refuse or forward → log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use warden_core::config::UpstreamProtocol;
use warden_core::decision::{Allow, Verbosity};
use warden_core::request::BodyView;
use warden_core::response::{self, Branding, Rendered};
use warden_core::{Decision, Engine, Reason, RequestView};

use super::body::{Body, from_rendered};
use super::decide::GatewayHost;
use super::request_body::CappedBody;
use super::upstream::{self, UpstreamFailure};
use super::websocket::{self, Handshake};
use super::{ConnectionInfo, Shared, grpc, outcome};
use crate::decision_log::RequestFacts;
use crate::telemetry::RequestTrace;

/// How refusals are answered to this client.
#[derive(Debug, Clone, Copy)]
struct Form {
    /// An HTML page rather than problem+json.
    html: bool,
    /// A gRPC call: the status in `grpc-status`.
    grpc: bool,
}

/// Handle one request. Never fails: every error is an answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let at = SystemTime::now();
    let engine = shared.engine.load_full();
    if engine.config().sessions.is_some() && super::oidc::owns(request.uri().path()) {
        return Ok(super::oidc::handle(shared, peer, request).await);
    }
    let (mut parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
        .to_owned();
    let authority = parts.uri.authority().map(|a| a.as_str().to_owned());
    if let Some(authority) = &authority
        && !parts.headers.contains_key(header::HOST)
        && let Ok(value) = HeaderValue::from_str(authority)
    {
        // HTTP/2 names the host in `:authority`; the stages that read `Host` (CSRF) see it.
        parts.headers.insert(header::HOST, value);
    }
    let handshake = websocket::handshake(&parts);
    // The engine decides a WebSocket handshake as the `GET` it is, with no body: what
    // follows an upgrade is the tunnel, not a body to inspect.
    let method = match handshake {
        Some(Handshake::Http2) => Method::GET,
        _ => parts.method.clone(),
    };
    let (body, body_view) = match handshake {
        Some(_) => (None, BodyView::Complete(&[])),
        None => warden_core::body::split(body),
    };
    // The client certificate comes from the TLS connection only (never from a header).
    let client_certificates = parts
        .extensions
        .get::<ConnectionInfo>()
        .map(|info| Arc::clone(&info.client_certificates))
        .unwrap_or_else(|| Arc::from([]));
    let view = RequestView::new(&method, &target, &parts.headers, peer.ip())
        .with_body(body_view)
        .with_authority(authority.as_deref())
        .with_client_certificates(&client_certificates);
    let form = Form {
        html: view.prefers_html(),
        grpc: grpc::is_grpc(&parts.headers),
    };
    let tls = parts
        .extensions
        .get::<ConnectionInfo>()
        .is_some_and(|info| info.tls);
    let trace = shared.telemetry.as_ref().map(|t| {
        let trusted = engine.config().gateway.trusted_proxies.contains(peer.ip());
        t.request(&method, &parts.headers, trusted, at, "proxy")
    });

    let mut host = GatewayHost::new(&shared, &engine, body);
    let decision = warden_core::drive(&engine, &view, at, &mut host).await;
    let branding = Branding::from(engine.config());
    let mut kept_headers = None;
    let mut response = match response::render(&decision, branding, form.html) {
        Rendered::Forward(allow) => {
            let (read, unread) = host.into_body();
            let (body, exceeded) = CappedBody::new(read, unread, allow.body_limit);
            let upgrade = handshake
                .and_then(|h| Some((h, parts.extensions.remove::<hyper::upgrade::OnUpgrade>()?)));
            let upstream_request = Request::from_parts(parts, body);
            let exchange = Exchange {
                shared: &shared,
                engine: &engine,
                decision: &decision,
                allow,
                form,
                tls,
                trace: trace.as_ref(),
            };
            let mut answer = exchange.forward(upstream_request, upgrade).await;
            if exceeded.fired() {
                // The body outgrew the limit while streaming: 413, whatever the upstream made
                // of the cut-off request.
                let reason = Reason::BodyTooLarge {
                    limit: allow.body_limit,
                };
                answer = gateway_answer(decision.id, &reason, branding, form);
            }
            answer
        }
        Rendered::Respond(answer) if form.grpc && answer.status().as_u16() >= 400 => {
            kept_headers = Some(parts.headers);
            let detail = response::refusal_detail(&decision).unwrap_or_default();
            grpc::refusal(&answer, &detail)
        }
        Rendered::Respond(answer) => {
            kept_headers = Some(parts.headers);
            from_rendered(answer)
        }
    };
    response::add_decision_headers(
        response.headers_mut(),
        response::decision_headers(&decision),
    );
    let facts = RequestFacts {
        client: decision.client,
        peer: peer.ip(),
        headers: kept_headers.as_ref(),
        method: &method,
        target: &target,
        at,
        client_certificates: &client_certificates,
    };
    outcome::record(&shared, &decision, facts, response.status());
    if let Some(trace) = trace {
        let path = target.split('?').next().unwrap_or_default();
        trace.finish(&decision, decision.client, path, response.status());
    }
    Ok(response)
}

/// A refusal the gateway makes itself, outside the engine's decision (body, upstream).
fn gateway_answer(
    id: warden_core::DecisionId,
    reason: &Reason,
    branding: Branding<'_>,
    form: Form,
) -> Response<Body> {
    let rendered = response::render_reason(id, reason, &[], Verbosity::Public, branding, form.html);
    if form.grpc {
        return grpc::refusal(&rendered, &response::public_detail(reason));
    }
    from_rendered(rendered)
}

/// One allowed request on its way upstream.
struct Exchange<'a> {
    shared: &'a Shared,
    engine: &'a Engine,
    decision: &'a Decision,
    allow: &'a Allow,
    form: Form,
    tls: bool,
    /// The request's span, when tracing is on.
    trace: Option<&'a RequestTrace<'a>>,
}

impl Exchange<'_> {
    /// The problem answer for a failure of the gateway's own (502, 503, 504).
    fn failure(&self, failure: UpstreamFailure) -> Response<Body> {
        let problem = failure.problem();
        let branding = Branding::from(self.engine.config());
        let rendered =
            response::render_problem(self.decision.id, &problem, branding, self.form.html);
        if self.form.grpc {
            return grpc::refusal(&rendered, problem.detail);
        }
        from_rendered(rendered)
    }

    async fn forward(
        &self,
        mut request: Request<CappedBody>,
        upgrade: Option<(Handshake, hyper::upgrade::OnUpgrade)>,
    ) -> Response<Body> {
        let client = self.shared.upstream.load_full();
        let Some(pool) = client.pool(&self.allow.upstream) else {
            return self.failure(UpstreamFailure::Unavailable("no_upstream"));
        };
        let protocol = pool.upstream().protocol;
        let te_trailers = request
            .headers()
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        upstream::prepare_request_headers(
            request.headers_mut(),
            &self.allow.headers,
            self.decision.client,
            self.tls,
        );
        if te_trailers && protocol == UpstreamProtocol::Http2 {
            // The one `TE` HTTP/2 allows; gRPC servers expect it.
            request
                .headers_mut()
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some((handshake, _)) = &upgrade {
            if protocol != UpstreamProtocol::Http1 {
                tracing::warn!(decision_id = %self.decision.id, upstream = %self.allow.upstream, "a WebSocket needs an HTTP/1.1 upstream");
                return self.failure(UpstreamFailure::Unavailable("websocket_needs_http1"));
            }
            *request.method_mut() = Method::GET;
            websocket::prepare_upstream(*handshake, request.headers_mut());
        }
        *request.version_mut() = match protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };

        let span = self
            .trace
            .map(|t| t.upstream(&self.allow.upstream, request.headers_mut()));
        let started = std::time::Instant::now();
        let sent = client.send(pool, request, &self.allow.path_and_query).await;
        self.shared
            .metrics
            .upstream_histogram(&self.allow.upstream)
            .observe(started.elapsed().as_secs_f64());
        if let Some(span) = span {
            span.finish(match &sent {
                Ok(response) => Ok(response.status()),
                Err(UpstreamFailure::Timeout) => Err("timeout"),
                Err(UpstreamFailure::NoHealthyHost) => Err("no_healthy_host"),
                Err(UpstreamFailure::Unavailable(kind)) => Err(kind),
            });
        }
        match sent {
            Ok(mut response) => {
                if let Some((handshake, client_upgrade)) = upgrade
                    && response.status() == StatusCode::SWITCHING_PROTOCOLS
                {
                    let answer = websocket::client_answer(handshake, &response);
                    let upstream_upgrade = hyper::upgrade::on(&mut response);
                    websocket::tunnel(client_upgrade, upstream_upgrade, self.decision.id);
                    return answer;
                }
                if self.allow.concealed && response.status() == StatusCode::NOT_FOUND {
                    // The upstream's own 404 would differ from warden's: send the canonical one.
                    let branding = Branding::from(self.engine.config());
                    let rendered = response::not_found(self.decision.id, branding, self.form.html);
                    if self.form.grpc {
                        return grpc::refusal(
                            &rendered,
                            &response::public_detail(&Reason::RouteNotFound),
                        );
                    }
                    return from_rendered(rendered);
                }
                upstream::strip_hop_by_hop(response.headers_mut());
                response.map(BodyExt::boxed)
            }
            Err(failure) => {
                let kind = match failure {
                    UpstreamFailure::Timeout => "timeout",
                    UpstreamFailure::NoHealthyHost => "no_healthy_host",
                    UpstreamFailure::Unavailable(kind) => kind,
                };
                self.shared
                    .metrics
                    .upstream_errors
                    .with_label_values(&[kind])
                    .inc();
                tracing::warn!(decision_id = %self.decision.id, upstream = %self.allow.upstream, kind, "upstream failed");
                self.failure(failure)
            }
        }
    }
}
