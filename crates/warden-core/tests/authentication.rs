//! Authentication, end to end through the engine: real keys from `testdata/keys`
//! (regenerate them with `testdata/keys/make.sh`), tokens signed by the test kit, the
//! configuration `testdata/fixtures/authentication.toml`, decisions and the rendered
//! refusals checked exactly. No network.

// Helpers outside `#[test]` functions are test code too; the workspace's allow-*-in-tests
// settings do not reach them in an integration-test crate.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use warden_core::auth::api_key::hash_api_key;
use warden_core::decision::{Allow, TokenProblem};
use warden_core::identity::CredentialKind;
use warden_core::response::{Branding, render_decision};
use warden_core::{Config, ConfigError, Decision, Engine, Identity, Reason, RequestView, Verdict};
use warden_testkit::{Algorithm, Key, Token, b64url_json, fixture, read_key};

/// The origin of the inline configurations: key files are read relative to its directory.
const ORIGIN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/keys/warden.toml"
);
/// The engine's clock in every test.
const NOW: u64 = 1_700_000_000;
const ISSUER: &str = "https://issuer.test";
const AUDIENCE: &str = "warden-tests";
const API_KEY: &str = "wk_test_4f1c9a2b7d3e8f60a1b2c3d4";
const PASSWORD: &str = "correct horse battery staple";

// ---------------------------------------------------------------------------------------
// Configuration and engine

fn fresh_engine() -> Engine {
    let salt = SaltString::encode_b64(b"warden-test-salt").unwrap();
    let argon = argon2::Argon2::default()
        .hash_password(PASSWORD.as_bytes(), &salt)
        .unwrap()
        .to_string();
    let config = fixture("authentication")
        .var("api_key_sha256", hash_api_key(API_KEY))
        .var("argon2_hash", argon)
        .config();
    Engine::new(config)
}

/// The shared engine (its configuration hashes a password once).
fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(fresh_engine)
}

// ---------------------------------------------------------------------------------------
// Tokens

/// Claims every source accepts: subject, issuer, audience, a live expiry.
fn claims() -> Token {
    Token::at(NOW)
        .sub("alice")
        .iss(ISSUER)
        .aud(AUDIENCE)
        .iat(NOW)
        .exp_in(3600)
}

// ---------------------------------------------------------------------------------------
// Requests and responses

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn request_with(engine: &Engine, method: Method, path: &str, headers: &[(&str, &str)]) -> Decision {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    let request = RequestView::new(&method, path, &map, [127, 0, 0, 1].into());
    engine.decide(&request, at())
}

fn get(path: &str, headers: &[(&str, &str)]) -> Decision {
    request_with(engine(), Method::GET, path, headers)
}

fn get_bearer(path: &str, token: &str) -> Decision {
    get(path, &[("authorization", &format!("Bearer {token}"))])
}

fn render(engine: &Engine, decision: &Decision) -> Response<Bytes> {
    render_decision(decision, Branding::from(engine.config()), false)
        .expect("a refusal renders a response")
}

fn www_authenticate(response: &Response<Bytes>) -> Vec<String> {
    response
        .headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn body(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

/// The exact reason, status, challenges, content type and problem code of a refusal.
#[track_caller]
fn assert_refused(
    engine: &Engine,
    decision: &Decision,
    status: StatusCode,
    reason: &Reason,
    challenges: &[&str],
    code: &str,
) -> Response<Bytes> {
    assert_eq!(decision.reason(), Some(reason), "{decision:#?}");
    assert_eq!(decision.status(), status);
    let response = render(engine, decision);
    assert_eq!(response.status(), status);
    assert_eq!(www_authenticate(&response), challenges);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body = body(&response);
    assert_eq!(body["code"], code);
    assert_eq!(body["status"], status.as_u16());
    response
}

/// The `error_description` each problem must carry, written out so a change is noticed.
fn description(problem: TokenProblem) -> &'static str {
    match problem {
        TokenProblem::Garbled => "The access token is malformed",
        TokenProblem::TooLarge => "The access token is too large",
        TokenProblem::AlgorithmNotAllowed => "The token's signing algorithm is not accepted",
        TokenProblem::EmbeddedKey => "Keys embedded in or referenced by the token are not accepted",
        TokenProblem::UnsupportedCritical => {
            "The token has critical header parameters that are not supported"
        }
        TokenProblem::UnknownKey => "The token was signed by an unknown key",
        TokenProblem::BadSignature => "The token signature is invalid",
        TokenProblem::Expired => "The access token expired",
        TokenProblem::NotYetValid => "The access token is not yet valid",
        TokenProblem::WrongIssuer => "The token issuer is not accepted",
        TokenProblem::WrongAudience => "The token audience is not accepted",
        TokenProblem::MissingClaim => "The token lacks a required claim",
        TokenProblem::Revoked => "The access token was revoked",
        other => panic!("no description written out for {other:?}"),
    }
}

fn invalid_token_challenge(problem: TokenProblem) -> String {
    format!(
        "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"{}\"",
        description(problem)
    )
}

/// A bearer refusal on a route whose only source is a (non-cookie) JWT source.
#[track_caller]
fn assert_invalid_token(decision: &Decision, problem: TokenProblem) {
    assert_refused(
        engine(),
        decision,
        StatusCode::UNAUTHORIZED,
        &Reason::InvalidToken(problem),
        &[&invalid_token_challenge(problem)],
        "invalid_token",
    );
}

#[track_caller]
fn assert_allowed(decision: &Decision) -> &Allow {
    match &decision.verdict {
        Verdict::Allow(allow) => allow,
        Verdict::Deny(deny) => panic!("refused: {:?}", deny.reason),
        other => panic!("not allowed: {other:?}"),
    }
}

#[track_caller]
fn allowed_identity(decision: &Decision) -> &Identity {
    assert_eq!(decision.status(), StatusCode::OK);
    assert_allowed(decision)
        .identity
        .as_ref()
        .expect("an authenticated route has an identity")
}

// ---------------------------------------------------------------------------------------
// Valid tokens

#[test]
fn every_pinned_algorithm_verifies_its_own_tokens() {
    let cases = [
        ("/rs256", "rs256", Algorithm::RS256, Key::Rsa),
        ("/ps256", "ps256", Algorithm::PS256, Key::Rsa),
        ("/es256", "es256", Algorithm::ES256, Key::Ec256),
        ("/es384", "es384", Algorithm::ES384, Key::Ec384),
        ("/eddsa", "eddsa", Algorithm::EdDSA, Key::Ed25519),
        ("/hs256", "hs256", Algorithm::HS256, Key::Hmac),
    ];
    for (path, source, alg, key) in cases {
        let decision = get_bearer(path, &claims().sign_with(alg, key));
        let identity = allowed_identity(&decision);
        assert_eq!(identity.subject, "alice", "{alg:?}");
        assert_eq!(&*identity.source, source);
        assert_eq!(identity.kind, CredentialKind::Bearer);
        assert_eq!(identity.expires_at, Some(NOW + 3600));
    }
}

#[test]
fn each_source_refuses_the_algorithms_it_does_not_pin() {
    // An ES256 token at the RS256 route, an RS256 token at the PS256 route, and so on.
    let cases = [
        ("/rs256", Algorithm::PS256, Key::Rsa),
        ("/rs256", Algorithm::ES256, Key::Ec256),
        ("/ps256", Algorithm::RS256, Key::Rsa),
        ("/es256", Algorithm::ES384, Key::Ec384),
        ("/es384", Algorithm::ES256, Key::Ec256),
        ("/eddsa", Algorithm::RS256, Key::Rsa),
        ("/hs256", Algorithm::HS384, Key::Hmac),
    ];
    for (path, alg, key) in cases {
        assert_invalid_token(
            &get_bearer(path, &claims().sign_with(alg, key)),
            TokenProblem::AlgorithmNotAllowed,
        );
    }
}

// ---------------------------------------------------------------------------------------
// Missing, garbled and ill-formed credentials

#[test]
fn no_credentials_get_a_challenge_without_error() {
    let decision = get("/rs256", &[]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::UNAUTHORIZED,
        &Reason::NoCredentials,
        &["Bearer realm=\"warden\""],
        "unauthenticated",
    );

    // A route with two schemes challenges with both, in the order of its `auth`.
    let decision = get("/mixed", &[]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::UNAUTHORIZED,
        &Reason::NoCredentials,
        &[
            "Bearer realm=\"warden\"",
            "ApiKey realm=\"warden\", header=\"x-api-key\"",
        ],
        "unauthenticated",
    );

    // A scheme the route does not accept counts as no credentials.
    let basic = format!("Basic {}", STANDARD.encode("ops:pw"));
    let decision = get("/rs256", &[("authorization", &basic)]);
    assert_eq!(decision.reason(), Some(&Reason::NoCredentials));
}

#[test]
fn garbage_tokens_are_garbled() {
    for garbage in [
        "not-a-jwt",
        "a.b.c",
        "a.b.c.d",
        "eyJhbGciOiJSUzI1NiJ9..c2ln",
        // A header that is base64url JSON but not an object.
        &format!(
            "{}.{}.c2ln",
            b64url_json(&json!([1])),
            claims().encoded_claims()
        ),
        // A header without `alg` (`{"typ": "JWT"}`).
        &format!("{}c2ln", claims().unsigned()),
    ] {
        assert_invalid_token(&get_bearer("/rs256", garbage), TokenProblem::Garbled);
    }
}

#[test]
fn a_token_over_the_size_limit_is_refused_before_parsing() {
    let big = claims().claim("pad", "x".repeat(9000)).sign_rs256();
    assert!(big.len() > 8192);
    assert_invalid_token(&get_bearer("/rs256", &big), TokenProblem::TooLarge);
    // Garbage of the same size is refused the same way: the size check comes first.
    assert_invalid_token(
        &get_bearer("/rs256", &"x".repeat(8193)),
        TokenProblem::TooLarge,
    );
}

#[test]
fn two_authorization_headers_are_an_invalid_request() {
    let t = format!("Bearer {}", claims().sign_rs256());
    let decision = get("/rs256", &[("authorization", &t), ("authorization", &t)]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::BAD_REQUEST,
        &Reason::MalformedCredentials {
            detail: "More than one Authorization header was sent",
        },
        &[
            "Bearer realm=\"warden\", error=\"invalid_request\", error_description=\"More than one Authorization header was sent\"",
        ],
        "invalid_request",
    );
}

#[test]
fn bearer_credentials_must_be_one_token() {
    let decision = get("/rs256", &[("authorization", "Bearer a b")]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::BAD_REQUEST,
        &Reason::MalformedCredentials {
            detail: "The Bearer credentials are not a single token",
        },
        &[
            "Bearer realm=\"warden\", error=\"invalid_request\", error_description=\"The Bearer credentials are not a single token\"",
        ],
        "invalid_request",
    );
}

#[test]
fn a_bearer_token_and_an_api_key_together_are_an_invalid_request() {
    let t = format!("Bearer {}", claims().sign_rs256());
    // Each alone is accepted.
    assert_eq!(
        allowed_identity(&get("/mixed", &[("authorization", &t)])).subject,
        "alice"
    );
    assert_eq!(
        allowed_identity(&get("/mixed", &[("x-api-key", API_KEY)])).subject,
        "ci-bot"
    );
    // Both together are not, even though both are valid.
    let decision = get("/mixed", &[("authorization", &t), ("x-api-key", API_KEY)]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::BAD_REQUEST,
        &Reason::MalformedCredentials {
            detail: "More than one credential was sent",
        },
        &[
            "Bearer realm=\"warden\", error=\"invalid_request\", error_description=\"More than one credential was sent\"",
        ],
        "invalid_request",
    );
}

// ---------------------------------------------------------------------------------------
// Claims

#[test]
fn expiry_is_checked_against_the_engine_clock_with_leeway() {
    // The default leeway is 30 s: a token is refused from `exp + 30` on.
    assert_invalid_token(
        &get_bearer("/rs256", &claims().exp_in(-31).sign_rs256()),
        TokenProblem::Expired,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().exp_in(-30).sign_rs256()),
        TokenProblem::Expired,
    );
    let within = get_bearer("/rs256", &claims().exp_in(-29).sign_rs256());
    assert_eq!(allowed_identity(&within).expires_at, Some(NOW - 29));
}

#[test]
fn a_token_not_yet_valid_is_refused_beyond_leeway() {
    assert_invalid_token(
        &get_bearer("/rs256", &claims().nbf_in(31).sign_rs256()),
        TokenProblem::NotYetValid,
    );
    allowed_identity(&get_bearer("/rs256", &claims().nbf_in(30).sign_rs256()));
}

#[test]
fn the_issuer_must_be_the_configured_one_and_present() {
    assert_invalid_token(
        &get_bearer("/rs256", &claims().iss("https://evil.test").sign_rs256()),
        TokenProblem::WrongIssuer,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().without("iss").sign_rs256()),
        TokenProblem::MissingClaim,
    );
}

#[test]
fn the_audience_must_include_a_configured_one() {
    assert_invalid_token(
        &get_bearer("/rs256", &claims().aud("other-api").sign_rs256()),
        TokenProblem::WrongAudience,
    );
    assert_invalid_token(
        &get_bearer(
            "/rs256",
            &claims().aud(json!(["other-api", "third-api"])).sign_rs256(),
        ),
        TokenProblem::WrongAudience,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().without("aud").sign_rs256()),
        TokenProblem::MissingClaim,
    );
    allowed_identity(&get_bearer(
        "/rs256",
        &claims().aud(json!(["other-api", AUDIENCE])).sign_rs256(),
    ));
}

#[test]
fn exp_and_sub_are_required_by_default() {
    assert_invalid_token(
        &get_bearer("/rs256", &claims().without("exp").sign_rs256()),
        TokenProblem::MissingClaim,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().without("sub").sign_rs256()),
        TokenProblem::MissingClaim,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().sub("").sign_rs256()),
        TokenProblem::MissingClaim,
    );
    assert_invalid_token(
        &get_bearer("/rs256", &claims().claim("exp", "tomorrow").sign_rs256()),
        TokenProblem::MissingClaim,
    );
}

// ---------------------------------------------------------------------------------------
// Header attacks

#[test]
fn an_hmac_token_keyed_with_the_rsa_public_key_is_refused() {
    // The classic RS→HS confusion: the public key PEM bytes used as the HMAC secret.
    let forged = claims().kid("rsa-1").sign(Key::secret_file("rsa.pub.pem"));
    assert_invalid_token(
        &get_bearer("/rs256", &forged),
        TokenProblem::AlgorithmNotAllowed,
    );
    // The same trick with the JWKS source's keys.
    assert_invalid_token(
        &get_bearer("/jwks", &forged),
        TokenProblem::AlgorithmNotAllowed,
    );
}

/// `{"alg": spelling, "typ": "JWT"}` over the usual claims, then `signature`.
fn none_token(spelling: &str, signature: &str) -> String {
    format!("{}{signature}", claims().header("alg", spelling).unsigned())
}

#[test]
fn alg_none_in_any_spelling_is_refused_with_a_signature() {
    for spelling in ["none", "None", "NONE", "nOnE"] {
        for path in ["/rs256", "/hs256", "/jwks"] {
            assert_invalid_token(
                &get_bearer(path, &none_token(spelling, "c2lnbmF0dXJl")),
                TokenProblem::AlgorithmNotAllowed,
            );
        }
    }
}

#[test]
fn alg_none_in_any_spelling_is_refused_without_a_signature() {
    // An unsecured JWS (RFC 7515 appendix A.5, RFC 7519 §6.1) has an empty signature; that
    // is what an `alg: none` attack sends.
    for spelling in ["none", "None", "NONE", "nOnE"] {
        let token = none_token(spelling, "");
        assert!(token.ends_with('.'));
        // The refusal must hold whatever its classification.
        let decision = get_bearer("/rs256", &token);
        assert_eq!(decision.status(), StatusCode::UNAUTHORIZED);
        assert_invalid_token(&decision, TokenProblem::AlgorithmNotAllowed);
    }
}

fn rsa_jwk() -> Value {
    let jwks: Value = serde_json::from_slice(&read_key("jwks.json")).unwrap();
    jwks["keys"][0].clone()
}

#[test]
fn keys_carried_or_pointed_at_by_the_token_are_refused() {
    // `{"alg": "RS256", "typ": "JWT", "kid": "rsa-1"}`, then one parameter more.
    let base = claims().kid("rsa-1");
    // The same construction without the parameter is accepted: only the parameter is at fault.
    allowed_identity(&get_bearer("/rs256", &base.sign_rs256()));
    let params = [
        ("jwk", rsa_jwk()),
        ("jku", json!("https://evil.test/jwks.json")),
        ("x5u", json!("https://evil.test/cert.pem")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUQ2VydGlmaWNhdGU="])),
    ];
    for (name, value) in params {
        let token = base.clone().header(name, value).sign_rs256();
        assert_invalid_token(&get_bearer("/rs256", &token), TokenProblem::EmbeddedKey);
        assert_invalid_token(&get_bearer("/jwks", &token), TokenProblem::EmbeddedKey);
    }
}

#[test]
fn critical_header_extensions_are_refused() {
    let token = claims()
        .header("crit", json!(["urn:example:ext"]))
        .header("urn:example:ext", true)
        .sign_rs256();
    assert_invalid_token(
        &get_bearer("/rs256", &token),
        TokenProblem::UnsupportedCritical,
    );
}

#[test]
fn an_unknown_kid_names_no_key() {
    let t = claims().kid("rsa-9").sign_rs256();
    assert_invalid_token(&get_bearer("/rs256", &t), TokenProblem::UnknownKey);
    // A `kid` of absurd length is no key of ours either.
    let t = claims().kid(&"k".repeat(300)).sign_rs256();
    assert_invalid_token(&get_bearer("/rs256", &t), TokenProblem::UnknownKey);
}

#[test]
fn a_token_signed_by_another_key_under_a_known_kid_has_a_bad_signature() {
    let t = claims().kid("rsa-1").sign(Key::Rsa2);
    assert_invalid_token(&get_bearer("/rs256", &t), TokenProblem::BadSignature);
    let t = claims().sign(Key::Rsa2);
    assert_invalid_token(&get_bearer("/rs256", &t), TokenProblem::BadSignature);
    // A tampered payload under the right key.
    let good = claims().sign_rs256();
    let mut parts: Vec<&str> = good.split('.').collect();
    let forged_claims = claims().sub("root").encoded_claims();
    parts[1] = &forged_claims;
    assert_invalid_token(
        &get_bearer("/rs256", &parts.join(".")),
        TokenProblem::BadSignature,
    );
}

// ---------------------------------------------------------------------------------------
// JWKS

#[test]
fn every_key_of_the_jwks_file_verifies_its_tokens() {
    let engine = fresh_engine();
    let get_jwks = |t: &str| {
        request_with(
            &engine,
            Method::GET,
            "/jwks",
            &[("authorization", &format!("Bearer {t}"))],
        )
    };
    // RS256, ES256 and EdDSA, each under its kid and without one.
    for (key, kid) in [
        (Key::Rsa, "rsa-1"),
        (Key::Ec256, "ec-1"),
        (Key::Ed25519, "ed-1"),
    ] {
        for token in [claims().kid(kid), claims()] {
            let decision = get_jwks(&token.sign(key.clone()));
            let identity = allowed_identity(&decision);
            assert_eq!(
                (identity.subject.as_str(), &*identity.source),
                ("alice", "jwks")
            );
        }
    }
    let refused = |t: &str, problem: TokenProblem| {
        let decision = get_jwks(t);
        assert_refused(
            &engine,
            &decision,
            StatusCode::UNAUTHORIZED,
            &Reason::InvalidToken(problem),
            &[&invalid_token_challenge(problem)],
            "invalid_token",
        );
    };
    // A key of the right family under another key's kid.
    refused(
        &claims().kid("rsa-1").sign_es256(),
        TokenProblem::UnknownKey,
    );
    // The JWK pins RS256: the same RSA key does not verify PS256 (not pinned either).
    refused(
        &claims().kid("rsa-1").sign_ps256(),
        TokenProblem::AlgorithmNotAllowed,
    );
    // The rotated key is unknown until it is fetched, and impersonates no one.
    let rotated = claims().kid("rsa-2").sign(Key::Rsa2);
    refused(&rotated, TokenProblem::UnknownKey);
    refused(
        &claims().kid("rsa-1").sign(Key::Rsa2),
        TokenProblem::BadSignature,
    );

    let jwks = read_key("jwks-rotated.json");
    assert_eq!(engine.config().set_fetched_keys("jwks", &jwks), Ok(1));
    allowed_identity(&get_jwks(&rotated));
    allowed_identity(&get_jwks(&claims().kid("rsa-1").sign_rs256()));
}

// ---------------------------------------------------------------------------------------
// API keys, Basic, cookies

#[test]
fn api_keys_are_checked_against_their_hash() {
    let decision = get("/apikey", &[("x-api-key", API_KEY)]);
    let identity = allowed_identity(&decision);
    assert_eq!(identity.subject, "ci-bot");
    assert_eq!(identity.kind, CredentialKind::ApiKey);
    assert_eq!(identity.roles, ["deployer"]);
    assert_eq!(identity.scopes, ["deploy"]);
    assert_eq!(identity.token_id.as_deref(), Some("ci-1"));

    for wrong in ["wk_test_wrong", &API_KEY[..API_KEY.len() - 1]] {
        let decision = get("/apikey", &[("x-api-key", wrong)]);
        assert_refused(
            engine(),
            &decision,
            StatusCode::UNAUTHORIZED,
            &Reason::InvalidCredentials,
            &["ApiKey realm=\"warden\", header=\"x-api-key\""],
            "invalid_credentials",
        );
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn basic_credentials_are_checked_against_argon2() {
    let decision = get("/basic", &[("authorization", &basic("ops", PASSWORD))]);
    let identity = allowed_identity(&decision);
    assert_eq!(identity.subject, "ops");
    assert_eq!(identity.kind, CredentialKind::Basic);
    assert_eq!(identity.roles, ["admin"]);

    for (user, password) in [("ops", "wrong"), ("ops", ""), ("nobody", PASSWORD)] {
        let decision = get("/basic", &[("authorization", &basic(user, password))]);
        assert_refused(
            engine(),
            &decision,
            StatusCode::UNAUTHORIZED,
            &Reason::InvalidCredentials,
            &["Basic realm=\"warden\", charset=\"UTF-8\""],
            "invalid_credentials",
        );
    }
}

#[test]
fn a_cookie_source_reads_its_cookie_only() {
    let cookie = format!("theme=dark; session={}", claims().sign_rs256());
    let decision = get("/cookie", &[("cookie", &cookie)]);
    let identity = allowed_identity(&decision);
    assert_eq!(identity.subject, "alice");
    assert_eq!(identity.kind, CredentialKind::Cookie);
    assert_eq!(&*identity.source, "session");

    let expired = format!("session={}; theme=dark", claims().expired().sign_rs256());
    let decision = get("/cookie", &[("cookie", &expired)]);
    assert_refused(
        engine(),
        &decision,
        StatusCode::UNAUTHORIZED,
        &Reason::InvalidToken(TokenProblem::Expired),
        &["Cookie realm=\"warden\", cookie-name=\"session\""],
        "invalid_token",
    );

    // A bearer token is not what this route reads.
    let decision = get_bearer("/cookie", &claims().sign_rs256());
    assert_refused(
        engine(),
        &decision,
        StatusCode::UNAUTHORIZED,
        &Reason::NoCredentials,
        &["Cookie realm=\"warden\", cookie-name=\"session\""],
        "unauthenticated",
    );
}

// ---------------------------------------------------------------------------------------
// Authorization

#[test]
fn roles_are_read_at_a_dotted_claim_path() {
    let keycloak = claims().claim("realm_access", json!({"roles": ["admin", "user"]}));
    let decision = get_bearer("/realm", &keycloak.sign_rs256());
    assert_eq!(allowed_identity(&decision).roles, ["admin", "user"]);

    // A top-level `roles` claim is not the configured one.
    let wrong_place = claims()
        .roles(["admin"])
        .claim("realm_access", json!({"roles": ["user"]}));
    let decision = get_bearer("/realm", &wrong_place.sign_rs256());
    assert_eq!(
        decision.reason(),
        Some(&Reason::MissingRole {
            needed: vec!["admin".to_owned()],
            held: vec!["user".to_owned()],
        })
    );
}

#[test]
fn a_missing_role_is_a_plain_403() {
    let viewer = claims().roles(["viewer"]);
    let decision = get_bearer("/admin", &viewer.sign_rs256());
    let response = assert_refused(
        engine(),
        &decision,
        StatusCode::FORBIDDEN,
        &Reason::MissingRole {
            needed: vec!["admin".to_owned()],
            held: vec!["viewer".to_owned()],
        },
        &[],
        "forbidden",
    );
    assert!(!String::from_utf8_lossy(response.body()).contains("admin"));
    assert_eq!(
        decision.identity().map(|i| i.subject.as_str()),
        Some("alice")
    );

    let admin = claims().roles(["viewer", "admin"]);
    allowed_identity(&get_bearer("/admin", &admin.sign_rs256()));
}

#[test]
fn a_missing_scope_is_insufficient_scope() {
    let reader = claims().scope("docs:read");
    let decision = get_bearer("/docs", &reader.sign_rs256());
    let response = assert_refused(
        engine(),
        &decision,
        StatusCode::FORBIDDEN,
        &Reason::InsufficientScope {
            required: vec!["docs:write".to_owned()],
            missing: vec!["docs:write".to_owned()],
        },
        &[
            "Bearer realm=\"warden\", error=\"insufficient_scope\", error_description=\"The access token lacks a required scope\", scope=\"docs:write\"",
        ],
        "insufficient_scope",
    );
    assert_eq!(body(&response)["required_scopes"], json!(["docs:write"]));

    let writer = claims().scope("docs:read docs:write");
    allowed_identity(&get_bearer("/docs", &writer.sign_rs256()));
}

// ---------------------------------------------------------------------------------------
// Concealment and routing

fn without_instance(mut body: Value) -> Value {
    let instance = body
        .as_object_mut()
        .unwrap()
        .remove("instance")
        .expect("a problem has an instance");
    assert!(instance.as_str().unwrap().starts_with("urn:uuid:"));
    body
}

#[test]
fn a_concealed_refusal_is_indistinguishable_from_an_unknown_path() {
    let unknown = get("/nowhere", &[]);
    assert_eq!(unknown.reason(), Some(&Reason::RouteNotFound));
    let canonical = render(engine(), &unknown);
    assert_eq!(canonical.status(), StatusCode::NOT_FOUND);

    let expired = claims().expired().sign_rs256();
    let cases = [
        (Method::GET, vec![], Reason::NoCredentials),
        (
            Method::GET,
            vec![("authorization".to_owned(), format!("Bearer {expired}"))],
            Reason::InvalidToken(TokenProblem::Expired),
        ),
        (
            Method::POST,
            vec![],
            Reason::MethodNotAllowed {
                allow: vec![Method::GET, Method::HEAD],
            },
        ),
    ];
    for (method, headers, reason) in cases {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let decision = request_with(engine(), method, "/secret", &headers);
        // The log keeps the true reason; the client sees a 404.
        assert_eq!(decision.reason(), Some(&reason));
        assert_eq!(decision.status(), StatusCode::NOT_FOUND);
        let response = render(engine(), &decision);
        assert_eq!(response.status(), canonical.status());
        assert_eq!(response.headers(), canonical.headers());
        assert_eq!(
            without_instance(body(&response)),
            without_instance(body(&canonical))
        );
    }

    // With a valid token the concealed route is just a route.
    allowed_identity(&get_bearer("/secret", &claims().sign_rs256()));
}

#[test]
fn a_wrong_method_is_a_405_with_allow() {
    let decision = request_with(engine(), Method::POST, "/rs256", &[]);
    let response = assert_refused(
        engine(),
        &decision,
        StatusCode::METHOD_NOT_ALLOWED,
        &Reason::MethodNotAllowed {
            allow: vec![Method::GET, Method::HEAD],
        },
        &[],
        "method_not_allowed",
    );
    assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
}

// ---------------------------------------------------------------------------------------
// Identity headers

#[test]
fn an_allowed_request_carries_identity_headers_and_strips_forged_ones() {
    let t = claims()
        .roles(["viewer", "editor"])
        .scope("docs:read docs:write")
        .jti("token-1")
        .sign_rs256();
    let decision = get(
        "/rs256?x=1",
        &[
            ("authorization", &format!("Bearer {t}")),
            ("x-warden-subject", "mallory"),
        ],
    );
    let allow = assert_allowed(&decision);
    assert_eq!(&*allow.upstream, "app");
    assert_eq!(allow.path_and_query, "/rs256?x=1");
    let identity = allow.identity.as_ref().unwrap();
    assert_eq!(identity.token_id.as_deref(), Some("token-1"));

    let added: Vec<(&str, &str)> = allow
        .headers
        .add
        .iter()
        .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
        .collect();
    let id = decision.id.to_string();
    for expected in [
        ("x-warden-decision-id", id.as_str()),
        ("x-warden-subject", "alice"),
        ("x-warden-auth-source", "rs256"),
        ("x-warden-roles", "viewer,editor"),
        ("x-warden-scopes", "docs:read docs:write"),
    ] {
        assert!(added.contains(&expected), "{expected:?} not in {added:?}");
    }
    assert_eq!(added.len(), 5, "{added:?}");

    let removed: Vec<&str> = allow
        .headers
        .remove
        .iter()
        .map(HeaderName::as_str)
        .collect();
    for name in [
        "x-warden-subject",
        "x-warden-roles",
        "x-warden-scopes",
        "x-warden-auth-source",
        "x-warden-decision-id",
    ] {
        assert!(removed.contains(&name), "{name} not in {removed:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Configuration checks

const UPSTREAM: &str = "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n";

#[track_caller]
fn config_errors(text: &str) -> Vec<ConfigError> {
    match Config::parse(text, Path::new(ORIGIN)) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.0,
    }
}

/// The error at `field`, which must exist.
#[track_caller]
fn error_at<'a>(errors: &'a [ConfigError], field: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.field == field)
        .unwrap_or_else(|| panic!("no error at {field}: {errors:#?}"))
}

#[test]
fn a_jwt_source_cannot_mix_hmac_and_public_key_algorithms() {
    let text = format!(
        "{UPSTREAM}\n[sources.mixed]\ntype = \"jwt\"\nalgorithms = [\"HS256\", \"RS256\"]\nkeys = [{{ secret_file = \"hmac.secret\" }}]\n"
    );
    //  1 [upstreams.app]  2 url  3 (blank)  4 [sources.mixed]  5 type  6 algorithms
    let errors = config_errors(&text);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    let e = error_at(&errors, "sources.mixed.algorithms");
    assert_eq!(e.line, 6);
    assert_eq!(e.file, PathBuf::from(ORIGIN));
    assert!(e.message.contains("algorithm confusion"), "{}", e.message);
    assert!(e.to_string().contains(":6:"), "{e}");
}

/// A directory of its own for secrets written by a test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-authn-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn an_hmac_secret_shorter_than_32_bytes_is_refused() {
    let dir = scratch_dir("secrets");
    let config = |len: usize| {
        let file = dir.join(format!("secret-{len}"));
        std::fs::write(&file, "s".repeat(len)).unwrap();
        format!(
            "{UPSTREAM}[sources.hmac]\ntype = \"jwt\"\nalgorithms = [\"HS256\"]\nkeys = [{{ secret_file = '{}' }}]\n",
            file.display()
        )
    };
    let errors = config_errors(&config(31));
    let e = error_at(&errors, "sources.hmac.keys[0]");
    assert_eq!(e.line, 6);
    assert_eq!(e.message, "an HMAC secret must be at least 32 bytes");
    // 32 bytes is enough.
    Config::parse(&config(32), Path::new(ORIGIN)).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_private_key_is_refused_as_a_verification_key() {
    for (alg, file) in [
        ("RS256", "rsa.key"),
        ("ES256", "ec256.key"),
        ("EdDSA", "ed25519.key"),
    ] {
        let text = format!(
            "{UPSTREAM}[sources.leaky]\ntype = \"jwt\"\nalgorithms = [\"{alg}\"]\nkeys = [{{ pem_file = \"{file}\" }}]\n"
        );
        let errors = config_errors(&text);
        let e = error_at(&errors, "sources.leaky.keys[0]");
        assert_eq!(e.line, 6);
        assert!(e.message.contains("private key"), "{}", e.message);
    }
    // Inline PEM too.
    let pem = String::from_utf8(read_key("rsa.key")).unwrap();
    let text = format!(
        "{UPSTREAM}[sources.leaky]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nkeys = [{{ pem = '''\n{pem}''' }}]\n"
    );
    let errors = config_errors(&text);
    assert!(
        error_at(&errors, "sources.leaky.keys[0]")
            .message
            .contains("private key")
    );
}

#[test]
fn a_refused_key_is_reported_once_not_also_as_missing_keys() {
    // `keys` is given; its one key is refused. The only true error is the key's: a second
    // "a JWT source needs `keys`…" at the table header would send the reader looking for a
    // missing field.
    let dir = scratch_dir("cascade");
    let short = dir.join("short");
    std::fs::write(&short, "too short").unwrap();
    for key in [
        format!("{{ secret_file = '{}' }}", short.display()),
        "{ pem_file = \"rsa.key\" }".to_owned(),
    ] {
        let alg = if key.contains("secret_file") {
            "HS256"
        } else {
            "RS256"
        };
        let text = format!(
            "{UPSTREAM}[sources.one]\ntype = \"jwt\"\nalgorithms = [\"{alg}\"]\nkeys = [{key}]\n"
        );
        let errors = config_errors(&text);
        assert_eq!(
            errors.iter().map(|e| e.field.as_str()).collect::<Vec<_>>(),
            ["sources.one.keys[0]"],
            "{errors:#?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_none_algorithm_cannot_be_configured() {
    for spelling in ["none", "None", "NONE"] {
        let text = format!(
            "{UPSTREAM}[sources.open]\ntype = \"jwt\"\nalgorithms = [\"RS256\", \"{spelling}\"]\nkeys = [{{ pem_file = \"rsa.pub.pem\" }}]\n"
        );
        let errors = config_errors(&text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        let e = error_at(&errors, "sources.open.algorithms");
        assert_eq!(e.line, 5);
        assert_eq!(e.message, "`none` is never accepted");
    }
    let text = format!(
        "{UPSTREAM}[sources.open]\ntype = \"jwt\"\nalgorithms = [\"none\"]\nkeys = [{{ pem_file = \"rsa.pub.pem\" }}]\n"
    );
    let errors = config_errors(&text);
    assert_eq!(
        error_at(&errors, "sources.open.algorithms").message,
        "`none` is never accepted"
    );
}

#[test]
fn the_test_keys_are_what_the_fixtures_say() {
    // Private keys are PKCS#8; public keys are SPKI; the secret has no trailing newline.
    for name in ["rsa", "rsa2", "ec256", "ec384", "ed25519"] {
        let private = String::from_utf8(read_key(&format!("{name}.key"))).unwrap();
        assert!(private.starts_with("-----BEGIN PRIVATE KEY-----"), "{name}");
        let public = String::from_utf8(read_key(&format!("{name}.pub.pem"))).unwrap();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{name}");
    }
    let secret = read_key("hmac.secret");
    assert_eq!(secret.len(), 48);
    assert!(secret.iter().all(u8::is_ascii_graphic));
}
