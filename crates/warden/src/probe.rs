//! `warden probe`: send a request and explain the answer the way an expert would — 401 vs
//! 403 vs 404 vs 429, the challenge, the RFC 6750 error and scope, `Retry-After` and
//! `RateLimit`, the problem document, CORS for an `Origin`, and the WAF or CDN in front.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde::Serialize;
use warden_client::challenge::{self, BearerChallenge};
use warden_client::problem::Problem;

use crate::explain::Format;

/// What to send.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The URL.
    pub url: String,
    /// The method.
    pub method: Method,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Identities to try, each as `Authorization: Bearer TOKEN`: (name, token).
    pub identities: Vec<(String, String)>,
    /// An `Origin` to check CORS for.
    pub origin: Option<String>,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    /// As the standards say.
    Ok,
    /// Worth knowing.
    Note,
    /// Not as the standards say.
    Problem,
}

/// One observation about an answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// How serious.
    pub level: Level,
    /// What was seen.
    pub text: String,
}

/// The explanation of one answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Who asked (`anonymous`, or the `--as` name).
    pub label: String,
    /// The status.
    pub status: u16,
    /// The RFC 9457 document, when the body is one.
    pub problem: Option<serde_json::Value>,
    /// Observations.
    pub findings: Vec<Finding>,
    /// What to do next.
    pub next: Vec<String>,
}

/// An answer as received.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body (at most 64 KiB is read).
    pub body: Vec<u8>,
}

const MAX_BODY: usize = 64 * 1024;

/// Run the probe and print the reports; exit 0 when every answer is a success, 2 when one
/// is a refusal or an error status, 1 when the request could not be sent.
#[must_use]
pub fn command(spec: &ProbeSpec, format: Format) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::from(crate::explain::EXIT_ERROR);
        }
    };
    match runtime.block_on(run(spec)) {
        Ok(reports) => {
            match format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&reports).unwrap_or_default()
                ),
                Format::Text => print!("{}", render_text(&reports)),
            }
            let refused = reports.iter().any(|r| r.status >= 400);
            std::process::ExitCode::from(if refused {
                crate::explain::EXIT_DENIED
            } else {
                crate::explain::EXIT_ALLOWED
            })
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::ExitCode::from(crate::explain::EXIT_ERROR)
        }
    }
}

/// Send the request (once per identity, or once anonymously) and explain each answer.
///
/// # Errors
/// When the URL is invalid or a request cannot be sent.
pub async fn run(spec: &ProbeSpec) -> Result<Vec<Report>, String> {
    crate::install_crypto_provider();
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let url =
        reqwest::Url::parse(&spec.url).map_err(|e| format!("`{}` is not a URL: {e}", spec.url))?;
    let baseline = not_found_baseline(&client, &url).await;
    let sent_credentials = spec
        .headers
        .iter()
        .any(|(n, _)| n == http::header::AUTHORIZATION);
    let runs: Vec<(String, Option<String>)> = if spec.identities.is_empty() {
        vec![(
            if sent_credentials {
                "as sent".to_owned()
            } else {
                "anonymous".to_owned()
            },
            None,
        )]
    } else {
        spec.identities
            .iter()
            .map(|(name, token)| (name.clone(), Some(token.clone())))
            .collect()
    };
    let mut reports = Vec::new();
    for (label, token) in runs {
        let mut request = client.request(spec.method.clone(), url.clone());
        for (name, value) in &spec.headers {
            request = request.header(name, value);
        }
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        if let Some(origin) = &spec.origin {
            request = request.header(http::header::ORIGIN, origin);
        }
        let answer = fetch(request).await?;
        let credentials = sent_credentials || token.is_some();
        let mut report = analyze(
            &label,
            &spec.method,
            credentials,
            &answer,
            baseline.as_ref(),
        );
        if let Some(origin) = &spec.origin {
            cors(&client, &url, &spec.method, origin, &answer, &mut report).await;
        }
        reports.push(report);
    }
    Ok(reports)
}

async fn fetch(request: reqwest::RequestBuilder) -> Result<Answer, String> {
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("the request failed: {e}"))?;
    let status = response.status();
    let headers = response.headers().clone();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The 404 of a path that surely does not exist, to compare a 404 with.
async fn not_found_baseline(client: &reqwest::Client, url: &reqwest::Url) -> Option<Answer> {
    let mut other = url.clone();
    let nonce = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    other.set_path(&format!("/warden-probe-{nonce:x}"));
    other.set_query(None);
    fetch(client.get(other)).await.ok()
}

/// Explain one answer.
#[must_use]
pub fn analyze(
    label: &str,
    method: &Method,
    sent_credentials: bool,
    answer: &Answer,
    baseline: Option<&Answer>,
) -> Report {
    let mut findings = Vec::new();
    let mut next = Vec::new();
    let mut note = |level: Level, text: String| findings.push(Finding { level, text });
    let headers = &answer.headers;
    let problem = Problem::from_parts(headers, &answer.body);
    let challenges = challenge::from_headers(headers);
    let bearer = BearerChallenge::find(&challenges);
    let status = answer.status;

    match status.as_u16() {
        200..=299 => {
            if body_has_error(&answer.body) {
                note(Level::Problem, "a success status with an error in the body: clients and caches will treat it as a success".into());
                next.push("answer errors with a 4xx or 5xx status and an application/problem+json body".into());
            } else {
                note(Level::Ok, format!("{status}: allowed"));
            }
        }
        300..=399 => {
            let location = header(headers, "location").unwrap_or_default();
            note(Level::Note, format!("{status}: redirected to {location}"));
            if !sent_credentials {
                note(Level::Note, "an API redirecting an anonymous request (to a login page?) instead of answering 401 with a challenge".into());
            }
        }
        401 => {
            if challenges.is_empty() {
                note(Level::Problem, "401 without WWW-Authenticate: RFC 9110 §15.5.2 requires a challenge".into());
                next.push("the server must say which scheme it accepts; ask its owners".into());
            } else {
                let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
                note(Level::Ok, format!("401: authentication required; accepted schemes: {}", schemes.join(", ")));
            }
            match bearer.as_ref().and_then(|b| b.error.as_deref()) {
                None if sent_credentials => {
                    note(Level::Note, "credentials were sent but not recognized (wrong scheme, header or cookie?)".into());
                    next.push("send the credential in the scheme the challenge names".into());
                }
                None => next.push("send credentials: a token in `Authorization: Bearer …` or the scheme the challenge names".into()),
                Some("invalid_token") => {
                    let why = bearer.as_ref().and_then(|b| b.error_description.clone()).unwrap_or_default();
                    note(Level::Ok, format!("invalid_token: {why}"));
                    next.push("get a new token (refresh it) and check its exp, aud and iss; retrying the same token will fail again".into());
                }
                Some(other) => note(Level::Note, format!("Bearer error `{other}`")),
            }
        }
        400 => {
            if bearer.as_ref().and_then(|b| b.error.as_deref()) == Some("invalid_request") {
                note(Level::Ok, "400 invalid_request: the credentials are malformed (two tokens? a bad scheme?)".into());
                next.push("send exactly one well-formed credential".into());
            } else {
                note(Level::Note, "400: the request itself is malformed".into());
            }
        }
        403 => {
            if !sent_credentials {
                note(Level::Problem, "403 to a request that sent no credentials: a 401 with a challenge is the answer (RFC 9110 §15.5.2)".into());
            }
            match bearer.as_ref().filter(|b| b.error.as_deref() == Some("insufficient_scope")) {
                Some(b) => {
                    note(Level::Ok, format!("insufficient_scope: the token needs scope {}", b.scope.join(" ")));
                    next.push(format!("request a token with scope {}; do not retry or refresh the same token", b.scope.join(" ")));
                }
                None => {
                    note(Level::Ok, "403: authenticated, and not allowed".into());
                    next.push("do not retry: ask for the role or permission; `warden explain` shows which".into());
                }
            }
        }
        404 => match baseline {
            Some(b) if b.status == StatusCode::NOT_FOUND && same_shape(b, answer) => {
                note(Level::Ok, "404: the same answer as a path that does not exist (a concealed route looks like this too)".into());
            }
            Some(_) => note(
                Level::Note,
                "404 that differs from the 404 of a path that does not exist: the difference tells something is here".into(),
            ),
            None => note(Level::Note, "404".into()),
        },
        405 => match header(headers, "allow") {
            Some(allow) => {
                note(Level::Ok, format!("405: {method} is not accepted here; Allow: {allow}"));
                next.push(format!("use one of: {allow}"));
            }
            None => note(Level::Problem, "405 without Allow: RFC 9110 §15.5.6 requires it".into()),
        },
        429 | 503 => {
            match header(headers, "retry-after") {
                Some(wait) => {
                    note(Level::Ok, format!("{status}: wait, Retry-After: {wait}"));
                    next.push(format!("wait {wait} before retrying; retry only idempotent requests"));
                }
                None if status == StatusCode::TOO_MANY_REQUESTS => {
                    note(Level::Problem, "429 without Retry-After: clients cannot know when to come back".into());
                    next.push("back off exponentially with jitter".into());
                }
                None => note(Level::Note, "503 without Retry-After".into()),
            }
            for name in ["ratelimit", "ratelimit-policy"] {
                if let Some(v) = header(headers, name) {
                    note(Level::Ok, format!("{name}: {v}"));
                }
            }
        }
        451 => match header(headers, "link").filter(|l| l.contains("blocked-by")) {
            Some(link) => note(Level::Ok, format!("451: unavailable for legal reasons; {link}")),
            None => note(Level::Problem, "451 without a Link rel=\"blocked-by\" (RFC 7725)".into()),
        },
        502 | 504 => note(Level::Note, format!("{status}: the service behind the gateway failed; not an access problem")),
        500 => note(Level::Problem, "500: a server error; an access decision should never be a 500".into()),
        _ => note(Level::Note, format!("{status}")),
    }

    if status.as_u16() >= 400 {
        match &problem {
            Some(p) => {
                let code = p
                    .code
                    .as_deref()
                    .map(|c| format!(" (code {c})"))
                    .unwrap_or_default();
                note(
                    Level::Ok,
                    format!(
                        "problem: {}{code}: {}",
                        p.title.as_deref().unwrap_or("-"),
                        p.detail.as_deref().unwrap_or("-")
                    ),
                );
            }
            None => note(
                Level::Note,
                "the error body is not application/problem+json (RFC 9457)".into(),
            ),
        }
    }
    for (vendor, evidence) in signatures(headers) {
        note(Level::Note, format!("in front: {vendor} ({evidence})"));
    }
    Report {
        label: label.to_owned(),
        status: status.as_u16(),
        problem: problem.map(|p| problem_json(&p)),
        findings,
        next,
    }
}

fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({
        "type": p.problem_type, "title": p.title, "status": p.status, "detail": p.detail,
        "instance": p.instance, "code": p.code,
    })
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A JSON object body with a top-level `error` or `errors` member.
fn body_has_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.as_object()
                .map(|o| o.contains_key("error") || o.contains_key("errors"))
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

/// CORS for an origin: the actual answer's headers, and a preflight.
async fn cors(
    client: &reqwest::Client,
    url: &reqwest::Url,
    method: &Method,
    origin: &str,
    answer: &Answer,
    report: &mut Report,
) {
    match header(&answer.headers, "access-control-allow-origin") {
        Some(allowed) if allowed == origin || allowed == "*" => {
            report.findings.push(Finding { level: Level::Ok, text: format!("CORS: {origin} may read the answer (Access-Control-Allow-Origin: {allowed})") });
        }
        Some(allowed) => report.findings.push(Finding { level: Level::Note, text: format!("CORS: the answer allows {allowed}, not {origin}") }),
        None => report.findings.push(Finding { level: Level::Note, text: format!("CORS: no Access-Control-Allow-Origin for {origin}: a browser page there cannot read the answer") }),
    }
    let preflight = client
        .request(Method::OPTIONS, url.clone())
        .header(http::header::ORIGIN, origin)
        .header("access-control-request-method", method.as_str());
    if let Ok(p) = fetch(preflight).await {
        let methods =
            header(&p.headers, "access-control-allow-methods").unwrap_or_else(|| "none".to_owned());
        report.findings.push(Finding {
            level: Level::Note,
            text: format!("CORS preflight: {} (allowed methods: {methods})", p.status),
        });
    }
}

fn render_text(reports: &[Report]) -> String {
    let mut out = String::new();
    for r in reports {
        out.push_str(&format!("── {} → {}\n", r.label, r.status));
        for f in &r.findings {
            let mark = match f.level {
                Level::Ok => "✓",
                Level::Note => "·",
                Level::Problem => "✗",
            };
            out.push_str(&format!("  {mark} {}\n", f.text));
        }
        if !r.next.is_empty() {
            out.push_str("  what to do next\n");
            for n in &r.next {
                out.push_str(&format!("    - {n}\n"));
            }
        }
    }
    out
}
