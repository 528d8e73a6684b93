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
    /// Operations left out, and why; requests that got no answer in time.
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

impl AuditReport {
    /// The rules broken by an identity's answers to an operation, as a cell shows them.
    pub(crate) fn rules_of(&self, operation: &str, identity: &str) -> Vec<&'static str> {
        self.findings
            .iter()
            .filter(|f| f.operation == operation && f.identity == identity)
            .map(|f| f.rule.id())
            .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Rule;
    use crate::run::Evidence;

    fn report() -> AuditReport {
        AuditReport {
            base: "http://127.0.0.1:1/".into(),
            identities: vec!["anon".into(), "user".into()],
            matrix: vec![Row {
                operation: "getDoc <x>".into(),
                method: "GET".into(),
                path: "/docs/{id}".into(),
                cells: vec![Some(401), None],
            }],
            findings: vec![Finding {
                rule: Rule::MissingChallenge,
                severity: Rule::MissingChallenge.severity(),
                statement: Rule::MissingChallenge.statement(),
                operation: "getDoc <x>".into(),
                identity: "anon".into(),
                message: "401 & nothing".into(),
                evidence: vec![Evidence {
                    identity: "anon".into(),
                    request: "GET http://127.0.0.1:1/docs/1".into(),
                    credential: None,
                    status: 401,
                    headers: vec![("content-type".into(), "text/plain".into())],
                    body: "<b>login</b>".into(),
                }],
            }],
            skipped: Vec::new(),
            requests: 2,
            elapsed_ms: 3,
        }
    }

    #[test]
    fn every_rendering_shows_the_matrix_and_the_finding() {
        let r = report();
        let t = text(&r);
        assert!(t.contains("getDoc <x>   401!      -"), "{t}");
        assert!(
            t.contains("[low] missing-challenge on getDoc <x> (as anon)"),
            "{t}"
        );
        let h = html(&r);
        assert!(h.contains("data-operation=\"getDoc &lt;x&gt;\" data-identity=\"anon\">401</td>"));
        assert!(
            h.contains("class=\"cell s401 flagged\" title=\"missing-challenge\""),
            "{h}"
        );
        assert!(h.contains("&lt;b&gt;login&lt;/b&gt;") && !h.contains("<b>login"));
        let j = junit(&r, Severity::Low);
        assert!(
            j.contains("<failure type=\"missing-challenge\" message=\"[low] 401 &amp; nothing\">")
        );
        assert!(!junit(&r, Severity::High).contains("<failure"));
        assert_eq!(r.at_least(Severity::Medium), 0);
    }
}
