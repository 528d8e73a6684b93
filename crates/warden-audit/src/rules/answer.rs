//! One answer, judged: 401 vs 403 vs 404 vs 429, the challenge, the RFC 6750 error and
//! scope, `Retry-After` and `RateLimit`, the problem document, and the WAF or CDN in front.
//!
//! `warden probe` prints every observation; `warden audit` keeps those that break a
//! [`Rule`].

use http::{HeaderMap, Method, StatusCode};
use serde::Serialize;
use warden_client::challenge::{self, BearerChallenge};
use warden_client::problem::Problem;

use super::{Answer, Rule, header};

/// How an observation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// As the standards say.
    Ok,
    /// Worth knowing.
    Note,
    /// Not as the standards say: a [`Rule`] is broken.
    Problem,
}

/// One thing seen in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// How it reads.
    pub level: Level,
    /// What was seen.
    pub text: String,
    /// The rule broken, for a [`Level::Problem`].
    pub rule: Option<Rule>,
}

/// What one answer tells.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// Observations, in order.
    pub observations: Vec<Observation>,
    /// What to do next.
    pub next: Vec<String>,
    /// The RFC 9457 document, when the body is one.
    pub problem: Option<Problem>,
}

impl Explanation {
    /// The rules the answer breaks, each once.
    #[must_use]
    pub fn broken(&self) -> Vec<(Rule, &str)> {
        let mut out: Vec<(Rule, &str)> = Vec::new();
        for o in &self.observations {
            if let Some(rule) = o.rule
                && !out.iter().any(|(r, _)| *r == rule)
            {
                out.push((rule, o.text.as_str()));
            }
        }
        out
    }
}

/// The request an answer is to.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The method.
    pub method: &'a Method,
    /// Whether the request carried credentials.
    pub sent_credentials: bool,
    /// The 404 of a path that surely does not exist, to compare a 404 with.
    pub baseline: Option<&'a Answer>,
}

/// Judge one answer.
#[must_use]
pub fn explain(asked: Asked<'_>, answer: &Answer) -> Explanation {
    let mut out = Out(Vec::new());
    let mut next = Vec::new();
    let headers = &answer.headers;
    let problem = Problem::from_parts(headers, &answer.body);
    let challenges = challenge::from_headers(headers);
    let bearer = BearerChallenge::find(&challenges);
    let bearer_error = bearer.as_ref().and_then(|b| b.error.clone());
    let status = answer.status;
    let method = asked.method;
    let sent_credentials = asked.sent_credentials;

    match status.as_u16() {
        200..=299 => {
            if body_has_error(&answer.body) {
                out.broke(Rule::SuccessWithError, "a success status with an error in the body: clients and caches will treat it as a success".into());
                next.push("answer errors with a 4xx or 5xx status and an application/problem+json body".into());
            } else {
                out.note(Level::Ok, format!("{status}: allowed"));
            }
        }
        300..=399 => {
            let location = header(headers, "location").unwrap_or_default();
            out.note(Level::Note, format!("{status}: redirected to {location}"));
            if !sent_credentials {
                out.note(Level::Note, "an API redirecting an anonymous request (to a login page?) instead of answering 401 with a challenge".into());
            }
        }
        401 => {
            if challenges.is_empty() {
                out.broke(Rule::MissingChallenge, "401 without WWW-Authenticate: RFC 9110 §15.5.2 requires a challenge".into());
                next.push("the server must say which scheme it accepts; ask its owners".into());
            } else {
                let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
                out.note(Level::Ok, format!("401: authentication required; accepted schemes: {}", schemes.join(", ")));
            }
            match bearer_error.as_deref() {
                None if sent_credentials => {
                    out.note(Level::Note, "credentials were sent but not recognized (wrong scheme, header or cookie?)".into());
                    next.push("send the credential in the scheme the challenge names".into());
                }
                None => next.push("send credentials: a token in `Authorization: Bearer …` or the scheme the challenge names".into()),
                Some("invalid_token") => {
                    let why = bearer.as_ref().and_then(|b| b.error_description.clone()).unwrap_or_default();
                    out.note(Level::Ok, format!("invalid_token: {why}"));
                    next.push("get a new token (refresh it) and check its exp, aud and iss; retrying the same token will fail again".into());
                }
                Some("insufficient_scope") => {
                    out.broke(Rule::UnauthorizedForAuthenticated, "401 with error=\"insufficient_scope\": the token is valid and lacks a scope, which is a 403 (RFC 6750 §3.1)".into());
                }
                Some(other) => out.note(Level::Note, format!("Bearer error `{other}`")),
            }
        }
        400 => {
            if bearer_error.as_deref() == Some("invalid_request") {
                out.note(Level::Ok, "400 invalid_request: the credentials are malformed (two tokens? a bad scheme?)".into());
                next.push("send exactly one well-formed credential".into());
            } else {
                out.note(Level::Note, "400: the request itself is malformed".into());
            }
        }
        403 => {
            if !sent_credentials {
                out.broke(Rule::ForbiddenWithoutCredentials, "403 to a request that sent no credentials: a 401 with a challenge is the answer (RFC 9110 §15.5.2)".into());
            }
            if let Some(sign) = rate_limit_sign(headers, &answer.body) {
                out.broke(Rule::ForbiddenForRateLimit, format!("403 that is a rate limit ({sign}): 429 with Retry-After tells clients to wait, 403 tells them to give up"));
                next.push("answer rate limits with 429 and Retry-After".into());
            }
            match bearer.as_ref().filter(|b| b.error.as_deref() == Some("insufficient_scope")) {
                Some(b) => {
                    out.note(Level::Ok, format!("insufficient_scope: the token needs scope {}", b.scope.join(" ")));
                    next.push(format!("request a token with scope {}; do not retry or refresh the same token", b.scope.join(" ")));
                }
                None => {
                    out.note(Level::Ok, "403: authenticated, and not allowed".into());
                    next.push("do not retry: ask for the role or permission; `warden explain` shows which".into());
                }
            }
        }
        404 => match asked.baseline {
            Some(b) if b.status == StatusCode::NOT_FOUND && same_shape(b, answer) => {
                out.note(Level::Ok, "404: the same answer as a path that does not exist (a concealed route looks like this too)".into());
            }
            Some(_) => out.note(
                Level::Note,
                "404 that differs from the 404 of a path that does not exist: the difference tells something is here".into(),
            ),
            None => out.note(Level::Note, "404".into()),
        },
        405 => match header(headers, "allow") {
            Some(allow) => {
                out.note(Level::Ok, format!("405: {method} is not accepted here; Allow: {allow}"));
                next.push(format!("use one of: {allow}"));
            }
            None => out.broke(Rule::MissingAllow, "405 without Allow: RFC 9110 §15.5.6 requires it".into()),
        },
        429 | 503 => {
            match header(headers, "retry-after") {
                Some(wait) => {
                    out.note(Level::Ok, format!("{status}: wait, Retry-After: {wait}"));
                    next.push(format!("wait {wait} before retrying; retry only idempotent requests"));
                }
                None if status == StatusCode::TOO_MANY_REQUESTS => {
                    out.broke(Rule::MissingRetryAfter, "429 without Retry-After: clients cannot know when to come back".into());
                    next.push("back off exponentially with jitter".into());
                }
                None => out.note(Level::Note, "503 without Retry-After".into()),
            }
            for name in ["ratelimit", "ratelimit-policy"] {
                if let Some(v) = header(headers, name) {
                    out.note(Level::Ok, format!("{name}: {v}"));
                }
            }
        }
        451 => match header(headers, "link").filter(|l| l.contains("blocked-by")) {
            Some(link) => out.note(Level::Ok, format!("451: unavailable for legal reasons; {link}")),
            None => out.broke(Rule::MissingBlockedBy, "451 without a Link rel=\"blocked-by\" (RFC 7725)".into()),
        },
        502 | 504 => out.note(Level::Note, format!("{status}: the service behind the gateway failed; not an access problem")),
        500 => out.broke(Rule::ServerError, "500: a server error; an access decision should never be a 500".into()),
        _ => out.note(Level::Note, format!("{status}")),
    }

    if status.as_u16() >= 400 {
        match &problem {
            Some(p) => {
                let code = p
                    .code
                    .as_deref()
                    .map(|c| format!(" (code {c})"))
                    .unwrap_or_default();
                out.note(
                    Level::Ok,
                    format!(
                        "problem: {}{code}: {}",
                        p.title.as_deref().unwrap_or("-"),
                        p.detail.as_deref().unwrap_or("-")
                    ),
                );
            }
            None => out.note(
                Level::Note,
                "the error body is not application/problem+json (RFC 9457)".into(),
            ),
        }
    }
    for (vendor, evidence) in signatures(headers) {
        out.note(Level::Note, format!("in front: {vendor} ({evidence})"));
    }
    Explanation {
        observations: out.0,
        next,
        problem,
    }
}

struct Out(Vec<Observation>);

impl Out {
    fn note(&mut self, level: Level, text: String) {
        self.0.push(Observation {
            level,
            text,
            rule: None,
        });
    }

    fn broke(&mut self, rule: Rule, text: String) {
        self.0.push(Observation {
            level: Level::Problem,
            text,
            rule: Some(rule),
        });
    }
}

/// Why a 403 looks like a rate limit: `Retry-After`, a rate-limit header saying nothing
/// is left, or a body that says so. (`RateLimit` fields alone are not a sign: a gateway
/// sends them on every answer of a limited route.)
fn rate_limit_sign(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if headers.contains_key("retry-after") {
        return Some("header retry-after".to_owned());
    }
    for name in [
        "ratelimit-remaining",
        "x-ratelimit-remaining",
        "x-rate-limit-remaining",
    ] {
        if header(headers, name).is_some_and(|v| v.trim() == "0") {
            return Some(format!("header {name}: 0"));
        }
    }
    if header(headers, "ratelimit").is_some_and(|v| {
        v.split([';', ','])
            .any(|param| param.trim().replace(' ', "") == "r=0")
    }) {
        return Some("header ratelimit: r=0".to_owned());
    }
    let text = String::from_utf8_lossy(body.get(..body.len().min(4096)).unwrap_or_default())
        .to_ascii_lowercase();
    ["rate limit", "rate-limit", "ratelimit", "too many requests"]
        .into_iter()
        .find(|w| text.contains(w))
        .map(|w| format!("the body says \"{w}\""))
}

/// A JSON object body with a top-level `error` or `errors` member that says something
/// (not `null`, `false`, `""`, `[]` or `{}`: `{"data": …, "errors": []}` is a success).
fn body_has_error(body: &[u8]) -> bool {
    let said = |v: &serde_json::Value| match v {
        serde_json::Value::Null | serde_json::Value::Bool(false) => false,
        serde_json::Value::String(s) => !s.is_empty(),
        serde_json::Value::Array(a) => !a.is_empty(),
        serde_json::Value::Object(o) => !o.is_empty(),
        _ => true,
    };
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.get("error").is_some_and(said) || o.get("errors").is_some_and(said))
        })
        .unwrap_or(false)
}

/// Same content type and, for JSON, the same members with the same values except ids.
fn same_shape(a: &Answer, b: &Answer) -> bool {
    let ct = |x: &Answer| header(&x.headers, "content-type");
    if ct(a) != ct(b) {
        return false;
    }
    let strip = |x: &Answer| {
        serde_json::from_slice::<serde_json::Value>(&x.body)
            .ok()
            .map(|mut v| {
                if let Some(o) = v.as_object_mut() {
                    for id in [
                        "instance",
                        "request_id",
                        "requestId",
                        "trace_id",
                        "timestamp",
                    ] {
                        o.remove(id);
                    }
                }
                v
            })
    };
    match (strip(a), strip(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a.body == b.body,
    }
}

/// WAFs and CDNs recognizable from response headers.
#[must_use]
pub fn signatures(headers: &HeaderMap) -> Vec<(&'static str, String)> {
    let server = header(headers, "server")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let has = |name: &str| headers.contains_key(name);
    let mut out = Vec::new();
    let mut add = |vendor: &'static str, evidence: &str| {
        if !out.iter().any(|(v, _)| *v == vendor) {
            out.push((vendor, evidence.to_owned()));
        }
    };
    if has("cf-ray") || server == "cloudflare" {
        add("Cloudflare", "cf-ray / server: cloudflare");
    }
    if has("x-amz-cf-id") {
        add("Amazon CloudFront", "x-amz-cf-id");
    }
    if server.starts_with("awselb") || has("x-amzn-requestid") || has("x-amzn-trace-id") {
        add(
            "AWS load balancer / API Gateway",
            "server: awselb or x-amzn-*",
        );
    }
    if server.contains("akamai") || has("akamai-grn") || has("x-akamai-transformed") {
        add("Akamai", "server: AkamaiGHost / akamai-grn");
    }
    if has("x-sucuri-id") {
        add("Sucuri", "x-sucuri-id");
    }
    if has("x-iinfo")
        || headers
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().is_ok_and(|c| c.starts_with("incap_ses")))
    {
        add("Imperva Incapsula", "x-iinfo / incap_ses cookie");
    }
    if has("x-azure-ref") {
        add("Azure Front Door", "x-azure-ref");
    }
    if has("x-fastly-request-id")
        || header(headers, "x-served-by").is_some_and(|v| v.contains("cache-"))
    {
        add("Fastly", "x-fastly-request-id / x-served-by");
    }
    if server == "envoy" || has("x-envoy-upstream-service-time") {
        add("Envoy", "server: envoy / x-envoy-*");
    }
    if header(headers, "via").is_some_and(|v| v.to_ascii_lowercase().contains("kong"))
        || has("x-kong-request-id")
    {
        add("Kong", "via: kong / x-kong-*");
    }
    if server.starts_with("nginx") {
        add("NGINX", "server: nginx");
    }
    if server.starts_with("haproxy") {
        add("HAProxy", "server: haproxy");
    }
    if has("x-warden-decision-id") {
        add("warden", "x-warden-decision-id");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> Answer {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.as_bytes().to_vec(),
        }
    }

    fn broken(status: u16, headers: &[(&str, &str)], body: &str, creds: bool) -> Vec<Rule> {
        let asked = Asked {
            method: &Method::GET,
            sent_credentials: creds,
            baseline: None,
        };
        explain(asked, &answer(status, headers, body))
            .broken()
            .into_iter()
            .map(|(r, _)| r)
            .collect()
    }

    #[test]
    fn each_single_answer_rule() {
        assert_eq!(broken(401, &[], "", false), [Rule::MissingChallenge]);
        assert!(broken(401, &[("www-authenticate", "Bearer")], "", false).is_empty());
        assert_eq!(
            broken(
                401,
                &[("www-authenticate", "Bearer error=\"insufficient_scope\"")],
                "",
                true
            ),
            [Rule::UnauthorizedForAuthenticated]
        );
        assert_eq!(
            broken(403, &[], "", false),
            [Rule::ForbiddenWithoutCredentials]
        );
        assert!(broken(403, &[], "", true).is_empty());
        assert_eq!(
            broken(403, &[], "{\"message\":\"Rate limit exceeded\"}", true),
            [Rule::ForbiddenForRateLimit]
        );
        assert_eq!(
            broken(200, &[], "{\"error\":\"nope\"}", true),
            [Rule::SuccessWithError]
        );
        assert!(broken(200, &[], "{\"ok\":true}", true).is_empty());
        assert!(broken(200, &[], "{\"data\":1,\"errors\":[],\"error\":null}", true).is_empty());
        assert_eq!(
            broken(403, &[("x-ratelimit-remaining", "0")], "", true),
            [Rule::ForbiddenForRateLimit]
        );
        assert!(
            broken(403, &[("ratelimit", "\"l\";r=9;t=60")], "", true).is_empty(),
            "RateLimit fields on a 403 of a limited route are not a sign"
        );
        assert_eq!(
            broken(403, &[("ratelimit", "\"l\";r=0;t=60")], "", true),
            [Rule::ForbiddenForRateLimit]
        );
        assert_eq!(broken(429, &[], "", true), [Rule::MissingRetryAfter]);
        assert!(broken(429, &[("retry-after", "3")], "", true).is_empty());
        assert_eq!(broken(405, &[], "", true), [Rule::MissingAllow]);
        assert_eq!(broken(451, &[], "", true), [Rule::MissingBlockedBy]);
        assert_eq!(broken(500, &[], "", true), [Rule::ServerError]);
    }
}
