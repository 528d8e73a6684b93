//! A client certificate as a trusted proxy reports it in text: URL-encoded PEM (NGINX's
//! `$ssl_client_escaped_cert`, Envoy's `attributes.source.certificate`) or base64 DER,
//! several comma-separated (Traefik's `X-Forwarded-Tls-Client-Cert`, Caddy's
//! `{http.request.tls.client.certificate_der_base64}`).
//!
//! The proxy terminated the TLS connection and saw the client prove it holds the key; what
//! it reports is believed to be what that connection presented. The route's `mtls` source
//! still verifies the chain against its own CAs, so a proxy that accepts any certificate
//! (NGINX's `optional_no_ca`) grants nothing warden's CAs do not.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject as _;

/// The most certificates a reported chain may hold.
const MAX_CHAIN: usize = 8;

/// The chain `encoded` reports, leaf first; empty when it is empty (no certificate was
/// presented). `None` when it is neither URL-encoded PEM nor base64 DER.
pub(crate) fn decode(encoded: &str) -> Option<Vec<CertificateDer<'static>>> {
    let encoded = encoded.trim();
    if encoded.is_empty() {
        return Some(Vec::new());
    }
    let text: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    let chain = if text.windows(11).any(|w| w == b"-----BEGIN ") {
        CertificateDer::pem_slice_iter(&text)
            .collect::<Result<Vec<_>, _>>()
            .ok()?
    } else {
        let text = std::str::from_utf8(&text).ok()?;
        text.split(',')
            .map(|one| {
                let der = STANDARD.decode(one.trim()).ok()?;
                // A certificate is a DER SEQUENCE; anything else is not one.
                (der.first() == Some(&0x30)).then(|| CertificateDer::from(der))
            })
            .collect::<Option<Vec<_>>>()?
    };
    (!chain.is_empty() && chain.len() <= MAX_CHAIN).then_some(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate() -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        cert.der().clone()
    }

    #[test]
    fn url_encoded_pem_and_base64_der_both_decode() {
        let der = certificate();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            STANDARD.encode(der.as_ref())
        );
        let escaped: String =
            percent_encoding::utf8_percent_encode(&pem, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        assert_eq!(decode(&escaped).unwrap(), std::slice::from_ref(&der));
        let b64 = STANDARD.encode(der.as_ref());
        assert_eq!(decode(&b64).unwrap(), std::slice::from_ref(&der));
        let escaped_b64: String =
            percent_encoding::utf8_percent_encode(&b64, percent_encoding::NON_ALPHANUMERIC)
                .collect();
        assert_eq!(
            decode(&format!("{escaped_b64},{b64}")).unwrap(),
            [der.clone(), der]
        );
        assert_eq!(decode("").unwrap(), []);
    }

    #[test]
    fn anything_else_is_refused() {
        for bad in [
            "not a certificate",
            "aGVsbG8=",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----",
            "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----",
            ",",
        ] {
            assert!(decode(bad).is_none(), "{bad}");
        }
        let b64 = STANDARD.encode(certificate().as_ref());
        let long = vec![b64; MAX_CHAIN + 1].join(",");
        assert!(decode(&long).is_none(), "a chain longer than {MAX_CHAIN}");
    }
}
