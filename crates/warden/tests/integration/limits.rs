//! Rate limits, bans and revocation with the in-memory store, over real sockets.
use crate::common;

use std::time::{Duration, Instant};

use common::{Upstream, client, fixture};
use serde_json::Value;
use warden::gateway::Gateway;
use warden_testkit::{Token, now};

/// The `limits` fixture: `/search` and the concealed `/vault` limited by client and route,
/// `/me` by subject; bans after four failures.
const CONFIG: &str = "limits";

fn token(sub: &str, jti: &str, iat: u64) -> String {
    Token::new()
        .sub(sub)
        .exp_in(600)
        .iat(iat)
        .jti(jti)
        .kid("rsa-1")
        .sign_rs256()
}

async fn start() -> (Upstream, Gateway) {
    let upstream = Upstream::start().await;
    let gw = common::gateway_with_admin(fixture(CONFIG), &upstream).await;
    (upstream, gw)
}

fn from(source: [u8; 4]) -> reqwest::Client {
    common::client_from(&std::net::IpAddr::from(source).to_string())
}

#[tokio::test]
async fn a_limit_answers_429_with_retry_after_and_ratelimit_headers_never_403() {
    let (upstream, gw) = start().await;
    let search = format!("http://{}/search", gw.proxy_addr);
    for remaining in [2, 1, 0] {
        let resp = client().get(&search).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["ratelimit-policy"],
            "\"per-client\";q=3;w=3600"
        );
        let current = resp.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            current.starts_with(&format!("\"per-client\";r={remaining};t=")),
            "{current}"
        );
    }
    let resp = client().get(&search).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=1200).contains(&retry), "retry-after {retry}");
    assert!(
        resp.headers()["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per-client\";r=0;")
    );
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        upstream.seen().len(),
        3,
        "the limited request never reached the upstream"
    );

    // The key includes the client: another address has its own allowance.
    assert_eq!(
        from([127, 0, 0, 7])
            .get(&search)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn limits_after_identity_count_per_subject_and_concealed_routes_stay_hidden() {
    let (_upstream, gw) = start().await;
    let me = format!("http://{}/me", gw.proxy_addr);
    let (alice, bob) = (token("alice", "a1", now()), token("bob", "b1", now()));
    for _ in 0..3 {
        assert_eq!(
            client()
                .get(&me)
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let resp = client().get(&me).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().get("www-authenticate").is_none());
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&bob)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Without credentials the per-subject limit does not apply: authentication answers first.
    assert_eq!(client().get(&me).send().await.unwrap().status(), 401);

    // On a concealed route an exceeded limit is the canonical 404 too.
    let vault = format!("http://{}/vault", gw.proxy_addr);
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..4 {
            out.push(
                from([127, 0, 0, 8])
                    .get(&vault)
                    .bearer_auth(&bob)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        out
    };
    assert_eq!(statuses, vec![200, 200, 200, 404]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_burst_of_refusals_bans_the_client_but_not_others() {
    let (upstream, gw) = start().await;
    let me = format!("http://{}/me", gw.proxy_addr);
    let attacker = from([127, 0, 0, 9]);
    for _ in 0..4 {
        assert_eq!(
            attacker
                .get(&me)
                .bearer_auth("garbage")
                .send()
                .await
                .unwrap()
                .status(),
            401
        );
    }
    // Failures are counted off the request path: wait, bounded, for the ban.
    let valid = token("mallory", "m1", now());
    let deadline = Instant::now() + Duration::from_secs(5);
    let resp = loop {
        let resp = attacker.get(&me).bearer_auth(&valid).send().await.unwrap();
        if resp.status() == 429 || Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(resp.status(), 429, "the attacker was not banned");
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry));
    assert_eq!(
        resp.json::<Value>().await.unwrap()["code"],
        "too_many_failures"
    );
    let seen_before = upstream.seen().len();
    assert_eq!(
        from([127, 0, 0, 10])
            .get(&me)
            .bearer_auth(&valid)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(upstream.seen().len(), seen_before + 1);

    let metrics = client()
        .get(format!("http://{}/metrics", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("warden_bans_total 1"), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test]
async fn revoked_tokens_and_subjects_get_invalid_token() {
    let (_upstream, gw) = start().await;
    let me = format!("http://{}/me", gw.proxy_addr);
    let revoke = format!("http://{}/revoke", gw.admin_addr.unwrap());
    let stolen = token("carol", "stolen", now());
    let other = token("carol", "other", now());
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&stolen)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let resp = client()
        .post(&revoke)
        .bearer_auth(common::ADMIN_TOKEN)
        .body(r#"{"jti":"stolen","ttl":600}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = client().get(&me).bearer_auth(&stolen).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"The access token was revoked\""
    );
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&other)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let dave_old = token("dave", "d1", now() - 60);
    let dave_new = token("dave", "d2", now() + 5);
    let resp = client()
        .post(&revoke)
        .bearer_auth(common::ADMIN_TOKEN)
        .body(r#"{"subject":"dave"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&dave_old)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        client()
            .get(&me)
            .bearer_auth(&dave_new)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    for bad in ["", "{}", r#"{"jti":"a","subject":"b"}"#, "[1]", "not json"] {
        let resp = client()
            .post(&revoke)
            .bearer_auth(common::ADMIN_TOKEN)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad:?}");
    }
    gw.shutdown().await;
}
