//! Shadow policies: evaluated beside the active ones, disagreements logged and counted,
//! never enforced.
use crate::common;

use common::{Upstream, client};
use serde_json::{Value, json};

fn token(roles: &[&str]) -> String {
    common::sign(&json!({ "sub": "sam", "exp": common::now() + 600, "roles": roles }))
}

#[tokio::test]
async fn shadow_policies_are_logged_and_counted_but_never_enforced() {
    let upstream = Upstream::start().await;
    let shadow_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/cedar/shadow");
    let text = format!(
        r#"
[log]
decisions = "off"
allowed = false
[upstreams.app]
url = "http://{upstream}"
[sources.idp]
type = "jwt"
algorithms = ["RS256"]
keys = [{{ pem_file = "rsa.pub.pem" }}]
[authorization]
policies = ["{shadow_dir}/active.cedar"]
shadow_policies = ["{shadow_dir}/candidate.cedar"]
[[routes]]
name = "reports"
path = "/reports"
upstream = "app"
auth = ["idp"]
"#,
        upstream = upstream.addr
    );
    let gw = common::gateway_with_admin(&text, &upstream).await;
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
