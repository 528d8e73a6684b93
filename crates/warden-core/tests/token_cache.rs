//! The verified-token cache through the engine: a hit gives the same identity, still checks
//! the time against the decision's clock, and never survives a key rotation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderValue, Method, header};
use warden_core::decision::TokenProblem;
use warden_core::{Decision, Engine, Reason, RequestView, Verdict};
use warden_testkit::{Key, Token, fixture, read_key};

const NOW: u64 = 1_700_000_000;

/// The `token-cache` fixture, with `cache` (a `token_cache = N` line, or nothing) added to
/// its source.
fn engine(cache: &str) -> Engine {
    let leeway = "leeway = \"0s\"\n";
    let config = fixture("token-cache").replace(leeway, &format!("{leeway}{cache}\n"));
    Engine::new(config.config())
}

/// `alice`, an admin, under `kid`, signed with `key`, expiring `ttl` seconds after `NOW`.
fn token(key: Key, kid: &str, ttl: i64) -> String {
    Token::at(NOW)
        .sub("alice")
        .roles(["admin"])
        .exp_in(ttl)
        .kid(kid)
        .sign(key)
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
        other => panic!("not allowed: {other:?}"),
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
            .set_fetched_keys("idp", &read_key("jwks.json"))
            .unwrap();
        let t = token(Key::Rsa, "rsa-1", 60);
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
    config
        .set_fetched_keys("idp", &read_key("jwks.json"))
        .unwrap();
    let old = token(Key::Rsa, "rsa-1", 3600);
    assert_eq!(subject(&decide(&engine, &old, NOW)), "alice");
    assert_eq!(subject(&decide(&engine, &old, NOW + 1)), "alice");

    // The same document again is no rotation; the token still verifies.
    config
        .set_fetched_keys("idp", &read_key("jwks.json"))
        .unwrap();
    assert_eq!(subject(&decide(&engine, &old, NOW + 2)), "alice");

    config
        .set_fetched_keys("idp", &read_key("jwks-rotated.json"))
        .unwrap();
    assert_eq!(
        problem(&decide(&engine, &old, NOW + 3)),
        TokenProblem::UnknownKey
    );
    let new = token(Key::Rsa2, "rsa-2", 3600);
    assert_eq!(subject(&decide(&engine, &new, NOW + 3)), "alice");
}

#[test]
fn a_flush_keeps_answers_the_same_and_verify_token_is_cold() {
    let engine = engine("");
    engine
        .config()
        .set_fetched_keys("idp", &read_key("jwks.json"))
        .unwrap();
    let t = token(Key::Rsa, "rsa-1", 60);
    assert_eq!(subject(&decide(&engine, &t, NOW)), "alice");
    engine.flush_token_cache();
    assert_eq!(subject(&decide(&engine, &t, NOW)), "alice");
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let identity = engine.verify_token("idp", &t, at).unwrap().unwrap();
    assert_eq!(identity.roles, ["admin"]);
    assert!(engine.verify_token("nope", &t, at).is_none());
}
