//! Loading policies, schema and entities, with errors that point into the file at fault.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{Entities, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use toml::Spanned;

use super::{Authorization, roles_mentioned, type_name};
use crate::config::error::Collector;
use crate::config::raw::RawAuthorization;

/// The first byte offset a diagnostic points at.
fn offset_of(diagnostic: &dyn Diagnostic) -> usize {
    diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |l| l.offset())
}

/// A file read for authorization, kept for error positions.
struct Source {
    path: PathBuf,
    text: String,
}

fn read(
    base_dir: &Path,
    name: &Spanned<String>,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<Source> {
    let path = base_dir.join(name.get_ref());
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(Source { path, text }),
        Err(e) => {
            errors.at(
                name.span(),
                field,
                format!("cannot read `{}`: {e}", name.get_ref()),
            );
            None
        }
    }
}

/// Parse policy files into one set, each policy named by its `@id` or `file#n`.
fn policy_set(
    files: &Spanned<Vec<String>>,
    field: &str,
    base_dir: &Path,
    sources: &mut HashMap<PolicyId, usize>,
    texts: &mut Vec<Source>,
    errors: &mut Collector<'_>,
) -> PolicySet {
    let mut set = PolicySet::new();
    for (i, name) in files.get_ref().iter().enumerate() {
        let field = format!("{field}[{i}]");
        let spanned = Spanned::new(files.span(), name.clone());
        let Some(source) = read(base_dir, &spanned, &field, errors) else {
            continue;
        };
        match PolicySet::from_str(&source.text) {
            Ok(parsed) => {
                if parsed.templates().next().is_some() {
                    errors.in_file(
                        &source.path,
                        &source.text,
                        0,
                        &field,
                        "policy templates are not supported",
                    );
                }
                for (n, policy) in parsed.policies().enumerate() {
                    let id = policy
                        .annotation("id")
                        .map_or_else(|| format!("{name}#{n}"), str::to_owned);
                    let id = PolicyId::new(id);
                    sources.insert(id.clone(), texts.len());
                    if let Err(e) = set.add(policy.new_id(id.clone())) {
                        errors.in_file(
                            &source.path,
                            &source.text,
                            0,
                            &field,
                            format!("policy `{id}`: {e}"),
                        );
                    }
                }
            }
            Err(parse_errors) => {
                for e in parse_errors.iter() {
                    errors.in_file(
                        &source.path,
                        &source.text,
                        offset_of(e),
                        &field,
                        e.to_string(),
                    );
                }
            }
        }
        texts.push(source);
    }
    set
}

pub(crate) fn load(
    raw: &Spanned<RawAuthorization>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<Authorization> {
    let before = errors.errors.len();
    let a = raw.get_ref();
    let mut sources = HashMap::new();
    let mut texts = Vec::new();
    let policies = policy_set(
        &a.policies,
        "authorization.policies",
        base_dir,
        &mut sources,
        &mut texts,
        errors,
    );
    let shadow = a.shadow_policies.as_ref().map(|files| {
        policy_set(
            files,
            "authorization.shadow_policies",
            base_dir,
            &mut sources,
            &mut texts,
            errors,
        )
    });

    let schema = a.schema.as_ref().and_then(|name| {
        let source = read(base_dir, name, "authorization.schema", errors)?;
        let parsed = if name.get_ref().ends_with(".json") {
            Schema::from_json_str(&source.text).map_err(|e| (offset_of(&e), e.to_string()))
        } else {
            Schema::from_cedarschema_str(&source.text)
                .map(|(s, _warnings)| s)
                .map_err(|e| (offset_of(&e), e.to_string()))
        };
        match parsed {
            Ok(schema) => Some(schema),
            Err((offset, message)) => {
                errors.in_file(
                    &source.path,
                    &source.text,
                    offset,
                    "authorization.schema",
                    message,
                );
                None
            }
        }
    });

    if let Some(schema) = &schema {
        let validator = Validator::new(schema.clone());
        for (set, field) in [
            (Some(&policies), "authorization.policies"),
            (shadow.as_ref(), "authorization.shadow_policies"),
        ] {
            let Some(set) = set else { continue };
            let result = validator.validate(set, ValidationMode::Strict);
            for e in result.validation_errors() {
                let (path, text) = sources
                    .get(e.policy_id())
                    .and_then(|i| texts.get(*i))
                    .map_or((Path::new(""), ""), |s| (s.path.as_path(), s.text.as_str()));
                errors.in_file(
                    path,
                    text,
                    offset_of(e),
                    field,
                    format!("policy `{}`: {e}", e.policy_id()),
                );
            }
        }
    }

    let entities = match &a.entities {
        None => Entities::empty(),
        Some(name) => match read(base_dir, name, "authorization.entities", errors) {
            Some(source) => match Entities::from_json_str(&source.text, schema.as_ref()) {
                Ok(e) => e,
                Err(e) => {
                    errors.in_file(
                        &source.path,
                        &source.text,
                        offset_of(&e),
                        "authorization.entities",
                        e.to_string(),
                    );
                    Entities::empty()
                }
            },
            None => Entities::empty(),
        },
    };

    let timezone = match &a.timezone {
        None => jiff::tz::TimeZone::UTC,
        Some(name) => jiff::tz::TimeZone::get(name.get_ref()).unwrap_or_else(|e| {
            errors.at(
                name.span(),
                "authorization.timezone",
                format!("unknown time zone: {e}"),
            );
            jiff::tz::TimeZone::UTC
        }),
    };
    let mut entity_type = |value: Option<&Spanned<String>>, default: &str, field: &str| {
        let name = value.map_or(default, |v| v.get_ref().as_str());
        type_name(name)
            .map_err(|message| errors.at(value.map_or(raw.span(), Spanned::span), field, message))
            .ok()
    };
    let principal_type = entity_type(
        a.principal_type.as_ref(),
        "User",
        "authorization.principal_type",
    );
    let role_type = entity_type(a.role_type.as_ref(), "Role", "authorization.role_type");
    let role_name = a
        .role_type
        .as_ref()
        .map_or("Role", |r| r.get_ref().as_str());
    let mut roles_in_policies = Vec::new();
    for source in &texts {
        for role in roles_mentioned(&source.text, role_name) {
            if !roles_in_policies.contains(&role) {
                roles_in_policies.push(role);
            }
        }
    }

    if errors.errors.len() != before {
        return None;
    }
    let entities = super::StaticEntities::new(entities, std::iter::once(&policies).chain(&shadow));
    let reads = super::context::Reads::of(std::iter::once(&policies).chain(&shadow));
    let context = match super::context::ContextBuilder::new(reads, timezone) {
        Ok(context) => context,
        Err(message) => {
            errors.at(raw.span(), "authorization", message);
            return None;
        }
    };
    Some(Authorization {
        policies,
        shadow,
        schema,
        entities,
        context,
        principal_type: principal_type?,
        role_type: role_type?,
        roles_in_policies,
        slices: super::UidMap::default(),
    })
}
