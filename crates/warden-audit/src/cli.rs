//! `warden audit`: the arguments and the command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::Audit;
use crate::error::{AuditError, EXIT_CLEAN, EXIT_FINDINGS};
use crate::expect::Expectations;
use crate::identity::{self, Identity};
use crate::report::{self, AuditReport};
use crate::rules::Severity;
use crate::run::Limits;

/// Audit an HTTP API for broken access control and status-code misuse: every operation
/// of an OpenAPI document (or every request of a HAR file) is sent as every identity, and
/// the answers are judged one by one and together.
///
/// Exit 0 when nothing at or above --fail-on is found, 2 when something is, 1 for bad
/// input, 3 when the target is unreachable.
#[derive(Debug, clap::Args)]
#[command(group = clap::ArgGroup::new("input").required(true).args(["openapi", "har"]))]
pub struct AuditArgs {
    /// An OpenAPI 3 document (JSON or YAML).
    #[arg(long, value_name = "FILE")]
    pub openapi: Option<PathBuf>,
    /// A HAR file recorded in a browser's developer tools; each request is replayed per
    /// identity, without the credentials it was recorded with.
    #[arg(long, value_name = "FILE")]
    pub har: Option<PathBuf>,
    /// The base URL the document's paths are appended to (for a HAR file: its host is the
    /// one audited).
    #[arg(long, value_name = "URL")]
    pub base: Option<String>,
    /// An identity (repeatable): `anon`; `NAME=TOKEN` or `NAME=bearer:TOKEN` (a bearer
    /// token); `NAME=header:Header-Name:VALUE`; `NAME=cookie:NAME=VALUE`;
    /// `NAME=basic:USER:PASSWORD`; `NAME=none`.
    #[arg(long = "as", value_name = "IDENTITY", required = true)]
    pub identities: Vec<String>,
    /// The expectations (TOML): who may call which operation, whose objects are whose.
    #[arg(long = "expect", value_name = "FILE")]
    pub expectations: Option<PathBuf>,
    /// Requests per second; 0 lifts the limit.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// The most requests the audit may send; a larger plan is refused before sending.
    #[arg(long, default_value_t = 1000)]
    pub budget: usize,
    /// Also send POST, PUT, PATCH and DELETE (they may change data).
    #[arg(long)]
    pub allow_unsafe: bool,
    /// A host requests may go to (repeatable); by default only the base URL's host.
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// The time limit of one request.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Do not add the `forged` identity (an invalid bearer token) to operations that
    /// require authentication.
    #[arg(long)]
    pub no_forged: bool,
    /// The format on standard output.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub format: OutputFormat,
    /// Also write the JSON report here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also write a JUnit XML report here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Also write the HTML report here.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Exit 2 when a finding is at least this severe.
    #[arg(long, value_enum, default_value_t = Severity::Low)]
    pub fail_on: Severity,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The matrix and the findings, for a terminal.
    Text,
    /// The whole report as JSON.
    Json,
    /// JUnit XML.
    Junit,
    /// A self-contained HTML page.
    Html,
}

/// Run `warden audit`.
#[must_use]
pub fn command(args: &AuditArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("warden audit: cannot start the runtime: {e}");
            return ExitCode::from(crate::error::EXIT_ERROR);
        }
    };
    let result = prepare(args).and_then(|audit| runtime.block_on(audit.run()));
    match result.and_then(|report| write(args, &report).map(|()| report)) {
        Ok(report) => ExitCode::from(if report.at_least(args.fail_on) > 0 {
            EXIT_FINDINGS
        } else {
            EXIT_CLEAN
        }),
        Err(e) => {
            eprintln!("warden audit: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Read the files and check the arguments into an [`Audit`].
///
/// # Errors
/// Any [`AuditError`] of bad input.
pub fn prepare(args: &AuditArgs) -> Result<Audit, AuditError> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|source| AuditError::Read {
            path: path.to_owned(),
            source,
        })
    };
    let operations = match (&args.openapi, &args.har) {
        (Some(path), None) => crate::openapi::parse(&read(path)?, path)?,
        (None, Some(path)) => crate::har::parse(&read(path)?, path)?,
        _ => {
            return Err(AuditError::Usage(
                "give one of --openapi or --har".to_owned(),
            ));
        }
    };
    let base_text = match (&args.base, operations.iter().find_map(|o| o.url.clone())) {
        (Some(base), _) => base.clone(),
        (None, Some(first)) if args.har.is_some() && !args.hosts.is_empty() => first,
        (None, _) if args.har.is_some() => {
            return Err(AuditError::Usage(
                "a HAR audit needs --base or --host".to_owned(),
            ));
        }
        (None, _) => {
            return Err(AuditError::Usage(
                "--base URL is required with --openapi".to_owned(),
            ));
        }
    };
    let base = reqwest::Url::parse(&base_text)
        .map_err(|e| AuditError::Usage(format!("--base `{base_text}`: {e}")))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(AuditError::Usage(format!(
            "--base `{base_text}`: only http and https"
        )));
    }
    let host = base
        .host_str()
        .ok_or_else(|| AuditError::Usage(format!("--base `{base_text}` has no host")))?
        .to_owned();
    let hosts = if args.hosts.is_empty() {
        vec![host.clone()]
    } else {
        args.hosts.clone()
    };
    if args.har.is_none() && !hosts.iter().any(|h| crate::run::same_host(h, &host)) {
        return Err(AuditError::HostNotAllowed {
            url: base_text,
            host,
            allowed: hosts.join(", "),
        });
    }
    if !(args.rate >= 0.0 && args.rate.is_finite()) {
        return Err(AuditError::Usage("--rate must be 0 or more".to_owned()));
    }
    let mut identities: Vec<Identity> = Vec::new();
    for text in &args.identities {
        let identity = identity::parse(text)?;
        if identities.iter().any(|i| i.name == identity.name) {
            return Err(AuditError::Identity {
                text: text.clone(),
                why: format!("`{}` is given twice", identity.name),
            });
        }
        identities.push(identity);
    }
    if !args.no_forged && operations.iter().any(|o| o.requires_auth == Some(true)) {
        identities.push(Identity::forged());
    }
    let expectations = match &args.expectations {
        Some(path) => Expectations::parse(&read(path)?, path, &operations, &identities)?,
        None => Expectations::default(),
    };
    Ok(Audit {
        base,
        operations,
        identities,
        expectations,
        limits: Limits {
            hosts,
            rate: args.rate,
            budget: args.budget,
            allow_unsafe: args.allow_unsafe,
            timeout: args.timeout,
        },
    })
}

fn write(args: &AuditArgs, report: &AuditReport) -> Result<(), AuditError> {
    let json = || serde_json::to_string_pretty(report).unwrap_or_default();
    let file = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| AuditError::Write {
            path: path.to_owned(),
            source,
        })
    };
    if let Some(path) = &args.json {
        file(path, json())?;
    }
    if let Some(path) = &args.junit {
        file(path, report::junit(report, args.fail_on))?;
    }
    if let Some(path) = &args.html {
        file(path, report::html(report))?;
    }
    match args.format {
        OutputFormat::Text => print!("{}", report::text(report)),
        OutputFormat::Json => println!("{}", json()),
        OutputFormat::Junit => print!("{}", report::junit(report, args.fail_on)),
        OutputFormat::Html => print!("{}", report::html(report)),
    }
    Ok(())
}
