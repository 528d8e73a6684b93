//! Browser sessions: the sealed cookie, the server-side record, and what the engine asks
//! its driver about them.
//!
//! A session cookie holds only the session's id, its source and its absolute expiry,
//! sealed with AES-256-GCM (the RustCrypto `aes-gcm` crate) under the first of the
//! configured keys; every configured key opens (rotation: add the new key first, drop the
//! old one after the longest session). What the session knows — subject, roles, attributes,
//! the tokens — is a record in the state backend (memory or Redis), sealed as well and bound
//! to its id, so logging out or a back-channel logout on one instance ends it on all, and
//! the backend never holds a token in the clear.
//!
//! The engine never touches the backend: it opens the cookie and asks
//! [`crate::Need::Session`]; when the tokens are about to expire it asks
//! [`crate::Need::RefreshSession`]. The driver answers with a [`SessionAnswer`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::identity::{CredentialKind, Identity};

/// The format version in front of every sealed value.
const VERSION: &str = "v1.";
/// Bytes of the key id in front of the nonce.
const KEY_ID_LEN: usize = 4;
/// Bytes of an AES-GCM nonce.
const NONCE_LEN: usize = 12;
/// The largest sealed value opened (a cookie or a record); longer input is refused unread.
const MAX_SEALED: usize = 32 * 1024;
/// The shortest secret accepted for a session key.
pub const MIN_SECRET: usize = 32;

/// What a sealed value is for; each purpose is authenticated data of its own, so a value
/// sealed for one can never be opened as another (a login cookie as a session cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Purpose {
    /// The session cookie.
    Cookie,
    /// The login state cookie between the redirect to the provider and the callback.
    Login,
    /// The server-side record (bound to its session id as well).
    Record,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Self::Cookie => b"warden session cookie v1",
            Self::Login => b"warden login state v1",
            Self::Record => b"warden session record v1",
        }
    }
}

/// The session keys: the first seals, every one opens.
#[derive(Clone)]
pub struct SessionKeys {
    keys: Vec<([u8; KEY_ID_LEN], Aes256Gcm)>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("SessionKeys")
            .field("count", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// Why a sealed value did not open. Deliberately one kind: a tampered value, a value sealed
/// by a key no longer configured and garbage are the same to the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sealed value does not open with any configured key")]
pub struct Unsealable;

impl SessionKeys {
    /// Keys from secrets of at least [`MIN_SECRET`] bytes each (high-entropy random: the key
    /// is the SHA-256 of the secret), newest first. `None` when there is none.
    #[must_use]
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Option<Self> {
        let keys: Vec<_> = secrets
            .iter()
            .map(|secret| {
                let key: [u8; 32] = Sha256::digest(secret.as_ref()).into();
                let id = Sha256::new()
                    .chain_update(b"warden session key id")
                    .chain_update(key)
                    .finalize();
                let mut kid = [0u8; KEY_ID_LEN];
                kid.copy_from_slice(id.get(..KEY_ID_LEN).unwrap_or(&[0; KEY_ID_LEN]));
                (kid, Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key)))
            })
            .collect();
        (!keys.is_empty()).then_some(Self { keys })
    }

    /// Seal `plaintext` for `purpose`, bound to `context` (a session id, or empty), with the
    /// newest key: `v1.` and the base64url of key id, nonce and ciphertext.
    #[must_use]
    pub fn seal(&self, purpose: Purpose, context: &[u8], plaintext: &[u8]) -> String {
        let Some((kid, cipher)) = self.keys.first() else {
            return String::new();
        };
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let aad = aad(purpose, context);
        // Encryption with a valid key and a fresh nonce fails only for a plaintext beyond
        // AES-GCM's limit (64 GiB), which nothing here comes near: an empty value then
        // never opens, so it fails closed.
        let Ok(sealed) = cipher.encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        ) else {
            return String::new();
        };
        let mut out = Vec::with_capacity(KEY_ID_LEN + NONCE_LEN + sealed.len());
        out.extend_from_slice(kid);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Open a value sealed by [`SessionKeys::seal`] with any configured key.
    ///
    /// # Errors
    /// [`Unsealable`] when it is malformed, tampered with, of another purpose or context,
    /// or sealed by a key that is not configured.
    pub fn open(
        &self,
        purpose: Purpose,
        context: &[u8],
        sealed: &str,
    ) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() > MAX_SEALED {
            return Err(Unsealable);
        }
        let body = sealed.strip_prefix(VERSION).ok_or(Unsealable)?;
        let bytes = URL_SAFE_NO_PAD.decode(body).map_err(|_| Unsealable)?;
        if bytes.len() < KEY_ID_LEN + NONCE_LEN + 16 {
            return Err(Unsealable);
        }
        let (kid, rest) = bytes.split_at(KEY_ID_LEN);
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let aad = aad(purpose, context);
        self.keys
            .iter()
            .filter(|(id, _)| id.as_slice() == kid)
            .find_map(|(_, cipher)| {
                cipher
                    .decrypt(
                        Nonce::from_slice(nonce),
                        Payload {
                            msg: ciphertext,
                            aad: &aad,
                        },
                    )
                    .ok()
            })
            .ok_or(Unsealable)
    }

    /// Seal a serializable value (as JSON).
    #[must_use]
    pub fn seal_json<T: Serialize>(&self, purpose: Purpose, context: &[u8], value: &T) -> String {
        match serde_json::to_vec(value) {
            Ok(json) => self.seal(purpose, context, &json),
            Err(_) => String::new(),
        }
    }

    /// Open a value sealed by [`SessionKeys::seal_json`].
    ///
    /// # Errors
    /// [`Unsealable`] as for [`SessionKeys::open`], or when the JSON is not a `T`.
    pub fn open_json<T: for<'de> Deserialize<'de>>(
        &self,
        purpose: Purpose,
        context: &[u8],
        sealed: &str,
    ) -> Result<T, Unsealable> {
        let json = self.open(purpose, context, sealed)?;
        serde_json::from_slice(&json).map_err(|_| Unsealable)
    }
}

fn aad(purpose: Purpose, context: &[u8]) -> Vec<u8> {
    let label = purpose.label();
    let mut aad = Vec::with_capacity(label.len() + 1 + context.len());
    aad.extend_from_slice(label);
    aad.push(0);
    aad.extend_from_slice(context);
    aad
}

/// `n` random bytes from the operating system, base64url: session ids, `state`, `nonce`,
/// PKCE verifiers.
#[must_use]
pub fn random_token(n: usize) -> String {
    use aes_gcm::aead::rand_core::RngCore;
    let mut bytes = vec![0u8; n];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The `[sessions]` settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// The keys.
    pub keys: SessionKeys,
    /// The cookie's name as sent (with the `__Host-` prefix when secure).
    pub cookie: Arc<str>,
    /// The login state cookie's name as sent.
    pub login_cookie: Arc<str>,
    /// Both names: warden's own cookies, taken out of every request before the upstream.
    pub own_cookies: Arc<[Arc<str>]>,
    /// Whether cookies are `Secure` (off only for plain-HTTP loopback tests).
    pub secure: bool,
    /// A session unused for this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after login, used or not.
    pub absolute_timeout: Duration,
    /// Tokens are refreshed this long before they expire.
    pub refresh_before: Duration,
}

impl SessionSettings {
    /// The attributes every cookie of warden's carries: `Path=/; HttpOnly; SameSite=Lax`,
    /// and `Secure` when configured.
    #[must_use]
    pub fn cookie_attributes(&self) -> &'static str {
        if self.secure {
            "Path=/; HttpOnly; Secure; SameSite=Lax"
        } else {
            "Path=/; HttpOnly; SameSite=Lax"
        }
    }

    /// A `Set-Cookie` value for the session cookie, living `max_age` seconds.
    #[must_use]
    pub fn session_cookie(&self, value: &str, max_age: u64) -> String {
        format!(
            "{}={value}; Max-Age={max_age}; {}",
            self.cookie,
            self.cookie_attributes()
        )
    }

    /// The sealed session cookie's value.
    #[must_use]
    pub fn seal_cookie(&self, cookie: &SessionCookie) -> String {
        self.keys
            .seal_json(Purpose::Cookie, self.cookie.as_bytes(), cookie)
    }

    /// The sealed login state cookie's value.
    #[must_use]
    pub fn seal_login(&self, login: &LoginState) -> String {
        self.keys
            .seal_json(Purpose::Login, self.login_cookie.as_bytes(), login)
    }

    /// Open a login state cookie.
    ///
    /// # Errors
    /// [`Unsealable`] when it does not open.
    pub fn open_login(&self, sealed: &str) -> Result<LoginState, Unsealable> {
        self.keys
            .open_json(Purpose::Login, self.login_cookie.as_bytes(), sealed)
    }

    /// Open a session cookie.
    ///
    /// # Errors
    /// [`Unsealable`] when it does not open.
    pub fn open_cookie(&self, sealed: &str) -> Result<SessionCookie, Unsealable> {
        self.keys
            .open_json(Purpose::Cookie, self.cookie.as_bytes(), sealed)
    }

    /// A session record sealed for storage, bound to its session id.
    #[must_use]
    pub fn seal_record(&self, id: &str, record: &SessionRecord) -> String {
        self.keys.seal_json(Purpose::Record, id.as_bytes(), record)
    }

    /// Open a stored session record of session `id`.
    ///
    /// # Errors
    /// [`Unsealable`] when it does not open, or belongs to another session.
    pub fn open_record(&self, id: &str, sealed: &str) -> Result<SessionRecord, Unsealable> {
        self.keys.open_json(Purpose::Record, id.as_bytes(), sealed)
    }

    /// A `Set-Cookie` value that removes the cookie named `name`.
    #[must_use]
    pub fn clear_cookie(&self, name: &str) -> String {
        format!("{name}=; Max-Age=0; {}", self.cookie_attributes())
    }
}

/// What the session cookie holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCookie {
    /// The session's id (random, 256 bits): the key of its record.
    pub id: String,
    /// The identity source that signed the user in.
    pub source: String,
    /// When the session began (seconds since the epoch).
    pub created: u64,
    /// When it ends whatever happens (seconds since the epoch).
    pub ends: u64,
}

/// What the login state cookie holds between the redirect to the provider and the callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginState {
    /// The `state` sent to the provider.
    pub state: String,
    /// The `nonce` the ID token must carry.
    pub nonce: String,
    /// The PKCE code verifier.
    pub verifier: String,
    /// Where to go after the login: a same-origin relative target, checked again.
    pub return_to: String,
    /// The source.
    pub source: String,
    /// When this login attempt expires (seconds since the epoch).
    pub expires: u64,
}

/// The server-side record of a session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The subject.
    pub subject: String,
    /// The roles.
    #[serde(default)]
    pub roles: Vec<String>,
    /// The scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Attributes for authorization policies.
    #[serde(default)]
    pub attributes: BTreeMap<String, serde_json::Value>,
    /// When the tokens expire (seconds since the epoch): refreshed before, ended after.
    pub expires: u64,
    /// The refresh token, if the provider gave one.
    #[serde(default)]
    pub refresh_token: Option<String>,
    /// The ID token, for RP-initiated logout (`id_token_hint`).
    #[serde(default)]
    pub id_token: Option<String>,
    /// The provider's session id (`sid`), for back-channel logout.
    #[serde(default)]
    pub sid: Option<String>,
}

impl SessionRecord {
    /// The record's identity from `source`.
    #[must_use]
    pub fn identity(&self, source: &Arc<str>) -> Identity {
        Identity {
            subject: self.subject.clone(),
            source: Arc::clone(source),
            kind: CredentialKind::Session,
            roles: self.roles.clone(),
            scopes: self.scopes.clone(),
            token_id: None,
            expires_at: Some(self.expires),
            issued_at: None,
            attributes: self.attributes.clone(),
        }
    }
}

/// A session the engine asks about: its id, its source and the idle timeout the backend
/// enforces (the record's lifetime is renewed on every use).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLookup {
    /// The session id.
    pub id: String,
    /// The source.
    pub source: Arc<str>,
    /// How long the record lives after this use.
    pub idle: Duration,
    /// When the session ends whatever happens (seconds since the epoch).
    pub ends: u64,
}

/// The driver's answer about a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionAnswer {
    /// The sealed record (as stored).
    Found(String),
    /// No such session: it was logged out, revoked, or idle too long.
    Missing,
    /// The refresh at the provider failed; the session was ended.
    RefreshFailed,
    /// The backend could not answer (fail closed: 503).
    Unavailable,
}

/// Why a session was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionProblem {
    /// The cookie does not open: tampered with, or sealed by a key no longer configured.
    Tampered,
    /// The session's absolute lifetime is over, or its tokens expired without a refresh.
    Expired,
    /// The session is not in the backend: logged out, revoked or idle too long.
    Ended,
    /// The tokens could not be refreshed at the provider.
    RefreshFailed,
}

impl SessionProblem {
    /// The stable code, as logged.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tampered => "session_tampered",
            Self::Expired => "session_expired",
            Self::Ended => "session_ended",
            Self::RefreshFailed => "refresh_failed",
        }
    }

    /// The session stage as `warden explain` and the decision log say it.
    #[must_use]
    pub fn stage_note(self) -> &'static str {
        match self {
            Self::Tampered => {
                "session cookie tampered with (or sealed by a key no longer configured)"
            }
            Self::Expired => "session expired",
            Self::Ended => "session ended (logged out, revoked or idle too long)",
            Self::RefreshFailed => "refresh failed",
        }
    }

    /// What the client is told.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            Self::Tampered => "The session cookie is not valid",
            Self::Expired => "The session expired",
            Self::Ended => "The session ended",
            Self::RefreshFailed => "The session could not be renewed",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"0123456789abcdef0123456789abcdef";
    const B: &[u8] = b"fedcba9876543210fedcba9876543210";

    #[test]
    fn the_newest_key_seals_and_every_key_opens() {
        let old = SessionKeys::new(&[A]).unwrap();
        let rotated = SessionKeys::new(&[B, A]).unwrap();
        let sealed_old = old.seal(Purpose::Cookie, b"", b"hello");
        assert_eq!(
            rotated.open(Purpose::Cookie, b"", &sealed_old).unwrap(),
            b"hello"
        );
        let sealed_new = rotated.seal(Purpose::Cookie, b"", b"world");
        assert_eq!(
            rotated.open(Purpose::Cookie, b"", &sealed_new).unwrap(),
            b"world"
        );
        assert_eq!(old.open(Purpose::Cookie, b"", &sealed_new), Err(Unsealable));
    }

    #[test]
    fn tampering_purpose_and_context_are_refused() {
        let keys = SessionKeys::new(&[A]).unwrap();
        let sealed = keys.seal(Purpose::Record, b"id-1", b"secret");
        assert!(keys.open(Purpose::Record, b"id-2", &sealed).is_err());
        assert!(keys.open(Purpose::Cookie, b"id-1", &sealed).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed[3..]).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = format!("v1.{}", URL_SAFE_NO_PAD.encode(bytes));
        assert!(keys.open(Purpose::Record, b"id-1", &tampered).is_err());
        assert!(keys.open(Purpose::Record, b"id-1", "v1.AAAA").is_err());
        assert!(keys.open(Purpose::Record, b"id-1", "garbage").is_err());
        assert!(!String::from_utf8_lossy(sealed.as_bytes()).contains("secret"));
    }

    #[test]
    fn random_tokens_differ() {
        assert_ne!(random_token(32), random_token(32));
        assert_eq!(random_token(32).len(), 43);
    }
}
