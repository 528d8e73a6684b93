//! HTTP/2 to clients and upstreams, and gRPC through the gateway: prior-knowledge h2c with
//! curl, the same pipeline deciding each stream, `:authority` against `Host`, gRPC calls
//! with tonic proxied to a tonic upstream and refused as gRPC; and the h2 part of the bypass
//! corpus, sent frame by frame: smuggled pseudo-headers, CONTINUATION floods, rapid reset.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::authorization_server::{
    Authorization, AuthorizationServer,
};
use envoy_types::pb::envoy::service::auth::v3::{CheckRequest, CheckResponse};
use envoy_types::pb::google::rpc::Status as RpcStatus;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use warden::gateway::Gateway;
use warden_testkit::{Token, fixture};

use crate::common::{Upstream, gateway};

const LIMIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn prior_knowledge_h2c_is_decided_like_http1() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture("gateway"), &upstream).await;
    let curl = |path: &'static str| {
        let url = format!("http://{}{path}", gw.proxy_addr);
        async move {
            let out = tokio::process::Command::new("curl")
                .args([
                    "-sS",
                    "--max-time",
                    "10",
                    "--http2-prior-knowledge",
                    "-o",
                    "/dev/null",
                ])
                .args(["-w", "%{http_code} %{http_version}", &url])
                .stdin(Stdio::null())
                .output()
                .await
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    assert_eq!(curl("/public").await, "200 2");
    assert_eq!(curl("/me").await, "401 2", "the same refusal over h2");
    assert_eq!(curl("/vault/1").await, "404 2", "concealment over h2");
    let seen = upstream.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the allowed stream reached the upstream"
    );
    // The upstream speaks HTTP/1.1 and gets its own Host; the client's authority is kept in
    // X-Forwarded-Host.
    assert_eq!(seen[0].headers["host"], upstream.addr.to_string());
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        gw.proxy_addr.to_string()
    );
    gw.shutdown().await;
}

/// An h2 client connection to `addr` (prior knowledge).
async fn h2_client(addr: SocketAddr) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    send
}

async fn h2_status(
    send: &mut h2::client::SendRequest<bytes::Bytes>,
    request: http::Request<()>,
) -> Result<u16, h2::Error> {
    let mut ready = send.clone().ready().await?;
    let (response, _) = ready.send_request(request, true)?;
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .expect("in time")?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn authority_and_host_must_agree() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture("gateway"), &upstream).await;
    let mut send = h2_client(gw.proxy_addr).await;
    let request = |host: Option<&str>| {
        let mut builder = http::Request::get("http://api.test/public");
        if let Some(host) = host {
            builder = builder.header("host", host);
        }
        builder.body(()).unwrap()
    };
    assert_eq!(h2_status(&mut send, request(None)).await.unwrap(), 200);
    assert_eq!(
        h2_status(&mut send, request(Some("API.test")))
            .await
            .unwrap(),
        200
    );
    assert_eq!(
        h2_status(&mut send, request(Some("internal.test")))
            .await
            .unwrap(),
        400,
        "an authority and a Host that disagree"
    );
    assert_eq!(upstream.seen().len(), 2);
    // HTTP/1.1's absolute form is held to the same rule.
    let answer = crate::common::raw(
        gw.proxy_addr,
        b"GET http://api.test/public HTTP/1.1\r\nHost: internal.test\r\n\r\n",
    )
    .await;
    assert_eq!(crate::common::raw_status(&answer), 400, "{answer}");
    assert_eq!(upstream.seen().len(), 2);
    gw.shutdown().await;
}

/// A gRPC upstream: envoy's `Authorization/Check`, served by tonic over h2c; it counts the
/// calls that reach it and answers each with `grpc.status.message = "from upstream"`.
async fn grpc_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    #[derive(Clone)]
    struct Echo(Arc<AtomicUsize>);
    #[tonic::async_trait]
    impl Authorization for Echo {
        async fn check(
            &self,
            request: tonic::Request<CheckRequest>,
        ) -> Result<tonic::Response<CheckResponse>, tonic::Status> {
            self.0.fetch_add(1, Ordering::SeqCst);
            let subject = request
                .metadata()
                .get("x-warden-subject")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            Ok(tonic::Response::new(CheckResponse {
                status: Some(RpcStatus {
                    code: 0,
                    message: format!("from upstream, for {subject}"),
                    details: Vec::new(),
                }),
                ..CheckResponse::default()
            }))
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = AuthorizationServer::new(Echo(Arc::clone(&calls)));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let service = service.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service))
                    .await;
            });
        }
    });
    (addr, calls)
}

const CHECK: &str = "/envoy.service.auth.v3.Authorization/Check";

async fn grpc_gateway(grpc: SocketAddr, route: &str) -> Gateway {
    let upstream = Upstream::start().await;
    let config = fixture("gateway").append(&format!(
        "[upstreams.grpc]\nurl = \"http://{grpc}\"\nprotocol = \"h2\"\n\
         [[routes]]\nname = \"check\"\npath = \"{CHECK}\"\nmethods = [\"POST\"]\nupstream = \"grpc\"\nauth = [\"jwt\"]\n{route}\n"
    ));
    gateway(config, &upstream).await
}

async fn grpc_client(gw: &Gateway) -> AuthorizationClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{}", gw.proxy_addr))
        .unwrap()
        .timeout(LIMIT)
        .connect()
        .await
        .unwrap();
    AuthorizationClient::new(channel)
}

fn call(token: Option<&str>) -> tonic::Request<CheckRequest> {
    let mut request = tonic::Request::new(CheckRequest::default());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
}

#[tokio::test]
async fn grpc_is_proxied_end_to_end_and_refused_as_grpc() {
    let (grpc, calls) = grpc_upstream().await;
    let gw = grpc_gateway(grpc, "roles = [\"caller\"]").await;
    let mut client = grpc_client(&gw).await;
    let caller = Token::new()
        .sub("carol")
        .roles(["caller"])
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256();
    let stranger = Token::new()
        .sub("sam")
        .roles(["viewer"])
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256();

    // Allowed: the upstream's message and its trailers (`grpc-status: 0` comes in the
    // trailers: tonic would fail the call without them).
    let answer = client
        .check(call(Some(&caller)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.status.unwrap().message, "from upstream, for carol");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    let status = client.check(call(None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let challenge = status.metadata().get("www-authenticate").unwrap();
    assert!(
        challenge.to_str().unwrap().starts_with("Bearer"),
        "{challenge:?}"
    );

    let status = client.check(call(Some(&stranger))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(!status.message().is_empty());

    let status = client.check(call(Some("not.a.token"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no refused call reached the upstream"
    );
    gw.shutdown().await;

    // Concealed: NOT_FOUND, as for a method that does not exist.
    let gw = grpc_gateway(grpc, "roles = [\"admin\"]\nconcealed = true").await;
    let mut client = grpc_client(&gw).await;
    let status = client.check(call(Some(&caller))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    gw.shutdown().await;

    // Rate limited: RESOURCE_EXHAUSTED with RetryInfo.
    let gw = grpc_gateway(
        grpc,
        "[[limits]]\nname = \"calls\"\nkey = [\"subject\"]\nlimit = 1\nwindow = \"1h\"\nroutes = [\"check\"]",
    )
    .await;
    let mut client = grpc_client(&gw).await;
    client.check(call(Some(&caller))).await.unwrap();
    let status = client.check(call(Some(&caller))).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    use tonic_types::StatusExt as _;
    let details = status.get_error_details();
    let retry = details.retry_info().expect("RetryInfo");
    assert!(retry.retry_delay.unwrap() > Duration::ZERO);
    assert!(status.metadata().get("retry-after").is_some());
    gw.shutdown().await;
}

#[tokio::test]
async fn grpc_upstream_failures_are_unavailable() {
    let closed = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let gw = grpc_gateway(addr, "").await;
    let mut client = grpc_client(&gw).await;
    let caller = Token::new()
        .sub("carol")
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256();
    let status = client.check(call(Some(&caller))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    gw.shutdown().await;
}

// ---- The h2 bypass corpus, frame by frame ----

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix and the given first-byte flags.
fn hpack_int(flags: u8, n: u32, mut value: usize, out: &mut Vec<u8>) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | u8::try_from(value).unwrap());
        return;
    }
    out.push(flags | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// A header block of literal fields (never indexed, no Huffman), in the given order.
fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_int(0, 7, name.len(), &mut out);
        out.extend_from_slice(name.as_bytes());
        hpack_int(0, 7, value.len(), &mut out);
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// What the server did with stream 1.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A response `HEADERS` whose first field is an indexed `:status` of the static table.
    Status(u16),
    /// `RST_STREAM` with this error code.
    Reset(u32),
    /// `GOAWAY` with this error code.
    GoAway(u32),
    /// The connection closed.
    Closed,
}

/// Open an h2c connection and send our SETTINGS.
async fn open(addr: SocketAddr) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    tcp
}

/// Read frames until the server answers stream 1 or ends the connection.
async fn answer(tcp: &mut TcpStream) -> Answer {
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if tcp.read_exact(&mut head).await.is_err() {
                return Answer::Closed;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if tcp.read_exact(&mut payload).await.is_err() {
                return Answer::Closed;
            }
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            match head[3] {
                GOAWAY => {
                    return Answer::GoAway(u32::from_be_bytes([
                        payload[4], payload[5], payload[6], payload[7],
                    ]));
                }
                RST_STREAM if stream == 1 => {
                    return Answer::Reset(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                }
                HEADERS if stream == 1 => {
                    // Static table: 8 → 200, 11 → 304, 12 → 400, 13 → 404, 14 → 500.
                    let status = match payload.first().map(|b| b & 0x7f) {
                        Some(8) => 200,
                        Some(12) => 400,
                        Some(13) => 404,
                        Some(14) => 500,
                        _ => 0,
                    };
                    return Answer::Status(status);
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .expect("the server answers in time")
}

/// Send one request head as raw fields and read what the server did with it.
async fn send_fields(addr: SocketAddr, fields: &[(&str, &str)]) -> Answer {
    let mut tcp = open(addr).await;
    tcp.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &block(fields)))
        .await
        .unwrap();
    answer(&mut tcp).await
}

#[tokio::test]
async fn smuggled_pseudo_headers_are_refused() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture("gateway"), &upstream).await;
    let ok = [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "api.test"),
        (":path", "/public"),
    ];
    assert_eq!(send_fields(gw.proxy_addr, &ok).await, Answer::Status(200));
    let protocol_error = |a: &Answer| {
        matches!(
            a,
            Answer::Reset(1) | Answer::GoAway(1) | Answer::Status(400) | Answer::Closed
        )
    };
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "a :path without its leading slash",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "public"),
            ],
        ),
        (
            "two :path fields",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public"),
                (":path", "/vault/1"),
            ],
        ),
        (
            "two :authority fields",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":authority", "internal.test"),
                (":path", "/public"),
            ],
        ),
        (
            "a pseudo-header after a regular field",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                ("x-a", "1"),
                (":path", "/public"),
                (":authority", "api.test"),
            ],
        ),
        (
            "a made-up pseudo-header",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public"),
                (":x-route", "/vault/1"),
            ],
        ),
        (
            "an upper-case field name",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public"),
                ("X-Warden-Subject", "admin"),
            ],
        ),
        (
            "a connection-specific field",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public"),
                ("connection", "x-warden-subject"),
            ],
        ),
        (
            "transfer-encoding in h2",
            vec![
                (":method", "POST"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public"),
                ("transfer-encoding", "chunked"),
            ],
        ),
        (
            "no :path",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
            ],
        ),
        (
            "a :path with a line break",
            vec![
                (":method", "GET"),
                (":scheme", "http"),
                (":authority", "api.test"),
                (":path", "/public\r\nx: y"),
            ],
        ),
    ];
    for (what, fields) in cases {
        let answer = send_fields(gw.proxy_addr, &fields).await;
        assert!(protocol_error(&answer), "{what}: {answer:?}");
    }
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the well-formed request was forwarded"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_continuation_flood_is_cut_off() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture("gateway"), &upstream).await;
    let mut tcp = open(gw.proxy_addr).await;
    // One field whose value never ends, carried by CONTINUATION frames without END_HEADERS.
    let mut start = block(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/public"),
    ]);
    start.push(0x00);
    hpack_int(0, 7, 5, &mut start);
    start.extend_from_slice(b"x-big");
    hpack_int(0, 7, 64 * 1024 * 1024, &mut start);
    tcp.write_all(&frame(HEADERS, END_STREAM, 1, &start))
        .await
        .unwrap();
    let filler = vec![b'a'; 16 * 1024];
    let (mut reader, mut writer) = tcp.into_split();
    let flood = tokio::spawn(async move {
        let mut sent = 0usize;
        for _ in 0..4096 {
            if writer
                .write_all(&frame(CONTINUATION, 0, 1, &filler))
                .await
                .is_err()
            {
                break;
            }
            sent += filler.len();
        }
        sent
    });
    let mut head = [0u8; 9];
    let ended = tokio::time::timeout(LIMIT, async {
        loop {
            if reader.read_exact(&mut head).await.is_err() {
                return None;
            }
            let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
            let mut payload = vec![0u8; len];
            if reader.read_exact(&mut payload).await.is_err() {
                return None;
            }
            if head[3] == GOAWAY || (head[3] == RST_STREAM) || (head[3] == HEADERS) {
                return Some(head[3]);
            }
        }
    })
    .await
    .expect("the server ends the flood in time");
    let sent = flood.await.unwrap();
    eprintln!(
        "CONTINUATION flood: the server answered with frame type {ended:?} after {sent} bytes"
    );
    assert!(
        ended.is_some() || sent < 4096 * 16 * 1024,
        "the connection is refused or closed long before 64 MiB of headers: {ended:?}, {sent}"
    );
    assert!(upstream.seen().is_empty());
    // The gateway still serves.
    let mut send = h2_client(gw.proxy_addr).await;
    let request = http::Request::get("http://api.test/public")
        .body(())
        .unwrap();
    assert_eq!(h2_status(&mut send, request).await.unwrap(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn rapid_reset_closes_the_connection() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture("gateway"), &upstream).await;
    let tcp = TcpStream::connect(gw.proxy_addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    let connection = tokio::spawn(connection);
    let mut ended = None;
    for i in 0..2000 {
        let mut ready = match send.clone().ready().await {
            Ok(ready) => ready,
            Err(e) => {
                ended = Some((i, e));
                break;
            }
        };
        let request = http::Request::get("http://api.test/slow").body(()).unwrap();
        match ready.send_request(request, true) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(e) => {
                ended = Some((i, e));
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    let outcome = tokio::time::timeout(LIMIT, connection)
        .await
        .expect("the connection ends in time")
        .unwrap();
    eprintln!(
        "rapid reset: stopped at {:?}, connection {outcome:?}",
        ended.as_ref().map(|(i, _)| i)
    );
    let error = match (ended, outcome) {
        (Some((_, e)), _) | (None, Err(e)) => e,
        (None, Ok(())) => panic!("2000 streams opened and reset without the server minding"),
    };
    assert!(
        error.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM)
            || error.is_go_away()
            || error.is_io(),
        "{error:?}"
    );
    // The gateway still serves others.
    let mut send = h2_client(gw.proxy_addr).await;
    let request = http::Request::get("http://api.test/public")
        .body(())
        .unwrap();
    assert_eq!(h2_status(&mut send, request).await.unwrap(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_upstreams_are_spoken_to_in_h2() {
    // An h2c upstream that answers with the version it heard.
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let text = format!("{:?} {}", req.version(), req.uri());
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(text)),
                        ))
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    let upstream = Upstream::start().await;
    let config = fixture("gateway").append(&format!(
        "[upstreams.h2]\nurl = \"http://{addr}/base\"\nprotocol = \"h2\"\n\
         [[routes]]\npath = \"/h2/{{rest}}\"\nupstream = \"h2\"\n"
    ));
    let gw = gateway(config, &upstream).await;
    let resp = crate::common::client()
        .get(format!("http://{}/h2/x?q=1", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.starts_with("HTTP/2.0"), "{text}");
    assert!(text.ends_with("/base/h2/x?q=1"), "{text}");
    gw.shutdown().await;
}
