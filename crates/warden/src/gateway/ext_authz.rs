//! Envoy / Istio `ext_authz` over gRPC: `envoy.service.auth.v3.Authorization/Check` on
//! `[forward_auth] grpc_listen`, plain HTTP/2 (h2c).
//!
//! Only a peer in `[gateway] trusted_proxies` may ask; anyone else gets a denial (403,
//! `PERMISSION_DENIED`) before any attribute is read. The request is rebuilt from
//! `attributes.request.http`: `method`, `path` (path and query, as sent), `host` (the `Host`
//! header), `headers` (or `header_map`, with `encode_raw_headers`; pseudo-headers are left
//! out), `scheme` (as `X-Forwarded-Proto` when Envoy sent none), and `body` or `raw_body`
//! when Envoy buffers it (`with_request_body`): the WAF scans it as a complete body, or
//! treats it as too large when it is above `waf_body_limit` or Envoy sent only part of it.
//! A request without them is refused with 400 and `INVALID_ARGUMENT`. The certificate
//! Envoy's listener verified, `attributes.source.certificate` (URL-encoded PEM), is the
//! request's client certificate for the routes' `mtls` sources. Every question is
//! decided through the same driver and host as the proxy's requests, counted and logged.
//!
//! **The client address.** Envoy is trusted to report its own downstream peer,
//! `attributes.source.address`: that address is the view's peer, as if warden stood where
//! Envoy stands. The pipeline then reads `X-Forwarded-For` only when *that* address is a
//! trusted proxy (a load balancer in front of Envoy), exactly as on the proxy listener, so
//! a client talking to Envoy directly cannot forge its address; taking the gRPC peer
//! (Envoy) instead would believe any `X-Forwarded-For` a client sent whenever Envoy does
//! not append to it (`use_remote_address: false`, its default). Without a socket address
//! (a Unix socket downstream) the gRPC peer stands in, as in Envoy's HTTP mode; a socket
//! address that is not an IP address is a malformed question.
//!
//! **The answer.** An allow is `OK` with an `OkHttpResponse`: the identity headers to set
//! (`OVERWRITE_IF_EXISTS_OR_ADD`), the identity headers a client may have forged to remove,
//! the `cookie` field without warden's own session and sign-in cookies (overwritten, or
//! removed when nothing else is left; untouched when the request carries none of them),
//! and the `RateLimit` (and CORS) headers for the response. Envoy removes *after* it sets,
//! so a header warden sets is not also listed for removal: setting it already replaces any
//! value the client sent. A refusal is a `DeniedHttpResponse` with warden's exact status,
//! headers and body (a concealed route's is an unknown path's 404), and a
//! `google.rpc.Status` whose message is the body's detail, coded by `grpc::grpc_code`:
//!
//! | HTTP | gRPC |
//! |---|---|
//! | 400, 413, 414, 431 | `INVALID_ARGUMENT` (3) |
//! | 401 | `UNAUTHENTICATED` (16) |
//! | 403, 405, 451 | `PERMISSION_DENIED` (7) |
//! | 404 (unknown path or concealed route) | `NOT_FOUND` (5) |
//! | 429 | `RESOURCE_EXHAUSTED` (8) |
//! | 503 | `UNAVAILABLE` (14) |
//! | other 5xx | `INTERNAL` (13) |
//! | anything else (the 204 of a CORS preflight warden answers) | `PERMISSION_DENIED` (7) |
//!
//! A 405 is `PERMISSION_DENIED`, not `UNIMPLEMENTED`: the route exists and refuses the
//! method, while `UNIMPLEMENTED` on the authorization call itself reads as "this server
//! does not implement `Check`" to gRPC dashboards. Envoy only tells `OK` from the rest, and
//! sends the denied response whatever the code.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use envoy_types::ext_authz::v3::pb::{
    Address, Authorization, AuthorizationServer, CheckRequest, CheckResponse, DeniedHttpResponse,
    HeaderAppendAction, HeaderValue as EnvoyHeader, HeaderValueOption, HttpResponse, HttpStatus,
    OkHttpResponse,
};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::HttpRequest;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::Code;
use warden_core::decision::{Allow, CookieChange};
use warden_core::request::BodyView;
use warden_core::response::{self, Branding, Rendered};
use warden_core::{Decision, RequestView};

use super::Shared;
use super::decide::GatewayHost;
use super::forward_auth::Unasked;
use super::grpc::grpc_code;
use super::outcome;
use crate::decision_log::RequestFacts;

/// The gRPC method, as the target of a refusal that is about the call itself.
const CHECK_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";
/// Set by Envoy when it sent only the first `max_request_bytes` of the body.
const PARTIAL_BODY: HeaderName = HeaderName::from_static("x-envoy-auth-partial-body");
const FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// Serve `Check` over h2c on `listener` until `stop` changes; open connections then finish
/// the calls in flight and close.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    while let Some((stream, peer)) = super::accept(&listener, &mut stop).await {
        while connections.try_join_next().is_some() {}
        let service = AuthorizationServer::new(Authorizer {
            shared: Arc::clone(&shared),
            peer,
        });
        let stop = stop.clone();
        connections.spawn(async move {
            let conn = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(e) = super::until_stopped(conn, stop).await {
                tracing::debug!(error = %e, %peer, "ext_authz connection ended with an error");
            }
        });
    }
    drop(listener);
    super::drain(connections, &shared).await;
}

/// The `Authorization` service of one connection: its peer is the asking proxy.
#[derive(Debug)]
struct Authorizer {
    shared: Arc<Shared>,
    peer: SocketAddr,
}

#[tonic::async_trait]
impl Authorization for Authorizer {
    async fn check(
        &self,
        request: tonic::Request<CheckRequest>,
    ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
        let peer = self.peer.ip().to_canonical();
        let answer = check(&self.shared, peer, &request.into_inner()).await;
        Ok(tonic::Response::new(answer))
    }
}

/// The request Envoy asks about.
struct Question<'a> {
    method: Method,
    target: &'a str,
    headers: HeaderMap,
    client: IpAddr,
    body: BodyView<'a>,
    /// The certificate Envoy's downstream connection presented, when it did.
    certificates: Vec<CertificateDer<'static>>,
}

/// How this front end names itself in traces.
const FRONT_END: &str = "ext_authz";

/// Answer one question. Never fails: every error is a denial.
async fn check(shared: &Arc<Shared>, peer: IpAddr, request: &CheckRequest) -> CheckResponse {
    let at = SystemTime::now();
    let engine = shared.engine.load_full();
    let question = if engine.config().gateway.trusted_proxies.contains(peer) {
        question(request, peer, engine.config().hygiene.waf_body_limit)
    } else {
        Err(Unasked::Untrusted)
    };
    let asked = question.is_ok();
    let (decision, method, target, headers, view_peer, html, trace, certificates) = match question {
        Ok(q) => {
            let view = RequestView::new(&q.method, q.target, &q.headers, q.client)
                .with_body(q.body)
                .with_client_certificates(&q.certificates);
            let html = view.prefers_html();
            let trace = shared.telemetry.as_ref().map(|t| {
                // Envoy is a trusted proxy: the trace context of the request it describes is
                // believed, as the proxy listener believes a trusted proxy's.
                t.request(&q.method, &q.headers, true, at, FRONT_END)
            });
            let mut host = GatewayHost::new(shared, &engine, None);
            let decision = warden_core::drive(&engine, &view, at, &mut host).await;
            (
                decision,
                q.method,
                q.target,
                q.headers,
                q.client,
                html,
                trace,
                q.certificates,
            )
        }
        Err(unasked) => {
            let headers = HeaderMap::new();
            let view = RequestView::new(&Method::POST, CHECK_PATH, &headers, peer);
            let trace = shared
                .telemetry
                .as_ref()
                .map(|t| t.request(&Method::POST, &headers, false, at, FRONT_END));
            (
                unasked.refuse(&engine, &view, at),
                Method::POST,
                CHECK_PATH,
                headers,
                peer,
                false,
                trace,
                Vec::new(),
            )
        }
    };
    let (answer, status) = match response::render(&decision, Branding::from(engine.config()), html)
    {
        Rendered::Forward(allow) => (allowed(allow, &decision, &headers), StatusCode::OK),
        Rendered::Respond(mut refusal) => {
            response::add_decision_headers(
                refusal.headers_mut(),
                response::decision_headers(&decision),
            );
            let status = refusal.status();
            (denied(refusal, &decision), status)
        }
    };
    // A refusal's request is kept for the dashboard to explain, with the peer the engine
    // saw (Envoy's downstream): replayed, it is decided the same way.
    let facts = RequestFacts {
        client: decision.client,
        peer: view_peer,
        headers: Some(&headers).filter(|_| asked && !decision.is_allowed()),
        method: &method,
        target,
        at,
        client_certificates: &certificates,
    };
    outcome::record(shared, &decision, facts, status);
    if let Some(trace) = trace {
        let path = target.split('?').next().unwrap_or_default();
        trace.finish(&decision, decision.client, path, status);
    }
    answer
}

/// The request in `attributes.request.http`, from a trusted `peer`.
fn question(
    request: &CheckRequest,
    peer: IpAddr,
    body_limit: usize,
) -> Result<Question<'_>, Unasked> {
    let attributes = request.attributes.as_ref();
    let http = attributes
        .and_then(|a| a.request.as_ref())
        .and_then(|r| r.http.as_ref())
        .ok_or(Unasked::Malformed(
            "The check request carries no HTTP request",
        ))?;
    let method = Method::from_bytes(http.method.as_bytes())
        .map_err(|_| Unasked::Malformed("The check request has no valid method"))?;
    let target = http.path.as_str();
    if !target.starts_with('/') || target.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(Unasked::Malformed(
            "The path of the check request is not a path and query",
        ));
    }
    let headers = headers(http)?;
    let source = attributes
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.as_ref())
        .and_then(|a| a.address.as_ref());
    let client = match source {
        Some(Address::SocketAddress(socket)) => socket.address.parse().map_err(|_| {
            Unasked::Malformed("The source address of the check request is not an IP address")
        })?,
        _ => peer,
    };
    let certificates = attributes
        .and_then(|a| a.source.as_ref())
        .map_or(Ok(Vec::new()), |s| source_certificates(&s.certificate))?;
    let body = if http.raw_body.is_empty() {
        http.body.as_bytes()
    } else {
        http.raw_body.as_slice()
    };
    let partial = headers
        .get(&PARTIAL_BODY)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true"));
    let body = if partial || body.len() > body_limit {
        BodyView::TooLarge
    } else {
        BodyView::Complete(body)
    };
    Ok(Question {
        method,
        target,
        headers,
        client,
        body,
        certificates,
    })
}

/// `attributes.source.certificate`: the downstream's certificate, URL-encoded PEM (Envoy
/// fills it when its listener verified a client certificate). Envoy is a trusted proxy, so
/// it is believed to be what the connection presented; the route's `mtls` source still
/// judges its chain. Anything that is not certificates (URL-encoded PEM, or base64 DER as the
/// forward-auth header may carry) is a malformed question.
fn source_certificates(encoded: &str) -> Result<Vec<CertificateDer<'static>>, Unasked> {
    super::client_certificate::decode(encoded).ok_or(Unasked::Malformed(
        "The source certificate of the check request is not URL-encoded PEM",
    ))
}

/// The request's headers: `header_map` when Envoy sends raw headers, else `headers`;
/// pseudo-headers out, `Host` from `host`, `X-Forwarded-Proto` from `scheme` if missing.
fn headers(http: &HttpRequest) -> Result<HeaderMap, Unasked> {
    const BAD: Unasked = Unasked::Malformed("A header of the check request is not a valid header");
    let raw = http.header_map.as_ref().map_or(&[][..], |m| &m.headers[..]);
    let pairs: Vec<(&str, &[u8])> = if raw.is_empty() {
        http.headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes()))
            .collect()
    } else {
        raw.iter()
            .map(|h| {
                let value = if h.raw_value.is_empty() {
                    h.value.as_bytes()
                } else {
                    &h.raw_value[..]
                };
                (h.key.as_str(), value)
            })
            .collect()
    };
    let mut headers = HeaderMap::with_capacity(pairs.len() + 1);
    for (name, value) in pairs.into_iter().filter(|(n, _)| !n.starts_with(':')) {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| BAD)?;
        headers.append(name, HeaderValue::from_bytes(value).map_err(|_| BAD)?);
    }
    if !http.host.is_empty() {
        let host = HeaderValue::from_str(&http.host).map_err(|_| BAD)?;
        headers.insert(http::header::HOST, host);
    }
    if !http.scheme.is_empty() && !headers.contains_key(&FORWARDED_PROTO) {
        let scheme = HeaderValue::from_str(&http.scheme).map_err(|_| BAD)?;
        headers.insert(FORWARDED_PROTO, scheme);
    }
    Ok(headers)
}

/// `OK`: the identity headers set, the forgeable ones removed, warden's own cookies taken
/// out of `cookie` (Envoy forwards the original request: the rewritten field overwrites
/// it), the decision's response headers added.
fn allowed(allow: &Allow, decision: &Decision, request: &HeaderMap) -> CheckResponse {
    let set = &allow.headers.add;
    let overwrite = HeaderAppendAction::OverwriteIfExistsOrAdd;
    let response_headers = response::decision_headers(decision)
        .iter()
        .map(|(name, value)| {
            // As `add_decision_headers`: `Vary` joins what the upstream varies on.
            let action = if name == http::header::VARY {
                HeaderAppendAction::AppendIfExistsOrAdd
            } else {
                overwrite
            };
            option(name, value, action)
        })
        .collect();
    let mut headers: Vec<HeaderValueOption> =
        set.iter().map(|(n, v)| option(n, v, overwrite)).collect();
    let mut headers_to_remove: Vec<String> = allow
        .headers
        .remove
        .iter()
        .filter(|name| !set.iter().any(|(n, _)| n == *name))
        .map(|name| name.as_str().to_owned())
        .collect();
    match allow.headers.cookie_change(request) {
        CookieChange::Keep => {}
        CookieChange::Replace(cookie) => {
            headers.push(option(&http::header::COOKIE, &cookie, overwrite));
        }
        CookieChange::Remove => headers_to_remove.push(http::header::COOKIE.as_str().to_owned()),
    }
    let ok = OkHttpResponse {
        headers,
        headers_to_remove,
        response_headers_to_add: response_headers,
        ..OkHttpResponse::default()
    };
    CheckResponse {
        status: Some(rpc_status(Code::Ok, String::new())),
        http_response: Some(HttpResponse::OkResponse(ok)),
        ..CheckResponse::default()
    }
}

/// A denial carrying warden's refusal: its status, its headers (each value of a repeated
/// one kept), its body.
fn denied(refusal: Response<Bytes>, decision: &Decision) -> CheckResponse {
    let status = refusal.status();
    let mut headers: Vec<HeaderValueOption> = Vec::with_capacity(refusal.headers().len());
    for name in refusal.headers().keys() {
        if *name == http::header::CONNECTION || *name == http::header::CONTENT_LENGTH {
            continue; // Envoy frames its local reply itself.
        }
        for (i, value) in refusal.headers().get_all(name).iter().enumerate() {
            let action = if i == 0 {
                HeaderAppendAction::OverwriteIfExistsOrAdd
            } else {
                HeaderAppendAction::AppendIfExistsOrAdd
            };
            headers.push(option(name, value, action));
        }
    }
    let message = response::refusal_detail(decision)
        .unwrap_or_else(|| "Answered by warden itself, not forwarded.".to_owned());
    let denied = DeniedHttpResponse {
        status: Some(HttpStatus {
            code: i32::from(status.as_u16()),
        }),
        headers,
        body: String::from_utf8_lossy(refusal.body()).into_owned(),
    };
    CheckResponse {
        status: Some(rpc_status(grpc_code(status), message)),
        http_response: Some(HttpResponse::DeniedResponse(denied)),
        ..CheckResponse::default()
    }
}

fn rpc_status(code: Code, message: String) -> RpcStatus {
    RpcStatus {
        code: code.into(),
        message,
        details: Vec::new(),
    }
}

/// One header for Envoy: the value as text, or as bytes when it is not UTF-8.
fn option(name: &HeaderName, value: &HeaderValue, action: HeaderAppendAction) -> HeaderValueOption {
    let (text, raw) = match value.to_str() {
        Ok(text) => (text.to_owned(), Vec::new()),
        Err(_) => (String::new(), value.as_bytes().to_vec()),
    };
    HeaderValueOption {
        header: Some(EnvoyHeader {
            key: name.as_str().to_owned(),
            value: text,
            raw_value: raw,
        }),
        append_action: action.into(),
        ..HeaderValueOption::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use envoy_types::pb::envoy::config::core::v3::{
        Address as CoreAddress, HeaderMap as EnvoyHeaderMap, SocketAddress,
    };
    use envoy_types::pb::envoy::service::auth::v3::AttributeContext;
    use envoy_types::pb::envoy::service::auth::v3::attribute_context::{Peer, Request};

    use super::*;

    fn ask(http: HttpRequest, source: Option<&str>) -> CheckRequest {
        let source = source.map(|ip| Peer {
            address: Some(CoreAddress {
                address: Some(Address::SocketAddress(SocketAddress {
                    address: ip.to_owned(),
                    ..SocketAddress::default()
                })),
            }),
            ..Peer::default()
        });
        CheckRequest {
            attributes: Some(AttributeContext {
                source,
                request: Some(Request {
                    http: Some(http),
                    ..Request::default()
                }),
                ..AttributeContext::default()
            }),
        }
    }

    fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpRequest {
        HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            host: "api.example.com".to_owned(),
            scheme: "https".to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..HttpRequest::default()
        }
    }

    const ENVOY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn every_refusal_status_has_its_grpc_code_and_none_is_ok() {
        for (status, code) in [
            (400, Code::InvalidArgument),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::NotFound),
            (405, Code::PermissionDenied),
            (413, Code::InvalidArgument),
            (429, Code::ResourceExhausted),
            (451, Code::PermissionDenied),
            (500, Code::Internal),
            (503, Code::Unavailable),
            (204, Code::PermissionDenied),
        ] {
            assert_eq!(
                grpc_code(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
        for status in 100..=599 {
            let status = StatusCode::from_u16(status).unwrap();
            assert_ne!(grpc_code(status), Code::Ok, "{status}");
        }
    }

    #[test]
    fn the_request_is_rebuilt_from_the_attributes() {
        let request = ask(
            http(
                "DELETE",
                "/docs/7?x=1",
                &[
                    (":authority", "api.example.com"),
                    (":path", "/docs/7?x=1"),
                    ("authorization", "Bearer t"),
                    ("x-forwarded-for", "198.51.100.1"),
                ],
            ),
            Some("203.0.113.9"),
        );
        let q = question(&request, ENVOY, 1024).ok().unwrap();
        assert_eq!(q.method, Method::DELETE);
        assert_eq!(q.target, "/docs/7?x=1");
        assert_eq!(q.client, "203.0.113.9".parse::<IpAddr>().unwrap());
        assert_eq!(q.headers["host"], "api.example.com");
        assert_eq!(q.headers["authorization"], "Bearer t");
        assert_eq!(q.headers["x-forwarded-proto"], "https");
        assert_eq!(q.headers.len(), 4, "no pseudo-headers: {:?}", q.headers);
        assert_eq!(q.body, BodyView::Complete(b""));

        // Without a socket address, the asking proxy stands in.
        assert_eq!(
            question(&ask(http("GET", "/", &[]), None), ENVOY, 1024)
                .ok()
                .unwrap()
                .client,
            ENVOY
        );
    }

    #[test]
    fn raw_headers_and_bodies_are_read() {
        let mut h = http("POST", "/search", &[]);
        h.header_map = Some(EnvoyHeaderMap {
            headers: vec![
                EnvoyHeader {
                    key: "cookie".to_owned(),
                    raw_value: b"a=1".to_vec(),
                    ..EnvoyHeader::default()
                },
                EnvoyHeader {
                    key: "cookie".to_owned(),
                    raw_value: b"b=2".to_vec(),
                    ..EnvoyHeader::default()
                },
            ],
        });
        h.raw_body = b"q=1".to_vec();
        let request = ask(h, Some("203.0.113.9"));
        let q = question(&request, ENVOY, 1024).ok().unwrap();
        assert_eq!(q.headers.get_all("cookie").iter().count(), 2);
        assert_eq!(q.body, BodyView::Complete(b"q=1"));
        let q = question(&request, ENVOY, 2).ok().unwrap();
        assert_eq!(q.body, BodyView::TooLarge, "above the WAF's limit");

        let mut h = http("POST", "/search", &[("x-envoy-auth-partial-body", "true")]);
        h.body = "q=1".to_owned();
        let request = ask(h, None);
        assert_eq!(
            question(&request, ENVOY, 1024).ok().unwrap().body,
            BodyView::TooLarge
        );
    }

    #[test]
    fn missing_or_malformed_attributes_are_malformed() {
        let bad = [
            CheckRequest::default(),
            ask(http("", "/a", &[]), None),
            ask(http("G E T", "/a", &[]), None),
            ask(http("GET", "", &[]), None),
            ask(http("GET", "a/b", &[]), None),
            ask(http("GET", "http://evil.example/a", &[]), None),
            ask(http("GET", "/a b", &[]), None),
            ask(http("GET", "/a", &[("x-bad", "a\u{1}b")]), None),
            ask(http("GET", "/a", &[]), Some("not-an-address")),
        ];
        for request in &bad {
            assert!(
                matches!(question(request, ENVOY, 1024), Err(Unasked::Malformed(_))),
                "{request:?}"
            );
        }
    }

    #[test]
    fn header_values_go_as_text_or_as_bytes() {
        let mut headers = vec![option(
            &HeaderName::from_static("x-a"),
            &HeaderValue::from_static("1"),
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        )];
        headers.push(option(
            &HeaderName::from_static("x-b"),
            &HeaderValue::from_bytes(b"\xff").unwrap(),
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        ));
        let raw = headers[1].header.as_ref().unwrap();
        assert_eq!(
            (raw.value.as_str(), raw.raw_value.as_slice()),
            ("", &b"\xff"[..])
        );
        assert_eq!(
            headers[0].append_action,
            i32::from(HeaderAppendAction::OverwriteIfExistsOrAdd)
        );
    }
}
