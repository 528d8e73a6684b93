//! Configuration: TOML parsed into checked types once, at the boundary.
//!
//! [`Config::load`] reads a file (and the key files it names), checks everything, and
//! returns either a [`Config`] that the engine uses as it is, or every problem found, each
//! naming the file, the line and the field.

mod alerts;
pub(crate) mod error;
mod hygiene;
mod limits;
mod network;
pub mod oidc;
pub(crate) mod raw;
mod sources;
mod telemetry;
mod tls;
mod upstream;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, Method};
use toml::Spanned;

pub use self::alerts::{AlertKey, AlertRule, AlertSettings, Webhook};
use self::error::Collector;
pub use self::error::{ConfigError, ConfigErrors};
pub use self::limits::{Backend, FailMode, StateSettings};
use self::raw::{RawConfig, RawIdentityHeaders, RawRoute};
pub use self::telemetry::{CollectorTls, SubjectInSpans, TracingSettings};
pub use self::tls::{Http2Settings, KeyPair, ListenerCertificate, ListenerTls, TlsVersion};
pub use self::upstream::{
    Balance, HealthCheck, PassiveHealth, Upstream, UpstreamProtocol, UpstreamTls,
};
use crate::auth::Source;
use crate::auth::jwt::JwtSource;
use crate::route::{Route, Router};

/// The `[gateway]` settings the decisions depend on: how refusals are branded and whose
/// forwarding headers are believed.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// The realm of every challenge.
    pub realm: Arc<str>,
    /// The prefix of every problem `type` URI; the reason code is appended.
    pub problem_type_base: Arc<str>,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: crate::network::IpRules,
    /// The header trusted proxies report the chain in.
    pub client_address_header: crate::network::client::ForwardedHeader,
}

/// What only a server running the engine reads — listeners, upstream time limits, the
/// worker count (from `[gateway]`) and the decision log (`[log]`). Checked here with the rest
/// of the file, so their errors name the line too; the engine never reads them.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// Where the admin listener (health, metrics) listens, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Time allowed to connect to an upstream.
    pub connect_timeout: Duration,
    /// Time allowed for an upstream to send its response head (and for a client to send
    /// the body the WAF reads).
    pub upstream_timeout: Duration,
    /// Worker threads; the number of cores when unset.
    pub workers: Option<usize>,
    /// How long a stopping server lets requests in flight finish (10 s by default).
    pub drain_timeout: Duration,
    /// Whether listeners are bound with `SO_REUSEPORT` (`[gateway] reuse_port`), so a new
    /// process can listen on the same address before this one stops.
    pub reuse_port: bool,
    /// The OTLP export of request spans (`[tracing]`); none when the section is absent.
    pub tracing: Option<TracingSettings>,
    /// The decision log.
    pub log: LogSettings,
    /// Who may use the admin listener.
    pub admin: AdminSettings,
    /// TLS on the proxy listener, if configured.
    pub tls: Option<ListenerTls>,
    /// HTTP/2 to clients and its limits.
    pub http2: Http2Settings,
    /// Alert rules over refusals and where their alerts go (`[alerts]`).
    pub alerts: AlertSettings,
}

/// Who may use the admin listener (`[admin]`). `/healthz` is always open; `/reload`,
/// `/revoke` and `/decisions/recent` (which shows clients and subjects) need a bearer token
/// whose SHA-256 is listed, or a client certificate of `client_ca`, and are refused to
/// everyone while neither is configured; `/metrics` is open unless `metrics = "token"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminSettings {
    /// The SHA-256 of each accepted admin token.
    pub token_hashes: Vec<[u8; 32]>,
    /// Whether `/metrics` needs a token too.
    pub metrics_need_token: bool,
    /// The CAs of `[admin] client_ca`: a client certificate of one of them is an admin
    /// credential, beside the tokens. When set, the admin listener serves TLS with the
    /// certificates of `[gateway.tls]` and asks for a client certificate.
    pub client_roots: Vec<rustls_pki_types::CertificateDer<'static>>,
}

impl AdminSettings {
    /// Whether `token` is an admin token (compared in constant time, by its hash).
    #[must_use]
    pub fn accepts(&self, token: &str) -> bool {
        use sha2::Digest as _;
        use subtle::ConstantTimeEq as _;
        let hash: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        self.token_hashes
            .iter()
            .fold(false, |found, h| found | bool::from(h.ct_eq(&hash)))
    }
}

/// Where decision log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// One JSON line per decision on standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Not written.
    Off,
}

/// Decision log settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Where lines go.
    pub target: LogTarget,
    /// Whether allowed requests are logged too (refusals always are).
    pub allowed: bool,
}

/// The headers that carry the verified identity to the upstream.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    /// The subject.
    pub subject: HeaderName,
    /// Roles, comma-separated.
    pub roles: HeaderName,
    /// Scopes, space-separated.
    pub scopes: HeaderName,
    /// The name of the identity source.
    pub source: HeaderName,
    /// The decision id.
    pub decision_id: HeaderName,
    /// Other headers no client may send upstream.
    pub strip: Vec<HeaderName>,
    /// All of the above, gathered once at load: every request shares this list.
    removed: Arc<[HeaderName]>,
}

impl IdentityHeaders {
    /// Every header removed from a client's request before it is forwarded.
    #[must_use]
    pub fn all(&self) -> Arc<[HeaderName]> {
        Arc::clone(&self.removed)
    }

    fn gather(mut self) -> Self {
        let mut all = vec![
            self.subject.clone(),
            self.roles.clone(),
            self.scopes.clone(),
            self.source.clone(),
            self.decision_id.clone(),
        ];
        all.extend(self.strip.iter().cloned());
        self.removed = all.into();
        self
    }
}

/// Request headers that rewrite the URL or the method in some upstream frameworks; removed
/// from every forwarded request.
pub const CLIENT_FORBIDDEN_HEADERS: [&str; 8] = [
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Request headers through which TLS terminators pass a client certificate on (RFC 9440's
/// `Client-Cert` and `Client-Cert-Chain`, Envoy's `X-Forwarded-Client-Cert`, and the
/// common `X-SSL-Client-*` forms); removed from every forwarded request. warden terminates
/// the TLS connection itself and reads the certificate from it: a client that sends one of
/// these is claiming a certificate it did not present, and no upstream may believe it.
pub const CLIENT_CERTIFICATE_HEADERS: [&str; 7] = [
    "client-cert",
    "client-cert-chain",
    "x-forwarded-client-cert",
    "x-client-cert",
    "x-ssl-client-cert",
    "x-ssl-client-verify",
    "x-ssl-client-s-dn",
];

/// A JWKS document to fetch and refresh, for the gateway to keep current.
#[derive(Debug, Clone)]
pub struct JwksFetch {
    /// The source's name.
    pub source: Arc<str>,
    /// Where to fetch the key set.
    pub url: String,
    /// How often to refresh it (and the least time between refreshes on an unknown `kid`).
    pub refresh: Duration,
}

/// Why [`Config::set_fetched_keys`] refused a JWKS document.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchedKeysError {
    /// No identity source has this name.
    #[error("no JWT source named `{0}`")]
    UnknownSource(String),
    /// The source with this name is not a JWT source (an API key or Basic source).
    #[error("no JWT source named `{0}`")]
    NotJwt(String),
    /// The document is not a JWK set, or holds no usable public signing key.
    #[error(transparent)]
    Jwks(#[from] crate::auth::jwt::JwksError),
}

/// `serde_json::Error` (inside [`JwksError`](crate::auth::jwt::JwksError)) cannot be
/// compared; two JWKS errors are equal when they are the same variant and say the same.
impl PartialEq for FetchedKeysError {
    fn eq(&self, other: &Self) -> bool {
        use crate::auth::jwt::JwksError;
        match (self, other) {
            (Self::UnknownSource(a), Self::UnknownSource(b))
            | (Self::NotJwt(a), Self::NotJwt(b)) => a == b,
            (Self::Jwks(JwksError::NoKeys), Self::Jwks(JwksError::NoKeys)) => true,
            (Self::Jwks(JwksError::Json(a)), Self::Jwks(JwksError::Json(b))) => {
                a.to_string() == b.to_string()
            }
            _ => false,
        }
    }
}

/// A checked configuration.
#[derive(Debug)]
pub struct Config {
    /// The file it was read from.
    pub origin: PathBuf,
    /// The `[gateway]` settings decisions depend on.
    pub gateway: GatewaySettings,
    /// What only the server reads: listeners, upstream time limits, workers, the log.
    pub serve: ServeSettings,
    /// Identity headers.
    pub identity_headers: IdentityHeaders,
    /// Upstreams by name.
    pub upstreams: BTreeMap<Arc<str>, Upstream>,
    pub(crate) sources: HashMap<Arc<str>, Arc<Source>>,
    pub(crate) router: Router,
    pub(crate) authorization: Option<crate::authz::Authorization>,
    /// Network rules checked before routing.
    pub(crate) network: crate::network::IpRules,
    /// Rate limits, in file order.
    pub limits: Vec<crate::limit::LimitPolicy>,
    /// Bans after bursts of refusals.
    pub bans: Option<crate::limit::BanPolicy>,
    /// Where counters, bans and revocations live.
    pub state: StateSettings,
    /// Geo rules, checked after the network rules.
    pub(crate) geo: Option<crate::network::geo::GeoRules>,
    /// Path policies, body limits, the WAF, CSRF and CORS.
    pub hygiene: crate::hygiene::HygieneSettings,
    /// warden as another proxy's external authorizer, when configured.
    pub forward_auth: Option<ForwardAuthSettings>,
    /// Browser sessions of `oidc` sources (`[sessions]`).
    pub sessions: Option<Arc<crate::session::SessionSettings>>,
}

/// warden as the external authorizer of another proxy (`[forward_auth]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAuthSettings {
    /// The HTTP listener (NGINX `auth_request`, Caddy `forward_auth`, Traefik
    /// `forwardAuth`, Envoy `ext_authz` in HTTP mode).
    pub listen: Option<SocketAddr>,
    /// The gRPC listener (Envoy `ext_authz`, `envoy.service.auth.v3.Authorization`).
    pub grpc_listen: Option<SocketAddr>,
    /// The path prefix of Envoy's HTTP mode: `PREFIX/original/path` is asked as
    /// `/original/path` with the request's own method.
    pub envoy_prefix: String,
    /// The header of a forward-auth question that carries the client certificate the asking
    /// proxy's TLS listener received, for the `mtls` sources: URL-encoded PEM (NGINX's
    /// `$ssl_client_escaped_cert`) or base64 DER, several comma-separated (Traefik's
    /// `X-Forwarded-Tls-Client-Cert`, Caddy's `certificate_der_base64`). Read only from a
    /// trusted proxy, which must set it on every question (empty without a certificate) so
    /// a client's own never passes; `None`: no question carries a certificate.
    pub client_certificate_header: Option<http::HeaderName>,
}

impl Config {
    /// Read and check a configuration file.
    ///
    /// # Errors
    /// Every problem found, each naming the file, the line and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                line: 0,
                column: 0,
                field: "(file)".to_owned(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        Self::parse(&text, path)
    }

    /// Check a configuration held in memory. Key files it names are read relative to the
    /// directory of `origin`.
    ///
    /// # Errors
    /// Every problem found, each naming `origin`, the line and the field.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigErrors> {
        let mut errors = Collector::new(origin, text);
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                errors.at(
                    span,
                    field_of_toml_error(text, e.span()),
                    e.message().to_owned(),
                );
                return errors.finish(()).and_then(|()| unreachable_config());
            }
        };
        let base_dir = origin.parent().map(Path::to_path_buf).unwrap_or_default();

        let (gateway, serve) = gateway_settings(&raw, &base_dir, &mut errors);
        let forward_auth = forward_auth_settings(&raw, &mut errors);
        let log = LogSettings {
            target: match raw.log.decisions.as_deref() {
                None | Some("stdout") => LogTarget::Stdout,
                Some("off") => LogTarget::Off,
                Some(path) => LogTarget::File(base_dir.join(path)),
            },
            allowed: raw.log.allowed.unwrap_or(true),
        };
        let identity_headers = identity_headers(&raw.identity_headers, &mut errors);

        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &raw.upstreams {
            if let Some(checked) = upstream::upstream(name, upstream, &base_dir, &mut errors) {
                upstreams.insert(Arc::from(name.as_str()), checked);
            }
        }

        let sessions = oidc::sessions(raw.sessions.as_ref(), &base_dir, &mut errors);
        let mut sources = HashMap::new();
        for (name, source) in &raw.sources {
            if let Some(checked) = sources::check_source(
                name,
                source,
                &base_dir,
                sessions.as_ref(),
                // Where client certificates can come from: warden's own TLS handshake,
                // Envoy's `ext_authz` report of its downstream's, or the configured header
                // of a forward-auth proxy.
                raw.gateway.tls.is_some()
                    || raw.forward_auth.as_ref().is_some_and(|f| {
                        let f = f.get_ref();
                        f.grpc_listen.is_some()
                            || (f.listen.is_some() && f.client_certificate_header.is_some())
                    }),
                &mut errors,
            ) {
                sources.insert(Arc::from(name.as_str()), Arc::new(checked));
            }
        }

        let mut routes = Vec::new();
        let mut names = HashSet::new();
        for (index, route) in raw.routes.iter().enumerate() {
            if let Some(route) =
                check_route(index, route, &upstreams, &sources, &base_dir, &mut errors)
            {
                // Unnamed routes are named after their path; the same path with other
                // methods is the same resource, so only explicit names must be unique.
                let named = raw
                    .routes
                    .get(index)
                    .is_some_and(|r| r.get_ref().name.is_some());
                if named && !names.insert(Arc::clone(&route.name)) {
                    let span = raw.routes.get(index).map_or(0..0, Spanned::span);
                    errors.at(
                        span,
                        route_field(index, "name"),
                        format!("route name `{}` is used twice", route.name),
                    );
                }
                routes.push(route);
            }
        }
        let router = match Router::new(routes) {
            Ok(router) => Some(router),
            Err((index, message)) => {
                let span = raw
                    .routes
                    .get(index)
                    .map_or(0..0, |r| r.get_ref().path.span());
                errors.at(span, route_field(index, "path"), message);
                None
            }
        };

        let network =
            network::ip_rules(&raw.network.rules, "network.rules", &base_dir, &mut errors);
        let authorization = raw
            .authorization
            .as_ref()
            .and_then(|a| crate::authz::load(a, &base_dir, &mut errors));

        let route_names: Vec<Arc<str>> = router
            .as_ref()
            .map(|r| r.routes().iter().map(|r| Arc::clone(&r.name)).collect())
            .unwrap_or_default();
        let limits = limits::limits(&raw.limits, &route_names, &mut errors);
        let bans = limits::bans(raw.bans.as_ref(), &mut errors);
        let state = limits::state(&raw.state, &mut errors);
        let geo = raw
            .geo
            .as_ref()
            .and_then(|g| network::geo(g, &base_dir, &mut errors));

        let mut hygiene = hygiene::settings(&raw, &mut errors);
        for source in sources.values() {
            match source.as_ref() {
                Source::ApiKey(k) => hygiene.credential_headers.push(k.header.clone()),
                Source::Jwt(j) => hygiene.session_cookies.extend(j.cookie.clone()),
                Source::Oidc(o) => hygiene.session_cookies.extend([
                    Arc::clone(&o.sessions.cookie),
                    Arc::clone(&o.sessions.login_cookie),
                ]),
                Source::Basic(_) | Source::Mtls(_) => {}
            }
        }

        let admin = admin_settings(&raw, &base_dir, &mut errors);
        let alerts = alerts::settings(&raw.alerts, &mut errors);
        let tracing = raw
            .tracing
            .as_ref()
            .and_then(|t| telemetry::settings(t, &base_dir, &mut errors));
        let serve = ServeSettings {
            log,
            admin,
            alerts,
            tracing,
            ..serve
        };
        let config = router.map(|router| Self {
            origin: origin.to_path_buf(),
            gateway,
            serve,
            identity_headers,
            upstreams,
            sources,
            router,
            authorization,
            network,
            limits,
            bans,
            state,
            geo,
            hygiene,
            forward_auth,
            sessions,
        });
        match (errors.finish(()), config) {
            (Ok(()), Some(config)) => Ok(config),
            (Err(e), _) => Err(e),
            (Ok(()), None) => unreachable_config(),
        }
    }

    /// The JWT sources whose keys come from a URL and have none yet (never fetched, or every
    /// fetch failed): a server is not ready while there are any.
    #[must_use]
    pub fn key_sets_missing(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = self
            .sources
            .values()
            .filter_map(|s| match s.as_ref() {
                Source::Jwt(jwt)
                    if jwt.jwks_url.is_some() && jwt.fetched_keys.load().is_empty() =>
                {
                    Some(Arc::clone(&jwt.name))
                }
                Source::Oidc(oidc)
                    if oidc.discovery().is_none() || oidc.jwt.fetched_keys.load().is_empty() =>
                {
                    Some(Arc::clone(oidc.name()))
                }
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    /// The CA certificates of every `mtls` source (sources in name order, each CA once):
    /// the TLS listener asks clients for a certificate of one of these. Empty when no source
    /// is `mtls`, and the listener then asks for none.
    #[must_use]
    pub fn client_certificate_roots(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        let mut sources: Vec<&crate::auth::mtls::MtlsSource> = self
            .sources
            .values()
            .filter_map(|s| match s.as_ref() {
                Source::Mtls(m) => Some(m),
                _ => None,
            })
            .collect();
        sources.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out: Vec<rustls_pki_types::CertificateDer<'static>> = Vec::new();
        for root in sources.iter().flat_map(|s| s.roots()) {
            if !out.contains(root) {
                out.push(root.clone());
            }
        }
        out
    }

    /// The JWKS documents the gateway must fetch and keep current.
    #[must_use]
    pub fn jwks_fetches(&self) -> Vec<JwksFetch> {
        let mut out: Vec<JwksFetch> = self
            .sources
            .values()
            .filter_map(|s| match s.as_ref() {
                Source::Jwt(JwtSource {
                    name,
                    jwks_url: Some(url),
                    jwks_refresh,
                    ..
                }) => Some(JwksFetch {
                    source: Arc::clone(name),
                    url: url.clone(),
                    refresh: *jwks_refresh,
                }),
                // An OpenID provider's key set is where its discovery document says.
                Source::Oidc(oidc) => oidc.discovery().map(|d| JwksFetch {
                    source: Arc::clone(oidc.name()),
                    url: d.jwks_uri.clone(),
                    refresh: oidc.jwt.jwks_refresh,
                }),
                _ => None,
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Replace the fetched keys of a JWT source with those of a JWKS document. When the
    /// keys change, the source's verified-token cache is flushed.
    ///
    /// # Errors
    /// [`FetchedKeysError::UnknownSource`] or [`FetchedKeysError::NotJwt`] when the source
    /// is unknown or not a JWT source, [`FetchedKeysError::Jwks`] when the document is not a
    /// JWK set or holds no usable key. The source's keys are unchanged.
    pub fn set_fetched_keys(&self, source: &str, jwks: &[u8]) -> Result<usize, FetchedKeysError> {
        let jwt = match self.sources.get(source).map(AsRef::as_ref) {
            Some(Source::Jwt(jwt)) => jwt,
            Some(Source::Oidc(oidc)) => &oidc.jwt,
            Some(_) => return Err(FetchedKeysError::NotJwt(source.to_owned())),
            None => return Err(FetchedKeysError::UnknownSource(source.to_owned())),
        };
        let keys = crate::auth::jwt::KeySet::from_jwks(jwks)?;
        let count = keys.len();
        jwt.set_fetched_keys(keys);
        Ok(count)
    }

    /// The `oidc` sources, by name.
    pub fn oidc_sources(&self) -> impl Iterator<Item = &crate::auth::oidc::OidcSource> {
        self.sources.values().filter_map(|s| match s.as_ref() {
            Source::Oidc(oidc) => Some(oidc),
            _ => None,
        })
    }

    /// The `oidc` source of this name.
    #[must_use]
    pub fn oidc_source(&self, name: &str) -> Option<&crate::auth::oidc::OidcSource> {
        match self.sources.get(name).map(AsRef::as_ref) {
            Some(Source::Oidc(oidc)) => Some(oidc),
            _ => None,
        }
    }

    /// The routes, in file order, for listings and tools.
    #[must_use]
    pub fn routes(&self) -> &[Route] {
        self.router.routes()
    }
}

/// A parse that failed always carries at least one error; this keeps the types honest
/// without a panic.
fn unreachable_config() -> Result<Config, ConfigErrors> {
    Err(ConfigErrors(vec![ConfigError {
        file: PathBuf::new(),
        line: 0,
        column: 0,
        field: "(config)".to_owned(),
        message: "the configuration could not be checked".to_owned(),
    }]))
}

/// The dotted key at the start of a TOML error's line, when there is one.
fn field_of_toml_error(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return "(toml)".to_owned();
    };
    let start = text
        .get(..span.start)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text
        .get(start..)
        .and_then(|t| t.lines().next())
        .unwrap_or("");
    match line.split_once('=') {
        Some((key, _)) if !key.trim().is_empty() => key.trim().to_owned(),
        _ => line.trim().trim_matches(['[', ']']).to_owned(),
    }
}

fn route_field(index: usize, field: &str) -> String {
    format!("routes[{index}].{field}")
}

pub(crate) fn parse_duration(
    value: &Spanned<String>,
    field: &str,
    errors: &mut Collector<'_>,
) -> Option<Duration> {
    match humantime::parse_duration(value.get_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.at(
                value.span(),
                field,
                format!("not a duration such as `30s` or `5m`: {e}"),
            );
            None
        }
    }
}

fn admin_settings(raw: &RawConfig, base_dir: &Path, errors: &mut Collector<'_>) -> AdminSettings {
    let Some(section) = &raw.admin else {
        return AdminSettings::default();
    };
    let a = section.get_ref();
    let mut token_hashes = Vec::new();
    for (i, t) in a.tokens.iter().enumerate() {
        let decoded = hex::decode(t.get_ref().trim()).ok();
        match decoded.and_then(|d| <[u8; 32]>::try_from(d).ok()) {
            Some(hash) => token_hashes.push(hash),
            None => errors.at(
                t.span(),
                format!("admin.tokens[{i}]"),
                "expected the hex SHA-256 of a token (64 hex digits), never the token itself",
            ),
        }
    }
    let metrics_need_token = match a.metrics.as_ref().map(|m| (m, m.get_ref().as_str())) {
        None | Some((_, "open")) => false,
        Some((_, "token")) => true,
        Some((m, _)) => {
            errors.at(m.span(), "admin.metrics", "expected `open` or `token`");
            false
        }
    };
    let client_roots = match &a.client_ca {
        None => Vec::new(),
        Some(ca) => {
            if raw.gateway.tls.is_none() {
                errors.at(
                    ca.span(),
                    "admin.client_ca",
                    "client certificates need TLS: the admin listener serves the certificates of `[gateway.tls]`, which is not configured",
                );
            }
            tls::read_certificates(base_dir, ca, "admin.client_ca", errors).unwrap_or_default()
        }
    };
    AdminSettings {
        token_hashes,
        metrics_need_token,
        client_roots,
    }
}

/// A listening address, or an error at its span.
fn addr(v: &Spanned<String>, field: &str, errors: &mut Collector<'_>) -> Option<SocketAddr> {
    match v.get_ref().parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            errors.at(
                v.span(),
                field,
                "expected an address such as 127.0.0.1:8080",
            );
            None
        }
    }
}

fn forward_auth_settings(
    raw: &RawConfig,
    errors: &mut Collector<'_>,
) -> Option<ForwardAuthSettings> {
    let section = raw.forward_auth.as_ref()?;
    let f = section.get_ref();
    let listen = f
        .listen
        .as_ref()
        .and_then(|v| addr(v, "forward_auth.listen", errors));
    let grpc_listen = f
        .grpc_listen
        .as_ref()
        .and_then(|v| addr(v, "forward_auth.grpc_listen", errors));
    if raw.gateway.trusted_proxies.is_empty() {
        errors.at(
            section.span(),
            "forward_auth",
            "only trusted proxies may ask: set `[gateway] trusted_proxies` to the proxies' addresses",
        );
    }
    if f.listen.is_none() && f.grpc_listen.is_none() {
        errors.at(
            section.span(),
            "forward_auth",
            "set `listen` (HTTP), `grpc_listen` (Envoy gRPC) or both",
        );
    }
    let envoy_prefix = match &f.envoy_prefix {
        None => "/envoy".to_owned(),
        Some(p) => {
            let text = p.get_ref().trim_end_matches('/');
            if !text.starts_with('/') || text.len() < 2 || text.contains(['?', '#', '%']) {
                errors.at(
                    p.span(),
                    "forward_auth.envoy_prefix",
                    "expected a path prefix such as /envoy",
                );
            }
            text.to_owned()
        }
    };
    let client_certificate_header = f.client_certificate_header.as_ref().and_then(|h| {
        let name = http::HeaderName::from_bytes(h.get_ref().trim().as_bytes()).ok();
        if name.is_none() {
            errors.at(
                h.span(),
                "forward_auth.client_certificate_header",
                "expected a header name such as X-Client-Cert",
            );
        } else if f.listen.is_none() {
            errors.at(
                h.span(),
                "forward_auth.client_certificate_header",
                "the header is read by the HTTP listener: set `listen` too",
            );
        }
        name
    });
    Some(ForwardAuthSettings {
        listen,
        grpc_listen,
        envoy_prefix,
        client_certificate_header,
    })
}

/// `[gateway]`: what decisions depend on, and what only the server reads (with the log
/// still to be filled in).
fn gateway_settings(
    raw: &RawConfig,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> (GatewaySettings, ServeSettings) {
    let g = &raw.gateway;
    let default_listen = SocketAddr::from(([127, 0, 0, 1], 8080));
    let serve = ServeSettings {
        listen: g
            .listen
            .as_ref()
            .and_then(|v| addr(v, "gateway.listen", errors))
            .unwrap_or(default_listen),
        admin_listen: g
            .admin_listen
            .as_ref()
            .and_then(|v| addr(v, "gateway.admin_listen", errors)),
        connect_timeout: g
            .connect_timeout
            .as_ref()
            .and_then(|v| parse_duration(v, "gateway.connect_timeout", errors))
            .unwrap_or(Duration::from_secs(2)),
        upstream_timeout: g
            .upstream_timeout
            .as_ref()
            .and_then(|v| parse_duration(v, "gateway.upstream_timeout", errors))
            .unwrap_or(Duration::from_secs(30)),
        workers: g.workers,
        drain_timeout: g
            .drain_timeout
            .as_ref()
            .and_then(|v| parse_duration(v, "gateway.drain_timeout", errors))
            .unwrap_or(Duration::from_secs(10)),
        reuse_port: g.reuse_port,
        tracing: None,
        log: LogSettings {
            target: LogTarget::Stdout,
            allowed: true,
        },
        admin: AdminSettings::default(),
        tls: g
            .tls
            .as_ref()
            .and_then(|tls| tls::listener_tls(base_dir, tls, errors)),
        http2: tls::http2_settings(g.http2.as_ref(), errors),
        alerts: AlertSettings::default(),
    };
    let gateway = GatewaySettings {
        realm: Arc::from(g.realm.as_deref().unwrap_or("warden")),
        problem_type_base: Arc::from(
            g.problem_type_base
                .as_deref()
                .unwrap_or("urn:warden:problem:"),
        ),
        trusted_proxies: network::trusted_proxies(&g.trusted_proxies, errors),
        client_address_header: g.client_address_header.unwrap_or_default(),
    };
    (gateway, serve)
}

fn header_name(
    value: Option<&Spanned<String>>,
    default: &'static str,
    field: &str,
    errors: &mut Collector<'_>,
) -> HeaderName {
    match value {
        None => HeaderName::from_static(default),
        Some(v) => HeaderName::from_bytes(v.get_ref().as_bytes()).unwrap_or_else(|_| {
            errors.at(v.span(), field, "not a valid header name");
            HeaderName::from_static(default)
        }),
    }
}

fn identity_headers(raw: &RawIdentityHeaders, errors: &mut Collector<'_>) -> IdentityHeaders {
    let strip: Vec<HeaderName> = raw
        .strip
        .iter()
        .enumerate()
        .filter_map(
            |(i, v)| match HeaderName::from_bytes(v.get_ref().as_bytes()) {
                Ok(h) => Some(h),
                Err(_) => {
                    errors.at(
                        v.span(),
                        format!("identity_headers.strip[{i}]"),
                        "not a valid header name",
                    );
                    None
                }
            },
        )
        .collect();
    // Headers some frameworks and proxies read as the "real" URL or method. A client that
    // sets them could reach another path or method than the one authorized: never forwarded.
    let mut strip = strip;
    strip.extend(
        CLIENT_FORBIDDEN_HEADERS
            .iter()
            .chain(&CLIENT_CERTIFICATE_HEADERS)
            .map(|h| HeaderName::from_static(h)),
    );
    IdentityHeaders {
        subject: header_name(
            raw.subject.as_ref(),
            "x-warden-subject",
            "identity_headers.subject",
            errors,
        ),
        roles: header_name(
            raw.roles.as_ref(),
            "x-warden-roles",
            "identity_headers.roles",
            errors,
        ),
        scopes: header_name(
            raw.scopes.as_ref(),
            "x-warden-scopes",
            "identity_headers.scopes",
            errors,
        ),
        source: header_name(
            raw.source.as_ref(),
            "x-warden-auth-source",
            "identity_headers.source",
            errors,
        ),
        decision_id: header_name(
            raw.decision_id.as_ref(),
            "x-warden-decision-id",
            "identity_headers.decision_id",
            errors,
        ),
        strip,
        removed: Arc::from([]),
    }
    .gather()
}

fn check_route(
    index: usize,
    spanned: &Spanned<RawRoute>,
    upstreams: &BTreeMap<Arc<str>, Upstream>,
    sources: &HashMap<Arc<str>, Arc<Source>>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<Route> {
    let raw = spanned.get_ref();
    let before = errors.errors.len();
    let route_hygiene = hygiene::route(index, raw, errors);
    let route_network = network::ip_rules(
        &raw.network,
        &route_field(index, "network"),
        base_dir,
        errors,
    );
    let path = raw.path.get_ref();
    if !path.starts_with('/') {
        errors.at(
            raw.path.span(),
            route_field(index, "path"),
            "a route path starts with `/`",
        );
    }
    let methods: Vec<Method> = match &raw.methods {
        None => vec![Method::GET],
        Some(list) => list
            .get_ref()
            .iter()
            .filter_map(
                |m| match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                    Ok(m) => Some(m),
                    Err(_) => {
                        errors.at(
                            list.span(),
                            route_field(index, "methods"),
                            format!("`{m}` is not an HTTP method"),
                        );
                        None
                    }
                },
            )
            .collect(),
    };
    if methods.is_empty() {
        errors.at(
            spanned.span(),
            route_field(index, "methods"),
            "a route needs at least one method",
        );
    }
    let upstream = match upstreams.get_key_value(raw.upstream.get_ref().as_str()) {
        Some((name, _)) => Some(Arc::clone(name)),
        None => {
            errors.at(
                raw.upstream.span(),
                route_field(index, "upstream"),
                format!("no upstream named `{}`", raw.upstream.get_ref()),
            );
            None
        }
    };
    let mut route_sources = Vec::new();
    for (i, name) in raw.auth.iter().enumerate() {
        match sources.get(name.get_ref().as_str()) {
            Some(s) => route_sources.push(Arc::clone(s)),
            None => errors.at(
                name.span(),
                format!("routes[{index}].auth[{i}]"),
                format!("no identity source named `{}`", name.get_ref()),
            ),
        }
    }
    if route_sources.is_empty() && (!raw.roles.is_empty() || !raw.scopes.is_empty()) {
        errors.at(
            spanned.span(),
            route_field(index, "auth"),
            "a route that requires roles or scopes must name the identity sources in `auth`",
        );
    }
    let name: Arc<str> = Arc::from(raw.name.clone().unwrap_or_else(|| path.clone()));
    let action = raw
        .action
        .as_ref()
        .map_or(name.as_ref(), |a| a.get_ref().as_str());
    let action = crate::authz::action_uid(action).map_err(|message| {
        errors.at(
            raw.action.as_ref().map_or(spanned.span(), Spanned::span),
            route_field(index, "action"),
            message,
        );
    });
    let (resource_type, resource_id) = match &raw.resource {
        Some(r) => (r.get_ref().kind.as_str(), r.get_ref().id.clone()),
        None => ("Route", name.to_string()),
    };
    let resource_type = crate::authz::type_name(resource_type).map_err(|message| {
        errors.at(
            raw.resource.as_ref().map_or(spanned.span(), Spanned::span),
            route_field(index, "resource"),
            message,
        );
    });
    if errors.errors.len() != before {
        return None;
    }
    let target = crate::authz::RouteTarget {
        action: action.ok()?,
        resource_type: resource_type.ok()?,
        resource_id,
    };
    Some(Route {
        target,
        network: (!route_network.is_empty()).then_some(route_network),
        name,
        template: path.clone(),
        methods,
        upstream: upstream?,
        sources: route_sources,
        roles: raw.roles.clone(),
        scopes: raw.scopes.clone(),
        concealed: raw.concealed,
        verbosity: raw.verbosity,
        hygiene: route_hygiene,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors_of(text: &str) -> Vec<ConfigError> {
        Config::parse(text, Path::new("warden.toml"))
            .err()
            .map(|e| e.0)
            .unwrap_or_default()
    }

    #[test]
    fn admin_tokens_are_hashes_and_only_hashes() {
        let hash = crate::auth::api_key::hash_api_key("s3cret");
        let config = Config::parse(
            &format!("[admin]\ntokens = [\"{hash}\"]\nmetrics = \"token\"\n"),
            Path::new("warden.toml"),
        )
        .unwrap();
        let admin = &config.serve.admin;
        assert!(admin.accepts("s3cret"));
        assert!(!admin.accepts("s3cret "));
        assert!(!admin.accepts(&hash), "the hash itself is not a token");
        assert!(admin.metrics_need_token);
        let errs = errors_of("[admin]\ntokens = [\"s3cret\"]\nmetrics = \"maybe\"\n");
        let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [(2, "admin.tokens[0]"), (3, "admin.metrics")],
            "{errs:?}"
        );
    }

    #[test]
    fn alert_rules_are_checked_with_their_lines_and_fields() {
        let config = Config::parse(
            "[[alerts.rules]]\nname = \"spray\"\nper = \"client\"\nrefusals = 20\nwindow = \"1m\"\nstatuses = [401, 403]\n\n[[alerts.webhooks]]\nurl = \"http://127.0.0.1:9/hook\"\n\n[alerts.syslog]\naddress = \"127.0.0.1:514\"\n",
            Path::new("warden.toml"),
        )
        .unwrap();
        let alerts = &config.serve.alerts;
        assert_eq!(alerts.rules.len(), 1);
        let rule = &alerts.rules[0];
        assert_eq!(
            (rule.per, rule.refusals, rule.window),
            (AlertKey::Client, 20, Duration::from_secs(60))
        );
        assert_eq!(rule.statuses, [401, 403]);
        assert_eq!(alerts.webhooks[0].retries, 3);
        assert_eq!(alerts.webhooks[0].timeout, Duration::from_secs(2));
        assert_eq!(alerts.syslog, Some(SocketAddr::from(([127, 0, 0, 1], 514))));

        let errs = errors_of(
            "[[alerts.rules]]\nname = \"a\"\nper = \"planet\"\nrefusals = 0\nwindow = \"soon\"\nstatuses = [200]\n\n[[alerts.rules]]\nname = \"a\"\nper = \"total\"\nrefusals = 5\nwindow = \"2d\"\n\n[[alerts.webhooks]]\nurl = \"ftp://x/\"\ntimeout = \"5m\"\nretries = 99\n\n[alerts.syslog]\naddress = \"nowhere\"\n",
        );
        let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [
                (3, "alerts.rules[0].per"),
                (4, "alerts.rules[0].refusals"),
                (5, "alerts.rules[0].window"),
                (6, "alerts.rules[0].statuses[0]"),
                (12, "alerts.rules[1].window"),
                (15, "alerts.webhooks[0].url"),
                (16, "alerts.webhooks[0].timeout"),
                (17, "alerts.webhooks[0].retries"),
                (20, "alerts.syslog.address"),
            ],
            "{errs:?}"
        );
        let errs = errors_of(
            "[[alerts.rules]]\nname = \"a\"\nper = \"route\"\nrefusals = 5\nwindow = \"1m\"\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].field, "alerts");
        assert!(errs[0].message.contains("webhooks"), "{errs:?}");
    }

    #[test]
    fn tracing_settings_and_their_errors() {
        let config = Config::parse(
            "[gateway]\nreuse_port = true\n[tracing]\nendpoint = \"http://127.0.0.1:4317\"\nsubject = \"omit\"\nqueue = 8\nbatch = 4\n",
            Path::new("warden.toml"),
        )
        .unwrap();
        assert!(config.serve.reuse_port);
        let tracing = config.serve.tracing.unwrap();
        assert_eq!(tracing.endpoint, "http://127.0.0.1:4317");
        assert_eq!(tracing.subject, SubjectInSpans::Omit);
        assert_eq!((tracing.queue, tracing.batch), (8, 4));
        assert_eq!(tracing.service_name, "warden");
        let defaults = Config::parse(
            "[tracing]\nendpoint = \"http://c:4317\"\n",
            Path::new("w.toml"),
        )
        .unwrap();
        assert_eq!(
            defaults.serve.tracing.unwrap().subject,
            SubjectInSpans::Hash
        );
        assert!(
            Config::parse("", Path::new("w.toml"))
                .unwrap()
                .serve
                .tracing
                .is_none()
        );
        let errs = errors_of(
            "[tracing]\nendpoint = \"grpc://collector\"\nsubject = \"clear\"\nqueue = 0\nbatch = 9999999\ninterval = \"soon\"\n",
        );
        let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [
                (2, "tracing.endpoint"),
                (3, "tracing.subject"),
                (4, "tracing.queue"),
                (5, "tracing.batch"),
                (6, "tracing.interval"),
            ],
            "{errs:?}"
        );
        let errs = errors_of("[tracing]\nendpoint = \"http://c:4317\"\nqueue = 2\nbatch = 3\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].field.as_str()), (4, "tracing.batch"));

        // TLS to the collector: only for https, and its files are read at load.
        let errs = errors_of(
            "[tracing]\nendpoint = \"http://c:4317\"\nca = \"ca.pem\"\nclient_certificate = { cert = \"c.pem\", key = \"c.key\" }\n",
        );
        let at: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            at,
            [(3, "tracing.ca"), (4, "tracing.client_certificate")],
            "{errs:?}"
        );
        let errs = errors_of("[tracing]\nendpoint = \"https://c:4317\"\nca = \"no-such-ca.pem\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].field.as_str()), (3, "tracing.ca"));
        assert!(errs[0].message.contains("no-such-ca.pem"), "{errs:?}");
        let system_roots = Config::parse(
            "[tracing]\nendpoint = \"https://c:4317\"\n",
            Path::new("w.toml"),
        )
        .unwrap();
        let tls = system_roots.serve.tracing.unwrap().tls.unwrap();
        assert!(tls.roots.is_empty() && tls.client.is_none());
    }

    #[test]
    fn forward_auth_needs_trusted_proxies_and_a_listener() {
        let errs = errors_of("[forward_auth]\nlisten = \"127.0.0.1:9191\"\n");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].field.as_str()), (1, "forward_auth"));
        assert!(errs[0].message.contains("trusted_proxies"), "{errs:?}");
        let errs = errors_of(
            "[gateway]\ntrusted_proxies = [\"127.0.0.1\"]\n[forward_auth]\nenvoy_prefix = \"envoy\"\n",
        );
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            ["forward_auth", "forward_auth.envoy_prefix"],
            "{errs:?}"
        );
        let errs = errors_of(
            "[gateway]\ntrusted_proxies = [\"127.0.0.1\"]\n[forward_auth]\nlisten = \"nowhere\"\n",
        );
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(
            (errs[0].line, errs[0].field.as_str()),
            (4, "forward_auth.listen")
        );
    }

    #[test]
    fn a_syntax_error_names_file_line_and_field() {
        let errs = errors_of("[gateway]\nlisten = \"127.0.0.1:8080\"\nrealm = \n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].file, PathBuf::from("warden.toml"));
        assert_eq!(errs[0].line, 3);
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let errs = errors_of("[gateway]\nlisten = \"127.0.0.1:8080\"\nlsten = \"x\"\n");
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 3);
        assert!(errs[0].message.contains("lsten"), "{}", errs[0].message);
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let text = r#"
[upstreams.app]
url = "http://127.0.0.1:3000"

[[routes]]
path = "/a"
upstream = "nope"

[[routes]]
path = "/b"
upstream = "app"
auth = ["missing"]
"#;
        let errs = errors_of(text);
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!(
            (errs[0].line, errs[0].field.as_str()),
            (7, "routes[0].upstream")
        );
        assert_eq!(
            (errs[1].line, errs[1].field.as_str()),
            (12, "routes[1].auth[0]")
        );
    }

    #[test]
    fn network_rules_and_trusted_proxies_are_checked() {
        let text = "[gateway]\ntrusted_proxies = [\"all\"]\n[network]\nrules = [{ allow = \"10.0.0.0/33\" }, { allow = \"10.0.0.0/8\", deny = \"all\" }]\n";
        let errs = errors_of(text);
        let fields: Vec<(usize, &str)> = errs.iter().map(|e| (e.line, e.field.as_str())).collect();
        assert_eq!(
            fields,
            vec![
                (2, "gateway.trusted_proxies[0]"),
                (4, "network.rules[0]"),
                (4, "network.rules[1]")
            ],
            "{errs:?}"
        );
    }

    #[test]
    fn fetched_keys_name_the_problem() {
        let text = "[sources.key]\ntype = \"api_key\"\nkeys = []\n[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\npath = \"/x\"\nupstream = \"app\"\n";
        let config = Config::parse(text, Path::new("w.toml")).unwrap();
        let unknown = config.set_fetched_keys("idp", b"{}").unwrap_err();
        assert_eq!(unknown, FetchedKeysError::UnknownSource("idp".to_owned()));
        assert_eq!(unknown.to_string(), "no JWT source named `idp`");
        assert_eq!(
            config.set_fetched_keys("key", b"{}"),
            Err(FetchedKeysError::NotJwt("key".to_owned()))
        );
    }

    #[test]
    fn a_minimal_configuration_loads() {
        let text = "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\npath = \"/x/{id}\"\nupstream = \"app\"\n";
        let config = Config::parse(text, Path::new("w.toml")).unwrap();
        assert_eq!(config.routes().len(), 1);
        assert_eq!(
            config.serve.listen,
            SocketAddr::from(([127, 0, 0, 1], 8080))
        );
    }
}
