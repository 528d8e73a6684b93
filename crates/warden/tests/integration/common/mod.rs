//! Shared test harness: a gateway on a free loopback port, clients, raw sockets, the binary.
//! Tokens, fixture configurations and the recording upstream come from `warden_testkit`.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod certs;
pub mod chromium;
pub mod oidc_provider;
pub mod redis_server;

use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden::gateway::{Gateway, Listeners};
pub use warden_testkit::{Fixture, Seen, Upstream, fixture};

/// Start a gateway for a configuration whose `{upstream}` is the upstream's address.
pub async fn gateway(config: Fixture, upstream: &Upstream) -> Gateway {
    start(config, upstream, false).await
}

/// Like [`gateway`], with an admin listener on a free loopback port.
pub async fn gateway_with_admin(config: Fixture, upstream: &Upstream) -> Gateway {
    start(config, upstream, true).await
}

/// The admin token of every test gateway with an admin listener.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// `config` with `[admin]` accepting [`ADMIN_TOKEN`].
pub fn with_admin_token(config: Fixture) -> Fixture {
    let hash = warden_core::auth::api_key::hash_api_key(ADMIN_TOKEN);
    config.append(&format!("[admin]\ntokens = [\"{hash}\"]\n"))
}

async fn start(config: Fixture, upstream: &Upstream, admin: bool) -> Gateway {
    let config = if admin {
        with_admin_token(config)
    } else {
        config
    };
    let config = config.upstream(upstream.addr).config();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(loopback),
            admin: admin.then_some(loopback),
            ..Listeners::default()
        },
    )
    .await
    .unwrap()
}

/// A gateway whose configuration has `[forward_auth]`: the proxy, admin and forward-auth
/// listeners each on a free loopback port (`proxy_addr`, `admin_addr`, `forward_auth_addr`).
pub async fn forward_auth_gateway(config: Fixture, upstream: &Upstream) -> Gateway {
    let config = with_admin_token(config).upstream(upstream.addr).config();
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
            forward_auth: Some(loopback),
            grpc: Some(loopback),
        },
    )
    .await
    .unwrap()
}

pub fn client() -> reqwest::Client {
    warden::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// `GET path` from the gateway's proxy listener.
pub async fn get(gw: &Gateway, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{}{path}", gw.proxy_addr))
        .send()
        .await
        .unwrap()
}

/// Send raw bytes and read the whole answer (the gateway closes or the read times out).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_millis(1500), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                // One response is enough: stop once headers and a declared body have arrived.
                if let Some(text) = std::str::from_utf8(&out).ok()
                    && let Some((head, body)) = text.split_once("\r\n\r\n")
                    && let Some(len) = head.lines().find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    && body.len() >= len
                {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw response.
pub fn raw_status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Headers of a response as (name, value) strings, without `date`.
pub fn headers_without_date(headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str() != "date")
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    out.sort();
    out
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address works on Linux).
pub fn client_from(source: &str) -> reqwest::Client {
    warden::install_crypto_provider();
    reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The body of a GET on the gateway's admin listener.
pub async fn admin_get(gw: &Gateway, path: &str) -> String {
    client()
        .get(format!("http://{}{path}", gw.admin_addr.unwrap()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The `warden` binary running as a child process; ended (by its own handle) on drop.
pub struct Warden {
    pub child: std::process::Child,
    /// `http://127.0.0.1:PORT` of its proxy listener.
    pub base: String,
}

impl Drop for Warden {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `warden ARGS…` (which must listen on port 0) and wait for its listening address.
pub fn spawn_warden(args: &[&std::ffi::OsStr]) -> Warden {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(addr) = line.strip_prefix("warden listening on ") {
                let _ = tx.send(addr.to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("warden did not report its address");
    Warden { child, base }
}
