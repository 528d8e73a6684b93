//! The Redis state backend over real sockets: one limit shared by two gateways, outages of a
//! private Redis (fail closed and fail open) and its return, bans and revocations.
//!
//! The shared Redis at 127.0.0.1:6379 must answer (`.ci/run` starts it); every test uses a
//! key prefix of its own there and deletes only its own keys. Private servers are
//! `redis-server` children on free loopback ports.
use crate::common;
use crate::common::redis_server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Fixture, Upstream, client, fixture};
use redis_server::{Cleanup, PrivateRedis, SHARED, require_shared, unique_prefix};
use serde_json::{Value, json};
use warden::gateway::Gateway;
use warden_testkit::{Token, now};

use common::client_from;

/// An RS256 token signed with the test key; `iat` and `jti` only when given.
fn token(sub: &str, jti: Option<&str>, iat: Option<u64>) -> String {
    let mut token = Token::new().sub(sub).exp_in(600);
    if let Some(jti) = jti {
        token = token.jti(jti);
    }
    if let Some(iat) = iat {
        token = token.iat(iat);
    }
    token.kid("rsa-1").sign_rs256()
}

/// A Redis fixture (its `[state]` has a 200 ms timeout) on the Redis at `url`, with keys
/// under `prefix` and the fail mode `fail`.
fn redis_config(name: &str, url: &str, prefix: &str, fail: &str) -> Fixture {
    fixture(name)
        .var("redis_url", url)
        .var("key_prefix", prefix)
        .var("fail", fail)
}

async fn start(config: &Fixture, upstream: &Upstream) -> Gateway {
    common::gateway_with_admin(config.clone(), upstream).await
}

fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no `{name}` header; headers: {:?}", resp.headers()))
        .to_str()
        .unwrap()
        .to_owned()
}

/// A refusal's `Retry-After` (a positive integer), content type and problem `code`.
async fn refusal(resp: reqwest::Response, status: u16) -> (u64, String) {
    assert_eq!(resp.status(), status, "headers: {:?}", resp.headers());
    let retry: u64 = header(&resp, "retry-after")
        .parse()
        .expect("Retry-After is an integer");
    assert!(retry >= 1, "Retry-After {retry}");
    assert_eq!(header(&resp, "content-type"), "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    (retry, body["code"].as_str().unwrap_or_default().to_owned())
}

/// The value of `warden_state_unavailable_total` on an admin listener.
async fn state_unavailable(gw: &Gateway) -> u64 {
    let text = client()
        .get(format!("http://{}/metrics", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("warden_state_unavailable_total "))
        .unwrap_or_else(|| panic!("no warden_state_unavailable_total in\n{text}"))
        .trim()
        .parse::<f64>()
        .map(|v| v as u64)
        .unwrap()
}

/// `redis-shared-limit`: `/hits`, 60 requests an hour in all, counted in Redis.
const SHARED_LIMIT: &str = "redis-shared-limit";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_one_limit_through_redis() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let config = redis_config(
        SHARED_LIMIT,
        &format!("redis://{SHARED}"),
        &prefix,
        "closed",
    );
    let (a, b) = (
        start(&config, &upstream).await,
        start(&config, &upstream).await,
    );
    assert_ne!(a.proxy_addr, b.proxy_addr);
    let urls = [
        format!("http://{}/hits", a.proxy_addr),
        format!("http://{}/hits", b.proxy_addr),
    ];

    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    let http = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..240usize {
        let (permits, http, url) = (Arc::clone(&permits), http.clone(), urls[i % 2].clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.unwrap();
            let resp = http.get(&url).send().await.unwrap();
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp.text().await.unwrap();
            (i % 2, status, headers, body)
        });
    }
    let mut answers = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        answers.push(joined.unwrap());
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(60),
        "240 requests took {elapsed:?}"
    );

    let mut allowed = 0u64;
    let mut by_instance = [0u64; 2];
    let mut remaining_seen = Vec::new();
    for (instance, status, headers, body) in &answers {
        let get = |name: &str| {
            headers
                .get(name)
                .unwrap_or_else(|| panic!("{status}: no `{name}` header in {headers:?}"))
                .to_str()
                .unwrap()
        };
        match status {
            200 => {
                allowed += 1;
                by_instance[*instance] += 1;
                assert_eq!(get("ratelimit-policy"), "\"shared\";q=60;w=3600");
                let current = get("ratelimit");
                let rest = current
                    .strip_prefix("\"shared\";r=")
                    .unwrap_or_else(|| panic!("RateLimit: {current}"));
                let (r, t) = rest
                    .split_once(";t=")
                    .unwrap_or_else(|| panic!("RateLimit: {current}"));
                let (r, t): (u64, u64) = (r.parse().unwrap(), t.parse().unwrap());
                assert!(r < 60, "RateLimit: {current}");
                assert!((1..=3600).contains(&t), "RateLimit: {current}");
                remaining_seen.push(r);
            }
            429 => {
                let retry: u64 = get("retry-after").parse().unwrap_or_else(|_| {
                    panic!(
                        "Retry-After is not an integer: {:?}",
                        headers["retry-after"]
                    )
                });
                assert!(retry >= 1, "Retry-After {retry}");
                assert_eq!(get("content-type"), "application/problem+json");
                let problem: Value = serde_json::from_str(body).unwrap();
                assert_eq!(problem["code"], "rate_limited", "{problem}");
                assert!(get("ratelimit").starts_with("\"shared\";r=0;"));
            }
            other => panic!("unexpected status {other}: {headers:?} {body}"),
        }
    }
    assert!(
        (57..=63).contains(&allowed),
        "{allowed} requests allowed; the shared limit is 60 (within 5%)"
    );
    assert_eq!(allowed, 60, "an atomic shared limit allows exactly 60");
    assert!(
        by_instance[0] > 0 && by_instance[1] > 0,
        "both instances answered some allowed requests: {by_instance:?}"
    );
    // One counter for both instances: each remaining count was handed out once.
    remaining_seen.sort_unstable();
    assert_eq!(remaining_seen, (0..60).collect::<Vec<u64>>());
    assert_eq!(
        upstream.seen().len(),
        60,
        "only allowed requests reach the upstream"
    );
    eprintln!("240 requests through two gateways in {elapsed:?}");
    a.shutdown().await;
    b.shutdown().await;
}

/// `redis-outage`: `/ping`, under a limit by client too roomy to be reached.
const OUTAGE: &str = "redis-outage";

/// Requests pass while the private Redis is up, are answered by the fail mode (quickly)
/// while it is down, and pass through Redis again once it is back on the same port.
async fn outage(fail: &str) {
    let mut redis = PrivateRedis::start();
    let upstream = Upstream::start().await;
    let config = redis_config(OUTAGE, &redis.url(), &unique_prefix(), fail);
    let gw = start(&config, &upstream).await;
    let url = format!("http://{}/ping", gw.proxy_addr);
    let http = client();

    for _ in 0..5 {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "Redis is up");
        assert!(header(&resp, "ratelimit").starts_with("\"roomy\";r="));
    }
    assert_eq!(state_unavailable(&gw).await, 0);

    redis.kill();
    let down = Instant::now();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let sent = Instant::now();
        let resp = http
            .get(&url)
            .send()
            .await
            .expect("the gateway answers while Redis is down");
        let took = sent.elapsed();
        slowest = slowest.max(took);
        assert!(
            took < Duration::from_secs(2),
            "an answer took {took:?} while Redis was down"
        );
        if fail == "closed" {
            let (retry, code) = refusal(resp, 503).await;
            assert_eq!(code, "temporarily_unavailable");
            assert!(retry <= 60, "Retry-After {retry}");
        } else {
            assert_eq!(resp.status(), 200, "fail open lets requests through");
            assert!(
                resp.headers().get("ratelimit").is_none(),
                "no limit was applied while Redis was down"
            );
        }
    }
    let counted = state_unavailable(&gw).await;
    assert!(
        counted > 0,
        "warden_state_unavailable_total is {counted} after an outage"
    );
    let admin = client()
        .get(format!("http://{}/healthz", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), 200, "the gateway is still healthy");

    redis.restart();
    let back = Instant::now();
    let recovered = loop {
        let resp = http.get(&url).send().await.unwrap();
        if resp.status() == 200 && resp.headers().get("ratelimit").is_some() {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "requests do not go through Redis again 10 s after it came back (last: {})",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for _ in 0..5 {
        let resp = http.get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "Redis is back");
        assert!(header(&resp, "ratelimit").starts_with("\"roomy\";r="));
    }
    eprintln!(
        "fail {fail}: slowest answer while down {slowest:?}, down for {:?}, recovered {recovered:?} after the restart",
        back - down
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_answers_503_while_redis_is_down_and_recovers_after_a_restart() {
    outage("closed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_lets_requests_through_while_redis_is_down_and_recovers() {
    outage("open").await;
}

/// `redis-jwt`: `/me` behind a JWT source.
const JWT_ROUTE: &str = "redis-jwt";

const BANS: &str = r#"
[bans]
failures = 5
window = "1m"
duration = "30s"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_ban_a_client_on_every_instance() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let config =
        redis_config(JWT_ROUTE, &format!("redis://{SHARED}"), &prefix, "closed").append(BANS);
    let (a, b) = (
        start(&config, &upstream).await,
        start(&config, &upstream).await,
    );
    let me = |gw: &Gateway| format!("http://{}/me", gw.proxy_addr);
    let http = client();
    let valid = format!("Bearer {}", token("alice", None, None));

    for i in 0..5 {
        let resp = http
            .get(me(&a))
            .header("authorization", "Bearer garbage.not.a-token")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "garbage token #{}", i + 1);
        // Failures are counted after the answer: give each one time to land, so the five
        // are counted in order and the fifth is the one that bans.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Failures are recorded asynchronously: poll, bounded, for the ban.
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        let resp = http
            .get(me(&a))
            .header("authorization", &valid)
            .send()
            .await
            .unwrap();
        if resp.status() != 200 || Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (retry, code) = refusal(resp, 429).await;
    assert_eq!(code, "too_many_failures");
    assert!(retry <= 30, "Retry-After {retry} exceeds the 30 s ban");

    // The ban lives in Redis: the other instance refuses the client too.
    let resp = http
        .get(me(&b))
        .header("authorization", &valid)
        .send()
        .await
        .unwrap();
    let (retry, code) = refusal(resp, 429).await;
    assert_eq!(code, "too_many_failures");
    assert!(retry <= 30, "Retry-After {retry}");

    // Another client address is not banned.
    let other = client_from("127.0.0.2");
    for gw in [&a, &b] {
        let resp = other
            .get(me(gw))
            .header("authorization", &valid)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "another address is unaffected");
    }
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_through_the_admin_listener_apply_on_every_instance() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let config = redis_config(JWT_ROUTE, &format!("redis://{SHARED}"), &prefix, "closed");
    let (a, b) = (
        start(&config, &upstream).await,
        start(&config, &upstream).await,
    );
    let http = client();
    let status = |gw: &Gateway, token: &str| {
        let (http, url, auth) = (
            http.clone(),
            format!("http://{}/me", gw.proxy_addr),
            format!("Bearer {token}"),
        );
        async move {
            let resp = http
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            let challenge = resp
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (resp.status().as_u16(), challenge)
        }
    };
    let revoke = |body: Value| {
        let url = format!("http://{}/revoke", a.admin_addr.unwrap());
        async move {
            let resp = client()
                .post(url)
                .bearer_auth(common::ADMIN_TOKEN)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            assert_eq!(status, 200, "revoke {body}: {text}");
        }
    };
    const REVOKED: &str = "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"The access token was revoked\"";

    // One token, by its id.
    let (t1, t2) = (
        token("bob", Some("tok-1"), Some(now() - 10)),
        token("bob", Some("tok-2"), Some(now() - 10)),
    );
    assert_eq!(status(&a, &t1).await.0, 200);
    revoke(json!({ "jti": "tok-1" })).await;
    for gw in [&a, &b] {
        let (code, challenge) = status(gw, &t1).await;
        assert_eq!(code, 401, "the revoked token is refused");
        assert_eq!(challenge.as_deref(), Some(REVOKED));
        assert_eq!(status(gw, &t2).await.0, 200, "another jti still passes");
    }

    // Every token of a subject issued before now.
    let earlier = [
        token("alice", Some("a-1"), Some(now() - 60)),
        token("alice", Some("a-2"), Some(now() - 1)),
    ];
    let later = token("alice", Some("a-3"), Some(now() + 5));
    let carol = token("carol", Some("c-1"), Some(now() - 60));
    for t in earlier.iter().chain([&later, &carol]) {
        assert_eq!(status(&b, t).await.0, 200);
    }
    revoke(json!({ "subject": "alice" })).await;
    for gw in [&a, &b] {
        for t in &earlier {
            let (code, challenge) = status(gw, t).await;
            assert_eq!(code, 401, "alice's earlier token is refused");
            assert_eq!(challenge.as_deref(), Some(REVOKED));
        }
        assert_eq!(
            status(gw, &later).await.0,
            200,
            "a token issued later passes"
        );
        assert_eq!(status(gw, &carol).await.0, 200, "another subject passes");
    }

    // Revocation data is in Redis under the prefix, with a lifetime.
    let keys: BTreeMap<String, i64> = {
        let mut conn = redis::Client::open(format!("redis://{SHARED}"))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(1))
            .unwrap();
        ["revoked:jti:tok-1", "revoked:sub:alice"]
            .into_iter()
            .map(|k| {
                let ttl: i64 = redis::cmd("TTL")
                    .arg(format!("{prefix}{k}"))
                    .query(&mut conn)
                    .unwrap();
                (k.to_owned(), ttl)
            })
            .collect()
    };
    assert!(
        keys.values().all(|ttl| *ttl > 0),
        "revocation TTLs: {keys:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_never_answers_is_refused_within_the_timeout() {
    // A listener that accepts and reads but never replies: every call must time out.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while tokio::io::AsyncReadExt::read(&mut stream, &mut buf)
                    .await
                    .is_ok_and(|n| n > 0)
                {}
            });
        }
    });
    let upstream = Upstream::start().await;
    let config = redis_config(
        OUTAGE,
        &format!("redis://{silent}"),
        &unique_prefix(),
        "closed",
    );
    let gw = start(&config, &upstream).await;
    let url = format!("http://{}/ping", gw.proxy_addr);
    let http = client();
    let mut slowest = Duration::ZERO;
    for _ in 0..6 {
        let sent = Instant::now();
        let resp = http.get(&url).send().await.unwrap();
        slowest = slowest.max(sent.elapsed());
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "an answer took {:?} with a silent Redis",
            sent.elapsed()
        );
        let (_, code) = refusal(resp, 503).await;
        assert_eq!(code, "temporarily_unavailable");
    }
    assert!(state_unavailable(&gw).await >= 6);
    eprintln!("silent Redis: slowest answer {slowest:?}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_started_while_redis_is_down_connects_once_it_is_up() {
    let mut redis = PrivateRedis::start();
    redis.kill();
    let upstream = Upstream::start().await;
    let config = redis_config(OUTAGE, &redis.url(), &unique_prefix(), "closed");
    let gw = start(&config, &upstream).await;
    let url = format!("http://{}/ping", gw.proxy_addr);
    let http = client();
    for _ in 0..3 {
        let sent = Instant::now();
        let resp = http.get(&url).send().await.unwrap();
        assert!(sent.elapsed() < Duration::from_secs(2));
        let (_, code) = refusal(resp, 503).await;
        assert_eq!(code, "temporarily_unavailable");
    }
    redis.restart();
    let back = Instant::now();
    loop {
        let resp = http.get(&url).send().await.unwrap();
        if resp.status() == 200 {
            assert!(header(&resp, "ratelimit").starts_with("\"roomy\";r="));
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no connection 10 s after Redis came up (last: {})",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("first connection {:?} after Redis came up", back.elapsed());
    gw.shutdown().await;
}

/// A fleet of deciders behind many proxies: two gateways answering forward-auth questions
/// count one limit in Redis, so the 61st question of the hour is refused wherever it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_deciders_share_one_limit_through_redis() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let config = redis_config(
        SHARED_LIMIT,
        &format!("redis://{SHARED}"),
        &prefix,
        "closed",
    )
    .append("[gateway]\ntrusted_proxies = [\"127.0.0.1\"]\n");
    let (a, b) = (
        common::forward_auth_gateway(config.clone(), &upstream).await,
        common::forward_auth_gateway(config, &upstream).await,
    );
    let askers = [a.forward_auth_addr.unwrap(), b.forward_auth_addr.unwrap()];
    let http = client();
    let ask = |i: usize| {
        http.get(format!("http://{}/auth", askers[i % 2]))
            .header("x-forwarded-method", "GET")
            .header("x-forwarded-uri", "/hits")
            .send()
    };
    for i in 0..60 {
        let resp = ask(i).await.unwrap();
        assert_eq!(resp.status(), 200, "question {i}");
    }
    for i in 60..62 {
        let (_, code) = refusal(ask(i).await.unwrap(), 429).await;
        assert_eq!(code, "rate_limited", "question {i} on instance {}", i % 2);
    }
    assert!(
        upstream.seen().is_empty(),
        "forward auth never calls the upstream"
    );
    a.shutdown().await;
    b.shutdown().await;
}
