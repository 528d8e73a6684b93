//! TLS on the listener (certificates made by rcgen at run time): HTTP/1.1 and HTTP/2 by
//! ALPN with curl, versions and SNI with `openssl s_client`, certificates reloaded without
//! dropping an open connection, bad certificates refused at load; HTTPS upstreams verified
//! against their CA, with SNI and a client certificate, and a certificate failure a 502.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use warden::gateway::{Gateway, Listeners};
use warden_core::Config;

use crate::common::certs::{Issued, TestCa};
use crate::common::{Upstream, client};

pub(crate) fn dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("tls")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A configuration file in `dir` with one public route to `upstream`, then `extra`.
pub(crate) fn write_config(dir: &Path, upstream: &str, extra: &str) -> PathBuf {
    let text = format!(
        "[log]\ndecisions = \"off\"\n{extra}\n[upstreams.app]\nurl = \"{upstream}\"\n\
         [[routes]]\npath = \"/public\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\n"
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) const TLS: &str = "[gateway.tls]\ncertificates = [\n  { cert = \"server.pem\", key = \"server.key\" },\n  { cert = \"other.pem\", key = \"other.key\", names = [\"other.test\", \"*.wild.test\"] },\n]\n";

pub(crate) async fn start(path: &Path) -> Gateway {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        config,
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
            ..Listeners::default()
        },
    )
    .await
    .unwrap()
}

/// The value of one unlabelled counter on the admin listener's `/metrics`.
async fn counter(gw: &Gateway, name: &str) -> u64 {
    let text = crate::common::admin_get(gw, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A test CA with the gateway's two certificates written into `dir`.
pub(crate) fn listener_certs(dir: &Path) -> TestCa {
    let ca = TestCa::new("warden test CA");
    ca.write(dir, "ca");
    ca.server("localhost", &["localhost", "127.0.0.1"])
        .write(dir, "server");
    ca.server("other.test", &["other.test", "*.wild.test"])
        .write(dir, "other");
    ca
}

/// `curl` over TLS to the gateway: the status, the HTTP version and the body.
async fn curl(addr: SocketAddr, ca: &Path, args: &[&str]) -> (u16, String, String) {
    let url = format!("https://localhost:{}/public", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--resolve", &resolve, "--cacert"])
            .arg(ca)
            .args(args)
            .args(["-w", "\n%{http_code} %{http_version}", &url])
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("curl in time")
    .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut tail = tail.split(' ');
    let status = tail.next().unwrap_or("0").parse().unwrap_or(0);
    let version = tail.next().unwrap_or("").to_owned();
    (status, version, body.to_owned())
}

/// `openssl s_client` against the gateway with `args`; everything it printed.
async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let connect = format!("127.0.0.1:{}", addr.port());
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &connect])
            .args(args)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .expect("s_client in time")
    .expect("openssl runs");
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn tls_serves_http1_and_http2_by_alpn() {
    let upstream = Upstream::start().await;
    let dir = dir("alpn");
    listener_certs(&dir);
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        TLS,
    ))
    .await;
    let ca = dir.join("ca.pem");

    let (status, version, body) = curl(gw.proxy_addr, &ca, &["--http2"]).await;
    assert_eq!((status, version.as_str()), (200, "2"), "{body}");
    let (status, version, _) = curl(gw.proxy_addr, &ca, &["--http1.1"]).await;
    assert_eq!((status, version.as_str()), (200, "1.1"));

    // The upstream hears plain HTTP/1.1 and that the client came over TLS.
    let seen = upstream.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.headers["x-forwarded-proto"] == "https")
    );
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        format!("localhost:{}", gw.proxy_addr.port())
    );

    let out = s_client(
        gw.proxy_addr,
        &["-alpn", "h2,http/1.1", "-servername", "localhost"],
    )
    .await;
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    gw.shutdown().await;
}

#[tokio::test]
async fn sni_chooses_the_certificate() {
    let upstream = Upstream::start().await;
    let dir = dir("sni");
    listener_certs(&dir);
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        TLS,
    ))
    .await;

    let subject = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("subject="))
            .unwrap_or_else(|| panic!("no subject in {out}"))
            .to_owned()
    };
    let other = s_client(gw.proxy_addr, &["-servername", "other.test"]).await;
    assert!(subject(&other).contains("other.test"), "{other}");
    let wild = s_client(gw.proxy_addr, &["-servername", "api.wild.test"]).await;
    assert!(subject(&wild).contains("other.test"), "{wild}");
    let default = s_client(gw.proxy_addr, &["-servername", "unknown.test"]).await;
    assert!(subject(&default).contains("localhost"), "{default}");
    let none = s_client(gw.proxy_addr, &["-noservername"]).await;
    assert!(subject(&none).contains("localhost"), "{none}");
    gw.shutdown().await;
}

#[tokio::test]
async fn old_tls_versions_are_refused_with_an_alert() {
    let upstream = Upstream::start().await;
    let dir = dir("versions");
    listener_certs(&dir);
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        TLS,
    ))
    .await;

    let tls12 = s_client(gw.proxy_addr, &["-tls1_2", "-servername", "localhost"]).await;
    assert!(
        tls12.contains("Protocol  : TLSv1.2") || tls12.contains("TLSv1.2"),
        "{tls12}"
    );
    // OpenSSL may refuse to even offer TLS 1.1 at its security level; either way no
    // handshake completes and warden answers nothing but an alert.
    let tls11 = s_client(gw.proxy_addr, &["-tls1_1", "-servername", "localhost"]).await;
    assert!(
        !tls11.contains("Cipher is ECDHE") && tls11.contains("alert")
            || tls11.contains("no protocols available"),
        "{tls11}"
    );
    gw.shutdown().await;

    let only13 = TLS.replace("[gateway.tls]\n", "[gateway.tls]\nmin_version = \"1.3\"\n");
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        &only13,
    ))
    .await;
    let tls12 = s_client(gw.proxy_addr, &["-tls1_2", "-servername", "localhost"]).await;
    assert!(tls12.contains("alert protocol version"), "{tls12}");
    let tls13 = s_client(gw.proxy_addr, &["-tls1_3", "-servername", "localhost"]).await;
    assert!(tls13.contains("TLSv1.3"), "{tls13}");
    // No common cipher: TLS 1.2 with a suite rustls does not offer.
    let cipher = s_client(
        gw.proxy_addr,
        &[
            "-tls1_2",
            "-cipher",
            "AES128-SHA",
            "-servername",
            "localhost",
        ],
    )
    .await;
    assert!(cipher.contains("alert"), "{cipher}");
    assert!(
        counter(&gw, "warden_tls_handshake_failures_total").await >= 2,
        "every failed handshake is counted"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn reload_swaps_certificates_without_dropping_connections() {
    let upstream = Upstream::start().await;
    let dir = dir("reload");
    let ca = listener_certs(&dir);
    let path = write_config(&dir, &format!("http://{}", upstream.addr), TLS);
    let gw = start(&path).await;

    // A keep-alive connection opened before the reload.
    let mut open = tls_connect(gw.proxy_addr, ca.pem()).await;
    assert!(get_on(&mut open).await.starts_with("HTTP/1.1 200"));

    ca.server("localhost-renewed", &["localhost", "127.0.0.1"])
        .write(&dir, "server");
    gw.reload().await.unwrap();
    let after = s_client(gw.proxy_addr, &["-servername", "localhost"]).await;
    assert!(after.contains("localhost-renewed"), "{after}");
    assert!(
        get_on(&mut open).await.starts_with("HTTP/1.1 200"),
        "the connection opened before the reload still serves"
    );

    // A key that is not the certificate's: the reload is refused, the old ones stay.
    let stranger = ca.server("stranger", &["localhost"]);
    std::fs::write(dir.join("server.key"), &stranger.key).unwrap();
    let error = gw.reload().await.unwrap_err().to_string();
    assert!(
        error.contains("server.key") && error.contains("server.pem"),
        "{error}"
    );
    let still = s_client(gw.proxy_addr, &["-servername", "localhost"]).await;
    assert!(still.contains("localhost-renewed"), "{still}");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_certificates_are_load_errors_naming_the_file() {
    let dir = dir("bad");
    let ca = TestCa::new("warden test CA");
    let path = write_config(
        &dir,
        "http://127.0.0.1:9",
        "[gateway.tls]\ncertificates = [{ cert = \"missing.pem\", key = \"missing.key\" }]\n",
    );
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("missing.pem") && error.contains("gateway.tls.certificates[0].cert"),
        "{error}"
    );
    assert!(error.contains("warden.toml:"), "the file and line: {error}");

    std::fs::write(dir.join("junk.pem"), "not a certificate").unwrap();
    let Issued { key, .. } = ca.server("x", &["localhost"]);
    std::fs::write(dir.join("x.key"), key).unwrap();
    let path = write_config(
        &dir,
        "http://127.0.0.1:9",
        "[gateway.tls]\ncertificates = [{ cert = \"junk.pem\", key = \"x.key\" }]\nmin_version = \"1.1\"\n",
    );
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("junk.pem") && error.contains("holds no certificate"),
        "{error}"
    );
    assert!(error.contains("gateway.tls.min_version"), "{error}");

    // A key that is not the certificate's is found when the gateway builds its TLS.
    ca.server("a", &["localhost"]).write(&dir, "a");
    let b = ca.server("b", &["localhost"]);
    std::fs::write(dir.join("a.key"), b.key).unwrap();
    let path = write_config(
        &dir,
        "http://127.0.0.1:9",
        "[gateway.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n",
    );
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!check.status.success(), "`warden check` finds it too");
    let said = String::from_utf8_lossy(&check.stderr);
    assert!(said.contains("a.key") && said.contains("a.pem"), "{said}");
    let config = Config::load(&path).unwrap();
    let error = Gateway::start(
        config,
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Listeners::default()
        },
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("a.key") && error.contains("a.pem"),
        "{error}"
    );
}

#[tokio::test]
async fn plaintext_to_a_tls_listener_gets_no_answer_but_a_closed_connection() {
    let upstream = Upstream::start().await;
    let dir = dir("plaintext");
    listener_certs(&dir);
    let gw = start(&write_config(
        &dir,
        &format!("http://{}", upstream.addr),
        TLS,
    ))
    .await;
    let mut stream = TcpStream::connect(gw.proxy_addr).await.unwrap();
    stream
        .write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection is closed, not left hanging");
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

/// A TLS connection to the gateway trusting `ca`.
async fn tls_connect(addr: SocketAddr, ca: &str) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// One keep-alive `GET /public` on an open connection; the response head and body.
async fn get_on(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /public HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 8192];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

use rustls_pki_types::pem::PemObject as _;

/// An HTTPS upstream on loopback: answers 200 with `{"tls":true}` and counts requests.
/// With `client_ca`, it asks for a client certificate signed by it and refuses others.
struct TlsUpstream {
    addr: SocketAddr,
    hits: Arc<std::sync::atomic::AtomicUsize>,
}

async fn tls_upstream(cert: &Issued, client_ca: Option<&str>) -> TlsUpstream {
    let chain: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(cert.cert.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(cert.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls_pki_types::CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |_req: http::Request<Incoming>| {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from_static(br#"{"tls":true}"#),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    TlsUpstream { addr, hits }
}

/// A plaintext gateway in front of an https upstream configured by `upstream_toml`.
async fn https_gateway(dir: &Path, url: &str, settings: &str) -> Gateway {
    let text = format!(
        "[log]\ndecisions = \"off\"\n[upstreams.app]\nurl = \"{url}\"\n{settings}\n\
         [[routes]]\npath = \"/public\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"app\"\n"
    );
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).unwrap();
    start(&path).await
}

#[tokio::test]
async fn https_upstreams_are_verified_against_their_ca() {
    let dir = dir("https-upstream");
    let ca = TestCa::new("upstream CA");
    ca.write(&dir, "upstream-ca");
    let stranger_ca = TestCa::new("someone else's CA");
    stranger_ca.write(&dir, "stranger-ca");
    let up = tls_upstream(
        &ca.server("upstream", &["upstream.internal", "localhost"]),
        None,
    )
    .await;
    let url = format!("https://localhost:{}", up.addr.port());

    let gw = https_gateway(&dir, &url, "ca = \"upstream-ca.pem\"").await;
    let resp = client()
        .get(format!("http://{}/public", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["tls"], true);
    gw.shutdown().await;

    // SNI and verification by a configured name.
    let gw = https_gateway(
        &dir,
        &url,
        "ca = \"upstream-ca.pem\"\nserver_name = \"upstream.internal\"",
    )
    .await;
    let resp = client()
        .get(format!("http://{}/public", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.shutdown().await;

    let hits = up.hits.load(std::sync::atomic::Ordering::SeqCst);
    for settings in [
        "ca = \"stranger-ca.pem\"",
        "ca = \"upstream-ca.pem\"\nserver_name = \"not-the-upstream.internal\"",
    ] {
        let gw = https_gateway(&dir, &url, settings).await;
        let resp = client()
            .get(format!("http://{}/public", gw.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{settings}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "upstream_unavailable", "{settings}");
        let metrics = crate::common::admin_get(&gw, "/metrics").await;
        assert!(
            metrics.contains("warden_upstream_errors_total{kind=\"tls\"} 1"),
            "a certificate failure is counted as such: {settings}"
        );
        gw.shutdown().await;
    }
    assert_eq!(
        up.hits.load(std::sync::atomic::Ordering::SeqCst),
        hits,
        "nothing reached an upstream whose certificate failed"
    );

    // TLS settings on an http upstream are a load error at their line.
    let path = dir.join("plain.toml");
    std::fs::write(
        &path,
        "[upstreams.app]\nurl = \"http://127.0.0.1:9\"\nca = \"upstream-ca.pem\"\n",
    )
    .unwrap();
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("upstreams.app.ca") && error.contains("plain.toml:3"),
        "{error}"
    );
}

#[tokio::test]
async fn https_upstreams_get_the_client_certificate_they_ask_for() {
    let dir = dir("upstream-mtls");
    let ca = TestCa::new("upstream CA");
    ca.write(&dir, "upstream-ca");
    ca.client("warden-gateway", &[])
        .write(&dir, "warden-client");
    let up = tls_upstream(&ca.server("upstream", &["localhost"]), Some(ca.pem())).await;
    let url = format!("https://localhost:{}", up.addr.port());

    let gw = https_gateway(&dir, &url, "ca = \"upstream-ca.pem\"").await;
    let resp = client()
        .get(format!("http://{}/public", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        502,
        "no client certificate: the upstream refuses"
    );
    gw.shutdown().await;

    let gw = https_gateway(
        &dir,
        &url,
        "ca = \"upstream-ca.pem\"\nclient_certificate = { cert = \"warden-client.pem\", key = \"warden-client.key\" }",
    )
    .await;
    let resp = client()
        .get(format!("http://{}/public", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let body = resp.bytes().await.unwrap();
    assert_eq!(&body[..], br#"{"tls":true}"#);
    gw.shutdown().await;
}
