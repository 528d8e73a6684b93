//! The middleware against a scripted HTTP server on loopback: each path answers from a queue
//! of canned responses (200 when the queue is empty), optionally gated on a bearer token,
//! and counts what it receives.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use reqwest_middleware::ClientWithMiddleware;
use tokio::net::TcpListener;
use warden_client::{
    BoxError, Error, Idempotent, RetryPolicy, SendChecked, TokenSource, WardenMiddleware,
};

// ---------------------------------------------------------------------------------------
// The scripted server

/// One canned answer.
#[derive(Debug, Clone)]
struct Canned {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Canned {
    fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    fn ok() -> Self {
        Self::status(200).body("text/plain", "ok")
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &str, body: &str) -> Self {
        self.headers.push(("content-type", content_type.to_owned()));
        self.body = body.to_owned();
        self
    }

    fn invalid_token() -> Self {
        Self::status(401).header(
            "www-authenticate",
            r#"Bearer realm="scripted", error="invalid_token", error_description="The access token expired""#,
        )
    }
}

#[derive(Debug, Default)]
struct PathScript {
    queue: VecDeque<Canned>,
    /// When set, a request without `Bearer <this>` gets a 401 invalid_token.
    valid_token: Option<String>,
    /// How long that 401 takes.
    gate_delay: Duration,
    /// The `Authorization` header of every request, in order.
    seen: Vec<Option<String>>,
}

#[derive(Debug, Clone)]
struct Server {
    addr: SocketAddr,
    paths: Arc<Mutex<HashMap<String, PathScript>>>,
}

impl Server {
    async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths: Arc<Mutex<HashMap<String, PathScript>>> = Arc::default();
        let shared = Arc::clone(&paths);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = Arc::clone(&shared);
                        async move { Ok::<_, Infallible>(answer(&shared, &req).await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, paths }
    }

    fn script(&self, path: &str, answers: Vec<Canned>) {
        self.paths
            .lock()
            .unwrap()
            .entry(path.to_owned())
            .or_default()
            .queue
            .extend(answers);
    }

    fn gate(&self, path: &str, valid_token: &str) {
        self.gate_with_delay(path, valid_token, Duration::ZERO);
    }

    fn gate_with_delay(&self, path: &str, valid_token: &str, delay: Duration) {
        let mut paths = self.paths.lock().unwrap();
        let script = paths.entry(path.to_owned()).or_default();
        script.valid_token = Some(valid_token.to_owned());
        script.gate_delay = delay;
    }

    fn seen(&self, path: &str) -> Vec<Option<String>> {
        self.paths
            .lock()
            .unwrap()
            .get(path)
            .map(|p| p.seen.clone())
            .unwrap_or_default()
    }

    fn count(&self, path: &str) -> usize {
        self.seen(path).len()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn answer(
    paths: &Mutex<HashMap<String, PathScript>>,
    req: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let auth = req
        .headers()
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let (canned, delay) = {
        let mut paths = paths.lock().unwrap();
        let script = paths.entry(req.uri().path().to_owned()).or_default();
        script.seen.push(auth.clone());
        match &script.valid_token {
            Some(valid) if auth.as_deref() != Some(&format!("Bearer {valid}")) => {
                (Canned::invalid_token(), script.gate_delay)
            }
            _ => (
                script.queue.pop_front().unwrap_or_else(Canned::ok),
                Duration::ZERO,
            ),
        }
    };
    tokio::time::sleep(delay).await;
    let mut builder = Response::builder().status(canned.status);
    for (name, value) in &canned.headers {
        builder = builder.header(*name, value);
    }
    builder.body(Full::new(Bytes::from(canned.body))).unwrap()
}

// ---------------------------------------------------------------------------------------
// A counting token source

#[derive(Debug, Default)]
struct Tokens {
    first: &'static str,
    next: &'static str,
    fail_refresh: bool,
    refreshes: AtomicUsize,
    rejected: Mutex<Vec<String>>,
    /// Before answering a refresh, wait until this path has seen this many requests.
    hold_until: Option<(Server, &'static str, usize)>,
}

impl Tokens {
    fn new(first: &'static str, next: &'static str) -> Arc<Self> {
        Arc::new(Self {
            first,
            next,
            ..Self::default()
        })
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenSource for Tokens {
    async fn token(&self) -> Result<String, BoxError> {
        Ok(self.first.to_owned())
    }

    async fn refresh(&self, rejected: &str) -> Result<String, BoxError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.rejected.lock().unwrap().push(rejected.to_owned());
        if let Some((server, path, n)) = &self.hold_until {
            let deadline = Instant::now() + Duration::from_secs(5);
            while server.count(path) < *n && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if self.fail_refresh {
            return Err("the identity provider is down".into());
        }
        Ok(self.next.to_owned())
    }
}

// ---------------------------------------------------------------------------------------
// Clients

fn http() -> reqwest::Client {
    warden::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Small waits: the whole file runs in a few seconds.
fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        max_wait: Duration::from_millis(300),
        base: Duration::from_millis(20),
        retry_non_idempotent: false,
    }
}

fn with_max_wait(max_wait: Duration) -> RetryPolicy {
    RetryPolicy { max_wait, ..fast() }
}

fn client(tokens: &Arc<Tokens>, policy: RetryPolicy) -> ClientWithMiddleware {
    warden_client::client(http(), Arc::clone(tokens), policy)
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

// ---------------------------------------------------------------------------------------
// 401

#[tokio::test]
async fn invalid_token_is_refreshed_once_and_the_request_retried() {
    let server = Server::start().await;
    server.gate("/me", "fresh");
    let tokens = Tokens::new("stale", "fresh");
    let client = client(&tokens, fast());
    let resp = client.get(server.url("/me")).send_checked().await.unwrap();
    assert_eq!(resp.text().await.unwrap(), "ok");
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(*tokens.rejected.lock().unwrap(), vec!["stale"]);
    assert_eq!(server.seen("/me"), vec![bearer("stale"), bearer("fresh")]);

    // The refreshed token is kept for the next call.
    client.get(server.url("/me")).send_checked().await.unwrap();
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(server.seen("/me").last(), Some(&bearer("fresh")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_401s_cause_one_refresh() {
    let server = Server::start().await;
    // The 401s take a moment, so all hundred requests are on their way with the stale token
    // before the first refresh starts (a request that starts during a refresh waits for it).
    server.gate_with_delay("/docs", "fresh", Duration::from_millis(200));
    let tokens = Arc::new(Tokens {
        first: "stale",
        next: "fresh",
        // Hold the refresh until all hundred stale requests have been answered with 401.
        hold_until: Some((server.clone(), "/docs", 100)),
        ..Tokens::default()
    });
    let client = client(&tokens, fast());
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            let url = server.url("/docs");
            tokio::spawn(async move {
                client
                    .get(format!("{url}?n={i}"))
                    .send_checked()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(tokens.refreshes(), 1, "single-flight refresh");
    let seen = server.seen("/docs");
    assert_eq!(seen.len(), 200);
    assert_eq!(seen.iter().filter(|a| **a == bearer("stale")).count(), 100);
    assert_eq!(seen.iter().filter(|a| **a == bearer("fresh")).count(), 100);
}

#[tokio::test]
async fn a_401_after_the_refresh_is_returned_typed_and_not_looped() {
    let server = Server::start().await;
    server.script(
        "/me",
        vec![Canned::invalid_token(), Canned::invalid_token().body(
            "application/problem+json",
            r#"{"type":"urn:x:invalid_token","title":"Unauthorized","status":401,"code":"invalid_token","detail":"The access token expired."}"#,
        )],
    );
    let tokens = Tokens::new("stale", "also-stale");
    let err = client(&tokens, fast())
        .get(server.url("/me"))
        .send_checked()
        .await
        .unwrap_err();
    let Error::Unauthorized { problem, challenge } = &err else {
        panic!("expected Unauthorized, got {err:?}");
    };
    assert_eq!(
        problem.as_ref().unwrap().code.as_deref(),
        Some("invalid_token")
    );
    let challenge = challenge.as_ref().unwrap();
    assert_eq!(challenge.error.as_deref(), Some("invalid_token"));
    assert_eq!(challenge.realm.as_deref(), Some("scripted"));
    assert_eq!(server.count("/me"), 2, "exactly one retry");
    assert_eq!(tokens.refreshes(), 1);
    assert!(err.to_string().contains("invalid_token"), "{err}");
}

#[tokio::test]
async fn a_401_without_an_error_attribute_is_refreshed() {
    let server = Server::start().await;
    server.script(
        "/me",
        vec![Canned::status(401).header(
            "www-authenticate",
            r#"Basic realm="scripted", Bearer realm="scripted""#,
        )],
    );
    let tokens = Tokens::new("t1", "t2");
    client(&tokens, fast())
        .get(server.url("/me"))
        .send_checked()
        .await
        .unwrap();
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(server.seen("/me"), vec![bearer("t1"), bearer("t2")]);
}

#[tokio::test]
async fn a_401_with_invalid_request_or_insufficient_scope_is_not_refreshed() {
    let server = Server::start().await;
    server.script(
        "/bad",
        vec![Canned::status(401).header(
            "www-authenticate",
            r#"Bearer realm="scripted", error="invalid_request", error_description="Two credentials""#,
        )],
    );
    server.script(
        "/scope",
        vec![Canned::status(401).header(
            "www-authenticate",
            r#"Bearer error="insufficient_scope", scope="a""#,
        )],
    );
    let tokens = Tokens::new("t1", "t2");
    let client = client(&tokens, fast());
    for path in ["/bad", "/scope"] {
        let err = client
            .get(server.url(path))
            .send_checked()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
        assert_eq!(server.count(path), 1, "{path}");
    }
    assert_eq!(tokens.refreshes(), 0);
}

#[tokio::test]
async fn a_failing_refresh_is_a_typed_error() {
    let server = Server::start().await;
    server.gate("/me", "fresh");
    let tokens = Arc::new(Tokens {
        first: "stale",
        fail_refresh: true,
        ..Tokens::default()
    });
    let err = client(&tokens, fast())
        .get(server.url("/me"))
        .send_checked()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refresh(_)), "{err:?}");
    assert!(err.to_string().contains("identity provider is down"));
    assert_eq!(server.count("/me"), 1);
}

#[tokio::test]
async fn without_a_token_source_or_with_the_callers_own_credentials_nothing_is_refreshed() {
    let server = Server::start().await;
    server.gate("/me", "fresh");
    let plain = reqwest_middleware::ClientBuilder::new(http())
        .with(WardenMiddleware::new(fast()))
        .build();
    let err = plain
        .get(server.url("/me"))
        .send_checked()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }));

    let tokens = Tokens::new("stale", "fresh");
    let err = client(&tokens, fast())
        .get(server.url("/me"))
        .bearer_auth("mine")
        .send_checked()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }));
    assert_eq!(tokens.refreshes(), 0);
    assert_eq!(server.seen("/me"), vec![None, bearer("mine")]);
}

// ---------------------------------------------------------------------------------------
// 403

#[tokio::test]
async fn a_403_is_typed_with_scopes_and_problem_and_never_refreshed_or_retried() {
    let server = Server::start().await;
    server.script(
        "/docs/7",
        vec![
            Canned::status(403)
                .header(
                    "www-authenticate",
                    r#"Bearer realm="scripted", error="insufficient_scope", error_description="The access token lacks a required scope", scope="docs:read docs:write""#,
                )
                .body(
                    "application/problem+json",
                    r#"{"type":"urn:x:insufficient_scope","title":"Forbidden","status":403,
                        "detail":"The access token lacks the required scope: docs:write.",
                        "instance":"urn:uuid:0","code":"insufficient_scope",
                        "required_scopes":["docs:read","docs:write"]}"#,
                ),
        ],
    );
    server.script(
        "/admin",
        vec![Canned::status(403).body(
            "application/json; charset=utf-8",
            r#"{"code":"forbidden","required_scopes":["admin:all"]}"#,
        )],
    );
    let tokens = Tokens::new("t1", "t2");
    let client = client(
        &tokens,
        RetryPolicy {
            retry_non_idempotent: true,
            ..fast()
        },
    );
    let err = client
        .put(server.url("/docs/7"))
        .body("{}")
        .send_checked()
        .await
        .unwrap_err();
    let Error::Forbidden {
        problem,
        required_scopes,
    } = &err
    else {
        panic!("expected Forbidden, got {err:?}");
    };
    assert_eq!(required_scopes, &["docs:read", "docs:write"]);
    let problem = problem.as_ref().unwrap();
    assert_eq!(problem.code.as_deref(), Some("insufficient_scope"));
    assert_eq!(problem.status, Some(403));
    assert_eq!(problem.problem_type, "urn:x:insufficient_scope");
    assert_eq!(server.count("/docs/7"), 1);

    // Without a challenge, the scopes come from the problem document.
    let err = client
        .get(server.url("/admin"))
        .send_checked()
        .await
        .unwrap_err();
    let Error::Forbidden {
        problem,
        required_scopes,
    } = &err
    else {
        panic!("expected Forbidden, got {err:?}");
    };
    assert_eq!(required_scopes, &["admin:all"]);
    assert_eq!(problem.as_ref().unwrap().code.as_deref(), Some("forbidden"));
    assert_eq!(server.count("/admin"), 1);
    assert_eq!(tokens.refreshes(), 0, "a 403 never refreshes");
}

// ---------------------------------------------------------------------------------------
// 429 and 503

#[tokio::test]
async fn a_429_with_retry_after_in_seconds_is_waited_for() {
    let server = Server::start().await;
    server.script(
        "/search",
        vec![Canned::status(429).header("retry-after", "1")],
    );
    let tokens = Tokens::new("t1", "t2");
    let started = Instant::now();
    client(&tokens, with_max_wait(Duration::from_secs(2)))
        .get(server.url("/search"))
        .send_checked()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(server.count("/search"), 2);
}

#[tokio::test]
async fn a_503_with_an_http_date_is_waited_for() {
    let server = Server::start().await;
    // HTTP-dates have whole seconds: two seconds ahead is between one and two from now.
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    server.script(
        "/search",
        vec![Canned::status(503).header("retry-after", date)],
    );
    let tokens = Tokens::new("t1", "t2");
    let started = Instant::now();
    client(&tokens, with_max_wait(Duration::from_secs(3)))
        .get(server.url("/search"))
        .send_checked()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(800), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(server.count("/search"), 2);
}

#[tokio::test]
async fn the_ratelimit_field_is_honoured_without_retry_after() {
    let server = Server::start().await;
    server.script(
        "/search",
        vec![Canned::status(429).header("ratelimit", r#""per-client";r=0;t=1"#)],
    );
    let tokens = Tokens::new("t1", "t2");
    let started = Instant::now();
    client(&tokens, with_max_wait(Duration::from_secs(2)))
        .get(server.url("/search"))
        .send_checked()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(server.count("/search"), 2);
}

#[tokio::test]
async fn a_post_is_not_retried_unless_allowed() {
    let server = Server::start().await;
    let limited = || Canned::status(429).header("retry-after", "0");
    let tokens = Tokens::new("t1", "t2");

    server.script("/default", vec![limited()]);
    let err = client(&tokens, fast())
        .post(server.url("/default"))
        .body("payload")
        .send_checked()
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::RateLimited { retry_after: Some(d), .. } if d.is_zero()),
        "{err:?}"
    );
    assert_eq!(server.count("/default"), 1);

    server.script("/allowed", vec![limited()]);
    let permissive = RetryPolicy {
        retry_non_idempotent: true,
        ..fast()
    };
    client(&tokens, permissive)
        .post(server.url("/allowed"))
        .body("payload")
        .send_checked()
        .await
        .unwrap();
    assert_eq!(server.count("/allowed"), 2);

    server.script("/marked", vec![limited()]);
    client(&tokens, fast())
        .post(server.url("/marked"))
        .with_extension(Idempotent)
        .body("payload")
        .send_checked()
        .await
        .unwrap();
    assert_eq!(server.count("/marked"), 2);
}

#[tokio::test]
async fn a_retry_after_beyond_max_wait_fails_at_once() {
    let server = Server::start().await;
    server.script(
        "/search",
        vec![
            Canned::status(429)
                .header("retry-after", "120")
                .body("application/problem+json", r#"{"code":"rate_limited"}"#),
        ],
    );
    let tokens = Tokens::new("t1", "t2");
    let started = Instant::now();
    let err = client(&tokens, fast())
        .get(server.url("/search"))
        .send_checked()
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_millis(500));
    let Error::RateLimited {
        retry_after,
        problem,
    } = &err
    else {
        panic!("expected RateLimited, got {err:?}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(120)));
    assert_eq!(
        problem.as_ref().unwrap().code.as_deref(),
        Some("rate_limited")
    );
    assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));
    assert_eq!(server.count("/search"), 1);
}

#[tokio::test]
async fn without_retry_after_backoff_is_jittered_and_attempts_are_capped() {
    let server = Server::start().await;
    server.script("/busy", vec![Canned::status(429); 10]);
    server.script("/down", vec![Canned::status(503); 10]);
    let tokens = Tokens::new("t1", "t2");
    let policy = RetryPolicy {
        max_attempts: 4,
        max_wait: Duration::from_millis(50),
        base: Duration::from_millis(20),
        retry_non_idempotent: false,
    };
    let client = client(&tokens, policy);
    let started = Instant::now();
    let err = client
        .get(server.url("/busy"))
        .send_checked()
        .await
        .unwrap_err();
    // Three waits of at most 20, 40 and 50 ms.
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        matches!(
            err,
            Error::RateLimited {
                retry_after: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(server.count("/busy"), 4);

    let err = client
        .get(server.url("/down"))
        .send_checked()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable { .. }), "{err:?}");
    assert_eq!(server.count("/down"), 4);
}

#[tokio::test]
async fn other_errors_are_typed_with_their_problem() {
    let server = Server::start().await;
    server.script(
        "/gone",
        vec![Canned::status(404).body(
            "application/problem+json",
            r#"{"type":"urn:x:not_found","title":"Not Found","status":404,"code":"not_found"}"#,
        )],
    );
    server.script(
        "/html",
        vec![Canned::status(502).body("text/html", "<h1>{\"code\":1}</h1>")],
    );
    let tokens = Tokens::new("t1", "t2");
    let client = client(&tokens, fast());
    let err = client
        .get(server.url("/gone"))
        .send_checked()
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::NOT_FOUND));
    assert_eq!(err.problem().unwrap().code.as_deref(), Some("not_found"));
    let err = client
        .get(server.url("/html"))
        .send_checked()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Status {
                status: StatusCode::BAD_GATEWAY,
                problem: None
            }
        ),
        "{err:?}"
    );
}
