//! The `warden` binary as a newcomer runs it: `warden serve` with no configuration serves
//! the demo, `warden token` mints tokens it accepts, `warden check` validates files.
use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::client;
use serde_json::Value;

const WARDEN: &str = env!("CARGO_BIN_EXE_warden");

fn start_demo() -> common::Warden {
    common::spawn_warden(&["serve", "--listen", "127.0.0.1:0"].map(std::ffi::OsStr::new))
}

/// Run `warden ARGS…` and return its output, asserting success.
fn run_ok(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = Command::new(WARDEN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn token(sub: &str, role: &str) -> String {
    let args = ["token", "--sub", sub, "--role", role, "--ttl", "10m"].map(std::ffi::OsStr::new);
    String::from_utf8(run_ok(&args).stdout)
        .unwrap()
        .trim()
        .to_owned()
}

#[tokio::test]
async fn the_demo_answers_every_route_as_documented() {
    let demo = start_demo();
    let get = |path: &str, auth: Option<String>| {
        let mut req = client().get(format!("{}{path}", demo.base));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    let admin = format!("Bearer {}", token("ada", "admin"));
    let viewer = format!("Bearer {}", token("vic", "viewer"));

    assert_eq!(get("/public", None).await.unwrap().status(), 200);

    let resp = get("/me", None).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer realm=\"warden-demo\""
    );
    let resp = get("/me", Some(viewer.clone())).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["subject"].as_str(), body["roles"].as_str()),
        (Some("vic"), Some("viewer"))
    );

    assert_eq!(
        get("/admin", Some(viewer.clone())).await.unwrap().status(),
        403
    );
    assert_eq!(
        get("/admin", Some(admin.clone())).await.unwrap().status(),
        200
    );
    assert_eq!(
        get("/docs/7", Some(viewer.clone())).await.unwrap().status(),
        200
    );
    let resp = client()
        .get(format!("{}/docs/7", demo.base))
        .header("x-api-key", warden::demo::API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    assert_eq!(get("/vault/1", Some(viewer)).await.unwrap().status(), 404);
    assert_eq!(get("/vault/1", None).await.unwrap().status(), 404);
    assert_eq!(get("/vault/1", Some(admin)).await.unwrap().status(), 200);
    assert_eq!(
        client()
            .post(format!("{}/public", demo.base))
            .send()
            .await
            .unwrap()
            .status(),
        405
    );
}

#[test]
fn check_accepts_a_valid_file_and_names_file_line_and_field_of_errors() {
    let dir = std::env::temp_dir().join(format!("warden-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\npath = \"/a\"\nupstream = \"app\"\n").unwrap();
    run_ok(&["check".as_ref(), "--config".as_ref(), good.as_os_str()]);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[upstreams.app]\nurl = \"http://127.0.0.1:3000\"\n[[routes]]\npath = \"/a\"\nupstream = \"ap\"\n").unwrap();
    let started = Instant::now();
    let out = Command::new(WARDEN)
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.toml:5:12: routes[0].upstream: no upstream named `ap`"),
        "{stderr}"
    );

    let out = Command::new(WARDEN)
        .args(["serve", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "serve must refuse an invalid configuration"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
