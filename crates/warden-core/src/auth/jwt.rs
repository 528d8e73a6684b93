//! JWT verification: pinned algorithms, configured keys only, claims checked against the
//! caller's clock.
//!
//! Signature checks are `jsonwebtoken`'s. warden reads the JOSE header itself first, because
//! the refusals that matter most happen before any key is touched: `alg: none` in any
//! spelling, an algorithm the source does not pin (RS→HS confusion), keys carried or pointed
//! at by the token (`jwk`, `jku`, `x5u`, `x5c`) and `crit` extensions. Time claims are
//! checked here too, against the `now` the engine is given, so decisions are reproducible.

use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::cache::{self, TokenCache};
use crate::decision::TokenProblem;
use crate::identity::{CredentialKind, Identity};

/// The most keys one token is tried against when it names no `kid`.
const MAX_CANDIDATE_KEYS: usize = 8;
/// A `kid` longer than this names no key of ours.
const MAX_KID_LEN: usize = 256;

/// Whether an algorithm is keyed by a shared secret.
pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

/// One verification key.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub kid: Option<String>,
    /// The algorithm the key is restricted to (a JWK's `alg`), if any.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("family", &self.key.family())
            .finish_non_exhaustive()
    }
}

/// The keys of one source.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    pub(crate) keys: Vec<VerifyKey>,
    /// The SHA-256 of the JWKS document the keys came from, to tell a rotation from a
    /// refresh that changed nothing.
    pub(crate) fingerprint: Option<[u8; 32]>,
}

/// Why a JWKS document could not be used.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// Not a JWKS JSON document.
    #[error("not a JWK set: {0}")]
    Json(#[from] serde_json::Error),
    /// No usable signature-verification key in it.
    #[error("the JWK set has no usable public signing key")]
    NoKeys,
}

impl KeySet {
    /// The number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are no keys.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Public signing keys from a JWKS document. Symmetric (`oct`) keys, encryption keys and
    /// keys of unsupported types are skipped: a published key set never carries secrets.
    ///
    /// # Errors
    /// When the document is not a JWK set or holds no usable key.
    pub fn from_jwks(json: &[u8]) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(json)?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::from_str(&a.to_string()).ok());
            keys.push(VerifyKey {
                kid: jwk.common.key_id.clone(),
                alg,
                key,
            });
        }
        if keys.is_empty() {
            return Err(JwksError::NoKeys);
        }
        Ok(Self {
            keys,
            fingerprint: Some(cache::digest_bytes(json)),
        })
    }
}

/// A configured JWT identity source.
#[derive(Debug)]
pub(crate) struct JwtSource {
    pub name: Arc<str>,
    pub algorithms: Vec<Algorithm>,
    pub issuer: Option<String>,
    pub audience: Vec<String>,
    pub leeway: u64,
    pub require_exp: bool,
    pub require_sub: bool,
    pub require_nbf: bool,
    pub require_iat: bool,
    pub require_jti: bool,
    /// Keys from the configuration (PEM, secrets, a JWKS file).
    pub static_keys: KeySet,
    /// Keys fetched from `jwks_url`, swapped by whoever fetches them.
    pub fetched_keys: ArcSwap<KeySet>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: std::time::Duration,
    pub cookie: Option<Arc<str>>,
    pub roles_claim: String,
    pub scopes_claim: String,
    pub max_token_bytes: usize,
    /// Claims passed on to authorization as principal attributes.
    pub attribute_claims: Vec<String>,
    /// Tokens verified before, by digest.
    pub cache: TokenCache,
}

impl JwtSource {
    /// Verify a token at time `now` (seconds since the epoch), from the cache when it was
    /// verified before (see [`cache`]).
    pub fn verify(
        &self,
        token: &str,
        now: u64,
        kind: CredentialKind,
    ) -> Result<Identity, TokenProblem> {
        if token.len() > self.max_token_bytes {
            return Err(TokenProblem::TooLarge);
        }
        if !self.cache.enabled() {
            return self.verify_uncached(token, now, kind).map(|(id, _)| id);
        }
        let digest = cache::digest(token);
        if let Some(hit) = self.cache.get(&digest, now, self.leeway) {
            let mut identity = hit.identity.clone();
            identity.kind = kind;
            return Ok(identity);
        }
        // The generation is read before the keys are: see `TokenCache::generation`.
        let generation = self.cache.generation();
        let (identity, not_before) = self.verify_uncached(token, now, kind)?;
        self.cache
            .insert(digest, &identity, not_before, now, generation);
        Ok(identity)
    }

    /// Verify a token without the cache: header, pinned algorithm, keys, signature and
    /// claims. Returns the identity and the token's `nbf`.
    pub fn verify_uncached(
        &self,
        token: &str,
        now: u64,
        kind: CredentialKind,
    ) -> Result<(Identity, Option<u64>), TokenProblem> {
        let claims = self.verified_claims(token)?;
        self.identity(&claims, now, kind)
    }

    /// The claims of a token whose header, pinned algorithm, key and signature (and `iss`
    /// and `aud`, when configured) verify; the time claims are not checked here.
    pub(crate) fn verified_claims(
        &self,
        token: &str,
    ) -> Result<serde_json::Map<String, Value>, TokenProblem> {
        self.verified_token(token).map(|(claims, _)| claims)
    }

    /// [`JwtSource::verified_claims`] and the algorithm that verified them.
    pub(crate) fn verified_token(
        &self,
        token: &str,
    ) -> Result<(serde_json::Map<String, Value>, Algorithm), TokenProblem> {
        let (alg, kid) = self.check_header(token)?;
        let kid = kid.as_deref();

        let fetched = self.fetched_keys.load();
        let candidates = self
            .static_keys
            .keys
            .iter()
            .chain(fetched.keys.iter())
            .filter(|k| k.key.family() == alg.family() && k.alg.is_none_or(|a| a == alg))
            // A key configured without a `kid` is tried for any `kid`; one with a `kid` only for its own.
            .filter(|k| kid.is_none() || k.kid.is_none() || k.kid.as_deref() == kid)
            .take(MAX_CANDIDATE_KEYS);

        let validation = self.validation(alg);
        let mut tried = false;
        for candidate in candidates {
            tried = true;
            match jsonwebtoken::decode::<serde_json::Map<String, Value>>(
                token,
                &candidate.key,
                &validation,
            ) {
                Ok(data) => return Ok((data.claims, alg)),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {}
                Err(e) => return Err(map_error(e.kind())),
            }
        }
        Err(if tried {
            TokenProblem::BadSignature
        } else {
            TokenProblem::UnknownKey
        })
    }

    /// Everything checked before any key is touched: size, the JOSE header, the pinned
    /// algorithm, keys carried or pointed at by the token, `crit`. Returns the algorithm and
    /// the `kid`, if any.
    pub(crate) fn check_header(
        &self,
        token: &str,
    ) -> Result<(Algorithm, Option<String>), TokenProblem> {
        if token.len() > self.max_token_bytes {
            return Err(TokenProblem::TooLarge);
        }
        let header = read_header(token)?;
        let alg = self.pinned_algorithm(&header)?;
        refuse_unsafe_header(&header)?;
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) if kid.len() <= MAX_KID_LEN => Some(kid.clone()),
            Some(Value::String(_)) => return Err(TokenProblem::UnknownKey),
            Some(_) => return Err(TokenProblem::Garbled),
        };
        Ok((alg, kid))
    }

    fn pinned_algorithm(
        &self,
        header: &serde_json::Map<String, Value>,
    ) -> Result<Algorithm, TokenProblem> {
        let Some(Value::String(name)) = header.get("alg") else {
            return Err(TokenProblem::Garbled);
        };
        // `none`, `None`, `NONE`, ...: never, whatever the configuration says.
        if name.eq_ignore_ascii_case("none") {
            return Err(TokenProblem::AlgorithmNotAllowed);
        }
        let alg = Algorithm::from_str(name).map_err(|_| TokenProblem::AlgorithmNotAllowed)?;
        if self.algorithms.contains(&alg) {
            Ok(alg)
        } else {
            Err(TokenProblem::AlgorithmNotAllowed)
        }
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        // Time and presence checks are done in `identity` against the engine's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        v.required_spec_claims.clear();
        v.leeway = self.leeway;
        // jsonwebtoken checks `iss` and `aud` only when present: configured means required.
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".to_owned());
        }
        if self.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&self.audience);
            v.required_spec_claims.insert("aud".to_owned());
        }
        v
    }

    /// The identity in verified claims, checked against the clock and the requirements.
    pub(crate) fn identity(
        &self,
        claims: &serde_json::Map<String, Value>,
        now: u64,
        kind: CredentialKind,
    ) -> Result<(Identity, Option<u64>), TokenProblem> {
        let exp = time_claim(claims, "exp")?;
        let nbf = time_claim(claims, "nbf")?;
        let iat = time_claim(claims, "iat")?;
        if (self.require_exp && exp.is_none())
            || (self.require_nbf && nbf.is_none())
            || (self.require_iat && iat.is_none())
        {
            return Err(TokenProblem::MissingClaim);
        }
        if let Some(exp) = exp
            && now >= exp.saturating_add(self.leeway)
        {
            return Err(TokenProblem::Expired);
        }
        if let Some(nbf) = nbf
            && nbf > now.saturating_add(self.leeway)
        {
            return Err(TokenProblem::NotYetValid);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None if !self.require_sub => String::new(),
            _ => return Err(TokenProblem::MissingClaim),
        };
        let token_id = match claims.get("jti") {
            Some(Value::String(s)) => Some(s.clone()),
            None if !self.require_jti => None,
            _ => return Err(TokenProblem::MissingClaim),
        };
        let identity = Identity {
            subject,
            source: Arc::clone(&self.name),
            kind,
            roles: string_list(claim_path(claims, &self.roles_claim)),
            scopes: string_list(claim_path(claims, &self.scopes_claim)),
            token_id,
            expires_at: exp,
            issued_at: iat,
            attributes: self
                .attribute_claims
                .iter()
                .filter_map(|name| claim_path(claims, name).map(|v| (name.clone(), v.clone())))
                .collect(),
        };
        Ok((identity, nbf))
    }

    /// Install keys fetched from the JWKS URL. A set that differs from the one in force is
    /// a rotation: tokens verified before are forgotten (the keys are stored first, then
    /// the cache's generation moves on).
    pub fn set_fetched_keys(&self, keys: KeySet) {
        let changed =
            self.fetched_keys.load().fingerprint != keys.fingerprint || keys.fingerprint.is_none();
        if changed {
            self.fetched_keys.store(Arc::new(keys));
            self.cache.rotate();
        }
    }
}

/// Decode the JOSE header without trusting anything in it.
fn read_header(token: &str) -> Result<serde_json::Map<String, Value>, TokenProblem> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenProblem::Garbled);
    };
    // An empty signature is not garbled: it is what `alg: none` looks like, and is refused
    // as such once the algorithm is read.
    if header.is_empty() || payload.is_empty() {
        return Err(TokenProblem::Garbled);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| TokenProblem::Garbled)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenProblem::Garbled),
    }
}

fn refuse_unsafe_header(header: &serde_json::Map<String, Value>) -> Result<(), TokenProblem> {
    // A token must never choose the key that verifies it.
    if ["jwk", "jku", "x5u", "x5c"]
        .iter()
        .any(|k| header.contains_key(*k))
    {
        return Err(TokenProblem::EmbeddedKey);
    }
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; warden supports none.
    if header.contains_key("crit") {
        return Err(TokenProblem::UnsupportedCritical);
    }
    Ok(())
}

fn time_claim(
    claims: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<Option<u64>, TokenProblem> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(v) = n.as_u64() {
                Ok(Some(v))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite() && *f >= 0.0) {
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    reason = "NumericDate may be fractional; checked finite and non-negative"
                )]
                Ok(Some(f as u64))
            } else {
                Err(TokenProblem::MissingClaim)
            }
        }
        Some(_) => Err(TokenProblem::MissingClaim),
    }
}

/// A claim at a dotted path (`realm_access.roles`).
pub(crate) fn claim_path<'a>(
    claims: &'a serde_json::Map<String, Value>,
    path: &str,
) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = claims.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value)
}

/// A list claim: a JSON array of strings or one space-separated string (OAuth `scope`).
pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_owned).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn map_error(kind: &ErrorKind) -> TokenProblem {
    match kind {
        ErrorKind::InvalidSignature => TokenProblem::BadSignature,
        ErrorKind::ExpiredSignature => TokenProblem::Expired,
        ErrorKind::ImmatureSignature => TokenProblem::NotYetValid,
        ErrorKind::InvalidIssuer => TokenProblem::WrongIssuer,
        ErrorKind::InvalidAudience => TokenProblem::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => TokenProblem::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => TokenProblem::MissingClaim,
        _ => TokenProblem::Garbled,
    }
}
