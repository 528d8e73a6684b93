//! Checking network rules and trusted proxies; rule files are read here, once.

use std::path::Path;

use toml::Spanned;

use super::error::Collector;
use super::raw::{RawGeo, RawIpRule};
use crate::network::geo::{GeoRule, GeoRules};
use crate::network::{Action, IpRules, parse_net};
use std::sync::Arc;

/// Build an ordered rule list; errors name the config line, or the rule file and its line.
pub(super) fn ip_rules(
    rules: &[Spanned<RawIpRule>],
    field: &str,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> IpRules {
    let mut out = IpRules::new();
    for (i, spanned) in rules.iter().enumerate() {
        let field = format!("{field}[{i}]");
        let r = spanned.get_ref();
        let given: Vec<(Action, bool, &String)> = [
            (Action::Allow, false, r.allow.as_ref()),
            (Action::Deny, false, r.deny.as_ref()),
            (Action::Allow, true, r.allow_file.as_ref()),
            (Action::Deny, true, r.deny_file.as_ref()),
        ]
        .into_iter()
        .filter_map(|(a, file, v)| v.map(|v| (a, file, v)))
        .collect();
        let [(action, is_file, value)] = given.as_slice() else {
            errors.at(
                spanned.span(),
                field,
                "give exactly one of `allow`, `deny`, `allow_file`, `deny_file`",
            );
            continue;
        };
        if *is_file {
            let path = base_dir.join(value);
            match std::fs::read_to_string(&path) {
                Ok(text) => push_file(&mut out, &path, &text, *action, &field, errors),
                Err(e) => errors.at(spanned.span(), field, format!("cannot read `{value}`: {e}")),
            }
        } else {
            match parse_net(value) {
                Ok(Some(net)) => out.push(net, *action),
                Ok(None) => out.push_all(*action),
                Err(e) => errors.at(spanned.span(), field, e.to_string()),
            }
        }
    }
    out
}

/// One prefix per line; blank lines and `#` comments are skipped.
fn push_file(
    out: &mut IpRules,
    path: &Path,
    text: &str,
    action: Action,
    field: &str,
    errors: &mut Collector<'_>,
) {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let entry = line.split('#').next().unwrap_or("").trim();
        if !entry.is_empty() {
            match parse_net(entry) {
                Ok(Some(net)) => out.push(net, action),
                Ok(None) => out.push_all(action),
                Err(e) => errors.in_file(path, text, offset, field, e.to_string()),
            }
        }
        offset += line.len();
    }
}

/// Trusted proxies as a rule list of `allow`s.
pub(super) fn trusted_proxies(list: &[Spanned<String>], errors: &mut Collector<'_>) -> IpRules {
    let mut out = IpRules::new();
    for (i, entry) in list.iter().enumerate() {
        match parse_net(entry.get_ref()) {
            Ok(Some(net)) => out.push(net, Action::Allow),
            Ok(None) => errors.at(
                entry.span(),
                format!("gateway.trusted_proxies[{i}]"),
                "trusting `all` would let any client forge its address",
            ),
            Err(e) => errors.at(
                entry.span(),
                format!("gateway.trusted_proxies[{i}]"),
                e.to_string(),
            ),
        }
    }
    out
}

/// Load the geo database and check its rules.
pub(super) fn geo(
    raw: &Spanned<RawGeo>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<GeoRules> {
    let g = raw.get_ref();
    let mut rules = Vec::new();
    for (i, spanned) in g.rules.iter().enumerate() {
        let field = format!("geo.rules[{i}]");
        let r = spanned.get_ref();
        let (action, countries) = match (&r.allow, &r.deny) {
            (Some(c), None) => (Action::Allow, c),
            (None, Some(c)) => (Action::Deny, c),
            _ => {
                errors.at(
                    spanned.span(),
                    field,
                    "give exactly one of `allow` and `deny`",
                );
                continue;
            }
        };
        for c in countries {
            if c != "*" && !(c.len() == 2 && c.chars().all(|ch| ch.is_ascii_alphabetic())) {
                errors.at(
                    spanned.span(),
                    field.clone(),
                    format!("`{c}` is not an ISO 3166-1 alpha-2 code or `*`"),
                );
            }
        }
        if let Some(url) = &r.blocked_by {
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme().is_some() && u.authority().is_some());
            if !ok || action == Action::Allow {
                errors.at(
                    spanned.span(),
                    field.clone(),
                    "`blocked_by` is an absolute URL on a `deny` rule",
                );
            }
        }
        rules.push(GeoRule {
            action,
            countries: countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
            blocked_by: r.blocked_by.as_deref().map(Arc::from),
        });
    }
    let path = base_dir.join(g.database.get_ref());
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) => {
            errors.at(
                g.database.span(),
                "geo.database",
                format!("cannot read `{}`: {e}", g.database.get_ref()),
            );
            return None;
        }
    };
    GeoRules::new(bytes, rules)
        .map_err(|e| errors.at(g.database.span(), "geo.database", e.to_string()))
        .ok()
}
