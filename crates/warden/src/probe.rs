//! `warden probe`: send a request and explain the answer the way an expert would — 401 vs
//! 403 vs 404 vs 429, the challenge, the RFC 6750 error and scope, `Retry-After` and
//! `RateLimit`, the problem document, CORS for an `Origin`, and the WAF or CDN in front.

use std::time::{Duration, SystemTime};

use http::{HeaderName, HeaderValue, Method};
use serde::Serialize;
use warden_audit::rules::answer::{self, Asked};
use warden_client::problem::Problem;

pub use warden_audit::rules::Answer;
pub use warden_audit::rules::answer::{Level, signatures};

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
    warden_audit::run::fetch(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))
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

/// Explain one answer, by the rules `warden audit` applies too.
#[must_use]
pub fn analyze(
    label: &str,
    method: &Method,
    sent_credentials: bool,
    answer: &Answer,
    baseline: Option<&Answer>,
) -> Report {
    let asked = Asked {
        method,
        sent_credentials,
        baseline,
    };
    let explanation = answer::explain(asked, answer);
    Report {
        label: label.to_owned(),
        status: answer.status.as_u16(),
        problem: explanation.problem.as_ref().map(problem_json),
        findings: explanation
            .observations
            .into_iter()
            .map(|o| Finding {
                level: o.level,
                text: o.text,
            })
            .collect(),
        next: explanation.next,
    }
}

fn problem_json(p: &Problem) -> serde_json::Value {
    serde_json::json!({
        "type": p.problem_type, "title": p.title, "status": p.status, "detail": p.detail,
        "instance": p.instance, "code": p.code,
    })
}

fn header(answer: &Answer, name: &str) -> Option<String> {
    answer.header(name)
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
    match header(answer, "access-control-allow-origin") {
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
            header(&p, "access-control-allow-methods").unwrap_or_else(|| "none".to_owned());
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
