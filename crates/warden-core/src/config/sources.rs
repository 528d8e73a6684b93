//! Checking identity sources: keys loaded and parsed, algorithms pinned and consistent.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey};
use toml::Spanned;

use super::error::Collector;
use super::parse_duration;
use super::raw::{RawApiKeySource, RawBasicSource, RawJwtSource, RawKey, RawMtlsSource, RawSource};
use crate::auth::Source;
use crate::auth::api_key::{ApiKeyEntry, ApiKeySource};
use crate::auth::basic::{BasicSource, BasicUser, PasswordHashKind};
use crate::auth::cache::{DEFAULT_CAPACITY, TokenCache};
use crate::auth::jwt::{JwtSource, KeySet, VerifyKey, is_hmac};
use crate::auth::mtls::{MtlsSource, RoleRule, SubjectName};

/// The shortest HMAC secret accepted: RFC 7518 §3.2 wants a key at least as long as the hash.
const MIN_HMAC_SECRET: usize = 32;

pub(super) fn check_source(
    name: &str,
    spanned: &Spanned<RawSource>,
    base_dir: &Path,
    sessions: Option<&Arc<crate::session::SessionSettings>>,
    certificates_arrive: bool,
    errors: &mut Collector<'_>,
) -> Option<Source> {
    let before = errors.errors.len();
    let span = spanned.span();
    let name: Arc<str> = Arc::from(name);
    // Fields of another type of source were refused while parsing (see `RawSource`).
    let source = match spanned.get_ref() {
        RawSource::Jwt(raw) => check_jwt(&name, raw, span, base_dir, errors).map(Source::Jwt),
        RawSource::ApiKey(raw) => check_api_key(&name, raw, span, errors).map(Source::ApiKey),
        RawSource::Basic(raw) => check_basic(&name, raw, span, errors).map(Source::Basic),
        RawSource::Oidc(raw) => {
            super::oidc::check_oidc(&name, raw, span, base_dir, sessions, errors).map(Source::Oidc)
        }
        RawSource::Mtls(raw) => {
            check_mtls(&name, raw, span, base_dir, certificates_arrive, errors).map(Source::Mtls)
        }
        RawSource::Unknown(kind) => {
            errors.at(
                kind.span(),
                format!("sources.{name}.type"),
                format!(
                    "unknown source type `{}`; expected `jwt`, `api_key`, `basic`, `oidc` or `mtls`",
                    kind.get_ref()
                ),
            );
            return None;
        }
    };
    if errors.errors.len() == before {
        source
    } else {
        None
    }
}

fn check_mtls(
    name: &Arc<str>,
    raw: &RawMtlsSource,
    span: Range<usize>,
    base_dir: &Path,
    certificates_arrive: bool,
    errors: &mut Collector<'_>,
) -> Option<MtlsSource> {
    let field = |f: &str| format!("sources.{name}.{f}");
    if !certificates_arrive {
        errors.at(
            span.clone(),
            field("type"),
            "an `mtls` source needs `[gateway.tls]` (the client certificate is read from the \
             TLS handshake of warden's own listener), `[forward_auth] grpc_listen` (Envoy's \
             `ext_authz` reports the certificate of its downstream connection) or \
             `[forward_auth] client_certificate_header` (the header a trusted forward-auth proxy \
             sets on every question); never a header a client sends",
        );
    }
    let Some(ca) = &raw.ca else {
        errors.at(
            span,
            field("ca"),
            "an mtls source needs `ca`, the PEM bundle of the CAs its client certificates chain to",
        );
        return None;
    };
    let roots = super::tls::read_certificates(base_dir, ca, &field("ca"), errors)?;
    let mut anchors = Vec::with_capacity(roots.len());
    for (i, root) in roots.iter().enumerate() {
        match webpki::anchor_from_trusted_cert(root) {
            Ok(anchor) => anchors.push(anchor.to_owned()),
            Err(e) => errors.at(
                ca.span(),
                field("ca"),
                format!(
                    "certificate {} of `{}` cannot be parsed: {e}",
                    i + 1,
                    ca.get_ref()
                ),
            ),
        }
    }
    let subject = match raw.subject.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None => SubjectName::Auto,
        Some((_, "cn")) => SubjectName::CommonName,
        Some((_, "san_dns")) => SubjectName::SanDns,
        Some((_, "san_uri")) => SubjectName::SanUri,
        Some((_, "san_email")) => SubjectName::SanEmail,
        Some((s, other)) => {
            errors.at(
                s.span(),
                field("subject"),
                format!(
                    "unknown subject `{other}`; expected `cn`, `san_dns`, `san_uri` or `san_email`"
                ),
            );
            SubjectName::Auto
        }
    };
    let mut roles = Vec::new();
    if let Some(map) = &raw.roles {
        for (pattern, granted) in map.get_ref() {
            let (text, prefix) = match pattern.strip_suffix('*') {
                Some(text) => (text, true),
                None => (pattern.as_str(), false),
            };
            if text.contains('*') {
                errors.at(
                    map.span(),
                    field("roles"),
                    format!(
                        "`{pattern}`: a subject, or a prefix ending in one `*` (`*` alone: every subject)"
                    ),
                );
                continue;
            }
            roles.push(RoleRule {
                pattern: text.to_owned(),
                prefix,
                roles: granted.clone(),
            });
        }
    }
    Some(MtlsSource {
        name: Arc::clone(name),
        ca_file: base_dir.join(ca.get_ref()),
        roots,
        anchors,
        subject,
        roles,
        cache: TokenCache::new(DEFAULT_CAPACITY),
    })
}

fn check_jwt(
    name: &Arc<str>,
    raw: &RawJwtSource,
    span: Range<usize>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<JwtSource> {
    let field = |f: &str| format!("sources.{name}.{f}");
    let Some(algs) = &raw.algorithms else {
        errors.at(
            span.clone(),
            field("algorithms"),
            "a JWT source must pin its algorithms, e.g. [\"RS256\"]",
        );
        return None;
    };
    let mut algorithms = Vec::new();
    for a in algs.get_ref() {
        if a.eq_ignore_ascii_case("none") {
            errors.at(algs.span(), field("algorithms"), "`none` is never accepted");
            continue;
        }
        match Algorithm::from_str(a) {
            Ok(alg) => algorithms.push(alg),
            Err(_) => errors.at(
                algs.span(),
                field("algorithms"),
                format!("unknown algorithm `{a}`"),
            ),
        }
    }
    if algs.get_ref().is_empty() {
        errors.at(
            algs.span(),
            field("algorithms"),
            "at least one algorithm is needed",
        );
    }
    let hmac = algorithms.iter().filter(|a| is_hmac(**a)).count();
    if hmac != 0 && hmac != algorithms.len() {
        errors.at(
            algs.span(),
            field("algorithms"),
            "HMAC and public-key algorithms cannot share a source (algorithm confusion)",
        );
    }
    let symmetric = hmac != 0;

    let mut keys = Vec::new();
    if let Some(list) = &raw.keys {
        for (i, key) in list.get_ref().iter().enumerate() {
            if let Some(k) = load_key(
                key,
                symmetric,
                base_dir,
                &format!("sources.{name}.keys[{i}]"),
                errors,
            ) {
                keys.push(k);
            }
        }
    }
    if let Some(file) = &raw.jwks_file {
        if symmetric {
            errors.at(
                file.span(),
                field("jwks_file"),
                "a JWKS holds public keys; HMAC sources use `keys` with a secret",
            );
        }
        match std::fs::read(base_dir.join(file.get_ref())) {
            Ok(bytes) => match KeySet::from_jwks(&bytes) {
                Ok(set) => keys.extend(set.keys),
                Err(e) => errors.at(file.span(), field("jwks_file"), e.to_string()),
            },
            Err(e) => errors.at(
                file.span(),
                field("jwks_file"),
                format!("cannot read `{}`: {e}", file.get_ref()),
            ),
        }
    }
    if let Some(url) = &raw.jwks_url {
        if symmetric {
            errors.at(
                url.span(),
                field("jwks_url"),
                "a JWKS holds public keys; HMAC sources use `keys` with a secret",
            );
        }
        let ok = url.get_ref().parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some()
        });
        if !ok {
            errors.at(url.span(), field("jwks_url"), "expected an http(s) URL");
        }
    }
    let configured = raw.keys.as_ref().is_some_and(|k| !k.get_ref().is_empty())
        || raw.jwks_file.is_some()
        || raw.jwks_url.is_some();
    if !configured {
        errors.at(
            span.clone(),
            field("keys"),
            "a JWT source needs `keys`, `jwks_file` or `jwks_url`",
        );
    }
    for key in &keys {
        if !algorithms.iter().any(|a| a.family() == key.key.family()) {
            errors.at(
                span.clone(),
                field("keys"),
                format!(
                    "key {} does not fit any of the pinned algorithms",
                    key.kid.as_deref().unwrap_or("(no kid)")
                ),
            );
        }
    }

    let leeway = raw
        .leeway
        .as_ref()
        .and_then(|v| parse_duration(v, &field("leeway"), errors))
        .unwrap_or(Duration::from_secs(30));
    let require: Vec<String> = raw.require.as_ref().map_or_else(
        || vec!["exp".to_owned(), "sub".to_owned()],
        |r| r.get_ref().clone(),
    );
    if let Some(r) = &raw.require {
        for claim in r.get_ref() {
            if !["exp", "sub", "nbf", "iat", "jti"].contains(&claim.as_str()) {
                errors.at(
                    r.span(),
                    field("require"),
                    format!("`{claim}` cannot be required; use exp, sub, nbf, iat or jti"),
                );
            }
        }
    }
    let cookie = raw.cookie.as_ref().map(|c| Arc::from(c.get_ref().as_str()));
    if let Some(c) = &raw.cookie
        && (c.get_ref().is_empty() || c.get_ref().contains([';', '=', ' ', ',']))
    {
        errors.at(c.span(), field("cookie"), "not a valid cookie name");
    }
    let jwks_refresh = raw
        .jwks_refresh
        .as_ref()
        .and_then(|v| parse_duration(v, &field("jwks_refresh"), errors))
        .unwrap_or(Duration::from_secs(300));
    let max_token_bytes = raw.max_token_bytes.as_ref().map_or(8192, |m| *m.get_ref());

    Some(JwtSource {
        name: Arc::clone(name),
        algorithms,
        issuer: raw.issuer.as_ref().map(|i| i.get_ref().clone()),
        audience: raw
            .audience
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        leeway: leeway.as_secs(),
        require_exp: require.iter().any(|c| c == "exp"),
        require_sub: require.iter().any(|c| c == "sub"),
        require_nbf: require.iter().any(|c| c == "nbf"),
        require_iat: require.iter().any(|c| c == "iat"),
        require_jti: require.iter().any(|c| c == "jti"),
        static_keys: KeySet {
            keys,
            fingerprint: None,
        },
        fetched_keys: ArcSwap::from_pointee(KeySet::default()),
        jwks_url: raw.jwks_url.as_ref().map(|u| u.get_ref().clone()),
        jwks_refresh,
        cookie,
        roles_claim: raw
            .roles_claim
            .as_ref()
            .map_or_else(|| "roles".to_owned(), |c| c.get_ref().clone()),
        scopes_claim: raw
            .scopes_claim
            .as_ref()
            .map_or_else(|| "scope".to_owned(), |c| c.get_ref().clone()),
        max_token_bytes,
        attribute_claims: raw
            .attributes
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        cache: TokenCache::new(
            raw.token_cache
                .as_ref()
                .map_or(DEFAULT_CAPACITY, |c| *c.get_ref()),
        ),
    })
}

fn load_key(
    spanned: &Spanned<RawKey>,
    symmetric: bool,
    base_dir: &Path,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<VerifyKey> {
    let raw = spanned.get_ref();
    let span = spanned.span();
    let given = [
        raw.pem.is_some(),
        raw.pem_file.is_some(),
        raw.secret_env.is_some(),
        raw.secret_file.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if given != 1 {
        errors.at(
            span,
            field,
            "give exactly one of `pem`, `pem_file`, `secret_env`, `secret_file`",
        );
        return None;
    }
    if raw.id.is_some() || raw.sha256.is_some() || raw.subject.is_some() {
        errors.at(
            span,
            field,
            "`id`, `sha256` and `subject` belong to API keys, not JWT keys",
        );
        return None;
    }
    let secret = if let Some(var) = &raw.secret_env {
        match std::env::var(var) {
            Ok(v) => Some(v.into_bytes()),
            Err(_) => {
                errors.at(
                    span,
                    field,
                    format!("environment variable `{var}` is not set"),
                );
                return None;
            }
        }
    } else if let Some(file) = &raw.secret_file {
        match std::fs::read(base_dir.join(file)) {
            Ok(mut v) => {
                while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    v.pop();
                }
                Some(v)
            }
            Err(e) => {
                errors.at(span, field, format!("cannot read `{file}`: {e}"));
                return None;
            }
        }
    } else {
        None
    };
    let key = if let Some(secret) = secret {
        if !symmetric {
            errors.at(span, field, "a secret cannot verify public-key algorithms");
            return None;
        }
        if secret.len() < MIN_HMAC_SECRET {
            errors.at(
                span,
                field,
                format!("an HMAC secret must be at least {MIN_HMAC_SECRET} bytes"),
            );
            return None;
        }
        DecodingKey::from_secret(&secret)
    } else {
        if symmetric {
            errors.at(
                span,
                field,
                "HMAC algorithms need a secret, not a public key (algorithm confusion)",
            );
            return None;
        }
        let pem = match (&raw.pem, &raw.pem_file) {
            (Some(pem), _) => pem.clone().into_bytes(),
            (None, Some(file)) => match std::fs::read(base_dir.join(file)) {
                Ok(bytes) => bytes,
                Err(e) => {
                    errors.at(span, field, format!("cannot read `{file}`: {e}"));
                    return None;
                }
            },
            (None, None) => return None,
        };
        if String::from_utf8_lossy(&pem).contains("PRIVATE KEY") {
            errors.at(
                span,
                field,
                "this is a private key; give warden only the public key",
            );
            return None;
        }
        match DecodingKey::from_rsa_pem(&pem)
            .or_else(|_| DecodingKey::from_ec_pem(&pem))
            .or_else(|_| DecodingKey::from_ed_pem(&pem))
        {
            Ok(k) => k,
            Err(_) => {
                errors.at(span, field, "not a PEM RSA, EC or Ed25519 public key");
                return None;
            }
        }
    };
    Some(VerifyKey {
        kid: raw.kid.clone(),
        alg: None,
        key,
    })
}

fn check_api_key(
    name: &Arc<str>,
    raw: &RawApiKeySource,
    span: Range<usize>,
    errors: &mut Collector<'_>,
) -> Option<ApiKeySource> {
    let field = |f: &str| format!("sources.{name}.{f}");
    let header = match &raw.header {
        None => http::HeaderName::from_static("x-api-key"),
        Some(h) => match http::HeaderName::from_bytes(h.get_ref().as_bytes()) {
            Ok(h) if h != http::header::AUTHORIZATION && h != http::header::COOKIE => h,
            _ => {
                errors.at(
                    h.span(),
                    field("header"),
                    "not a usable header name for API keys",
                );
                return None;
            }
        },
    };
    let mut keys = HashMap::new();
    let Some(list) = &raw.keys else {
        errors.at(
            span.clone(),
            field("keys"),
            "an api_key source needs `keys`",
        );
        return None;
    };
    for (i, key) in list.get_ref().iter().enumerate() {
        let k = key.get_ref();
        let f = format!("sources.{name}.keys[{i}]");
        let (Some(id), Some(sha), Some(subject)) = (&k.id, &k.sha256, &k.subject) else {
            errors.at(
                key.span(),
                f,
                "an API key needs `id`, `sha256` and `subject`",
            );
            continue;
        };
        if k.pem.is_some()
            || k.pem_file.is_some()
            || k.secret_env.is_some()
            || k.secret_file.is_some()
            || k.kid.is_some()
        {
            errors.at(
                key.span(),
                f,
                "`pem`, `pem_file`, `secret_env`, `secret_file` and `kid` belong to JWT keys",
            );
            continue;
        }
        let digest: Option<[u8; 32]> = hex::decode(sha).ok().and_then(|d| d.try_into().ok());
        let Some(digest) = digest else {
            errors.at(
                key.span(),
                format!("{f}.sha256"),
                "expected 64 hex digits (the SHA-256 of the key)",
            );
            continue;
        };
        let entry = ApiKeyEntry {
            id: id.clone(),
            subject: subject.clone(),
            roles: k.roles.clone().unwrap_or_default(),
            scopes: k.scopes.clone().unwrap_or_default(),
            attributes: k
                .attributes
                .as_ref()
                .and_then(|t| serde_json::to_value(t).ok())
                .and_then(|v| match v {
                    serde_json::Value::Object(map) => Some(map.into_iter().collect()),
                    _ => None,
                })
                .unwrap_or_default(),
        };
        if keys.insert(digest, entry).is_some() {
            errors.at(
                key.span(),
                format!("{f}.sha256"),
                "the same key hash is listed twice",
            );
        }
    }
    Some(ApiKeySource {
        name: Arc::clone(name),
        header,
        keys,
    })
}

fn check_basic(
    name: &Arc<str>,
    raw: &RawBasicSource,
    span: Range<usize>,
    errors: &mut Collector<'_>,
) -> Option<BasicSource> {
    let Some(list) = &raw.users else {
        errors.at(
            span.clone(),
            format!("sources.{name}.users"),
            "a basic source needs `users`",
        );
        return None;
    };
    let mut users = HashMap::new();
    let mut decoy = None;
    for (i, user) in list.get_ref().iter().enumerate() {
        let u = user.get_ref();
        match PasswordHashKind::parse(&u.hash) {
            Ok(hash) => {
                decoy.get_or_insert_with(|| hash.clone());
                if users
                    .insert(
                        u.name.clone(),
                        BasicUser {
                            hash,
                            roles: u.roles.clone(),
                        },
                    )
                    .is_some()
                {
                    errors.at(
                        user.span(),
                        format!("sources.{name}.users[{i}].name"),
                        format!("user `{}` is listed twice", u.name),
                    );
                }
            }
            Err(msg) => errors.at(user.span(), format!("sources.{name}.users[{i}].hash"), msg),
        }
        if u.name.contains(':') || u.name.is_empty() {
            errors.at(
                user.span(),
                format!("sources.{name}.users[{i}].name"),
                "a Basic user name is not empty and has no colon",
            );
        }
    }
    let decoy = decoy?;
    Some(BasicSource {
        name: Arc::clone(name),
        users,
        decoy,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Config, ConfigError};

    const UPSTREAM: &str = "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n";

    fn errors_of(text: &str) -> Vec<ConfigError> {
        Config::parse(&format!("{UPSTREAM}{text}"), Path::new("warden.toml"))
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    /// (line, column, field, message) of each error; line 1 is the first line after
    /// `UPSTREAM`.
    fn located(text: &str) -> Vec<(usize, usize, String, String)> {
        errors_of(text)
            .into_iter()
            .map(|e| (e.line - 2, e.column, e.field, e.message))
            .collect()
    }

    #[test]
    fn a_misspelt_type_is_reported_at_its_value_among_the_other_errors() {
        let text = "[sources.idp]\ntype = \"jtw\"\nalgorithms = [\"RS256\"]\n\n[[routes]]\npath = \"/a\"\nupstream = \"nope\"\n";
        let errors = errors_of(text);
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert_eq!(
            errors[0].to_string(),
            "warden.toml:4:8: sources.idp.type: unknown source type `jtw`; expected `jwt`, `api_key`, `basic`, `oidc` or `mtls`"
        );
        assert_eq!(errors[1].field, "routes[0].upstream");
        // Inline tables too.
        assert_eq!(
            located("[sources]\nidp = { type = \"basic_auth\" }\n"),
            [(
                2,
                16,
                "sources.idp.type".to_owned(),
                "unknown source type `basic_auth`; expected `jwt`, `api_key`, `basic`, `oidc` or `mtls`"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn a_field_of_another_type_is_refused_at_its_line() {
        let text = "[sources.idp]\ntype = \"jwt\"\nalgorithms = [\"RS256\"]\nheader = \"x-key\"\n";
        assert_eq!(
            located(text),
            [(
                4,
                1,
                "header".to_owned(),
                "`header` does not apply to a `jwt` source".to_owned()
            )]
        );
        // Before `type`, the field is only known to be foreign at the end of the table.
        let text = "[sources.users]\nheader = \"x-key\"\ntype = \"basic\"\n";
        assert_eq!(
            located(text),
            [(
                1,
                1,
                "sources.users".to_owned(),
                "`header` does not apply to a `basic` source".to_owned()
            )]
        );
        // Fields the other types ignored are refused too.
        let text = "[sources.keys]\ntype = \"api_key\"\nleeway = \"5s\"\n";
        assert_eq!(
            located(text)[0].3,
            "`leeway` does not apply to a `api_key` source"
        );
    }

    #[test]
    fn an_unknown_field_lists_the_fields_of_its_type() {
        let text = "[sources.keys]\ntype = \"api_key\"\nhedaer = \"x-key\"\n";
        assert_eq!(
            located(text),
            [(
                3,
                1,
                "hedaer".to_owned(),
                "unknown field `hedaer`, expected one of `type`, `header`, `keys`".to_owned()
            )]
        );
        // Before `type` (or with an unknown type), every source field is listed.
        let text = "[sources.keys]\nhedaer = \"x-key\"\ntype = \"api_key\"\n";
        let message = &located(text)[0].3;
        assert!(
            message.starts_with("unknown field `hedaer`, expected one of `type`, `algorithms`,"),
            "{message}"
        );
        assert_eq!(
            located("[sources.keys]\nkeys = []\n"),
            [(
                1,
                1,
                "sources.keys".to_owned(),
                "missing field `type`".to_owned()
            )]
        );
    }

    #[test]
    fn fields_keep_their_spans_whatever_the_order() {
        // `type` last: the errors of the checks still point at `algorithms` and the key.
        let text = "[sources.idp]\nalgorithms = [\"RS256\", \"none\"]\nkeys = [{ pem_file = \"missing.pem\" }]\ntype = \"jwt\"\n";
        let errors: Vec<_> = located(text)
            .into_iter()
            .map(|(line, column, field, _)| (line, column, field))
            .collect();
        assert_eq!(
            errors,
            [
                (2, 14, "sources.idp.algorithms".to_owned()),
                (3, 9, "sources.idp.keys[0]".to_owned())
            ]
        );
        let text = "[sources.keys]\nkeys = [{ id = \"k\", sha256 = \"00\", subject = \"s\" }]\ntype = \"api_key\"\n";
        assert_eq!(
            located(text),
            [(
                2,
                9,
                "sources.keys.keys[0].sha256".to_owned(),
                "expected 64 hex digits (the SHA-256 of the key)".to_owned()
            )]
        );
    }

    /// A directory with `ca.pem` (a real CA), `empty.pem` and `garbled.pem` (PEM around
    /// bytes that are no certificate).
    fn mtls_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("warden-mtls-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        std::fs::write(dir.join("ca.pem"), params.self_signed(&key).unwrap().pem()).unwrap();
        std::fs::write(dir.join("empty.pem"), "").unwrap();
        std::fs::write(
            dir.join("garbled.pem"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        dir
    }

    const TLS: &str = "[gateway.tls]\ncertificates = []\n";

    /// The errors about the `clients` source, as (line, field, message), line 1 being the
    /// first of `source`.
    fn mtls_errors(tls: &str, source: &str) -> Vec<(usize, String, String)> {
        let dir = mtls_dir();
        let prefix = format!("{UPSTREAM}{tls}");
        let lines = prefix.lines().count();
        Config::parse(&format!("{prefix}{source}"), &dir.join("warden.toml"))
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
            .into_iter()
            .filter(|e| e.field.starts_with("sources.clients"))
            .map(|e| (e.line - lines, e.field, e.message))
            .collect()
    }

    #[test]
    fn an_mtls_source_reads_its_ca_bundle() {
        let ok = "[sources.clients]\ntype = \"mtls\"\nca = \"ca.pem\"\nsubject = \"san_uri\"\nroles = { \"spiffe://a/*\" = [\"svc\"] }\n";
        assert_eq!(mtls_errors(TLS, ok), []);
        let errors = |ca: &str| {
            mtls_errors(
                TLS,
                &format!("[sources.clients]\ntype = \"mtls\"\nca = \"{ca}\"\n"),
            )
        };
        let missing = errors("missing.pem");
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(
            (missing[0].0, missing[0].1.as_str()),
            (3, "sources.clients.ca")
        );
        assert!(
            missing[0].2.starts_with("cannot read `missing.pem`"),
            "{missing:?}"
        );
        assert_eq!(
            errors("empty.pem"),
            [(
                3,
                "sources.clients.ca".to_owned(),
                "`empty.pem` holds no certificate".to_owned()
            )]
        );
        let garbled = errors("garbled.pem");
        assert_eq!(garbled.len(), 1, "{garbled:?}");
        assert_eq!(garbled[0].0, 3);
        assert!(
            garbled[0]
                .2
                .starts_with("certificate 1 of `garbled.pem` cannot be parsed"),
            "{garbled:?}"
        );
        let none = mtls_errors(TLS, "[sources.clients]\ntype = \"mtls\"\n");
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].1, "sources.clients.ca");
    }

    #[test]
    fn an_mtls_source_needs_tls_a_known_subject_and_simple_patterns() {
        let text = "[sources.clients]\ntype = \"mtls\"\nca = \"ca.pem\"\n";
        let no_tls = mtls_errors("", text);
        assert_eq!(no_tls.len(), 1, "{no_tls:?}");
        assert_eq!(no_tls[0].1, "sources.clients.type");
        assert!(no_tls[0].2.contains("[gateway.tls]"), "{no_tls:?}");
        let subject = mtls_errors(TLS, &format!("{text}subject = \"serial\"\n"));
        assert_eq!(
            subject,
            [(
                4,
                "sources.clients.subject".to_owned(),
                "unknown subject `serial`; expected `cn`, `san_dns`, `san_uri` or `san_email`"
                    .to_owned()
            )]
        );
        let pattern = mtls_errors(TLS, &format!("{text}roles = {{ \"a*b\" = [\"r\"] }}\n"));
        assert_eq!(pattern.len(), 1, "{pattern:?}");
        assert_eq!(
            (pattern[0].0, pattern[0].1.as_str()),
            (4, "sources.clients.roles")
        );
        // Fields of other types are refused at their line.
        let foreign = errors_of(&format!("{TLS}{text}algorithms = [\"RS256\"]\n"));
        assert!(
            foreign
                .iter()
                .any(|e| e.message == "`algorithms` does not apply to a `mtls` source"),
            "{foreign:?}"
        );
    }
}
