//! The live dashboard on the admin listener: known traffic through a real gateway, then the
//! event stream read over a raw socket, the snapshot and its filters (a bad one is a 400
//! problem), the token rules, an explanation compared with `warden explain`'s own text, and
//! the page in headless Chromium (counts read from its DOM, a screenshot kept under
//! `target/tmp/dashboard/`).
use crate::common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warden::gateway::Gateway;
use warden_testkit::{Token, Upstream, fixture};

/// What [`known_traffic`] sends: the refusals by status, by client, by route.
const REFUSED: u64 = 11;

/// The ids of the decisions of interest in [`known_traffic`].
struct Sent {
    /// The first 403 for a missing role (eve on /admin from 127.0.0.3).
    forbidden_id: String,
    /// Its token.
    eve_token: String,
}

async fn gateway() -> (Gateway, Upstream) {
    let upstream = Upstream::start().await;
    let gw = common::gateway_with_admin(fixture("live"), &upstream).await;
    (gw, upstream)
}

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.proxy_addr)
}

/// The decision id in a problem's `instance`.
async fn problem_id(answer: reqwest::Response) -> String {
    let body: Value = answer.json().await.unwrap();
    body["instance"]
        .as_str()
        .unwrap()
        .strip_prefix("urn:uuid:")
        .unwrap()
        .to_owned()
}

/// 5 × 401 (3 without a token from .2, 2 with a garbled one from .3), 3 × 403 (2 for a
/// missing role from .3 as `eve`, 1 by the WAF from .6), 1 × 404 (.4), 2 × 429 (.5); and
/// 3 allowed requests plus one the detect-only WAF flagged.
async fn known_traffic(gw: &Gateway) -> Sent {
    let two = common::client_from("127.0.0.2");
    let three = common::client_from("127.0.0.3");
    for _ in 0..3 {
        assert_eq!(two.get(url(gw, "/me")).send().await.unwrap().status(), 401);
    }
    for _ in 0..2 {
        let answer = three
            .get(url(gw, "/me"))
            .bearer_auth("garbled")
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 401);
    }
    let eve_token = Token::new()
        .sub("eve")
        .exp_in(600)
        .roles(["viewer"])
        .sign_rs256();
    let mut forbidden_id = String::new();
    for i in 0..2 {
        let answer = three
            .get(url(gw, "/admin"))
            .bearer_auth(&eve_token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
        if i == 0 {
            forbidden_id = problem_id(answer).await;
        }
    }
    let four = common::client_from("127.0.0.4");
    assert_eq!(
        four.get(url(gw, "/nowhere")).send().await.unwrap().status(),
        404
    );
    let five = common::client_from("127.0.0.5");
    let statuses: Vec<u16> = futures_free_sequence(&five, &url(gw, "/limited"), 4).await;
    assert_eq!(statuses, [200, 200, 429, 429]);
    let six = common::client_from("127.0.0.6");
    let xss = "?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E";
    assert_eq!(
        six.get(url(gw, &format!("/search{xss}")))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        six.get(url(gw, &format!("/watch{xss}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        six.get(url(gw, "/search")).send().await.unwrap().status(),
        200
    );
    Sent {
        forbidden_id,
        eve_token,
    }
}

/// The statuses of `n` GETs of `url`, one after the other.
async fn futures_free_sequence(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(client.get(url).send().await.unwrap().status().as_u16());
    }
    out
}

/// `GET path` on the admin listener with `token`: the status, content type and body.
async fn admin(gw: &Gateway, path: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = common::client().get(format!("http://{}{path}", gw.admin_addr.unwrap()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, answer.text().await.unwrap())
}

/// The snapshot for `query`, once it has counted `refused` refusals (the live thread takes
/// events off the request path, so they arrive shortly after the answers).
async fn snapshot_with(gw: &Gateway, query: &str, refused: u64) -> Value {
    let started = Instant::now();
    loop {
        let (status, _, body) = admin(
            gw,
            &format!("/dashboard/snapshot{query}"),
            Some(common::ADMIN_TOKEN),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let snapshot: Value = serde_json::from_str(&body).unwrap();
        if snapshot["refused"] == json!(refused) {
            return snapshot;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the snapshot never counted {refused}: {snapshot}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Read server-sent events from a raw socket until one whose `refused` is `refused`; the
/// stream's head first.
struct EventStream {
    stream: TcpStream,
    buffer: String,
}

impl EventStream {
    async fn open(admin: SocketAddr, query: &str) -> (Self, String) {
        let mut stream = TcpStream::connect(admin).await.unwrap();
        let request = format!(
            "GET /dashboard/events{query} HTTP/1.1\r\nHost: warden\r\nAuthorization: Bearer {}\r\nAccept: text/event-stream\r\n\r\n",
            common::ADMIN_TOKEN
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut events = Self {
            stream,
            buffer: String::new(),
        };
        let head = loop {
            if let Some((head, rest)) = events.buffer.split_once("\r\n\r\n") {
                let (head, rest) = (head.to_owned(), rest.to_owned());
                events.buffer = rest;
                break head;
            }
            events.read().await;
        };
        (events, head)
    }

    async fn read(&mut self) {
        let mut buf = [0u8; 16384];
        let n = tokio::time::timeout(Duration::from_secs(10), self.stream.read(&mut buf))
            .await
            .expect("no event in 10 s")
            .unwrap();
        assert!(n > 0, "the stream ended");
        self.buffer.push_str(&String::from_utf8_lossy(&buf[..n]));
    }

    /// The next `snapshot` event's data (each event is one chunk of the chunked body).
    async fn next(&mut self) -> Value {
        loop {
            if let Some(start) = self.buffer.find("event: snapshot\ndata: ")
                && let Some(len) = self.buffer[start..].find("\n\n")
            {
                let data =
                    self.buffer[start + "event: snapshot\ndata: ".len()..start + len].to_owned();
                self.buffer.drain(..start + len + 2);
                return serde_json::from_str(&data).unwrap();
            }
            self.read().await;
        }
    }

    async fn until_refused(&mut self, refused: u64) -> Value {
        let started = Instant::now();
        loop {
            let snapshot = self.next().await;
            if snapshot["refused"] == json!(refused) {
                return snapshot;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "never {refused}: {snapshot}"
            );
        }
    }
}

fn counts(list: &Value) -> Vec<(String, u64)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["key"].as_str().unwrap().to_owned(),
                row["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_counts_known_traffic_over_a_real_socket() {
    let (gw, _upstream) = gateway().await;
    let (mut events, head) = EventStream::open(gw.admin_addr.unwrap(), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let first = events.next().await;
    assert_eq!(first["refused"], 0, "{first}");

    known_traffic(&gw).await;
    let s = events.until_refused(REFUSED).await;
    assert_eq!(
        s["by_status"],
        json!({"401": 5, "403": 3, "404": 1, "429": 2, "451": 0, "other": 0})
    );
    assert_eq!(s["totals"]["allowed"], 3, "{s}");
    assert_eq!(s["totals"]["refused"], REFUSED);
    assert_eq!(
        counts(&s["top_clients"]),
        pairs(&[
            ("127.0.0.3", 4),
            ("127.0.0.2", 3),
            ("127.0.0.5", 2),
            ("127.0.0.4", 1),
            ("127.0.0.6", 1)
        ])
    );
    assert_eq!(
        counts(&s["top_routes"]),
        pairs(&[("me", 5), ("admin", 2), ("limited", 2), ("search", 1)])
    );
    assert_eq!(counts(&s["top_subjects"]), pairs(&[("eve", 2)]));
    assert_eq!(
        s["waf"],
        json!([{"rule": "xss", "refused": 1, "detected": 1}])
    );
    assert_eq!(s["rate_limits"], json!({"rate_limited": 2, "banned": 0}));
    let reasons: Vec<(String, u64, u64)> = s["by_reason"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reason"].as_str().unwrap().to_owned(),
                r["status"].as_u64().unwrap(),
                r["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("unauthenticated".to_owned(), 401, 3),
            ("forbidden".to_owned(), 403, 2),
            ("invalid_token".to_owned(), 401, 2),
            ("rate_limited".to_owned(), 429, 2),
            ("not_found".to_owned(), 404, 1),
            ("request_rejected".to_owned(), 403, 1),
        ]
    );
    let series_total: u64 = s["series"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap().iter().map(|n| n.as_u64().unwrap()))
        .sum();
    assert_eq!(
        series_total, REFUSED,
        "every refusal is in one bar of the chart"
    );
    assert_eq!(
        s["recent"].as_array().unwrap().len(),
        usize::try_from(REFUSED).unwrap()
    );
    assert_eq!(
        s["recent"][0]["target"], "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
        "newest first"
    );

    // A filtered stream counts only what its filter keeps.
    let (mut filtered, _) =
        EventStream::open(gw.admin_addr.unwrap(), "?status=401,403&client=127.0.0.3").await;
    let f = filtered.until_refused(4).await;
    assert_eq!(f["by_status"]["401"], 2);
    assert_eq!(f["by_status"]["403"], 2);
    assert_eq!(f["filter"]["client"], "127.0.0.3/32");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_data_needs_the_admin_token_and_bad_filters_are_400_problems() {
    let (gw, _upstream) = gateway().await;
    // The page is open and holds no data; it allows only its own inline script and style.
    let answer = common::client()
        .get(format!("http://{}/dashboard", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let policy = answer.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.starts_with("default-src 'none'; script-src 'sha256-"),
        "{policy}"
    );
    assert!(policy.contains("connect-src 'self'"), "{policy}");
    let page = answer.text().await.unwrap();
    assert!(page.contains("<script>") && !page.contains("<script src"));

    for path in [
        "/dashboard/snapshot",
        "/dashboard/events",
        "/dashboard/explain?id=x",
    ] {
        let (status, _, _) = admin(&gw, path, None).await;
        assert_eq!(status, 401, "{path} without a token");
        let (status, _, _) = admin(&gw, path, Some("not-the-token")).await;
        assert_eq!(status, 401, "{path} with a wrong token");
    }

    for (query, detail) in [
        ("?colour=red", "unknown parameter `colour`"),
        ("?status=200", "`200` is not a refusal status"),
        ("?status=401&status=403", "`status` is given more than once"),
        (
            "?client=not-an-address",
            "is not an IP address or a CIDR block",
        ),
        ("?route=nope", "there is no route named `nope`"),
        ("?subject=%FF", "not valid percent-encoded UTF-8"),
    ] {
        for endpoint in ["snapshot", "events"] {
            let (status, content_type, body) = admin(
                &gw,
                &format!("/dashboard/{endpoint}{query}"),
                Some(common::ADMIN_TOKEN),
            )
            .await;
            assert_eq!(status, 400, "{endpoint}{query}: {body}");
            assert_eq!(
                content_type, "application/problem+json",
                "{endpoint}{query}"
            );
            let problem: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(problem["status"], 400);
            assert!(
                problem["type"].as_str().unwrap().ends_with("bad_filter"),
                "{problem}"
            );
            assert!(
                problem["detail"].as_str().unwrap().contains(detail),
                "{query}: {problem}"
            );
        }
    }
    let (status, content_type, _) = admin(
        &gw,
        "/dashboard/explain?id=nonsense",
        Some(common::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (400, "application/problem+json")
    );
    let (status, _, _) = admin(
        &gw,
        "/dashboard/explain?id=01900000-0000-7000-8000-000000000000",
        Some(common::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    gw.shutdown().await;
}

/// Mask the decision ids in a text (a replay makes a decision of its own).
fn without_ids(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let candidate = text.get(i..i + 36).filter(|c| {
            c.bytes().enumerate().all(|(j, b)| {
                if [8, 13, 18, 23].contains(&j) {
                    b == b'-'
                } else {
                    b.is_ascii_hexdigit()
                }
            })
        });
        if candidate.is_some() {
            out.push_str("<id>");
            i += 36;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_explained_with_the_text_warden_explain_prints() {
    let upstream = Upstream::start().await;
    let config = common::with_admin_token(fixture("live")).upstream(upstream.addr);
    let dir = common::chromium::artifacts("dashboard", "explain");
    let path = config.write_to(&dir);
    let gw = common::gateway_with_admin(fixture("live"), &upstream).await;
    let sent = known_traffic(&gw).await;
    snapshot_with(&gw, "", REFUSED).await;
    let (status, content_type, text) = admin(
        &gw,
        &format!("/dashboard/explain?id={}", sent.forbidden_id),
        Some(common::ADMIN_TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(content_type, "text/plain; charset=utf-8");
    let (first, rest) = text.split_once("\n\n").unwrap();
    assert!(
        first.starts_with(&format!(
            "decision {}: 403 forbidden at ",
            sent.forbidden_id
        )),
        "{first}"
    );
    assert!(
        !text.contains(&sent.eve_token),
        "the credentials are never shown"
    );

    // The same request through `warden explain`, at the same second.
    let at = first
        .split(" at ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .unwrap()
        .to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_warden"))
            .arg("explain")
            .arg("--config")
            .arg(&path)
            .args(["-H", &format!("Authorization: Bearer {}", sent.eve_token)])
            .args(["--ip", "127.0.0.3", "--at", &at, "/admin"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli = String::from_utf8(out.stdout).unwrap();
    assert!(cli.contains("forbidden"), "{cli}");
    assert_eq!(without_ids(rest), without_ids(&cli));
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_the_counts_in_headless_chromium() {
    let (gw, _upstream) = gateway().await;
    let sent = known_traffic(&gw).await;
    snapshot_with(&gw, "", REFUSED).await;
    let dir = common::chromium::artifacts("dashboard", "page");
    let page = format!(
        "http://{}/dashboard#token={}&explain={}",
        gw.admin_addr.unwrap(),
        common::ADMIN_TOKEN,
        sent.forbidden_id
    );
    let forbidden_id = sent.forbidden_id.clone();
    let (dom, url) = tokio::task::spawn_blocking(move || {
        let mut browser =
            common::chromium::Browser::open(&page, &dir.join("profile"), (1400, 1800));
        browser.wait_for(
            &format!(
                "document.body.dataset.refused === '{REFUSED}' && document.getElementById('explanation').dataset.id === '{forbidden_id}'"
            ),
            "({snapshots: document.body.dataset.snapshots, refused: document.body.dataset.refused, state: document.getElementById('state').textContent, error: document.getElementById('error').textContent})",
            Duration::from_secs(30),
        );
        let dom = browser.eval(
            r##"(() => {
                const text = (id) => document.getElementById(id).textContent;
                const rows = (id) => [...document.getElementById(id).querySelectorAll("tr")].map((tr) => [...tr.children].map((td) => td.textContent));
                return {
                    state: document.getElementById("state").dataset.state,
                    cards: Object.fromEntries(["401", "403", "404", "429", "451", "other"].map((s) => [s, text("count-" + s)])),
                    refused: text("refused"),
                    allowed: text("total-allowed"),
                    clients: rows("top-clients"),
                    routes: rows("top-routes"),
                    subjects: rows("top-subjects"),
                    waf: rows("waf"),
                    reasons: rows("reasons"),
                    rateLimited: text("rate-limited"),
                    recent: document.querySelectorAll("#recent tr").length,
                    explainButtons: document.querySelectorAll("#recent button").length,
                    bars: document.querySelectorAll("#chart rect").length,
                    explanation: text("explanation"),
                };
            })()"##,
        );
        let url = browser.eval("location.href");
        browser.screenshot(&dir.join("dashboard.png"));
        (dom, url)
    })
    .await
    .unwrap();
    assert!(
        !url.as_str().unwrap().contains("token"),
        "the token left the address bar: {url}"
    );
    assert_eq!(dom["state"], "live", "{dom}");
    assert_eq!(
        dom["cards"],
        json!({"401": "5", "403": "3", "404": "1", "429": "2", "451": "0", "other": "0"})
    );
    assert_eq!(dom["refused"], REFUSED.to_string());
    assert_eq!(dom["allowed"], "3");
    assert_eq!(dom["clients"][0], json!(["127.0.0.3", "4"]));
    assert_eq!(dom["clients"][1], json!(["127.0.0.2", "3"]));
    assert_eq!(dom["routes"][0], json!(["me", "5"]));
    assert_eq!(dom["subjects"], json!([["eve", "2"]]));
    assert_eq!(dom["waf"], json!([["xss", "1", "1"]]));
    assert_eq!(dom["reasons"][0], json!(["unauthenticated", "401", "3"]));
    assert_eq!(dom["rateLimited"], "2");
    assert_eq!(dom["recent"], json!(REFUSED));
    assert_eq!(
        dom["explainButtons"],
        json!(REFUSED),
        "each proxied refusal can be explained"
    );
    assert!(dom["bars"].as_u64().unwrap() >= 1, "{dom}");
    let explanation = dom["explanation"].as_str().unwrap();
    assert!(
        explanation.starts_with(&format!("decision {}: 403 forbidden", sent.forbidden_id)),
        "{explanation}"
    );
    assert!(
        explanation.contains("GET /admin from 127.0.0.3"),
        "{explanation}"
    );
    gw.shutdown().await;
}
