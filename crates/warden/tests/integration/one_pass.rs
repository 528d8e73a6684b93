//! One pass per request through the real gateway: a key refresh resumes authentication
//! without charging the limits again, and a body that cannot be read is a decision like any
//! other (logged, counted, findable by the id the client is shown).
use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{admin_get, client, gateway, gateway_with_admin, raw, raw_status};
use serde_json::Value;
use warden_testkit::{Key, Token, Upstream, fixture, read_key};

#[tokio::test]
async fn a_key_refresh_does_not_charge_the_limits_twice() {
    let doc = Arc::new(Mutex::new(read_key("jwks.json")));
    let jwks = crate::gateway::jwks_server(doc.clone()).await;
    let upstream = Upstream::start().await;
    let config = fixture("jwks-url")
        .var("jwks_url", format!("http://{jwks}/jwks.json"))
        .append(
            "[[limits]]\nname = \"per-client\"\nkey = [\"client\"]\nlimit = 5\nwindow = \"1h\"\n",
        );
    let gw = gateway(config, &upstream).await;
    // The identity provider rotates to a new key after warden fetched the set.
    *doc.lock().unwrap() = read_key("jwks-rotated.json");
    tokio::time::sleep(Duration::from_millis(5100)).await; // past the on-demand refresh interval
    let token = Token::new()
        .sub("alice")
        .exp_in(600)
        .kid("rsa-2")
        .sign(Key::Rsa2);

    // The token names the new key: warden refreshes the set and verifies it again, and
    // each request is charged once.
    for remaining in [4, 3] {
        let resp = client()
            .get(format!("http://{}/me", gw.proxy_addr))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let limit = resp.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(
            limit.starts_with(&format!("\"per-client\";r={remaining};")),
            "one request, one charge: {limit}"
        );
    }
    assert_eq!(upstream.seen().len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unreadable_body_is_decided_logged_and_counted() {
    let upstream = Upstream::start().await;
    // `/search` takes POST bodies, and the WAF reads them.
    let gw = gateway_with_admin(fixture("request-hygiene"), &upstream).await;
    // A chunk size that is not hexadecimal: the body cannot be read for the WAF.
    let answer = raw(
        gw.proxy_addr,
        b"POST /search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap();
    let problem: Value = serde_json::from_str(body).unwrap();
    assert_eq!(problem["code"], "bad_request");
    let instance = problem["instance"].as_str().unwrap().to_owned();

    // The id the client was shown is the id of a logged decision.
    let recent = admin_get(&gw, "/decisions/recent").await;
    let line: Value = recent
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| format!("urn:uuid:{}", l["decision_id"].as_str().unwrap()) == instance)
        .unwrap_or_else(|| panic!("{instance} is not among the recent decisions: {recent}"));
    assert_eq!(line["status"], 400);
    assert_eq!(line["reason"], "bad_request");
    assert_eq!(line["route"], "search");
    let metrics = admin_get(&gw, "/metrics").await;
    assert!(
        metrics.contains(
            "warden_decisions_total{outcome=\"deny\",reason=\"bad_request\",stage=\"hygiene\",status=\"400\"} 1"
        ),
        "{metrics}"
    );
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
    gw.shutdown().await;
}
