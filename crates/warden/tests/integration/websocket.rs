//! WebSockets through the gateway, with tokio-tungstenite on both ends: the handshake is
//! authorized like any request, then the tunnel is passed through; a refused handshake gets
//! the normal refusal and never a 101; an upgrade with a body, to a route without GET, or to
//! another protocol (h2c) is refused or stripped. RFC 8441 (WebSockets over HTTP/2) with the
//! h2 crate.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::HeaderMap;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use warden::gateway::Gateway;
use warden_testkit::{Token, fixture};

use crate::common::{Upstream, gateway, raw, raw_status};

const LIMIT: Duration = Duration::from_secs(10);

/// A WebSocket echo server; keeps the headers of every handshake it accepted.
#[expect(
    clippy::result_large_err,
    reason = "the handshake callback's signature is tungstenite's"
)]
async fn echo_server() -> (SocketAddr, Arc<Mutex<Vec<HeaderMap>>>) {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let record = |req: &Request, resp: Response| {
                    seen.lock().unwrap().push(req.headers().clone());
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, record).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() || message.is_binary() {
                        if ws.send(message).await.is_err() {
                            return;
                        }
                    } else if message.is_close() {
                        return;
                    }
                }
            });
        }
    });
    (addr, handshakes)
}

async fn ws_gateway(echo: SocketAddr, methods: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start().await;
    let config = fixture("gateway").append(&format!(
        "[upstreams.ws]\nurl = \"http://{echo}\"\n\
         [[routes]]\npath = \"/ws\"\nmethods = {methods}\nupstream = \"ws\"\nauth = [\"jwt\"]\n"
    ));
    (gateway(config, &upstream).await, upstream)
}

fn token(sub: &str) -> String {
    Token::new().sub(sub).exp_in(600).kid("rsa-1").sign_rs256()
}

fn handshake(gw: &Gateway, token: Option<&str>) -> http::Request<()> {
    let mut request = format!("ws://{}/ws", gw.proxy_addr)
        .into_client_request()
        .unwrap();
    if let Some(token) = token {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    request
        .headers_mut()
        .insert("x-warden-subject", "admin".parse().unwrap());
    request
}

#[tokio::test]
async fn handshakes_are_authorized_then_tunneled() {
    let (echo, handshakes) = echo_server().await;
    let (gw, _upstream) = ws_gateway(echo, "[\"GET\"]").await;

    // No token: the 401 with its challenge, not a 101.
    let refused = tokio::time::timeout(
        LIMIT,
        tokio_tungstenite::connect_async(handshake(&gw, None)),
    )
    .await
    .unwrap();
    match refused {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 401);
            assert!(response.headers().contains_key("www-authenticate"));
        }
        other => panic!("expected a 401, got {other:?}"),
    }
    assert!(
        handshakes.lock().unwrap().is_empty(),
        "a refused handshake never reaches the upstream"
    );

    let (mut ws, response) = tokio::time::timeout(
        LIMIT,
        tokio_tungstenite::connect_async(handshake(&gw, Some(&token("wendy")))),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status(), 101);
    for text in ["hello", "through", "warden"] {
        ws.send(Message::text(text)).await.unwrap();
        let echoed = tokio::time::timeout(LIMIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    let echoed = tokio::time::timeout(LIMIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(echoed.into_data().as_ref(), [0u8, 1, 2, 255]);
    ws.close(None).await.unwrap();

    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0]["x-warden-subject"], "wendy",
        "warden's identity, not the client's"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_upgrades_are_refused() {
    let (echo, handshakes) = echo_server().await;
    let (gw, _) = ws_gateway(echo, "[\"POST\"]").await;
    let t = token("wendy");

    // A route that does not allow GET: 405, never a 101.
    match tokio_tungstenite::connect_async(handshake(&gw, Some(&t))).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 405),
        other => panic!("expected a 405, got {other:?}"),
    }
    gw.shutdown().await;

    let (gw, upstream) = ws_gateway(echo, "[\"GET\"]").await;
    // An upgrade that carries a body: the bytes after the head would be the tunnel's for
    // one reader and a body for another.
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Authorization: Bearer {t}\r\nContent-Length: 5\r\n\r\nhello"
    );
    let answer = raw(gw.proxy_addr, request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(handshakes.lock().unwrap().is_empty());

    // An upgrade to h2c (request smuggling through a proxy that passes it on): the upstream
    // never sees the upgrade and the client never gets a 101.
    let answer = raw(
        gw.proxy_addr,
        b"GET /public HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].headers.contains_key("upgrade"));
    assert!(!seen[0].headers.contains_key("http2-settings"));
    gw.shutdown().await;
}

/// One masked client text frame (RFC 6455 §5.2), short payloads only.
fn client_text(text: &str) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x81, 0x80 | u8::try_from(text.len()).unwrap()];
    out.extend_from_slice(&mask);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[tokio::test]
async fn websockets_over_http2_are_authorized_then_tunneled() {
    let (echo, handshakes) = echo_server().await;
    let (gw, _upstream) = ws_gateway(echo, "[\"GET\"]").await;
    let tcp = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
    let (send, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut send = send.ready().await.unwrap();
    for _ in 0..100 {
        if send.is_extended_connect_protocol_enabled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        send.is_extended_connect_protocol_enabled(),
        "warden announces RFC 8441"
    );

    let connect = |token: Option<&str>| {
        let mut request = http::Request::builder()
            .method(http::Method::CONNECT)
            .uri("http://api.test/ws")
            .header("sec-websocket-version", "13")
            .extension(h2::ext::Protocol::from("websocket"));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        request.body(()).unwrap()
    };
    let (response, _) = send.send_request(connect(None), false).unwrap();
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 401);
    assert!(handshakes.lock().unwrap().is_empty());

    let mut send = send.ready().await.unwrap();
    let (response, mut stream) = send
        .send_request(connect(Some(&token("hana"))), false)
        .unwrap();
    let response = tokio::time::timeout(LIMIT, response)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    stream
        .send_data(client_text("over h2").into(), false)
        .unwrap();
    let mut received = Vec::new();
    while received.len() < 2 + "over h2".len() {
        let chunk = tokio::time::timeout(LIMIT, body.data())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    assert_eq!(received[0], 0x81, "an unmasked text frame from the server");
    assert_eq!(&received[2..], b"over h2");
    let seen = handshakes.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0]["x-warden-subject"], "hana");
    // The client ends its side of the stream: the tunnel closes, and so can the gateway.
    stream.send_data(bytes::Bytes::new(), true).unwrap();
    gw.shutdown().await;
}
