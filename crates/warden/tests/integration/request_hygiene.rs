//! The hygiene stages over real sockets: the WAF (on and detect-only, custom rules, bodies),
//! body limits (413 by `Content-Length` and while streaming), CSRF for cookie-authenticated
//! requests, CORS preflights and headers, and the path case and trailing-slash policies.
//! Every refused request is checked against the upstream's log: it never arrived.
use crate::common;

use common::{Upstream, admin_get, client, fixture, gateway, gateway_with_admin, raw, raw_status};
use warden_testkit::Token;

/// The `request-hygiene` fixture: the WAF on `/search`, detect-only on `/watch` and off on
/// `/upload` (64 KiB bodies); CSRF and CORS for `https://app.example.com`; `/notes` behind a
/// bearer or a `session` cookie.
const CONFIG: &str = "request-hygiene";

fn token() -> String {
    Token::new()
        .sub("alice")
        .exp_in(600)
        .kid("rsa-1")
        .sign_rs256()
}

fn url(gw: &warden::gateway::Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.proxy_addr)
}

async fn problem(resp: reqwest::Response) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
    )
}

#[tokio::test]
async fn the_waf_refuses_attacks_without_naming_the_rule() {
    let upstream = Upstream::start().await;
    let gw = gateway_with_admin(fixture(CONFIG), &upstream).await;
    let c = client();
    let attacks: Vec<reqwest::RequestBuilder> = vec![
        c.get(url(&gw, "/search?q=1%27%20OR%20%271%27%3D%271")),
        c.get(url(&gw, "/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")),
        c.get(url(&gw, "/search?file=..%2F..%2Fetc%2Fpasswd")),
        c.get(url(&gw, "/search?next=javascript:alert(1)")),
        c.get(url(&gw, "/search"))
            .header("user-agent", "<svg/onload=alert(1)>"),
        c.get(url(&gw, "/search"))
            .header("cookie", "pref=1' UNION SELECT password FROM users--"),
        c.post(url(&gw, "/search"))
            .header("content-type", "application/json")
            .body(r#"{"filter": {"name": "x' OR 1=1--"}}"#),
        c.post(url(&gw, "/search"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("q=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E"),
    ];
    for attack in attacks {
        let (status, doc) = problem(attack.send().await.unwrap()).await;
        assert_eq!(status, 403, "{doc}");
        assert_eq!(doc["code"], "request_rejected");
        let text = doc.to_string();
        for leak in ["sqli", "xss", "no-passwd", "js-url", "fingerprint"] {
            assert!(!text.contains(leak), "the body names the rule: {text}");
        }
    }
    // Chunked (no Content-Length): read and inspected all the same.
    let answer = raw(
        gw.proxy_addr,
        &chunked(
            "/search",
            "text/plain",
            &[b"<script>alert(1)", b"</script>"],
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 403, "{answer}");
    assert!(
        upstream.seen().is_empty(),
        "a refused request reached the upstream"
    );

    // Ordinary traffic passes, bodies included, and reaches the upstream intact.
    let ok = c
        .post(url(&gw, "/search"))
        .header("content-type", "application/json")
        .body(r#"{"q": "O'Brien", "tags": ["a;b", "c&d"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        upstream.last().body,
        r#"{"q": "O'Brien", "tags": ["a;b", "c&d"]}"#
    );

    let metrics = admin_get(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"warden_waf_findings_total{refused="true",rule="sqli"}"#),
        "{metrics}"
    );
    let recent = admin_get(&gw, "/decisions/recent").await;
    assert!(recent.contains("rule no-passwd in query"), "{recent}");
    gw.shutdown().await;
}

/// A chunked request (no `Content-Length`) with the given chunks.
fn chunked(path: &str, content_type: &str, chunks: &[&[u8]]) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in chunks {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[tokio::test]
async fn detect_only_routes_log_and_forward() {
    let upstream = Upstream::start().await;
    let gw = gateway_with_admin(fixture(CONFIG), &upstream).await;
    let resp = client()
        .get(url(&gw, "/watch?q=1%27%20OR%20%271%27%3D%271"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(upstream.seen().len(), 1);
    let metrics = admin_get(&gw, "/metrics").await;
    assert!(
        metrics.contains(r#"warden_waf_findings_total{refused="false",rule="sqli"}"#),
        "{metrics}"
    );
    let recent = admin_get(&gw, "/decisions/recent").await;
    assert!(
        recent.contains("\"waf_detected\":[\"rule sqli in query `q`"),
        "{recent}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limits_are_413() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let c = client();

    // By Content-Length, before a byte of the body is read: 413 and the connection closed.
    let answer = raw(
        gw.proxy_addr,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\nabc",
    )
    .await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert!(answer.contains("content_too_large"), "{answer}");

    // Streamed without a length, past the route's 64 KiB: cut off and answered 413.
    let chunk = vec![b'a'; 16 * 1024];
    let eight: Vec<&[u8]> = (0..8).map(|_| chunk.as_slice()).collect();
    let answer = raw(
        gw.proxy_addr,
        &chunked("/upload", "application/octet-stream", &eight),
    )
    .await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert!(
        upstream.seen().iter().all(|s| s.body.len() <= 64 * 1024),
        "an oversized body reached the upstream whole"
    );

    // Within the limit, streamed: forwarded whole.
    let three: Vec<&[u8]> = (0..3).map(|_| chunk.as_slice()).collect();
    let answer = raw(
        gw.proxy_addr,
        &chunked("/upload", "application/octet-stream", &three),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(upstream.last().body.len(), 3 * 16 * 1024);

    // Over the WAF's inspection limit on a WAF route: it cannot be inspected, so 413.
    let resp = c
        .post(url(&gw, "/search"))
        .header("content-type", "text/plain")
        .body(vec![b'a'; 9 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let resp = c
        .post(url(&gw, "/search"))
        .header("content-type", "text/plain")
        .body(vec![b'a'; 4 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        upstream.seen().iter().all(|s| s.body.len() <= 64 * 1024),
        "an oversized body reached the upstream"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn cookie_authenticated_unsafe_requests_need_a_same_site_proof() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let c = client();
    let cookie = format!("session={}", token());
    let post = || c.post(url(&gw, "/notes")).header("cookie", &cookie);

    let refused = [
        post(),
        post().header("origin", "https://evil.example"),
        post().header("origin", "null"),
        post()
            .header("sec-fetch-site", "cross-site")
            .header("origin", "https://evil.example"),
        c.delete(url(&gw, "/notes"))
            .header("cookie", &cookie)
            .header("sec-fetch-site", "same-site"),
    ];
    for request in refused {
        let (status, doc) = problem(request.send().await.unwrap()).await;
        assert_eq!(
            (status, doc["code"].as_str()),
            (403, Some("csrf_rejected")),
            "{doc}"
        );
    }
    assert!(
        upstream.seen().is_empty(),
        "a forged request reached the upstream"
    );

    let allowed = [
        post().header("sec-fetch-site", "same-origin"),
        post().header("origin", format!("http://{}", gw.proxy_addr)),
        post().header("origin", "https://app.example.com"),
        // Safe methods and header-borne credentials are not CSRF's business.
        c.get(url(&gw, "/notes")).header("cookie", &cookie),
        c.post(url(&gw, "/notes")).bearer_auth(token()),
    ];
    for request in allowed {
        assert_eq!(request.send().await.unwrap().status(), 200);
    }
    assert_eq!(upstream.seen().len(), 5);
    gw.shutdown().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_from_configuration() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let c = client();
    let preflight = |origin: &str, method: &str, headers: &str| {
        let mut r = c
            .request(reqwest::Method::OPTIONS, url(&gw, "/notes"))
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            r = r.header("access-control-request-headers", headers);
        }
        r
    };

    let resp = preflight(
        "https://app.example.com",
        "DELETE",
        "authorization, content-type",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE, HEAD");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization, content-type"
    );
    assert_eq!(h["access-control-max-age"], "600");

    for (origin, method, headers) in [
        ("https://evil.example", "GET", ""),
        ("https://app.example.com", "PUT", ""),
        ("https://app.example.com", "GET", "x-admin-override"),
    ] {
        let resp = preflight(origin, method, headers).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{origin} {method} {headers}");
        assert!(
            !resp.headers().contains_key("access-control-allow-origin"),
            "a refused preflight carries CORS headers"
        );
    }

    // Actual requests: an allowed origin can read refusals and answers; others get nothing.
    let resp = c
        .get(url(&gw, "/notes"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let exposed = resp.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
    let resp = c
        .get(url(&gw, "/notes"))
        .bearer_auth(token())
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    let resp = c
        .get(url(&gw, "/notes"))
        .bearer_auth(token())
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    // Preflights never reach the upstream.
    assert_eq!(upstream.seen().len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn case_and_trailing_slash_policies_route_and_forward_one_path() {
    let upstream = Upstream::start().await;
    // Case-insensitive paths, trailing slashes ignored; `/admin` for admins, `/public`.
    let gw = gateway(fixture("path-policies"), &upstream).await;
    let c = client();
    for path in ["/ADMIN", "/Admin/", "/admin//", "/aDmIn"] {
        let resp = c.get(url(&gw, path)).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
    }
    assert!(upstream.seen().is_empty());
    for path in ["/PUBLIC", "/public/"] {
        let resp = c.get(url(&gw, path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(upstream.last().target, "/public");
    }
    gw.shutdown().await;
}
