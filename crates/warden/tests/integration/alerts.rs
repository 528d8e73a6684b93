//! Alerts: refusals over a rule's threshold are POSTed to the webhook receivers the test
//! starts (one that answers, one that is down, one that is slow) and sent as a syslog line
//! to a UDP socket the test binds; at most one alert per key per window; a down or slow
//! receiver never holds up requests, and its dropped alerts are counted.
use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::Value;
use warden::gateway::Gateway;
use warden_testkit::{Upstream, fixture};

/// A webhook receiver on loopback: it keeps every JSON body POSTed to it and answers 204,
/// after `delay` (a slow receiver).
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    async fn start(delay: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let kept = Arc::clone(&kept);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let kept = Arc::clone(&kept);
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            tokio::time::sleep(delay).await;
                            kept.lock()
                                .unwrap()
                                .push(serde_json::from_slice(&body).unwrap());
                            let mut answer = Response::new(Full::new(Bytes::new()));
                            *answer.status_mut() = http::StatusCode::NO_CONTENT;
                            Ok::<_, Infallible>(answer)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn alerts(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// A loopback port nothing listens on (bound, then closed).
fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Wait (up to 10 s) until `check` holds.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < Duration::from_secs(10), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of one metric line (`name{labels}`) on the admin listener, 0 when absent.
async fn metric(gw: &Gateway, line: &str) -> u64 {
    let text = common::admin_get(gw, "/metrics").await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line)
                .and_then(|v| v.trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
}

async fn gateway(alerts: &str) -> (Gateway, Upstream) {
    let upstream = Upstream::start().await;
    let gw = common::gateway_with_admin(fixture("live").append(alerts), &upstream).await;
    (gw, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_over_a_threshold_are_posted_once_per_key_and_sent_to_syslog() {
    let ok = Receiver::start(Duration::ZERO).await;
    let down = closed_port();
    let syslog = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (gw, _upstream) = gateway(&format!(
        r#"
[[alerts.rules]]
name = "unauthenticated-client"
per = "client"
refusals = 3
window = "1m"
statuses = [401]

[[alerts.rules]]
name = "busy-route"
per = "route"
refusals = 9
window = "1m"

[[alerts.webhooks]]
url = "{}"

[[alerts.webhooks]]
url = "http://{down}/hook"
timeout = "200ms"
retries = 2

[alerts.syslog]
address = "{}"
"#,
        ok.url(),
        syslog.local_addr().unwrap()
    ))
    .await;
    let url = |path: &str| format!("http://{}{path}", gw.proxy_addr);
    let two = common::client_from("127.0.0.2");
    let mut ids = Vec::new();
    for _ in 0..8 {
        let answer = two.get(url("/me")).send().await.unwrap();
        assert_eq!(answer.status(), 401);
        let body: Value = answer.json().await.unwrap();
        ids.push(
            body["instance"]
                .as_str()
                .unwrap()
                .trim_start_matches("urn:uuid:")
                .to_owned(),
        );
    }
    // Another client stays under the threshold; 404s do not count for the 401 rule.
    let three = common::client_from("127.0.0.3");
    for path in ["/me", "/me", "/nowhere", "/nowhere", "/nowhere"] {
        three.get(url(path)).send().await.unwrap();
    }

    eventually("an alert for 127.0.0.2 and one for /me", || {
        ok.alerts().len() >= 2
    })
    .await;
    let mut datagram = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), syslog.recv(&mut datagram))
        .await
        .expect("no syslog line in 10 s")
        .unwrap();
    let line = String::from_utf8_lossy(&datagram[..n]).into_owned();

    let alerts = ok.alerts();
    assert_eq!(alerts.len(), 2, "one alert per key per window: {alerts:?}");
    // The route's: all ten refusals of /me, from both clients (the 404s have no route).
    let route = &alerts[1];
    assert_eq!(
        (&route["rule"], &route["what"], &route["key"]),
        (&"busy-route".into(), &"route".into(), &"me".into())
    );
    assert_eq!(route["count"], 10);
    let alert = &alerts[0];
    assert_eq!(alert["rule"], "unauthenticated-client");
    assert_eq!(alert["what"], "client");
    assert_eq!(alert["key"], "127.0.0.2");
    assert_eq!(alert["count"], 4);
    assert_eq!(alert["threshold"], 3);
    assert_eq!(alert["window_seconds"], 60);
    assert_eq!(
        alert["top_reasons"],
        serde_json::json!([{"reason": "unauthenticated", "status": 401, "count": 4}])
    );
    let samples: Vec<&str> = alert["sample_decision_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(samples.len(), 4);
    for id in &samples {
        assert!(
            ids[..4].contains(&(*id).to_owned()),
            "{id} is one of the first four refusals"
        );
    }

    assert!(line.starts_with("<84>1 "), "{line}");
    assert!(line.contains(" warden "), "{line}");
    assert!(line.contains("CEF:0|warden|warden|"), "{line}");
    assert!(
        line.contains("|refusals_by_client|more than 3 refusals by client in 60s|7|"),
        "{line}"
    );
    assert!(line.contains("cs1=unauthenticated-client "), "{line}");
    assert!(line.contains("src=127.0.0.2"), "{line}");
    assert!(line.contains("cnt=4 "), "{line}");

    // The receiver that is down: every attempt fails, is retried twice, then given up.
    let failed = "warden_alert_deliveries_total{result=\"failed\",target=\"webhook\"}";
    eventually_metric(&gw, failed, 2).await;
    let retried = "warden_alert_deliveries_total{result=\"retry\",target=\"webhook\"}";
    assert_eq!(metric(&gw, retried).await, 4);
    let delivered = "warden_alert_deliveries_total{result=\"ok\",target=\"webhook\"}";
    assert_eq!(metric(&gw, delivered).await, 2);
    let syslogged = "warden_alert_deliveries_total{result=\"ok\",target=\"syslog\"}";
    assert_eq!(metric(&gw, syslogged).await, 2);
    let fired = |rule: &str| format!("warden_alerts_total{{rule=\"{rule}\"}}");
    assert_eq!(metric(&gw, &fired("unauthenticated-client")).await, 1);
    assert_eq!(metric(&gw, &fired("busy-route")).await, 1);
    assert_eq!(ok.alerts().len(), 2, "no further alert within the window");
    gw.shutdown().await;
}

async fn eventually_metric(gw: &Gateway, line: &str, at_least: u64) {
    let started = Instant::now();
    loop {
        let value = metric(gw, line).await;
        if value >= at_least {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{line} stayed at {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_never_holds_up_requests_and_its_overflow_is_counted() {
    // The receiver takes 5 s an alert, past the webhook's 1 s timeout: one alert a second
    // at most, while 80 fire at once. Its queue holds 64; the rest are dropped and counted.
    let slow = Receiver::start(Duration::from_secs(5)).await;
    let (gw, _upstream) = gateway(&format!(
        r#"
[[alerts.rules]]
name = "any-client"
per = "client"
refusals = 1
window = "1h"

[[alerts.webhooks]]
url = "{}"
timeout = "1s"
retries = 0
"#,
        slow.url()
    ))
    .await;
    let url = format!("http://{}/me", gw.proxy_addr);
    let mut answered = 0;
    for i in 10..90 {
        let client = common::client_from(&format!("127.0.1.{i}"));
        for _ in 0..2 {
            assert_eq!(client.get(&url).send().await.unwrap().status(), 401);
            answered += 1;
        }
    }
    assert_eq!(
        answered, 160,
        "every request was answered while the receiver stalled"
    );
    eventually_metric(&gw, "warden_alerts_total{rule=\"any-client\"}", 80).await;
    let dropped = metric(&gw, "warden_alerts_dropped_total{target=\"webhook\"}").await;
    assert!(dropped >= 80 - 64 - 1, "{dropped} alerts dropped");
    eventually_metric(
        &gw,
        "warden_alert_deliveries_total{result=\"failed\",target=\"webhook\"}",
        1,
    )
    .await;
    gw.shutdown().await;
}
