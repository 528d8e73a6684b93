//! The verified-token cache through the engine: a hit gives the same identity, still checks
//! the time against the decision's clock, and never survives a key rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, header};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use warden_core::decision::TokenProblem;
use warden_core::{Config, Decision, Engine, Reason, RequestView, Verdict};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/keys");
const NOW: u64 = 1_700_000_000;

fn engine(cache: &str) -> Engine {
    let text = format!(
        r#"
[upstreams.app]
url = "http://127.0.0.1:3000"

[sources.idp]
type = "jwt"
algorithms = ["RS256"]
jwks_url = "https://idp.test/jwks"
leeway = "0s"
{cache}

[[routes]]
path = "/me"
upstream = "app"
auth = ["idp"]
"#
    );
    let origin = format!("{KEYS}/warden.toml");
    Engine::new(Config::parse(&text, Path::new(&origin)).unwrap_or_else(|e| panic!("{e}")))
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(format!("{KEYS}/{name}")).unwrap()
}

fn token(key: &str, kid: &str, exp: u64) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    let claims = json!({ "sub": "alice", "roles": ["admin"], "exp": exp });
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(&read(key)).unwrap(),
    )
    .unwrap()
}

fn decide(engine: &Engine, token: &str, at: u64) -> Decision {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let view = RequestView::new(&Method::GET, "/me", &headers, [127, 0, 0, 1].into());
    engine.decide(&view, UNIX_EPOCH + Duration::from_secs(at))
}

fn subject(decision: &Decision) -> &str {
    match &decision.verdict {
        Verdict::Allow(allow) => &allow.identity.as_ref().unwrap().subject,
        Verdict::Deny(deny) => panic!("refused: {:?}", deny.reason),
        Verdict::Preflight => panic!("answered as a preflight"),
    }
}

fn problem(decision: &Decision) -> TokenProblem {
    match decision.reason() {
        Some(Reason::InvalidToken(p)) => *p,
        other => panic!("expected invalid_token, got {other:?}"),
    }
}

#[test]
fn a_cached_token_gives_the_same_identity_and_still_expires() {
    for cache in ["", "token_cache = 0"] {
        let engine = engine(cache);
        engine
            .config()
            .set_fetched_keys("idp", &read("jwks.json"))
            .unwrap();
        let t = token("rsa.key", "rsa-1", NOW + 60);
        assert_eq!(subject(&decide(&engine, &t, NOW)), "alice");
        assert_eq!(subject(&decide(&engine, &t, NOW + 59)), "alice", "{cache}");
        assert_eq!(
            problem(&decide(&engine, &t, NOW + 60)),
            TokenProblem::Expired
        );
        // A token with the same header and claims but another signature is not a hit.
        let (signed, _) = t.rsplit_once('.').unwrap();
        let forged = format!("{signed}.AAAA");
        assert_eq!(
            problem(&decide(&engine, &forged, NOW)),
            TokenProblem::BadSignature
        );
    }
}

#[test]
fn a_token_of_a_rotated_out_key_is_refused_after_the_rotation() {
    let engine = engine("");
    let config = engine.config();
    config.set_fetched_keys("idp", &read("jwks.json")).unwrap();
    let old = token("rsa.key", "rsa-1", NOW + 3600);
    assert_eq!(subject(&decide(&engine, &old, NOW)), "alice");
    assert_eq!(subject(&decide(&engine, &old, NOW + 1)), "alice");

    // The same document again is no rotation; the token still verifies.
    config.set_fetched_keys("idp", &read("jwks.json")).unwrap();
    assert_eq!(subject(&decide(&engine, &old, NOW + 2)), "alice");

    config
        .set_fetched_keys("idp", &read("jwks-rotated.json"))
        .unwrap();
    assert_eq!(
        problem(&decide(&engine, &old, NOW + 3)),
        TokenProblem::UnknownKey
    );
    let new = token("rsa2.key", "rsa-2", NOW + 3600);
    assert_eq!(subject(&decide(&engine, &new, NOW + 3)), "alice");
}

#[test]
fn a_flush_keeps_answers_the_same_and_verify_token_is_cold() {
    let engine = engine("");
    engine
        .config()
        .set_fetched_keys("idp", &read("jwks.json"))
        .unwrap();
    let t = token("rsa.key", "rsa-1", NOW + 60);
    assert_eq!(subject(&decide(&engine, &t, NOW)), "alice");
    engine.flush_token_cache();
    assert_eq!(subject(&decide(&engine, &t, NOW)), "alice");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let identity = engine.verify_token("idp", &t, at).unwrap().unwrap();
    assert_eq!(identity.roles, ["admin"]);
    assert!(engine.verify_token("nope", &t, at).is_none());
}
