//! The terminal rendering: the matrix as a table, then each finding with its evidence.

use std::fmt::Write as _;

use super::AuditReport;

/// The report as text for a terminal.
#[must_use]
pub fn text(report: &AuditReport) -> String {
    let mut out = String::new();
    let width = report
        .matrix
        .iter()
        .map(|r| r.operation.chars().count())
        .max()
        .unwrap_or(9)
        .clamp(9, 60);
    let col = |name: &str| name.chars().count().max(5);
    let _ = write!(out, "{:width$}", "operation");
    for name in &report.identities {
        let _ = write!(out, "  {name:>w$}", w = col(name));
    }
    out.push('\n');
    for row in &report.matrix {
        let op: String = row.operation.chars().take(width).collect();
        let _ = write!(out, "{op:width$}");
        for (name, cell) in report.identities.iter().zip(&row.cells) {
            let mut shown = cell.map_or_else(|| "-".to_owned(), |s| s.to_string());
            if !report.rules_of(&row.operation, name).is_empty() {
                shown.push('!');
            }
            let _ = write!(out, "  {shown:>w$}", w = col(name));
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "\n{} operations, {} identities, {} requests in {} ms; {} skipped; ! marks a finding",
        report.matrix.len(),
        report.identities.len(),
        report.requests,
        report.elapsed_ms,
        report.skipped.len()
    );
    for s in &report.skipped {
        let _ = writeln!(out, "  skipped {}: {}", s.operation, s.reason);
    }
    if report.findings.is_empty() {
        out.push_str("\nno findings\n");
        return out;
    }
    let _ = writeln!(out, "\n{} findings", report.findings.len());
    for f in &report.findings {
        let _ = writeln!(
            out,
            "\n[{}] {} on {} (as {})\n  rule: {}\n  seen: {}",
            f.severity, f.rule, f.operation, f.identity, f.statement, f.message
        );
        for e in &f.evidence {
            let _ = writeln!(out, "  > {} (as {})", e.request, e.identity);
            if let Some(c) = &e.credential {
                let _ = writeln!(out, "  > {c}");
            }
            let _ = writeln!(out, "  < {}", e.status);
            for (n, v) in &e.headers {
                let _ = writeln!(out, "  < {n}: {v}");
            }
            if !e.body.is_empty() {
                let body: String = e.body.chars().take(200).collect();
                let _ = writeln!(out, "  < {}", body.replace('\n', " "));
            }
        }
    }
    out
}
