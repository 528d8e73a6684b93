//! Several hosts per upstream, each a real recording upstream on loopback: round robin and
//! least requests, retries only for idempotent requests that never reached a host, passive
//! ejection after consecutive failures (kept across a reload), the active health check, and
//! the 503 when no host is healthy.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use warden::gateway::{Gateway, Listeners};
use warden_core::Config;
use warden_testkit::{Fixture, fixture};

use crate::common::{Upstream, client, gateway, get};

/// A loopback port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

/// The `public` fixture with the upstream `pool` of `hosts` and routes to it.
fn pool_fixture(hosts: &[SocketAddr], settings: &str) -> Fixture {
    let urls: Vec<String> = hosts.iter().map(|h| format!("\"http://{h}\"")).collect();
    fixture("public").append(&format!(
        "[upstreams.pool]\nurls = [{}]\n{settings}\n\
         [[routes]]\npath = \"/pool/{{rest}}\"\nmethods = [\"GET\", \"POST\"]\nupstream = \"pool\"\n\
         [[routes]]\npath = \"/slow\"\nupstream = \"pool\"\n",
        urls.join(", ")
    ))
}

async fn pool_gateway(hosts: &[SocketAddr], settings: &str) -> Gateway {
    let unused = Upstream::start().await;
    gateway(pool_fixture(hosts, settings), &unused).await
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly() {
    let ups = [
        Upstream::start().await,
        Upstream::start().await,
        Upstream::start().await,
    ];
    let gw = pool_gateway(&ups.iter().map(|u| u.addr).collect::<Vec<_>>(), "").await;
    for _ in 0..9 {
        assert_eq!(get(&gw, "/pool/x").await.status(), 200);
    }
    let counts: Vec<usize> = ups.iter().map(|u| u.seen().len()).collect();
    assert_eq!(counts, [3, 3, 3]);
    // Each host gets its own Host header.
    for up in &ups {
        assert_eq!(up.seen()[0].headers["host"], up.addr.to_string());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn least_requests_avoids_a_busy_host() {
    let a = Upstream::start().await;
    let b = Upstream::start().await;
    let gw = pool_gateway(&[a.addr, b.addr], "balance = \"least_requests\"").await;
    // The recording upstream holds `/slow` for two seconds: one host is busy meanwhile.
    let addr = gw.proxy_addr;
    let slow = tokio::spawn(async move {
        client()
            .get(format!("http://{addr}/slow"))
            .send()
            .await
            .unwrap()
            .status()
    });
    let busy = loop {
        if !a.seen().is_empty() {
            break &a;
        }
        if !b.seen().is_empty() {
            break &b;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let idle = if std::ptr::eq(busy, &a) { &b } else { &a };
    for _ in 0..4 {
        assert_eq!(get(&gw, "/pool/x").await.status(), 200);
    }
    assert_eq!(idle.seen().len(), 4, "every request went to the idle host");
    assert_eq!(busy.seen().len(), 1);
    assert_eq!(slow.await.unwrap(), 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn idempotent_requests_are_retried_on_another_host_only_when_never_sent() {
    let live = Upstream::start().await;
    let dead = closed_port().await;
    let gw = pool_gateway(&[dead, live.addr], "eject_after = 100").await;
    for _ in 0..6 {
        let resp = get(&gw, "/pool/x").await;
        assert_eq!(
            resp.status(),
            200,
            "a GET that could not connect is tried on the live host"
        );
    }
    assert_eq!(live.seen().len(), 6);

    // A POST with a body is never sent twice: the one that lands on the dead host is a 502.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let resp = client()
            .post(format!("http://{}/pool/x", gw.proxy_addr))
            .body("payload")
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 502, 502]);
    assert_eq!(live.seen().len(), 8);
    gw.shutdown().await;
}

/// Send `n` POSTs (never retried) to the pool; how many were 502s.
async fn failed_posts(gw: &Gateway, n: usize) -> usize {
    let mut failed = 0;
    for _ in 0..n {
        let status = client()
            .post(format!("http://{}/pool/x", gw.proxy_addr))
            .body("payload")
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            502 => failed += 1,
            200 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    failed
}

#[tokio::test]
async fn consecutive_failures_eject_a_host_for_a_while() {
    let live = Upstream::start().await;
    let dead = closed_port().await;
    let gw = pool_gateway(&[dead, live.addr], "eject_after = 2\neject_for = \"1h\"").await;
    // Round robin sends every other POST to the dead host until it is ejected.
    assert_eq!(
        failed_posts(&gw, 10).await,
        2,
        "two failures eject the dead host; the rest go to the live one"
    );
    assert_eq!(live.seen().len(), 8);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_what_is_known_of_the_hosts_health() {
    let live = Upstream::start().await;
    let dead = closed_port().await;
    let unused = Upstream::start().await;
    let dir = std::env::temp_dir().join(format!("warden-pool-reload-{}", std::process::id()));
    let path = pool_fixture(&[dead, live.addr], "eject_after = 2\neject_for = \"1h\"")
        .upstream(unused.addr)
        .write_to(&dir);
    let gw = Gateway::start(
        Config::load(&path).unwrap(),
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..Listeners::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(failed_posts(&gw, 6).await, 2, "the dead host is ejected");

    // A reload builds the pools anew; the dead host is still out, so no POST fails.
    gw.reload().await.unwrap();
    assert_eq!(failed_posts(&gw, 6).await, 0);
    assert_eq!(live.seen().len(), 10);

    // Once the upstream no longer has the host, nothing of it is kept; a host new to the
    // pool starts in rotation.
    let other = closed_port().await;
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace(&dead.to_string(), &other.to_string()),
    )
    .unwrap();
    gw.reload().await.unwrap();
    assert_eq!(
        failed_posts(&gw, 6).await,
        2,
        "the new host is tried, and ejected in its turn"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_active_check_takes_failing_hosts_out_and_503_when_none_is_left() {
    let healthy = Upstream::start().await;
    let dead = closed_port().await;
    let check = "eject_after = 100\n[upstreams.pool.health]\npath = \"/health\"\ninterval = \"50ms\"\ntimeout = \"1s\"";
    let gw = pool_gateway(&[dead, healthy.addr], check).await;
    let checked = || {
        healthy
            .seen()
            .iter()
            .filter(|s| s.target == "/health")
            .count()
    };
    while checked() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // POSTs are never retried: without the check, every other one would be a 502.
    for _ in 0..4 {
        let resp = client()
            .post(format!("http://{}/pool/x", gw.proxy_addr))
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        healthy
            .seen()
            .iter()
            .filter(|s| s.target == "/pool/x")
            .count(),
        4
    );
    gw.shutdown().await;

    let gw = pool_gateway(&[dead, closed_port().await], check).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = get(&gw, "/pool/x").await;
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unhealthy");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_settings_are_checked_at_their_line() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("upstream-pool");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warden.toml");
    std::fs::write(
        &path,
        "[upstreams.a]\nurls = [\"http://127.0.0.1:1\", \"https://127.0.0.1:2\"]\n\
         [upstreams.b]\nurl = \"http://127.0.0.1:1\"\nbalance = \"random\"\nprotocol = \"h3\"\neject_after = 0\n\
         [upstreams.c]\n\
         [upstreams.d]\nurl = \"http://127.0.0.1:1\"\n[upstreams.d.health]\npath = \"health\"\n",
    )
    .unwrap();
    let error = warden_core::Config::load(&path).unwrap_err().to_string();
    for expected in [
        "upstreams.a.urls",
        "same scheme and base path",
        "upstreams.b.balance",
        "upstreams.b.protocol",
        "upstreams.b.eject_after",
        "upstreams.c",
        "upstreams.d.health.path",
    ] {
        assert!(error.contains(expected), "{expected} in {error}");
    }
}

/// The connections each request reached the upstream on, in order.
fn connections(up: &Upstream) -> Vec<usize> {
    up.seen().iter().map(|s| s.connection).collect()
}

#[tokio::test]
async fn http1_upstream_connections_are_kept_and_reused() {
    let up = Upstream::start().await;
    let gw = pool_gateway(&[up.addr], "").await;
    let mut seen = 0;
    for path in ["/pool/a", "/pool/no-content", "/pool/b", "/pool/missing"] {
        for _ in 0..3 {
            let response = get(&gw, path).await;
            assert!(up.seen().len() > seen, "{path} reached the upstream");
            seen += 1;
            assert!(response.status().as_u16() < 500, "{path}");
            response.bytes().await.unwrap();
        }
    }
    // One worker thread, one request at a time: one connection, bodyless answers included.
    assert_eq!(connections(&up), [0; 12]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_reused() {
    let up = Upstream::start().await;
    let gw = pool_gateway(&[up.addr], "").await;
    assert_eq!(get(&gw, "/pool/close").await.status(), 200);
    assert_eq!(get(&gw, "/pool/after").await.status(), 200);
    assert_eq!(get(&gw, "/pool/again").await.status(), 200);
    assert_eq!(connections(&up), [0, 1, 1]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_response_dropped_half_read_never_reaches_the_next_request() {
    let up = Upstream::start().await;
    let gw = pool_gateway(&[up.addr], "").await;
    let mut response = get(&gw, "/pool/large").await;
    assert_eq!(response.status(), 200);
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    // The pooled client closes a connection whose body was dropped unread, or keeps it when
    // the whole body had already arrived (loopback is fast); either way the next answer is
    // the next request's own, never the rest of the large body.
    let next = get(&gw, "/pool/next").await;
    assert_eq!(next.status(), 200);
    let body: Value = next.json().await.unwrap();
    assert_eq!(body["target"], "/pool/next");
    assert_eq!(up.seen().len(), 2);
    gw.shutdown().await;
}

/// An upstream that answers one request per connection with a keep-alive response, then
/// closes the connection a moment later, as a server with a short idle timeout does.
async fn closing_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn an_idle_connection_the_upstream_closed_is_replaced() {
    let (addr, accepted) = closing_upstream().await;
    let gw = pool_gateway(&[addr], "").await;
    for _ in 0..3 {
        let response = get(&gw, "/pool/x").await;
        assert_eq!(
            response.status(),
            200,
            "never a 502 for a closed idle connection"
        );
        assert_eq!(response.text().await.unwrap(), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 3);
    gw.shutdown().await;
}
