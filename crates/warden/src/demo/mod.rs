//! The embedded demo: `warden serve` with no configuration starts a small upstream, serves
//! the routes below in front of it, and prints what to try.
//!
//! The demo's keys are public test keys, shipped in the binary: never use them elsewhere.

mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use warden_core::Config;
use warden_core::auth::api_key::hash_api_key;

use crate::token::{TokenError, TokenSpec, mint};

pub use self::upstream::start as start_upstream;

/// The demo's RS256 signing key (test-only, public).
pub const PRIVATE_KEY: &str = include_str!("demo-rs256.key");
/// The matching public key.
pub const PUBLIC_KEY: &str = include_str!("demo-rs256.pub.pem");
/// The demo's issuer and audience.
pub const ISSUER: &str = "warden-demo";
/// The `kid` of the demo key.
pub const KID: &str = "demo";
/// The demo API key (role `viewer`).
pub const API_KEY: &str = "demo-viewer-key";

/// The demo configuration, in front of an upstream at `upstream`.
///
/// # Errors
/// Never in practice: the text is fixed and tested.
pub fn config(upstream: SocketAddr) -> Result<Config, warden_core::ConfigErrors> {
    Config::parse(&config_text(upstream), Path::new("(embedded demo)"))
}

/// The demo configuration's TOML, shown by `warden serve --print-demo-config`.
#[must_use]
pub fn config_text(upstream: SocketAddr) -> String {
    format!(
        r#"# The embedded demo configuration.
[gateway]
listen = "127.0.0.1:8080"
realm = "warden-demo"

[upstreams.demo]
url = "http://{upstream}"

[sources.demo_jwt]
type = "jwt"
algorithms = ["RS256"]
issuer = "{ISSUER}"
audience = ["{ISSUER}"]
leeway = "30s"
keys = [{{ kid = "{KID}", pem = """
{PUBLIC_KEY}""" }}]

[sources.demo_keys]
type = "api_key"
header = "x-api-key"
keys = [{{ id = "demo-viewer", sha256 = "{api_key_hash}", subject = "ci-bot", roles = ["viewer"] }}]

[[routes]]
name = "public"
path = "/public"
upstream = "demo"

[[routes]]
name = "me"
path = "/me"
upstream = "demo"
auth = ["demo_jwt", "demo_keys"]

[[routes]]
name = "admin"
path = "/admin"
upstream = "demo"
auth = ["demo_jwt", "demo_keys"]
roles = ["admin"]
verbosity = "internal"

[[routes]]
name = "docs"
path = "/docs/{{id}}"
upstream = "demo"
auth = ["demo_jwt", "demo_keys"]
roles = ["viewer", "admin"]
verbosity = "internal"

[[routes]]
name = "vault"
path = "/vault/{{id}}"
upstream = "demo"
auth = ["demo_jwt"]
roles = ["admin"]
concealed = true
"#,
        api_key_hash = hash_api_key(API_KEY),
    )
}

/// A demo token for a subject and roles.
///
/// # Errors
/// Never in practice: the demo key is fixed and tested.
pub fn token(subject: &str, roles: &[&str], ttl: Duration) -> Result<String, TokenError> {
    let spec = TokenSpec {
        subject: subject.to_owned(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        scopes: Vec::new(),
        ttl,
        issuer: ISSUER.to_owned(),
        audience: ISSUER.to_owned(),
        kid: Some(KID.to_owned()),
    };
    mint(
        &spec,
        jsonwebtoken::Algorithm::RS256,
        PRIVATE_KEY.as_bytes(),
    )
}

/// What to try, printed when the demo starts; `warden` is the command that runs this binary.
#[must_use]
pub fn welcome(proxy: SocketAddr, warden: &str) -> String {
    format!(
        "\nwarden demo: serving http://{proxy} in front of a built-in upstream.\n\
Try these:\n\n\
  curl -i http://{proxy}/public          # 200, no credentials needed\n\
  curl -i http://{proxy}/me              # 401 with WWW-Authenticate, no error\n\
  curl -i -H 'Authorization: Bearer garbage' http://{proxy}/me     # 401 error=\"invalid_token\"\n\
  curl -i -H 'x-api-key: {API_KEY}' http://{proxy}/docs/7   # 200 as ci-bot (viewer)\n\
  VIEWER=$({warden} token --sub vic --role viewer)\n\
  ADMIN=$({warden} token --sub ada --role admin)\n\
  curl -i -H \"Authorization: Bearer $VIEWER\" http://{proxy}/admin   # 403: needs role admin\n\
  curl -i -H \"Authorization: Bearer $ADMIN\" http://{proxy}/admin    # 200\n\
  curl -i http://{proxy}/vault/1         # 404: concealed, the same answer as /nowhere\n\
  curl -i -X POST http://{proxy}/public  # 405 with Allow\n"
    )
}
