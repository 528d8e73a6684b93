//! The middleware against a real warden gateway on loopback: real RS256 tokens, real 401,
//! 403 and 429 answers from warden's own renderer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Response;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest_middleware::ClientWithMiddleware;
use serde_json::json;
use tokio::net::TcpListener;
use warden::gateway::{Gateway, Listeners};
use warden_client::{BoxError, Error, RetryPolicy, SendChecked, TokenSource};
use warden_core::Config;

const PUBLIC_KEY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/keys/rsa.pub.pem"
);
const PRIVATE_KEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/keys/rsa.key");

const CONFIG: &str = r#"
[log]
decisions = "off"

[upstreams.app]
url = "http://{upstream}"

[sources.jwt]
type = "jwt"
algorithms = ["RS256"]
keys = [{ kid = "rsa-1", pem_file = "{public_key}" }]

[[routes]]
name = "me"
path = "/me"
upstream = "app"
auth = ["jwt"]

[[routes]]
name = "admin"
path = "/admin"
upstream = "app"
auth = ["jwt"]
roles = ["admin"]

[[routes]]
name = "scoped"
path = "/scoped"
upstream = "app"
auth = ["jwt"]
scopes = ["docs:write"]

[[routes]]
name = "limited"
path = "/limited"
upstream = "app"
auth = ["jwt"]

[[limits]]
name = "l"
key = ["route"]
limit = 1
window = "2s"
routes = ["limited"]
"#;

/// An upstream that answers 200 to everything and counts requests.
async fn upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(
                            b"{\"upstream\":true}",
                        ))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, count)
}

struct Setup {
    gateway: Gateway,
    upstream_requests: Arc<AtomicUsize>,
}

impl Setup {
    async fn start() -> Self {
        let (addr, upstream_requests) = upstream().await;
        let text = CONFIG
            .replace("{upstream}", &addr.to_string())
            .replace("{public_key}", PUBLIC_KEY);
        let config = Config::parse(&text, Path::new("warden-client-test.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        let gateway = Gateway::start(
            config,
            Listeners {
                proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                admin: None,
            },
        )
        .await
        .unwrap();
        Self {
            gateway,
            upstream_requests,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway.proxy_addr)
    }

    fn upstream_requests(&self) -> usize {
        self.upstream_requests.load(Ordering::SeqCst)
    }
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// An RS256 token (kid `rsa-1`) expiring `expires_in` seconds from now.
fn token(roles: &[&str], scopes: &[&str], expires_in: i64) -> String {
    let key = EncodingKey::from_rsa_pem(&std::fs::read(PRIVATE_KEY).unwrap()).unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    let claims = json!({
        "sub": "vic",
        "roles": roles,
        "scope": scopes.join(" "),
        "iat": now() - 7200,
        "exp": now() + expires_in,
    });
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
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
