//! Shadow policies: evaluated beside the active ones, disagreements logged and counted,
//! never enforced.
use crate::common;

use common::{Upstream, client, fixture};
use serde_json::{Value, json};
use warden_testkit::Token;

fn token(roles: &[&str]) -> String {
    Token::new()
        .sub("sam")
        .exp_in(600)
        .roles(roles)
        .kid("rsa-1")
        .sign_rs256()
}

#[tokio::test]
async fn shadow_policies_are_logged_and_counted_but_never_enforced() {
    let upstream = Upstream::start().await;
    // The policies of `testdata/cedar/shadow` on `/reports`: `active.cedar` decides,
    // `candidate.cedar` is evaluated beside it.
    let gw = common::gateway_with_admin(fixture("shadow"), &upstream).await;
    let reports = format!("http://{}/reports", gw.proxy_addr);
    let admin = gw.admin_addr.unwrap();

    // The candidate would allow a viewer; the active policies do not, and they decide.
    let resp = client()
        .get(&reports)
        .bearer_auth(token(&["viewer"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert!(upstream.seen().is_empty());
    // Both agree on an admin: allowed, no disagreement, and (allowed = false) no log line.
    assert_eq!(
        client()
            .get(&reports)
            .bearer_auth(token(&["admin"]))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Both agree on a stranger: denied, no disagreement.
    assert_eq!(
        client()
            .get(&reports)
            .bearer_auth(token(&["guest"]))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

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
    assert_eq!(lines.len(), 2, "{recent}");
    assert_eq!(lines[0]["reason"], "forbidden");
    assert_eq!(lines[0]["detail"], "no policy permits this request");
    assert_eq!(
        lines[0]["shadow"],
        json!({ "active": "deny", "candidate": "allow", "candidate_policies": ["admins-and-viewers"] })
    );
    assert_eq!(lines[1]["shadow"], Value::Null);

    let metrics = client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_shadow_disagreements_total{active=\"deny\",candidate=\"allow\",route=\"reports\"} 1"),
        "{metrics}"
    );
    gw.shutdown().await;
}
