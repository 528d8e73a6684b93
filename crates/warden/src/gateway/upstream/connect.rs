//! The client of one upstream: plaintext or TLS (rustls: the system's roots or the
//! upstream's CA bundle, SNI, an optional client certificate), HTTP/1.1 or HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use warden_core::config::{ServeSettings, Upstream, UpstreamProtocol, UpstreamTls};

use super::UpstreamError;
use crate::gateway::tls::{certified_key, provider};

/// Every upstream connection: TCP, then TLS for `https` upstreams.
pub(crate) type Connector = HttpsConnector<HttpConnector>;

/// The connector of `upstream`, with its TLS settings and the configured connect timeout.
pub(super) fn connector(
    name: &str,
    upstream: &Upstream,
    serve: &ServeSettings,
) -> Result<Connector, UpstreamError> {
    let mut tcp = HttpConnector::new();
    tcp.set_connect_timeout(Some(serve.connect_timeout));
    tcp.set_nodelay(true);
    tcp.enforce_http(false);
    let tls = match &upstream.tls {
        Some(tls) => client_config(name, tls)?,
        // Never used: an http upstream's URIs are all `http`. An empty root store trusts
        // nothing, should one ever be asked to.
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| roots_error(name, &e))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match upstream.tls.as_ref().and_then(|t| t.server_name.as_deref()) {
        Some(server_name) => {
            let name_value = ServerName::try_from(server_name.to_owned()).map_err(|_| {
                UpstreamError::ServerName {
                    upstream: name.to_owned(),
                    name: server_name.to_owned(),
                }
            })?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name_value))
        }
        None => builder,
    };
    Ok(match upstream.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(tcp),
        UpstreamProtocol::Http2 => builder.enable_http2().wrap_connector(tcp),
    })
}

/// A pooled client over `connector` speaking the upstream's protocol.
pub(super) fn client<B>(connector: Connector, upstream: &Upstream) -> Client<Connector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new());
    if upstream.protocol == UpstreamProtocol::Http2 {
        // Prior knowledge on plaintext (h2c); over TLS the connector offers only `h2`.
        builder.http2_only(true);
    }
    builder.build(connector)
}

/// The rustls client configuration of an `https` upstream.
fn client_config(name: &str, tls: &UpstreamTls) -> Result<ClientConfig, UpstreamError> {
    let mut roots = RootCertStore::empty();
    if tls.roots.is_empty() {
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(upstream = name, %error, "a system CA certificate could not be read");
        }
        let (added, ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 {
            tracing::warn!(
                upstream = name,
                ignored,
                "no system CA certificates found: every TLS connection to this upstream will fail; set `ca`"
            );
        }
    } else {
        for cert in &tls.roots {
            roots.add(cert.clone()).map_err(|e| roots_error(name, &e))?;
        }
    }
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| roots_error(name, &e))?
        .with_root_certificates(roots);
    match &tls.client {
        None => Ok(builder.with_no_client_auth()),
        Some(pair) => {
            let client_error = |source| UpstreamError::ClientCertificate {
                upstream: name.to_owned(),
                source,
            };
            // Checked first, so a key that is not the certificate's is named by its files.
            certified_key(pair, &provider).map_err(client_error)?;
            builder
                .with_client_auth_cert(pair.chain.clone(), pair.key.clone_key())
                .map_err(|e| {
                    client_error(crate::gateway::tls::TlsError::KeyPair {
                        cert: pair.cert_file.clone(),
                        key: pair.key_file.clone(),
                        reason: e.to_string(),
                    })
                })
        }
    }
}

fn roots_error(name: &str, error: &rustls::Error) -> UpstreamError {
    UpstreamError::Roots {
        upstream: name.to_owned(),
        reason: error.to_string(),
    }
}
