//! The `oidc` identity source: browser sign-in with OpenID Connect.
//!
//! The source holds what the gateway needs for the authorization code flow (client, scopes,
//! redirect URI, the discovered endpoints) and verifies ID tokens and back-channel logout
//! tokens through the same JWT code as every other token (pinned algorithms, the provider's
//! JWKS, `iss` and `aud`), plus what OpenID Connect adds: `nonce`, `at_hash`, `sid`, the
//! logout event. The core does no I/O: the gateway fetches the discovery document and the
//! key set and installs them here (`Config::set_discovery`, `Config::set_fetched_keys`).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};
use subtle::ConstantTimeEq;

use super::jwt::JwtSource;
use crate::decision::TokenProblem;
use crate::identity::{CredentialKind, Identity};
use crate::session::{SessionRecord, SessionSettings};

/// The event a back-channel logout token carries (OpenID Connect Back-Channel Logout §2.4).
const LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (the default).
    SecretBasic,
    /// The id and secret in the form body.
    SecretPost,
    /// A JWT signed with the client's private key (RFC 7523 §2.2, OpenID Connect Core §9):
    /// no shared secret, and the provider holds only the public key.
    PrivateKeyJwt,
}

/// The `aud` of a client assertion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AssertionAudience {
    /// The provider's issuer identifier: what current guidance asks for, since a token
    /// endpoint URL taken from a document can be made to point at another server.
    Issuer,
    /// The token endpoint's URL (OpenID Connect Core §9 as first written; some providers
    /// accept only this).
    TokenEndpoint,
}

/// The private key of `private_key_jwt`: checked at load by signing once.
pub(crate) struct ClientKey {
    pub(crate) key: jsonwebtoken::EncodingKey,
    pub(crate) kid: Option<String>,
    pub(crate) algorithm: Algorithm,
    pub(crate) audience: AssertionAudience,
}

/// How long a client assertion is good for: one token request.
pub const ASSERTION_LIFETIME: u64 = 60;

/// Why no client assertion could be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AssertionError {
    /// The source does not authenticate with `private_key_jwt`.
    #[error("the source has no client key")]
    NoKey,
    /// Signing failed (the key was checked at load, so this is not expected).
    #[error("cannot sign the client assertion: {0}")]
    Signing(#[from] jsonwebtoken::errors::Error),
}

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Discovery {
    /// The issuer (must be the configured one).
    pub issuer: String,
    /// Where the browser is sent to sign in.
    pub authorization_endpoint: String,
    /// Where codes and refresh tokens are exchanged.
    pub token_endpoint: String,
    /// The provider's key set.
    pub jwks_uri: String,
    /// RP-initiated logout, when the provider supports it.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
    /// The PKCE methods the provider supports, when it says.
    #[serde(default)]
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// Why a discovery document was not installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Not JSON with the required members.
    #[error("not an OpenID provider configuration: {0}")]
    Json(#[from] serde_json::Error),
    /// The document names another issuer (OpenID Connect Discovery §4.3).
    #[error("the document's issuer `{found}` is not the configured `{expected}`")]
    WrongIssuer {
        /// The configured issuer.
        expected: String,
        /// The document's.
        found: String,
    },
    /// An endpoint is not an http(s) URL.
    #[error("`{0}` is not an http(s) URL")]
    BadEndpoint(&'static str),
    /// The provider does not support PKCE with S256.
    #[error("the provider does not support PKCE with S256")]
    NoPkce,
}

/// A configured OpenID Connect source.
pub struct OidcSource {
    /// ID tokens are verified as JWTs of this source: the issuer, the client id as audience,
    /// the pinned algorithms, the provider's fetched keys, the claims to roles and attributes.
    pub(crate) jwt: JwtSource,
    pub(crate) issuer: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: String,
    pub(crate) client_auth: ClientAuth,
    pub(crate) client_key: Option<Box<ClientKey>>,
    pub(crate) scopes: Vec<String>,
    pub(crate) redirect_uri: String,
    pub(crate) discovery_url: String,
    pub(crate) post_logout_redirect_uri: Option<String>,
    pub(crate) sessions: Arc<SessionSettings>,
    pub(crate) discovered: ArcSwapOption<Discovery>,
}

impl std::fmt::Debug for OidcSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client secret, nor the client key.
        f.debug_struct("OidcSource")
            .field("name", &self.jwt.name)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("client_auth", &self.client_auth)
            .finish_non_exhaustive()
    }
}

/// What a verified ID token says.
#[derive(Debug, Clone)]
pub struct IdToken {
    /// The identity (subject, roles, scopes, attributes).
    pub identity: Identity,
    /// Its expiry.
    pub expires: u64,
    /// The provider's session id, if any.
    pub sid: Option<String>,
}

/// What a verified back-channel logout token names: a provider session, a subject, or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutToken {
    /// The subject.
    pub subject: Option<String>,
    /// The provider's session id.
    pub sid: Option<String>,
}

impl OidcSource {
    /// The source's name.
    #[must_use]
    pub fn name(&self) -> &Arc<str> {
        &self.jwt.name
    }

    /// The configured issuer.
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id.
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client secret (for the token endpoint only; never log it).
    #[must_use]
    pub fn client_secret(&self) -> &str {
        &self.client_secret
    }

    /// How the client authenticates.
    #[must_use]
    pub fn client_auth(&self) -> ClientAuth {
        self.client_auth
    }

    /// A client assertion for a request to `token_endpoint` at `now` (RFC 7523 §3):
    /// `iss` and `sub` the client id, `aud` the issuer (or the endpoint, as configured), a
    /// fresh `jti`, valid for [`ASSERTION_LIFETIME`] seconds.
    ///
    /// # Errors
    /// When the source has no client key, or signing fails.
    pub fn client_assertion(
        &self,
        token_endpoint: &str,
        now: u64,
    ) -> Result<String, AssertionError> {
        let key = self.client_key.as_ref().ok_or(AssertionError::NoKey)?;
        let audience = match key.audience {
            AssertionAudience::Issuer => self.issuer.as_str(),
            AssertionAudience::TokenEndpoint => token_endpoint,
        };
        let mut header = jsonwebtoken::Header::new(key.algorithm);
        header.kid.clone_from(&key.kid);
        let claims = serde_json::json!({
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": audience,
            "jti": uuid::Uuid::new_v4().to_string(),
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
        });
        Ok(jsonwebtoken::encode(&header, &claims, &key.key)?)
    }

    /// The scopes asked for (`openid` among them).
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The redirect URI registered at the provider (its path is warden's callback).
    #[must_use]
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Where the discovery document is.
    #[must_use]
    pub fn discovery_url(&self) -> &str {
        &self.discovery_url
    }

    /// Where the provider sends the browser after an RP-initiated logout.
    #[must_use]
    pub fn post_logout_redirect_uri(&self) -> Option<&str> {
        self.post_logout_redirect_uri.as_deref()
    }

    /// The session settings.
    #[must_use]
    pub fn sessions(&self) -> &SessionSettings {
        &self.sessions
    }

    /// The discovered endpoints, once fetched.
    #[must_use]
    pub fn discovery(&self) -> Option<Arc<Discovery>> {
        self.discovered.load_full()
    }

    /// Install a discovery document.
    ///
    /// # Errors
    /// When it is not one, names another issuer, or an endpoint is not http(s).
    pub fn set_discovery(&self, json: &[u8]) -> Result<(), DiscoveryError> {
        let doc: Discovery = serde_json::from_slice(json)?;
        if doc.issuer != self.issuer {
            return Err(DiscoveryError::WrongIssuer {
                expected: self.issuer.clone(),
                found: doc.issuer,
            });
        }
        let http = |u: &str| u.starts_with("https://") || u.starts_with("http://");
        for (name, url) in [
            ("authorization_endpoint", Some(&doc.authorization_endpoint)),
            ("token_endpoint", Some(&doc.token_endpoint)),
            ("jwks_uri", Some(&doc.jwks_uri)),
            ("end_session_endpoint", doc.end_session_endpoint.as_ref()),
        ] {
            if let Some(url) = url
                && !http(url)
            {
                return Err(DiscoveryError::BadEndpoint(name));
            }
        }
        if let Some(methods) = &doc.code_challenge_methods_supported
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(DiscoveryError::NoPkce);
        }
        self.discovered.store(Some(Arc::new(doc)));
        Ok(())
    }

    /// Verify an ID token at `now`: signature, issuer, audience (and `azp` when there are
    /// several), time, `nonce` (when one is expected: on login, not on refresh) and `at_hash`
    /// (when the token has one and an access token came with it).
    ///
    /// # Errors
    /// The [`TokenProblem`] of the first check that fails.
    pub fn verify_id_token(
        &self,
        token: &str,
        now: u64,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<IdToken, TokenProblem> {
        if token.len() > self.jwt.max_token_bytes {
            return Err(TokenProblem::TooLarge);
        }
        let (claims, alg) = self.jwt.verified_token(token)?;
        if let Some(expected) = nonce {
            let found = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
            if !bool::from(found.as_bytes().ct_eq(expected.as_bytes())) {
                return Err(TokenProblem::WrongNonce);
            }
        }
        if let Some(Value::Array(audiences)) = claims.get("aud")
            && audiences.len() > 1
            && claims.get("azp").and_then(Value::as_str) != Some(self.client_id.as_str())
        {
            return Err(TokenProblem::WrongAudience);
        }
        if let (Some(at_hash), Some(access)) = (claims.get("at_hash"), access_token) {
            let expected = token_hash(alg, access).ok_or(TokenProblem::AlgorithmNotAllowed)?;
            if at_hash.as_str() != Some(expected.as_str()) {
                return Err(TokenProblem::WrongAccessTokenHash);
            }
        }
        let (identity, _) = self.jwt.identity(&claims, now, CredentialKind::Session)?;
        let expires = identity.expires_at.ok_or(TokenProblem::MissingClaim)?;
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        Ok(IdToken {
            identity,
            expires,
            sid,
        })
    }

    /// Verify a back-channel logout token (Back-Channel Logout §2.6): signature, issuer,
    /// audience, `iat`, the logout event, no `nonce`, and a `sub` or a `sid`.
    ///
    /// # Errors
    /// The [`TokenProblem`] of the first check that fails.
    pub fn verify_logout_token(&self, token: &str, now: u64) -> Result<LogoutToken, TokenProblem> {
        let claims = self.jwt.verified_claims(token)?;
        let leeway = self.jwt.leeway;
        let number = |name: &str| claims.get(name).and_then(Value::as_u64);
        let Some(iat) = number("iat") else {
            return Err(TokenProblem::MissingClaim);
        };
        if iat > now.saturating_add(leeway) {
            return Err(TokenProblem::NotYetValid);
        }
        if let Some(exp) = number("exp")
            && now >= exp.saturating_add(leeway)
        {
            return Err(TokenProblem::Expired);
        }
        let event = claims
            .get("events")
            .and_then(Value::as_object)
            .is_some_and(|events| events.get(LOGOUT_EVENT).is_some_and(Value::is_object));
        if !event || claims.contains_key("nonce") {
            return Err(TokenProblem::MissingClaim);
        }
        let text = |name: &str| {
            claims
                .get(name)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let logout = LogoutToken {
            subject: text("sub"),
            sid: text("sid"),
        };
        if logout.subject.is_none() && logout.sid.is_none() {
            return Err(TokenProblem::MissingClaim);
        }
        Ok(logout)
    }

    /// The session record of a verified login (or refresh).
    #[must_use]
    pub fn record(
        &self,
        token: &IdToken,
        id_token: &str,
        refresh_token: Option<String>,
        access_expires: Option<u64>,
    ) -> SessionRecord {
        let identity = &token.identity;
        SessionRecord {
            subject: identity.subject.clone(),
            roles: identity.roles.clone(),
            scopes: identity.scopes.clone(),
            attributes: identity.attributes.clone(),
            // The session's tokens are as fresh as the sooner of the two to expire.
            expires: access_expires.map_or(token.expires, |a| a.min(token.expires)),
            refresh_token,
            id_token: Some(id_token.to_owned()),
            sid: token.sid.clone(),
        }
    }
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
#[must_use]
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// `at_hash`: the base64url of the left half of the hash of the access token, with the
/// hash of the ID token's algorithm (OpenID Connect Core §3.1.3.6).
fn token_hash(alg: Algorithm, access_token: &str) -> Option<String> {
    let digest: Vec<u8> = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::HS256 => {
            Sha256::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 | Algorithm::HS384 => {
            Sha384::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 | Algorithm::EdDSA => {
            Sha512::digest(access_token.as_bytes()).to_vec()
        }
    };
    let half = digest.get(..digest.len() / 2)?;
    Some(URL_SAFE_NO_PAD.encode(half))
}

/// Whether `target` is a same-origin relative target safe to redirect to after a login:
/// an absolute path (`/...`), not a network path (`//host`, `/\host`), no scheme, no
/// control characters or backslashes anywhere. Everything else is refused, never repaired.
#[must_use]
pub fn is_safe_return(target: &str) -> bool {
    let bytes = target.as_bytes();
    bytes.first() == Some(&b'/')
        && !matches!(bytes.get(1), Some(b'/' | b'\\'))
        && target.len() <= 2048
        && !bytes
            .iter()
            .any(|b| b.is_ascii_control() || *b == b'\\' || *b == b' ' || *b >= 0x80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn at_hash_is_the_left_half_of_the_hash() {
        // OpenID Connect Core, appendix A.3 (RS256).
        assert_eq!(
            token_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            )
            .unwrap(),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn only_same_origin_relative_targets_are_safe() {
        for ok in ["/", "/app", "/app?x=1&y=%2F", "/a/b#c"] {
            assert!(is_safe_return(ok), "{ok}");
        }
        for bad in [
            "",
            "app",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "javascript:alert(1)",
            "/a\\b",
            "/a\r\nLocation: x",
            "/\t/evil.example",
        ] {
            assert!(!is_safe_return(bad), "{bad:?}");
        }
    }
}
