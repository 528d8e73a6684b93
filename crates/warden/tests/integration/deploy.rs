//! `deploy/`: the Grafana dashboard and the Prometheus alert rules name only metrics that a
//! running gateway exports. Every PromQL expression is tokenized, its metric names taken out,
//! and each is looked up in a real `/metrics` scrape of a gateway that has served traffic.
use crate::common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::{Upstream, client, fixture};

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

/// PromQL words that are not metric names: aggregations, operators, modifiers.
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "inf",
    "nan",
    "start",
    "end",
];

/// Words followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads. Hand-written: no PromQL parser crate is kept
/// for Rust, and the names are all this needs. Strings, label matchers (`{...}`), ranges
/// (`[...]`), numbers, functions (a word before `(`), keywords and the label lists after
/// `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` are skipped; every other word
/// is a metric name.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_string = |i: usize| -> usize {
        let quote = chars[i];
        let mut j = i + 1;
        while j < chars.len() && chars[j] != quote {
            if chars[j] == '\\' {
                j += 1;
            }
            j += 1;
        }
        j + 1
    };
    let skip_group = |i: usize, open: char, close: char| -> usize {
        let mut depth = 0;
        let mut j = i;
        while j < chars.len() {
            match chars[j] {
                '"' | '\'' | '`' => {
                    j = skip_string(j);
                    continue;
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return j + 1;
                    }
                }
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(i);
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`1e-3`, `0.99`, `5m`).
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || ((chars[i] == '-' || chars[i] == '+') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            if LABEL_LISTS.contains(&word.as_str()) {
                if before_paren {
                    i = skip_group(next, '(', ')');
                }
            } else if KEYWORDS.contains(&word.as_str()) || before_paren {
                // An aggregation, operator or function.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every `expr` in the dashboard (any depth) and in the alert rules.
fn deployed_expressions() -> Vec<(String, String)> {
    fn walk(value: &serde_json::Value, out: &mut Vec<(String, String)>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => {
                            out.push(("grafana".to_owned(), e.clone()));
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    let dashboard =
        std::fs::read_to_string(deploy_dir().join("grafana/warden-dashboard.json")).unwrap();
    walk(&serde_json::from_str(&dashboard).unwrap(), &mut out);
    let rules = std::fs::read_to_string(deploy_dir().join("prometheus/warden-alerts.yml")).unwrap();
    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(&rules).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            out.push((
                format!("alert {name}"),
                rule["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    out
}

#[test]
fn the_tokenizer_finds_metric_names_and_nothing_else() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, stage) (rate(warden_decision_seconds_bucket{stage=~"a|b", x="}"}[$__rate_interval])))
           > 1e-3 and on (instance) group_left(job) up offset 5m unless absent(other_metric) / 2"#,
    );
    let expected: BTreeSet<String> = ["warden_decision_seconds_bucket", "up", "other_metric"]
        .map(str::to_owned)
        .into();
    assert_eq!(names, expected);
    assert_eq!(
        metric_names("sum without(le) (x:recorded:rate5m)"),
        ["x:recorded:rate5m".to_owned()].into()
    );
}

#[tokio::test]
async fn every_metric_the_dashboard_and_alerts_name_is_exported() {
    let upstream = Upstream::start().await;
    // A JWKS URL nobody answers (a fetch and its failure counted), a limited public route
    // with the WAF on (the state backend asked, a finding), a JWT route (refusals).
    let config = fixture("jwks-url")
        .var("jwks_url", "http://127.0.0.1:9/jwks.json")
        .append(
            r#"
[[routes]]
name = "public"
path = "/public"
upstream = "app"
waf = "on"
[[limits]]
name = "per-client"
key = ["client"]
limit = 1000
window = "1m"
routes = ["public"]
"#,
        );
    let gw = common::gateway_with_admin(config, &upstream).await;
    let c = client();
    for path in ["/public", "/me", "/nowhere"] {
        c.get(format!("http://{}{path}", gw.proxy_addr))
            .send()
            .await
            .unwrap();
    }
    let waf = c
        .get(format!("http://{}/public", gw.proxy_addr))
        .query(&[("q", "x' OR 1=1--")])
        .send()
        .await
        .unwrap();
    assert_eq!(waf.status(), 403);
    let scrape = common::admin_get(&gw, "/metrics").await;
    gw.shutdown().await;

    let series: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let histograms: BTreeSet<&str> = scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" histogram"))
        .collect();
    let expressions = deployed_expressions();
    assert!(expressions.len() >= 20, "{} expressions", expressions.len());
    let mut named = BTreeSet::new();
    let mut missing = Vec::new();
    for (origin, expr) in &expressions {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{origin}: no metric in {expr}");
        for name in names {
            let exported = if histograms.contains(name.as_str()) {
                false // a histogram is read through its _bucket, _sum or _count series
            } else {
                series.contains(name.as_str())
            };
            if !exported {
                missing.push(format!("{origin}: {name}"));
            }
            named.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:#?}\n{scrape}"
    );
    // What operators asked for is on the dashboard or in the alerts.
    for wanted in [
        "warden_decisions_total",
        "warden_decision_seconds_bucket",
        "warden_upstream_seconds_bucket",
        "warden_upstream_errors_total",
        "warden_state_seconds_bucket",
        "warden_state_unavailable_total",
        "warden_jwks_fetches_total",
        "warden_config_reloads_total",
        "warden_connections_open",
        "warden_trace_spans_total",
    ] {
        assert!(
            named.contains(wanted),
            "{wanted} is neither on the dashboard nor alerted on"
        );
    }
}
