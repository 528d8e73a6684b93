//! An axum app behind warden: run it, then try the printed curl commands.
//!
//! ```sh
//! cargo run -p warden-tower --example axum_app            # listens on 127.0.0.1:3001
//! cargo run -p warden-tower --example axum_app -- 127.0.0.1:4000
//! ```
//!
//! Its tokens are verified with the public test key `testdata/keys/rsa.pub.pem`; `warden
//! token` signs them with the matching test key. Test keys only: never use them elsewhere.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;

use axum::Router;
use axum::extract::{ConnectInfo, Extension};
use axum::http::Uri;
use axum::routing::get;
use tower_layer::Layer;
use warden_core::{Config, Identity};
use warden_tower::WardenLayer;

/// The configuration, as a gateway's would be. `pem_file` is relative to the `origin`
/// below: the repository's root.
const CONFIG: &str = r#"
[gateway]
realm = "warden-tower-example"

# Unused by the layer (the app itself is the upstream), required by the configuration.
[upstreams.app]
url = "http://127.0.0.1:3001"

[sources.jwt]
type = "jwt"
algorithms = ["RS256"]
issuer = "https://issuer.example"
audience = ["api"]
keys = [{ kid = "rsa-1", pem_file = "testdata/keys/rsa.pub.pem" }]

[[routes]]
path = "/"
upstream = "app"

[[routes]]
path = "/me"
upstream = "app"
auth = ["jwt"]

[[routes]]
path = "/admin"
upstream = "app"
auth = ["jwt"]
roles = ["admin"]

[[limits]]
name = "per-client"
key = ["client"]
limit = 60
window = "1m"
"#;

async fn index() -> &'static str {
    "public: no credentials needed\n"
}

async fn me(Extension(identity): Extension<Identity>) -> String {
    format!(
        "hello {} (roles: {}), verified by `{}`\n",
        identity.subject,
        identity.roles.join(", "),
        identity.source
    )
}

async fn admin(Extension(identity): Extension<Identity>, uri: Uri) -> String {
    format!("welcome to {uri}, {}\n", identity.subject)
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr: SocketAddr = match std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:3001")
        .parse()
    {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("not an address: {e}");
            return ExitCode::FAILURE;
        }
    };
    let origin = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../warden-tower-example.toml"
    ));
    let config = match Config::parse(CONFIG, origin) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::FAILURE;
        }
    };

    let routes = Router::new()
        .route("/", get(index))
        .route("/me", get(me))
        .route("/admin", get(admin));
    // Wrap the whole router (not `Router::layer`, which runs after routing), so the path
    // axum routes is the normalized path warden authorized. The outer router turns the
    // layer's body into axum's, for `axum::serve`.
    let warden = WardenLayer::from_config(config)
        .peer_from::<ConnectInfo<SocketAddr>>()
        .on_decision(|d| {
            let outcome = d.reason().map_or("allow", warden_core::Reason::code);
            println!(
                "decision {} {} route={:?}",
                d.id,
                outcome,
                d.route.as_deref()
            );
        });
    let app = Router::new().fallback_service(warden.layer(routes));

    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    print_help(addr);
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, service).await {
        eprintln!("server error: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn print_help(addr: SocketAddr) {
    let token = |sub: &str, role: &str| {
        format!(
            "$(cargo run -q -p warden -- token --sub {sub} --role {role} \
--key testdata/keys/rsa.key --alg RS256 --kid rsa-1 --iss https://issuer.example --aud api)"
        )
    };
    println!("warden-tower example listening on http://{addr}; from the repository's root, try:\n");
    println!("  curl -i {addr}/                         # 200: public");
    println!("  curl -i {addr}/me                       # 401 with WWW-Authenticate: Bearer");
    println!("  curl -i {addr}/nowhere                  # 404 problem+json");
    println!("  curl -i -X DELETE {addr}/               # 405 with Allow: GET, HEAD");
    println!("  VIEWER={}", token("vic", "viewer"));
    println!("  ADMIN={}", token("ada", "admin"));
    println!("  curl -i -H \"Authorization: Bearer $VIEWER\" {addr}/me      # 200: hello vic");
    println!("  curl -i -H \"Authorization: Bearer $VIEWER\" {addr}/admin   # 403");
    println!("  curl -i --path-as-is -H \"Authorization: Bearer $ADMIN\" {addr}/me/../admin");
    println!("                                          # 200: the handler sees /admin\n");
}
