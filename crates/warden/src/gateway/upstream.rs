//! Forwarding to upstreams: a pooled HTTP/1.1 client, hop-by-hop hygiene (RFC 9110 §7.6.1),
//! and failures classified as 502 or 504.

use std::net::IpAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;

use super::request_body::CappedBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use warden_core::config::{ServeSettings, Upstream};
use warden_core::decision::ForwardHeaders;
use warden_core::response::Problem;

/// Headers that describe one connection, never the message (RFC 9110 §7.6.1), plus the
/// proxy-only fields a client has no business sending through.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Address headers a client could forge; warden sets its own.
const CLIENT_ADDRESS_HEADERS: [HeaderName; 5] = [
    HeaderName::from_static("x-forwarded-for"),
    HeaderName::from_static("x-forwarded-host"),
    HeaderName::from_static("x-forwarded-proto"),
    HeaderName::from_static("x-real-ip"),
    header::FORWARDED,
];

/// Why forwarding failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamFailure {
    /// Could not connect, or the exchange broke: 502.
    Unavailable(&'static str),
    /// No response head in time: 504.
    Timeout,
}

impl UpstreamFailure {
    /// The problem the client is answered with: 502 or 504, never a 401, 403 or 500.
    pub(crate) fn problem(&self) -> Problem<'static> {
        match self {
            Self::Unavailable(_) => Problem {
                status: http::StatusCode::BAD_GATEWAY,
                code: "upstream_unavailable",
                detail: "The upstream service is unavailable.",
            },
            Self::Timeout => Problem {
                status: http::StatusCode::GATEWAY_TIMEOUT,
                code: "upstream_timeout",
                detail: "The upstream service did not answer in time.",
            },
        }
    }
}

/// The pooled client to every upstream.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamClient {
    client: Client<HttpConnector, CappedBody>,
    timeout: Duration,
}

impl UpstreamClient {
    pub fn new(settings: &ServeSettings) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(settings.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .build(connector);
        Self {
            client,
            timeout: settings.upstream_timeout,
        }
    }

    /// Send a request and wait for the response head.
    pub async fn send(
        &self,
        request: Request<CappedBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Err(_) => Err(UpstreamFailure::Timeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamFailure::Unavailable("connect")),
            Ok(Err(_)) => Err(UpstreamFailure::Unavailable("protocol")),
        }
    }
}

/// The URI on the upstream: its base path joined with the authorized path and query.
pub(crate) fn upstream_uri(upstream: &Upstream, path_and_query: &str) -> Result<Uri, http::Error> {
    let base = upstream.url.path().trim_end_matches('/');
    let mut parts = upstream.url.clone().into_parts();
    parts.path_and_query = Some(format!("{base}{path_and_query}").parse()?);
    Ok(Uri::from_parts(parts)?)
}

/// Remove the hop-by-hop headers, including every header the `Connection` field names.
///
/// Called before warden adds its own headers, so a client's `Connection: x-warden-subject`
/// can never remove a header warden sets.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Prepare the client's headers for the upstream: hop-by-hop and forgeable headers out,
/// the verified identity and warden's own address headers in.
pub(crate) fn prepare_request_headers(
    headers: &mut HeaderMap,
    forward: &ForwardHeaders,
    client: IpAddr,
    upstream_host: Option<&str>,
) {
    let original_host = headers.get(header::HOST).cloned();
    strip_hop_by_hop(headers);
    for name in forward.remove.iter().chain(CLIENT_ADDRESS_HEADERS.iter()) {
        headers.remove(name);
    }
    for (name, value) in &forward.add {
        headers.insert(name.clone(), value.clone());
    }
    // The address's text becomes the header's bytes without a copy.
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string())) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Some(host) = upstream_host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(header::HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_cannot_remove_headers_warden_sets() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-warden-subject, x-custom"),
        );
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-warden-subject", HeaderValue::from_static("mallory"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let forward = ForwardHeaders {
            remove: vec![HeaderName::from_static("x-warden-subject")].into(),
            add: vec![(
                HeaderName::from_static("x-warden-subject"),
                HeaderValue::from_static("alice"),
            )],
        };
        prepare_request_headers(
            &mut headers,
            &forward,
            IpAddr::from([127, 0, 0, 1]),
            Some("up:3000"),
        );
        assert_eq!(headers["x-warden-subject"], "alice");
        assert!(headers.get("x-custom").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers[header::HOST], "up:3000");
    }

    #[test]
    fn upstream_base_paths_are_joined() {
        let up = Upstream {
            url: "http://127.0.0.1:3000/api/".parse().unwrap(),
        };
        assert_eq!(
            upstream_uri(&up, "/docs/1?x=1").unwrap().to_string(),
            "http://127.0.0.1:3000/api/docs/1?x=1"
        );
        let up = Upstream {
            url: "http://127.0.0.1:3000".parse().unwrap(),
        };
        assert_eq!(
            upstream_uri(&up, "/").unwrap().to_string(),
            "http://127.0.0.1:3000/"
        );
    }
}
