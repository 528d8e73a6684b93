//! The configuration file as written: serde types mirroring the TOML, checked nowhere.
//!
//! Fields that later checks must point at are `Spanned`, so an error names their line.

use std::collections::BTreeMap;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use crate::decision::Verbosity;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    #[serde(default)]
    pub gateway: RawGateway,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub identity_headers: RawIdentityHeaders,
    #[serde(default)]
    pub upstreams: BTreeMap<String, Spanned<RawUpstream>>,
    #[serde(default)]
    pub sources: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    pub routes: Vec<Spanned<RawRoute>>,
    pub authorization: Option<Spanned<RawAuthorization>>,
    #[serde(default)]
    pub network: RawNetwork,
    #[serde(default)]
    pub limits: Vec<Spanned<RawLimit>>,
    pub bans: Option<Spanned<RawBans>>,
    #[serde(default)]
    pub state: RawState,
    pub geo: Option<Spanned<RawGeo>>,
    #[serde(default)]
    pub hygiene: RawHygiene,
    pub csrf: Option<Spanned<RawCsrf>>,
    pub cors: Option<Spanned<RawCors>>,
    pub forward_auth: Option<Spanned<RawForwardAuth>>,
    pub admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    pub alerts: RawAlerts,
    pub tracing: Option<Spanned<RawTracing>>,
    pub sessions: Option<Spanned<RawSessions>>,
}

/// Browser sessions of `oidc` sources.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSessions {
    /// Secrets (`secret_env` or `secret_file`), newest first: the first seals, all open.
    pub keys: Spanned<Vec<Spanned<RawKey>>>,
    pub cookie: Option<Spanned<String>>,
    pub secure: Option<bool>,
    pub idle_timeout: Option<Spanned<String>>,
    pub absolute_timeout: Option<Spanned<String>>,
    pub refresh_before: Option<Spanned<String>>,
}

/// `[alerts]`: rules over refusals and where their alerts go. Not `Spanned`: the table is
/// usually implicit (`[[alerts.rules]]` alone), which a span cannot be given to.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlerts {
    #[serde(default)]
    pub rules: Vec<Spanned<RawAlertRule>>,
    #[serde(default)]
    pub webhooks: Vec<Spanned<RawWebhook>>,
    pub syslog: Option<Spanned<RawSyslog>>,
}

/// `[[alerts.rules]]`: more than `refusals` refusals per key within `window`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAlertRule {
    pub name: Spanned<String>,
    /// `client`, `subject`, `route` or `total`.
    pub per: Spanned<String>,
    pub refusals: Spanned<i64>,
    pub window: Spanned<String>,
    /// Only refusals with these statuses count; every refusal when absent.
    #[serde(default)]
    pub statuses: Vec<Spanned<i64>>,
}

/// `[[alerts.webhooks]]`: a URL alerts are POSTed to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWebhook {
    pub url: Spanned<String>,
    pub timeout: Option<Spanned<String>>,
    pub retries: Option<Spanned<i64>>,
}

/// `[alerts.syslog]`: one RFC 5424 line with a CEF payload per alert, over UDP.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSyslog {
    pub address: Spanned<String>,
}

/// OpenTelemetry export of request spans.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTracing {
    /// The collector's OTLP/gRPC endpoint.
    pub endpoint: Spanned<String>,
    pub service_name: Option<Spanned<String>>,
    /// `hash` (default), `omit` or `raw`.
    pub subject: Option<Spanned<String>>,
    pub queue: Option<Spanned<usize>>,
    pub batch: Option<Spanned<usize>>,
    pub interval: Option<Spanned<String>>,
    pub export_timeout: Option<Spanned<String>>,
    /// The CA bundle the collector's certificate must chain to (`https` endpoints).
    pub ca: Option<Spanned<String>>,
    /// The certificate warden presents to the collector.
    pub client_certificate: Option<Spanned<RawKeyPair>>,
}

/// Who may use the admin listener's protected endpoints.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    /// The hex SHA-256 of each admin bearer token.
    #[serde(default)]
    pub tokens: Vec<Spanned<String>>,
    /// `open` (default) or `token`: whether `/metrics` needs an admin token too.
    pub metrics: Option<Spanned<String>>,
    /// A PEM bundle of CAs whose client certificates are admin credentials too; the admin
    /// listener then serves TLS with the certificates of `[gateway.tls]`.
    pub client_ca: Option<Spanned<String>>,
}

/// warden as the external authorizer of another proxy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawForwardAuth {
    /// The HTTP listener that NGINX, Caddy, Traefik and Envoy's HTTP mode ask.
    pub listen: Option<Spanned<String>>,
    /// The gRPC listener of Envoy's `envoy.service.auth.v3.Authorization`.
    pub grpc_listen: Option<Spanned<String>>,
    /// The path prefix of Envoy's HTTP mode (`path_prefix` in Envoy's configuration).
    pub envoy_prefix: Option<Spanned<String>>,
    /// The header in which the asking proxy sends the client certificate its TLS listener
    /// received (NGINX `$ssl_client_escaped_cert`, Traefik `X-Forwarded-Tls-Client-Cert`).
    pub client_certificate_header: Option<Spanned<String>>,
}

/// Request hygiene: path policies, body limits, the WAF.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHygiene {
    /// The largest request body (`10MiB` by default).
    pub max_body: Option<Spanned<String>>,
    /// `off` (default), `detect` or `on`.
    pub waf: Option<Spanned<String>>,
    /// The largest body the WAF inspects (`64KiB` by default).
    pub waf_body_limit: Option<Spanned<String>>,
    /// `sensitive` (default) or `insensitive`.
    pub path_case: Option<Spanned<String>>,
    /// `strict` (default) or `ignore`.
    pub trailing_slash: Option<Spanned<String>>,
    /// Custom WAF rules.
    #[serde(default)]
    pub rules: Vec<Spanned<RawWafRule>>,
}

/// A custom WAF rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWafRule {
    pub id: Spanned<String>,
    /// A regular expression (Rust `regex` syntax).
    pub pattern: Spanned<String>,
    /// `path`, `query`, `headers`, `body`; all of them when absent.
    pub parts: Option<Spanned<Vec<String>>>,
}

/// CSRF checks for cookie-authenticated unsafe requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCsrf {
    /// Origins besides the request's own (`https://app.example.com`).
    #[serde(default)]
    pub trusted_origins: Vec<Spanned<String>>,
    /// A double-submit token: this cookie's value repeated in `double_submit_header`.
    pub double_submit_cookie: Option<Spanned<String>>,
    pub double_submit_header: Option<Spanned<String>>,
}

/// CORS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCors {
    /// Allowed origins, or `["*"]`.
    pub origins: Spanned<Vec<String>>,
    /// Methods a preflight may ask for (default: the route's).
    pub methods: Option<Spanned<Vec<String>>>,
    /// Request headers a preflight may ask for.
    #[serde(default)]
    pub headers: Vec<Spanned<String>>,
    /// Response headers a page may read (default: the ones warden's refusals use).
    pub expose: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    pub credentials: bool,
    pub max_age: Option<Spanned<String>>,
}

/// Geo rules over a MaxMind database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeo {
    pub database: Spanned<String>,
    #[serde(default)]
    pub rules: Vec<Spanned<RawGeoRule>>,
}

/// `{ deny = ["KP"], blocked_by = "https://…" }` or `{ allow = ["FR"] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGeoRule {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
    /// A legal notice: refusals are 451 with `Link: <…>; rel="blocked-by"`.
    pub blocked_by: Option<String>,
}

/// A rate limit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimit {
    pub name: String,
    /// Key parts: `client`, `route`, `subject`, `api_key`, `claim:NAME`.
    pub key: Spanned<Vec<String>>,
    /// Requests per window.
    pub limit: Spanned<u64>,
    pub window: Spanned<String>,
    pub burst: Option<Spanned<u64>>,
    /// Route names; all routes when absent.
    pub routes: Option<Spanned<Vec<String>>>,
}

/// Bans after bursts of refusals.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBans {
    pub failures: Spanned<u64>,
    pub window: Spanned<String>,
    pub duration: Spanned<String>,
}

/// Where shared state lives.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    /// `memory` (default) or `redis`.
    pub backend: Option<Spanned<String>>,
    pub redis_url: Option<Spanned<String>>,
    /// `closed` (default) or `open`: what to do when the backend cannot answer.
    pub fail: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
    pub max_keys: Option<u64>,
    pub key_prefix: Option<String>,
}

/// Network rules that apply before routing.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(default)]
    pub rules: Vec<Spanned<RawIpRule>>,
}

/// One `allow` or `deny` rule: a CIDR prefix, an address, `all`, or a file of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIpRule {
    pub allow: Option<String>,
    pub deny: Option<String>,
    pub allow_file: Option<String>,
    pub deny_file: Option<String>,
}

/// Cedar policies and what they decide over.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAuthorization {
    /// Cedar policy files.
    pub policies: Spanned<Vec<String>>,
    /// A Cedar schema (`.cedarschema` or `.json`); policies are validated against it.
    pub schema: Option<Spanned<String>>,
    /// Cedar entities (JSON): resource attributes, groups.
    pub entities: Option<Spanned<String>>,
    /// Candidate policy files evaluated beside the active ones, never enforced.
    pub shadow_policies: Option<Spanned<Vec<String>>>,
    /// IANA time zone for `context.local` (default UTC).
    pub timezone: Option<Spanned<String>>,
    /// Entity type of principals (default `User`).
    pub principal_type: Option<Spanned<String>>,
    /// Entity type of roles, the principal's parents (default `Role`).
    pub role_type: Option<Spanned<String>>,
}

/// A route's resource: an entity type and an id that may use path parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawResource {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub listen: Option<Spanned<String>>,
    pub admin_listen: Option<Spanned<String>>,
    pub realm: Option<String>,
    pub problem_type_base: Option<String>,
    pub connect_timeout: Option<Spanned<String>>,
    pub upstream_timeout: Option<Spanned<String>>,
    pub drain_timeout: Option<Spanned<String>>,
    /// Bind the listeners with `SO_REUSEPORT`, so a new process can listen beside this one.
    #[serde(default)]
    pub reuse_port: bool,
    pub workers: Option<usize>,
    /// Proxies whose forwarding headers are believed (CIDR prefixes or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// `x-forwarded-for` (default) or `forwarded`.
    pub client_address_header: Option<crate::network::client::ForwardedHeader>,
    /// TLS on the proxy listener.
    pub tls: Option<Spanned<RawTls>>,
    /// HTTP/2 to clients and its limits.
    pub http2: Option<Spanned<RawHttp2>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    /// `stdout`, `off`, or a file path.
    pub decisions: Option<String>,
    /// Whether allowed decisions are logged too (refusals always are).
    pub allowed: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentityHeaders {
    pub subject: Option<Spanned<String>>,
    pub roles: Option<Spanned<String>>,
    pub scopes: Option<Spanned<String>>,
    pub source: Option<Spanned<String>>,
    pub decision_id: Option<Spanned<String>>,
    /// More headers no client may set (removed before forwarding).
    #[serde(default)]
    pub strip: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    /// One host: `http(s)://host:port/base`.
    pub url: Option<Spanned<String>>,
    /// Several hosts, the same scheme and base path.
    #[serde(default)]
    pub urls: Vec<Spanned<String>>,
    /// `http1` (default) or `h2`.
    pub protocol: Option<Spanned<String>>,
    /// A CA bundle for an https upstream (the system's roots otherwise).
    pub ca: Option<Spanned<String>>,
    /// The server name sent and verified, when it is not the URL's host.
    pub server_name: Option<Spanned<String>>,
    /// The certificate warden presents to the upstream.
    pub client_certificate: Option<Spanned<RawKeyPair>>,
    /// `round_robin` (default) or `least_requests`.
    pub balance: Option<Spanned<String>>,
    /// Consecutive failures that take a host out of rotation.
    pub eject_after: Option<Spanned<u32>>,
    /// How long an ejected host stays out.
    pub eject_for: Option<Spanned<String>>,
    /// The active health check.
    pub health: Option<Spanned<RawHealth>>,
}

/// `[upstreams.NAME.health]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealth {
    pub path: Option<Spanned<String>>,
    pub interval: Option<Spanned<String>>,
    pub timeout: Option<Spanned<String>>,
}

/// A certificate file and its key file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKeyPair {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

/// One certificate of the listener.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListenerCertificate {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    /// The server names it is chosen for (SNI).
    #[serde(default)]
    pub names: Vec<Spanned<String>>,
}

/// `[gateway.tls]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    #[serde(default)]
    pub certificates: Vec<RawListenerCertificate>,
    /// `1.2` (default) or `1.3`.
    pub min_version: Option<Spanned<String>>,
}

/// `[gateway.http2]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp2 {
    pub enabled: Option<bool>,
    pub max_concurrent_streams: Option<u32>,
    pub max_header_list_size: Option<u32>,
    pub max_pending_reset_streams: Option<u64>,
    pub max_local_error_reset_streams: Option<u64>,
}

/// One identity source, by its `type`: `jwt`, `api_key`, `basic`, `oidc` or `mtls`.
///
/// Tagged by `type`, but not with `#[serde(tag = "type")]`: serde buffers an internally
/// tagged enum before it reads the tag, and its buffer keeps no spans, so `Spanned` fields
/// cannot be read from it at all and an unknown field is reported at the whole table
/// instead of its own line. The `Deserialize` below reads every key and value straight from
/// the TOML deserializer, whatever the order of the keys, so each value keeps its span and
/// each error its line and column.
#[derive(Debug)]
pub(crate) enum RawSource {
    /// Boxed: it has many more fields than the others.
    Jwt(Box<RawJwtSource>),
    ApiKey(RawApiKeySource),
    Basic(RawBasicSource),
    /// Boxed like `Jwt`; its JWT fields are read into the `jwt` part.
    Oidc(Box<RawOidcSource>),
    Mtls(RawMtlsSource),
    /// A `type` that is none of these. Kept rather than refused while parsing, so the check
    /// reports it at the value, under `sources.NAME.type`, among the file's other errors.
    Unknown(Spanned<String>),
}

/// `type = "jwt"`: bearer tokens (or a cookie) verified with pinned algorithms.
#[derive(Debug, Default)]
pub(crate) struct RawJwtSource {
    pub algorithms: Option<Spanned<Vec<String>>>,
    pub issuer: Option<Spanned<String>>,
    pub audience: Option<Spanned<Vec<String>>>,
    pub leeway: Option<Spanned<String>>,
    /// Claims that must be present; defaults to `["exp", "sub"]`.
    pub require: Option<Spanned<Vec<String>>>,
    pub jwks_file: Option<Spanned<String>>,
    pub jwks_url: Option<Spanned<String>>,
    pub jwks_refresh: Option<Spanned<String>>,
    /// Read the token from this cookie instead of `Authorization: Bearer`.
    pub cookie: Option<Spanned<String>>,
    pub roles_claim: Option<Spanned<String>>,
    pub scopes_claim: Option<Spanned<String>>,
    pub max_token_bytes: Option<Spanned<usize>>,
    /// Claims passed on to authorization as principal attributes.
    pub attributes: Option<Spanned<Vec<String>>>,
    /// How many verified tokens to remember; 0 turns the cache off.
    pub token_cache: Option<Spanned<u64>>,
    /// Verification keys.
    pub keys: Option<Spanned<Vec<Spanned<RawKey>>>>,
}

/// `type = "oidc"`: browser sign-in with OpenID Connect.
#[derive(Debug, Default)]
pub(crate) struct RawOidcSource {
    /// `algorithms`, `issuer`, `leeway`, `roles_claim`, `scopes_claim`, `attributes`,
    /// `max_token_bytes`: as for a JWT source, applied to ID tokens.
    pub jwt: RawJwtSource,
    pub client_id: Option<Spanned<String>>,
    pub client_secret_env: Option<Spanned<String>>,
    pub client_secret_file: Option<Spanned<String>>,
    pub client_auth: Option<Spanned<String>>,
    pub scopes: Option<Spanned<Vec<String>>>,
    pub redirect_uri: Option<Spanned<String>>,
    pub discovery_url: Option<Spanned<String>>,
    pub post_logout_redirect_uri: Option<Spanned<String>>,
    /// The private key of `client_auth = "private_key_jwt"`.
    pub client_key: Option<Spanned<RawClientKey>>,
}

/// `client_key = { pem_file, kid, algorithm, audience }`: the key warden signs its client
/// assertions with (RFC 7523), its `kid`, its algorithm, and the assertion's audience.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientKey {
    pub pem_file: String,
    pub kid: Option<String>,
    pub algorithm: Option<String>,
    /// `issuer` (the default) or `token_endpoint`.
    pub audience: Option<String>,
}

/// `type = "mtls"`: the client certificate of the TLS connection.
#[derive(Debug, Default)]
pub(crate) struct RawMtlsSource {
    /// The PEM bundle of the CAs client certificates must chain to.
    pub ca: Option<Spanned<String>>,
    /// `cn`, `san_dns`, `san_uri` or `san_email` (default: URI SAN, else DNS SAN, else CN).
    pub subject: Option<Spanned<String>>,
    /// Subject (or `prefix*`) → roles.
    pub roles: Option<Spanned<BTreeMap<String, Vec<String>>>>,
}

/// `type = "api_key"`: a key in a header, looked up by its SHA-256.
#[derive(Debug, Default)]
pub(crate) struct RawApiKeySource {
    /// The header (`x-api-key` by default).
    pub header: Option<Spanned<String>>,
    pub keys: Option<Spanned<Vec<Spanned<RawKey>>>>,
}

/// `type = "basic"`: HTTP Basic users with password hashes.
#[derive(Debug, Default)]
pub(crate) struct RawBasicSource {
    pub users: Option<Spanned<Vec<Spanned<RawBasicUser>>>>,
}

/// Every key a source table may have, in the order unknown-field errors list them.
const SOURCE_FIELDS: &[&str] = &[
    "type",
    "algorithms",
    "issuer",
    "audience",
    "leeway",
    "require",
    "jwks_file",
    "jwks_url",
    "jwks_refresh",
    "cookie",
    "roles_claim",
    "scopes_claim",
    "max_token_bytes",
    "attributes",
    "token_cache",
    "keys",
    "header",
    "users",
    "client_id",
    "client_secret_env",
    "client_secret_file",
    "client_auth",
    "scopes",
    "redirect_uri",
    "discovery_url",
    "post_logout_redirect_uri",
    "client_key",
    "ca",
    "subject",
    "roles",
];

/// A source's `type`, once it is one warden knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SourceKind {
    Jwt,
    ApiKey,
    Basic,
    Oidc,
    Mtls,
}

impl SourceKind {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "jwt" => Some(Self::Jwt),
            "api_key" => Some(Self::ApiKey),
            "basic" => Some(Self::Basic),
            "oidc" => Some(Self::Oidc),
            "mtls" => Some(Self::Mtls),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Jwt => "jwt",
            Self::ApiKey => "api_key",
            Self::Basic => "basic",
            Self::Oidc => "oidc",
            Self::Mtls => "mtls",
        }
    }

    /// The keys a source of this type may have (each one of [`SOURCE_FIELDS`]).
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Jwt => &[
                "type",
                "algorithms",
                "issuer",
                "audience",
                "leeway",
                "require",
                "jwks_file",
                "jwks_url",
                "jwks_refresh",
                "cookie",
                "roles_claim",
                "scopes_claim",
                "max_token_bytes",
                "attributes",
                "token_cache",
                "keys",
            ],
            Self::ApiKey => &["type", "header", "keys"],
            Self::Basic => &["type", "users"],
            Self::Oidc => &[
                "type",
                "issuer",
                "client_id",
                "client_secret_env",
                "client_secret_file",
                "client_auth",
                "scopes",
                "redirect_uri",
                "discovery_url",
                "post_logout_redirect_uri",
                "client_key",
                "algorithms",
                "leeway",
                "roles_claim",
                "scopes_claim",
                "attributes",
                "max_token_bytes",
            ],
            Self::Mtls => &["type", "ca", "subject", "roles"],
        }
    }

    /// The error for a key of another type of source.
    fn foreign<E: de::Error>(self, key: &str) -> E {
        E::custom(format_args!(
            "`{key}` does not apply to a `{}` source",
            self.name()
        ))
    }
}

/// Reads one key of a source table: unknown keys are refused at the key, and so are keys of
/// another type of source once the `type` has been read.
struct SourceKey(Option<SourceKind>);

impl<'de> DeserializeSeed<'de> for SourceKey {
    type Value = &'static str;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl Visitor<'_> for SourceKey {
    type Value = &'static str;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field of an identity source")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Self::Value, E> {
        let Some(known) = SOURCE_FIELDS.iter().copied().find(|f| *f == key) else {
            let expected = self.0.map_or(SOURCE_FIELDS, SourceKind::fields);
            return Err(E::unknown_field(key, expected));
        };
        match self.0 {
            Some(kind) if !kind.fields().contains(&known) => Err(kind.foreign(key)),
            _ => Ok(known),
        }
    }
}

/// Sets a field read from a source table (TOML refuses a key written twice; this is for
/// other formats).
fn put<T, E: de::Error>(slot: &mut Option<T>, value: T, key: &'static str) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(key));
    }
    *slot = Some(value);
    Ok(())
}

impl<'de> Deserialize<'de> for RawSource {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(SourceVisitor)
    }
}

struct SourceVisitor;

impl<'de> Visitor<'de> for SourceVisitor {
    type Value = RawSource;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an identity source table with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSource, A::Error> {
        let mut kind_text: Option<Spanned<String>> = None;
        let mut kind = None;
        let mut seen = Vec::new();
        let mut jwt = RawJwtSource::default();
        let mut api_key = RawApiKeySource::default();
        let mut basic = RawBasicSource::default();
        let mut oidc = RawOidcSource::default();
        let mut mtls = RawMtlsSource::default();
        while let Some(key) = map.next_key_seed(SourceKey(kind))? {
            seen.push(key);
            match key {
                "type" => {
                    let text: Spanned<String> = map.next_value()?;
                    kind = SourceKind::parse(text.get_ref());
                    put(&mut kind_text, text, key)?;
                }
                "algorithms" => put(&mut jwt.algorithms, map.next_value()?, key)?,
                "issuer" => put(&mut jwt.issuer, map.next_value()?, key)?,
                "audience" => put(&mut jwt.audience, map.next_value()?, key)?,
                "leeway" => put(&mut jwt.leeway, map.next_value()?, key)?,
                "require" => put(&mut jwt.require, map.next_value()?, key)?,
                "jwks_file" => put(&mut jwt.jwks_file, map.next_value()?, key)?,
                "jwks_url" => put(&mut jwt.jwks_url, map.next_value()?, key)?,
                "jwks_refresh" => put(&mut jwt.jwks_refresh, map.next_value()?, key)?,
                "cookie" => put(&mut jwt.cookie, map.next_value()?, key)?,
                "roles_claim" => put(&mut jwt.roles_claim, map.next_value()?, key)?,
                "scopes_claim" => put(&mut jwt.scopes_claim, map.next_value()?, key)?,
                "max_token_bytes" => put(&mut jwt.max_token_bytes, map.next_value()?, key)?,
                "attributes" => put(&mut jwt.attributes, map.next_value()?, key)?,
                "token_cache" => put(&mut jwt.token_cache, map.next_value()?, key)?,
                // `keys` belongs to two types; it is moved to the right one below.
                "keys" => put(&mut jwt.keys, map.next_value()?, key)?,
                "header" => put(&mut api_key.header, map.next_value()?, key)?,
                "users" => put(&mut basic.users, map.next_value()?, key)?,
                "client_id" => put(&mut oidc.client_id, map.next_value()?, key)?,
                "client_secret_env" => put(&mut oidc.client_secret_env, map.next_value()?, key)?,
                "client_secret_file" => {
                    put(&mut oidc.client_secret_file, map.next_value()?, key)?;
                }
                "client_auth" => put(&mut oidc.client_auth, map.next_value()?, key)?,
                "scopes" => put(&mut oidc.scopes, map.next_value()?, key)?,
                "redirect_uri" => put(&mut oidc.redirect_uri, map.next_value()?, key)?,
                "discovery_url" => put(&mut oidc.discovery_url, map.next_value()?, key)?,
                "post_logout_redirect_uri" => {
                    put(&mut oidc.post_logout_redirect_uri, map.next_value()?, key)?;
                }
                "client_key" => put(&mut oidc.client_key, map.next_value()?, key)?,
                "ca" => put(&mut mtls.ca, map.next_value()?, key)?,
                "subject" => put(&mut mtls.subject, map.next_value()?, key)?,
                "roles" => put(&mut mtls.roles, map.next_value()?, key)?,
                _ => return Err(de::Error::unknown_field(key, SOURCE_FIELDS)),
            }
        }
        let Some(kind_text) = kind_text else {
            return Err(de::Error::missing_field("type"));
        };
        let Some(kind) = kind else {
            return Ok(RawSource::Unknown(kind_text));
        };
        // Keys written before `type` could not be checked against it when they were read.
        if let Some(key) = seen.iter().find(|k| !kind.fields().contains(k)) {
            return Err(kind.foreign(key));
        }
        Ok(match kind {
            SourceKind::Jwt => RawSource::Jwt(Box::new(jwt)),
            SourceKind::ApiKey => RawSource::ApiKey(RawApiKeySource {
                keys: jwt.keys,
                ..api_key
            }),
            SourceKind::Basic => RawSource::Basic(basic),
            SourceKind::Oidc => RawSource::Oidc(Box::new(RawOidcSource { jwt, ..oidc })),
            SourceKind::Mtls => RawSource::Mtls(mtls),
        })
    }
}

/// A key entry: a JWT verification key (`pem_file`, `pem`, `secret_env`, `secret_file`)
/// or an API key (`id`, `sha256`, `subject`, `roles`, `scopes`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKey {
    pub kid: Option<String>,
    pub pem_file: Option<String>,
    pub pem: Option<String>,
    pub secret_env: Option<String>,
    pub secret_file: Option<String>,
    pub id: Option<String>,
    /// Hex SHA-256 of an API key.
    pub sha256: Option<String>,
    pub subject: Option<String>,
    pub roles: Option<Vec<String>>,
    pub scopes: Option<Vec<String>>,
    /// An API key's attributes for authorization policies.
    pub attributes: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBasicUser {
    pub name: String,
    /// A PHC argon2 hash (`$argon2id$…`) or a bcrypt hash (`$2b$…`).
    pub hash: String,
    #[serde(default)]
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub name: Option<String>,
    pub path: Spanned<String>,
    pub methods: Option<Spanned<Vec<String>>>,
    pub upstream: Spanned<String>,
    #[serde(default)]
    pub auth: Vec<Spanned<String>>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub concealed: bool,
    #[serde(default)]
    pub verbosity: Verbosity,
    /// The Cedar action (default: the route's name).
    pub action: Option<Spanned<String>>,
    /// The Cedar resource (default: `Route::"<name>"`).
    pub resource: Option<Spanned<RawResource>>,
    /// Network rules for this route, after the global ones.
    #[serde(default)]
    pub network: Vec<Spanned<RawIpRule>>,
    /// The largest body for this route.
    pub max_body: Option<Spanned<String>>,
    /// The WAF mode for this route.
    pub waf: Option<Spanned<String>>,
    /// Whether CSRF checks apply (default true).
    pub csrf: Option<bool>,
    /// Whether CORS applies (default true).
    pub cors: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_field_belongs_to_a_type_and_every_type_field_is_a_source_field() {
        let kinds = [
            SourceKind::Jwt,
            SourceKind::ApiKey,
            SourceKind::Basic,
            SourceKind::Oidc,
            SourceKind::Mtls,
        ];
        for field in SOURCE_FIELDS {
            assert!(kinds.iter().any(|k| k.fields().contains(field)), "{field}");
        }
        for kind in kinds {
            assert_eq!(SourceKind::parse(kind.name()), Some(kind));
            assert!(kind.fields().iter().all(|f| SOURCE_FIELDS.contains(f)));
        }
    }

    #[test]
    fn each_type_reads_its_fields() {
        let text = r#"
            [a]
            type = "jwt"
            algorithms = ["RS256"]
            issuer = "i"
            audience = ["a"]
            leeway = "1s"
            require = ["exp"]
            jwks_file = "f"
            jwks_url = "u"
            jwks_refresh = "1m"
            cookie = "c"
            roles_claim = "r"
            scopes_claim = "s"
            max_token_bytes = 10
            attributes = ["x"]
            token_cache = 5
            keys = [{ kid = "k", pem = "p" }]
            [b]
            type = "api_key"
            header = "h"
            keys = [{ id = "i", sha256 = "00", subject = "s" }]
            [c]
            type = "basic"
            users = [{ name = "n", hash = "h" }]
        "#;
        let sources: BTreeMap<String, RawSource> = toml::from_str(text).unwrap();
        let Some(RawSource::Jwt(jwt)) = sources.get("a") else {
            panic!("{sources:?}");
        };
        assert!(
            jwt.algorithms.is_some()
                && jwt.issuer.is_some()
                && jwt.audience.is_some()
                && jwt.leeway.is_some()
                && jwt.require.is_some()
                && jwt.jwks_file.is_some()
                && jwt.jwks_url.is_some()
                && jwt.jwks_refresh.is_some()
                && jwt.cookie.is_some()
                && jwt.roles_claim.is_some()
                && jwt.scopes_claim.is_some()
                && jwt.max_token_bytes.is_some()
                && jwt.attributes.is_some()
                && jwt.token_cache.is_some()
                && jwt.keys.is_some(),
            "{jwt:?}"
        );
        let Some(RawSource::ApiKey(api_key)) = sources.get("b") else {
            panic!("{sources:?}");
        };
        assert!(api_key.header.is_some() && api_key.keys.is_some());
        let Some(RawSource::Basic(basic)) = sources.get("c") else {
            panic!("{sources:?}");
        };
        assert!(basic.users.is_some());
    }
}
