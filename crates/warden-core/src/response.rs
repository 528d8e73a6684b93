//! The one place where refusals become HTTP responses: status, challenges, problem
//! documents (RFC 9457) and HTML pages.
//!
//! A concealed refusal is rendered by the very code path that renders an unknown path, so
//! the two cannot drift apart.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::config::Config;
use crate::decision::{
    Allow, Decision, DecisionId, Deny, Reason, Scheme, Verbosity, Verdict, list_or_none,
};
use crate::hygiene::CorsGrant;
use crate::limit::Applied;

/// Where a problem's `type` URI and a challenge's realm come from.
#[derive(Debug, Clone, Copy)]
pub struct Branding<'a> {
    /// The realm of every challenge.
    pub realm: &'a str,
    /// The prefix of every problem `type`.
    pub problem_type_base: &'a str,
}

impl<'a> From<&'a Config> for Branding<'a> {
    fn from(config: &'a Config) -> Self {
        Self {
            realm: &config.gateway.realm,
            problem_type_base: &config.gateway.problem_type_base,
        }
    }
}

/// What a front end does with a decision.
#[derive(Debug)]
pub enum Rendered<'d> {
    /// Answer with this response (a refusal, or a granted preflight); nothing is forwarded.
    Respond(Response<Bytes>),
    /// Forward the request as allowed.
    Forward(&'d Allow),
}

/// The one call every front end makes with a decision: the response for a refusal or a
/// preflight, or the allow to forward.
#[must_use]
pub fn render<'d>(decision: &'d Decision, branding: Branding<'_>, html: bool) -> Rendered<'d> {
    match &decision.verdict {
        Verdict::Deny(deny) => Rendered::Respond(render_deny(decision.id, deny, branding, html)),
        Verdict::Preflight => Rendered::Respond(render_preflight(decision.cors.as_ref())),
        Verdict::Allow(allow) => Rendered::Forward(allow),
    }
}

/// The response for a refused decision; `None` for an allowed one.
#[must_use]
pub fn render_decision(
    decision: &Decision,
    branding: Branding<'_>,
    html: bool,
) -> Option<Response<Bytes>> {
    match render(decision, branding, html) {
        Rendered::Respond(response) => Some(response),
        Rendered::Forward(_) => None,
    }
}

/// The answer to a granted CORS preflight: 204 with the grant's headers.
#[must_use]
pub fn render_preflight(grant: Option<&CorsGrant>) -> Response<Bytes> {
    let mut builder = Response::builder().status(StatusCode::NO_CONTENT).header(
        header::VARY,
        "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
    );
    for (name, value) in grant.map(cors_headers).unwrap_or_default() {
        builder = builder.header(name, value);
    }
    builder
        .body(Bytes::new())
        .unwrap_or_else(|_| fallback(StatusCode::NO_CONTENT))
}

/// The CORS headers of a grant, for a preflight or for any answer to an actual request
/// (refusals included, so a page can read them).
#[must_use]
pub fn cors_headers(grant: &CorsGrant) -> Vec<(HeaderName, HeaderValue)> {
    let settings = &grant.settings;
    let mut out = vec![(header::ACCESS_CONTROL_ALLOW_ORIGIN, grant.origin.clone())];
    if settings.credentials {
        out.push((
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        ));
    }
    let list = |items: &[&str]| HeaderValue::from_str(&items.join(", ")).ok();
    match &grant.preflight {
        Some(preflight) => {
            let methods: Vec<&str> = preflight.methods.iter().map(http::Method::as_str).collect();
            if let Some(v) = list(&methods) {
                out.push((header::ACCESS_CONTROL_ALLOW_METHODS, v));
            }
            let headers: Vec<&str> = preflight.headers.iter().map(String::as_str).collect();
            if let (false, Some(v)) = (headers.is_empty(), list(&headers)) {
                out.push((header::ACCESS_CONTROL_ALLOW_HEADERS, v));
            }
            if let Some(age) = settings.max_age {
                out.push((header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age)));
            }
        }
        None => {
            let expose: Vec<&str> = settings.expose.iter().map(String::as_str).collect();
            if let (false, Some(v)) = (expose.is_empty(), list(&expose)) {
                out.push((header::ACCESS_CONTROL_EXPOSE_HEADERS, v));
            }
        }
    }
    out
}

/// The response for a refusal.
#[must_use]
pub fn render_deny(
    id: DecisionId,
    deny: &Deny,
    branding: Branding<'_>,
    html: bool,
) -> Response<Bytes> {
    if deny.concealed {
        return render_reason(
            id,
            &Reason::RouteNotFound,
            &[],
            Verbosity::Public,
            branding,
            html,
        );
    }
    render_reason(
        id,
        &deny.reason,
        &deny.challenges,
        deny.verbosity,
        branding,
        html,
    )
}

/// The canonical 404 for a path that does not exist (also used for concealed routes).
#[must_use]
pub fn not_found(id: DecisionId, branding: Branding<'_>, html: bool) -> Response<Bytes> {
    render_reason(
        id,
        &Reason::RouteNotFound,
        &[],
        Verbosity::Public,
        branding,
        html,
    )
}

/// The response for a reason, with the challenges of the schemes the route accepts.
#[must_use]
pub fn render_reason(
    id: DecisionId,
    reason: &Reason,
    challenges: &[Scheme],
    verbosity: Verbosity,
    branding: Branding<'_>,
    html: bool,
) -> Response<Bytes> {
    let status = reason.status();
    let detail = detail(reason, verbosity);
    let mut builder = problem_builder(status);
    for value in challenge_values(reason, challenges, branding.realm) {
        builder = builder.header(header::WWW_AUTHENTICATE, value);
    }
    // A malformed request may have left the connection in an unknown state (smuggling):
    // answer and close it.
    if matches!(
        reason,
        Reason::MalformedRequest { .. } | Reason::BodyTooLarge { .. }
    ) {
        builder = builder.header(header::CONNECTION, "close");
    }
    if let Reason::MethodNotAllowed { allow } = reason {
        let allow: Vec<&str> = allow.iter().map(http::Method::as_str).collect();
        if let Ok(v) = HeaderValue::from_str(&allow.join(", ")) {
            builder = builder.header(header::ALLOW, v);
        }
    }

    let retry_after = match reason {
        Reason::RateLimited {
            retry_after_secs, ..
        }
        | Reason::Banned { retry_after_secs } => Some(*retry_after_secs),
        Reason::StateUnavailable => Some(1),
        _ => None,
    };
    if let Reason::GeoDenied {
        blocked_by: Some(url),
        ..
    } = reason
        && let Ok(v) = HeaderValue::from_str(&format!("<{url}>; rel=\"blocked-by\""))
    {
        builder = builder.header(header::LINK, v);
    }
    if let Some(seconds) = retry_after {
        builder = builder.header(header::RETRY_AFTER, seconds);
    }
    if let Reason::LoginRequired {
        source, return_to, ..
    } = reason
    {
        // warden's own login start: relative, so it stays on the origin the browser asked.
        let location = format!(
            "/oauth2/start?source={}&rd={}",
            percent_encoding::utf8_percent_encode(source, QUERY_VALUE),
            percent_encoding::utf8_percent_encode(return_to, QUERY_VALUE)
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            builder = builder.header(header::LOCATION, v);
        }
    }

    let extra = match reason {
        Reason::InsufficientScope { required, .. } => Some(("required_scopes", json!(required))),
        _ => None,
    };
    let problem = Problem {
        status,
        code: reason.code(),
        detail: &detail,
    };
    problem_body(builder, id, &problem, extra, branding, html)
}

/// Everything but unreserved characters is escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A problem a front end reports itself, outside the engine's decisions (an upstream that
/// failed or timed out): rendered like every refusal, problem+json or HTML.
#[derive(Debug, Clone, Copy)]
pub struct Problem<'a> {
    /// The status.
    pub status: StatusCode,
    /// The stable code, the last segment of the problem `type`.
    pub code: &'a str,
    /// What the body says.
    pub detail: &'a str,
}

/// The response for a front end's own problem: the same headers and documents as a
/// refusal, without challenges.
#[must_use]
pub fn render_problem(
    id: DecisionId,
    problem: &Problem<'_>,
    branding: Branding<'_>,
    html: bool,
) -> Response<Bytes> {
    problem_body(
        problem_builder(problem.status),
        id,
        problem,
        None,
        branding,
        html,
    )
}

/// The headers of every problem: never cached, never sniffed, negotiated by `Accept`.
fn problem_builder(status: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(status)
        .header(header::CACHE_CONTROL, "no-store")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::VARY, "Accept")
}

/// The problem document (RFC 9457) or the HTML page, as the client prefers.
fn problem_body(
    mut builder: http::response::Builder,
    id: DecisionId,
    problem: &Problem<'_>,
    extra: Option<(&str, serde_json::Value)>,
    branding: Branding<'_>,
    html: bool,
) -> Response<Bytes> {
    let Problem {
        status,
        code,
        detail,
    } = *problem;
    let title = status.canonical_reason().unwrap_or("Error");
    let instance = format!("urn:uuid:{id}");
    let (content_type, body) = if html {
        (
            "text/html; charset=utf-8",
            html_page(status, title, detail, &instance),
        )
    } else {
        let mut doc = json!({
            "type": format!("{}{code}", branding.problem_type_base),
            "title": title,
            "status": status.as_u16(),
            "detail": detail,
            "instance": instance,
            "code": code,
        });
        if let (Some((name, value)), Some(map)) = (extra, doc.as_object_mut()) {
            map.insert(name.to_owned(), value);
        }
        ("application/problem+json", doc.to_string())
    };
    builder = builder.header(header::CONTENT_TYPE, content_type);
    builder
        .body(Bytes::from(body))
        .unwrap_or_else(|_| fallback(status))
}

/// The `detail` a refused decision's body says, concealment applied (a concealed refusal
/// says what an unknown path says); `None` for an allow or a preflight. For a front end that
/// reports the refusal a second way too (the message of Envoy's gRPC `ext_authz` status).
#[must_use]
pub fn refusal_detail(decision: &Decision) -> Option<String> {
    match &decision.verdict {
        Verdict::Deny(deny) if deny.concealed => {
            Some(detail(&Reason::RouteNotFound, Verbosity::Public))
        }
        Verdict::Deny(deny) => Some(detail(&deny.reason, deny.verbosity)),
        Verdict::Allow(_) | Verdict::Preflight => None,
    }
}

/// What the body says. `public` never names roles; rule ids and token contents never appear.
/// What a refusal for `reason` says to any client (the public verbosity): for a front end
/// that answers in another form too (gRPC's `grpc-message`).
#[must_use]
pub fn public_detail(reason: &Reason) -> String {
    detail(reason, Verbosity::Public)
}

fn detail(reason: &Reason, verbosity: Verbosity) -> String {
    match reason {
        Reason::MalformedRequest { detail } | Reason::MalformedCredentials { detail } => {
            format!("{detail}.")
        }
        Reason::RouteNotFound => "No resource exists at this path.".to_owned(),
        Reason::MethodNotAllowed { .. } => {
            "This resource does not accept this method; see the Allow header.".to_owned()
        }
        Reason::NoCredentials => "This resource requires authentication.".to_owned(),
        Reason::InvalidToken(problem) => format!("{}.", problem.description()),
        Reason::InvalidCredentials => "The credentials are not valid.".to_owned(),
        Reason::InvalidCertificate(problem) => format!("{}.", problem.description()),
        Reason::AddressDenied { .. } => "Requests from this address are not allowed.".to_owned(),
        Reason::GeoDenied {
            blocked_by: Some(_),
            ..
        } => "This resource is unavailable here for legal reasons; see the Link header.".to_owned(),
        Reason::GeoDenied {
            blocked_by: None, ..
        } => "Requests from this region are not allowed.".to_owned(),
        Reason::MissingRole { needed, held } => match verbosity {
            Verbosity::Public => "You do not have access to this resource.".to_owned(),
            Verbosity::Internal => format!(
                "This resource needs role {}; the caller has {}.",
                needed.join(" or "),
                list_or_none(held)
            ),
        },
        Reason::PolicyForbids { .. } | Reason::NoPolicyPermits | Reason::PolicyError { .. } => {
            match verbosity {
                Verbosity::Public => "You do not have access to this resource.".to_owned(),
                Verbosity::Internal => match reason {
                    Reason::PolicyForbids { .. } => "A policy forbids this request.".to_owned(),
                    Reason::NoPolicyPermits => "No policy permits this request.".to_owned(),
                    _ => "The request could not be authorized, so it is denied.".to_owned(),
                },
            }
        }
        Reason::InsufficientScope { missing, .. } => {
            format!(
                "The access token lacks the required scope: {}.",
                missing.join(" ")
            )
        }
        Reason::RateLimited {
            retry_after_secs, ..
        } => {
            format!("Too many requests; retry after {retry_after_secs} seconds.")
        }
        Reason::Banned { retry_after_secs } => {
            format!(
                "Too many refused requests from this client; retry after {retry_after_secs} seconds."
            )
        }
        Reason::StateUnavailable => {
            "The service is temporarily unable to check this request; retry shortly.".to_owned()
        }
        Reason::BodyTooLarge { limit } => {
            format!("The request body is larger than the {limit} bytes this resource accepts.")
        }
        Reason::WafBlocked(_) => {
            "The request was rejected because it looks like an attack.".to_owned()
        }
        Reason::CsrfRejected { .. } => {
            "This request must come from the site itself (cross-site request refused).".to_owned()
        }
        Reason::CorsRejected { .. } => {
            "This origin may not make this cross-origin request.".to_owned()
        }
        Reason::LoginRequired { .. } => "Sign in to continue.".to_owned(),
        Reason::Session(problem) => format!("{}; sign in again.", problem.description()),
        Reason::LoginFailed { detail } => format!("The sign-in failed: {detail}."),
    }
}

/// `WWW-Authenticate` values (RFC 9110 §11.6.1, RFC 6750 §3).
fn challenge_values(reason: &Reason, schemes: &[Scheme], realm: &str) -> Vec<HeaderValue> {
    let realm = quote(realm);
    let bearer_error: Option<(&str, String, Option<String>)> = match reason {
        Reason::InvalidToken(p) => Some(("invalid_token", p.description().to_owned(), None)),
        Reason::Session(p) => Some(("invalid_token", p.description().to_owned(), None)),
        Reason::MalformedCredentials { detail } => {
            Some(("invalid_request", (*detail).to_owned(), None))
        }
        Reason::InsufficientScope { required, .. } => Some((
            "insufficient_scope",
            "The access token lacks a required scope".to_owned(),
            Some(required.join(" ")),
        )),
        _ => None,
    };
    let wants_all = reason.status() == StatusCode::UNAUTHORIZED;
    let mut out = Vec::new();
    for scheme in schemes {
        let value = match scheme {
            Scheme::Bearer => {
                let mut v = format!("Bearer realm={realm}");
                if let Some((error, description, scope)) = &bearer_error {
                    let _ = write!(
                        v,
                        ", error=\"{error}\", error_description={}",
                        quote(description)
                    );
                    if let Some(scope) = scope {
                        let _ = write!(v, ", scope={}", quote(scope));
                    }
                } else if !wants_all {
                    continue;
                }
                v
            }
            _ if !wants_all => continue,
            Scheme::Basic => format!("Basic realm={realm}, charset=\"UTF-8\""),
            Scheme::ApiKey { header } => format!("ApiKey realm={realm}, header={}", quote(header)),
            Scheme::Cookie { name } => format!("Cookie realm={realm}, cookie-name={}", quote(name)),
            Scheme::ClientCertificate => match reason {
                Reason::InvalidCertificate(p) => format!(
                    "ClientCertificate realm={realm}, error=\"invalid_certificate\", error_description={}",
                    quote(p.description())
                ),
                _ => format!("ClientCertificate realm={realm}"),
            },
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            out.push(v);
        }
    }
    out
}

/// The headers every answer to a decided request carries, whoever renders it (a refusal,
/// the upstream's answer, an embedding app's): the `RateLimit` fields of the limits applied,
/// and for an allowed origin the CORS grant with `Vary: Origin`. A preflight's own answer
/// ([`render_preflight`]) carries its grant already.
#[must_use]
pub fn decision_headers(decision: &Decision) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = rate_limit_headers(&decision.limits);
    if let (Some(grant), false) = (
        &decision.cors,
        matches!(decision.verdict, crate::decision::Verdict::Preflight),
    ) {
        out.extend(cors_headers(grant));
        out.push((header::VARY, HeaderValue::from_static("Origin")));
    }
    out
}

/// Add [`decision_headers`] to an answer: `Vary` joins what the answer varies on already;
/// the others replace any the answer had.
pub fn add_decision_headers(
    headers: &mut http::HeaderMap,
    extra: impl IntoIterator<Item = (HeaderName, HeaderValue)>,
) {
    for (name, value) in extra {
        if name == header::VARY {
            headers.append(name, value);
        } else {
            headers.insert(name, value);
        }
    }
}

/// `RateLimit-Policy` and `RateLimit` (IETF httpapi draft) for the limits applied to a
/// request: every policy in `RateLimit-Policy`, the one closest to its limit in `RateLimit`.
#[must_use]
pub fn rate_limit_headers(applied: &[Applied]) -> Vec<(HeaderName, HeaderValue)> {
    let Some(tightest) = applied.iter().min_by_key(|a| a.outcome.remaining) else {
        return Vec::new();
    };
    // Written straight into each field's buffer, which becomes the value's bytes: these
    // fields go out with every limited answer.
    let mut numbers = itoa::Buffer::new();
    let mut policies = String::with_capacity(applied.len() * 32);
    for (i, a) in applied.iter().enumerate() {
        if i > 0 {
            policies.push_str(", ");
        }
        push_sf_string(&mut policies, &a.policy);
        policies.push_str(";q=");
        policies.push_str(numbers.format(a.quota.limit));
        policies.push_str(";w=");
        policies.push_str(numbers.format(a.quota.window_us.div_ceil(1_000_000).max(1)));
    }
    let mut current = String::with_capacity(tightest.policy.len() + 32);
    push_sf_string(&mut current, &tightest.policy);
    current.push_str(";r=");
    current.push_str(numbers.format(tightest.outcome.remaining));
    current.push_str(";t=");
    current.push_str(numbers.format(tightest.outcome.reset_us.div_ceil(1_000_000)));
    let mut out = Vec::with_capacity(2);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(policies)) {
        out.push((HeaderName::from_static("ratelimit-policy"), v));
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(current)) {
        out.push((HeaderName::from_static("ratelimit"), v));
    }
    out
}

/// A structured-field string (RFC 8941 §3.3.3).
fn push_sf_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// An RFC 9110 quoted-string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn html_page(status: StatusCode, title: &str, detail: &str, instance: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{code} {title}</title>\
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;color:#222}}\
code{{color:#555}}</style></head>\n<body><h1>{code} {title}</h1><p>{detail}</p>\
<p><small>Reference: <code>{instance}</code></small></p></body></html>\n",
        code = status.as_u16(),
        title = escape_html(title),
        detail = escape_html(detail),
        instance = escape_html(instance),
    )
}

fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A bare response for the impossible case of a builder error: the status survives.
fn fallback(status: StatusCode) -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::TokenProblem;

    const BRAND: Branding<'static> = Branding {
        realm: "warden",
        problem_type_base: "urn:warden:problem:",
    };

    fn www(resp: &Response<Bytes>) -> Vec<String> {
        resp.headers()
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn no_credentials_get_a_challenge_without_error() {
        let r = render_reason(
            DecisionId::new(),
            &Reason::NoCredentials,
            &[Scheme::Bearer, Scheme::Basic],
            Verbosity::Public,
            BRAND,
            false,
        );
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            www(&r),
            vec![
                "Bearer realm=\"warden\"",
                "Basic realm=\"warden\", charset=\"UTF-8\""
            ]
        );
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn an_expired_token_gets_invalid_token() {
        let r = render_reason(
            DecisionId::new(),
            &Reason::InvalidToken(TokenProblem::Expired),
            &[Scheme::Bearer],
            Verbosity::Public,
            BRAND,
            false,
        );
        assert_eq!(
            www(&r),
            vec![
                "Bearer realm=\"warden\", error=\"invalid_token\", error_description=\"The access token expired\""
            ]
        );
        let body: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(body["code"], "invalid_token");
        assert_eq!(body["status"], 401);
        assert_eq!(body["type"], "urn:warden:problem:invalid_token");
    }

    #[test]
    fn public_verbosity_hides_roles_and_internal_shows_them() {
        let reason = Reason::MissingRole {
            needed: vec!["admin".into()],
            held: vec!["viewer".into()],
        };
        let public = render_reason(
            DecisionId::new(),
            &reason,
            &[Scheme::Bearer],
            Verbosity::Public,
            BRAND,
            false,
        );
        assert!(!String::from_utf8_lossy(public.body()).contains("admin"));
        assert!(www(&public).is_empty(), "a plain 403 carries no challenge");
        let internal = render_reason(
            DecisionId::new(),
            &reason,
            &[Scheme::Bearer],
            Verbosity::Internal,
            BRAND,
            false,
        );
        assert!(
            String::from_utf8_lossy(internal.body())
                .contains("needs role admin; the caller has viewer")
        );
    }

    #[test]
    fn insufficient_scope_names_the_scope() {
        let reason = Reason::InsufficientScope {
            required: vec!["docs:read".into(), "docs:write".into()],
            missing: vec!["docs:write".into()],
        };
        let r = render_reason(
            DecisionId::new(),
            &reason,
            &[Scheme::Bearer],
            Verbosity::Public,
            BRAND,
            false,
        );
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(www(&r)[0].contains("error=\"insufficient_scope\""));
        assert!(www(&r)[0].ends_with("scope=\"docs:read docs:write\""));
    }

    #[test]
    fn html_is_escaped() {
        let r = render_reason(
            DecisionId::new(),
            &Reason::MalformedRequest { detail: "<script>" },
            &[],
            Verbosity::Public,
            BRAND,
            true,
        );
        let body = String::from_utf8_lossy(r.body()).into_owned();
        assert!(body.contains("&lt;script&gt;"));
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
    }

    #[test]
    fn quoting_escapes_quotes_and_drops_controls() {
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\cd\"");
    }
}
