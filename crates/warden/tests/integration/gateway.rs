//! The proxy itself over real sockets: routing answers, concealment, upstream failures,
//! content negotiation, streaming, hop-by-hop hygiene, other identity sources, JWKS
//! refresh, the decision log and the admin listener.
use crate::common;

use std::net::SocketAddr;
use std::time::Duration;

use argon2::PasswordHasher;
use argon2::password_hash::SaltString;
use common::{
    Upstream, client, fixture, gateway, gateway_with_admin, headers_without_date, raw, raw_status,
};
use serde_json::{Value, json};
use warden::gateway::Gateway;
use warden_core::auth::api_key::hash_api_key;
use warden_testkit::{Key, Token, read_key};

/// The `gateway` fixture: `/public` (GET, POST), `/slow`, `/me` behind the JWT source
/// `jwt`, the concealed admin-only `/vault/{id}`; 500 ms upstream timeouts.
const BASE: &str = "gateway";

fn token(roles: &[&str]) -> String {
    Token::new()
        .sub("alice")
        .exp_in(600)
        .roles(roles)
        .kid("rsa-1")
        .sign_rs256()
}

/// The status and the problem `code` (empty for a non-problem body) of a request's answer.
async fn answer(request: reqwest::RequestBuilder) -> (u16, String) {
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    (status, body["code"].as_str().unwrap_or_default().to_owned())
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.proxy_addr)
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_are_405_with_allow() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    let resp = client().get(url(&gw, "/nowhere")).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(resp.json::<Value>().await.unwrap()["code"], "not_found");

    let resp = client().delete(url(&gw, "/public")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, POST, HEAD");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "method_not_allowed"
    );

    // HEAD is accepted wherever GET is.
    assert_eq!(
        client()
            .head(url(&gw, "/public"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(upstream.seen().len(), 1);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_concealed_route_refuses_with_the_very_404_of_an_unknown_path() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    let reference = client()
        .get(url(&gw, "/nowhere/at-all"))
        .send()
        .await
        .unwrap();
    let ref_headers = headers_without_date(reference.headers());
    let mut ref_body: Value = reference.json().await.unwrap();
    ref_body["instance"] = Value::Null;

    let viewer = format!("Bearer {}", token(&["viewer"]));
    let cases: Vec<(reqwest::Method, &str, Option<&str>)> = vec![
        (reqwest::Method::GET, "/vault/1", None), // no credentials
        (reqwest::Method::GET, "/vault/1", Some("Bearer junk")), // bad credentials
        (reqwest::Method::GET, "/vault/1", Some(&viewer)), // not allowed
        (reqwest::Method::DELETE, "/vault/1", None), // wrong method
        (reqwest::Method::GET, "/vault/1", Some("Bearer a b")), // malformed credentials
    ];
    for (method, path, auth) in cases {
        let mut req = client()
            .request(method.clone(), url(&gw, path))
            .header("accept", "application/json");
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{method} {path} {auth:?}");
        assert_eq!(
            headers_without_date(resp.headers()),
            ref_headers,
            "{method} {path} {auth:?}"
        );
        let mut body: Value = resp.json().await.unwrap();
        body["instance"] = Value::Null;
        assert_eq!(body, ref_body, "{method} {path} {auth:?}");
    }
    assert!(upstream.seen().is_empty());

    // Allowed: the request goes through, and the upstream's own 404 is replaced.
    let admin = format!("Bearer {}", token(&["admin"]));
    let resp = client()
        .get(url(&gw, "/vault/1"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client()
        .get(url(&gw, "/vault/missing"))
        .header("authorization", &admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(headers_without_date(resp.headers()), ref_headers);
    let mut body: Value = resp.json().await.unwrap();
    body["instance"] = Value::Null;
    assert_eq!(body, ref_body);
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_never_401_403_or_500() {
    // A port with nothing listening: bind, note it, close.
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    let resp = client().get(url(&gw, "/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "upstream_timeout"
    );
    gw.shutdown().await;

    let dead = Upstream {
        addr: closed,
        seen: upstream.seen.clone(),
    };
    let gw = gateway(fixture(BASE), &dead).await;
    let resp = client().get(url(&gw, "/public")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "upstream_unavailable"
    );
    // Refusals still come first: no credentials is 401 even with the upstream down.
    assert_eq!(
        client().get(url(&gw, "/me")).send().await.unwrap().status(),
        401
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn browsers_get_an_html_page_and_api_clients_get_problem_json() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    let resp = client()
        .get(url(&gw, "/me"))
        .header(
            "accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("www-authenticate").is_some());
    assert_eq!(resp.headers()["content-type"], "text/html; charset=utf-8");
    let page = resp.text().await.unwrap();
    assert!(page.contains("<h1>401 Unauthorized</h1>"), "{page}");
    let resp = client()
        .get(url(&gw, "/me"))
        .header("accept", "*/*")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    gw.shutdown().await;
}

#[tokio::test]
async fn bodies_stream_through_and_hop_by_hop_headers_stay_behind() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    let payload = vec![b'x'; 3 * 1024 * 1024];
    let resp = client()
        .post(url(&gw, "/public?q=1"))
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("proxy-authorization", "Basic c2VjcmV0")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers().get("x-upstream-secret").is_none(),
        "a header the upstream named in Connection leaked"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["bytes"], payload.len());
    let seen = upstream.last();
    assert_eq!(seen.target, "/public?q=1");
    assert_eq!(seen.body.len(), payload.len());
    for name in ["te", "upgrade", "proxy-authorization"] {
        assert!(seen.headers.get(name).is_none(), "{name} was forwarded");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_upstream_receives_exactly_the_normalized_path() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(BASE), &upstream).await;
    // `/public/../me` is `/me`: it needs credentials, whatever the prefix says.
    let r = raw(
        gw.proxy_addr,
        b"GET /public/../me HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 401, "{r}");
    for bad in [
        "/public/..%2Fme",
        "/public%2F..%2Fme",
        "/public\\..\\me",
        "/public/..;/me",
        "/../public",
        "/public%00",
    ] {
        let r = raw(
            gw.proxy_addr,
            format!("GET {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&r), 400, "{bad}: {r}");
        assert!(r.contains("application/problem+json"), "{bad}: {r}");
    }
    assert!(upstream.seen().is_empty());
    let r = raw(
        gw.proxy_addr,
        b"GET /%70ublic/./?a=%2F HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 404, "a trailing slash is another path: {r}");
    let r = raw(
        gw.proxy_addr,
        b"GET //%70ublic/.?a=%2F HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&r), 200, "{r}");
    assert_eq!(upstream.last().target, "/public?a=%2F");
    gw.shutdown().await;
}

#[tokio::test]
async fn api_keys_basic_and_session_cookies_authenticate() {
    let upstream = Upstream::start().await;
    let salt = SaltString::encode_b64(b"warden-test-salt").unwrap();
    let hash = argon2::Argon2::default()
        .hash_password(b"correct horse", &salt)
        .unwrap()
        .to_string();
    let config = fixture(BASE).append(&format!(
        r#"
[sources.keys]
type = "api_key"
header = "x-api-key"
keys = [{{ id = "ci", sha256 = "{key_hash}", subject = "ci-bot", roles = ["viewer"] }}]

[sources.ops]
type = "basic"
users = [{{ name = "ops", hash = "{hash}", roles = ["admin"] }}]

[sources.session]
type = "jwt"
algorithms = ["RS256"]
cookie = "session"
keys = [{{ pem_file = "{{keys}}/rsa.pub.pem" }}]

[[routes]]
path = "/any"
upstream = "app"
auth = ["keys", "ops", "session"]
"#,
        key_hash = hash_api_key("s3cret-key"),
    ));
    let gw = gateway(config, &upstream).await;
    let any = url(&gw, "/any");

    let resp = client().get(&any).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let challenges: Vec<_> = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        challenges,
        vec![
            "ApiKey realm=\"warden\", header=\"x-api-key\"",
            "Basic realm=\"warden\", charset=\"UTF-8\"",
            "Cookie realm=\"warden\", cookie-name=\"session\"",
        ]
    );

    let get = || client().get(&any);
    assert_eq!(
        answer(get().header("x-api-key", "s3cret-key")).await,
        (200, String::new())
    );
    assert_eq!(upstream.last().headers["x-warden-subject"], "ci-bot");
    assert_eq!(
        answer(get().header("x-api-key", "wrong")).await,
        (401, "invalid_credentials".to_owned())
    );

    assert_eq!(
        answer(get().basic_auth("ops", Some("correct horse")))
            .await
            .0,
        200
    );
    assert_eq!(upstream.last().headers["x-warden-roles"], "admin");
    assert_eq!(
        answer(get().basic_auth("ops", Some("wrong"))).await,
        (401, "invalid_credentials".to_owned())
    );
    assert_eq!(
        answer(get().basic_auth("nobody", Some("x"))).await,
        (401, "invalid_credentials".to_owned())
    );

    let cookie = format!("theme=dark; session={}", token(&["viewer"]));
    assert_eq!(answer(get().header("cookie", &cookie)).await.0, 200);
    assert_eq!(upstream.last().headers["x-warden-auth-source"], "session");
    assert_eq!(
        answer(get().header("cookie", "session=junk")).await,
        (401, "invalid_token".to_owned())
    );

    // Two credentials at once are refused rather than guessed at.
    let both = get()
        .header("x-api-key", "s3cret-key")
        .header("cookie", &cookie);
    assert_eq!(answer(both).await, (400, "invalid_request".to_owned()));
    gw.shutdown().await;
}

/// A JWKS endpoint on loopback whose document the test can change.
pub(crate) async fn jwks_server(doc: std::sync::Arc<std::sync::Mutex<Vec<u8>>>) -> SocketAddr {
    use http_body_util::Full;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let doc = doc.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    let body = doc.lock().unwrap().clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_refreshed_when_a_token_names_a_new_key() {
    let doc = std::sync::Arc::new(std::sync::Mutex::new(read_key("jwks.json")));
    let jwks = jwks_server(doc.clone()).await;
    let upstream = Upstream::start().await;
    let config = fixture("jwks-url").var("jwks_url", format!("http://{jwks}/jwks.json"));
    let gw = gateway(config, &upstream).await;
    let claims = Token::new().sub("alice").exp_in(600);
    let sign = |key: Key, kid: &str| claims.clone().kid(kid).sign(key);
    let me = url(&gw, "/me");
    let old = sign(Key::Rsa, "rsa-1");
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&old)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The identity provider rotates to a new key; the first token with its kid triggers a refresh.
    let new = sign(Key::Rsa2, "rsa-2");
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&new)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    *doc.lock().unwrap() = read_key("jwks-rotated.json");
    tokio::time::sleep(Duration::from_millis(5100)).await; // past the on-demand refresh interval
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&new)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The old key is gone from the set.
    let resp = client().get(&me).bearer_auth(&old).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    gw.shutdown().await;
}

#[tokio::test]
async fn every_decision_is_logged_as_one_json_line_and_counted() {
    let dir = std::env::temp_dir().join(format!("warden-log-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("decisions.jsonl");
    let upstream = Upstream::start().await;
    let config = fixture(BASE).replace(
        "decisions = \"off\"",
        &format!("decisions = {:?}", log.display().to_string()),
    );
    let gw = gateway_with_admin(config, &upstream).await;
    assert_eq!(
        client()
            .get(url(&gw, "/public"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = client()
        .get(url(&gw, "/me"))
        .bearer_auth("junk")
        .send()
        .await
        .unwrap();
    let instance = resp.json::<Value>().await.unwrap()["instance"]
        .as_str()
        .unwrap()
        .to_owned();

    let admin = gw.admin_addr.unwrap();
    let recent = client()
        .get(format!("http://{admin}/decisions/recent"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = recent
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(lines[0]["status"], 200);
    let deny = &lines[1];
    assert_eq!(
        format!("urn:uuid:{}", deny["decision_id"].as_str().unwrap()),
        instance
    );
    for (field, expected) in [
        ("outcome", json!("deny")),
        ("status", json!(401)),
        ("stage", json!("authenticate")),
        ("reason", json!("invalid_token")),
        ("detail", json!("garbled")),
        ("route", json!("/me")),
        ("method", json!("GET")),
        ("path", json!("/me")),
        ("client", json!("127.0.0.1")),
    ] {
        assert_eq!(deny[field], expected, "{field}");
    }
    assert!(deny["duration_us"].is_u64());
    assert!(deny["time"].as_str().unwrap().ends_with('Z'));

    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("warden_decisions_total{outcome=\"deny\",reason=\"invalid_token\",stage=\"authenticate\",status=\"401\"} 1"), "{metrics}");
    assert_eq!(
        client()
            .get(format!("http://{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The file gets the same lines.
    let mut written = String::new();
    for _ in 0..50 {
        written = std::fs::read_to_string(&log).unwrap_or_default();
        if written.lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(written.lines().count(), 2, "{written}");
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn readyz_says_whether_keys_and_state_are_loaded() {
    let upstream = Upstream::start().await;
    let ready = |gw: &Gateway| {
        let url = format!("http://{}/readyz", gw.admin_addr.unwrap());
        async move {
            let resp = client().get(url).send().await.unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        }
    };
    let gw = gateway_with_admin(fixture(BASE), &upstream).await;
    assert_eq!(ready(&gw).await, (200, "ready\n".to_owned()));
    gw.shutdown().await;

    // A key set from a URL that cannot be fetched, and a Redis that is not there: not ready,
    // and the answer says why. (Port 9 on loopback: nothing listens there.)
    let config = fixture("jwks-url")
        .var("jwks_url", "http://127.0.0.1:9/jwks.json")
        .append("[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:9\"\ntimeout = \"200ms\"\n");
    let gw = gateway_with_admin(config, &upstream).await;
    let (status, text) = ready(&gw).await;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("no keys yet for JWT source `idp`"), "{text}");
    assert!(text.to_lowercase().contains("redis"), "{text}");
    // Alive all the same.
    let alive = client()
        .get(format!("http://{}/healthz", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(alive.status(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stopping_gateway_finishes_requests_in_flight_and_says_it_is_draining() {
    let upstream = Upstream::start().await;
    let config = fixture(BASE).replace("upstream_timeout = \"500ms\"", "upstream_timeout = \"5s\"");
    let gw = gateway_with_admin(config, &upstream).await;
    let (proxy, admin) = (gw.proxy_addr, gw.admin_addr.unwrap());
    // The admin connection is opened before the stop, as a load balancer's would be.
    let checker = client();
    let ready = |c: &reqwest::Client| c.get(format!("http://{admin}/readyz")).send();
    assert_eq!(ready(&checker).await.unwrap().status(), 200);

    // `/slow` answers after two seconds; the stop comes while it is in flight.
    let in_flight = tokio::spawn(async move {
        client()
            .get(format!("http://{proxy}/slow"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    while upstream.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopping = tokio::spawn(gw.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let draining = ready(&checker).await.unwrap();
    assert_eq!(draining.status(), 503);
    assert!(draining.text().await.unwrap().contains("draining"));
    // No new connection is taken while draining.
    assert!(tokio::net::TcpStream::connect(proxy).await.is_err());

    assert_eq!(
        in_flight.await.unwrap().unwrap(),
        200,
        "the request in flight finished"
    );
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .expect("the gateway stopped once drained")
        .unwrap();
}
