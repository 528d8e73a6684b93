//! Authorization with Cedar over real sockets: a gateway on loopback with the RBAC policies
//! of `testdata/cedar/prop`, real RS256 tokens, and a property test that every answer of
//! the gateway is the one a direct Cedar evaluation of the same request implies.

use crate::common;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Decision as CedarDecision, Entities, Entity, EntityId, EntityTypeName,
    EntityUid, PolicySet, Request, RestrictedExpression, Schema,
};
use common::{Upstream, client, fixture, gateway, headers_without_date};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use warden::gateway::Gateway;
use warden_testkit::Token;

const PROP_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/cedar/prop");

/// The gateway configuration, the `cedar-prop` fixture: the policies and schema of
/// `testdata/cedar/prop`, and one route per kind of check.
fn config() -> common::Fixture {
    fixture("cedar-prop")
}

// ---------------------------------------------------------------------------------------
// Routes as the test sees them

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// No authentication: always forwarded.
    Public,
    /// Authenticated and authorized by the policies.
    Protected,
    /// Also requires the `docs:write` scope before the policies are asked.
    Scoped,
    /// Every refusal is the canonical 404.
    Concealed,
}

/// The Cedar resource of a route.
#[derive(Debug, Clone, Copy)]
enum Resource {
    /// `Route::"<name>"`.
    Route(&'static str),
    /// `<type>::"<path parameter>"`.
    Param(&'static str),
}

#[derive(Debug, Clone, Copy)]
struct RouteCase {
    method: &'static str,
    /// With `{}` for the one path parameter, if any.
    path: &'static str,
    /// The parameter's name.
    param: Option<&'static str>,
    action: &'static str,
    resource: Resource,
    kind: Kind,
}

const ROUTES: &[RouteCase] = &[
    RouteCase {
        method: "GET",
        path: "/public",
        param: None,
        action: "public",
        resource: Resource::Route("public"),
        kind: Kind::Public,
    },
    RouteCase {
        method: "GET",
        path: "/me",
        param: None,
        action: "me",
        resource: Resource::Route("me"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "GET",
        path: "/admin",
        param: None,
        action: "admin",
        resource: Resource::Route("admin"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "GET",
        path: "/reports",
        param: None,
        action: "reports",
        resource: Resource::Route("reports"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "GET",
        path: "/docs/{}",
        param: Some("id"),
        action: "readDoc",
        resource: Resource::Param("Document"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "PUT",
        path: "/docs/{}",
        param: Some("id"),
        action: "editDoc",
        resource: Resource::Param("Document"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "PUT",
        path: "/users/{}/profile",
        param: Some("user"),
        action: "editProfile",
        resource: Resource::Param("User"),
        kind: Kind::Protected,
    },
    RouteCase {
        method: "GET",
        path: "/scoped",
        param: None,
        action: "scoped",
        resource: Resource::Route("scoped"),
        kind: Kind::Scoped,
    },
    RouteCase {
        method: "GET",
        path: "/vault/{}",
        param: Some("id"),
        action: "vault",
        resource: Resource::Route("vault"),
        kind: Kind::Concealed,
    },
];

const SUBJECTS: &[&str] = &["alice", "bob", "carol"];
const ROLES: &[&str] = &["admin", "viewer", "editor", "analyst", "none"];
/// Path parameters: document ids and user names (which may be the caller's own).
const PARAMS: &[&str] = &["alice", "bob", "carol", "1", "42"];

/// One generated request.
#[derive(Debug, Clone)]
struct Case {
    sub: &'static str,
    roles: Vec<&'static str>,
    route: RouteCase,
    param: &'static str,
    /// Send a token at all.
    token: bool,
    /// The token carries the `docs:write` scope.
    scope: bool,
}

impl Case {
    fn path(&self) -> String {
        self.route.path.replace("{}", self.param)
    }

    fn scopes(&self) -> Vec<&'static str> {
        if self.scope {
            vec!["docs:read", "docs:write"]
        } else {
            vec!["docs:read"]
        }
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        proptest::sample::select(SUBJECTS),
        proptest::sample::subsequence(ROLES, 0..=ROLES.len()),
        proptest::sample::select(ROUTES),
        proptest::sample::select(PARAMS),
        proptest::bool::weighted(0.85),
        any::<bool>(),
    )
        .prop_map(|(sub, roles, route, param, token, scope)| Case {
            sub,
            roles,
            route,
            param,
            token,
            scope,
        })
}

// ---------------------------------------------------------------------------------------
// Tokens

/// An RS256 token (kid `rsa-1`) with `sub`, `roles`, `scope` and `exp`.
fn token(sub: &str, roles: &[&str], scopes: &[&str]) -> String {
    Token::new()
        .sub(sub)
        .roles(roles)
        .scopes(scopes)
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256()
}

// ---------------------------------------------------------------------------------------
// The direct Cedar evaluation

struct Oracle {
    policies: PolicySet,
    schema: Schema,
}

fn oracle() -> &'static Oracle {
    static ORACLE: OnceLock<Oracle> = OnceLock::new();
    ORACLE.get_or_init(|| {
        let text = std::fs::read_to_string(format!("{PROP_DIR}/policies.cedar")).unwrap();
        let schema_text =
            std::fs::read_to_string(format!("{PROP_DIR}/schema.cedarschema")).unwrap();
        Oracle {
            policies: PolicySet::from_str(&text).unwrap(),
            schema: Schema::from_cedarschema_str(&schema_text).unwrap().0,
        }
    })
}

fn uid(kind: &str, id: &str) -> EntityUid {
    EntityUid::from_type_name_and_id(EntityTypeName::from_str(kind).unwrap(), EntityId::new(id))
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The context warden documents (`crates/warden-core/src/authz/context.rs`), for a
/// configuration without a time zone (UTC), from loopback.
fn context(case: &Case) -> Context {
    let secs = i64::try_from(warden_testkit::now()).unwrap();
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil(days);
    let (hour, minute, second) = (of_day / 3600, of_day % 3600 / 60, of_day % 60);
    // 1970-01-01 was a Thursday; Monday is 1.
    let weekday = (days + 3).rem_euclid(7) + 1;
    let day_name = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ][usize::try_from(weekday - 1).unwrap()];
    let date = format!("{y:04}-{m:02}-{d:02}");
    let local = RestrictedExpression::new_record([
        ("hour".to_owned(), RestrictedExpression::new_long(hour)),
        ("minute".to_owned(), RestrictedExpression::new_long(minute)),
        (
            "day_of_week".to_owned(),
            RestrictedExpression::new_string(day_name.to_owned()),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(weekday),
        ),
        (
            "date".to_owned(),
            RestrictedExpression::new_string(date.clone()),
        ),
    ])
    .unwrap();
    let params = RestrictedExpression::new_record(case.route.param.map(|name| {
        (
            name.to_owned(),
            RestrictedExpression::new_string(case.param.to_owned()),
        )
    }))
    .unwrap();
    Context::from_pairs([
        ("ip".to_owned(), RestrictedExpression::new_ip("127.0.0.1")),
        (
            "now".to_owned(),
            RestrictedExpression::new_datetime(format!(
                "{date}T{hour:02}:{minute:02}:{second:02}.000Z"
            )),
        ),
        ("local".to_owned(), local),
        (
            "scopes".to_owned(),
            RestrictedExpression::new_set(
                case.scopes()
                    .into_iter()
                    .map(|s| RestrictedExpression::new_string(s.to_owned())),
            ),
        ),
        (
            "method".to_owned(),
            RestrictedExpression::new_string(case.route.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(case.path()),
        ),
        ("params".to_owned(), params),
        (
            "auth_source".to_owned(),
            RestrictedExpression::new_string("idp".to_owned()),
        ),
    ])
    .unwrap()
}

/// Whether Cedar allows the case's principal, action and resource. An evaluation error
/// counts as a denial (warden fails closed).
fn cedar_allows(case: &Case) -> bool {
    let oracle = oracle();
    let principal = uid("User", case.sub);
    let resource = match case.route.resource {
        Resource::Route(name) => uid("Route", name),
        Resource::Param(kind) => uid(kind, case.param),
    };
    let request = Request::new(
        principal.clone(),
        uid("Action", case.route.action),
        resource,
        context(case),
        Some(&oracle.schema),
    )
    .unwrap_or_else(|e| panic!("the documented context does not fit the schema: {e}"));
    let parents: HashSet<EntityUid> = case.roles.iter().map(|r| uid("Role", r)).collect();
    let attrs = HashMap::from([(
        "source".to_owned(),
        RestrictedExpression::new_string("idp".to_owned()),
    )]);
    let entities =
        Entities::from_entities([Entity::new(principal, attrs, parents).unwrap()], None).unwrap();
    let response = Authorizer::new().is_authorized(&request, &oracle.policies, &entities);
    response.diagnostics().errors().next().is_none() && response.decision() == CedarDecision::Allow
}

/// The status the gateway must answer a case with.
fn expected_status(case: &Case) -> u16 {
    let concealed = case.route.kind == Kind::Concealed;
    if case.route.kind == Kind::Public {
        return 200;
    }
    if !case.token {
        // Authenticate before authorize: never a 403 without credentials.
        return if concealed { 404 } else { 401 };
    }
    if case.route.kind == Kind::Scoped && !case.scope {
        return 403;
    }
    match (cedar_allows(case), concealed) {
        (true, _) => 200,
        (false, true) => 404,
        (false, false) => 403,
    }
}

// ---------------------------------------------------------------------------------------
// Requests

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.proxy_addr)
}

struct Answer {
    status: u16,
    headers: http::HeaderMap,
    body: Value,
}

async fn send(
    http: &reqwest::Client,
    gw: &Gateway,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> Answer {
    let mut request = http.request(
        reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
        url(gw, path),
    );
    if let Some(t) = bearer {
        request = request.bearer_auth(t);
    }
    let resp = request.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        headers,
        body,
    }
}

fn www_authenticate(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------------
// End to end

#[tokio::test]
async fn admins_pass_viewers_are_forbidden_and_anonymous_callers_are_challenged() {
    let upstream = Upstream::start().await;
    let gw = gateway(config(), &upstream).await;
    let http = client();

    let admin = token("ada", &["admin"], &[]);
    let a = send(&http, &gw, "GET", "/admin", Some(&admin)).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["upstream"], true);
    let seen = upstream.last();
    assert_eq!(seen.target, "/admin");
    assert_eq!(seen.headers["x-warden-subject"], "ada");
    assert_eq!(seen.headers["x-warden-roles"], "admin");

    let before = upstream.seen().len();
    let viewer = token("vic", &["viewer"], &[]);
    let a = send(&http, &gw, "GET", "/admin", Some(&viewer)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.headers["content-type"], "application/problem+json");
    assert!(www_authenticate(&a.headers).is_empty());
    assert_eq!(a.body["code"], "forbidden");
    assert_eq!(a.body["status"], 403);
    assert_eq!(a.body["detail"], "No policy permits this request.");
    assert!(
        a.body["instance"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:")
    );
    let text = a.body.to_string();
    assert!(!text.contains("admins-administer") && !text.contains("viewer"));

    // Forbid over permit, at the gateway: an editor who is also a viewer may not edit.
    let both = token("eve", &["editor", "viewer"], &[]);
    let a = send(&http, &gw, "PUT", "/docs/1", Some(&both)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["code"], "forbidden");
    assert_eq!(a.body["detail"], "You do not have access to this resource.");
    let editor = token("eve", &["editor"], &[]);
    assert_eq!(
        send(&http, &gw, "PUT", "/docs/1", Some(&editor))
            .await
            .status,
        200
    );

    // No token: 401 with a plain challenge on every protected route, never a 403.
    for (method, path) in [
        ("GET", "/me"),
        ("GET", "/admin"),
        ("GET", "/reports"),
        ("GET", "/docs/1"),
        ("PUT", "/docs/1"),
        ("PUT", "/users/alice/profile"),
        ("GET", "/scoped"),
    ] {
        let a = send(&http, &gw, method, path, None).await;
        assert_eq!(a.status, 401, "{method} {path}");
        assert_eq!(
            www_authenticate(&a.headers),
            vec!["Bearer realm=\"warden\""],
            "{method} {path}"
        );
        assert_eq!(a.body["code"], "unauthenticated");
    }

    // A missing scope: 403 with insufficient_scope, whatever the roles.
    let a = send(&http, &gw, "GET", "/scoped", Some(&admin)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.body["code"], "insufficient_scope");
    assert_eq!(
        www_authenticate(&a.headers),
        vec![
            "Bearer realm=\"warden\", error=\"insufficient_scope\", \
             error_description=\"The access token lacks a required scope\", \
             scope=\"docs:write\""
        ]
    );

    // None of the refusals reached the upstream.
    assert_eq!(upstream.seen().len(), before + 1, "only the editor's PUT");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_refused_concealed_route_is_the_unknown_path_404() {
    let upstream = Upstream::start().await;
    let gw = gateway(config(), &upstream).await;
    let http = client();

    let unknown = http.get(url(&gw, "/nowhere")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);
    let unknown_headers = headers_without_date(unknown.headers());
    let mut unknown_body: Value = unknown.json().await.unwrap();
    unknown_body["instance"] = Value::Null;

    let viewer = token("vic", &["viewer"], &[]);
    for bearer in [Some(viewer.as_str()), None, Some("junk")] {
        let mut request = http.get(url(&gw, "/vault/1"));
        if let Some(t) = bearer {
            request = request.bearer_auth(t);
        }
        let resp = request.send().await.unwrap();
        assert_eq!(resp.status(), 404, "{bearer:?}");
        assert_eq!(
            headers_without_date(resp.headers()),
            unknown_headers,
            "{bearer:?}"
        );
        let mut body: Value = resp.json().await.unwrap();
        body["instance"] = Value::Null;
        assert_eq!(body, unknown_body, "{bearer:?}");
    }
    assert!(upstream.seen().is_empty());

    let admin = token("ada", &["admin"], &[]);
    let a = send(&http, &gw, "GET", "/vault/1", Some(&admin)).await;
    assert_eq!(a.status, 200);
    assert_eq!(upstream.last().target, "/vault/1");
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The property

#[test]
fn the_gateway_answers_what_cedar_decides() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let upstream = rt.block_on(Upstream::start());
    let gw = rt.block_on(gateway(config(), &upstream));
    let http = client();

    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&cases(), |case| {
        let want = expected_status(&case);
        let bearer = case
            .token
            .then(|| token(case.sub, &case.roles, &case.scopes()));
        let seen_before = upstream.seen().len();
        let got = rt.block_on(send(
            &http,
            &gw,
            case.route.method,
            &case.path(),
            bearer.as_deref(),
        ));
        prop_assert_eq!(
            got.status,
            want,
            "{} {} as {:?}",
            case.route.method,
            case.path(),
            case
        );
        let reached = upstream.seen().len() - seen_before;
        match got.status {
            200 => {
                prop_assert_eq!(reached, 1);
                prop_assert_eq!(&got.body["upstream"], &json!(true));
            }
            status => {
                prop_assert_eq!(reached, 0, "a refusal reached the upstream");
                prop_assert_eq!(
                    got.headers["content-type"].to_str().unwrap(),
                    "application/problem+json"
                );
                let code = match status {
                    401 => "unauthenticated",
                    404 => "not_found",
                    _ if case.route.kind == Kind::Scoped && !case.scope => "insufficient_scope",
                    _ => "forbidden",
                };
                prop_assert_eq!(&got.body["code"], &json!(code));
                let challenges = www_authenticate(&got.headers);
                match status {
                    401 => prop_assert_eq!(challenges, vec!["Bearer realm=\"warden\"".to_owned()]),
                    403 if code == "insufficient_scope" => prop_assert_eq!(challenges.len(), 1),
                    _ => prop_assert!(challenges.is_empty(), "{:?}", challenges),
                }
            }
        }
        Ok::<(), TestCaseError>(())
    });
    rt.block_on(gw.shutdown());
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_oracle_agrees_with_the_policies_on_known_cases() {
    // The direct evaluation itself, on cases whose answer is plain from the policy text.
    let case = |sub, roles: &[&'static str], route: usize, param| Case {
        sub,
        roles: roles.to_vec(),
        route: ROUTES[route],
        param,
        token: true,
        scope: true,
    };
    assert!(cedar_allows(&case("alice", &[], 1, "1"))); // /me
    assert!(cedar_allows(&case("alice", &["admin"], 2, "1"))); // /admin
    assert!(!cedar_allows(&case("alice", &["viewer"], 2, "1")));
    assert!(cedar_allows(&case("alice", &["editor"], 5, "1"))); // PUT /docs
    assert!(!cedar_allows(&case("alice", &["editor", "viewer"], 5, "1")));
    assert!(cedar_allows(&case("bob", &[], 6, "bob"))); // own profile
    assert!(!cedar_allows(&case("bob", &[], 6, "alice")));
    assert!(cedar_allows(&case("bob", &["admin"], 6, "alice")));
    assert!(!cedar_allows(&case("bob", &["none"], 8, "1"))); // vault
    assert!(cedar_allows(&case("bob", &["admin"], 8, "1")));
    assert_eq!(civil(0), (1970, 1, 1));
    assert_eq!(civil(20_415), (2025, 11, 23));
}
