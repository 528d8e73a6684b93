//! `warden test`: declarative access cases for CI pipelines.
//!
//! A cases file is YAML. Every case is one request, optionally an identity to assume, and
//! the expected answer:
//!
//! ```yaml
//! cases:
//!   - name: viewer cannot administer
//!     request:
//!       method: GET                    # optional, default GET
//!       path: /admin                   # required: path and optional query, as sent
//!       headers: { x-foo: bar }        # optional; real credentials go here
//!       ip: 10.1.2.3                   # optional, default 127.0.0.1
//!       at: "2026-11-23T10:00:00Z"     # optional RFC 3339 time with offset, default now
//!     identity:                        # optional: taken as verified, credentials ignored
//!       sub: vic
//!       roles: [viewer]
//!       scopes: []
//!       attributes: { department: finance, clearance: 2 }
//!     expect:
//!       status: 403                    # required: the status the client sees
//!       reason: forbidden              # optional: the reason code of the refusal
//! ```
//!
//! Without `identity`, the request's own credentials (or their absence) are verified as the
//! gateway would. `status` is what the client sees, so a refusal on a concealed route is
//! 404; `reason` is the code of the refusal itself (as logged), so such a case can still say
//! *why* it was refused (`unauthenticated`, `forbidden`, ...). Unknown fields are errors.
//!
//! Exit code: 0 when every case passes, 2 when any fails, 1 when the file or the
//! configuration cannot be read.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use http::HeaderMap;
use serde::Deserialize;
use serde_json::Value;
use warden_core::{Engine, Explanation, Reason};

use crate::explain::{self, Assumed, EXIT_DENIED, EXIT_ERROR, RequestSpec};

/// A cases file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CasesFile {
    /// The cases, run in order.
    pub cases: Vec<Case>,
}

/// One case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case checks, printed in the report.
    pub name: String,
    /// The request.
    pub request: CaseRequest,
    /// An identity to assume instead of verifying the request's credentials.
    #[serde(default)]
    pub identity: Option<CaseIdentity>,
    /// The expected answer.
    pub expect: Expect,
}

/// The request of a case.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// The method (default `GET`).
    #[serde(default)]
    pub method: Option<String>,
    /// The request target: path and optional query (not with `forwarded`).
    #[serde(default)]
    pub path: Option<String>,
    /// The headers are a proxy's forward-auth question: method and target come from
    /// `X-Forwarded-Method` and `X-Forwarded-Uri` (or `X-Original-URI`).
    #[serde(default)]
    pub forwarded: bool,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The client address (default 127.0.0.1).
    #[serde(default)]
    pub ip: Option<IpAddr>,
    /// The time, RFC 3339 with an offset (default now).
    #[serde(default)]
    pub at: Option<String>,
}

/// An assumed identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseIdentity {
    /// The subject.
    pub sub: String,
    /// Roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// OAuth scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Attributes for policies (strings, integers, booleans, lists, maps).
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

/// The expected answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// The status the client sees.
    pub status: u16,
    /// The reason code of a refusal ([`Reason::code`]).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A case ready to run.
#[derive(Debug)]
struct Prepared<'a> {
    case: &'a Case,
    request: RequestSpec,
    assumed: Option<Assumed>,
}

/// `warden test`: run every case and report; exit 0 all pass, 2 any fails, 1 on errors.
#[must_use]
pub fn command(config: &Path, file: &Path) -> ExitCode {
    let Some(engine) = explain::load_engine(config) else {
        return ExitCode::from(EXIT_ERROR);
    };
    let prepared = load(file).and_then(|cases| {
        let now = SystemTime::now();
        let prepared = prepare_all(&cases, now).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(run_all(&engine, &prepared))
    });
    match prepared {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(EXIT_DENIED),
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Read and parse a cases file; errors name the file (and, for YAML, the line).
///
/// # Errors
/// When the file cannot be read, is not valid YAML, does not fit the format or has no cases.
pub fn load(file: &Path) -> Result<CasesFile, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let cases: CasesFile = serde_yaml_ng::from_str(&text)
        // The YAML error names the line and column itself.
        .map_err(|e| format!("{}: {e}", file.display()))?;
    if cases.cases.is_empty() {
        return Err(format!("{}: no cases", file.display()));
    }
    Ok(cases)
}

fn prepare_all(cases: &CasesFile, now: SystemTime) -> Result<Vec<Prepared<'_>>, String> {
    cases
        .cases
        .iter()
        .map(|case| prepare(case, now).map_err(|e| format!("case `{}`: {e}", case.name)))
        .collect()
}

fn prepare(case: &Case, now: SystemTime) -> Result<Prepared<'_>, String> {
    let request = &case.request;
    let method = explain::parse_method(request.method.as_deref().unwrap_or("GET"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &request.headers {
        let (name, value) = explain::header(name, value)?;
        headers.append(name, value);
    }
    let (method, target, headers) = match (request.forwarded, &request.path) {
        (false, Some(path)) => (method, path.clone(), headers),
        (false, None) => return Err("a request needs a `path` (or `forwarded: true`)".to_owned()),
        (true, None) if request.method.is_none() => {
            crate::gateway::forward_auth::original_request(&headers)
                .map_err(|detail| format!("not a forward-auth question: {detail}"))?
        }
        (true, _) => {
            return Err(
                "a forwarded request takes its method and path from its headers".to_owned(),
            );
        }
    };
    let at = request.at.as_deref().map_or(Ok(now), explain::parse_time)?;
    let assumed = case.identity.as_ref().map(|i| Assumed {
        subject: i.sub.clone(),
        roles: i.roles.clone(),
        scopes: i.scopes.clone(),
        attributes: i.attributes.clone(),
    });
    Ok(Prepared {
        case,
        request: RequestSpec {
            method,
            target,
            headers,
            peer: request.ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            at,
            client_certificates: Vec::new(),
        },
        assumed,
    })
}

/// Run the cases, print one line each and the totals; returns the number of failures.
fn run_all(engine: &Engine, cases: &[Prepared<'_>]) -> usize {
    let mut failed = 0;
    for prepared in cases {
        let explanation = explain::explain(engine, &prepared.request, prepared.assumed.as_ref());
        match check(&prepared.case.expect, &explanation) {
            Ok(()) => println!("ok   {}", prepared.case.name),
            Err(mismatch) => {
                failed += 1;
                print!("{}", failure(&prepared.case.name, &mismatch, &explanation));
            }
        }
    }
    println!("{} passed, {failed} failed", cases.len() - failed);
    failed
}

/// Compare the decision with the expectation; the mismatch as `expected …, got …`.
fn check(expect: &Expect, explanation: &Explanation) -> Result<(), String> {
    let decision = &explanation.decision;
    let status = decision.status().as_u16();
    let reason = decision.reason().map(Reason::code);
    let reason_ok = expect.reason.is_none() || expect.reason.as_deref() == reason;
    if status == expect.status && reason_ok {
        return Ok(());
    }
    let expected = match &expect.reason {
        Some(r) => format!("{} {r}", expect.status),
        None => expect.status.to_string(),
    };
    let got = match reason {
        Some(r) => format!("{status} {r}"),
        None => status.to_string(),
    };
    Err(format!(
        "expected {expected}, got {got} (stage {})",
        decision.stage
    ))
}

fn failure(name: &str, mismatch: &str, explanation: &Explanation) -> String {
    let mut out = format!("FAIL {name}: {mismatch}\n");
    for step in &explanation.steps {
        let _ = writeln!(out, "       {}", explain::step_line(step));
    }
    for hint in &explanation.hints {
        let _ = writeln!(out, "       hint: {hint}");
    }
    out
}
