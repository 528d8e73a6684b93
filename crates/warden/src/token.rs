//! Minting tokens: for the demo, and for testing a configuration with real signatures.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// What a minted token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// The `roles` claim.
    pub roles: Vec<String>,
    /// The `scope` claim (space-separated).
    pub scopes: Vec<String>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// The `kid` header.
    pub kid: Option<String>,
}

/// Why a token could not be minted.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The key does not fit the algorithm.
    #[error("cannot use the signing key: {0}")]
    Key(jsonwebtoken::errors::Error),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Sign a token with a PEM private key (or an HMAC secret for HS algorithms).
///
/// # Errors
/// When the key does not fit the algorithm.
pub fn mint(spec: &TokenSpec, algorithm: Algorithm, key: &[u8]) -> Result<String, TokenError> {
    let key = match algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => Ok(EncodingKey::from_secret(key)),
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => EncodingKey::from_rsa_pem(key),
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(key),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(key),
    }
    .map_err(TokenError::Key)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut claims = json!({
        "sub": spec.subject,
        "iss": spec.issuer,
        "aud": spec.audience,
        "iat": now,
        "nbf": now,
        "exp": now + spec.ttl.as_secs(),
        "jti": uuid::Uuid::now_v7().to_string(),
    });
    if let Some(map) = claims.as_object_mut() {
        if !spec.roles.is_empty() {
            map.insert("roles".to_owned(), json!(spec.roles));
        }
        if !spec.scopes.is_empty() {
            map.insert("scope".to_owned(), json!(spec.scopes.join(" ")));
        }
    }
    let mut header = Header::new(algorithm);
    header.kid.clone_from(&spec.kid);
    jsonwebtoken::encode(&header, &claims, &key).map_err(TokenError::Sign)
}
