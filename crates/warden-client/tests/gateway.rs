//! The middleware against a real warden gateway on loopback: real RS256 tokens, real 401,
//! 403 and 429 answers from warden's own renderer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest_middleware::ClientWithMiddleware;
use warden::gateway::{Gateway, Listeners};
use warden_client::{BoxError, Error, RetryPolicy, SendChecked, TokenSource};
use warden_testkit::{Token, Upstream, fixture, now};

struct Setup {
    gateway: Gateway,
    upstream: Upstream,
}

impl Setup {
    /// A gateway running the `client` fixture (`/me`; `/admin`, role admin; `/scoped`, scope
    /// docs:write; `/limited`, one request per 2 s), in front of a recording upstream.
    async fn start() -> Self {
        let upstream = Upstream::start().await;
        let config = fixture("client").upstream(upstream.addr).config();
        let gateway = Gateway::start(
            config,
            Listeners {
                proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                admin: None,
                ..Listeners::default()
            },
        )
        .await
        .unwrap();
        Self { gateway, upstream }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.proxy_addr)
    }

    fn upstream_requests(&self) -> usize {
        self.upstream.seen().len()
    }
}

/// An RS256 token (kid `rsa-1`) issued two hours ago, expiring `expires_in` seconds from now.
fn token(roles: &[&str], scopes: &[&str], expires_in: i64) -> String {
    Token::new()
        .sub("vic")
        .roles(roles)
        .scopes(scopes)
        .iat(now() - 7200)
        .exp_in(expires_in)
        .kid("rsa-1")
        .sign_rs256()
}

/// Hands out `first`, then `next` on every refresh, and counts refreshes.
#[derive(Debug)]
struct Tokens {
    first: String,
    next: String,
    refreshes: AtomicUsize,
    rejected: Mutex<Vec<String>>,
}

impl Tokens {
    fn new(first: String, next: String) -> Arc<Self> {
        Arc::new(Self {
            first,
            next,
            refreshes: AtomicUsize::new(0),
            rejected: Mutex::new(Vec::new()),
        })
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl TokenSource for Tokens {
    async fn token(&self) -> Result<String, BoxError> {
        Ok(self.first.clone())
    }

    async fn refresh(&self, rejected: &str) -> Result<String, BoxError> {
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        self.rejected.lock().unwrap().push(rejected.to_owned());
        Ok(self.next.clone())
    }
}

fn client(tokens: &Arc<Tokens>) -> ClientWithMiddleware {
    warden::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let policy = RetryPolicy {
        max_attempts: 3,
        max_wait: Duration::from_secs(4),
        base: Duration::from_millis(50),
        retry_non_idempotent: false,
    };
    warden_client::client(http, Arc::clone(tokens), policy)
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_call_succeeds() {
    let setup = Setup::start().await;
    let expired = token(&["viewer"], &[], -3600);
    let tokens = Tokens::new(expired.clone(), token(&["viewer"], &[], 600));
    let resp = client(&tokens)
        .get(setup.url("/me"))
        .send_checked()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(*tokens.rejected.lock().unwrap(), vec![expired]);
    assert_eq!(
        setup.upstream_requests(),
        1,
        "the refused request never got through"
    );
    setup.gateway.shutdown().await;
}

#[tokio::test]
async fn a_viewer_on_an_admin_route_gets_a_typed_forbidden_without_refresh() {
    let setup = Setup::start().await;
    let tokens = Tokens::new(token(&["viewer"], &[], 600), token(&["viewer"], &[], 600));
    let err = client(&tokens)
        .get(setup.url("/admin"))
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
    let problem = problem.as_ref().unwrap();
    assert_eq!(problem.code.as_deref(), Some("forbidden"));
    assert_eq!(problem.status, Some(403));
    assert_eq!(problem.title.as_deref(), Some("Forbidden"));
    assert!(
        problem
            .instance
            .as_deref()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert!(required_scopes.is_empty());
    assert_eq!(tokens.refreshes(), 0);
    assert_eq!(setup.upstream_requests(), 0);
    setup.gateway.shutdown().await;
}

#[tokio::test]
async fn a_missing_scope_gives_the_required_scopes() {
    let setup = Setup::start().await;
    let tokens = Tokens::new(
        token(&["editor"], &["docs:read"], 600),
        token(&["editor"], &["docs:read"], 600),
    );
    let err = client(&tokens)
        .get(setup.url("/scoped"))
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
    assert_eq!(required_scopes, &["docs:write"]);
    assert_eq!(
        problem.as_ref().unwrap().code.as_deref(),
        Some("insufficient_scope")
    );
    assert_eq!(tokens.refreshes(), 0);
    setup.gateway.shutdown().await;
}

#[tokio::test]
async fn a_rate_limited_get_waits_for_retry_after_and_then_succeeds() {
    let setup = Setup::start().await;
    let tokens = Tokens::new(token(&["viewer"], &[], 600), token(&["viewer"], &[], 600));
    let client = client(&tokens);
    client
        .get(setup.url("/limited"))
        .send_checked()
        .await
        .unwrap();
    let started = Instant::now();
    let resp = client
        .get(setup.url("/limited"))
        .send_checked()
        .await
        .unwrap();
    let waited = started.elapsed();
    assert_eq!(resp.status(), 200);
    assert!(waited >= Duration::from_millis(900), "waited {waited:?}");
    assert!(waited < Duration::from_secs(5), "waited {waited:?}");
    assert_eq!(setup.upstream_requests(), 2);
    assert_eq!(tokens.refreshes(), 0);
    setup.gateway.shutdown().await;
}
