//! The configuration the header and token targets parse with: every kind of identity
//! source, and trusted proxies for the client-address walk.

use std::path::Path;
use std::sync::LazyLock;

use warden_core::Config;

const CONFIG: &str = r#"
[gateway]
trusted_proxies = ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]

[upstreams.app]
url = "http://127.0.0.1:9"

[sources.jwt]
type = "jwt"
algorithms = ["RS256", "ES256", "EdDSA"]
issuer = "https://issuer.test"
audience = ["api", "other"]
require = ["exp", "sub", "nbf", "iat", "jti"]
leeway = "30s"
roles_claim = "realm.roles"
scopes_claim = "scope"
attributes = ["department", "org.level"]
keys = [{ kid = "rsa-1", pem_file = "rsa.pub.pem" }, { pem_file = "ec256.pub.pem" }]

[sources.session]
type = "jwt"
algorithms = ["HS256"]
cookie = "session"
require = []
keys = [{ kid = "h", secret_file = "hmac.secret" }]

[sources.keys]
type = "api_key"
header = "x-api-key"
keys = [{ id = "k", sha256 = "ae020ccaf144f7d4a16976a7aaa4d6b7945965d5325ff4630738256bcda775e6", subject = "bot" }]

[sources.ops]
type = "basic"
users = [{ name = "ops", hash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy" }]

[[routes]]
path = "/all"
upstream = "app"
auth = ["jwt", "session", "keys", "ops"]

[[routes]]
path = "/bearer"
upstream = "app"
auth = ["jwt"]

[[routes]]
path = "/basic-or-key"
upstream = "app"
auth = ["ops", "keys"]
"#;

/// The checked configuration, built once.
pub static FUZZ_CONFIG: LazyLock<Config> = LazyLock::new(|| {
    let origin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/keys/fuzz.toml");
    Config::parse(CONFIG, &origin).unwrap_or_else(|e| panic!("the fuzz configuration: {e}"))
});
