//! Checking `oidc` sources and the `[sessions]` table.

use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use jsonwebtoken::Algorithm;
use toml::Spanned;

use super::error::Collector;
use super::parse_duration;
use super::raw::{RawOidcSource, RawSessions};
use crate::auth::cache::TokenCache;
use crate::auth::jwt::{JwtSource, KeySet, is_hmac};
use crate::auth::oidc::{AssertionAudience, ClientAuth, ClientKey, OidcSource};
use crate::session::{MIN_SECRET, SessionKeys, SessionSettings};

/// The path of warden's callback, which every `redirect_uri` must name.
pub const CALLBACK_PATH: &str = "/oauth2/callback";

/// The `[sessions]` table, checked.
pub(super) fn sessions(
    raw: Option<&Spanned<RawSessions>>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<Arc<SessionSettings>> {
    let raw = raw?.get_ref();
    let mut secrets = Vec::new();
    for (i, key) in raw.keys.get_ref().iter().enumerate() {
        let field = format!("sessions.keys[{i}]");
        let k = key.get_ref();
        match read_secret(k.secret_env.as_deref(), k.secret_file.as_deref(), base_dir) {
            Ok(secret) if secret.len() >= MIN_SECRET => secrets.push(secret),
            Ok(_) => errors.at(
                key.span(),
                field,
                format!("a session key must be at least {MIN_SECRET} bytes of random"),
            ),
            Err(message) => errors.at(key.span(), field, message),
        }
    }
    if raw.keys.get_ref().is_empty() {
        errors.at(
            raw.keys.span(),
            "sessions.keys",
            "at least one key is needed",
        );
    }
    let secure = raw.secure.unwrap_or(true);
    let name = raw
        .cookie
        .as_ref()
        .map_or("warden_session", |c| c.get_ref().as_str());
    if let Some(c) = &raw.cookie
        && (name.is_empty()
            || name.starts_with("__")
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    {
        errors.at(
            c.span(),
            "sessions.cookie",
            "a cookie name of letters, digits, `_` and `-` (the `__Host-` prefix is added when secure)",
        );
    }
    // `__Host-`: only ever set by this origin over HTTPS, for the whole origin (RFC 6265bis
    // §4.1.3.2); a plain-HTTP loopback test cannot use it.
    let prefixed = |n: &str| {
        if secure {
            format!("__Host-{n}")
        } else {
            n.to_owned()
        }
    };
    let duration =
        |value: &Option<Spanned<String>>, field: &str, default: u64, errors: &mut Collector<'_>| {
            value
                .as_ref()
                .and_then(|v| parse_duration(v, field, errors))
                .unwrap_or(Duration::from_secs(default))
        };
    let idle_timeout = duration(&raw.idle_timeout, "sessions.idle_timeout", 30 * 60, errors);
    let absolute_timeout = duration(
        &raw.absolute_timeout,
        "sessions.absolute_timeout",
        12 * 3600,
        errors,
    );
    let refresh_before = duration(&raw.refresh_before, "sessions.refresh_before", 60, errors);
    if idle_timeout.is_zero() || absolute_timeout < idle_timeout {
        let span = raw
            .idle_timeout
            .as_ref()
            .map_or_else(|| raw.keys.span(), Spanned::span);
        errors.at(
            span,
            "sessions.idle_timeout",
            "the idle timeout must be positive and no longer than the absolute timeout",
        );
    }
    let keys = SessionKeys::new(&secrets)?;
    let cookie: Arc<str> = Arc::from(prefixed(name));
    let login_cookie: Arc<str> = Arc::from(prefixed(&format!("{name}_login")));
    Some(Arc::new(SessionSettings {
        keys,
        own_cookies: Arc::from([Arc::clone(&cookie), Arc::clone(&login_cookie)]),
        cookie,
        login_cookie,
        secure,
        idle_timeout,
        absolute_timeout,
        refresh_before,
    }))
}

/// A secret from `secret_env` or `secret_file` (trailing newlines dropped).
fn read_secret(env: Option<&str>, file: Option<&str>, base_dir: &Path) -> Result<Vec<u8>, String> {
    match (env, file) {
        (Some(var), None) => std::env::var(var)
            .map(String::into_bytes)
            .map_err(|_| format!("environment variable `{var}` is not set")),
        (None, Some(file)) => {
            let mut v = std::fs::read(base_dir.join(file))
                .map_err(|e| format!("cannot read `{file}`: {e}"))?;
            while v.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                v.pop();
            }
            Ok(v)
        }
        _ => Err("give exactly one of `secret_env` or `secret_file`".to_owned()),
    }
}

/// The client secret of `client_secret_basic` and `client_secret_post`: from exactly one
/// of `client_secret_env` or `client_secret_file`, UTF-8 and not empty.
fn client_secret(
    raw: &RawOidcSource,
    span: Range<usize>,
    base_dir: &Path,
    field: &dyn Fn(&str) -> String,
    errors: &mut Collector<'_>,
) -> Option<String> {
    let secret = match (&raw.client_secret_env, &raw.client_secret_file) {
        (Some(var), None) => {
            read_secret(Some(var.get_ref()), None, base_dir).map_err(|m| (var.span(), m))
        }
        (None, Some(file)) => {
            read_secret(None, Some(file.get_ref()), base_dir).map_err(|m| (file.span(), m))
        }
        _ => Err((
            span.clone(),
            "give exactly one of `client_secret_env` or `client_secret_file`".to_owned(),
        )),
    };
    match secret {
        Ok(s) => match String::from_utf8(s) {
            Ok(s) if !s.is_empty() => Some(s),
            _ => {
                errors.at(
                    span,
                    field("client_secret_file"),
                    "the client secret is empty or not UTF-8",
                );
                None
            }
        },
        Err((at, message)) => {
            let f = if raw.client_secret_env.is_some() {
                "client_secret_env"
            } else {
                "client_secret_file"
            };
            errors.at(at, field(f), message);
            None
        }
    }
}

/// The key of `private_key_jwt` (no secret goes with it: a secret beside it would be one
/// more thing to leak and is refused), read, and checked by signing once: a key that is
/// not of the algorithm's family, or of another curve, is an error at load rather than at
/// the first sign-in.
fn client_key_auth(
    raw: &RawOidcSource,
    span: Range<usize>,
    base_dir: &Path,
    field: &dyn Fn(&str) -> String,
    errors: &mut Collector<'_>,
) -> Option<(String, Option<Box<ClientKey>>)> {
    use jsonwebtoken::EncodingKey;
    if let Some(s) = raw
        .client_secret_env
        .as_ref()
        .or(raw.client_secret_file.as_ref())
    {
        errors.at(
            s.span(),
            field("client_auth"),
            "`private_key_jwt` signs with `client_key`: remove the client secret",
        );
    }
    let Some(key) = &raw.client_key else {
        errors.at(
            span,
            field("client_key"),
            "`private_key_jwt` needs `client_key = { pem_file = \"…\", kid = \"…\" }`",
        );
        return None;
    };
    let at = key.span();
    let key = key.get_ref();
    let algorithm = match key.algorithm.as_deref().map(Algorithm::from_str) {
        None => Algorithm::RS256,
        Some(Ok(alg)) if !is_hmac(alg) => alg,
        Some(_) => {
            errors.at(
                at,
                field("client_key.algorithm"),
                "expected an asymmetric JWS algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA",
            );
            return None;
        }
    };
    let audience = match key.audience.as_deref() {
        None | Some("issuer") => AssertionAudience::Issuer,
        Some("token_endpoint") => AssertionAudience::TokenEndpoint,
        Some(other) => {
            errors.at(
                at,
                field("client_key.audience"),
                format!("unknown audience `{other}`; expected `issuer` or `token_endpoint`"),
            );
            return None;
        }
    };
    let pem = match std::fs::read(base_dir.join(&key.pem_file)) {
        Ok(pem) => pem,
        Err(e) => {
            errors.at(
                at,
                field("client_key.pem_file"),
                format!("cannot read `{}`: {e}", key.pem_file),
            );
            return None;
        }
    };
    let encoding = match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
        _ => EncodingKey::from_rsa_pem(&pem),
    };
    let checked = encoding.and_then(|k| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(algorithm),
            &serde_json::json!({}),
            &k,
        )
        .map(|_| k)
    });
    match checked {
        Ok(encoding) => Some((
            String::new(),
            Some(Box::new(ClientKey {
                key: encoding,
                kid: key.kid.clone(),
                algorithm,
                audience,
            })),
        )),
        Err(e) => {
            errors.at(
                at,
                field("client_key.pem_file"),
                format!(
                    "`{}` is not a private key that signs {algorithm:?} ({e}); set `algorithm` to the key's",
                    key.pem_file
                ),
            );
            None
        }
    }
}

fn http_url(url: &str) -> bool {
    url.parse::<http::Uri>()
        .is_ok_and(|u| matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some())
}

pub(super) fn check_oidc(
    name: &Arc<str>,
    raw: &RawOidcSource,
    span: Range<usize>,
    base_dir: &Path,
    sessions: Option<&Arc<SessionSettings>>,
    errors: &mut Collector<'_>,
) -> Option<OidcSource> {
    let field = |f: &str| format!("sources.{name}.{f}");
    let Some(sessions) = sessions else {
        errors.at(
            span,
            field("type"),
            "an oidc source needs a `[sessions]` table with `keys` for its session cookie",
        );
        return None;
    };
    let required = |value: &Option<Spanned<String>>, f: &str, errors: &mut Collector<'_>| {
        let v = value.as_ref().map(|v| v.get_ref().clone());
        if v.as_deref().is_none_or(str::is_empty) {
            errors.at(
                span.clone(),
                field(f),
                format!("an oidc source needs `{f}`"),
            );
        }
        v
    };
    let issuer = required(&raw.jwt.issuer, "issuer", errors)?;
    if let Some(i) = &raw.jwt.issuer
        && !http_url(&issuer)
    {
        errors.at(i.span(), field("issuer"), "expected an http(s) URL");
    }
    let client_id = required(&raw.client_id, "client_id", errors)?;
    let redirect_uri = required(&raw.redirect_uri, "redirect_uri", errors)?;
    if let Some(r) = &raw.redirect_uri {
        let ok = redirect_uri.parse::<http::Uri>().is_ok_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http"))
                && u.authority().is_some()
                && u.path() == CALLBACK_PATH
                && u.query().is_none()
        });
        if !ok {
            errors.at(
                r.span(),
                field("redirect_uri"),
                format!(
                    "expected warden's callback, an http(s) URL whose path is `{CALLBACK_PATH}`"
                ),
            );
        }
    }
    let client_auth = match raw
        .client_auth
        .as_ref()
        .map(|c| (c.get_ref().as_str(), c.span()))
    {
        None | Some(("client_secret_basic", _)) => ClientAuth::SecretBasic,
        Some(("client_secret_post", _)) => ClientAuth::SecretPost,
        Some(("private_key_jwt", _)) => ClientAuth::PrivateKeyJwt,
        Some((other, at)) => {
            errors.at(
                at,
                field("client_auth"),
                format!("unknown client authentication `{other}`; expected `client_secret_basic`, `client_secret_post` or `private_key_jwt`"),
            );
            ClientAuth::SecretBasic
        }
    };
    let (client_secret, client_key) = if client_auth == ClientAuth::PrivateKeyJwt {
        client_key_auth(raw, span.clone(), base_dir, &field, errors)?
    } else {
        if let Some(k) = &raw.client_key {
            errors.at(
                k.span(),
                field("client_key"),
                "a client key is for `client_auth = \"private_key_jwt\"`",
            );
        }
        (
            client_secret(raw, span.clone(), base_dir, &field, errors)?,
            None,
        )
    };
    let scopes = raw.scopes.as_ref().map_or_else(
        || {
            vec![
                "openid".to_owned(),
                "profile".to_owned(),
                "email".to_owned(),
            ]
        },
        |s| s.get_ref().clone(),
    );
    if let Some(s) = &raw.scopes
        && !scopes.iter().any(|s| s == "openid")
    {
        errors.at(
            s.span(),
            field("scopes"),
            "the scopes must include `openid`",
        );
    }
    let mut algorithms = Vec::new();
    match &raw.jwt.algorithms {
        None => algorithms.push(Algorithm::RS256),
        Some(algs) => {
            for a in algs.get_ref() {
                match Algorithm::from_str(a) {
                    Ok(alg) if !is_hmac(alg) => algorithms.push(alg),
                    _ => errors.at(
                        algs.span(),
                        field("algorithms"),
                        format!("`{a}` is not an asymmetric JWS algorithm (ID tokens are verified with the provider's published keys)"),
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
        }
    }
    let discovery_url = raw.discovery_url.as_ref().map_or_else(
        || {
            format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )
        },
        |d| d.get_ref().clone(),
    );
    if let Some(d) = &raw.discovery_url
        && !http_url(&discovery_url)
    {
        errors.at(d.span(), field("discovery_url"), "expected an http(s) URL");
    }
    if let Some(p) = &raw.post_logout_redirect_uri
        && !http_url(p.get_ref())
    {
        errors.at(
            p.span(),
            field("post_logout_redirect_uri"),
            "expected an http(s) URL",
        );
    }
    let leeway = raw
        .jwt
        .leeway
        .as_ref()
        .and_then(|v| parse_duration(v, &field("leeway"), errors))
        .unwrap_or(Duration::from_secs(30));
    let text = |v: &Option<Spanned<String>>, default: &str| {
        v.as_ref()
            .map_or_else(|| default.to_owned(), |c| c.get_ref().clone())
    };
    let jwt = JwtSource {
        name: Arc::clone(name),
        algorithms,
        issuer: Some(issuer.clone()),
        audience: vec![client_id.clone()],
        leeway: leeway.as_secs(),
        require_exp: true,
        require_sub: true,
        require_nbf: false,
        require_iat: false,
        require_jti: false,
        static_keys: KeySet::default(),
        fetched_keys: ArcSwap::from_pointee(KeySet::default()),
        jwks_url: None,
        jwks_refresh: Duration::from_secs(300),
        cookie: None,
        roles_claim: text(&raw.jwt.roles_claim, "roles"),
        scopes_claim: text(&raw.jwt.scopes_claim, "scope"),
        max_token_bytes: raw
            .jwt
            .max_token_bytes
            .as_ref()
            .map_or(16384, |m| *m.get_ref()),
        attribute_claims: raw
            .jwt
            .attributes
            .as_ref()
            .map(|a| a.get_ref().clone())
            .unwrap_or_default(),
        // ID tokens are verified once, at the callback or a refresh: nothing to remember.
        cache: TokenCache::new(0),
    };
    Some(OidcSource {
        jwt,
        issuer,
        client_id,
        client_secret,
        client_auth,
        client_key,
        scopes,
        redirect_uri,
        discovery_url,
        post_logout_redirect_uri: raw
            .post_logout_redirect_uri
            .as_ref()
            .map(|p| p.get_ref().clone()),
        sessions: Arc::clone(sessions),
        discovered: ArcSwapOption::empty(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use jsonwebtoken::{Algorithm, DecodingKey, Validation};

    use crate::config::{Config, ConfigError};

    fn keys() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys")
    }

    /// A configuration whose `oidc` source authenticates with `client_auth` (TOML lines).
    fn text(client_auth: &str) -> String {
        format!(
            r#"[upstreams.app]
url = "http://127.0.0.1:9"
[sessions]
keys = [{{ secret_file = "hmac.secret" }}]
[sources.idp]
type = "oidc"
issuer = "https://idp.example"
client_id = "warden"
redirect_uri = "https://app.example/oauth2/callback"
{client_auth}
"#
        )
    }

    fn parse(client_auth: &str) -> Result<Config, Vec<ConfigError>> {
        Config::parse(&text(client_auth), &keys().join("warden.toml")).map_err(|e| e.0)
    }

    fn error_fields(client_auth: &str) -> Vec<(usize, String, String)> {
        parse(client_auth)
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.line, e.field, e.message))
            .collect()
    }

    #[test]
    fn a_client_assertion_is_signed_for_the_issuer_and_verifies_with_the_public_key() {
        let config = parse(
            r#"client_auth = "private_key_jwt"
client_key = { pem_file = "ec256.key", kid = "ec-1", algorithm = "ES256" }"#,
        )
        .unwrap();
        let source = config.oidc_sources().next().unwrap();
        let now = 1_800_000_000;
        let token = source
            .client_assertion("https://idp.example/token", now)
            .unwrap();
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(
            (header.alg, header.kid.as_deref()),
            (Algorithm::ES256, Some("ec-1"))
        );
        let public = std::fs::read(keys().join("ec256.pub.pem")).unwrap();
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://idp.example"]);
        validation.validate_exp = false;
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_ec_pem(&public).unwrap(),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["iss"], "warden");
        assert_eq!(claims["sub"], "warden");
        assert_eq!(claims["exp"], now + crate::auth::oidc::ASSERTION_LIFETIME);
        let again = source
            .client_assertion("https://idp.example/token", now)
            .unwrap();
        let jti = |t: &str| {
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(t)
                .unwrap()
                .claims["jti"]
                .clone()
        };
        assert_ne!(jti(&token), jti(&again), "a fresh jti for every assertion");

        // `audience = "token_endpoint"`: the endpoint instead.
        let config = parse(
            r#"client_auth = "private_key_jwt"
client_key = { pem_file = "rsa.key", audience = "token_endpoint" }"#,
        )
        .unwrap();
        let source = config.oidc_sources().next().unwrap();
        let token = source
            .client_assertion("https://idp.example/token", now)
            .unwrap();
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token)
            .unwrap()
            .claims;
        assert_eq!(claims["aud"], "https://idp.example/token");
    }

    #[test]
    fn a_client_key_that_cannot_sign_is_an_error_at_its_field() {
        let cases = [
            // No key.
            (
                r#"client_auth = "private_key_jwt""#,
                "sources.idp.client_key",
            ),
            // An EC key for RSA (the default algorithm).
            (
                r#"client_auth = "private_key_jwt"
client_key = { pem_file = "ec256.key" }"#,
                "sources.idp.client_key.pem_file",
            ),
            // A P-384 key for ES256.
            (
                r#"client_auth = "private_key_jwt"
client_key = { pem_file = "ec384.key", algorithm = "ES256" }"#,
                "sources.idp.client_key.pem_file",
            ),
            (
                r#"client_auth = "private_key_jwt"
client_key = { pem_file = "missing.key" }"#,
                "sources.idp.client_key.pem_file",
            ),
            (
                r#"client_auth = "private_key_jwt"
client_key = { pem_file = "hmac.secret", algorithm = "HS256" }"#,
                "sources.idp.client_key.algorithm",
            ),
            (
                r#"client_auth = "private_key_jwt"
client_key = { pem_file = "rsa.key", audience = "anyone" }"#,
                "sources.idp.client_key.audience",
            ),
            // A secret beside the key.
            (
                r#"client_auth = "private_key_jwt"
client_secret_file = "hmac.secret"
client_key = { pem_file = "rsa.key" }"#,
                "sources.idp.client_auth",
            ),
            // A key without private_key_jwt.
            (
                r#"client_secret_file = "hmac.secret"
client_key = { pem_file = "rsa.key" }"#,
                "sources.idp.client_key",
            ),
            (
                r#"client_auth = "client_secret_jwt""#,
                "sources.idp.client_auth",
            ),
        ];
        for (lines, field) in cases {
            let errors = error_fields(lines);
            assert!(
                errors.iter().any(|(line, f, _)| f == field && *line >= 5),
                "{lines}: {errors:?}"
            );
        }
        let fine = r#"client_auth = "private_key_jwt"
client_key = { pem_file = "ed25519.key", kid = "ed-1", algorithm = "EdDSA" }"#;
        assert!(parse(fine).is_ok(), "{:?}", error_fields(fine));
    }
}
