//! Every 401 (and the 400s next to them) over a real gateway and a real upstream:
//! status, `WWW-Authenticate`, content type and body, and proof that nothing refused
//! reached the upstream.
use crate::common;

use common::{Upstream, client, fixture, gateway};
use serde_json::{Value, json};
use warden_testkit::{Key, Token};

/// The `issuer` fixture: `/me` behind a JWT source with issuer `https://issuer.test`,
/// audience `api` and a 5 s leeway.
const CONFIG: &str = "issuer";

/// Claims the source accepts, unsigned and without a `kid` yet.
fn claims() -> Token {
    Token::new()
        .sub("alice")
        .iss("https://issuer.test")
        .aud("api")
        .exp_in(600)
        .roles(["viewer"])
}

/// [`claims`] as a bearer token under the known kid.
fn valid() -> String {
    claims().kid("rsa-1").sign_rs256()
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
    let gw = gateway(fixture(CONFIG), &upstream).await;

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
    let c = claims().exp_in(-60);
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", c.kid("rsa-1").sign_rs256())),
        )
        .await,
        "The access token expired",
    );

    // Not yet valid.
    let c = claims().nbf_in(600);
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", c.kid("rsa-1").sign_rs256())),
        )
        .await,
        "The access token is not yet valid",
    );

    // Wrong audience, wrong issuer.
    let c = claims().aud("another-api");
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", c.kid("rsa-1").sign_rs256())),
        )
        .await,
        "The token audience is not accepted",
    );
    let c = claims().iss("https://evil.test");
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", c.kid("rsa-1").sign_rs256())),
        )
        .await,
        "The token issuer is not accepted",
    );

    // Wrong algorithm: the RS256 public key used as an HS256 secret (key confusion).
    let confused = claims().kid("rsa-1").sign(Key::secret_file("rsa.pub.pem"));
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {confused}"))).await,
        "The token's signing algorithm is not accepted",
    );

    // alg: none, in any spelling, with or without a signature.
    for alg in ["none", "None", "NONE", "nOnE"] {
        // `{"alg": alg, "typ": "JWT"}`, with a signature of one character.
        let unsigned = format!("{}x", claims().header("alg", alg).unsigned());
        assert_invalid_token(
            &get_me(&gw, Some(&format!("Bearer {unsigned}"))).await,
            "The token's signing algorithm is not accepted",
        );
    }
    // `{"alg": "none"}` and nothing else, no signature.
    let bare_none = claims()
        .without_header("typ")
        .header("alg", "none")
        .unsigned();
    assert_invalid_token(
        &get_me(&gw, Some(&format!("Bearer {bare_none}"))).await,
        "The token's signing algorithm is not accepted",
    );

    // Keys carried or pointed at by the token, validly signed by the real key.
    for (param, value) in [
        ("jwk", json!({ "kty": "RSA", "n": "AQAB", "e": "AQAB" })),
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("x5c", json!(["MIIB"])),
    ] {
        // `{"alg": "RS256", "kid": "rsa-1", param: value}`.
        let t = claims()
            .without_header("typ")
            .kid("rsa-1")
            .header(param, value)
            .sign_rs256();
        assert_invalid_token(
            &get_me(&gw, Some(&format!("Bearer {t}"))).await,
            "Keys embedded in or referenced by the token are not accepted",
        );
    }

    // Unknown kid, and a known kid with a signature from another key.
    assert_invalid_token(
        &get_me(
            &gw,
            Some(&format!("Bearer {}", claims().kid("nobody").sign_rs256())),
        )
        .await,
        "The token was signed by an unknown key",
    );
    let forged = claims().kid("rsa-1").sign(Key::Rsa2);
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
    let a = get_me(&gw, Some(&format!("Bearer {}", valid()))).await;
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
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let token = valid();
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
        fixture(CONFIG).append(
            "\n[[routes]]\npath = \"/public\"\nupstream = \"app\"\n[identity_headers]\nstrip = [\"x-user-email\"]\n",
        ),
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
        .header("authorization", format!("Bearer {}", valid()))
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
