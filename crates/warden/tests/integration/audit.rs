//! `warden audit` as a user runs it: against a deliberately broken API the suite starts
//! (one flaw per rule, each reported exactly once with its evidence), against the embedded
//! demo (clean), with bad input and an unreachable target, from a HAR file, and with its
//! HTML report opened in headless Chromium.
use crate::common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
const USER: &str = "user-token";
const ADMIN: &str = "admin-token";

fn testdata(name: &str) -> PathBuf {
    warden_testkit::testdata().join("audit").join(name)
}

/// A directory under the target directory for this test's files (kept as artifacts).
fn artifacts(test: &str) -> PathBuf {
    common::chromium::artifacts("audit", test)
}

/// Run `warden audit ARGS…` off the runtime (the servers run on it).
async fn audit(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(WARDEN)
            .arg("audit")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Caller {
    Anon,
    Invalid,
    User,
    Admin,
}

/// The broken API: every operation of `testdata/audit/broken.openapi.json` breaks exactly
/// one rule and answers correctly otherwise. `/bulk/N` are correct operations (the speed
/// test). Counts the unsafe requests it receives.
async fn broken_api() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let unsafe_seen = Arc::new(AtomicUsize::new(0));
    let seen = unsafe_seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        if !matches!(req.method().as_str(), "GET" | "HEAD" | "OPTIONS") {
                            seen.fetch_add(1, Ordering::SeqCst);
                        }
                        if req.uri().path() == "/slow" {
                            tokio::time::sleep(Duration::from_secs(3)).await;
                        }
                        Ok::<_, Infallible>(answer(&req))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, unsafe_seen)
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let caller = match req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
    {
        None => Caller::Anon,
        Some(v) if v == format!("Bearer {USER}") => Caller::User,
        Some(v) if v == format!("Bearer {ADMIN}") => Caller::Admin,
        Some(_) => Caller::Invalid,
    };
    let reply = |status: u16, body: &str, headers: &[(&str, &str)]| {
        let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
        resp.headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        for (n, v) in headers {
            resp.headers_mut().insert(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        resp
    };
    let challenge = |caller: Caller| {
        let value = if caller == Caller::Invalid {
            "Bearer realm=\"broken\", error=\"invalid_token\""
        } else {
            "Bearer realm=\"broken\""
        };
        reply(
            401,
            "{\"message\":\"log in\"}",
            &[("www-authenticate", value)],
        )
    };
    let signed_in = matches!(caller, Caller::User | Caller::Admin);
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["health"] => reply(200, "{\"ok\":true}", &[]),
        // A redirect to another host: never followed (the host does not even resolve).
        ["moved"] => reply(
            302,
            "",
            &[("location", "http://elsewhere.example.invalid/")],
        ),
        // missing-challenge: the 401 says nothing about how to authenticate.
        ["account"] if !signed_in => reply(401, "{\"message\":\"login required\"}", &[]),
        // forbidden-without-credentials: 403 to a request with no credentials at all.
        ["reports"] if caller == Caller::Anon => reply(403, "{\"message\":\"forbidden\"}", &[]),
        // unauthorized-for-authenticated: the user is known, and gets 401 instead of 403.
        ["billing"] if caller == Caller::User => challenge(caller),
        // ignored-authentication: answered whoever asks, though the document requires it.
        ["invoices"] => reply(200, "{\"invoices\":[]}", &[]),
        _ if !signed_in => challenge(caller),
        ["account" | "reports" | "billing"] => reply(200, "{\"ok\":true}", &[]),
        // success-with-error.
        ["profile"] => reply(200, "{\"error\":\"profile not found\"}", &[]),
        // forbidden-for-rate-limit.
        ["feed"] => reply(403, "{\"message\":\"Rate limit exceeded\"}", &[]),
        // missing-retry-after.
        ["search"] => reply(429, "{\"message\":\"slow down\"}", &[]),
        // missing-allow: the document says GET, the server only takes POST.
        ["export"] => reply(405, "{\"message\":\"use POST\"}", &[]),
        // existence-leak: 403 for someone else's file, 404 for a missing one.
        ["files", id] => match (*id, caller) {
            ("7", _) | ("1", Caller::Admin) => reply(200, "{\"file\":true}", &[]),
            ("1", _) => reply(403, "{\"message\":\"not yours\"}", &[]),
            _ => reply(404, "{\"message\":\"no such file\"}", &[]),
        },
        // bola: every signed-in caller reads every order.
        ["orders", "o-7" | "o-1"] => reply(200, "{\"order\":true}", &[]),
        ["orders", _] => reply(404, "{\"message\":\"no such order\"}", &[]),
        // bfla: the expectations say admin only; any signed-in caller gets in.
        ["admin", "users"] => reply(200, "{\"users\":[]}", &[]),
        ["bulk", _] => reply(200, "{\"ok\":true}", &[]),
        _ => reply(404, "{\"message\":\"not found\"}", &[]),
    }
}

fn broken_args(addr: SocketAddr, dir: &Path) -> Vec<String> {
    let mut a = args(&[
        "--openapi",
        testdata("broken.openapi.json").to_str().unwrap(),
        "--expect",
        testdata("broken.expect.toml").to_str().unwrap(),
        "--as",
        "anon",
        "--as",
        &format!("user={USER}"),
        "--as",
        &format!("admin={ADMIN}"),
        "--rate",
        "0",
        "--format",
        "json",
    ]);
    a.extend([
        "--base".to_owned(),
        format!("http://{addr}"),
        "--html".to_owned(),
        dir.join("report.html").display().to_string(),
        "--junit".to_owned(),
        dir.join("junit.xml").display().to_string(),
    ]);
    a
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flaw_of_the_broken_api_is_reported_once_with_its_evidence() {
    let (addr, unsafe_seen) = broken_api().await;
    let dir = artifacts("broken");
    let out = audit(broken_args(addr, &dir)).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    let findings = report["findings"].as_array().unwrap();
    let expected = [
        ("missing-challenge", "account", "anon", 401),
        ("forbidden-without-credentials", "reports", "anon", 403),
        ("unauthorized-for-authenticated", "billing", "user", 401),
        ("success-with-error", "profile", "user", 200),
        ("forbidden-for-rate-limit", "feed", "user", 403),
        ("missing-retry-after", "search", "user", 429),
        ("missing-allow", "export", "user", 405),
        ("existence-leak", "getFile", "user", 403),
        ("bola", "getOrder", "user", 200),
        ("bfla", "listUsers", "user", 200),
        ("ignored-authentication", "invoices", "anon", 200),
    ];
    let summary: Vec<String> = findings
        .iter()
        .map(|f| format!("{} {} {}", f["rule"], f["operation"], f["identity"]))
        .collect();
    assert_eq!(findings.len(), expected.len(), "{summary:#?}");
    for (rule, operation, identity, status) in expected {
        let of_rule: Vec<&Value> = findings.iter().filter(|f| f["rule"] == rule).collect();
        assert_eq!(of_rule.len(), 1, "{rule}: {summary:#?}");
        let f = of_rule[0];
        assert_eq!(f["operation"], operation, "{rule}");
        assert_eq!(f["identity"], identity, "{rule}");
        assert!(!f["statement"].as_str().unwrap().is_empty());
        let evidence = &f["evidence"][0];
        assert_eq!(evidence["status"], status, "{rule}: {evidence}");
        assert!(
            evidence["request"]
                .as_str()
                .unwrap()
                .starts_with(&format!("GET http://{addr}/")),
            "{rule}: {evidence}"
        );
        assert!(!evidence["body"].as_str().unwrap().is_empty(), "{rule}");
        assert!(
            evidence["headers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h[0] == "content-type"),
            "{rule}: {evidence}"
        );
    }
    // The evidence of the particular rules.
    let of = |rule: &str| findings.iter().find(|f| f["rule"] == rule).unwrap();
    let leak = &of("existence-leak")["evidence"];
    assert_eq!(
        (leak[0]["status"].as_u64(), leak[1]["status"].as_u64()),
        (Some(403), Some(404))
    );
    assert!(
        leak[0]["request"].as_str().unwrap().ends_with("/files/1"),
        "{leak}"
    );
    assert!(
        of("bola")["evidence"][0]["request"]
            .as_str()
            .unwrap()
            .ends_with("/orders/o-1")
    );
    assert!(
        !of("missing-challenge")["evidence"][0]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "www-authenticate")
    );
    assert_eq!(
        of("bfla")["evidence"][0]["credential"],
        "authorization: Bearer … (redacted)",
        "tokens never appear in a report"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(USER));

    // The unsafe operation is skipped without --allow-unsafe, and nothing unsafe was sent.
    assert_eq!(report["skipped"][0]["operation"], "deleteInvoice");
    assert_eq!(unsafe_seen.load(Ordering::SeqCst), 0);

    // The matrix: one row per operation sent, one column per identity (forged added).
    assert_eq!(
        report["identities"],
        serde_json::json!(["anon", "user", "admin", "forged"])
    );
    let row = |op: &str| {
        report["matrix"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == op)
            .unwrap()["cells"]
            .clone()
    };
    assert_eq!(row("listUsers"), serde_json::json!([401, 200, 200, 401]));
    assert_eq!(row("health"), serde_json::json!([200, 200, 200, null]));
    assert_eq!(
        row("moved"),
        serde_json::json!([302, 302, 302, null]),
        "not followed"
    );

    // JUnit: one case per operation, failures for the findings.
    let junit = std::fs::read_to_string(dir.join("junit.xml")).unwrap();
    assert!(junit.contains("<testcase classname=\"warden.audit\" name=\"getOrder\">"));
    assert_eq!(
        junit.matches("<failure ").count(),
        expected.len(),
        "{junit}"
    );

    // --fail-on critical still fails (the ignored authentication is critical); without
    // the forged identity the anonymous column alone finds it.
    let mut strict = broken_args(addr, &dir);
    strict.extend(args(&["--fail-on", "critical", "--no-forged"]));
    let out = audit(strict).await;
    assert_eq!(out.status.code(), Some(2));
    let report = json_of(&out);
    assert_eq!(
        report["identities"],
        serde_json::json!(["anon", "user", "admin"])
    );
    assert_eq!(report["findings"].as_array().unwrap().len(), expected.len());

    // With --allow-unsafe the DELETE goes out.
    let mut unsafe_args = broken_args(addr, &dir);
    unsafe_args.push("--allow-unsafe".to_owned());
    let out = audit(unsafe_args).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(unsafe_seen.load(Ordering::SeqCst) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_demo_is_clean() {
    let demo =
        common::spawn_warden(&["serve", "--listen", "127.0.0.1:0"].map(std::ffi::OsStr::new));
    let ttl = Duration::from_secs(600);
    let viewer = warden::demo::token("vic", &["viewer"], ttl).unwrap();
    let admin = warden::demo::token("ada", &["admin"], ttl).unwrap();
    let out = audit(vec![
        "--openapi".into(),
        testdata("demo.openapi.json").display().to_string(),
        "--expect".into(),
        testdata("demo.expect.toml").display().to_string(),
        "--base".into(),
        demo.base.clone(),
        "--as".into(),
        "anon".into(),
        "--as".into(),
        format!("viewer={viewer}"),
        "--as".into(),
        format!("admin={admin}"),
        "--as".into(),
        format!("bot=header:x-api-key:{}", warden::demo::API_KEY),
        "--rate".into(),
        "0".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    let report = json_of(&out);
    assert_eq!(report["findings"], serde_json::json!([]), "{report:#}");
    assert_eq!(out.status.code(), Some(0));
    let cells = |op: &str| {
        report["matrix"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["operation"] == op)
            .unwrap()["cells"]
            .clone()
    };
    // anon, viewer, admin, bot, forged
    assert_eq!(
        cells("public"),
        serde_json::json!([200, 200, 200, 200, null])
    );
    assert_eq!(cells("me"), serde_json::json!([401, 200, 200, 200, 401]));
    assert_eq!(cells("admin"), serde_json::json!([401, 403, 200, 403, 401]));
    assert_eq!(
        cells("getVaultEntry"),
        serde_json::json!([404, 404, 200, 404, 404])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_html_report_shows_the_matrix_in_headless_chromium() {
    let (addr, _) = broken_api().await;
    let dir = artifacts("html");
    let out = audit(broken_args(addr, &dir)).await;
    assert_eq!(out.status.code(), Some(2));
    let html_path = dir.join("report.html");
    let html = std::fs::read_to_string(&html_path).unwrap();
    for cell in [
        "data-operation=\"getOrder\" data-identity=\"user\">200</td>",
        "data-operation=\"listUsers\" data-identity=\"anon\">401</td>",
        "data-operation=\"reports\" data-identity=\"anon\">403</td>",
    ] {
        assert!(html.contains(cell), "{cell} not in the report");
    }
    assert!(!html.contains("http-equiv") && !html.contains("<script") && !html.contains("src="));
    assert!(html.contains("data-rule=\"bola\""));

    // CI installs chromium (.ci/run): a missing browser fails the test.
    let png = dir.join("report.png");
    let url = format!("file://{}", html_path.display());
    common::chromium::screenshot(&url, &png, &dir.join("profile"), (1280, 1600)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_an_unreachable_target_are_one_clear_error() {
    let dir = artifacts("errors");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        r#"{"openapi":"3.0.3","paths":{"/files/{id}":{"get":{"parameters":[{"name":"id","in":"body"}]}}}}"#,
    )
    .unwrap();
    let run = |extra: Vec<String>| async move {
        let out = audit(extra).await;
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(vec![
        "--openapi".into(),
        bad.display().to_string(),
        "--base".into(),
        "http://127.0.0.1:9".into(),
        "--as".into(),
        "anon".into(),
    ])
    .await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains(
            "at /paths/~1files~1{id}/get/parameters/0/in: expected query, header, path or cookie"
        ),
        "{stderr}"
    );

    // A port nobody listens on: one error, exit 3, nothing per operation.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, stderr) = run(vec![
        "--openapi".into(),
        testdata("broken.openapi.json").display().to_string(),
        "--base".into(),
        format!("http://127.0.0.1:{port}"),
        "--as".into(),
        "anon".into(),
        "--rate".into(),
        "0".into(),
    ])
    .await;
    assert_eq!(code, Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is unreachable"), "{stderr}");

    // The safety limits are checked before anything is sent.
    let (addr, _) = broken_api().await;
    let base = format!("http://{addr}");
    let common_args = |more: &[&str]| {
        let mut a = vec![
            "--openapi".to_owned(),
            testdata("broken.openapi.json").display().to_string(),
            "--base".to_owned(),
            base.clone(),
            "--as".to_owned(),
            "anon".to_owned(),
        ];
        a.extend(more.iter().map(|s| (*s).to_owned()));
        a
    };
    let (code, stderr) = run(common_args(&["--budget", "3"])).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("the budget is 3"), "{stderr}");
    let (code, stderr) = run(common_args(&["--host", "api.example.com"])).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("not in the --host allow list"), "{stderr}");
    let (code, stderr) = run(common_args(&["--as", "user"])).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("--as `user`"), "{stderr}");
    let wrong = dir.join("wrong.toml");
    std::fs::write(&wrong, "[operations]\nnoSuchOp = [\"anon\"]\n").unwrap();
    let (code, stderr) = run(common_args(&["--expect", wrong.to_str().unwrap()])).await;
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("operations.\"noSuchOp\": no such operation"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_har_file_is_replayed_per_identity_on_the_allowed_host_only() {
    let (addr, _) = broken_api().await;
    let dir = artifacts("har");
    let har = serde_json::json!({"log": {"version": "1.2", "entries": [
        {"request": {"method": "GET", "url": format!("http://{addr}/account"),
            "headers": [{"name": "Authorization", "value": "Bearer recorded-token"},
                        {"name": "Accept", "value": "application/json"}]}},
        {"request": {"method": "GET", "url": format!("http://{addr}/health"), "headers": []}},
        {"request": {"method": "GET", "url": "http://cdn.example.invalid/app.js", "headers": []}}
    ]}});
    let path = dir.join("session.har");
    std::fs::write(&path, har.to_string()).unwrap();
    let out = audit(vec![
        "--har".into(),
        path.display().to_string(),
        "--base".into(),
        format!("http://{addr}"),
        "--as".into(),
        "anon".into(),
        "--as".into(),
        format!("user={USER}"),
        "--rate".into(),
        "0".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(
        report["findings"].as_array().unwrap().len(),
        1,
        "{report:#}"
    );
    assert_eq!(report["findings"][0]["rule"], "missing-challenge");
    assert_eq!(report["findings"][0]["operation"], "GET /account");
    assert_eq!(report["skipped"][0]["operation"], "GET /app.js");
    assert_eq!(report["requests"], 4);

    // Without --base, --host says which host is audited; with neither, it is refused.
    let out = audit(vec![
        "--har".into(),
        path.display().to_string(),
        "--host".into(),
        "127.0.0.1".into(),
        "--as".into(),
        "anon".into(),
        "--rate".into(),
        "0".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(json_of(&out)["requests"], 2);
    let out = audit(vec![
        "--har".into(),
        path.display().to_string(),
        "--as".into(),
        "anon".into(),
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --base or --host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_out_of_time_is_listed_and_the_audit_goes_on() {
    let (addr, _) = broken_api().await;
    let dir = artifacts("timeout");
    let doc = dir.join("slow.openapi.json");
    std::fs::write(
        &doc,
        r#"{"openapi":"3.0.3","paths":{"/health":{"get":{"operationId":"health"}},"/slow":{"get":{"operationId":"slow"}}}}"#,
    )
    .unwrap();
    let out = audit(vec![
        "--openapi".into(),
        doc.display().to_string(),
        "--base".into(),
        format!("http://{addr}"),
        "--as".into(),
        "anon".into(),
        "--timeout".into(),
        "300ms".into(),
        "--rate".into(),
        "0".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json_of(&out);
    assert_eq!(report["skipped"][0]["operation"], "slow");
    assert!(
        report["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("got no answer within 300ms"),
        "{report:#}"
    );
    assert_eq!(report["matrix"].as_array().unwrap().len(), 1, "{report:#}");
}

/// The speed figure of BENCHMARKS.md: 200 operations, 3 identities (and the forged one),
/// `--rate 0`, against a local server. Prints the time; asserts no timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_operations_as_three_identities() {
    let (addr, _) = broken_api().await;
    let dir = artifacts("bulk");
    let paths: serde_json::Map<String, Value> = (0..200)
        .map(|n| {
            (
                format!("/bulk/{n}"),
                serde_json::json!({"get": {"operationId": format!("bulk{n}")}}),
            )
        })
        .collect();
    let doc = serde_json::json!({"openapi": "3.0.3", "security": [{"bearer": []}], "paths": paths});
    let path = dir.join("bulk.openapi.json");
    std::fs::write(&path, doc.to_string()).unwrap();
    let started = Instant::now();
    let out = audit(vec![
        "--openapi".into(),
        path.display().to_string(),
        "--base".into(),
        format!("http://{addr}"),
        "--as".into(),
        "anon".into(),
        "--as".into(),
        format!("user={USER}"),
        "--as".into(),
        format!("admin={ADMIN}"),
        "--rate".into(),
        "0".into(),
        "--format".into(),
        "json".into(),
    ])
    .await;
    let elapsed = started.elapsed();
    let report = json_of(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["matrix"].as_array().unwrap().len(), 200);
    assert_eq!(report["requests"], 800);
    println!(
        "audit of 200 operations x 3 identities (+ forged, 800 requests): {} ms end to end, {} ms of requests",
        elapsed.as_millis(),
        report["elapsed_ms"]
    );
}
