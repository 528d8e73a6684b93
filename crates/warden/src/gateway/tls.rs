//! TLS on the proxy listener: rustls with the certificates of `[gateway.tls]`, chosen by
//! the client's server name (SNI), TLS 1.2 and 1.3 only, ALPN `h2` and `http/1.1`.
//!
//! The server configuration sits in an `ArcSwap`: a reload builds a new one from the files
//! and swaps it in; connections already open keep the one they were accepted with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
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

/// The rustls server configuration of `[gateway.tls]`.
///
/// # Errors
/// When a key does not go with its certificate, or the client CA bundle is unusable.
pub fn server_config(
    tls: &ListenerTls,
    http2: &Http2Settings,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for cert in &tls.certificates {
        let key = certified_key(&cert.pair, &provider)?;
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
            Some(first) => certified_key(&first.pair, &provider)?,
            None => return Err(TlsError::Config("no certificate".into())),
        },
    };
    let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = builder.with_no_client_auth();
    let mut config = builder.with_cert_resolver(Arc::new(ByServerName {
        exact,
        wildcard,
        default,
    }));
    config.alpn_protocols = if http2.enabled {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}
