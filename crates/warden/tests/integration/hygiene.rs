//! Request hygiene over a raw socket: ambiguous framing (request smuggling) never desyncs
//! warden and the upstream; headers that rewrite the URL or the method upstream are never
//! forwarded.
//!
//! With both `Transfer-Encoding` and `Content-Length`, the HTTP parser follows RFC 9112 §6.1:
//! it reads the message by `Transfer-Encoding` alone, drops `Content-Length`, and closes the
//! connection after answering — so a request smuggled behind the body is never read, and the
//! upstream receives one message framed anew. (The engine also refuses the pair with 400
//! when a server hands it both, as some embedders' servers do.)
use crate::common;

use std::time::Duration;

use common::{Upstream, client, fixture, gateway, raw, raw_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `public` fixture: one public route, `/public`, for GET and POST.
const CONFIG: &str = "public";

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    // Conflicting lengths: refused.
    let answer = raw(
        gw.proxy_addr,
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    // Obsolete line folding, invalid lengths and unknown codings are refused by the parser.
    for attempt in [
        &b"GET /public HTTP/1.1\r\nHost: x\r\nX-Foo: a\r\n b\r\n\r\n"[..],
        b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: +4\r\n\r\nabcd",
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"GET /public HTTP/1.1\r\nHost: x\r\nX-A: \x01\r\n\r\n",
    ] {
        assert_eq!(
            raw_status(&raw(gw.proxy_addr, attempt).await),
            400,
            "{}",
            String::from_utf8_lossy(attempt)
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "a malformed request reached the upstream"
    );

    // CL.TE and TE.CL with a smuggled request behind the body: one answer, then the
    // connection is closed; the upstream sees one request with the chunked (empty) body.
    for attempt in [
        &b"POST /public HTTP/1.1\r\nHost: x\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /public?smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /public HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 44\r\n\r\n0\r\n\r\nGET /public?smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let before = upstream.seen().len();
        let mut stream = tokio::net::TcpStream::connect(gw.proxy_addr).await.unwrap();
        stream.write_all(attempt).await.unwrap();
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut all)).await;
        assert!(read.is_ok(), "the connection was left open");
        let text = String::from_utf8_lossy(&all);
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
        let seen = upstream.seen();
        assert_eq!(seen.len(), before + 1, "{seen:?}");
        let last = upstream.last();
        assert_eq!((last.target.as_str(), last.body.len()), ("/public", 0));
        assert!(seen.iter().all(|s| !s.target.contains("smuggled")));
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn url_and_method_override_headers_never_reach_the_upstream() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let mut req = client().get(format!("http://{}/public", gw.proxy_addr));
    for name in warden_core::config::CLIENT_FORBIDDEN_HEADERS {
        req = req.header(name, "/admin");
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
    let seen = upstream.last();
    assert_eq!(seen.method, "GET");
    assert_eq!(seen.target, "/public");
    for name in warden_core::config::CLIENT_FORBIDDEN_HEADERS {
        assert!(
            seen.headers.get(name).is_none(),
            "{name} reached the upstream"
        );
    }
    gw.shutdown().await;
}
