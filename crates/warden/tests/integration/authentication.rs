//! Every 401 (and the 400s next to them) over a real gateway and a real upstream:
//! status, `WWW-Authenticate`, content type and body, and proof that nothing refused
//! reached the upstream.
use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Upstream, client, gateway, keys_dir};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[log]
decisions = "off"

[upstreams.app]
url = "http://{upstream}"

[sources.jwt]
type = "jwt"
algorithms = ["RS256"]
issuer = "https://issuer.test"
audience = ["api"]
leeway = "5s"
keys = [{ kid = "rsa-1", pem_file = "rsa.pub.pem" }]

[[routes]]
path = "/me"
upstream = "app"
auth = ["jwt"]
"#;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&std::fs::read(keys_dir().join("rsa.key")).unwrap()).unwrap()
}

fn claims() -> Value {
    json!({ "sub": "alice", "iss": "https://issuer.test", "aud": "api", "exp": now() + 600, "roles": ["viewer"] })
}

fn sign(header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &rsa_key()).unwrap()
}

fn rs256(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some(kid.to_owned());
    h
}

/// A token whose header is exactly `header`, signed over it with `sign_with`.
fn token_with_raw_header(
    header: &Value,
    claims: &Value,
    sign_with: Option<(&EncodingKey, Algorithm)>,
) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let signature = match sign_with {
        Some((key, alg)) => jsonwebtoken::crypto::sign(message.as_bytes(), key, alg).unwrap(),
        None => String::new(),
    };
    format!("{message}.{signature}")
}

struct Answer {
    status: u16,
    challenges: Vec<String>,
    content_type: String,
    body: Value,
}

async fn get_me(gw: &warden::gateway::Gateway, authorization: Option<&str>) -> Answer {
    let mut req = client().get(format!("http://{}/me", gw.proxy_addr));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let challenges = resp
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or(Value::Null);
    Answer {
        status,
        challenges,
        content_type,
        body,
    }
}

fn assert_invalid_token(a: &Answer, description: &str) {
    assert_eq!(a.status, 401);
    assert_eq!(
        a.challenges,
        vec![format!(
            "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{description}\""
        )]
    );
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["code"], "invalid_token");
    assert_eq!(a.body["status"], 401);
    assert!(
        a.body["instance"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    assert_eq!(a.body["detail"], format!("{description}."));
}

#[tokio::test]
async fn every_authentication_failure_gets_the_right_answer_and_never_reaches_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway(CONFIG, &upstream).await;

    // No credentials: a challenge with no error attribute (RFC 6750 §3.1).
    let a = get_me(&gw, None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.challenges, vec!["Bearer realm=\"warden\"".to_owned()]);
    assert_eq!(a.content_type, "application/problem+json");
    assert_eq!(a.body["code"], "unauthenticated");

    // A scheme the route does not accept is answered as no credentials.
    let a = get_me(&gw, Some("Basic YTpi")).await;
    assert_eq!(
        (a.status, a.challenges.clone()),
        (401, vec!["Bearer realm=\"warden\"".to_owned()])
    );

    // Garbage.
    assert_invalid_token(
        &get_me(&gw, Some("Bearer garbage")).await,
        "The access token is malformed",
    );
    assert_invalid_token(
        &get_me(&gw, Some("Bearer a.b.c")).await,
        "The access token is malformed",
    );

    // Expired beyond the leeway.
    let mut c = claims();
    c["exp"] = json!(now() - 60);
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {}", sign(&rs256("rsa-1"), &c)))).await,
        "The access token expired",
    );

    // Not yet valid.
    let mut c = claims();
    c["nbf"] = json!(now() + 600);
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {}", sign(&rs256("rsa-1"), &c)))).await,
        "The access token is not yet valid",
    );

    // Wrong audience, wrong issuer.
    let mut c = claims();
    c["aud"] = json!("another-api");
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {}", sign(&rs256("rsa-1"), &c)))).await,
        "The token audience is not accepted",
    );
    let mut c = claims();
    c["iss"] = json!("https://evil.test");
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {}", sign(&rs256("rsa-1"), &c)))).await,
        "The token issuer is not accepted",
    );

    // Wrong algorithm: the RS256 public key used as an HS256 secret (key confusion).
    let public_pem = std::fs::read(keys_dir().join("rsa.pub.pem")).unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some("rsa-1".to_owned());
    let confused =
        jsonwebtoken::encode(&hs, &claims(), &EncodingKey::from_secret(&public_pem)).unwrap();
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {confused}"))).await,
        "The token's signing algorithm is not accepted",
    );

    // alg: none, in any spelling, with or without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let unsigned = token_with_raw_header(&json!({ "alg": alg, "typ": "JWT" }), &claims(), None);
        let unsigned = format!("{unsigned}x");
        assert_invalid_token(
            &get_me(&gw, Some(&format!("Bearer {unsigned}"))).await,
            "The token's signing algorithm is not accepted",
        );
    }
    let bare_none = token_with_raw_header(&json!({ "alg": "none" }), &claims(), None);
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {bare_none}"))).await,
        "The token's signing algorithm is not accepted",
    );

    // Keys carried or pointed at by the token, validly signed by the real key.
    let key = rsa_key();
    for (param, value) in [
        ("jwk", json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB" })),
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        let header = json!({ "alg": "RS256", "kid": "rsa-1", param: value });
        let t = token_with_raw_header(&header, &claims(), Some((&key, Algorithm::RS256)));
        assert_invalid_token(
            &get_me(&gw, Some(&format!("Bearer {t}"))).await,
            "Keys embedded in or referenced by the token are not accepted",
        );
    }

    // Unknown kid, and a known kid with a signature from another key.
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", sign(&rs256("nobody"), &claims()))),
        )
        .await,
        "The token was signed by an unknown key",
    );
    let other =
        EncodingKey::from_rsa_pem(&std::fs::read(keys_dir().join("rsa2.key")).unwrap()).unwrap();
    let forged = jsonwebtoken::encode(&rs256("rsa-1"), &claims(), &other).unwrap();
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {forged}"))).await,
        "The token signature is invalid",
    );

    // Malformed credentials: 400 invalid_request, still with the Bearer challenge.
    let a = get_me(&gw, Some("Bearer two tokens")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.body["code"], "invalid_request");
    assert!(
        a.challenges[0].starts_with("Bearer realm=\"warden\", error=\"invalid_request\""),
        "{:?}",
        a.challenges
    );
    let a = get_me(&gw, Some("Bearer")).await;
    assert_eq!(
        (a.status, a.body["code"].as_str()),
        (400, Some("invalid_request"))
    );

    assert!(
        upstream.seen().is_empty(),
        "a refused request reached the upstream: {:?}",
        upstream.seen()
    );

    // A valid token passes, and only it reaches the upstream.
    let a = get_me(
        &gw,
        Some(&format!("Bearer {}", sign(&rs256("rsa-1"), &claims()))),
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["upstream"], true);
    assert_eq!(upstream.seen().len(), 1);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-roles"], "viewer");
    assert_eq!(seen.headers["x-warden-auth-source"], "jwt");

    gw.shutdown().await;
}

#[tokio::test]
async fn two_authorization_headers_are_a_bad_request() {
    let upstream = Upstream::start().await;
    let gw = gateway(CONFIG, &upstream).await;
    let token = sign(&rs256("rsa-1"), &claims());
    let resp = client()
        .get(format!("http://{}/me", gw.proxy_addr))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "invalid_request");
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn identity_headers_sent_by_the_client_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway(
        &format!("{CONFIG}\n[[routes]]\npath = \"/public\"\nupstream = \"app\"\n[identity_headers]\nstrip = [\"x-user-email\"]\n"),
        &upstream,
    )
    .await;
    let forged = [
        ("x-warden-subject", "root"),
        ("x-warden-roles", "admin"),
        ("x-warden-scopes", "everything"),
        ("x-warden-auth-source", "jwt"),
        ("x-warden-decision-id", "forged"),
        ("x-user-email", "root@example.test"),
        ("x-forwarded-for", "10.0.0.1"),
        ("forwarded", "for=10.0.0.1"),
    ];

    // On a public route: every forged header is removed, none is set.
    let mut req = client().get(format!("http://{}/public", gw.proxy_addr));
    for (n, v) in forged {
        req = req.header(n, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = upstream.last();
    for name in [
        "x-warden-subject",
        "x-warden-roles",
        "x-warden-scopes",
        "x-warden-auth-source",
        "x-user-email",
        "forwarded",
    ] {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    assert_ne!(seen.headers["x-warden-decision-id"], "forged");
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");

    // On an authenticated route: the verified values replace the forged ones, even when the
    // client lists them in `Connection` to try to get warden's own headers removed.
    let mut req = client()
        .get(format!("http://{}/me", gw.proxy_addr))
        .header(
            "authorization",
            format!("Bearer {}", sign(&rs256("rsa-1"), &claims())),
        )
        .header("connection", "keep-alive, x-warden-subject, x-warden-roles");
    for (n, v) in forged {
        req = req.header(n, v);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.headers.get_all("x-warden-subject").iter().count(), 1);
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-roles"], "viewer");
    assert!(seen.headers.get("x-warden-scopes").is_none());
    assert!(seen.headers.get("x-user-email").is_none());
    gw.shutdown().await;
}
