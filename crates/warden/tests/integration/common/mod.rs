//! Shared test harness: a recording upstream, a gateway on a free loopback port, raw sockets.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod redis_server;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden::gateway::{Gateway, Listeners};
use warden_core::Config;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A real HTTP server on loopback that records what reaches it.
///
/// `/slow` answers after two seconds, `/missing` answers 404, `/echo-status/NNN` answers NNN;
/// anything else answers 200 with a small JSON body.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| answer(Arc::clone(&record), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

async fn answer(
    record: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_default();
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let path = parts.uri.path();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let status = if path == "/missing" || path.ends_with("/missing") {
        StatusCode::NOT_FOUND
    } else if let Some(code) = path.strip_prefix("/echo-status/") {
        StatusCode::from_u16(code.parse().unwrap_or(200)).unwrap_or(StatusCode::OK)
    } else {
        StatusCode::OK
    };
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "{{\"upstream\":true,\"target\":\"{target}\",\"bytes\":{}}}",
        body.len()
    ))));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
        .headers_mut()
        .insert("connection", "x-upstream-secret".parse().unwrap());
    response
        .headers_mut()
        .insert("x-upstream-secret", "hop".parse().unwrap());
    Ok(response)
}

/// The directory of the shared test keys.
pub fn keys_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/keys"))
}

/// Start a gateway for a configuration text in which `{upstream}` stands for the upstream's
/// address. Key files are read relative to the test keys directory.
pub async fn gateway(config: &str, upstream: &Upstream) -> Gateway {
    gateway_at(config, upstream, &keys_dir().join("test.toml")).await
}

/// Like [`gateway`], for a configuration that reads files relative to `origin`.
pub async fn gateway_at(config: &str, upstream: &Upstream, origin: &Path) -> Gateway {
    let text = config.replace("{upstream}", &upstream.addr.to_string());
    let config = Config::parse(&text, origin).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            admin: None,
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

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An RS256 token over `claims`, signed with the test key `rsa.key` (kid `rsa-1`).
pub fn sign(claims: &serde_json::Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(
        &std::fs::read(keys_dir().join("rsa.key")).unwrap(),
    )
    .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some("rsa-1".to_owned());
    jsonwebtoken::encode(&header, claims, &key).unwrap()
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

/// Like [`gateway`], with an admin listener on a free loopback port.
pub async fn gateway_with_admin(config: &str, upstream: &Upstream) -> Gateway {
    let text = config.replace("{upstream}", &upstream.addr.to_string());
    let config =
        Config::parse(&text, &keys_dir().join("test.toml")).unwrap_or_else(|e| panic!("{e}"));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
        },
    )
    .await
    .unwrap()
}

/// The body of a GET on the gateway's admin listener.
pub async fn admin_get(gw: &Gateway, path: &str) -> String {
    client()
        .get(format!("http://{}{path}", gw.admin_addr.unwrap()))
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
