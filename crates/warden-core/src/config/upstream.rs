//! `[upstreams.NAME]`: where allowed requests go — one or several hosts, HTTP or HTTPS,
//! HTTP/1.1 or HTTP/2, how load is spread and when a host is taken out of rotation.

use std::path::Path;
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::error::Collector;
use super::parse_duration;
use super::raw::{RawHealth, RawUpstream};
use super::tls::{KeyPair, key_pair, read_certificates};

/// An upstream: where allowed requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `http` or `https`, the same for every host.
    pub scheme: Scheme,
    /// The hosts, in the order written (at least one).
    pub hosts: Vec<Authority>,
    /// The base path every request's path is joined to (no trailing slash; empty for `/`).
    pub base_path: String,
    /// What the upstream speaks.
    pub protocol: UpstreamProtocol,
    /// How an `https` upstream is verified, and the certificate warden presents to it.
    pub tls: Option<UpstreamTls>,
    /// How a host is chosen for each request.
    pub balance: Balance,
    /// When a host that fails is taken out of rotation, and for how long.
    pub passive: PassiveHealth,
    /// The active health check, if any.
    pub health: Option<HealthCheck>,
}

impl Upstream {
    /// An upstream of one host from an absolute `http` URL, with every other setting at its
    /// default (for tests and programs that build configurations).
    ///
    /// # Errors
    /// When the URL is not absolute `http` or `https` without a query.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("{e}"))?;
        let (scheme, authority, base_path) = split_url(&uri).ok_or_else(|| {
            "expected an absolute http or https URL such as http://127.0.0.1:3000".to_owned()
        })?;
        Ok(Self {
            tls: (scheme == Scheme::HTTPS).then(UpstreamTls::default),
            scheme,
            hosts: vec![authority],
            base_path,
            protocol: UpstreamProtocol::Http1,
            balance: Balance::RoundRobin,
            passive: PassiveHealth::default(),
            health: None,
        })
    }

    /// The URI of `path_and_query` on `host`: the base path joined with the authorized path.
    ///
    /// # Errors
    /// When the joined path is not a valid request target.
    pub fn uri(&self, host: &Authority, path_and_query: &str) -> Result<Uri, http::Error> {
        // The joined text becomes the target's bytes without a second copy.
        let joined = bytes::Bytes::from(format!("{}{path_and_query}", self.base_path));
        let path = PathAndQuery::from_maybe_shared(joined)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(host.clone())
            .path_and_query(path)
            .build()
    }
}

/// What an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (the default).
    Http1,
    /// HTTP/2: negotiated by ALPN over TLS, prior knowledge (h2c) over plaintext. gRPC
    /// upstreams need it.
    Http2,
}

/// How an `https` upstream is verified.
#[derive(Debug, Clone, Default)]
pub struct UpstreamTls {
    /// The CA certificates the upstream's certificate must chain to; the system's roots
    /// when empty.
    pub roots: Vec<CertificateDer<'static>>,
    /// The name sent (SNI) and verified; the host's own name when unset.
    pub server_name: Option<String>,
    /// The certificate warden presents to the upstream, if it asks for one.
    pub client: Option<KeyPair>,
}

/// How a host is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each host in turn.
    RoundRobin,
    /// The host with the fewest requests in flight (ties in turn).
    LeastRequests,
}

/// Passive health: consecutive failures take a host out of rotation for a while.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveHealth {
    /// Consecutive failures (connection refused, reset, 502/503/504 from the host) that
    /// eject it.
    pub eject_after: u32,
    /// How long an ejected host stays out.
    pub eject_for: Duration,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            eject_after: 5,
            eject_for: Duration::from_secs(10),
        }
    }
}

/// The active health check: `GET path` on every host at an interval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path asked (`/health` by default).
    pub path: PathAndQuery,
    /// Time between checks.
    pub interval: Duration,
    /// Time allowed for an answer.
    pub timeout: Duration,
}

/// Scheme, authority and base path of an absolute URL without a query.
fn split_url(uri: &Uri) -> Option<(Scheme, Authority, String)> {
    let scheme = uri.scheme()?.clone();
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return None;
    }
    if uri.query().is_some() || uri.authority()?.as_str().contains('@') {
        return None;
    }
    Some((
        scheme,
        uri.authority()?.clone(),
        uri.path().trim_end_matches('/').to_owned(),
    ))
}

/// `[upstreams.NAME]`, checked.
pub(crate) fn upstream(
    name: &str,
    raw: &Spanned<RawUpstream>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<Upstream> {
    let u = raw.get_ref();
    let field = |f: &str| format!("upstreams.{name}.{f}");
    let urls: Vec<&Spanned<String>> = match (&u.url, u.urls.is_empty()) {
        (Some(url), true) => vec![url],
        (None, false) => u.urls.iter().collect(),
        (Some(url), false) => {
            errors.at(url.span(), field("url"), "set `url` or `urls`, not both");
            return None;
        }
        (None, true) => {
            errors.at(
                raw.span(),
                format!("upstreams.{name}"),
                "set `url = \"http://host:port\"` or `urls = [...]`",
            );
            return None;
        }
    };
    let mut parsed: Vec<(Scheme, Authority, String)> = Vec::new();
    for url in &urls {
        let f = if u.url.is_some() {
            field("url")
        } else {
            field("urls")
        };
        match url
            .get_ref()
            .parse::<Uri>()
            .ok()
            .as_ref()
            .and_then(split_url)
        {
            Some(parts) => {
                if let Some((scheme, _, base)) = parsed.first()
                    && (scheme != &parts.0 || base != &parts.2)
                {
                    errors.at(
                        url.span(),
                        f,
                        "every host of an upstream has the same scheme and base path",
                    );
                    continue;
                }
                parsed.push(parts);
            }
            None => errors.at(
                url.span(),
                f,
                "expected an absolute http or https URL such as http://127.0.0.1:3000",
            ),
        }
    }
    let protocol = match u.protocol.as_ref().map(|p| (p, p.get_ref().as_str())) {
        None | Some((_, "http1")) => UpstreamProtocol::Http1,
        Some((_, "h2" | "http2")) => UpstreamProtocol::Http2,
        Some((p, _)) => {
            errors.at(p.span(), field("protocol"), "expected \"http1\" or \"h2\"");
            UpstreamProtocol::Http1
        }
    };
    let balance = match u.balance.as_ref().map(|b| (b, b.get_ref().as_str())) {
        None | Some((_, "round_robin")) => Balance::RoundRobin,
        Some((_, "least_requests")) => Balance::LeastRequests,
        Some((b, _)) => {
            errors.at(
                b.span(),
                field("balance"),
                "expected \"round_robin\" or \"least_requests\"",
            );
            Balance::RoundRobin
        }
    };
    let defaults = PassiveHealth::default();
    let passive = PassiveHealth {
        eject_after: match &u.eject_after {
            Some(n) if *n.get_ref() == 0 => {
                errors.at(n.span(), field("eject_after"), "must be at least 1");
                defaults.eject_after
            }
            Some(n) => *n.get_ref(),
            None => defaults.eject_after,
        },
        eject_for: u
            .eject_for
            .as_ref()
            .and_then(|v| parse_duration(v, &field("eject_for"), errors))
            .unwrap_or(defaults.eject_for),
    };
    let health = u
        .health
        .as_ref()
        .and_then(|h| health_check(h, &field("health"), errors));

    let https = parsed.first().is_some_and(|(s, _, _)| *s == Scheme::HTTPS);
    let tls_fields = [
        u.ca.as_ref().map(|v| (v.span(), "ca")),
        u.server_name.as_ref().map(|v| (v.span(), "server_name")),
        u.client_certificate
            .as_ref()
            .map(|v| (v.span(), "client_certificate")),
    ];
    if !https && !parsed.is_empty() {
        for (span, f) in tls_fields.into_iter().flatten() {
            errors.at(span, field(f), "TLS settings need an https upstream");
        }
    }
    let tls = https.then(|| UpstreamTls {
        roots: u
            .ca
            .as_ref()
            .and_then(|ca| read_certificates(base_dir, ca, &field("ca"), errors))
            .unwrap_or_default(),
        server_name: u.server_name.as_ref().map(|s| s.get_ref().clone()),
        client: u.client_certificate.as_ref().and_then(|pair| {
            let pair = pair.get_ref();
            key_pair(
                base_dir,
                (&pair.cert, &pair.key),
                &field("client_certificate"),
                errors,
            )
        }),
    });

    let (scheme, _, base_path) = parsed.first()?.clone();
    Some(Upstream {
        scheme,
        hosts: parsed.into_iter().map(|(_, host, _)| host).collect(),
        base_path,
        protocol,
        tls,
        balance,
        passive,
        health,
    })
}

fn health_check(
    raw: &Spanned<RawHealth>,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<HealthCheck> {
    let h = raw.get_ref();
    let path = match &h.path {
        None => PathAndQuery::from_static("/health"),
        Some(p) => match p.get_ref().parse::<PathAndQuery>() {
            Ok(path) if p.get_ref().starts_with('/') => path,
            _ => {
                errors.at(
                    p.span(),
                    format!("{field}.path"),
                    "expected a path such as /health",
                );
                return None;
            }
        },
    };
    let interval = h
        .interval
        .as_ref()
        .and_then(|v| parse_duration(v, &format!("{field}.interval"), errors))
        .unwrap_or(Duration::from_secs(5));
    let timeout = h
        .timeout
        .as_ref()
        .and_then(|v| parse_duration(v, &format!("{field}.timeout"), errors))
        .unwrap_or(Duration::from_secs(1));
    if interval.is_zero() {
        errors.at(
            raw.span(),
            format!("{field}.interval"),
            "must be longer than zero",
        );
        return None;
    }
    Some(HealthCheck {
        path,
        interval,
        timeout,
    })
}
