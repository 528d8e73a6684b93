//! HTTP Basic (RFC 7617) against argon2 or bcrypt hashes.

use std::collections::HashMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordVerifier};

use crate::identity::{CredentialKind, Identity};

/// A stored password hash, parsed once at configuration time.
#[derive(Debug, Clone)]
pub(crate) enum PasswordHashKind {
    /// A PHC string (`$argon2id$…`).
    Argon2(String),
    /// A bcrypt string (`$2b$…`).
    Bcrypt(String),
}

impl PasswordHashKind {
    /// Classify and check a configured hash.
    pub fn parse(hash: &str) -> Result<Self, &'static str> {
        if hash.starts_with("$argon2") {
            let parsed = PasswordHash::new(hash).map_err(|_| "not a valid argon2 PHC string")?;
            let known = ["argon2id", "argon2i", "argon2d"].contains(&parsed.algorithm.as_str());
            if !known || parsed.salt.is_none() || parsed.hash.is_none() {
                return Err("not a complete argon2 PHC string (algorithm, salt and hash)");
            }
            Ok(Self::Argon2(hash.to_owned()))
        } else if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
            // `$2b$` + two-digit cost + `$` + 53 characters of bcrypt's base64 alphabet.
            let cost = hash.get(4..6).and_then(|c| c.parse::<u32>().ok());
            let rest = hash.get(7..).unwrap_or("");
            let alphabet = |b: u8| b.is_ascii_alphanumeric() || b == b'.' || b == b'/';
            if hash.len() != 60
                || !cost.is_some_and(|c| (4..=31).contains(&c))
                || hash.as_bytes().get(6) != Some(&b'$')
                || !rest.bytes().all(alphabet)
            {
                return Err("not a valid bcrypt hash");
            }
            Ok(Self::Bcrypt(hash.to_owned()))
        } else {
            Err("expected an argon2 (`$argon2id$…`) or bcrypt (`$2b$…`) hash")
        }
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Self::Argon2(phc) => PasswordHash::new(phc).is_ok_and(|h| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            }),
            Self::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct BasicUser {
    pub hash: PasswordHashKind,
    pub roles: Vec<String>,
}

/// A configured Basic source.
#[derive(Debug)]
pub(crate) struct BasicSource {
    pub name: Arc<str>,
    pub users: HashMap<String, BasicUser>,
    /// Verified when the user is unknown, so that unknown and known users take as long.
    pub decoy: PasswordHashKind,
}

impl BasicSource {
    /// The identity for a user name and password, or `None` when they do not match.
    pub fn verify(&self, user: &str, password: &str) -> Option<Identity> {
        let Some(entry) = self.users.get(user) else {
            let _ = self.decoy.verify(password);
            return None;
        };
        entry.hash.verify(password).then(|| Identity {
            subject: user.to_owned(),
            source: Arc::clone(&self.name),
            kind: CredentialKind::Basic,
            roles: entry.roles.clone(),
            scopes: Vec::new(),
            token_id: None,
            expires_at: None,
            issued_at: None,
            attributes: std::collections::BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use argon2::PasswordHasher;
    use argon2::password_hash::SaltString;

    use super::*;

    fn source(hash: &str) -> BasicSource {
        let hash = PasswordHashKind::parse(hash).unwrap();
        let users = HashMap::from([(
            "ops".to_owned(),
            BasicUser {
                hash: hash.clone(),
                roles: vec!["admin".into()],
            },
        )]);
        BasicSource {
            name: Arc::from("ops"),
            users,
            decoy: hash,
        }
    }

    #[test]
    fn bcrypt_hashes_verify() {
        let s = source(&bcrypt::hash("hunter22", 4).unwrap());
        assert_eq!(
            s.verify("ops", "hunter22").unwrap().roles,
            vec!["admin".to_owned()]
        );
        assert!(s.verify("ops", "hunter23").is_none());
        assert!(s.verify("eve", "hunter22").is_none());
    }

    #[test]
    fn argon2_hashes_verify() {
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let phc = argon2::Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let s = source(&phc);
        assert_eq!(s.verify("ops", "correct horse").unwrap().subject, "ops");
        assert!(s.verify("ops", "correct horse ").is_none());
    }

    #[test]
    fn unusable_hashes_are_refused_at_load() {
        assert!(PasswordHashKind::parse("plaintext").is_err());
        assert!(PasswordHashKind::parse("$2b$04$short").is_err());
        assert!(PasswordHashKind::parse("$argon2id$garbage").is_err());
    }
}
