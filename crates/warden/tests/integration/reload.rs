//! Reloading: the admin endpoint and SIGHUP swap the whole configuration; an invalid file is
//! refused with its errors and the running configuration keeps serving.
use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Upstream, client, fixture};
use serde_json::Value;
use warden::gateway::{Gateway, Listeners};
use warden_core::Config;

/// The `reload` fixture with one route to the upstream for each of `paths`.
fn config_text(upstream: &Upstream, paths: &[&str]) -> String {
    let mut config = common::with_admin_token(fixture("reload")).upstream(upstream.addr);
    for path in paths {
        config = config.append(&format!(
            "[[routes]]\npath = \"{path}\"\nupstream = \"app\"\n"
        ));
    }
    config.filled().to_owned()
}

fn temp_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-reload-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("warden.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A gateway serving the configuration file at `path` (so that it can reload it), with
/// its proxy and admin listeners on free loopback ports.
async fn start_from_file(path: &std::path::Path) -> Gateway {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    Gateway::start(
        Config::load(path).unwrap(),
        Listeners {
            proxy: Some(loopback),
            admin: Some(loopback),
            ..Listeners::default()
        },
    )
    .await
    .unwrap()
}

async fn status(base: &str, path: &str) -> u16 {
    client()
        .get(format!("{base}{path}"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_admin_endpoint_swaps_a_valid_configuration_and_refuses_an_invalid_one() {
    let upstream = Upstream::start().await;
    let path = temp_config("admin", &config_text(&upstream, &["/a"]));
    let gw = start_from_file(&path).await;
    let base = format!("http://{}", gw.proxy_addr);
    let reload = format!("http://{}/reload", gw.admin_addr.unwrap());
    assert_eq!(
        (status(&base, "/a").await, status(&base, "/b").await),
        (200, 404)
    );

    std::fs::write(&path, config_text(&upstream, &["/a", "/b"])).unwrap();
    let resp = client()
        .post(&reload)
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        (body["status"].as_str(), body["routes"].as_u64()),
        (Some("reloaded"), Some(2))
    );
    assert_eq!(status(&base, "/b").await, 200);

    // An invalid file: refused with file, line and field; the running configuration stays.
    let mut broken = config_text(&upstream, &["/a", "/b", "/c"]);
    broken = broken.replacen(
        "upstream = \"app\"\n[[routes]]\npath = \"/c\"\nupstream = \"app\"",
        "upstream = \"app\"\n[[routes]]\npath = \"/c\"\nupstream = \"nope\"",
        1,
    );
    std::fs::write(&path, &broken).unwrap();
    let resp = client()
        .post(&reload)
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    let error = &body["errors"][0];
    assert_eq!(error["field"], "routes[2].upstream");
    assert_eq!(
        error["line"],
        broken.lines().position(|l| l.contains("nope")).unwrap() + 1
    );
    assert_eq!(error["file"], path.display().to_string());
    assert_eq!(
        (
            status(&base, "/a").await,
            status(&base, "/b").await,
            status(&base, "/c").await
        ),
        (200, 200, 404)
    );

    let wrong_method = client()
        .get(&reload)
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    let metrics = client()
        .get(format!("http://{}/metrics", gw.admin_addr.unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("warden_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("warden_config_reloads_total{result=\"refused\"} 1"),
        "{metrics}"
    );
    gw.shutdown().await;
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn sighup_reloads_the_running_binary() {
    let upstream = Upstream::start().await;
    let path = temp_config("sighup", &config_text(&upstream, &["/a"]));
    let mut warden = common::spawn_warden(&[
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--config".as_ref(),
        path.as_os_str(),
    ]);
    let base = warden.base.clone();
    assert_eq!(status(&base, "/b").await, 404);

    std::fs::write(&path, config_text(&upstream, &["/a", "/b"])).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &warden.child.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&base, "/b").await != 200 {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the configuration"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // An invalid file on SIGHUP: the old configuration keeps serving.
    std::fs::write(&path, "this is not toml").unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &warden.child.id().to_string()])
        .status();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&base, "/b").await, 200);
    assert!(
        warden.child.try_wait().unwrap().is_none(),
        "warden exited on an invalid reload"
    );

    drop(warden);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[tokio::test]
async fn admin_endpoints_refuse_without_a_valid_token_and_change_nothing() {
    let upstream = Upstream::start().await;
    let path = temp_config("admin-token", &config_text(&upstream, &["/a"]));
    let gw = start_from_file(&path).await;
    let base = format!("http://{}", gw.proxy_addr);
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    std::fs::write(&path, config_text(&upstream, &["/a", "/b"])).unwrap();

    for (token, challenge) in [
        (None, r#"Bearer realm="warden-admin""#),
        (
            Some("not-the-admin-token"),
            r#"Bearer realm="warden-admin", error="invalid_token""#,
        ),
    ] {
        for (method, endpoint) in [
            (http::Method::POST, "/reload"),
            (http::Method::POST, "/revoke"),
            (http::Method::GET, "/decisions/recent"),
        ] {
            let mut request = client()
                .request(method.clone(), format!("{admin}{endpoint}"))
                .body(r#"{"subject":"anyone","ttl":600}"#);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let resp = request.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{method} {endpoint} with {token:?}");
            assert_eq!(resp.headers()["www-authenticate"], challenge);
        }
    }
    // Nothing changed: the new route was not swapped in.
    assert_eq!(status(&base, "/b").await, 404);
    // Health and metrics stay open.
    for open in ["/healthz", "/metrics"] {
        let resp = client().get(format!("{admin}{open}")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{open}");
    }
    // With the admin token, the same reload goes through.
    let resp = client()
        .post(format!("{admin}/reload"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(status(&base, "/b").await, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn without_admin_tokens_the_protected_endpoints_are_off() {
    let upstream = Upstream::start().await;
    let text = fixture("reload")
        .upstream(upstream.addr)
        .filled()
        .to_owned();
    let path = temp_config("admin-off", &text);
    let gw = start_from_file(&path).await;
    let admin = format!("http://{}", gw.admin_addr.unwrap());
    let resp = client()
        .post(format!("{admin}/reload"))
        .bearer_auth(common::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(
        client()
            .get(format!("{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.shutdown().await;
}
