//! `warden explain`: run one request through the engine and show every stage, the
//! decision, the response that would be sent and what would change the answer.
//!
//! Also the request and identity building blocks shared with `warden test`
//! ([`crate::cases`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response};
use serde_json::{Value, json};
use warden_core::decision::Verdict;
use warden_core::identity::CredentialKind;
use warden_core::response::{Branding, render_decision};
use warden_core::{Config, Engine, Explanation, Identity, Reason, RequestView};

/// The exit code of an allowed request.
pub const EXIT_ALLOWED: u8 = 0;
/// The exit code of an error (unreadable configuration, bad argument).
pub const EXIT_ERROR: u8 = 1;
/// The exit code of a denied request (and of failed cases in `warden test`).
pub const EXIT_DENIED: u8 = 2;

/// The source name of an assumed identity on a route that names none.
const ASSUMED_SOURCE: &str = "assumed";

/// How `warden explain` prints its answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    #[default]
    Text,
    /// One JSON object.
    Json,
}

/// The request to explain.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// The method.
    pub method: Method,
    /// The request target (path and optional query), as a client would send it.
    pub target: String,
    /// The request headers (credentials among them).
    pub headers: HeaderMap,
    /// The client address.
    pub peer: IpAddr,
    /// The time of the decision.
    pub at: SystemTime,
    /// The client certificate chain presented in the TLS handshake, leaf first (empty for
    /// none).
    pub client_certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl RequestSpec {
    fn view(&self) -> RequestView<'_> {
        RequestView::new(&self.method, &self.target, &self.headers, self.peer)
            .with_client_certificates(&self.client_certificates)
    }
}

/// The certificates of a PEM file, leaf first: the chain `--client-cert` presents.
///
/// # Errors
/// When the file cannot be read or holds no certificate.
pub fn read_client_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject as _;
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("`{}` is not PEM: {e}", path.display()))?;
    if chain.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    Ok(chain)
}

/// An identity taken as verified instead of the request's credentials.
#[derive(Debug, Clone, Default)]
pub struct Assumed {
    /// The subject.
    pub subject: String,
    /// Roles.
    pub roles: Vec<String>,
    /// OAuth scopes.
    pub scopes: Vec<String>,
    /// Attributes for policies.
    pub attributes: BTreeMap<String, Value>,
}

impl Assumed {
    fn identity(&self, source: Arc<str>) -> Identity {
        Identity {
            subject: self.subject.clone(),
            source,
            kind: CredentialKind::Bearer,
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            token_id: None,
            expires_at: None,
            issued_at: None,
            attributes: self.attributes.clone(),
        }
    }
}

/// Parse `-X`: a method, kept exactly as given (methods are case-sensitive).
///
/// # Errors
/// When the text is not a valid method token.
pub fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.as_bytes()).map_err(|_| format!("`{text}` is not an HTTP method"))
}

/// Parse `-H 'Name: value'`.
///
/// # Errors
/// When there is no colon, or the name or value is not valid in a header.
pub fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("`{text}` is not `Name: value`"))?;
    header(name.trim(), value.trim())
}

/// A header from a name and a value.
///
/// # Errors
/// When the name or value is not valid in a header.
pub fn header(name: &str, value: &str) -> Result<(HeaderName, HeaderValue), String> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid header name"))?;
    let value = HeaderValue::from_str(value)
        .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
    Ok((name, value))
}

/// Parse `--at`: an RFC 3339 time with an offset, such as `2026-11-23T10:00:00Z`.
///
/// # Errors
/// When the text is not such a time.
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    text.parse::<jiff::Timestamp>()
        .map(SystemTime::from)
        .map_err(|e| {
            format!("`{text}` is not an RFC 3339 time with an offset, such as 2026-11-23T10:00:00Z ({e})")
        })
}

/// Parse `--attr key=value`: an integer becomes a number, `true`/`false` a boolean,
/// anything else a string.
///
/// # Errors
/// When there is no `=` or the key is empty.
pub fn parse_attr(text: &str) -> Result<(String, Value), String> {
    let (key, value) = text
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{text}` is not `key=value`"))?;
    Ok((key.to_owned(), attr_value(value)))
}

fn attr_value(text: &str) -> Value {
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    match text {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => Value::String(text.to_owned()),
    }
}

/// Load the configuration and build the engine; on errors, print them (they name
/// file:line:field) and return `None`.
#[must_use]
pub fn load_engine(path: &Path) -> Option<Engine> {
    match Config::load(path) {
        Ok(config) => Some(Engine::new(config)),
        Err(errors) => {
            eprintln!("{errors}");
            None
        }
    }
}

/// Run the request through the engine, with an assumed identity or its own credentials.
#[must_use]
pub fn explain(engine: &Engine, request: &RequestSpec, assumed: Option<&Assumed>) -> Explanation {
    let view = request.view();
    let identity = assumed.map(|a| a.identity(assumed_source(engine, request)));
    engine.explain(&view, request.at, identity)
}

/// The first identity source of the route the request matches, or `assumed`.
fn assumed_source(engine: &Engine, request: &RequestSpec) -> Arc<str> {
    let decision = engine.decide(&request.view(), request.at);
    let accepts = |methods: &[Method]| {
        methods.contains(&request.method)
            || (request.method == Method::HEAD && methods.contains(&Method::GET))
    };
    engine
        .config()
        .routes()
        .iter()
        .filter(|r| decision.route.as_ref() == Some(&r.name) && accepts(&r.methods))
        .find_map(|r| r.source_names().next().map(Arc::from))
        .unwrap_or_else(|| Arc::from(ASSUMED_SOURCE))
}

/// `warden explain`: print the explanation; exit 0 allowed, 2 denied, 1 on errors.
#[must_use]
pub fn command(
    config: &Path,
    request: &RequestSpec,
    assumed: Option<&Assumed>,
    format: Format,
) -> ExitCode {
    let Some(engine) = load_engine(config) else {
        return ExitCode::from(EXIT_ERROR);
    };
    let explanation = explain(&engine, request, assumed);
    match format {
        Format::Text => print!("{}", render_text(&engine, request, &explanation)),
        Format::Json => println!("{:#}", render_json(&engine, request, &explanation)),
    }
    ExitCode::from(if explanation.decision.is_allowed() {
        EXIT_ALLOWED
    } else {
        EXIT_DENIED
    })
}

/// A stage as one line: a mark, the stage and its note.
#[must_use]
pub fn step_line(step: &warden_core::Step) -> String {
    let mark = if step.passed { "✓" } else { "✗" };
    format!("{mark} {:<12} {}", step.stage.as_str(), step.note)
}

/// The explanation for people.
#[must_use]
pub fn render_text(engine: &Engine, request: &RequestSpec, explanation: &Explanation) -> String {
    let decision = &explanation.decision;
    let mut out = format!(
        "{} {} from {} at {}\n\nstages\n",
        request.method,
        request.target,
        request.peer,
        format_time(request.at)
    );
    for step in &explanation.steps {
        let _ = writeln!(out, "  {}", step_line(step));
    }
    out.push('\n');
    let _ = writeln!(out, "decided by  {}", decision.stage);
    let _ = writeln!(out, "outcome     {}", outcome(explanation));
    let _ = writeln!(out, "status      {}", decision.status().as_u16());
    if let Some(route) = &decision.route {
        let _ = writeln!(out, "route       {route}");
    }
    if let Some(identity) = decision.identity() {
        let _ = writeln!(out, "identity    {}", identity_line(identity));
    }
    let _ = writeln!(out, "policies    {}", list_or_none(&decision.policies));
    if let Some(reason) = decision.reason() {
        reason_text(&mut out, reason);
    }
    shadow_text(&mut out, explanation);
    out.push_str("\nresponse\n");
    response_text(&mut out, engine, explanation);
    hints_text(&mut out, &explanation.hints);
    out
}

fn reason_text(out: &mut String, reason: &Reason) {
    let _ = writeln!(out, "reason      {}", reason.code());
    let _ = writeln!(out, "detail      {}", reason.log_detail());
}

fn shadow_text(out: &mut String, explanation: &Explanation) {
    if let Some(shadow) = &explanation.decision.shadow {
        let _ = writeln!(
            out,
            "shadow      the shadow policies would {} ({})",
            if shadow.shadow_allowed {
                "allow"
            } else {
                "deny"
            },
            list_or_none(&shadow.shadow_policies)
        );
    }
}

fn response_text(out: &mut String, engine: &Engine, explanation: &Explanation) {
    let decision = &explanation.decision;
    match &decision.verdict {
        Verdict::Allow(allow) => {
            let _ = writeln!(
                out,
                "  200 → forwarded to upstream {} as {}",
                allow.upstream, allow.path_and_query
            );
            for (name, value) in &allow.headers.add {
                let _ = writeln!(
                    out,
                    "  + {name}: {}",
                    String::from_utf8_lossy(value.as_bytes())
                );
            }
        }
        _ => {
            if let Some(response) = render(engine, explanation) {
                let _ = writeln!(out, "  HTTP/1.1 {}", response.status());
                for (name, value) in response.headers() {
                    let _ = writeln!(
                        out,
                        "  {name}: {}",
                        String::from_utf8_lossy(value.as_bytes())
                    );
                }
                let _ = writeln!(out, "\n  {}", String::from_utf8_lossy(response.body()));
            }
        }
    }
}

fn hints_text(out: &mut String, hints: &[String]) {
    if hints.is_empty() {
        return;
    }
    out.push_str("\nwhat would change the answer\n");
    for hint in hints {
        let _ = writeln!(out, "  - {hint}");
    }
}

/// The explanation as one JSON object.
#[must_use]
pub fn render_json(engine: &Engine, request: &RequestSpec, explanation: &Explanation) -> Value {
    let decision = &explanation.decision;
    let reason = decision.reason();
    json!({
        "request": {
            "method": request.method.as_str(),
            "target": request.target,
            "ip": request.peer.to_string(),
            "at": format_time(request.at),
        },
        "stages": explanation.steps.iter().map(|s| json!({
            "stage": s.stage.as_str(),
            "passed": s.passed,
            "note": s.note,
        })).collect::<Vec<_>>(),
        "decided_by": decision.stage.as_str(),
        "outcome": outcome(explanation),
        "status": decision.status().as_u16(),
        "route": decision.route.as_deref(),
        "identity": decision.identity().map(identity_json),
        "reason": reason.map(Reason::code),
        "detail": reason.map(Reason::log_detail),
        "policies": decision.policies,
        "shadow": decision.shadow.as_ref().map(|s| json!({
            "shadow_allowed": s.shadow_allowed,
            "shadow_policies": s.shadow_policies,
        })),
        "response": response_json(engine, explanation),
        "hints": explanation.hints,
    })
}

fn response_json(engine: &Engine, explanation: &Explanation) -> Value {
    match &explanation.decision.verdict {
        Verdict::Allow(allow) => json!({
            "status": 200,
            "upstream": allow.upstream.as_ref(),
            "path": allow.path_and_query,
            "headers": headers_json(allow.headers.add.iter().map(|(n, v)| (n, v))),
            "body": Value::Null,
        }),
        _ => render(engine, explanation).map_or(Value::Null, |response| {
            json!({
                "status": response.status().as_u16(),
                "headers": headers_json(response.headers().iter()),
                "body": String::from_utf8_lossy(response.body()),
            })
        }),
    }
}

fn headers_json<'a>(headers: impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)>) -> Value {
    headers
        .map(|(name, value)| {
            json!({
                "name": name.as_str(),
                "value": String::from_utf8_lossy(value.as_bytes()),
            })
        })
        .collect()
}

fn identity_json(identity: &Identity) -> Value {
    json!({
        "sub": identity.subject,
        "source": identity.source.as_ref(),
        "roles": identity.roles,
        "scopes": identity.scopes,
        "attributes": identity.attributes,
    })
}

fn identity_line(identity: &Identity) -> String {
    let attributes: Vec<String> = identity
        .attributes
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    format!(
        "{} via {}; roles {}; scopes {}; attributes {}",
        identity.subject,
        identity.source,
        list_or_none(&identity.roles),
        list_or_none(&identity.scopes),
        list_or_none(&attributes)
    )
}

/// The response a refusal would get (a JSON client, not a browser).
fn render(engine: &Engine, explanation: &Explanation) -> Option<Response<bytes::Bytes>> {
    render_decision(
        &explanation.decision,
        Branding::from(engine.config()),
        false,
    )
}

fn outcome(explanation: &Explanation) -> &'static str {
    if explanation.decision.is_allowed() {
        "allow"
    } else {
        "deny"
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

/// RFC 3339 in UTC, to the second.
#[must_use]
pub fn format_time(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
