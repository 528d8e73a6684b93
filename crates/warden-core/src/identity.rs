//! The verified identity of a caller.

use std::collections::BTreeMap;
use std::sync::Arc;

/// How the caller proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialKind {
    /// A JWT in `Authorization: Bearer`.
    Bearer,
    /// A JWT in a session cookie.
    Cookie,
    /// An API key.
    ApiKey,
    /// HTTP Basic.
    Basic,
    /// A browser session (the sealed session cookie of an `oidc` source).
    Session,
    /// The client certificate of the TLS connection (an `mtls` source).
    ClientCertificate,
}

impl CredentialKind {
    /// The stable name, as logged and forwarded.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bearer => "bearer",
            Self::Cookie => "cookie",
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
            Self::Session => "session",
            Self::ClientCertificate => "client_certificate",
        }
    }
}

/// Who the caller is, as verified by one identity source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The subject (`sub`, the API key's subject, or the Basic user name).
    pub subject: String,
    /// The name of the source that verified it.
    pub source: Arc<str>,
    /// How the credential was presented.
    pub kind: CredentialKind,
    /// Roles, from the configured claim or the key's or user's entry.
    pub roles: Vec<String>,
    /// OAuth scopes.
    pub scopes: Vec<String>,
    /// The token id (`jti`), for revocation.
    pub token_id: Option<String>,
    /// The expiry as seconds since the epoch, for tokens.
    pub expires_at: Option<u64>,
    /// When the token was issued (`iat`), for revocation by time.
    pub issued_at: Option<u64>,
    /// Attributes for authorization policies (claims the source is configured to pass on,
    /// or an API key's configured attributes).
    pub attributes: BTreeMap<String, serde_json::Value>,
}
