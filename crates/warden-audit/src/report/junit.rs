//! JUnit XML for CI: one test case per operation, failing with its findings.

use std::fmt::Write as _;

use super::AuditReport;
use crate::rules::Severity;

/// The report as JUnit XML; findings below `fail_on` are listed in `system-out` only.
#[must_use]
pub fn junit(report: &AuditReport, fail_on: Severity) -> String {
    let failing = report.at_least(fail_on);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"warden audit\" tests=\"{}\" failures=\"{failing}\">",
        report.matrix.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">",
        escape(&report.base),
        report.matrix.len(),
        report
            .matrix
            .iter()
            .filter(|r| report
                .findings
                .iter()
                .any(|f| f.operation == r.operation && f.severity >= fail_on))
            .count(),
        report.elapsed_ms as f64 / 1000.0
    );
    for row in &report.matrix {
        let _ = write!(
            out,
            "    <testcase classname=\"warden.audit\" name=\"{}\">",
            escape(&row.operation)
        );
        let findings: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.operation == row.operation)
            .collect();
        for f in findings.iter().filter(|f| f.severity >= fail_on) {
            let mut body = format!("{}\n{}\n", f.statement, f.message);
            for e in &f.evidence {
                let _ = writeln!(body, "> {} (as {})\n< {}", e.request, e.identity, e.status);
            }
            let _ = write!(
                out,
                "\n      <failure type=\"{}\" message=\"[{}] {}\">{}</failure>",
                f.rule,
                f.severity,
                escape(&f.message),
                escape(&body)
            );
        }
        let below: Vec<_> = findings.iter().filter(|f| f.severity < fail_on).collect();
        if !below.is_empty() {
            let text: Vec<String> = below
                .iter()
                .map(|f| format!("[{}] {}: {}", f.severity, f.rule, f.message))
                .collect();
            let _ = write!(
                out,
                "\n      <system-out>{}</system-out>",
                escape(&text.join("\n"))
            );
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

/// XML text and attribute escaping; characters XML 1.0 cannot hold are dropped.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}
