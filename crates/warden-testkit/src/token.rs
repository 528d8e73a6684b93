//! JWTs for tests: claims and header fields set one by one, signed with a test key.

use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Map, Value};

use crate::read_key;

/// A signing key from `testdata/keys` (or a secret of the test's own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    /// `rsa.key`, whose public half is `rsa.pub.pem` (kid `rsa-1` in `jwks.json`).
    Rsa,
    /// `rsa2.key`, the rotated key (kid `rsa-2` in `jwks-rotated.json`).
    Rsa2,
    /// `ec256.key` (P-256; kid `ec-1` in `jwks.json`).
    Ec256,
    /// `ec384.key` (P-384).
    Ec384,
    /// `ed25519.key` (kid `ed-1` in `jwks.json`).
    Ed25519,
    /// `hmac.secret`, the shared HMAC secret.
    Hmac,
    /// Any bytes as an HMAC secret (see [`Key::secret_file`]).
    Secret(Vec<u8>),
}

impl Key {
    /// The bytes of a file in `testdata/keys` as an HMAC secret: `Key::secret_file("rsa.pub.pem")`
    /// is the RS256→HS256 confusion attack's key.
    pub fn secret_file(name: &str) -> Self {
        Self::Secret(read_key(name))
    }

    /// The algorithm [`Token::sign`] uses with this key.
    pub fn algorithm(&self) -> Algorithm {
        match self {
            Self::Rsa | Self::Rsa2 => Algorithm::RS256,
            Self::Ec256 => Algorithm::ES256,
            Self::Ec384 => Algorithm::ES384,
            Self::Ed25519 => Algorithm::EdDSA,
            Self::Hmac | Self::Secret(_) => Algorithm::HS256,
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        static RSA: OnceLock<EncodingKey> = OnceLock::new();
        static RSA2: OnceLock<EncodingKey> = OnceLock::new();
        static EC256: OnceLock<EncodingKey> = OnceLock::new();
        static EC384: OnceLock<EncodingKey> = OnceLock::new();
        static ED25519: OnceLock<EncodingKey> = OnceLock::new();
        static HMAC: OnceLock<EncodingKey> = OnceLock::new();
        let (cell, file) = match self {
            Self::Rsa => (&RSA, "rsa.key"),
            Self::Rsa2 => (&RSA2, "rsa2.key"),
            Self::Ec256 => (&EC256, "ec256.key"),
            Self::Ec384 => (&EC384, "ec384.key"),
            Self::Ed25519 => (&ED25519, "ed25519.key"),
            Self::Hmac => (&HMAC, "hmac.secret"),
            Self::Secret(bytes) => return EncodingKey::from_secret(bytes),
        };
        cell.get_or_init(|| {
            let bytes = read_key(file);
            let key = match self {
                Self::Rsa | Self::Rsa2 => EncodingKey::from_rsa_pem(&bytes),
                Self::Ec256 | Self::Ec384 => EncodingKey::from_ec_pem(&bytes),
                Self::Ed25519 => EncodingKey::from_ed_pem(&bytes),
                Self::Hmac | Self::Secret(_) => Ok(EncodingKey::from_secret(&bytes)),
            };
            key.unwrap_or_else(|e| panic!("{file}: {e}"))
        })
        .clone()
    }
}

/// A JWT under construction. Nothing is set by default: a token has exactly the claims the
/// test gives it. Relative times (`exp_in`, `nbf_in`, `expired`) count from the token's
/// clock — the system clock for [`Token::new`], a fixed instant for [`Token::at`], to match
/// the time a test hands the engine.
///
/// ```
/// use warden_testkit::{Key, Token};
/// let viewer = Token::new().sub("vic").roles(["viewer"]).exp_in(600).kid("rsa-1").sign_rs256();
/// let forged = Token::new().sub("vic").exp_in(600).kid("rsa-1").sign(Key::Rsa2);
/// let unsigned = Token::new().sub("vic").header("alg", "none").unsigned();
/// # let _ = (viewer, forged, unsigned);
/// ```
#[derive(Debug, Clone)]
pub struct Token {
    header: Map<String, Value>,
    claims: Map<String, Value>,
    clock: u64,
}

impl Default for Token {
    fn default() -> Self {
        Self::new()
    }
}

impl Token {
    /// A token with no claims whose relative times count from now.
    pub fn new() -> Self {
        Self::at(crate::now())
    }

    /// A token with no claims whose relative times count from `clock` (seconds since the
    /// epoch).
    pub fn at(clock: u64) -> Self {
        let mut header = Map::new();
        header.insert("typ".to_owned(), Value::from("JWT"));
        Self {
            header,
            claims: Map::new(),
            clock,
        }
    }

    /// Set a claim to any JSON value (a string, a number, an array, an object).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Remove a claim.
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// `sub`.
    #[allow(
        clippy::should_implement_trait,
        reason = "`sub` is the claim's name; a token is not subtracted"
    )]
    pub fn sub(self, subject: &str) -> Self {
        self.claim("sub", subject)
    }

    /// `iss`.
    pub fn iss(self, issuer: &str) -> Self {
        self.claim("iss", issuer)
    }

    /// `aud`: a string, or an array for several audiences.
    pub fn aud(self, audience: impl Into<Value>) -> Self {
        self.claim("aud", audience)
    }

    /// `roles`, as an array of strings.
    pub fn roles<I, S>(self, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let roles: Vec<Value> = roles.into_iter().map(|r| Value::from(r.as_ref())).collect();
        self.claim("roles", roles)
    }

    /// `scope`, as written (space-separated scopes).
    pub fn scope(self, scope: &str) -> Self {
        self.claim("scope", scope)
    }

    /// `scope` from a list, joined with spaces (an empty list gives `""`).
    pub fn scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined: Vec<String> = scopes.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.claim("scope", joined.join(" "))
    }

    /// `jti`.
    pub fn jti(self, id: &str) -> Self {
        self.claim("jti", id)
    }

    /// `iat`, in seconds since the epoch.
    pub fn iat(self, issued_at: u64) -> Self {
        self.claim("iat", issued_at)
    }

    /// `exp` at `seconds` from the token's clock (negative: in the past).
    pub fn exp_in(self, seconds: i64) -> Self {
        let exp = self.clock.saturating_add_signed(seconds);
        self.claim("exp", exp)
    }

    /// `exp` an hour before the token's clock: expired beyond any leeway.
    pub fn expired(self) -> Self {
        self.exp_in(-3600)
    }

    /// `nbf` at `seconds` from the token's clock.
    pub fn nbf_in(self, seconds: i64) -> Self {
        let nbf = self.clock.saturating_add_signed(seconds);
        self.claim("nbf", nbf)
    }

    /// The header's `kid`.
    pub fn kid(self, kid: &str) -> Self {
        self.header("kid", kid)
    }

    /// Set a header parameter (`jku`, `x5u`, `crit`, ...). `alg` is overwritten by the
    /// signing algorithm when the token is signed; it stays as given in [`Token::unsigned`].
    pub fn header(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.header.insert(name.to_owned(), value.into());
        self
    }

    /// Remove a header parameter (`typ` is there by default).
    pub fn without_header(mut self, name: &str) -> Self {
        self.header.remove(name);
        self
    }

    /// The token signed with `key`, under the key's own algorithm ([`Key::algorithm`]).
    pub fn sign(&self, key: Key) -> String {
        let alg = key.algorithm();
        self.sign_with(alg, key)
    }

    /// The token signed with `key` under `alg` (PS256 with an RSA key, HS384 with the HMAC
    /// secret, ...).
    pub fn sign_with(&self, alg: Algorithm, key: Key) -> String {
        let mut header = self.header.clone();
        let name = serde_json::to_value(alg).unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        header.insert("alg".to_owned(), name);
        let input = format!(
            "{}.{}",
            b64url_json(&Value::Object(header)),
            self.encoded_claims()
        );
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key.encoding_key(), alg)
            .unwrap_or_else(|e| panic!("signing with {key:?} under {alg:?}: {e}"));
        format!("{input}.{signature}")
    }

    /// Signed with `rsa.key`, RS256.
    pub fn sign_rs256(&self) -> String {
        self.sign(Key::Rsa)
    }

    /// Signed with `rsa.key`, PS256.
    pub fn sign_ps256(&self) -> String {
        self.sign_with(Algorithm::PS256, Key::Rsa)
    }

    /// Signed with `ec256.key`, ES256.
    pub fn sign_es256(&self) -> String {
        self.sign(Key::Ec256)
    }

    /// Signed with `ec384.key`, ES384.
    pub fn sign_es384(&self) -> String {
        self.sign(Key::Ec384)
    }

    /// Signed with `ed25519.key`, EdDSA.
    pub fn sign_eddsa(&self) -> String {
        self.sign(Key::Ed25519)
    }

    /// Signed with `hmac.secret`, HS256.
    pub fn sign_hs256(&self) -> String {
        self.sign(Key::Hmac)
    }

    /// `header.claims.` with an empty signature and the header exactly as set: no `alg`
    /// unless [`Token::header`] gave one. For `alg: none` tokens, append a signature of
    /// your own if the case needs one.
    pub fn unsigned(&self) -> String {
        format!(
            "{}.{}.",
            b64url_json(&Value::Object(self.header.clone())),
            self.encoded_claims()
        )
    }

    /// The claims as the token's second part (base64url JSON): for a tampered payload
    /// spliced into another token.
    pub fn encoded_claims(&self) -> String {
        b64url_json(&Value::Object(self.claims.clone()))
    }
}

/// A JSON value as one part of a JWT: base64url without padding.
pub fn b64url_json(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}
