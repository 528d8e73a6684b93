//! The layer around an axum app: every decision in process with `oneshot`, then over a real
//! socket with the real peer address, and refusals compared with the `warden` gateway's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, Path as UrlPath};
use axum::http::{HeaderMap, Method, Request, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::{Layer, ServiceExt};
use warden::gateway::{Gateway, Listeners};
use warden_core::{Config, DecisionId, Identity};
use warden_testkit::{Token, fixture};
use warden_tower::{ClientAddr, WardenLayer};

/// The `tower` fixture: `/public`, `/me` and `/admin` (role admin) behind a JWT source with
/// issuer `https://issuer.test` and audience `api`, the concealed `/vault/{id}`, `/limited`
/// (two requests an hour) and `/office` (127.0.0.1 only).
const CONFIG: &str = "tower";

fn config() -> Config {
    fixture(CONFIG).config()
}

fn token(sub: &str, roles: &[&str]) -> String {
    Token::new()
        .sub(sub)
        .iss("https://issuer.test")
        .aud("api")
        .exp_in(600)
        .roles(roles)
        .kid("rsa-1")
        .sign_rs256()
}

fn bearer(sub: &str, roles: &[&str]) -> String {
    format!("Bearer {}", token(sub, roles))
}

/// The app: what each handler saw, as JSON.
fn app(calls: Arc<AtomicUsize>) -> Router {
    let count = move || {
        calls.fetch_add(1, Ordering::SeqCst);
    };
    let seen = |uri: &Uri, headers: &HeaderMap, identity: Option<&Identity>| {
        json!({
            "path": uri.path(),
            "query": uri.query(),
            "subject": identity.map(|i| i.subject.clone()),
            "roles": identity.map(|i| i.roles.clone()),
            "x-warden-subject": headers.get("x-warden-subject").map(|v| v.to_str().unwrap()),
        })
        .to_string()
    };
    let (c1, c2, c3, c4) = (count.clone(), count.clone(), count.clone(), count.clone());
    Router::new()
        .route(
            "/public",
            get(
                move |uri: Uri, headers: HeaderMap, id: Option<Extension<Identity>>| async move {
                    c1();
                    seen(&uri, &headers, id.as_ref().map(|e| &e.0))
                },
            ),
        )
        .route(
            "/me",
            get(
                move |uri: Uri,
                      headers: HeaderMap,
                      Extension(id): Extension<Identity>,
                      Extension(_decision): Extension<DecisionId>| async move {
                    c2();
                    seen(&uri, &headers, Some(&id))
                },
            ),
        )
        .route(
            "/admin",
            get(
                move |uri: Uri, headers: HeaderMap, Extension(id): Extension<Identity>| async move {
                    c3();
                    seen(&uri, &headers, Some(&id))
                },
            )
            .post(|| async { "posted" }),
        )
        .route(
            "/vault/{id}",
            get(move |UrlPath(id): UrlPath<String>| async move {
                c4();
                if id == "1" {
                    (StatusCode::OK, "the secret").into_response()
                } else {
                    (StatusCode::NOT_FOUND, "the handler's own 404").into_response()
                }
            }),
        )
        .route("/limited", get(|| async { "limited" }))
        .route("/office", get(|| async { "office" }))
        .route("/not-configured", post(|| async { "never" }))
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

/// One request through a fresh app behind `layer`, in process.
async fn send(layer: &WardenLayer, request: Request<Body>) -> Answer {
    send_counting(layer, request, Arc::default()).await
}

async fn send_counting(
    layer: &WardenLayer,
    request: Request<Body>,
    calls: Arc<AtomicUsize>,
) -> Answer {
    let service = layer.layer(app(calls));
    let response = service.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes().to_vec(),
    }
}

fn get_req(path: &str, authorization: Option<&str>) -> Request<Body> {
    let mut builder =
        Request::get(path).extension(ClientAddr(SocketAddr::from(([127, 0, 0, 1], 40_000))));
    if let Some(a) = authorization {
        builder = builder.header("authorization", a);
    }
    builder.body(Body::empty()).unwrap()
}

fn assert_problem(a: &Answer, status: u16, code: &str) -> Value {
    assert_eq!(a.status.as_u16(), status);
    assert_eq!(a.header("content-type"), "application/problem+json");
    let body = a.json();
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code);
    assert!(body["instance"].as_str().unwrap().starts_with("urn:uuid:"));
    body
}

/// A problem document without its `instance` (unique per decision).
fn without_instance(mut body: Value) -> Value {
    body.as_object_mut().unwrap().remove("instance");
    body
}

#[tokio::test]
async fn no_credentials_get_a_challenge_and_never_reach_the_handler() {
    let layer = WardenLayer::from_config(config());
    let calls = Arc::new(AtomicUsize::new(0));
    let a = send_counting(&layer, get_req("/me", None), Arc::clone(&calls)).await;
    assert_problem(&a, 401, "unauthenticated");
    assert_eq!(a.header("www-authenticate"), "Bearer realm=\"warden\"");
    assert_eq!(a.header("cache-control"), "no-store");

    let a = send_counting(
        &layer,
        get_req("/me", Some("Bearer junk")),
        Arc::clone(&calls),
    )
    .await;
    assert_problem(&a, 401, "invalid_token");
    assert!(
        a.header("www-authenticate")
            .contains("error=\"invalid_token\"")
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "a refusal reached the handler"
    );
}

#[tokio::test]
async fn a_valid_token_reaches_the_handler_with_the_identity() {
    let layer = WardenLayer::from_config(config());
    let a = send(&layer, get_req("/me", Some(&bearer("alice", &["viewer"])))).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.json();
    assert_eq!(seen["subject"], "alice");
    assert_eq!(seen["roles"], json!(["viewer"]));
    assert_eq!(seen["x-warden-subject"], "alice");
    assert_eq!(seen["path"], "/me");
}

#[tokio::test]
async fn a_viewer_is_forbidden_an_admin_route() {
    let layer = WardenLayer::from_config(config());
    let a = send(&layer, get_req("/admin", Some(&bearer("vic", &["viewer"])))).await;
    let body = assert_problem(&a, 403, "forbidden");
    assert!(
        !body.to_string().contains("admin"),
        "public verbosity names no role"
    );
    assert!(a.headers.get("www-authenticate").is_none());

    let a = send(&layer, get_req("/admin", Some(&bearer("ada", &["admin"])))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["subject"], "ada");
}

#[tokio::test]
async fn an_unknown_path_is_the_canonical_404() {
    let layer = WardenLayer::from_config(config());
    let a = send(&layer, get_req("/nowhere", None)).await;
    let body = assert_problem(&a, 404, "not_found");
    assert_eq!(
        without_instance(body),
        json!({
            "type": "urn:warden:problem:not_found",
            "title": "Not Found",
            "status": 404,
            "detail": "No resource exists at this path.",
            "code": "not_found",
        })
    );
    // A route the app has but the configuration does not is refused too.
    let request = Request::post("/not-configured")
        .body(Body::empty())
        .unwrap();
    assert_problem(&send(&layer, request).await, 404, "not_found");
}

#[tokio::test]
async fn a_wrong_method_is_405_with_allow() {
    let layer = WardenLayer::from_config(config());
    let request = Request::delete("/public").body(Body::empty()).unwrap();
    let a = send(&layer, request).await;
    assert_problem(&a, 405, "method_not_allowed");
    assert_eq!(a.header("allow"), "GET, HEAD");
    // The app accepts POST /admin, the configuration does not.
    let request = Request::post("/admin")
        .header("authorization", bearer("ada", &["admin"]))
        .body(Body::empty())
        .unwrap();
    assert_problem(&send(&layer, request).await, 405, "method_not_allowed");
}

#[tokio::test]
async fn the_path_is_normalized_before_routing() {
    let layer = WardenLayer::from_config(config());
    let admin = bearer("ada", &["admin"]);
    let a = send(&layer, get_req("/public/../admin?x=1", Some(&admin))).await;
    assert_eq!(a.status, StatusCode::OK);
    let seen = a.json();
    assert_eq!(
        seen["path"], "/admin",
        "the handler sees what was authorized"
    );
    assert_eq!(seen["query"], "x=1");
    assert_eq!(seen["subject"], "ada");

    // ... and the normalized path is the one authorized: a viewer cannot sneak in.
    let a = send(
        &layer,
        get_req("/public/../admin", Some(&bearer("vic", &["viewer"]))),
    )
    .await;
    assert_problem(&a, 403, "forbidden");
    let a = send(&layer, get_req("/public/%2e%2e/admin", None)).await;
    assert!(a.status.is_client_error());
    assert_ne!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn client_sent_identity_headers_are_stripped() {
    let layer = WardenLayer::from_config(config());
    let mut request = get_req("/public", None);
    request
        .headers_mut()
        .insert("x-warden-subject", "mallory".parse().unwrap());
    let a = send(&layer, request).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["x-warden-subject"], Value::Null);
    assert_eq!(
        a.json()["subject"],
        Value::Null,
        "no identity on a public route"
    );

    let mut request = get_req("/me", Some(&bearer("alice", &[])));
    request
        .headers_mut()
        .insert("x-warden-subject", "mallory".parse().unwrap());
    let a = send(&layer, request).await;
    assert_eq!(a.json()["x-warden-subject"], "alice");
}

#[tokio::test]
async fn the_third_request_is_rate_limited() {
    let layer = WardenLayer::from_config(config());
    for remaining in ["1", "0"] {
        let a = send(&layer, get_req("/limited", None)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.header("ratelimit-policy"), "\"l\";q=2;w=3600");
        assert!(
            a.header("ratelimit")
                .starts_with(&format!("\"l\";r={remaining};t=")),
            "{}",
            a.header("ratelimit")
        );
    }
    let a = send(&layer, get_req("/limited", None)).await;
    assert_problem(&a, 429, "rate_limited");
    let retry: u64 = a.header("retry-after").parse().unwrap();
    assert!(retry > 0 && retry <= 1800, "{retry}");
    assert_eq!(a.header("ratelimit-policy"), "\"l\";q=2;w=3600");
    assert!(a.header("ratelimit").starts_with("\"l\";r=0;t="));

    // Clones of the layer share the state; a new layer starts afresh.
    let a = send(&layer.clone(), get_req("/limited", None)).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS);
    let fresh = WardenLayer::from_config(config());
    assert_eq!(
        send(&fresh, get_req("/limited", None)).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_concealed_route_is_a_404_like_any_unknown_path() {
    let layer = WardenLayer::from_config(config());
    let nowhere = send(&layer, get_req("/nowhere", None)).await;
    let nowhere_body = without_instance(nowhere.json());

    // Refused: no credentials, or the wrong role.
    for auth in [None, Some(bearer("vic", &["viewer"]))] {
        let a = send(&layer, get_req("/vault/1", auth.as_deref())).await;
        assert_problem(&a, 404, "not_found");
        assert_eq!(without_instance(a.json()), nowhere_body);
        assert!(a.headers.get("www-authenticate").is_none());
    }
    // Allowed, but the handler has no such resource: its own 404 is replaced.
    let admin = bearer("ada", &["admin"]);
    let a = send(&layer, get_req("/vault/2", Some(&admin))).await;
    assert_problem(&a, 404, "not_found");
    assert_eq!(without_instance(a.json()), nowhere_body);
    let names = |h: &HeaderMap| {
        let mut n: Vec<String> = h.keys().map(|k| k.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(names(&a.headers), names(&nowhere.headers));
    // Allowed and found.
    let a = send(&layer, get_req("/vault/1", Some(&admin))).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, b"the secret");
}

#[tokio::test]
async fn browsers_get_the_html_page() {
    let layer = WardenLayer::from_config(config());
    let request = Request::get("/me")
        .header("accept", "text/html,application/xhtml+xml;q=0.9")
        .body(Body::empty())
        .unwrap();
    let a = send(&layer, request).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.header("content-type"), "text/html; charset=utf-8");
}

#[tokio::test]
async fn revoked_tokens_and_decisions_are_seen() {
    let decisions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&decisions);
    let layer = WardenLayer::from_config(config()).on_decision(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let alice = bearer("alice", &["viewer"]);
    assert_eq!(
        send(&layer, get_req("/me", Some(&alice))).await.status,
        StatusCode::OK
    );
    layer.state().revoke_subject(
        "alice",
        SystemTime::now() + std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(3600),
    );
    let a = send(&layer, get_req("/me", Some(&alice))).await;
    assert_problem(&a, 401, "invalid_token");
    assert!(a.header("www-authenticate").contains("revoked"));
    assert_eq!(decisions.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn without_a_peer_address_the_client_is_unspecified() {
    let layer = WardenLayer::from_config(config());
    let request = Request::get("/office").body(Body::empty()).unwrap();
    assert_problem(&send(&layer, request).await, 403, "forbidden");
    let a = send(&layer, get_req("/office", None)).await;
    assert_eq!(a.status, StatusCode::OK);
}

#[tokio::test]
async fn repeated_refusals_ban_the_client() {
    let config = fixture(CONFIG)
        .append("\n[bans]\nfailures = 2\nwindow = \"1m\"\nduration = \"1m\"\n")
        .config();
    let layer = WardenLayer::from_config(config);
    for _ in 0..2 {
        assert_problem(
            &send(&layer, get_req("/me", None)).await,
            401,
            "unauthenticated",
        );
    }
    let a = send(&layer, get_req("/public", None)).await;
    assert_problem(&a, 429, "too_many_failures");
    assert!(a.header("retry-after").parse::<u64>().unwrap() <= 60);
    // Another client is not banned.
    let other = Request::get("/public")
        .extension(ClientAddr(SocketAddr::from(([127, 0, 0, 3], 1))))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&layer, other).await.status, StatusCode::OK);
}

#[tokio::test]
async fn errors_of_the_inner_service_pass_through() {
    #[derive(Debug, PartialEq)]
    struct Boom;
    let layer = WardenLayer::from_config(config());
    let failing = tower::service_fn(|_: Request<warden_core::body::CappedBody<Body>>| async {
        Err::<axum::response::Response, Boom>(Boom)
    });
    let service = layer.layer(failing);
    let error = service
        .clone()
        .oneshot(get_req("/public", None))
        .await
        .unwrap_err();
    assert_eq!(error, Boom);
    // A refusal never calls the inner service, so it cannot fail.
    let response = service.oneshot(get_req("/me", None)).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

// ---- over a real socket ----

/// Serve the app behind the layer on a free loopback port, with the real peer address.
async fn serve(layer: WardenLayer) -> SocketAddr {
    let layer = layer.peer_from::<ConnectInfo<SocketAddr>>();
    // Around the whole router, so the normalized path is the one routed; the outer router
    // only turns the layer's body into axum's.
    let app = Router::new().fallback_service(layer.layer(app(Arc::default())));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn client_from(local: IpAddr) -> reqwest::Client {
    warden::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(local)
        .build()
        .unwrap()
}

#[tokio::test]
async fn network_rules_see_the_real_peer_address() {
    let addr = serve(WardenLayer::from_config(config())).await;
    let url = format!("http://{addr}/office");

    let from_localhost = client_from([127, 0, 0, 1].into());
    let resp = from_localhost.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "office");

    let from_elsewhere = client_from([127, 0, 0, 2].into());
    let resp = from_elsewhere.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
    assert_eq!(
        body["detail"],
        "Requests from this address are not allowed."
    );

    // A token over the socket, for good measure.
    let resp = from_localhost
        .get(format!("http://{addr}/me"))
        .header("authorization", bearer("alice", &["viewer"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["subject"], "alice");
}

/// Status, headers (but `date` and `content-length`) and body (but `instance`).
async fn comparable(resp: reqwest::Response) -> (u16, Vec<(String, String)>, Value) {
    let status = resp.status().as_u16();
    let mut headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "content-length"))
        .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_owned()))
        .collect();
    headers.sort();
    let body: Value = resp.json().await.unwrap();
    (status, headers, without_instance(body))
}

#[tokio::test]
async fn refusals_are_the_gateways_refusals() {
    let layer_addr = serve(WardenLayer::from_config(config())).await;
    let gateway = Gateway::start(
        config(),
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: None,
            ..Listeners::default()
        },
    )
    .await
    .unwrap();
    let client = client_from([127, 0, 0, 1].into());
    let viewer = bearer("vic", &["viewer"]);
    let cases: Vec<(Method, &str, Option<&str>)> = vec![
        (Method::GET, "/me", None),
        (Method::GET, "/me", Some("Bearer junk")),
        (Method::GET, "/me", Some("Bearer a b")),
        (Method::GET, "/admin", Some(&viewer)),
        (Method::GET, "/nowhere", None),
        (Method::GET, "/vault/1", Some(&viewer)),
        (Method::DELETE, "/public", None),
    ];
    for (method, path, auth) in cases {
        let mut answers = Vec::new();
        for addr in [layer_addr, gateway.proxy_addr] {
            let mut req = client.request(method.clone(), format!("http://{addr}{path}"));
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            answers.push(comparable(req.send().await.unwrap()).await);
        }
        assert!(answers[0].0 >= 400, "{method} {path}: {}", answers[0].0);
        assert_eq!(answers[0], answers[1], "{method} {path}");
    }

    // The rate-limited refusal, with its headers.
    let mut answers = Vec::new();
    for addr in [layer_addr, gateway.proxy_addr] {
        let url = format!("http://{addr}/limited");
        for _ in 0..2 {
            let _ = client.get(&url).send().await.unwrap();
        }
        answers.push(comparable(client.get(&url).send().await.unwrap()).await);
    }
    assert_eq!(answers[0].0, 429);
    // `Retry-After` and `RateLimit` count down with the clock: compare their names only.
    let names = |h: &[(String, String)]| h.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&answers[0].1), names(&answers[1].1));
    assert_eq!(answers[0].2, answers[1].2);
}

// ---- bodies: the same limits and the same WAF as the gateway ----

/// A streamed body of the given chunks: no `Content-Length`, nothing known up front.
struct Chunked(std::collections::VecDeque<bytes::Bytes>);

impl http_body::Body for Chunked {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|c| Ok(http_body::Frame::data(c))))
    }
}

fn streamed(path: &str, chunks: &[&'static [u8]]) -> Request<Body> {
    let body = Chunked(
        chunks
            .iter()
            .map(|c| bytes::Bytes::from_static(c))
            .collect(),
    );
    Request::post(path)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(Body::new(body))
        .unwrap()
}

/// An app whose handlers read the whole body, counting the calls that got it.
fn reading_app(calls: Arc<AtomicUsize>) -> Router {
    let handler = move |body: bytes::Bytes| {
        let calls = Arc::clone(&calls);
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            format!("{} bytes", body.len())
        }
    };
    Router::new()
        .route("/upload", post(handler.clone()))
        .route("/search", post(handler))
}

#[tokio::test]
async fn a_streamed_body_past_the_limit_is_413_like_the_gateways() {
    let layer = WardenLayer::from_config(fixture("tower-bodies").config());
    let calls = Arc::new(AtomicUsize::new(0));
    let service = layer.layer(reading_app(Arc::clone(&calls)));
    let chunk: &'static [u8] = &[b'a'; 600];
    let response = service
        .clone()
        .oneshot(streamed("/upload", &[chunk, chunk]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "content_too_large");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "the handler never got the body"
    );
    // Within the limit, the handler gets all of it.
    let response = service
        .oneshot(streamed("/upload", &[chunk]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "600 bytes");
}

#[tokio::test]
async fn the_waf_reads_streamed_bodies_and_the_handler_still_gets_them() {
    let layer = WardenLayer::from_config(fixture("tower-bodies").config());
    let calls = Arc::new(AtomicUsize::new(0));
    let service = layer.layer(reading_app(Arc::clone(&calls)));
    let response = service
        .clone()
        .oneshot(streamed("/search", &[b"q=1' OR ", b"'1'='1"]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body: Value =
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["code"], "request_rejected");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // A harmless body is read for the WAF and then handed on whole.
    let response = service
        .oneshot(streamed("/search", &[b"q=hello", b"+world"]))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(text, "13 bytes");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---- a store shared with other deciders ----

/// The Redis at 127.0.0.1:6379 (the test suite's set-up starts it); keys of this test only,
/// under `prefix`, deleted when it ends.
struct RedisKeys(String);

impl Drop for RedisKeys {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.0);
        let Ok(out) = std::process::Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                "6379",
                "--scan",
                "--pattern",
                &pattern,
            ])
            .output()
        else {
            return;
        };
        for key in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", "6379", "del", key])
                .output();
        }
    }
}

#[tokio::test]
async fn layers_with_one_redis_store_enforce_one_limit() {
    assert!(
        std::net::TcpStream::connect("127.0.0.1:6379").is_ok(),
        "this test needs the Redis at 127.0.0.1:6379: `redis-server --daemonize yes --port 6379 --save ''`"
    );
    let prefix = format!(
        "warden-tower-test:{}:{}:",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let _keys = RedisKeys(prefix.clone());
    let shared = fixture(CONFIG).append(&format!(
        "[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nkey_prefix = \"{prefix}\"\ntimeout = \"2s\"\n"
    ));
    // Two instances of an app, each with its own connection to the same Redis.
    let layer = |config: Config| {
        let store = Arc::new(warden::state::Store::new(&config.state));
        WardenLayer::from_config(config).with_store(store)
    };
    let (a, b) = (layer(shared.config()), layer(shared.config()));
    assert_eq!(
        send(&a, get_req("/limited", None)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&b, get_req("/limited", None)).await.status,
        StatusCode::OK
    );
    // The limit (two by route) is spent across both: each instance now refuses.
    for layer in [&a, &b] {
        let answer = send(layer, get_req("/limited", None)).await;
        assert_problem(&answer, 429, "rate_limited");
    }
    // An instance counting in its own memory is not part of the fleet.
    let alone = WardenLayer::from_config(shared.config());
    assert_eq!(
        send(&alone, get_req("/limited", None)).await.status,
        StatusCode::OK
    );
}
