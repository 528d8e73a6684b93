//! Client address and network rules over real sockets, with real source addresses on the
//! loopback network (127.0.0.0/8): a forged `X-Forwarded-For` from an untrusted peer passes
//! nothing; from a trusted proxy it is believed, up to the first untrusted hop.
use crate::common;

use common::{Fixture, Upstream, fixture, gateway};
use serde_json::Value;

/// The `network` fixture: `127.0.0.2` is a trusted proxy, `127.0.0.66` is denied
/// everywhere; `/office` admits `127.0.0.1` only, `/private` denies the addresses of
/// `testdata/network/blocklist.txt`, `/hidden` denies everyone and is concealed.
fn config() -> Fixture {
    fixture("network")
}

use common::client_from;

async fn status(source: &str, url: &str, xff: Option<&str>) -> u16 {
    let mut req = client_from(source).get(url);
    if let Some(v) = xff {
        req = req.header("x-forwarded-for", v);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn forged_forwarding_headers_pass_nothing_and_trusted_proxies_are_believed() {
    let upstream = Upstream::start().await;
    let gw = gateway(config(), &upstream).await;
    let office = format!("http://{}/office", gw.proxy_addr);

    // Directly from the allowed address.
    assert_eq!(status("127.0.0.1", &office, None).await, 200);
    // An untrusted peer claiming to be the allowed address.
    assert_eq!(status("127.0.0.3", &office, Some("127.0.0.1")).await, 403);
    assert_eq!(
        status("127.0.0.3", &office, Some("127.0.0.1, 127.0.0.2")).await,
        403
    );
    // The trusted proxy forwarding for the allowed address.
    assert_eq!(status("127.0.0.2", &office, Some("127.0.0.1")).await, 200);
    assert_eq!(upstream.last().headers["x-forwarded-for"], "127.0.0.1");
    // The trusted proxy forwarding for someone else; the leftmost entry is forged.
    assert_eq!(
        status("127.0.0.2", &office, Some("127.0.0.1, 127.0.0.9")).await,
        403
    );
    // The trusted proxy with no header: the proxy itself is the client (not allowed).
    assert_eq!(status("127.0.0.2", &office, None).await, 403);
    gw.shutdown().await;
}

#[tokio::test]
async fn global_and_route_rules_and_rule_files_refuse_with_403_or_the_concealed_404() {
    let upstream = Upstream::start().await;
    let gw = gateway(config(), &upstream).await;
    let base = format!("http://{}", gw.proxy_addr);

    // Global rule: refused before routing, even on an unknown path.
    let resp = client_from("127.0.0.66")
        .get(format!("{base}/private"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "forbidden");
    assert!(
        !body.to_string().contains("rule"),
        "a rule id leaked into the body: {body}"
    );
    assert_eq!(
        status("127.0.0.66", &format!("{base}/nowhere"), None).await,
        403
    );

    // Rule file.
    assert_eq!(
        status("127.0.0.4", &format!("{base}/private"), None).await,
        403
    );
    assert_eq!(
        status("127.0.0.5", &format!("{base}/private"), None).await,
        403
    );
    assert_eq!(
        status("127.0.0.6", &format!("{base}/private"), None).await,
        200
    );

    // A concealed route refuses as if it did not exist.
    assert_eq!(
        status("127.0.0.1", &format!("{base}/hidden"), None).await,
        404
    );
    let seen: Vec<String> = upstream.seen().iter().map(|s| s.target.clone()).collect();
    assert_eq!(
        seen,
        vec!["/private"],
        "only the allowed request reached the upstream"
    );
    gw.shutdown().await;
}
