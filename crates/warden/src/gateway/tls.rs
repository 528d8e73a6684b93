//! TLS on the proxy listener: rustls with the certificates of `[gateway.tls]`, chosen by
//! the client's server name (SNI), TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`.
//!
//! The server configuration sits in an `ArcSwap`: a reload builds a new one from the files
//! and swaps it in; connections already open keep the one they were accepted with.
//!
//! When an identity source is `mtls`, the listener asks every client for a certificate of
//! one of those sources' CAs (their names are the hints of the `CertificateRequest`), and
//! serves a client that sends none (a route without an `mtls` source needs none; one with
//! it answers 401). The handshake proves that the client holds the key of the certificate
//! it sent (rustls's `WebPkiClientVerifier` checks the handshake signature); it does not
//! judge the chain. The engine does, per request, against the CAs of the route's own
//! sources and at the decision's time: so another CA's certificate, an expired one or one
//! without the `clientAuth` usage is the route's 401 `invalid_certificate` with its reason
//! in the log and in `explain`, instead of an opaque TLS alert, and a certificate of one
//! source's CA never authenticates on a route of another.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, UnixTime};
use warden_core::config::{Http2Settings, KeyPair, ListenerTls, TlsVersion};

/// Why a TLS configuration could not be built; each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key cannot sign, or is not the certificate's key.
    #[error("the key `{key}` does not go with the certificate `{cert}`: {reason}")]
    KeyPair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
    /// The CA bundles of the `mtls` sources or of `[admin] client_ca` could not be used.
    #[error("the client CA certificates cannot be used: {0}")]
    ClientRoots(String),
    /// rustls refused the versions or the provider.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

/// The ring provider, the one reqwest's rustls uses too.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A chain and key as rustls signs with them, the key checked against the certificate.
pub(crate) fn certified_key(
    pair: &KeyPair,
    provider: &CryptoProvider,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let failed = |reason: String| TlsError::KeyPair {
        cert: pair.cert_file.clone(),
        key: pair.key_file.clone(),
        reason,
    };
    let signing = provider
        .key_provider
        .load_private_key(pair.key.clone_key())
        .map_err(|e| failed(e.to_string()))?;
    let key = CertifiedKey::new(pair.chain.clone(), signing);
    key.keys_match().map_err(|e| failed(e.to_string()))?;
    Ok(Arc::new(key))
}

/// The certificate for each server name, and the default one.
#[derive(Debug)]
struct ByServerName {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for ByServerName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            return Some(Arc::clone(&self.default));
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(key) = self.exact.get(&name) {
            return Some(Arc::clone(key));
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        if let Some(key) = parent.and_then(|p| self.wildcard.get(p)) {
            return Some(Arc::clone(key));
        }
        Some(Arc::clone(&self.default))
    }
}

/// The rustls server configuration of `[gateway.tls]`; with `client_roots` (the CAs of the
/// `mtls` sources, [`warden_core::Config::client_certificate_roots`]) it asks clients for a
/// certificate.
///
/// # Errors
/// When a key does not go with its certificate, or a client CA is unusable.
pub fn server_config(
    tls: &ListenerTls,
    http2: &Http2Settings,
    client_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let resolver = by_server_name(tls, &provider)?;
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions(tls))
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if client_roots.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = webpki_verifier(client_roots, provider)?;
        builder.with_client_cert_verifier(Arc::new(ChainJudgedByTheRoute(verifier)))
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = if http2.enabled {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// The admin listener's rustls configuration, when `[admin] client_ca` is set: the
/// certificates of `[gateway.tls]`, HTTP/1.1, and a client certificate of `admin_roots`
/// asked for. Here the handshake does judge the chain (rustls's `WebPkiClientVerifier`:
/// the CA, validity, the `clientAuth` usage when the certificate names usages): a
/// connection that completed with a certificate is an admin's. One without a certificate
/// is served (`/healthz` and `/readyz` stay open) and needs the admin token as before.
///
/// # Errors
/// When a key does not go with its certificate, or an admin CA is unusable.
pub fn admin_server_config(
    tls: &ListenerTls,
    admin_roots: &[CertificateDer<'static>],
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let resolver = by_server_name(tls, &provider)?;
    let verifier = webpki_verifier(admin_roots, Arc::clone(&provider))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(tls))
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The protocol versions of `[gateway.tls]`.
fn versions(tls: &ListenerTls) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static BOTH: [&rustls::SupportedProtocolVersion; 2] =
        [&rustls::version::TLS13, &rustls::version::TLS12];
    static ONLY_1_3: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    match tls.min_version {
        TlsVersion::V1_2 => &BOTH,
        TlsVersion::V1_3 => &ONLY_1_3,
    }
}

/// The certificates of `[gateway.tls]` by server name.
fn by_server_name(tls: &ListenerTls, provider: &CryptoProvider) -> Result<ByServerName, TlsError> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for cert in &tls.certificates {
        let key = certified_key(&cert.pair, provider)?;
        if cert.names.is_empty() && default.is_none() {
            default = Some(Arc::clone(&key));
        }
        for name in &cert.names {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.entry(parent.to_owned()),
                None => exact.entry(name.clone()),
            }
            .or_insert_with(|| Arc::clone(&key));
        }
    }
    let default = match default {
        Some(key) => key,
        None => match tls.certificates.first() {
            Some(first) => certified_key(&first.pair, provider)?,
            None => return Err(TlsError::Config("no certificate".into())),
        },
    };
    Ok(ByServerName {
        exact,
        wildcard,
        default,
    })
}

/// rustls's verifier over `roots`, serving clients without a certificate too.
fn webpki_verifier(
    roots: &[CertificateDer<'static>],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in roots {
        store
            .add(cert.clone())
            .map_err(|e| TlsError::ClientRoots(e.to_string()))?;
    }
    // A client without a certificate is still served: the routes decide whether they need
    // one (an `mtls` source), and answer 401 like for any missing credential.
    WebPkiClientVerifier::builder_with_provider(Arc::new(store), provider)
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::ClientRoots(e.to_string()))
}

/// The listener's client-certificate verifier: rustls's own for the handshake signature
/// (proof that the client holds the certificate's key), the CA hints and the schemes; the
/// chain itself is left to the engine, which verifies it per request against the route's
/// `mtls` sources (see the module documentation). A chain accepted here authorizes nothing
/// by itself: only a route's source turns it into an identity.
#[derive(Debug)]
struct ChainJudgedByTheRoute(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for ChainJudgedByTheRoute {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
