//! Envoy's gRPC `ext_authz`: `Check` called with the tonic client of `envoy-types` over a
//! real h2c socket, as Envoy calls it, against the fixture `ext-authz`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
use envoy_types::pb::envoy::service::auth::v3::{
    AttributeContext, CheckRequest, CheckResponse, DeniedHttpResponse, OkHttpResponse,
};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use warden::gateway::{Gateway, Listeners};
use warden_testkit::{Token, fixture};

use crate::common::admin_get;

const LIMIT: Duration = Duration::from_secs(10);

/// A gateway for the fixture with its gRPC (and admin) listener on free loopback ports.
async fn gateway() -> Gateway {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let gw = Gateway::start(
        fixture("ext-authz").config(),
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
            grpc: Some(loopback),
            ..Listeners::default()
        },
    )
    .await
    .unwrap();
    assert!(gw.grpc_addr.is_some());
    gw
}

/// An `ext_authz` client like Envoy's, connecting from `from` (any 127/8 address).
pub(crate) async fn envoy(gw: &Gateway, from: &str) -> AuthorizationClient<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{}", gw.grpc_addr.unwrap()))
        .unwrap()
        .local_address(Some(from.parse().unwrap()))
        .connect_timeout(LIMIT)
        .timeout(LIMIT);
    let channel = tokio::time::timeout(LIMIT, endpoint.connect())
        .await
        .expect("connected in time")
        .unwrap();
    AuthorizationClient::new(channel)
}

pub(crate) async fn check(
    client: &mut AuthorizationClient<Channel>,
    request: CheckRequest,
) -> CheckResponse {
    tokio::time::timeout(LIMIT, client.check(request))
        .await
        .expect("answered in time")
        .expect("a CheckResponse, not a gRPC error")
        .into_inner()
}

/// What Envoy sends for `method path` from the client `source` with these headers.
pub(crate) fn ask(
    method: &str,
    path: &str,
    source: &str,
    headers: &[(&str, &str)],
) -> CheckRequest {
    let mut map: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    map.insert(":authority".to_owned(), "api.example.com".to_owned());
    map.insert(":path".to_owned(), path.to_owned());
    map.insert(":method".to_owned(), method.to_owned());
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: source.to_owned(),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: method.to_owned(),
                    path: path.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "https".to_owned(),
                    headers: map,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

/// `request` with its HTTP attributes edited.
fn edit(mut request: CheckRequest, edit: impl FnOnce(&mut HttpRequest)) -> CheckRequest {
    let request_attributes = request.attributes.as_mut().unwrap().request.as_mut();
    edit(request_attributes.unwrap().http.as_mut().unwrap());
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn token(roles: &[&str]) -> String {
    Token::new()
        .sub("ada")
        .roles(roles.iter().copied())
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256()
}

/// The gRPC code and the denied HTTP response; fails on an allow.
fn denied(answer: &CheckResponse) -> (Code, &DeniedHttpResponse) {
    let code = Code::from(answer.status.as_ref().expect("a status").code);
    assert_ne!(code, Code::Ok, "{answer:?}");
    match &answer.http_response {
        Some(HttpResponse::DeniedResponse(denied)) => (code, denied),
        other => panic!("not a denied response: {other:?}"),
    }
}

fn allowed(answer: &CheckResponse) -> &OkHttpResponse {
    assert_eq!(
        answer.status.as_ref().expect("a status").code,
        0,
        "{answer:?}"
    );
    match &answer.http_response {
        Some(HttpResponse::OkResponse(ok)) => ok,
        other => panic!("not an OK response: {other:?}"),
    }
}

fn http_status(denied: &DeniedHttpResponse) -> i32 {
    denied.status.as_ref().expect("an HTTP status").code
}

/// The value of a header Envoy is told to send (each occurrence).
fn header<'a>(denied: &'a DeniedHttpResponse, name: &str) -> Vec<&'a str> {
    denied
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| h.key == name)
        .map(|h| h.value.as_str())
        .collect()
}

/// A problem document without its `instance` (the decision id).
fn problem(body: &str) -> serde_json::Value {
    let mut doc: serde_json::Value = serde_json::from_str(body).expect("problem+json");
    doc.as_object_mut().unwrap().remove("instance");
    doc
}

#[tokio::test]
async fn authentication_failures_are_unauthenticated_with_the_challenge() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;

    let answer = check(&mut envoy, ask("GET", "/me", "203.0.113.1", &[])).await;
    let (code, refusal) = denied(&answer);
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(http_status(refusal), 401);
    assert!(header(refusal, "www-authenticate")[0].starts_with("Bearer realm="));
    assert_eq!(
        header(refusal, "content-type"),
        ["application/problem+json"]
    );
    assert_eq!(problem(&refusal.body)["status"], 401);
    assert_eq!(
        answer.status.as_ref().unwrap().message,
        problem(&refusal.body)["detail"],
        "the message is the body's detail"
    );

    let forged = bearer("not.a.token");
    let answer = check(
        &mut envoy,
        ask("GET", "/me", "203.0.113.1", &[("authorization", &forged)]),
    )
    .await;
    let (code, refusal) = denied(&answer);
    assert_eq!(code, Code::Unauthenticated);
    assert_eq!(http_status(refusal), 401);
    assert!(
        header(refusal, "www-authenticate")[0].contains("invalid_token"),
        "{refusal:?}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_viewer_is_denied_and_a_concealed_route_is_an_unknown_path() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let viewer = bearer(&token(&["viewer"]));
    let auth = [("authorization", viewer.as_str())];

    let answer = check(&mut envoy, ask("GET", "/admin", "203.0.113.2", &auth)).await;
    let (code, refusal) = denied(&answer);
    assert_eq!(code, Code::PermissionDenied);
    assert_eq!(http_status(refusal), 403);

    let concealed = check(&mut envoy, ask("GET", "/vault/7", "203.0.113.2", &auth)).await;
    let unknown = check(&mut envoy, ask("GET", "/nowhere", "203.0.113.2", &auth)).await;
    let (code, concealed) = denied(&concealed);
    let (unknown_code, unknown) = denied(&unknown);
    assert_eq!((code, unknown_code), (Code::NotFound, Code::NotFound));
    assert_eq!((http_status(concealed), http_status(unknown)), (404, 404));
    assert_eq!(problem(&concealed.body), problem(&unknown.body));
    let names = |d: &DeniedHttpResponse| -> Vec<String> {
        d.headers
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.clone())
            .collect()
    };
    assert_eq!(names(concealed), names(unknown));
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rate_limit_is_resource_exhausted_per_reported_client() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    for _ in 0..2 {
        let answer = check(&mut envoy, ask("GET", "/search", "203.0.113.3", &[])).await;
        let ok = allowed(&answer);
        let names: Vec<&str> = ok
            .response_headers_to_add
            .iter()
            .map(|h| h.header.as_ref().unwrap().key.as_str())
            .collect();
        assert!(names.contains(&"ratelimit"), "{names:?}");
    }
    let answer = check(&mut envoy, ask("GET", "/search", "203.0.113.3", &[])).await;
    let (code, refusal) = denied(&answer);
    assert_eq!(code, Code::ResourceExhausted);
    assert_eq!(http_status(refusal), 429);
    let retry_after: u64 = header(refusal, "retry-after")[0].parse().unwrap();
    assert!(retry_after > 0);
    assert_eq!(header(refusal, "ratelimit").len(), 1);

    // The client is the address Envoy reports, and forwarding headers are believed only when
    // that address is a trusted proxy (a balancer in front of Envoy), as on the proxy.
    let code = |answer: &CheckResponse| Code::from(answer.status.as_ref().unwrap().code);
    let cases = [
        ("203.0.113.3", "203.0.113.50", Code::ResourceExhausted),
        ("203.0.113.4", "203.0.113.3", Code::Ok),
        ("127.0.0.1", "203.0.113.3", Code::ResourceExhausted),
        ("127.0.0.1", "203.0.113.51", Code::Ok),
    ];
    for (source, forwarded_for, expected) in cases {
        let headers = [("x-forwarded-for", forwarded_for)];
        let answer = check(&mut envoy, ask("GET", "/search", source, &headers)).await;
        assert_eq!(code(&answer), expected, "{source} for {forwarded_for}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn an_allow_sets_the_identity_and_removes_what_the_client_forged() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let admin = bearer(&token(&["admin"]));
    let answer = check(
        &mut envoy,
        ask(
            "GET",
            "/admin?x=1",
            "203.0.113.5",
            &[
                ("authorization", &admin),
                ("x-warden-subject", "mallory"),
                ("x-warden-scopes", "everything"),
            ],
        ),
    )
    .await;
    let ok = allowed(&answer);
    let set: HashMap<&str, &str> = ok
        .headers
        .iter()
        .map(|h| {
            let header = h.header.as_ref().unwrap();
            assert_eq!(h.append_action, 2, "OVERWRITE_IF_EXISTS_OR_ADD");
            (header.key.as_str(), header.value.as_str())
        })
        .collect();
    assert_eq!(set["x-warden-subject"], "ada");
    assert_eq!(set["x-warden-roles"], "admin");
    assert_eq!(set["x-warden-auth-source"], "jwt");
    assert!(set.contains_key("x-warden-decision-id"));
    // Envoy removes after it sets: a header warden sets is overwritten, never removed; every
    // other identity header is removed.
    let removed: Vec<&str> = ok.headers_to_remove.iter().map(String::as_str).collect();
    assert!(removed.contains(&"x-warden-scopes"), "{removed:?}");
    assert!(!removed.iter().any(|n| set.contains_key(n)), "{removed:?}");
    for name in [
        "x-warden-subject",
        "x-warden-roles",
        "x-warden-scopes",
        "x-warden-auth-source",
        "x-warden-decision-id",
    ] {
        assert!(set.contains_key(name) || removed.contains(&name), "{name}");
    }
    gw.shutdown().await;
}

/// The `cookie` field an allow tells Envoy to send: `Some(value)` when it overwrites it,
/// `None` when it removes it; `Err` when it leaves the client's as it is.
fn cookie_sent(ok: &OkHttpResponse) -> Result<Option<&str>, ()> {
    let set: Vec<&str> = ok
        .headers
        .iter()
        .filter_map(|h| h.header.as_ref())
        .filter(|h| h.key.eq_ignore_ascii_case("cookie"))
        .map(|h| h.value.as_str())
        .collect();
    let removed = ok.headers_to_remove.iter().any(|n| n == "cookie");
    match (set.as_slice(), removed) {
        ([], false) => Err(()),
        ([value], false) => Ok(Some(value)),
        ([], true) => Ok(None),
        _ => panic!("cookie both set and removed, or set twice: {set:?}"),
    }
}

#[tokio::test]
async fn warden_s_session_cookies_never_reach_the_upstream_through_envoy() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let admin = bearer(&token(&["admin"]));
    let cases = [
        (
            "theme=dark; warden_session=stolen; lang=en",
            Ok(Some("theme=dark; lang=en")),
        ),
        // Nothing left: removed.
        ("warden_session=stolen;warden_session_login=x", Ok(None)),
        // None of warden's cookies: the client's field goes as it is, look-alikes included.
        ("theme=dark; warden_sessionx=1", Err(())),
    ];
    for (cookie, expected) in cases {
        let answer = check(
            &mut envoy,
            ask(
                "GET",
                "/admin",
                "203.0.113.9",
                &[("authorization", &admin), ("cookie", cookie)],
            ),
        )
        .await;
        assert_eq!(cookie_sent(allowed(&answer)), expected, "{cookie}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_body_envoy_sends_is_scanned_by_the_waf() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let post = |body: &str| {
        edit(
            ask(
                "POST",
                "/search",
                "203.0.113.6",
                &[("content-type", "application/json")],
            ),
            |http| http.body = body.to_owned(),
        )
    };
    let answer = check(&mut envoy, post(r#"{"filter": {"name": "x' OR 1=1--"}}"#)).await;
    let (code, refusal) = denied(&answer);
    assert_eq!((code, http_status(refusal)), (Code::PermissionDenied, 403));

    let request = post(r#"{"filter": {"name": "ada"}}"#);
    allowed(&check(&mut envoy, request).await);
    gw.shutdown().await;
}

#[tokio::test]
async fn missing_attributes_are_invalid_arguments_counted_and_never_ok() {
    let gw = gateway().await;
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let admin = bearer(&token(&["admin"]));
    let question = || ask("GET", "/admin", "203.0.113.7", &[("authorization", &admin)]);
    let no_method = edit(question(), |http| http.method.clear());
    let bad_path = edit(question(), |http| http.path = "admin".to_owned());
    let mut no_http = question();
    no_http.attributes.as_mut().unwrap().request = None;
    for request in [CheckRequest::default(), no_http, no_method, bad_path] {
        let answer = check(&mut envoy, request).await;
        let (code, refusal) = denied(&answer);
        assert_eq!(code, Code::InvalidArgument, "{answer:?}");
        assert_eq!(http_status(refusal), 400);
        assert_eq!(problem(&refusal.body)["status"], 400);
    }
    let metrics = admin_get(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"warden_decisions_total{outcome="deny",reason="bad_request",stage="normalize",status="400"} 4"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_is_not_a_trusted_proxy_is_denied_whatever_it_asks() {
    let gw = gateway().await;
    let mut stranger = envoy(&gw, "127.0.0.2").await;
    let admin = bearer(&token(&["admin"]));
    for request in [
        ask("GET", "/admin", "203.0.113.8", &[("authorization", &admin)]),
        ask("GET", "/search", "127.0.0.1", &[]),
        CheckRequest::default(),
    ] {
        let answer = check(&mut stranger, request).await;
        let (code, refusal) = denied(&answer);
        assert_eq!((code, http_status(refusal)), (Code::PermissionDenied, 403));
    }
    // The same question from the trusted proxy is allowed.
    let mut envoy = envoy(&gw, "127.0.0.1").await;
    let answer = check(
        &mut envoy,
        ask("GET", "/admin", "203.0.113.8", &[("authorization", &admin)]),
    )
    .await;
    allowed(&answer);
    let metrics = admin_get(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"warden_decisions_total{outcome="deny",reason="forbidden",stage="network",status="403"} 3"#),
        "{metrics}"
    );
    gw.shutdown().await;
}
