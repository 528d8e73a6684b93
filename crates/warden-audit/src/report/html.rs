//! A self-contained HTML page: the matrix (one cell per operation and identity, colored by
//! status class) and the findings with their evidence. No scripts, no external assets.

use std::fmt::Write as _;

use super::junit::escape;
use super::{AuditReport, class};

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}\
h1{font-size:1.4em}table.matrix{border-collapse:collapse;margin:1em 0}\
.matrix th,.matrix td{border:1px solid #bbb;padding:4px 10px;text-align:center}\
.matrix th.op,.matrix td.op{text-align:left;font-family:monospace}\
.s2xx{background:#c8f0c8}.s3xx{background:#e0e0ff}.s401{background:#ffe3a8}\
.s403{background:#ffc9a8}.s404{background:#e8e8e8}.s4xx{background:#ffd6d6}\
.s5xx{background:#ff9d9d}.none{color:#999}.flagged{outline:3px solid #c00;outline-offset:-3px}\
.finding{border-left:4px solid #c00;padding:.3em 1em;margin:1em 0;background:#fafafa}\
.key{display:inline-block;padding:2px 8px;margin-right:4px;border:1px solid #bbb}\
.sev{font-weight:bold;text-transform:uppercase}pre{white-space:pre-wrap;background:#f0f0f0;padding:.5em}";

/// The report as one HTML page.
#[must_use]
pub fn html(report: &AuditReport) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>warden audit: {base}</title><style>{STYLE}</style></head><body>\n\
<h1>warden audit of {base}</h1>\n<p>{ops} operations, {ids} identities, {req} requests in {ms} ms, \
<strong>{n} findings</strong>.</p>\n<table class=\"matrix\"><thead><tr><th class=\"op\">operation</th>",
        base = escape(&report.base),
        ops = report.matrix.len(),
        ids = report.identities.len(),
        req = report.requests,
        ms = report.elapsed_ms,
        n = report.findings.len(),
    );
    for name in &report.identities {
        let _ = write!(out, "<th>{}</th>", escape(name));
    }
    out.push_str("</tr></thead><tbody>\n");
    for row in &report.matrix {
        let _ = write!(out, "<tr><td class=\"op\">{}</td>", escape(&row.operation));
        for (name, cell) in report.identities.iter().zip(&row.cells) {
            let rules = report.rules_of(&row.operation, name);
            let _ = write!(
                out,
                "<td class=\"cell {}{}\" title=\"{}\" data-operation=\"{}\" data-identity=\"{}\">{}</td>",
                class(*cell),
                if rules.is_empty() { "" } else { " flagged" },
                rules.join(", "),
                escape(&row.operation),
                escape(name),
                cell.map_or_else(|| "–".to_owned(), |s| s.to_string())
            );
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody></table>\n<p class=\"legend\">");
    for (class, label) in [
        ("s2xx", "2xx allowed"),
        ("s401", "401"),
        ("s403", "403"),
        ("s404", "404"),
        ("s4xx", "other 4xx"),
        ("s5xx", "5xx"),
        ("s3xx", "3xx (not followed)"),
        ("flagged", "a finding"),
    ] {
        let _ = write!(out, "<span class=\"key {class}\">{label}</span> ");
    }
    out.push_str("</p>\n");
    if !report.skipped.is_empty() {
        out.push_str("<h2>Skipped</h2><ul>");
        for s in &report.skipped {
            let _ = write!(
                out,
                "<li><code>{}</code>: {}</li>",
                escape(&s.operation),
                escape(&s.reason)
            );
        }
        out.push_str("</ul>\n");
    }
    out.push_str("<h2>Findings</h2>\n");
    if report.findings.is_empty() {
        out.push_str("<p>No findings.</p>\n");
    }
    for f in &report.findings {
        let _ = write!(
            out,
            "<div class=\"finding\" data-rule=\"{rule}\"><p><span class=\"sev\">{sev}</span> \
<code>{rule}</code> on <code>{op}</code> as <code>{who}</code></p><p>{msg}</p><p><em>Rule:</em> {stmt}</p>",
            rule = f.rule,
            sev = f.severity,
            op = escape(&f.operation),
            who = escape(&f.identity),
            msg = escape(&f.message),
            stmt = escape(f.statement),
        );
        for e in &f.evidence {
            let mut ev = format!("> {} (as {})\n", e.request, e.identity);
            if let Some(c) = &e.credential {
                let _ = writeln!(ev, "> {c}");
            }
            let _ = writeln!(ev, "< {}", e.status);
            for (n, v) in &e.headers {
                let _ = writeln!(ev, "< {n}: {v}");
            }
            ev.push_str(&e.body);
            let _ = write!(out, "<pre>{}</pre>", escape(&ev));
        }
        out.push_str("</div>\n");
    }
    out.push_str("</body></html>\n");
    out
}
