//! The audit's result and its four renderings: a terminal table, JSON, JUnit XML and a
//! self-contained HTML page.

mod html;
mod junit;
mod text;

use serde::Serialize;

pub use self::html::html;
pub use self::junit::junit;
pub use self::text::text;
use crate::rules::Severity;
use crate::rules::matrix::Finding;
use crate::run::Skipped;

/// Everything an audit found.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// The base URL.
    pub base: String,
    /// The identities, in column order (`forged` is the audit's own invalid credential).
    pub identities: Vec<String>,
    /// One row per operation audited.
    pub matrix: Vec<Row>,
    /// The findings, most severe first.
    pub findings: Vec<Finding>,
    /// Operations left out, and why.
    pub skipped: Vec<Skipped>,
    /// Requests sent.
    pub requests: usize,
    /// Wall time of the requests, in milliseconds.
    pub elapsed_ms: u128,
}

/// One operation's answers, one cell per identity.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The operation id.
    pub operation: String,
    /// The method.
    pub method: String,
    /// The path template.
    pub path: String,
    /// The status each identity got (`None`: not asked).
    pub cells: Vec<Option<u16>>,
}

impl AuditReport {
    /// Findings at or above a severity.
    #[must_use]
    pub fn at_least(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= severity)
            .count()
    }
}

/// The status class of a cell, as the renderings color it.
pub(crate) fn class(status: Option<u16>) -> &'static str {
    match status {
        None => "none",
        Some(200..=299) => "s2xx",
        Some(300..=399) => "s3xx",
        Some(401) => "s401",
        Some(403) => "s403",
        Some(404) => "s404",
        Some(400..=499) => "s4xx",
        Some(_) => "s5xx",
    }
}
