//! TLS material named by the file: the listener's certificates (`[gateway.tls]`), an
//! upstream's CA bundle and client certificate, and the HTTP/2 limits of the listener.
//!
//! The PEM files are read and parsed here, so a missing file, a file with no certificate or
//! no key is an error at the field that names it. Whether a key matches its certificate
//! takes a crypto provider: the gateway checks that when it builds its TLS configuration,
//! and names the files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use toml::Spanned;

use super::error::Collector;
use super::raw::{RawHttp2, RawTls};

/// A certificate chain and its private key, read from PEM files.
#[derive(Clone)]
pub struct KeyPair {
    /// The certificate file.
    pub cert_file: PathBuf,
    /// The key file.
    pub key_file: PathBuf,
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for KeyPair {
    // Never the key's bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// One certificate of the listener and the server names it answers (SNI).
#[derive(Debug, Clone)]
pub struct ListenerCertificate {
    /// The chain and key.
    pub pair: KeyPair,
    /// Server names this certificate is chosen for; empty for the default certificate.
    pub names: Vec<String>,
}

/// The lowest TLS version a listener accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

/// `[gateway.tls]`: TLS on the proxy listener.
#[derive(Debug, Clone)]
pub struct ListenerTls {
    /// The certificates: the first without `names` (or the first) is the default, the
    /// others are chosen by the client's server name.
    pub certificates: Vec<ListenerCertificate>,
    /// The lowest version accepted (TLS 1.2 by default; nothing older is ever offered).
    pub min_version: TlsVersion,
}

/// `[gateway.http2]`: HTTP/2 to clients and its limits (rapid reset, CONTINUATION floods,
/// header lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2Settings {
    /// Whether clients may speak HTTP/2 (ALPN `h2`, or prior knowledge on plaintext).
    pub enabled: bool,
    /// Streams open at once per connection.
    pub max_concurrent_streams: u32,
    /// The largest header list accepted (bytes, as HPACK counts them); a larger one is
    /// refused before it is buffered, however many CONTINUATION frames carry it.
    pub max_header_list_size: u32,
    /// Streams the client reset before they were answered, pending at once, before the
    /// connection is closed (CVE-2023-44487).
    pub max_pending_reset_streams: usize,
    /// Streams warden had to reset for the client's errors before the connection is closed.
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent_streams: 200,
            max_header_list_size: 64 * 1024,
            max_pending_reset_streams: 20,
            max_local_error_reset_streams: 256,
        }
    }
}

/// Read every certificate of a PEM file; an error at `span` when there is none.
pub(crate) fn read_certificates(
    base_dir: &Path,
    value: &Spanned<String>,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<Vec<CertificateDer<'static>>> {
    let path = base_dir.join(value.get_ref());
    let read = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", value.get_ref()));
    let parsed = read.and_then(|bytes| {
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("`{}` is not PEM: {e}", value.get_ref()))
    });
    match parsed {
        Ok(certs) if certs.is_empty() => {
            errors.at(
                value.span(),
                field,
                format!("`{}` holds no certificate", value.get_ref()),
            );
            None
        }
        Ok(certs) => Some(certs),
        Err(message) => {
            errors.at(value.span(), field, message);
            None
        }
    }
}

/// Read the private key of a PEM file.
fn read_key(
    base_dir: &Path,
    value: &Spanned<String>,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<PrivateKeyDer<'static>> {
    let path = base_dir.join(value.get_ref());
    let read = std::fs::read(&path).map_err(|e| format!("cannot read `{}`: {e}", value.get_ref()));
    match read.and_then(|bytes| {
        PrivateKeyDer::from_pem_slice(&bytes)
            .map_err(|e| format!("`{}` holds no private key: {e}", value.get_ref()))
    }) {
        Ok(key) => Some(key),
        Err(message) => {
            errors.at(value.span(), field, message);
            None
        }
    }
}

/// A certificate file and its key file.
pub(crate) fn key_pair(
    base_dir: &Path,
    (cert, key): (&Spanned<String>, &Spanned<String>),
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<KeyPair> {
    let chain = read_certificates(base_dir, cert, &format!("{field}.cert"), errors);
    let key_der = read_key(base_dir, key, &format!("{field}.key"), errors);
    Some(KeyPair {
        cert_file: base_dir.join(cert.get_ref()),
        key_file: base_dir.join(key.get_ref()),
        chain: chain?,
        key: Arc::new(key_der?),
    })
}

/// `[gateway.tls]`, checked.
pub(crate) fn listener_tls(
    base_dir: &Path,
    raw: &Spanned<RawTls>,
    errors: &mut Collector<'_>,
) -> Option<ListenerTls> {
    let tls = raw.get_ref();
    if tls.certificates.is_empty() {
        errors.at(
            raw.span(),
            "gateway.tls.certificates",
            "list at least one certificate: { cert = \"cert.pem\", key = \"key.pem\" }",
        );
        return None;
    }
    let mut certificates = Vec::new();
    for (i, entry) in tls.certificates.iter().enumerate() {
        let field = format!("gateway.tls.certificates[{i}]");
        let names: Vec<String> = entry
            .names
            .iter()
            .filter_map(|name| {
                let text = name
                    .get_ref()
                    .trim()
                    .trim_end_matches('.')
                    .to_ascii_lowercase();
                let valid = !text.is_empty()
                    && text
                        .split('.')
                        .enumerate()
                        .all(|(n, label)| is_label(label) || (n == 0 && label == "*"));
                if !valid {
                    errors.at(
                        name.span(),
                        format!("{field}.names"),
                        "expected a DNS name such as api.example.com or *.example.com",
                    );
                }
                valid.then_some(text)
            })
            .collect();
        if let Some(pair) = key_pair(base_dir, (&entry.cert, &entry.key), &field, errors) {
            certificates.push(ListenerCertificate { pair, names });
        }
    }
    let min_version = match tls.min_version.as_ref().map(|v| (v, v.get_ref().as_str())) {
        None | Some((_, "1.2")) => TlsVersion::V1_2,
        Some((_, "1.3")) => TlsVersion::V1_3,
        Some((v, _)) => {
            errors.at(
                v.span(),
                "gateway.tls.min_version",
                "expected \"1.2\" or \"1.3\" (nothing older is offered)",
            );
            TlsVersion::V1_2
        }
    };
    Some(ListenerTls {
        certificates,
        min_version,
    })
}

fn is_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

/// `[gateway.http2]`, checked: a limit of zero would refuse every request.
pub(crate) fn http2_settings(
    raw: Option<&Spanned<RawHttp2>>,
    errors: &mut Collector<'_>,
) -> Http2Settings {
    let defaults = Http2Settings::default();
    let Some(raw) = raw else {
        return defaults;
    };
    let h = raw.get_ref();
    let positive = |value: Option<u64>, field: &str, errors: &mut Collector<'_>| match value {
        Some(0) => {
            errors.at(
                raw.span(),
                format!("gateway.http2.{field}"),
                "must be at least 1",
            );
            None
        }
        other => other,
    };
    Http2Settings {
        enabled: h.enabled.unwrap_or(defaults.enabled),
        max_concurrent_streams: positive(
            h.max_concurrent_streams.map(u64::from),
            "max_concurrent_streams",
            errors,
        )
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(defaults.max_concurrent_streams),
        max_header_list_size: positive(
            h.max_header_list_size.map(u64::from),
            "max_header_list_size",
            errors,
        )
        .and_then(|v| u32::try_from(v).ok())
        .unwrap_or(defaults.max_header_list_size),
        max_pending_reset_streams: positive(
            h.max_pending_reset_streams,
            "max_pending_reset_streams",
            errors,
        )
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(defaults.max_pending_reset_streams),
        max_local_error_reset_streams: positive(
            h.max_local_error_reset_streams,
            "max_local_error_reset_streams",
            errors,
        )
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(defaults.max_local_error_reset_streams),
    }
}
