//! warden's own HTTP/1.1 codec for bodyless requests, against a scripted upstream on a real
//! loopback socket: every answer is raw bytes, so framing the recording upstream would never
//! send (chunk extensions, trailers, interim responses, bodies to the close, bytes beyond
//! the response, conflicting lengths) reaches the gateway as written. What is not plainly
//! framed is a 502; a connection is reused only after a response read cleanly to its end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use warden::gateway::{Gateway, Listeners};
use warden_testkit::fixture;

use crate::common::{client, get};

/// What the scripted upstream sends for one request, and whether it closes afterwards.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
}

fn answer(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
    }
}

fn closing(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: true,
    }
}

/// An upstream that answers the n-th request it reads (on any connection) with the n-th
/// answer, and closes a connection once it has no answer left for it.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(answers: Vec<Answer>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answers = Arc::new(answers);
        let next = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (counted, recorded) = (Arc::clone(&connections), Arc::clone(&heads));
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let (answers, next, recorded) = (
                    Arc::clone(&answers),
                    Arc::clone(&next),
                    Arc::clone(&recorded),
                );
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break Some(at + 4);
                            }
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => break None,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let Some(end) = end else { return };
                        let head: Vec<u8> = buf.drain(..end).collect();
                        recorded
                            .lock()
                            .unwrap()
                            .push(String::from_utf8_lossy(&head).into_owned());
                        let Some(answer) = answers.get(next.fetch_add(1, Ordering::SeqCst)) else {
                            return;
                        };
                        if stream.write_all(&answer.bytes).await.is_err() || answer.close {
                            return;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            heads,
        }
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

async fn wire_gateway(upstream: &Scripted) -> Gateway {
    let config = fixture("public")
        .append(
            "[[routes]]\npath = \"/wire/{rest}\"\nmethods = [\"GET\", \"HEAD\", \"POST\"]\nupstream = \"app\"\n",
        )
        .upstream(upstream.addr)
        .config();
    Gateway::start(
        config,
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Listeners::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn chunked_bodies_with_extensions_and_trailers_pass_and_the_connection_is_reused() {
    let up = Scripted::start(vec![
        answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5;ext=\"x\"\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\n",
        ),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-up: 2\r\n\r\nok"),
    ])
    .await;
    let gw = wire_gateway(&up).await;
    let first = get(&gw, "/wire/a?x=1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.text().await.unwrap(), "hello world");
    let second = get(&gw, "/wire/b").await;
    assert_eq!(second.headers()["x-up"], "2");
    assert_eq!(second.text().await.unwrap(), "ok");
    assert_eq!(
        up.connections(),
        1,
        "a cleanly read response frees its connection"
    );
    let heads = up.heads();
    assert!(
        heads[0].starts_with("GET /wire/a?x=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains(&format!("host: {}\r\n", up.addr)),
        "{}",
        heads[0]
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bytes_beyond_a_response_never_reach_the_next_request() {
    // A response followed by a second one nobody asked for: were the connection reused, the
    // next request would be answered with the forged one.
    let up = Scripted::start(vec![
        answer(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok\
             HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nforged",
        ),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nreal"),
    ])
    .await;
    let gw = wire_gateway(&up).await;
    assert_eq!(get(&gw, "/wire/a").await.text().await.unwrap(), "ok");
    // Let the forged bytes arrive before the next request looks for a connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(get(&gw, "/wire/b").await.text().await.unwrap(), "real");
    assert_eq!(up.connections(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn ambiguous_framing_and_malformed_heads_are_502() {
    let big = format!(
        "HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    for bad in [
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: identity\r\n\r\nok",
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
        "HTTP/1.1 200 OK\r\ncontent-length : 2\r\n\r\nok",
        "HTTP/1.1 20 OK\r\n\r\n",
        "SSH-2.0-OpenSSH_9.2\r\n\r\n",
        big.as_str(),
    ] {
        let up = Scripted::start(vec![answer(bad)]).await;
        let gw = wire_gateway(&up).await;
        let response = get(&gw, "/wire/x").await;
        assert_eq!(response.status(), 502, "{:.80}", bad);
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json"
        );
        let problem: serde_json::Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "upstream_unavailable", "{:.80}", bad);
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn a_body_cut_short_or_badly_chunked_aborts_the_answer() {
    for bad in [
        // Three of the five promised bytes, then the close.
        "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nabc",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabcXY0\r\n\r\n",
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n",
    ] {
        let up = Scripted::start(vec![closing(bad)]).await;
        let gw = wire_gateway(&up).await;
        // The head was sound, so it may have gone out before the body failed; either way
        // the client must not see an answer that ends as if whole.
        let sent = client()
            .get(format!("http://{}/wire/x", gw.proxy_addr))
            .send()
            .await;
        if let Ok(response) = sent {
            assert_eq!(response.status(), 200, "{bad:?}");
            assert!(response.text().await.is_err(), "{bad:?}");
        }
        gw.shutdown().await;
    }
}

#[tokio::test]
async fn interim_answers_are_passed_over_and_a_body_may_run_to_the_close() {
    let up = Scripted::start(vec![closing(
        "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n\
         HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the close",
    )])
    .await;
    let gw = wire_gateway(&up).await;
    let response = get(&gw, "/wire/x").await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("link").is_none());
    assert_eq!(response.text().await.unwrap(), "until the close");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced_without_a_502() {
    let up = Scripted::start(vec![
        closing("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\none"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\ntwo"),
    ])
    .await;
    let gw = wire_gateway(&up).await;
    assert_eq!(get(&gw, "/wire/a").await.text().await.unwrap(), "one");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = get(&gw, "/wire/b").await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.text().await.unwrap(), "two");
    assert_eq!(up.connections(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body_and_keep_the_connection() {
    let up = Scripted::start(vec![
        answer("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"),
        answer("HTTP/1.1 204 No Content\r\n\r\n"),
        answer("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
    ])
    .await;
    let gw = wire_gateway(&up).await;
    let head = client()
        .head(format!("http://{}/wire/a", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "5");
    assert_eq!(get(&gw, "/wire/b").await.status(), 204);
    // A bodyless POST says so to the upstream.
    let post = client()
        .post(format!("http://{}/wire/c", gw.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(post.text().await.unwrap(), "ok");
    assert_eq!(up.connections(), 1);
    assert!(
        up.heads()[2].contains("content-length: 0\r\n"),
        "{}",
        up.heads()[2]
    );
    gw.shutdown().await;
}
