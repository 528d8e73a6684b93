//! Authorization with Cedar, through the engine: the sample configuration in
//! `testdata/cedar` (RBAC, OAuth scopes, ABAC, forbid over permit, ownership, business
//! hours in Europe/Paris, an address range, a concealed route), real RS256 tokens from the
//! test kit, assumed identities for explanations, and explicit times throughout.
//! Decisions, reasons, deciding policies and rendered refusals are checked exactly.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use serde_json::{Value, json};
use warden_core::identity::CredentialKind;
use warden_core::response::{Branding, render_decision};
use warden_core::{Config, ConfigError, Decision, Engine, Identity, Reason, RequestView, Stage};
use warden_testkit::{Token, fixture};

const CEDAR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/cedar");
const CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../testdata/cedar/warden.toml"
);

/// Every policy id of the sample policies: none may ever appear in a body.
const POLICY_IDS: &[&str] = &[
    "me-for-everyone",
    "admins-administer",
    "read-own-department",
    "editors-edit",
    "no-edits-above-3",
    "own-profile",
    "authors-edit-their-documents",
    "reports-in-office-hours",
    "office-network",
];
/// Every role the sample policies name: a `public` body never names one.
const ROLE_NAMES: &[&str] = &["admin", "viewer", "editor", "analyst"];

// ---------------------------------------------------------------------------------------
// Clock, engines, tokens, requests

/// A UTC instant written as RFC 3339.
fn at(instant: &str) -> SystemTime {
    let ts: jiff::Timestamp = instant.parse().unwrap();
    UNIX_EPOCH + Duration::from_secs(u64::try_from(ts.as_second()).unwrap())
}

/// Monday 2026-11-23, 09:30 in Paris (CET, UTC+1): inside business hours.
fn monday_morning() -> SystemTime {
    at("2026-11-23T08:30:00Z")
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        Engine::new(Config::load(Path::new(CONFIG)).unwrap_or_else(|e| panic!("{e}")))
    })
}

fn failclosed_engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let path = Path::new(CEDAR).join("failclosed/warden.toml");
        Engine::new(Config::load(&path).unwrap_or_else(|e| panic!("{e}")))
    })
}

/// An RS256 token (kid `rsa-1`) for `sub` with `roles`, valid for ten minutes after `now`,
/// with `extra` claims merged in.
fn token(sub: &str, roles: &[&str], now: SystemTime, extra: &Value) -> String {
    let clock = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut token = Token::at(clock).sub(sub).roles(roles).exp_in(600);
    for (k, v) in extra.as_object().into_iter().flatten() {
        token = token.claim(k, v.clone());
    }
    token.kid("rsa-1").sign_rs256()
}

fn office() -> IpAddr {
    IpAddr::from([10, 1, 2, 3])
}

fn headers_with(token: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
        );
    }
    headers
}

/// Decide one request on an engine.
fn decide_on(
    engine: &Engine,
    method: &Method,
    path: &str,
    token: Option<&str>,
    peer: IpAddr,
    now: SystemTime,
) -> Decision {
    let headers = headers_with(token);
    engine.decide(&RequestView::new(method, path, &headers, peer), now)
}

/// Decide one request on the sample engine, from the office, on Monday morning.
fn decide(method: &Method, path: &str, token: Option<&str>) -> Decision {
    decide_on(engine(), method, path, token, office(), monday_morning())
}

/// Decide with a fresh token for `sub` with `roles` and `extra` claims.
fn decide_as(method: &Method, path: &str, sub: &str, roles: &[&str], extra: &Value) -> Decision {
    let t = token(sub, roles, monday_morning(), extra);
    decide(method, path, Some(&t))
}

/// An identity as the `idp` source would verify it, with every field set.
fn identity(sub: &str, roles: &[&str], scopes: &[&str], attributes: &Value) -> Identity {
    let attributes: BTreeMap<String, Value> = attributes
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    Identity {
        subject: sub.to_owned(),
        source: Arc::from("idp"),
        kind: CredentialKind::Bearer,
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        token_id: Some("jti-1".to_owned()),
        expires_at: Some(
            monday_morning()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 600,
        ),
        issued_at: None,
        attributes,
    }
}

fn render(engine: &Engine, d: &Decision, html: bool) -> Response<Bytes> {
    render_decision(d, Branding::from(engine.config()), html).expect("a refusal renders")
}

fn body_text(r: &Response<Bytes>) -> String {
    String::from_utf8(r.body().to_vec()).unwrap()
}

fn problem(r: &Response<Bytes>) -> Value {
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    serde_json::from_slice(r.body()).unwrap()
}

fn www_authenticate(r: &Response<Bytes>) -> Vec<String> {
    r.headers()
        .get_all(header::WWW_AUTHENTICATE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn headers_of(r: &Response<Bytes>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = r
        .headers()
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
        .collect();
    out.sort();
    out
}

fn sorted(policies: &[String]) -> Vec<String> {
    let mut out = policies.to_vec();
    out.sort();
    out
}

fn assert_allowed_by(d: &Decision, policies: &[&str]) {
    assert!(
        d.is_allowed(),
        "expected an allow by {policies:?}, got {:?}",
        d.reason()
    );
    assert_eq!(d.status(), StatusCode::OK);
    assert_eq!(d.reason(), None);
    assert_eq!(d.stage, Stage::Forward);
    let mut want: Vec<String> = policies.iter().map(|p| (*p).to_owned()).collect();
    want.sort();
    assert_eq!(sorted(&d.policies), want);
}

fn assert_no_permit(d: &Decision) {
    assert!(!d.is_allowed());
    assert_eq!(d.reason(), Some(&Reason::NoPolicyPermits));
    assert_eq!(d.status(), StatusCode::FORBIDDEN);
    assert_eq!(d.stage, Stage::Authorize);
    assert!(d.policies.is_empty(), "{:?}", d.policies);
}

fn assert_policy_error(d: &Decision) -> Vec<String> {
    assert!(!d.is_allowed(), "a policy error must deny");
    assert_eq!(d.status(), StatusCode::FORBIDDEN);
    assert_eq!(d.stage, Stage::Authorize);
    match d.reason() {
        Some(Reason::PolicyError { errors }) => {
            assert!(!errors.is_empty());
            errors.clone()
        }
        other => panic!("expected a policy error, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// RBAC

#[test]
fn admins_may_administer_and_viewers_may_not() {
    let d = decide_as(&Method::GET, "/admin", "ada", &["admin"], &json!({}));
    assert_allowed_by(&d, &["admins-administer"]);
    assert_eq!(d.route.as_deref(), Some("admin"));
    assert_eq!(d.identity().unwrap().subject, "ada");

    let d = decide_as(&Method::GET, "/admin", "vic", &["viewer"], &json!({}));
    assert_no_permit(&d);
    assert_eq!(d.route.as_deref(), Some("admin"));
    assert_eq!(d.identity().unwrap().subject, "vic");

    // /admin is `internal`: the body says which kind of refusal, and still no policy id.
    let r = render(engine(), &d, false);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        www_authenticate(&r).is_empty(),
        "a policy 403 has no challenge"
    );
    let doc = problem(&r);
    assert_eq!(doc["status"], 403);
    assert_eq!(doc["code"], "forbidden");
    assert_eq!(doc["type"], "urn:warden:problem:forbidden");
    assert_eq!(doc["title"], "Forbidden");
    assert_eq!(doc["detail"], "No policy permits this request.");
    assert_eq!(doc["instance"], format!("urn:uuid:{}", d.id));
    let text = body_text(&r);
    for id in POLICY_IDS {
        assert!(!text.contains(id), "{id} in {text}");
    }

    // An admin who also holds other roles is still an admin; no roles at all is nobody.
    let d = decide_as(
        &Method::GET,
        "/admin",
        "ada",
        &["viewer", "admin", "none"],
        &json!({}),
    );
    assert_allowed_by(&d, &["admins-administer"]);
    let d = decide_as(&Method::GET, "/admin", "nobody", &[], &json!({}));
    assert_no_permit(&d);
}

#[test]
fn everyone_authenticated_may_see_who_they_are() {
    for roles in [&["admin"][..], &["viewer"], &["editor", "analyst"], &[]] {
        let d = decide_as(&Method::GET, "/me", "someone", roles, &json!({}));
        assert_allowed_by(&d, &["me-for-everyone"]);
    }
}

#[test]
fn a_request_without_credentials_is_challenged_before_any_policy() {
    // Authenticate before authorize: no token is a 401 with a plain challenge, never a 403.
    for path in ["/me", "/admin", "/reports", "/office", "/docs/1", "/scoped"] {
        let d = decide(&Method::GET, path, None);
        assert_eq!(d.reason(), Some(&Reason::NoCredentials), "{path}");
        assert_eq!(d.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(d.stage, Stage::Authenticate);
        assert!(d.policies.is_empty());
        let r = render(engine(), &d, false);
        assert_eq!(
            www_authenticate(&r),
            vec!["Bearer realm=\"warden\""],
            "{path}"
        );
        assert_eq!(problem(&r)["code"], "unauthenticated");
    }
}

// ---------------------------------------------------------------------------------------
// OAuth scopes

#[test]
fn a_missing_scope_is_insufficient_scope_with_the_scope_named() {
    for scope in [None, Some("docs:read"), Some("docs:read openid")] {
        let extra = scope.map_or_else(|| json!({}), |s| json!({ "scope": s }));
        let d = decide_as(&Method::GET, "/scoped", "sam", &["admin"], &extra);
        assert!(!d.is_allowed());
        assert_eq!(d.status(), StatusCode::FORBIDDEN);
        assert_eq!(d.stage, Stage::Authorize);
        assert_eq!(
            d.reason(),
            Some(&Reason::InsufficientScope {
                required: vec!["docs:write".to_owned()],
                missing: vec!["docs:write".to_owned()],
            }),
            "scope {scope:?}"
        );
        // The route's requirement refused it: no policy decided.
        assert!(d.policies.is_empty());
        let r = render(engine(), &d, false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            www_authenticate(&r),
            vec![
                "Bearer realm=\"warden\", error=\"insufficient_scope\", \
                 error_description=\"The access token lacks a required scope\", \
                 scope=\"docs:write\""
            ]
        );
        let doc = problem(&r);
        assert_eq!(doc["code"], "insufficient_scope");
        assert_eq!(doc["status"], 403);
        assert_eq!(doc["required_scopes"], json!(["docs:write"]));
        assert_eq!(
            doc["detail"],
            "The access token lacks the required scope: docs:write."
        );
    }

    // With the scope, the policies decide: the route's action is `me`.
    let d = decide_as(
        &Method::GET,
        "/scoped",
        "sam",
        &[],
        &json!({ "scope": "docs:read docs:write" }),
    );
    assert_allowed_by(&d, &["me-for-everyone"]);
    assert_eq!(
        d.identity().unwrap().scopes,
        vec!["docs:read", "docs:write"]
    );
}

// ---------------------------------------------------------------------------------------
// ABAC

#[test]
fn documents_are_read_within_the_department_with_enough_clearance() {
    let read = |sub: &str, doc: &str, attrs: Value| {
        decide_as(&Method::GET, &format!("/docs/{doc}"), sub, &[], &attrs)
    };
    // Document 1: finance, sensitivity 1. 2: finance, 3. 3: legal, 4.
    let finance2 = json!({ "department": "finance", "clearance": 2 });
    let d = read("fay", "1", finance2.clone());
    assert_allowed_by(&d, &["read-own-department"]);
    assert_eq!(d.route.as_deref(), Some("read-doc"));
    assert_no_permit(&read("fay", "2", finance2.clone()));
    assert_no_permit(&read("fay", "3", finance2));

    // Clearance equal to the sensitivity is enough.
    let finance3 = json!({ "department": "finance", "clearance": 3 });
    assert_allowed_by(&read("fay", "2", finance3), &["read-own-department"]);

    // High clearance in the wrong department is not.
    let finance9 = json!({ "department": "finance", "clearance": 9 });
    assert_no_permit(&read("fay", "3", finance9));
    let legal4 = json!({ "department": "legal", "clearance": 4 });
    assert_allowed_by(&read("lee", "3", legal4.clone()), &["read-own-department"]);
    assert_no_permit(&read("lee", "1", legal4));
}

#[test]
fn missing_attributes_deny_and_never_allow() {
    // The verified identity replaces the entities file's `alice` (finance, clearance 2):
    // a token without the attributes gets nothing from that file.
    for attrs in [
        json!({}),
        json!({ "department": "finance" }),
        json!({ "clearance": 5 }),
    ] {
        for doc in ["1", "2", "3"] {
            let d = decide_as(
                &Method::GET,
                &format!("/docs/{doc}"),
                "alice",
                &["admin", "viewer"],
                &attrs,
            );
            assert_no_permit(&d);
        }
        // The same through an assumed identity.
        let headers = HeaderMap::new();
        let e = engine().explain(
            &RequestView::new(&Method::GET, "/docs/1", &headers, office()),
            monday_morning(),
            Some(identity("alice", &[], &[], &attrs)),
        );
        assert_no_permit(&e.decision);
    }
}

#[test]
fn attributes_of_the_wrong_type_or_unknown_documents_fail_closed() {
    // A string clearance makes `>=` a type error: denied, not skipped.
    let d = decide_as(
        &Method::GET,
        "/docs/1",
        "fay",
        &[],
        &json!({ "department": "finance", "clearance": "top-secret" }),
    );
    assert_policy_error(&d);

    // Claims with no Cedar value (a float, a null) cannot become attributes: denied too.
    for clearance in [json!(2.5), Value::Null] {
        let d = decide_as(
            &Method::GET,
            "/docs/1",
            "fay",
            &[],
            &json!({ "department": "finance", "clearance": clearance }),
        );
        assert_policy_error(&d);
    }

    // A document that is not in the entities file has no attributes to read.
    let d = decide_as(
        &Method::GET,
        "/docs/99",
        "fay",
        &[],
        &json!({ "department": "finance", "clearance": 9 }),
    );
    assert_policy_error(&d);

    // Editing it: the permit matches, the forbid errors on `resource.sensitivity`. Had the
    // erroring forbid been skipped, the editor would be allowed.
    let d = decide_as(&Method::PUT, "/docs/99", "eve", &["editor"], &json!({}));
    assert_policy_error(&d);
}

// ---------------------------------------------------------------------------------------
// forbid over permit, ownership

#[test]
fn a_forbid_overrides_a_permit() {
    let d = decide_as(&Method::PUT, "/docs/3", "eve", &["editor"], &json!({}));
    assert!(!d.is_allowed());
    assert_eq!(d.status(), StatusCode::FORBIDDEN);
    assert_eq!(d.stage, Stage::Authorize);
    assert_eq!(
        d.reason(),
        Some(&Reason::PolicyForbids {
            policies: vec!["no-edits-above-3".to_owned()]
        })
    );
    assert_eq!(d.policies, vec!["no-edits-above-3".to_owned()]);
    assert_eq!(d.route.as_deref(), Some("edit-doc"));

    // The same editor may edit document 2 (sensitivity 3).
    let d = decide_as(&Method::PUT, "/docs/2", "eve", &["editor"], &json!({}));
    assert_allowed_by(&d, &["editors-edit"]);

    // bob owns documents 2 and 3: ownership permits 2, and the forbid still wins on 3.
    let d = decide_as(&Method::PUT, "/docs/2", "bob", &[], &json!({}));
    assert_allowed_by(&d, &["authors-edit-their-documents"]);
    let d = decide_as(&Method::PUT, "/docs/2", "bob", &["editor"], &json!({}));
    assert_allowed_by(&d, &["authors-edit-their-documents", "editors-edit"]);
    let d = decide_as(&Method::PUT, "/docs/3", "bob", &["editor"], &json!({}));
    assert_eq!(
        d.reason(),
        Some(&Reason::PolicyForbids {
            policies: vec!["no-edits-above-3".to_owned()]
        })
    );

    // Neither editor nor author.
    let d = decide_as(&Method::PUT, "/docs/1", "eve", &["viewer"], &json!({}));
    assert_no_permit(&d);
}

#[test]
fn only_the_owner_edits_a_profile() {
    let d = decide_as(
        &Method::PUT,
        "/users/alice/profile",
        "alice",
        &[],
        &json!({}),
    );
    assert_allowed_by(&d, &["own-profile"]);
    assert_eq!(d.route.as_deref(), Some("edit-profile"));
    for roles in [&[][..], &["admin"], &["editor", "viewer"]] {
        let d = decide_as(
            &Method::PUT,
            "/users/alice/profile",
            "bob",
            roles,
            &json!({}),
        );
        assert_no_permit(&d);
    }
    // A percent-encoded path is normalized first: still alice's profile.
    let d = decide_as(
        &Method::PUT,
        "/users/%61lice/profile",
        "alice",
        &[],
        &json!({}),
    );
    assert_allowed_by(&d, &["own-profile"]);
    // The route is PUT only.
    let d = decide_as(
        &Method::GET,
        "/users/alice/profile",
        "alice",
        &[],
        &json!({}),
    );
    assert_eq!(d.status(), StatusCode::METHOD_NOT_ALLOWED);
}

// ---------------------------------------------------------------------------------------
// Time and address

fn reports_at(instant: &str, roles: &[&str]) -> Decision {
    let now = at(instant);
    let t = token("ann", roles, now, &json!({}));
    decide_on(engine(), &Method::GET, "/reports", Some(&t), office(), now)
}

#[test]
fn reports_only_in_paris_business_hours() {
    // Monday 09:30 Paris.
    assert_allowed_by(
        &reports_at("2026-11-23T08:30:00Z", &["analyst"]),
        &["reports-in-office-hours"],
    );
    // Monday 18:30 Paris.
    assert_no_permit(&reports_at("2026-11-23T17:30:00Z", &["analyst"]));
    // Saturday 11:00 Paris.
    assert_no_permit(&reports_at("2026-11-28T10:00:00Z", &["analyst"]));
    // Sunday noon.
    assert_no_permit(&reports_at("2026-11-29T11:00:00Z", &["analyst"]));
    // Boundaries: 09:00 is in, 08:59 and 18:00 are out, 17:59 is in.
    assert_allowed_by(
        &reports_at("2026-11-23T08:00:00Z", &["analyst"]),
        &["reports-in-office-hours"],
    );
    assert_no_permit(&reports_at("2026-11-23T07:59:00Z", &["analyst"]));
    assert_allowed_by(
        &reports_at("2026-11-27T16:59:00Z", &["analyst"]),
        &["reports-in-office-hours"],
    );
    assert_no_permit(&reports_at("2026-11-27T17:00:00Z", &["analyst"]));
    // Summer time (CEST, UTC+2): Monday 2026-07-06 07:30Z is 09:30 in Paris, 06:30Z 08:30.
    assert_allowed_by(
        &reports_at("2026-07-06T07:30:00Z", &["analyst"]),
        &["reports-in-office-hours"],
    );
    assert_no_permit(&reports_at("2026-07-06T06:30:00Z", &["analyst"]));
    // Not an analyst: never.
    assert_no_permit(&reports_at("2026-11-23T08:30:00Z", &["viewer", "admin"]));
}

#[test]
fn the_office_route_needs_an_office_address() {
    let t = token("oli", &[], monday_morning(), &json!({}));
    for peer in [
        IpAddr::from([10, 1, 2, 3]),
        IpAddr::from([10, 0, 0, 0]),
        IpAddr::from([10, 255, 255, 255]),
    ] {
        let d = decide_on(
            engine(),
            &Method::GET,
            "/office",
            Some(&t),
            peer,
            monday_morning(),
        );
        assert_allowed_by(&d, &["office-network"]);
    }
    for peer in [
        IpAddr::from([192, 0, 2, 1]),
        IpAddr::from([11, 0, 0, 0]),
        IpAddr::from([127, 0, 0, 1]),
        "::1".parse().unwrap(),
    ] {
        let d = decide_on(
            engine(),
            &Method::GET,
            "/office",
            Some(&t),
            peer,
            monday_morning(),
        );
        assert_no_permit(&d);
    }
}

// ---------------------------------------------------------------------------------------
// Concealment and verbosity

/// A rendered body with its `instance` (the decision id) blanked.
fn without_instance(r: &Response<Bytes>, d: &Decision) -> String {
    body_text(r).replace(&d.id.to_string(), "<id>")
}

#[test]
fn a_concealed_refusal_is_the_unknown_path_404() {
    let unknown = decide_as(&Method::GET, "/nowhere", "vic", &["viewer"], &json!({}));
    assert_eq!(unknown.reason(), Some(&Reason::RouteNotFound));
    for html in [false, true] {
        let reference = render(engine(), &unknown, html);
        assert_eq!(reference.status(), StatusCode::NOT_FOUND);

        let vic = token("vic", &["viewer"], monday_morning(), &json!({}));
        let cases = [
            // An authenticated non-admin: the true reason is kept for the log.
            (
                decide(&Method::GET, "/vault/1", Some(&vic)),
                Reason::NoPolicyPermits,
            ),
            // No credentials: no challenge either.
            (
                decide(&Method::GET, "/vault/1", None),
                Reason::NoCredentials,
            ),
            // A bad token.
            (
                decide(&Method::GET, "/vault/1", Some("not.a.token")),
                Reason::InvalidToken(warden_core::decision::TokenProblem::Garbled),
            ),
        ];
        for (d, reason) in cases {
            assert_eq!(d.status(), StatusCode::NOT_FOUND);
            assert_eq!(d.reason(), Some(&reason));
            assert_eq!(d.route.as_deref(), Some("vault"));
            let r = render(engine(), &d, html);
            assert_eq!(r.status(), StatusCode::NOT_FOUND);
            assert_eq!(headers_of(&r), headers_of(&reference), "{reason:?}");
            assert_eq!(
                without_instance(&r, &d),
                without_instance(&reference, &unknown),
                "{reason:?}"
            );
        }

        // A method the concealed route does not take is a 404 as well, not a 405.
        let d = decide(&Method::DELETE, "/vault/1", Some(&vic));
        assert_eq!(d.status(), StatusCode::NOT_FOUND);
        let r = render(engine(), &d, html);
        assert_eq!(headers_of(&r), headers_of(&reference));
        assert_eq!(
            without_instance(&r, &d),
            without_instance(&reference, &unknown)
        );
    }

    // An admin opens the vault.
    let d = decide_as(&Method::GET, "/vault/1", "ada", &["admin"], &json!({}));
    assert_allowed_by(&d, &["admins-administer"]);
}

#[test]
fn public_bodies_name_no_policy_and_no_role() {
    let out_of_hours = at("2026-11-28T10:00:00Z");
    let analyst = token("ann", &["analyst"], out_of_hours, &json!({}));
    let cases = [
        decide_as(&Method::PUT, "/docs/3", "eve", &["editor"], &json!({})),
        decide_as(&Method::PUT, "/docs/1", "eve", &["viewer"], &json!({})),
        decide_as(&Method::GET, "/docs/2", "fay", &["viewer"], &json!({})),
        decide_as(
            &Method::GET,
            "/docs/1",
            "fay",
            &["admin"],
            &json!({ "department": "finance", "clearance": "x" }),
        ),
        decide_as(
            &Method::PUT,
            "/users/alice/profile",
            "bob",
            &["admin"],
            &json!({}),
        ),
        decide_as(&Method::GET, "/vault/1", "vic", &["viewer"], &json!({})),
        decide_on(
            engine(),
            &Method::GET,
            "/reports",
            Some(&analyst),
            office(),
            out_of_hours,
        ),
        decide_on(
            engine(),
            &Method::GET,
            "/office",
            Some(&analyst),
            IpAddr::from([192, 0, 2, 1]),
            out_of_hours,
        ),
    ];
    for d in &cases {
        assert!(!d.is_allowed());
        for html in [false, true] {
            let r = render(engine(), d, html);
            let mut text = body_text(&r);
            for (name, value) in r.headers() {
                text.push_str(&format!("\n{name}: {}", value.to_str().unwrap()));
            }
            for word in POLICY_IDS.iter().chain(ROLE_NAMES) {
                assert!(
                    !text.contains(word),
                    "`{word}` in the refusal of {:?}: {text}",
                    d.reason()
                );
            }
            if !html && d.status() == StatusCode::FORBIDDEN {
                assert_eq!(
                    problem(&r)["detail"],
                    "You do not have access to this resource."
                );
            }
        }
    }
}

#[test]
fn explanations_say_which_role_would_allow() {
    let headers = HeaderMap::new();
    let view = RequestView::new(&Method::GET, "/admin", &headers, office());
    let e = engine().explain(
        &view,
        monday_morning(),
        Some(identity("vic", &["viewer"], &[], &json!({}))),
    );
    assert_no_permit(&e.decision);
    assert!(
        e.hints
            .iter()
            .any(|h| h.contains("would be allowed with role admin; the caller has viewer")),
        "{:?}",
        e.hints
    );
    // Only admin would help.
    assert!(
        !e.hints.iter().any(|h| h.contains("role editor")
            || h.contains("role analyst")
            || h.contains("role viewer")),
        "{:?}",
        e.hints
    );
    // Every stage before authorization passed (other stages may sit between them), and
    // authorization is the one that refused.
    let stages: Vec<(Stage, bool)> = e.steps.iter().map(|s| (s.stage, s.passed)).collect();
    assert_eq!(
        stages.first(),
        Some(&(Stage::Normalize, true)),
        "{stages:?}"
    );
    assert_eq!(
        stages.last(),
        Some(&(Stage::Authorize, false)),
        "{stages:?}"
    );
    for stage in [Stage::Route, Stage::Authenticate] {
        assert!(stages.contains(&(stage, true)), "{stages:?}");
    }
    assert!(
        stages[..stages.len() - 1].iter().all(|(_, passed)| *passed),
        "{stages:?}"
    );

    // An assumed admin is allowed, and the trace names the policy.
    let e = engine().explain(
        &view,
        monday_morning(),
        Some(identity("ada", &["admin"], &[], &json!({}))),
    );
    assert_allowed_by(&e.decision, &["admins-administer"]);
    assert!(e.hints.is_empty(), "{:?}", e.hints);
    assert!(
        e.steps
            .iter()
            .any(|s| s.stage == Stage::Authorize && s.note.contains("admins-administer")),
        "{:?}",
        e.steps
    );

    // No role helps outside business hours.
    let view = RequestView::new(&Method::GET, "/reports", &headers, office());
    let e = engine().explain(
        &view,
        at("2026-11-28T10:00:00Z"),
        Some(identity("ann", &["viewer"], &[], &json!({}))),
    );
    assert_no_permit(&e.decision);
    assert!(e.hints.is_empty(), "{:?}", e.hints);
    // Inside them, analyst would.
    let e = engine().explain(
        &view,
        monday_morning(),
        Some(identity("ann", &["viewer"], &[], &json!({}))),
    );
    assert!(
        e.hints
            .iter()
            .any(|h| h.contains("would be allowed with role analyst; the caller has viewer")),
        "{:?}",
        e.hints
    );
}

// ---------------------------------------------------------------------------------------
// Fail closed

#[test]
fn an_erroring_forbid_denies_instead_of_being_skipped() {
    let now = monday_morning();
    // No `contractor` attribute: the forbid errors; the permit-all must not win.
    let t = token("carl", &["admin"], now, &json!({}));
    let d = decide_on(
        failclosed_engine(),
        &Method::GET,
        "/anything",
        Some(&t),
        office(),
        now,
    );
    let errors = assert_policy_error(&d);
    assert!(
        errors.iter().any(|e| e.contains("no-contractors")),
        "{errors:?}"
    );
    let r = render(failclosed_engine(), &d, false);
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(www_authenticate(&r).is_empty());
    let doc = problem(&r);
    assert_eq!(doc["code"], "forbidden");
    assert_eq!(
        doc["detail"],
        "The request could not be authorized, so it is denied."
    );
    let text = body_text(&r);
    assert!(!text.contains("no-contractors") && !text.contains("permit-all"));

    // A non-boolean attribute errors the same way.
    let t = token("carl", &[], now, &json!({ "contractor": "yes" }));
    let d = decide_on(
        failclosed_engine(),
        &Method::GET,
        "/anything",
        Some(&t),
        office(),
        now,
    );
    assert_policy_error(&d);

    // With the attribute, the policies decide normally.
    let t = token("carl", &[], now, &json!({ "contractor": false }));
    let d = decide_on(
        failclosed_engine(),
        &Method::GET,
        "/anything",
        Some(&t),
        office(),
        now,
    );
    assert_allowed_by(&d, &["permit-all"]);
    let t = token("carl", &[], now, &json!({ "contractor": true }));
    let d = decide_on(
        failclosed_engine(),
        &Method::GET,
        "/anything",
        Some(&t),
        office(),
        now,
    );
    assert_eq!(
        d.reason(),
        Some(&Reason::PolicyForbids {
            policies: vec!["no-contractors".to_owned()]
        })
    );

    // Explained with an assumed identity: the same refusal, and a hint to fix it.
    let headers = HeaderMap::new();
    let e = failclosed_engine().explain(
        &RequestView::new(&Method::GET, "/anything", &headers, office()),
        now,
        Some(identity("carl", &["admin"], &[], &json!({}))),
    );
    assert_policy_error(&e.decision);
    assert!(
        e.hints
            .iter()
            .any(|h| h.contains("fix the policy or the attributes it reads")),
        "{:?}",
        e.hints
    );
}

// ---------------------------------------------------------------------------------------
// Configuration errors

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in the text"))
}

#[test]
fn a_policy_syntax_error_names_the_policy_file_and_line() {
    let config = Path::new(CEDAR).join("syntax/warden.toml");
    let errors = Config::load(&config)
        .expect_err("a broken policy must not load")
        .0;
    let policy_file = Path::new(CEDAR).join("syntax/policies.cedar");
    let policy_text = std::fs::read_to_string(&policy_file).unwrap();
    let want_line = line_of(&policy_text, "principal.department == }");
    assert!(!errors.is_empty());
    for e in &errors {
        assert_eq!(e.file, policy_file, "{e}");
        assert_eq!(e.field, "authorization.policies[0]", "{e}");
        assert_eq!(e.line, want_line, "{e}");
    }
    let shown = errors
        .iter()
        .map(ConfigError::to_string)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        shown.contains(&format!("policies.cedar:{want_line}:")),
        "{shown}"
    );
}

#[test]
fn an_unknown_time_zone_names_the_field_and_line() {
    let text = std::fs::read_to_string(CONFIG)
        .unwrap()
        .replace("Europe/Paris", "Europe/Atlantis");
    let errors = Config::parse(&text, Path::new(CONFIG))
        .expect_err("an unknown time zone must not load")
        .0;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let e = &errors[0];
    assert_eq!(e.field, "authorization.timezone");
    assert_eq!(e.file, Path::new(CONFIG));
    assert_eq!(e.line, line_of(&text, "timezone = "));
    assert!(e.message.contains("unknown time zone"), "{e}");
    assert!(e.to_string().contains("authorization.timezone"));
}

#[test]
fn the_sample_configuration_loads() {
    let config = engine().config();
    assert!(config.routes().iter().any(|r| r.name.as_ref() == "vault"));
}

#[test]
fn an_ipv4_mapped_peer_is_the_ipv4_client() {
    // A dual-stack listener sees IPv4 clients as `::ffff:a.b.c.d`; Cedar must see the IPv4
    // address, or an address range in a policy silently stops matching them.
    let t = token("oli", &[], monday_morning(), &json!({}));
    let peer: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
    let d = decide_on(
        engine(),
        &Method::GET,
        "/office",
        Some(&t),
        peer,
        monday_morning(),
    );
    assert_allowed_by(&d, &["office-network"]);
    let peer: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
    let d = decide_on(
        engine(),
        &Method::GET,
        "/office",
        Some(&t),
        peer,
        monday_morning(),
    );
    assert_no_permit(&d);
}

#[test]
fn a_path_value_cannot_fill_another_placeholder_of_the_resource_id() {
    // The resource id is the template filled with the path's values, each value once: a
    // value that spells another placeholder stays literal.
    let config = fixture("cedar-placeholders").config();
    let engine = Engine::new(config);
    let now = monday_morning();
    let t = token("pat", &[], now, &json!({}));
    let d = decide_on(
        &engine,
        &Method::GET,
        "/orgs/acme/docs/5",
        Some(&t),
        office(),
        now,
    );
    assert_allowed_by(&d, &["acme-5"]);
    // `{id}` as the org is the literal org `{id}`, not the document id: resource
    // `{id}/5`, which no policy permits, and never `5/5`.
    let wrongly_allowed: Vec<(&str, Vec<String>)> = ["/orgs/{id}/docs/5", "/orgs/%7Bid%7D/docs/5"]
        .into_iter()
        .map(|path| {
            (
                path,
                decide_on(&engine, &Method::GET, path, Some(&t), office(), now),
            )
        })
        .filter(|(_, d)| d.is_allowed())
        .map(|(path, d)| (path, d.policies))
        .collect();
    assert!(
        wrongly_allowed.is_empty(),
        "authorized as resource `5/5` instead of `{{id}}/5`: {wrongly_allowed:?}"
    );
}
