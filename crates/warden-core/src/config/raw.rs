//! The configuration file as written: serde types mirroring the TOML, checked nowhere.
//!
//! Fields that later checks must point at are `Spanned`, so an error names their line.

use std::collections::BTreeMap;

use serde::Deserialize;
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
    pub upstreams: BTreeMap<String, RawUpstream>,
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
    pub workers: Option<usize>,
    /// Proxies whose forwarding headers are believed (CIDR prefixes or addresses).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// `x-forwarded-for` (default) or `forwarded`.
    pub client_address_header: Option<crate::network::client::ForwardedHeader>,
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
    pub url: Spanned<String>,
}

/// One identity source. A flat struct rather than a tagged enum: spans do not survive
/// serde's buffering of tagged enums, and every error must name its line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSource {
    /// `jwt`, `api_key` or `basic`.
    #[serde(rename = "type")]
    pub kind: Spanned<String>,
    // jwt
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
    // jwt keys, api keys and basic users
    pub keys: Option<Spanned<Vec<Spanned<RawKey>>>>,
    // api_key
    pub header: Option<Spanned<String>>,
    // basic
    pub users: Option<Spanned<Vec<Spanned<RawBasicUser>>>>,
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
