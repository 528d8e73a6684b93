//! The `mtls` source: the client certificate of the TLS connection, verified against the
//! source's own CA bundle, its subject (a SAN or the CN) the identity.
//!
//! The front end hands the chain the client presented ([`crate::RequestView::client_certificates`]);
//! whatever the TLS handshake decided, the engine verifies it again here, so a route's
//! source accepts only certificates of its own CAs, and expiry follows the decision's `now`
//! (reproducible like token expiry):
//!
//! - the path is built and checked by `rustls-webpki`, the verifier rustls itself uses
//!   (signatures, validity, basic constraints, name constraints), with no I/O and no clock
//!   of its own;
//! - the leaf must carry the `clientAuth` extended key usage. webpki's `client_auth()`
//!   accepts a leaf without any EKU extension (RFC 5280 allows it); this source does not: a
//!   certificate meant for something else is not a client credential here;
//! - the names are read with `x509-parser` once the chain verified: webpki checks names
//!   against a given server name but exposes no iteration over the CN or the SANs.
//!
//! Verified chains are remembered by the SHA-256 of the whole chain, in the same bounded
//! cache as verified tokens (`token_cache`), until the earliest `notAfter` of the chain; a
//! hit still checks the validity against `now`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use sha2::{Digest, Sha256};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::cache::TokenCache;
use crate::identity::{CredentialKind, Identity};

/// The DER contents of the `id-kp-clientAuth` OID, 1.3.6.1.5.5.7.3.2 (RFC 5280 §4.2.1.12).
const CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// The most certificates of a chain looked at; a longer one is refused unread.
const MAX_CHAIN: usize = 8;

/// Why a client certificate was not accepted. Each is a 401 `invalid_certificate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CertificateProblem {
    /// Not a DER X.509 certificate, or a chain longer than warden reads.
    Garbled,
    /// It does not chain to a CA of the source (another CA, or a self-signed certificate).
    UnknownIssuer,
    /// The signature of a certificate in the chain does not verify, or uses an algorithm
    /// that is not accepted.
    BadSignature,
    /// A certificate of the chain expired.
    Expired,
    /// A certificate of the chain is not valid yet.
    NotYetValid,
    /// The leaf lacks the `clientAuth` extended key usage.
    NotForClientAuth,
    /// The leaf has none of the names the source takes the subject from.
    NoSubject,
    /// Its subject was revoked (`POST /revoke` with the subject) after the leaf was issued.
    Revoked,
    /// Any other reason webpki gives (a CA used as a leaf, constraints, malformed
    /// extensions).
    Invalid,
}

impl CertificateProblem {
    /// The `error_description` of the challenge and the detail of the problem document.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            Self::Garbled => "The client certificate is malformed",
            Self::UnknownIssuer => "The client certificate is not issued by an accepted CA",
            Self::BadSignature => "The client certificate's signature is invalid",
            Self::Expired => "The client certificate expired",
            Self::NotYetValid => "The client certificate is not yet valid",
            Self::NotForClientAuth => "The client certificate is not for client authentication",
            Self::NoSubject => "The client certificate has no usable subject name",
            Self::Revoked => "The client certificate was revoked",
            Self::Invalid => "The client certificate is not acceptable",
        }
    }

    /// The stable code of the problem, as it appears in logs and explanations.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Garbled => "garbled",
            Self::UnknownIssuer => "unknown_issuer",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::NotForClientAuth => "not_for_client_auth",
            Self::NoSubject => "no_subject",
            Self::Revoked => "revoked",
            Self::Invalid => "invalid",
        }
    }

    fn of(error: &webpki::Error) -> Self {
        #[expect(
            deprecated,
            reason = "older webpki releases report a missing EKU without its context"
        )]
        match error {
            webpki::Error::BadDer | webpki::Error::BadDerTime => Self::Garbled,
            webpki::Error::UnknownIssuer => Self::UnknownIssuer,
            webpki::Error::CertExpired { .. } => Self::Expired,
            webpki::Error::CertNotValidYet { .. } => Self::NotYetValid,
            webpki::Error::RequiredEkuNotFound
            | webpki::Error::RequiredEkuNotFoundContext(_)
            | webpki::Error::EmptyEkuExtension => Self::NotForClientAuth,
            webpki::Error::InvalidSignatureForPublicKey
            | webpki::Error::SignatureAlgorithmMismatch
            | webpki::Error::UnsupportedSignatureAlgorithm
            | webpki::Error::UnsupportedSignatureAlgorithmContext(_)
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKey
            | webpki::Error::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => {
                Self::BadSignature
            }
            _ => Self::Invalid,
        }
    }
}

/// Which name of the leaf is the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectName {
    /// The first URI SAN (a SPIFFE id), else the first DNS SAN, else the CN: the default.
    Auto,
    /// The subject's common name.
    CommonName,
    /// The first DNS name SAN.
    SanDns,
    /// The first URI SAN.
    SanUri,
    /// The first e-mail SAN.
    SanEmail,
}

/// A subject, or a prefix of subjects (written with a trailing `*`), and the roles it
/// grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoleRule {
    pub pattern: String,
    pub prefix: bool,
    pub roles: Vec<String>,
}

impl RoleRule {
    fn matches(&self, subject: &str) -> bool {
        if self.prefix {
            subject.starts_with(&self.pattern)
        } else {
            subject == self.pattern
        }
    }
}

/// A configured `mtls` source.
pub struct MtlsSource {
    /// The source's name.
    pub(crate) name: Arc<str>,
    /// The CA bundle file, for messages.
    pub(crate) ca_file: PathBuf,
    /// The CA certificates as read (the gateway asks clients for certificates of these).
    pub(crate) roots: Vec<CertificateDer<'static>>,
    /// The same, as trust anchors.
    pub(crate) anchors: Vec<TrustAnchor<'static>>,
    pub(crate) subject: SubjectName,
    pub(crate) roles: Vec<RoleRule>,
    pub(crate) cache: TokenCache,
}

impl std::fmt::Debug for MtlsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsSource")
            .field("name", &self.name)
            .field("ca_file", &self.ca_file)
            .field("anchors", &self.anchors.len())
            .field("subject", &self.subject)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl MtlsSource {
    /// The CA certificates client certificates of this source chain to.
    #[must_use]
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Verify a presented chain (leaf first) at `now` (seconds since the epoch), from the
    /// cache when this chain verified before.
    pub(crate) fn verify(
        &self,
        chain: &[CertificateDer<'_>],
        now: u64,
    ) -> Result<Identity, CertificateProblem> {
        if chain.is_empty() || chain.len() > MAX_CHAIN {
            return Err(CertificateProblem::Garbled);
        }
        if !self.cache.enabled() {
            return self.verify_uncached(chain, now).map(|(id, _)| id);
        }
        let digest = chain_digest(chain);
        if let Some(hit) = self.cache.get(&digest, now, 0) {
            return Ok(hit.identity.clone());
        }
        let generation = self.cache.generation();
        let (identity, not_before) = self.verify_uncached(chain, now)?;
        self.cache
            .insert(digest, &identity, Some(not_before), now, generation);
        Ok(identity)
    }

    /// Verify without the cache: the identity and the latest `notBefore` of the chain.
    fn verify_uncached(
        &self,
        chain: &[CertificateDer<'_>],
        now: u64,
    ) -> Result<(Identity, u64), CertificateProblem> {
        let (leaf, intermediates) = chain.split_first().ok_or(CertificateProblem::Garbled)?;
        let end_entity = EndEntityCert::try_from(leaf).map_err(|e| CertificateProblem::of(&e))?;
        end_entity
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                intermediates,
                UnixTime::since_unix_epoch(Duration::from_secs(now)),
                KeyUsage::required(CLIENT_AUTH),
                None,
                None,
            )
            .map_err(|e| CertificateProblem::of(&e))?;
        // The chain verified: its names and validity are now worth reading.
        let (_, parsed) =
            X509Certificate::from_der(leaf.as_ref()).map_err(|_| CertificateProblem::Garbled)?;
        let subject = subject_of(&parsed, self.subject).ok_or(CertificateProblem::NoSubject)?;
        let (issued, expires) = validity(&parsed);
        let (mut not_before, mut not_after) = (issued, expires);
        for der in intermediates {
            if let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) {
                let (nb, na) = validity(&cert);
                not_before = not_before.max(nb);
                not_after = not_after.min(na);
            }
        }
        let mut roles: Vec<String> = Vec::new();
        for rule in self.roles.iter().filter(|r| r.matches(&subject)) {
            for role in &rule.roles {
                if !roles.contains(role) {
                    roles.push(role.clone());
                }
            }
        }
        let identity = Identity {
            subject,
            source: Arc::clone(&self.name),
            kind: CredentialKind::ClientCertificate,
            roles,
            scopes: Vec::new(),
            token_id: None,
            // The cache keeps an entry no longer than the chain is valid.
            expires_at: Some(not_after),
            // A revocation of the subject covers the certificates issued before it.
            issued_at: Some(issued),
            attributes: std::collections::BTreeMap::new(),
        };
        Ok((identity, not_before))
    }
}

/// `notBefore` and `notAfter` as seconds since the epoch (0 for a time before it).
fn validity(cert: &X509Certificate<'_>) -> (u64, u64) {
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    (
        secs(cert.validity().not_before.timestamp()),
        secs(cert.validity().not_after.timestamp()),
    )
}

/// The SHA-256 of a chain, each certificate length-prefixed so two chains never share the
/// bytes that are hashed.
fn chain_digest(chain: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for cert in chain {
        hash.update(u64::try_from(cert.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(cert.as_ref());
    }
    hash.finalize().into()
}

/// The leaf's name the source takes as the subject.
fn subject_of(cert: &X509Certificate<'_>, which: SubjectName) -> Option<String> {
    let sans: Vec<GeneralName<'_>> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext.value.general_names.clone(),
        // Two SAN extensions, or a malformed one: no SAN is believed.
        Ok(None) | Err(_) => Vec::new(),
    };
    let uri = || {
        sans.iter().find_map(|n| match n {
            GeneralName::URI(u) => Some((*u).to_owned()),
            _ => None,
        })
    };
    let dns = || {
        sans.iter().find_map(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_owned()),
            _ => None,
        })
    };
    let email = || {
        sans.iter().find_map(|n| match n {
            GeneralName::RFC822Name(e) => Some((*e).to_owned()),
            _ => None,
        })
    };
    let cn = || {
        let mut names = cert.subject().iter_common_name();
        let first = names.next()?;
        // Two CNs are ambiguous: neither is the subject.
        if names.next().is_some() {
            return None;
        }
        first.as_str().ok().map(str::to_owned)
    };
    let name = match which {
        SubjectName::Auto => uri().or_else(dns).or_else(cn),
        SubjectName::CommonName => cn(),
        SubjectName::SanDns => dns(),
        SubjectName::SanUri => uri(),
        SubjectName::SanEmail => email(),
    };
    name.filter(|n| !n.is_empty() && !n.chars().any(char::is_control))
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, SanType, date_time_ymd,
    };

    use super::*;

    /// 2030-01-01T00:00:00Z, inside the test certificates' validity.
    const NOW: u64 = 1_893_456_000;

    struct Ca {
        der: CertificateDer<'static>,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(ca: &Ca, edit: impl FnOnce(&mut CertificateParams)) -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "alice");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.not_before = date_time_ymd(2025, 1, 1);
        params.not_after = date_time_ymd(2035, 1, 1);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        params.signed_by(&key, &ca.issuer).unwrap().der().clone()
    }

    fn source(ca: &Ca, subject: SubjectName, cache: u64) -> MtlsSource {
        MtlsSource {
            name: Arc::from("clients"),
            ca_file: PathBuf::from("ca.pem"),
            roots: vec![ca.der.clone()],
            anchors: vec![
                webpki::anchor_from_trusted_cert(&ca.der)
                    .unwrap()
                    .to_owned(),
            ],
            subject,
            roles: vec![
                RoleRule {
                    pattern: "alice".to_owned(),
                    prefix: false,
                    roles: vec!["reader".to_owned()],
                },
                RoleRule {
                    pattern: "spiffe://test/".to_owned(),
                    prefix: true,
                    roles: vec!["service".to_owned(), "reader".to_owned()],
                },
            ],
            cache: TokenCache::new(cache),
        }
    }

    #[test]
    fn a_certificate_of_the_ca_is_its_subject_with_the_mapped_roles() {
        let ca = ca("clients");
        for cache in [0, 10] {
            let src = source(&ca, SubjectName::Auto, cache);
            let id = src.verify(&[leaf(&ca, |_| {})], NOW).unwrap();
            assert_eq!(id.subject, "alice");
            assert_eq!(&*id.source, "clients");
            assert_eq!(id.kind, CredentialKind::ClientCertificate);
            assert_eq!(id.roles, ["reader"]);
            // A hit is the same identity.
            assert_eq!(
                src.verify(&[leaf(&ca, |_| {})], NOW).unwrap().roles,
                ["reader"]
            );
        }
    }

    #[test]
    fn refusals_name_their_problem() {
        let ca = ca("clients");
        let other = ca_other();
        let src = source(&ca, SubjectName::Auto, 10);
        let check = |chain: &[CertificateDer<'_>], now: u64| src.verify(chain, now).unwrap_err();
        assert_eq!(
            check(&[leaf(&other, |_| {})], NOW),
            CertificateProblem::UnknownIssuer
        );
        // A self-signed certificate naming the CA as its issuer: the CA's key did not sign it.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "clients");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let forged = params.self_signed(&key).unwrap().der().clone();
        assert_eq!(check(&[forged], NOW), CertificateProblem::BadSignature);
        let good = leaf(&ca, |_| {});
        assert_eq!(
            check(std::slice::from_ref(&good), 2_100_000_000),
            CertificateProblem::Expired
        );
        assert_eq!(
            check(std::slice::from_ref(&good), 1_600_000_000),
            CertificateProblem::NotYetValid
        );
        let server = leaf(&ca, |p| {
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        });
        assert_eq!(check(&[server], NOW), CertificateProblem::NotForClientAuth);
        let none = leaf(&ca, |p| p.extended_key_usages = vec![]);
        assert_eq!(check(&[none], NOW), CertificateProblem::NotForClientAuth);
        assert_eq!(
            check(
                &[CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00])],
                NOW
            ),
            CertificateProblem::Garbled
        );
        assert_eq!(check(&[], NOW), CertificateProblem::Garbled);
        // The CA itself is not a client.
        assert_eq!(
            check(std::slice::from_ref(&ca.der), NOW),
            CertificateProblem::Invalid
        );
    }

    #[test]
    fn a_cached_chain_is_still_judged_at_the_decisions_time() {
        let ca = ca("clients");
        let src = source(&ca, SubjectName::Auto, 10);
        let cert = leaf(&ca, |_| {});
        assert!(src.verify(std::slice::from_ref(&cert), NOW).is_ok());
        assert_eq!(src.cache.len(), 1);
        // After `notAfter` the entry is no hit, and the full check says why.
        assert_eq!(
            src.verify(std::slice::from_ref(&cert), 2_100_000_000),
            Err(CertificateProblem::Expired)
        );
        assert_eq!(
            src.verify(std::slice::from_ref(&cert), 1_600_000_000),
            Err(CertificateProblem::NotYetValid)
        );
    }

    #[test]
    fn the_subject_is_the_configured_name() {
        let ca = ca("clients");
        let cert = leaf(&ca, |p| {
            p.subject_alt_names = vec![
                SanType::Rfc822Name("alice@test".try_into().unwrap()),
                SanType::DnsName("alice.test".try_into().unwrap()),
                SanType::URI("spiffe://test/alice".try_into().unwrap()),
            ];
        });
        let subject = |which| source(&ca, which, 0).verify(std::slice::from_ref(&cert), NOW);
        let auto = subject(SubjectName::Auto).unwrap();
        assert_eq!(auto.subject, "spiffe://test/alice");
        assert_eq!(auto.roles, ["service", "reader"]);
        assert_eq!(subject(SubjectName::SanDns).unwrap().subject, "alice.test");
        assert_eq!(
            subject(SubjectName::SanEmail).unwrap().subject,
            "alice@test"
        );
        assert_eq!(subject(SubjectName::CommonName).unwrap().subject, "alice");
        // Without URI SANs the default is the DNS SAN, without SANs the CN.
        let dns = leaf(&ca, |p| {
            p.subject_alt_names = vec![SanType::DnsName("alice.test".try_into().unwrap())];
        });
        let src = source(&ca, SubjectName::Auto, 0);
        assert_eq!(src.verify(&[dns], NOW).unwrap().subject, "alice.test");
        // A name the certificate lacks is no subject at all.
        let plain = leaf(&ca, |_| {});
        let src = source(&ca, SubjectName::SanUri, 0);
        assert_eq!(
            src.verify(&[plain], NOW),
            Err(CertificateProblem::NoSubject)
        );
    }

    fn ca_other() -> Ca {
        ca("another CA")
    }
}
