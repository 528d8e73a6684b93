//! `warden explain` and `warden test`, run as the real binary against the sample Cedar
//! configuration in `testdata/cedar`.
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::{Command, Output};
use warden_testkit::{Key, Token};

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");
/// A Monday, 11:00 in Paris: inside business hours.
const MONDAY_MORNING: &str = "2026-11-23T10:00:00Z";

fn testdata(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../testdata")
        .join(path)
}

fn sample_config() -> String {
    testdata("cedar/warden.toml").display().to_string()
}

/// Run `warden ARGS…` and return its output.
fn warden(args: &[&str]) -> Output {
    Command::new(WARDEN).args(args).output().unwrap()
}

/// Run `warden explain --config <sample> ARGS…`.
fn explain(args: &[&str]) -> Output {
    let config = sample_config();
    let mut all = vec!["explain", "--config", config.as_str()];
    all.extend_from_slice(args);
    warden(&all)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Assert the exit code, showing both streams when it differs.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        stderr(out)
    );
}

/// A file under the system temporary directory, unique to this process; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        let path = std::env::temp_dir().join(format!("warden-cli-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn explain_an_allowed_request_shows_the_stages_and_the_forwarded_request() {
    let out = explain(&["/admin", "--as", "ada", "--role", "admin"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    for expected in [
        "✓ normalize",
        "✓ route        route `admin` (GET /admin)",
        "✓ authenticate assumed identity `ada`",
        "✓ authorize    permitted by admins-administer",
        "decided by  forward",
        "outcome     allow",
        "policies    admins-administer",
        "200 → forwarded to upstream app as /admin",
        "x-warden-subject: ada",
        "x-warden-auth-source: idp",
        "x-warden-roles: admin",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn explain_a_denied_request_names_the_stage_the_response_and_the_hint() {
    let out = explain(&["/admin", "--as", "vic", "--role", "viewer"]);
    assert_exit(&out, 2);
    let text = stdout(&out);
    for expected in [
        "✗ authorize",
        "decided by  authorize",
        "outcome     deny",
        "reason      forbidden",
        "HTTP/1.1 403 Forbidden",
        "content-type: application/problem+json",
        "\"code\":\"forbidden\"",
        "what would change the answer",
        "would be allowed with role admin; the caller has viewer",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(!text.contains("forwarded to upstream"), "{text}");
}

#[test]
fn explain_without_credentials_shows_the_challenge() {
    let out = explain(&["/me"]);
    assert_exit(&out, 2);
    let text = stdout(&out);
    assert!(text.contains("✗ authenticate"), "{text}");
    assert!(text.contains("HTTP/1.1 401 Unauthorized"), "{text}");
    assert!(text.contains("www-authenticate: Bearer realm="), "{text}");
    assert!(
        text.contains("send credentials of a scheme the route accepts"),
        "{text}"
    );
}

#[test]
fn explain_as_json_carries_the_same_facts() {
    let out = explain(&[
        "/admin",
        "--as",
        "vic",
        "--role",
        "viewer",
        "--at",
        MONDAY_MORNING,
        "--ip",
        "10.1.2.3",
        "--format",
        "json",
    ]);
    assert_exit(&out, 2);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["decided_by"], "authorize");
    assert_eq!(doc["outcome"], "deny");
    assert_eq!(doc["status"], 403);
    assert_eq!(doc["reason"], "forbidden");
    assert_eq!(doc["route"], "admin");
    assert_eq!(doc["request"]["at"], MONDAY_MORNING);
    assert_eq!(doc["request"]["ip"], "10.1.2.3");
    assert_eq!(doc["identity"]["sub"], "vic");
    assert_eq!(doc["identity"]["source"], "idp");
    assert!(doc["detail"].is_string());
    assert_eq!(doc["policies"], json!([]));

    let stages = doc["stages"].as_array().unwrap();
    let last = stages.last().unwrap();
    assert_eq!(last["stage"], "authorize");
    assert_eq!(last["passed"], false);
    assert!(
        stages[..stages.len() - 1]
            .iter()
            .all(|s| s["passed"] == true)
    );

    let response = &doc["response"];
    assert_eq!(response["status"], 403);
    let content_type = response["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "content-type")
        .unwrap();
    assert_eq!(content_type["value"], "application/problem+json");
    let body: Value = serde_json::from_str(response["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["code"], "forbidden");

    let hints = doc["hints"].as_array().unwrap();
    assert!(
        hints
            .iter()
            .any(|h| h == "would be allowed with role admin; the caller has viewer"),
        "{hints:?}"
    );
}

#[test]
fn explain_as_json_types_attributes_and_shows_the_forwarded_request() {
    let out = explain(&[
        "/docs/1",
        "--as",
        "alice",
        "--attr",
        "department=finance",
        "--attr",
        "clearance=2",
        "--attr",
        "contractor=false",
        "--format",
        "json",
    ]);
    assert_exit(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["outcome"], "allow");
    assert_eq!(doc["status"], 200);
    assert_eq!(doc["reason"], Value::Null);
    assert_eq!(doc["policies"], json!(["read-own-department"]));
    assert_eq!(
        doc["identity"]["attributes"],
        json!({ "department": "finance", "clearance": 2, "contractor": false })
    );
    assert_eq!(doc["response"]["status"], 200);
    assert_eq!(doc["response"]["upstream"], "app");
    assert_eq!(doc["response"]["path"], "/docs/1");
}

#[test]
fn explain_follows_the_time_and_the_address() {
    let reports = |at: &str| explain(&["/reports", "--as", "ana", "--role", "analyst", "--at", at]);
    assert_exit(&reports(MONDAY_MORNING), 0);
    assert_exit(&reports("2026-11-23T18:30:00Z"), 2);
    assert_exit(&explain(&["/office", "--as", "vic", "--ip", "10.9.8.7"]), 0);
    assert_exit(
        &explain(&["/office", "--as", "vic", "--ip", "192.0.2.1"]),
        2,
    );
}

#[test]
fn explain_verifies_a_real_token() {
    // A token for the sample's `idp` source.
    let token = Token::new()
        .sub("alice")
        .exp_in(600)
        .roles(["viewer"])
        .claim("department", "finance")
        .claim("clearance", 2)
        .kid("rsa-1")
        .sign_rs256();
    let bearer = format!("Authorization: Bearer {token}");

    let out = explain(&["/docs/1", "-H", &bearer]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains("✓ authenticate `alice` verified by source `idp`"),
        "{text}"
    );
    assert!(text.contains("permitted by read-own-department"), "{text}");

    let out = explain(&["/admin", "-H", &bearer]);
    assert_exit(&out, 2);
    assert!(
        stdout(&out).contains("would be allowed with role admin; the caller has viewer"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn explain_refuses_a_token_from_an_unknown_key() {
    let token = Token::new()
        .sub("mallory")
        .exp_in(600)
        .kid("rsa-2")
        .sign(Key::Rsa2);
    let bearer = format!("Authorization: Bearer {token}");
    let out = explain(&["/me", "-H", &bearer, "--format", "json"]);
    assert_exit(&out, 2);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["decided_by"], "authenticate");
    assert_eq!(doc["status"], 401);
    assert_eq!(doc["reason"], "invalid_token");
    assert_eq!(doc["detail"], "unknown_key");
}

#[test]
fn explain_errors_exit_1() {
    let bad = TempFile::new(
        "bad.toml",
        "[[routes]]\npath = \"/x\"\nupstream = \"nowhere\"\n",
    );
    let out = warden(&["explain", "--config", bad.path(), "/x"]);
    assert_exit(&out, 1);
    assert!(stderr(&out).contains("bad.toml"), "{}", stderr(&out));

    assert_exit(&explain(&["/me", "--at", "yesterday"]), 1);
    assert_exit(&explain(&["/me", "-H", "no colon here"]), 1);
    assert_exit(&explain(&["/me", "--role", "admin"]), 1);
}

#[test]
fn the_sample_cases_all_pass() {
    let cases = testdata("cases/sample.yaml");
    let out = warden(&[
        "test",
        "--config",
        &sample_config(),
        cases.to_str().unwrap(),
    ]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    let last = text.lines().last().unwrap();
    let passed: usize = last
        .strip_suffix(" passed, 0 failed")
        .unwrap_or_else(|| panic!("unexpected summary {last:?}"))
        .parse()
        .unwrap();
    assert!(passed >= 15, "{text}");
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok   ")).count(),
        passed
    );
}

#[test]
fn a_wrong_expectation_fails_and_names_the_case() {
    let cases = TempFile::new(
        "wrong.yaml",
        r#"cases:
  - name: viewer is wrongly expected to administer
    request: { path: /admin, at: "2026-11-23T10:00:00Z" }
    identity: { sub: vic, roles: [viewer] }
    expect: { status: 200 }
  - name: no credentials on /me
    request: { path: /me }
    expect: { status: 401, reason: unauthenticated }
"#,
    );
    let out = warden(&["test", "--config", &sample_config(), cases.path()]);
    assert_exit(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains(
            "FAIL viewer is wrongly expected to administer: expected 200, got 403 forbidden (stage authorize)"
        ),
        "{text}"
    );
    assert!(text.contains("✗ authorize"), "{text}");
    assert!(text.contains("ok   no credentials on /me"), "{text}");
    assert_eq!(text.lines().last(), Some("1 passed, 1 failed"));
}

#[test]
fn a_malformed_cases_file_exits_1_naming_the_file_and_line() {
    let cases = TempFile::new(
        "malformed.yaml",
        "cases:\n  - name: broken\n    request: { path: /me\n    expect: { status: 401 }\n",
    );
    let out = warden(&["test", "--config", &sample_config(), cases.path()]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains(cases.path()), "{err}");
    assert!(err.contains("line"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn unknown_fields_in_cases_are_errors() {
    let cases = TempFile::new(
        "unknown.yaml",
        "cases:\n  - name: typo\n    request: { path: /me }\n    expect: { status: 401, stage: authenticate }\n",
    );
    let out = warden(&["test", "--config", &sample_config(), cases.path()]);
    assert_exit(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("unknown field `stage`"), "{err}");
    assert!(err.contains("unknown.yaml"), "{err}");
}

#[test]
fn a_missing_cases_file_exits_1() {
    let out = warden(&[
        "test",
        "--config",
        &sample_config(),
        "/nonexistent/cases.yaml",
    ]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("cannot read /nonexistent/cases.yaml"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn explain_takes_a_proxys_forward_auth_question() {
    // The method and the target come from the forwarded headers: a DELETE of /admin by a
    // viewer, as NGINX or Traefik would ask it.
    let out = explain(&[
        "--forwarded",
        "-H",
        "X-Forwarded-Method: DELETE",
        "-H",
        "X-Forwarded-Uri: /admin",
    ]);
    assert_exit(&out, 2);
    let text = stdout(&out);
    assert!(
        text.contains("HTTP/1.1 405 Method Not Allowed"),
        "the forwarded method decides: {text}"
    );
    // A question without the forwarded URI is the listener's 400, explained as such.
    let out = explain(&["--forwarded", "-H", "X-Forwarded-Method: GET"]);
    assert_exit(&out, 1);
    assert!(
        stderr(&out).contains("no X-Forwarded-Uri or X-Original-URI"),
        "{}",
        stderr(&out)
    );
}
