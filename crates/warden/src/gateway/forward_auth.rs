//! Forward-auth: warden as another proxy's external authorizer, over HTTP.
//!
//! Three shapes of question reach the `[forward_auth] listen` listener:
//!
//! - **Forwarded headers** (NGINX `auth_request`, Caddy `forward_auth`, Traefik
//!   `forwardAuth`): any path; the original request is `X-Forwarded-Method` and
//!   `X-Forwarded-Uri` (or NGINX's `X-Original-URI`), its host `X-Forwarded-Host`, its client
//!   `X-Forwarded-For`, every other header as the client sent it.
//! - **Envoy's HTTP mode** (`ext_authz` with `http_service`): `PREFIX/original/path` with
//!   the original method and headers.
//! - **The NGINX replay** (`/_warden/replay`): NGINX's `auth_request` turns every answer but
//!   2xx, 401 and 403 into a 500, and sends its own page for those; the NGINX recipe in the
//!   README sends the client to this path instead, with the refusal warden encoded in
//!   `X-Warden-Refusal`, and gets back exactly warden's status, headers and body (a 401's
//!   `WWW-Authenticate` excepted: NGINX copies it from the subrequest itself).
//!
//! Only a peer in `[gateway] trusted_proxies` may ask: a question from anyone else is refused
//! (403) before any header of it is read, so a client that reaches this listener cannot
//! claim another method, path or address. The question is then decided by the whole
//! pipeline, through the same driver as the proxy's requests, and answered with 200 and the
//! identity headers (the proxy copies them upstream; each one is there, empty when the
//! identity has no value for it, so copying it replaces a client's forged value) and the
//! `Cookie` field to send without warden's own session and sign-in cookies, or with
//! warden's exact refusal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use rustls_pki_types::CertificateDer;
use warden_core::decision::{CookieChange, ForwardHeaders, Stage};
use warden_core::request::BodyView;
use warden_core::response::{self, Branding, Rendered};
use warden_core::{Decision, Engine, Reason, RequestView};

use super::Shared;
use super::body::{Body, from_rendered, full};
use super::decide::GatewayHost;
use super::outcome;
use crate::decision_log::RequestFacts;

/// How this front end names itself in traces.
const FRONT_END: &str = "forward_auth";
/// The path of the NGINX replay.
pub(crate) const REPLAY_PATH: &str = "/_warden/replay";
/// Asks for the refusal to be encoded in [`REFUSAL`] (the NGINX recipe sets it).
const WANT_REPLAY: HeaderName = HeaderName::from_static("x-warden-replay");
/// The refusal, encoded for the replay.
const REFUSAL: HeaderName = HeaderName::from_static("x-warden-refusal");
/// The largest encoded refusal accepted by the replay.
const MAX_REFUSAL: usize = 16 * 1024;

const FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const ORIGINAL_URI: HeaderName = HeaderName::from_static("x-original-uri");
const ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
const FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The original request, as the asking proxy describes it.
struct Question {
    method: Method,
    target: String,
    headers: HeaderMap,
    /// The client certificate the proxy reports (`[forward_auth] client_certificate_header`).
    certificates: Vec<CertificateDer<'static>>,
}

impl Question {
    /// Take the client certificate out of the configured header, which is sent at most once;
    /// one that is not a certificate makes the question malformed.
    fn with_certificates(mut self, header: Option<&HeaderName>) -> Result<Self, Unasked> {
        const BAD: Unasked = Unasked::Malformed(
            "The client certificate header is neither URL-encoded PEM nor base64 DER",
        );
        let Some(name) = header else {
            return Ok(self);
        };
        let value = single(&self.headers, name)?;
        self.headers.remove(name);
        if let Some(value) = value {
            let text = value.to_str().map_err(|_| BAD)?;
            self.certificates = super::client_certificate::decode(text).ok_or(BAD)?;
        }
        Ok(self)
    }
}

/// Why a question cannot be asked (400, or 403 for a peer that may not ask). Shared with the
/// gRPC `ext_authz` service, which refuses the same two ways.
pub(super) enum Unasked {
    /// The peer is not in `[gateway] trusted_proxies`.
    Untrusted,
    /// The question does not describe a request.
    Malformed(&'static str),
}

impl Unasked {
    /// The decision refusing the question `view` (the question itself, not the request it
    /// would describe): 403 from the network stage, or 400 from normalization.
    pub(super) fn refuse(
        self,
        engine: &Engine,
        view: &RequestView<'_>,
        at: SystemTime,
    ) -> Decision {
        let (stage, reason) = match self {
            Self::Untrusted => {
                tracing::warn!(peer = %view.peer, "an authorization question from a peer that is not a trusted proxy; refused");
                (
                    Stage::Network,
                    Reason::AddressDenied {
                        list: "trusted_proxies",
                        rule: 0,
                    },
                )
            }
            Self::Malformed(detail) => (Stage::Normalize, Reason::MalformedRequest { detail }),
        };
        engine.refuse(view, at, stage, reason)
    }
}

/// The `Cookie` field the proxy is to send upstream in place of the client's: every cookie
/// but warden's own session and sign-in cookies, in one field, empty when nothing is left;
/// none when the request carried no cookie. It is in every allow that has cookies, sessions
/// or not, so a recipe that copies it never loses an application's cookies.
fn forwarded_cookie(forward: &ForwardHeaders, request: &HeaderMap) -> Option<HeaderValue> {
    let mut fields = request.get_all(http::header::COOKIE).iter();
    let first = fields.next()?;
    match forward.cookie_change(request) {
        CookieChange::Replace(value) => Some(value),
        CookieChange::Remove => Some(HeaderValue::from_static("")),
        CookieChange::Keep => {
            let rest: Vec<&[u8]> = fields.map(HeaderValue::as_bytes).collect();
            if rest.is_empty() {
                return Some(first.clone());
            }
            let mut joined = first.as_bytes().to_vec();
            for field in rest {
                joined.extend_from_slice(b"; ");
                joined.extend_from_slice(field);
            }
            HeaderValue::from_bytes(&joined).ok()
        }
    }
}

/// Answer one question. Never fails: every error is an answer.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let at = SystemTime::now();
    let engine = shared.engine.load_full();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let envoy_prefix = engine
        .config()
        .forward_auth
        .as_ref()
        .map_or("/envoy", |f| f.envoy_prefix.as_str());

    let trusted = engine.config().gateway.trusted_proxies.contains(peer.ip());
    if trusted && path == REPLAY_PATH {
        return Ok(replay(&engine, &parts.headers));
    }
    let envoy = path == envoy_prefix
        || path
            .strip_prefix(envoy_prefix)
            .is_some_and(|rest| rest.starts_with('/'));
    let certificate_header = engine
        .config()
        .forward_auth
        .as_ref()
        .and_then(|f| f.client_certificate_header.as_ref());
    let question = if !trusted {
        Err(Unasked::Untrusted)
    } else if envoy {
        Ok(envoy_question(&parts, envoy_prefix))
    } else {
        forwarded_question(&parts.headers)
    }
    .and_then(|q| q.with_certificates(certificate_header));
    let want_replay = parts.headers.contains_key(WANT_REPLAY);
    let trace = shared.telemetry.as_ref().map(|t| {
        // The asking proxy's trace context is believed as the proxy listener believes a
        // trusted proxy's; an untrusted peer's never.
        let (method, headers) = match &question {
            Ok(q) => (&q.method, &q.headers),
            Err(_) => (&parts.method, &parts.headers),
        };
        t.request(method, headers, trusted, at, FRONT_END)
    });

    let (decision, facts_method, facts_target, question_headers, html, certificates) =
        match question {
            Ok(question) => {
                // Forward-auth questions carry no body (NGINX, Caddy and Traefik send none);
                // Envoy's HTTP mode may, when it is configured to buffer the body.
                let (body, body_view) = if envoy {
                    warden_core::body::split(body)
                } else {
                    (None, BodyView::Complete(&[]))
                };
                let view = RequestView::new(
                    &question.method,
                    &question.target,
                    &question.headers,
                    peer.ip(),
                )
                .with_body(body_view)
                .with_client_certificates(&question.certificates);
                let html = view.prefers_html();
                let mut host = GatewayHost::new(&shared, &engine, body);
                let decision = warden_core::drive(&engine, &view, at, &mut host).await;
                (
                    decision,
                    question.method,
                    question.target,
                    Some(question.headers),
                    html,
                    question.certificates,
                )
            }
            Err(unasked) => {
                let target = parts
                    .uri
                    .path_and_query()
                    .map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
                let view = RequestView::new(&parts.method, &target, &parts.headers, peer.ip());
                let html = view.prefers_html();
                let decision = unasked.refuse(&engine, &view, at);
                (
                    decision,
                    parts.method.clone(),
                    target,
                    None,
                    html,
                    Vec::new(),
                )
            }
        };

    let branding = Branding::from(engine.config());
    let mut answer = match response::render(&decision, branding, html) {
        Rendered::Forward(allow) => {
            let mut answer = Response::new(full(Bytes::new()));
            let headers = answer.headers_mut();
            // Every identity header is in the answer, empty when the identity has no such
            // value: a proxy that copies the answer's headers over the client's (Envoy's
            // `allowed_upstream_headers`, Caddy's `copy_headers`) only replaces those that
            // are there, so an absent one would let a client's forged value through.
            // NGINX sends no header whose value is empty.
            for name in allow.headers.remove.iter() {
                headers.insert(name.clone(), HeaderValue::from_static(""));
            }
            for (name, value) in &allow.headers.add {
                headers.insert(name.clone(), value.clone());
            }
            if let Some(cookie) = question_headers
                .as_ref()
                .and_then(|h| forwarded_cookie(&allow.headers, h))
            {
                headers.insert(http::header::COOKIE, cookie);
            }
            answer
        }
        Rendered::Respond(refusal) => {
            let mut refusal = refusal;
            response::add_decision_headers(
                refusal.headers_mut(),
                response::decision_headers(&decision),
            );
            if want_replay
                && refusal.status() != StatusCode::NO_CONTENT
                && let Some(encoded) = encode_refusal(&refusal)
            {
                refusal.headers_mut().insert(REFUSAL, encoded);
            }
            from_rendered(refusal)
        }
    };
    if decision.is_allowed() {
        response::add_decision_headers(answer.headers_mut(), response::decision_headers(&decision));
    }
    // A refusal's question is kept for the dashboard to explain, as the proxy keeps its
    // refused requests: replayed with the same peer, it is decided the same way.
    let facts = RequestFacts {
        client: decision.client,
        peer: peer.ip(),
        headers: question_headers.as_ref().filter(|_| !decision.is_allowed()),
        method: &facts_method,
        target: &facts_target,
        at,
        client_certificates: &certificates,
    };
    outcome::record(&shared, &decision, facts, answer.status());
    if let Some(trace) = trace {
        let path = facts_target.split('?').next().unwrap_or_default();
        trace.finish(&decision, decision.client, path, answer.status());
    }
    Ok(answer)
}

/// The original request a forward-auth question describes, for `warden explain --forwarded`
/// and `warden test` cases with `forwarded: true`: method, target and headers.
///
/// # Errors
/// What is missing, doubled or malformed, as the listener would answer it (400).
pub(crate) fn original_request(
    headers: &HeaderMap,
) -> Result<(Method, String, HeaderMap), &'static str> {
    match forwarded_question(headers) {
        Ok(q) => Ok((q.method, q.target, q.headers)),
        Err(Unasked::Malformed(detail)) => Err(detail),
        Err(Unasked::Untrusted) => Err("the asking peer is not a trusted proxy"),
    }
}

/// The original request from the forwarded headers: each at most once, the method and the
/// URI required, the URI in origin form.
fn forwarded_question(headers: &HeaderMap) -> Result<Question, Unasked> {
    let method = match single(headers, &FORWARDED_METHOD)? {
        Some(v) => v,
        None => single(headers, &ORIGINAL_METHOD)?.ok_or(Unasked::Malformed(
            "The forward-auth request has no X-Forwarded-Method",
        ))?,
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| Unasked::Malformed("X-Forwarded-Method is not a method"))?;
    let target = match (
        single(headers, &FORWARDED_URI)?,
        single(headers, &ORIGINAL_URI)?,
    ) {
        (Some(a), Some(b)) if a != b => {
            return Err(Unasked::Malformed(
                "X-Forwarded-Uri and X-Original-URI disagree",
            ));
        }
        (Some(uri), _) | (None, Some(uri)) => uri,
        (None, None) => {
            return Err(Unasked::Malformed(
                "The forward-auth request has no X-Forwarded-Uri or X-Original-URI",
            ));
        }
    };
    let target = target
        .to_str()
        .map_err(|_| Unasked::Malformed("X-Forwarded-Uri is not visible ASCII"))?;
    if !target.starts_with('/') || target.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(Unasked::Malformed(
            "X-Forwarded-Uri is not a path and query",
        ));
    }
    let target = target.to_owned();
    let forwarded_host = single(headers, &FORWARDED_HOST)?;
    let mut original = headers.clone();
    for name in [
        &FORWARDED_METHOD,
        &FORWARDED_URI,
        &ORIGINAL_URI,
        &ORIGINAL_METHOD,
        &WANT_REPLAY,
    ] {
        original.remove(name);
    }
    // The question's own framing is not the original request's.
    original.remove(http::header::TRANSFER_ENCODING);
    if let Some(host) = forwarded_host {
        original.insert(http::header::HOST, host);
    }
    Ok(Question {
        method,
        target,
        headers: original,
        certificates: Vec::new(),
    })
}

/// Envoy's HTTP mode: the original method and headers, the path behind the prefix.
fn envoy_question(parts: &http::request::Parts, prefix: &str) -> Question {
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let rest = path_and_query.get(prefix.len()..).unwrap_or("");
    let target = if rest.starts_with('/') {
        rest.to_owned()
    } else {
        format!("/{rest}")
    };
    let mut headers = parts.headers.clone();
    headers.remove(WANT_REPLAY);
    Question {
        method: parts.method.clone(),
        target,
        headers,
        certificates: Vec::new(),
    }
}

/// A header's value when it is sent at most once; twice is a malformed question.
fn single(headers: &HeaderMap, name: &HeaderName) -> Result<Option<HeaderValue>, Unasked> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().cloned();
    if values.next().is_some() {
        return Err(Unasked::Malformed(
            "A forwarded header of the forward-auth request is sent twice",
        ));
    }
    Ok(first)
}

/// A refusal as one header value: base64url of `{"status", "headers", "body"}`.
///
/// The challenges of a 401 are left out: NGINX's `auth_request` copies the subrequest's
/// `WWW-Authenticate` onto the client's 401 itself, so replaying them would send each twice.
fn encode_refusal(refusal: &Response<Bytes>) -> Option<HeaderValue> {
    let unauthorized = refusal.status() == StatusCode::UNAUTHORIZED;
    let headers: Vec<(&str, &str)> = refusal
        .headers()
        .iter()
        .filter(|(name, _)| *name != http::header::CONNECTION)
        .filter(|(name, _)| !(unauthorized && *name == http::header::WWW_AUTHENTICATE))
        .filter_map(|(name, value)| Some((name.as_str(), value.to_str().ok()?)))
        .collect();
    let doc = serde_json::json!({
        "status": refusal.status().as_u16(),
        "headers": headers,
        "body": String::from_utf8_lossy(refusal.body()),
    });
    let encoded = URL_SAFE_NO_PAD.encode(doc.to_string());
    (encoded.len() <= MAX_REFUSAL)
        .then(|| HeaderValue::from_str(&encoded).ok())
        .flatten()
}

/// The NGINX replay: the refusal warden encoded, re-issued exactly. Anything else is a 400.
fn replay(engine: &Engine, headers: &HeaderMap) -> Response<Body> {
    match decode_refusal(headers) {
        Some(response) => response,
        None => {
            let id = warden_core::DecisionId::new();
            let problem = response::Problem {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                detail: "The replay request carries no refusal of warden's.",
            };
            from_rendered(response::render_problem(
                id,
                &problem,
                Branding::from(engine.config()),
                false,
            ))
        }
    }
}

fn decode_refusal(headers: &HeaderMap) -> Option<Response<Body>> {
    let value = headers.get(REFUSAL)?.as_bytes();
    if value.len() > MAX_REFUSAL {
        return None;
    }
    let doc: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(value).ok()?).ok()?;
    let status = StatusCode::from_u16(u16::try_from(doc.get("status")?.as_u64()?).ok()?).ok()?;
    // Only refusals are replayed: never a success a forged header could turn a denial into.
    if !(status.is_client_error() || status.is_server_error()) {
        return None;
    }
    let mut response = Response::new(full(Bytes::from(doc.get("body")?.as_str()?.to_owned())));
    *response.status_mut() = status;
    for pair in doc.get("headers")?.as_array()? {
        let name = HeaderName::from_bytes(pair.get(0)?.as_str()?.as_bytes()).ok()?;
        let value = HeaderValue::from_str(pair.get(1)?.as_str()?).ok()?;
        if name != http::header::CONTENT_LENGTH && name != http::header::TRANSFER_ENCODING {
            response.headers_mut().append(name, value);
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn the_forwarded_headers_make_the_question() {
        let q = forwarded_question(&headers(&[
            ("x-forwarded-method", "DELETE"),
            ("x-forwarded-uri", "/docs/7?x=1"),
            ("x-forwarded-host", "api.example.com"),
            ("x-forwarded-for", "203.0.113.9"),
            ("authorization", "Bearer t"),
        ]))
        .ok()
        .unwrap();
        assert_eq!(q.method, Method::DELETE);
        assert_eq!(q.target, "/docs/7?x=1");
        assert_eq!(q.headers["host"], "api.example.com");
        assert_eq!(q.headers["authorization"], "Bearer t");
        assert!(!q.headers.contains_key("x-forwarded-uri"));
        assert_eq!(q.headers["x-forwarded-for"], "203.0.113.9");
    }

    #[test]
    fn missing_doubled_or_malformed_forwarded_headers_are_refused() {
        for bad in [
            headers(&[("x-forwarded-uri", "/a")]),
            headers(&[("x-forwarded-method", "GET")]),
            headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/a"),
                ("x-forwarded-uri", "/b"),
            ]),
            headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/a"),
                ("x-original-uri", "/b"),
            ]),
            headers(&[("x-forwarded-method", "GET"), ("x-forwarded-uri", "a/b")]),
            headers(&[
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "http://evil.example/a"),
            ]),
            headers(&[("x-forwarded-method", "G E T"), ("x-forwarded-uri", "/a")]),
        ] {
            assert!(
                matches!(forwarded_question(&bad), Err(Unasked::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_refusal_survives_the_replay_and_a_success_never_does() {
        let refusal = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", "7")
            .header("content-type", "application/problem+json")
            .body(Bytes::from_static(br#"{"status":429}"#))
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(REFUSAL, encode_refusal(&refusal).unwrap());
        let replayed = decode_refusal(&h).unwrap();
        assert_eq!(replayed.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(replayed.headers()["retry-after"], "7");

        let forged = URL_SAFE_NO_PAD.encode(r#"{"status":200,"headers":[],"body":"ok"}"#);
        h.insert(REFUSAL, HeaderValue::from_str(&forged).unwrap());
        assert!(decode_refusal(&h).is_none(), "a 200 is never replayed");
        h.insert(REFUSAL, HeaderValue::from_static("%%%"));
        assert!(decode_refusal(&h).is_none());
    }

    #[test]
    fn a_replayed_401_leaves_its_challenges_to_nginx() {
        let refusal = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", r#"Bearer realm="warden""#)
            .header("cache-control", "no-store")
            .body(Bytes::from_static(br#"{"status":401}"#))
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert(REFUSAL, encode_refusal(&refusal).unwrap());
        let replayed = decode_refusal(&h).unwrap();
        assert_eq!(replayed.status(), StatusCode::UNAUTHORIZED);
        assert!(!replayed.headers().contains_key("www-authenticate"));
        assert_eq!(replayed.headers()["cache-control"], "no-store");
    }
}
