//! API keys, stored as SHA-256 hashes: the configuration never holds a usable key.

use std::collections::HashMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::identity::{CredentialKind, Identity};

/// One configured key's owner.
#[derive(Debug, Clone)]
pub(crate) struct ApiKeyEntry {
    pub id: String,
    pub subject: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub attributes: std::collections::BTreeMap<String, serde_json::Value>,
}

/// A configured API-key source.
#[derive(Debug)]
pub(crate) struct ApiKeySource {
    pub name: Arc<str>,
    pub header: http::HeaderName,
    /// Keyed by the SHA-256 of the key. Looking up a hash leaks nothing useful about the key.
    pub keys: HashMap<[u8; 32], ApiKeyEntry>,
}

impl ApiKeySource {
    /// The identity for a presented key, or `None` when no entry has its hash.
    pub fn verify(&self, presented: &str) -> Option<Identity> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let entry = self.keys.get(&digest)?;
        Some(Identity {
            subject: entry.subject.clone(),
            source: Arc::clone(&self.name),
            kind: CredentialKind::ApiKey,
            roles: entry.roles.clone(),
            scopes: entry.scopes.clone(),
            token_id: Some(entry.id.clone()),
            expires_at: None,
            issued_at: None,
            attributes: entry.attributes.clone(),
        })
    }
}

/// The hex SHA-256 of a key, as written in the configuration.
#[must_use]
pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}
