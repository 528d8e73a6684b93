//! Forwarding to upstreams: a pool per upstream (its hosts, balancing and health in
//! [`pool`], its TLS client in [`connect`]), hop-by-hop hygiene (RFC 9110 §7.6.1), and
//! failures classified as 502, 503 or 504.

mod connect;
mod h1;
mod idle;
pub(crate) mod pool;
mod wire;

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::body::BodyError;
use super::request_body::CappedBody;
use warden_core::Config;
use warden_core::config::{Upstream, UpstreamProtocol};
use warden_core::decision::{ForwardHeaders, remove_present};
use warden_core::response::Problem;

pub(crate) use self::pool::Pool;
pub(crate) use self::wire::WireError;

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
    /// Every host of the upstream is out of rotation: 503.
    NoHealthyHost,
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
            Self::NoHealthyHost => Problem {
                status: http::StatusCode::SERVICE_UNAVAILABLE,
                code: "upstream_unhealthy",
                detail: "No host of the upstream service is healthy.",
            },
        }
    }
}

/// Why an upstream's client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The CA bundle holds a certificate rustls cannot use.
    #[error("upstream `{upstream}`: the CA certificates cannot be used: {reason}")]
    Roots {
        /// The upstream.
        upstream: String,
        /// What rustls said.
        reason: String,
    },
    /// The client certificate cannot be used.
    #[error("upstream `{upstream}`: {source}")]
    ClientCertificate {
        /// The upstream.
        upstream: String,
        /// Why.
        source: super::tls::TlsError,
    },
    /// The configured server name is not a DNS name or an address.
    #[error("upstream `{upstream}`: `{name}` is not a server name")]
    ServerName {
        /// The upstream.
        upstream: String,
        /// The name.
        name: String,
    },
}

/// The clients of every upstream, by name; rebuilt whole on reload.
#[derive(Debug)]
pub(crate) struct UpstreamClient {
    /// Keyed by configured names (never client input): a fast hasher, not SipHash.
    pools: HashMap<Arc<str>, Arc<Pool>, foldhash::fast::FixedState>,
    timeout: Duration,
}

impl UpstreamClient {
    /// A pool per upstream of `config`, each with its own TLS settings and hosts; the
    /// active health checks start here and stop when the pool is dropped (on reload).
    pub fn new(config: &Config) -> Result<Self, UpstreamError> {
        Self::replacing(config, None)
    }

    /// The pools of `config` replacing those of `previous` (a reload): an upstream of the
    /// same name keeps the health of the hosts it still has.
    pub fn replacing(config: &Config, previous: Option<&Self>) -> Result<Self, UpstreamError> {
        let mut pools = HashMap::default();
        for (name, upstream) in &config.upstreams {
            let before = previous.and_then(|p| p.pools.get(name)).map(Arc::as_ref);
            let pool = Arc::new(Pool::new(name, upstream, &config.serve, before)?);
            pool::start_health_checks(&pool);
            pools.insert(Arc::clone(name), pool);
        }
        Ok(Self {
            pools,
            timeout: config.serve.upstream_timeout,
        })
    }

    /// The pool of the upstream `name`.
    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    /// Send a request to one of the upstream's hosts and wait for the response head.
    ///
    /// `path_and_query` is joined to the upstream's base path on the host chosen. A
    /// request without a body whose method is idempotent is tried on another host when
    /// the first could not be connected to (it never reached that host); nothing else is
    /// ever sent twice.
    pub async fn send(
        &self,
        pool: &Pool,
        mut request: Request<CappedBody>,
        path_and_query: &str,
    ) -> Result<Response<UpstreamBody>, UpstreamFailure> {
        let retryable = request.method().is_idempotent() && request.body().is_end_stream();
        let attempts = if retryable {
            pool.host_count().min(3)
        } else {
            1
        };
        let mut last = UpstreamFailure::NoHealthyHost;
        for attempt in 0..attempts {
            let Some(host) = pool.choose() else {
                return Err(last);
            };
            let uri = pool
                .upstream()
                .uri(host.authority(), path_and_query)
                .map_err(|_| UpstreamFailure::Unavailable("bad_uri"))?;
            let next = (attempt + 1 < attempts).then(|| copy_head(&request));
            *request.uri_mut() = uri;
            set_host(request.headers_mut(), pool.upstream(), host);
            let in_flight = host.start(pool.upstream().balance);
            let sent = tokio::time::timeout(self.timeout, exchange(pool, host, request)).await;
            drop(in_flight);
            let failure = match sent {
                Ok(Ok(response)) => {
                    host.record(!matches!(response.status().as_u16(), 502..=504));
                    return Ok(response);
                }
                Err(_) => UpstreamFailure::Timeout,
                Ok(Err(Failure::Connect(e))) => UpstreamFailure::Unavailable(connect_kind(&*e)),
                Ok(Err(Failure::Exchange(e))) => {
                    tracing::debug!(error = %e, upstream = pool.name(), host = %host.authority(), "upstream exchange failed");
                    UpstreamFailure::Unavailable("protocol")
                }
            };
            host.record(false);
            tracing::debug!(upstream = pool.name(), host = %host.authority(), ?failure, "upstream host failed");
            let never_reached = matches!(failure, UpstreamFailure::Unavailable("connect"));
            match next {
                Some(copy) if never_reached => {
                    request = copy;
                    last = failure;
                }
                _ => return Err(failure),
            }
        }
        Err(last)
    }
}

/// A request's head again, with an empty body: only for requests that had none.
fn copy_head(request: &Request<CappedBody>) -> Request<CappedBody> {
    let (body, _) = CappedBody::new(None, None, 0);
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Why one exchange with a host failed, from either client.
#[derive(Debug)]
enum Failure {
    /// No connection could be made (refused, unreachable, TLS): the request never left.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange on the connection broke.
    Exchange(Box<dyn std::error::Error + Send + Sync>),
}

/// One exchange with `host`: HTTP/1.1 on a connection of the host's own idle lists (warden's
/// codec for a bodyless request, hyper's connection for one with a body), HTTP/2 and
/// WebSocket handshakes through the pooled client.
async fn exchange(
    pool: &Pool,
    host: &pool::Host,
    request: Request<CappedBody>,
) -> Result<Response<UpstreamBody>, Failure> {
    let upgrade = request.headers().contains_key(header::UPGRADE);
    if pool.upstream().protocol == UpstreamProtocol::Http1 && !upgrade {
        if request.body().is_end_stream() {
            let response = wire::send(host.wire_connections(), pool.connector(), request).await?;
            return Ok(response.map(UpstreamBody::Wire));
        }
        let response = h1::send(host.connections(), pool.connector(), request).await?;
        return Ok(response.map(UpstreamBody::Kept));
    }
    match pool.client().request(request).await {
        Ok(response) => Ok(response.map(UpstreamBody::Pooled)),
        Err(e) if e.is_connect() => Err(Failure::Connect(Box::new(e))),
        Err(e) => Err(Failure::Exchange(Box::new(e))),
    }
}

/// An upstream's response body, from whichever client carried the exchange.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// From the pooled client (HTTP/2, WebSocket handshakes).
    Pooled(Incoming),
    /// From an HTTP/1.1 connection of hyper's that goes back to its host's idle list.
    Kept(h1::KeptBody),
    /// From warden's own HTTP/1.1 codec (bodyless requests).
    Wire(wire::WireBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Pooled(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Kept(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Self::Wire(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Pooled(body) => body.is_end_stream(),
            Self::Kept(body) => body.is_end_stream(),
            Self::Wire(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Pooled(body) => body.size_hint(),
            Self::Kept(body) => body.size_hint(),
            Self::Wire(body) => body.size_hint(),
        }
    }
}

/// A failed connection: a TLS failure (certificate, name, handshake) told apart from a
/// refused or unreachable host, for the log and the metrics.
fn connect_kind(error: &(dyn std::error::Error + 'static)) -> &'static str {
    // The connector's errors come as `io::Error`s, one inside another, with rustls's at the
    // bottom: follow each one's inner error as well as its source.
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return "tls";
        }
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => Some(inner),
            None => e.source(),
        };
    }
    "connect"
}

/// `Host` for HTTP/1.1 upstreams; HTTP/2 carries the authority in the URI (`:authority`)
/// and sends no `Host`.
fn set_host(headers: &mut HeaderMap, upstream: &Upstream, host: &pool::Host) {
    match upstream.protocol {
        UpstreamProtocol::Http1 => {
            if let Some(value) = host.host_header() {
                headers.insert(header::HOST, value.clone());
            }
        }
        UpstreamProtocol::Http2 => {
            headers.remove(header::HOST);
        }
    }
}

/// Remove the hop-by-hop headers, including every header the `Connection` field names.
///
/// Called before warden adds its own headers, so a client's `Connection: x-warden-subject`
/// can never remove a header warden sets.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, |_| false);
}

/// Remove the hop-by-hop headers, the headers the `Connection` field names, and those
/// `also` picks, reading the map once (see [`remove_present`]).
fn strip(headers: &mut HeaderMap, also: impl Fn(&HeaderName) -> bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    remove_present(headers, |name| {
        HOP_BY_HOP.contains(name) || named.contains(name) || also(name)
    });
}

/// Prepare the client's headers for the upstream: hop-by-hop and forgeable headers out,
/// the verified identity and warden's own address headers in.
pub(crate) fn prepare_request_headers(
    headers: &mut HeaderMap,
    forward: &ForwardHeaders,
    client: IpAddr,
    tls: bool,
) {
    let original_host = headers.get(header::HOST).cloned();
    strip(headers, |name| {
        CLIENT_ADDRESS_HEADERS.contains(name) || forward.remove.contains(name)
    });
    forward.apply_removed(headers);
    headers.insert(
        HeaderName::from_static("x-forwarded-for"),
        forwarded_for(client),
    );
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(if tls { "https" } else { "http" }),
    );
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// The `X-Forwarded-For` value of `client`. Requests come in runs from the same client
/// (a keep-alive connection, the proxy in front), so the last address's value is kept per
/// thread and shared (the value's bytes are reference counted) instead of formatted again.
fn forwarded_for(client: IpAddr) -> HeaderValue {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(IpAddr, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| {
        if let Some((ip, value)) = last.as_ref()
            && *ip == client
        {
            return value.clone();
        }
        // An address's text is always a valid field value; the text becomes its bytes
        // without a copy.
        let value = HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        *last = Some((client, value.clone()));
        value
    })
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
            remove_cookies: Default::default(),
            add: vec![(
                HeaderName::from_static("x-warden-subject"),
                HeaderValue::from_static("alice"),
            )],
        };
        prepare_request_headers(&mut headers, &forward, IpAddr::from([127, 0, 0, 1]), false);
        assert_eq!(headers["x-warden-subject"], "alice");
        assert!(headers.get("x-custom").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
    }

    #[test]
    fn upstream_base_paths_are_joined() {
        let up = Upstream::from_url("http://127.0.0.1:3000/api/").unwrap();
        let host = &up.hosts[0];
        assert_eq!(
            up.uri(host, "/docs/1?x=1").unwrap().to_string(),
            "http://127.0.0.1:3000/api/docs/1?x=1"
        );
        let up = Upstream::from_url("http://127.0.0.1:3000").unwrap();
        assert_eq!(
            up.uri(&up.hosts[0], "/").unwrap().to_string(),
            "http://127.0.0.1:3000/"
        );
    }
}
