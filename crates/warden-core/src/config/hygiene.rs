//! Checking `[hygiene]`, `[csrf]`, `[cors]` and the routes' hygiene fields.

use std::sync::Arc;

use http::{HeaderName, Method};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawConfig, RawCors, RawCsrf, RawHygiene, RawRoute};
use crate::hygiene::csrf::DoubleSubmit;
use crate::hygiene::waf::{Part, Rule};
use crate::hygiene::{
    AllowedOrigins, CorsSettings, CsrfSettings, HygieneSettings, PathCase, RouteHygiene,
    TrailingSlash, Waf, WafMode, parse_size,
};

/// Headers a page may read from warden's answers unless configured otherwise: the ones its
/// refusals and limits use.
const DEFAULT_EXPOSE: [&str; 5] = [
    "www-authenticate",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "link",
];

pub(super) fn settings(raw: &RawConfig, errors: &mut Collector<'_>) -> HygieneSettings {
    let h = &raw.hygiene;
    let mut out = HygieneSettings::default();
    if let Some(v) = &h.max_body {
        out.max_body = size(v, "hygiene.max_body", errors).unwrap_or(out.max_body);
    }
    if let Some(v) = &h.waf {
        out.waf = waf_mode(v, "hygiene.waf", errors).unwrap_or_default();
    }
    if let Some(v) = &h.waf_body_limit {
        let limit = size(v, "hygiene.waf_body_limit", errors)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(out.waf_body_limit);
        if limit > 16 << 20 {
            errors.at(
                v.span(),
                "hygiene.waf_body_limit",
                "at most 16MiB: inspected bodies are held in memory",
            );
        }
        out.waf_body_limit = limit;
    }
    if let Some(v) = &h.path_case {
        out.path_case = match v.get_ref().as_str() {
            "sensitive" => PathCase::Sensitive,
            "insensitive" => PathCase::Insensitive,
            _ => {
                errors.at(
                    v.span(),
                    "hygiene.path_case",
                    "expected `sensitive` or `insensitive`",
                );
                PathCase::Sensitive
            }
        };
    }
    if let Some(v) = &h.trailing_slash {
        out.trailing_slash = match v.get_ref().as_str() {
            "strict" => TrailingSlash::Strict,
            "ignore" => TrailingSlash::Ignore,
            _ => {
                errors.at(
                    v.span(),
                    "hygiene.trailing_slash",
                    "expected `strict` or `ignore`",
                );
                TrailingSlash::Strict
            }
        };
    }
    out.rules = rules(h, errors);
    if let Some(csrf) = &raw.csrf {
        out.csrf = csrf_settings(csrf, errors);
    }
    if let Some(cors) = &raw.cors {
        out.cors = cors_settings(cors, errors).map(Arc::new);
    }
    out
}

pub(super) fn route(index: usize, raw: &RawRoute, errors: &mut Collector<'_>) -> RouteHygiene {
    let field = |name: &str| format!("routes[{index}].{name}");
    RouteHygiene {
        max_body: raw
            .max_body
            .as_ref()
            .and_then(|v| size(v, &field("max_body"), errors)),
        waf: raw
            .waf
            .as_ref()
            .and_then(|v| waf_mode(v, &field("waf"), errors)),
        csrf: raw.csrf.unwrap_or(true),
        cors: raw.cors.unwrap_or(true),
    }
}

fn size(value: &Spanned<String>, field: &str, errors: &mut Collector<'_>) -> Option<u64> {
    let parsed = parse_size(value.get_ref());
    if parsed.is_none() {
        errors.at(
            value.span(),
            field,
            "not a size such as `65536`, `64KiB` or `10MiB`",
        );
    }
    parsed
}

fn waf_mode(value: &Spanned<String>, field: &str, errors: &mut Collector<'_>) -> Option<WafMode> {
    match value.get_ref().as_str() {
        "off" => Some(WafMode::Off),
        "detect" => Some(WafMode::Detect),
        "on" => Some(WafMode::On),
        _ => {
            errors.at(value.span(), field, "expected `on`, `detect` or `off`");
            None
        }
    }
}

fn rules(h: &RawHygiene, errors: &mut Collector<'_>) -> Waf {
    let mut patterns = Vec::new();
    let mut rules = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, spanned) in h.rules.iter().enumerate() {
        let raw = spanned.get_ref();
        let field = |name: &str| format!("hygiene.rules[{i}].{name}");
        let id = raw.id.get_ref();
        if id.is_empty() || matches!(id.as_str(), "sqli" | "xss") || !ids.insert(id.clone()) {
            errors.at(
                raw.id.span(),
                field("id"),
                "a rule id must be non-empty, unique, and not `sqli` or `xss`",
            );
            continue;
        }
        if let Err(e) = regex::RegexBuilder::new(raw.pattern.get_ref())
            .size_limit(1 << 20)
            .build()
        {
            errors.at(
                raw.pattern.span(),
                field("pattern"),
                format!("not a valid regular expression: {e}"),
            );
            continue;
        }
        let parts = match &raw.parts {
            None => vec![Part::Path, Part::Query, Part::Header, Part::Body],
            Some(list) => {
                let mut parts = Vec::new();
                for name in list.get_ref() {
                    match Part::parse(name) {
                        Some(p) => parts.push(p),
                        None => errors.at(
                            list.span(),
                            field("parts"),
                            format!("`{name}` is not one of path, query, headers, body"),
                        ),
                    }
                }
                parts
            }
        };
        patterns.push(raw.pattern.get_ref().clone());
        rules.push(Rule {
            id: Arc::from(id.as_str()),
            parts,
        });
    }
    let span = h.rules.first().map_or(0..0, Spanned::span);
    Waf::new(patterns, rules).unwrap_or_else(|e| {
        errors.at(
            span,
            "hygiene.rules",
            format!("the rules do not compile together: {e}"),
        );
        Waf::default()
    })
}

/// `scheme://host[:port]`, lower case, or an error message.
fn origin(text: &str) -> Result<String, &'static str> {
    let lower = text.trim().to_ascii_lowercase();
    let Some((scheme, authority)) = lower.split_once("://") else {
        return Err("an origin is `scheme://host[:port]`");
    };
    if !matches!(scheme, "http" | "https")
        || authority.is_empty()
        || authority.contains(['/', '?', '#', '@', ' '])
    {
        return Err("an origin is `http(s)://host[:port]`, without a path");
    }
    Ok(lower)
}

fn csrf_settings(spanned: &Spanned<RawCsrf>, errors: &mut Collector<'_>) -> CsrfSettings {
    let raw = spanned.get_ref();
    let mut trusted_origins = Vec::new();
    for (i, o) in raw.trusted_origins.iter().enumerate() {
        match origin(o.get_ref()) {
            Ok(o) => trusted_origins.push(o),
            Err(m) => errors.at(o.span(), format!("csrf.trusted_origins[{i}]"), m),
        }
    }
    let double_submit = match (&raw.double_submit_cookie, &raw.double_submit_header) {
        (None, None) => None,
        (Some(cookie), Some(header)) => match HeaderName::from_bytes(header.get_ref().as_bytes()) {
            Ok(name) if !cookie.get_ref().is_empty() => Some(DoubleSubmit {
                cookie: cookie.get_ref().clone(),
                header: name,
            }),
            _ => {
                errors.at(
                    header.span(),
                    "csrf.double_submit_header",
                    "not a header name (and the cookie name must not be empty)",
                );
                None
            }
        },
        _ => {
            errors.at(
                spanned.span(),
                "csrf.double_submit_cookie",
                "set both `double_submit_cookie` and `double_submit_header`, or neither",
            );
            None
        }
    };
    CsrfSettings {
        trusted_origins,
        double_submit,
    }
}

fn cors_settings(spanned: &Spanned<RawCors>, errors: &mut Collector<'_>) -> Option<CorsSettings> {
    let raw = spanned.get_ref();
    let before = errors.errors.len();
    let list = raw.origins.get_ref();
    let origins = if list.iter().any(|o| o == "*") {
        if list.len() > 1 || raw.credentials {
            errors.at(
                raw.origins.span(),
                "cors.origins",
                "`*` stands alone, and never with `credentials = true` (browsers refuse it)",
            );
        }
        AllowedOrigins::Any
    } else {
        let mut out = Vec::new();
        for o in list {
            match origin(o) {
                Ok(o) => out.push(o),
                Err(m) => errors.at(raw.origins.span(), "cors.origins", format!("`{o}`: {m}")),
            }
        }
        if out.is_empty() {
            errors.at(
                raw.origins.span(),
                "cors.origins",
                "name at least one origin",
            );
        }
        AllowedOrigins::List(out)
    };
    let methods = raw.methods.as_ref().map(|list| {
        list.get_ref()
            .iter()
            .filter_map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| {
                        errors.at(
                            list.span(),
                            "cors.methods",
                            format!("`{m}` is not a method"),
                        );
                    })
                    .ok()
            })
            .collect()
    });
    let header_list = |items: &[Spanned<String>], field: &str, errors: &mut Collector<'_>| {
        items
            .iter()
            .filter_map(|h| match HeaderName::from_bytes(h.get_ref().as_bytes()) {
                Ok(name) => Some(name.as_str().to_owned()),
                Err(_) => {
                    errors.at(
                        h.span(),
                        field,
                        format!("`{}` is not a header name", h.get_ref()),
                    );
                    None
                }
            })
            .collect::<Vec<_>>()
    };
    let headers = header_list(&raw.headers, "cors.headers", errors);
    let expose = match &raw.expose {
        Some(items) => header_list(items, "cors.expose", errors),
        None => DEFAULT_EXPOSE.iter().map(|s| (*s).to_owned()).collect(),
    };
    let max_age = raw
        .max_age
        .as_ref()
        .and_then(|v| super::parse_duration(v, "cors.max_age", errors))
        .map(|d| d.as_secs());
    (errors.errors.len() == before).then_some(CorsSettings {
        origins,
        methods,
        headers,
        expose,
        credentials: raw.credentials,
        max_age,
    })
}
