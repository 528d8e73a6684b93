//! `warden probe` against servers the suite starts: the real gateway, and a server that
//! makes every classic mistake.
use crate::common;

use std::convert::Infallible;
use std::process::Command;

use bytes::Bytes;
use common::{Upstream, fixture, gateway};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::Value;
use warden_testkit::Token;

/// The `probe` fixture: `/me`, `/admin` (role admin), `/write` (scope docs:write), the
/// concealed `/vault`, all behind one JWT source, and `/limited` (one request an hour).
const CONFIG: &str = "probe";

fn probe(args: &[&str]) -> (i32, Vec<Value>) {
    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .arg("probe")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let reports: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), reports)
}

fn texts(report: &Value) -> String {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            format!(
                "{}: {}\n",
                f["level"].as_str().unwrap(),
                f["text"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_gateway_answers_are_explained() {
    let upstream = Upstream::start().await;
    let gw = gateway(fixture(CONFIG), &upstream).await;
    let base = format!("http://{}", gw.proxy_addr);
    let as_role = |sub: &str, role: &str| {
        Token::new()
            .sub(sub)
            .exp_in(600)
            .roles([role])
            .kid("rsa-1")
            .sign_rs256()
    };
    let viewer = as_role("vic", "viewer");
    let admin = as_role("ada", "admin");
    let base2 = base.clone();
    let viewer2 = viewer.clone();
    let admin2 = admin.clone();
    let run = move |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            probe(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
    };

    let (code, r) = run(vec![format!("{base2}/me")]).await.unwrap();
    assert_eq!(code, 2);
    assert_eq!(r[0]["status"], 401);
    let t = texts(&r[0]);
    assert!(t.contains("accepted schemes: Bearer"), "{t}");
    assert!(
        r[0]["next"][0]
            .as_str()
            .unwrap()
            .contains("send credentials")
    );
    assert_eq!(r[0]["problem"]["code"], "unauthenticated");

    let (_, r) = run(vec![
        format!("{base2}/me"),
        "-H".into(),
        "Authorization: Bearer junk".into(),
    ])
    .await
    .unwrap();
    assert!(
        texts(&r[0]).contains("invalid_token: The access token is malformed"),
        "{}",
        texts(&r[0])
    );

    // One request per identity.
    let (code, r) = run(vec![
        format!("{base2}/admin"),
        "--as".into(),
        format!("vic={viewer2}"),
        "--as".into(),
        format!("ada={admin2}"),
    ])
    .await
    .unwrap();
    assert_eq!(code, 2);
    assert_eq!(
        (r[0]["label"].as_str(), r[0]["status"].as_u64()),
        (Some("vic"), Some(403))
    );
    assert!(texts(&r[0]).contains("authenticated, and not allowed"));
    assert_eq!(
        (r[1]["label"].as_str(), r[1]["status"].as_u64()),
        (Some("ada"), Some(200))
    );

    let (_, r) = run(vec![
        format!("{base2}/write"),
        "--as".into(),
        format!("vic={viewer2}"),
    ])
    .await
    .unwrap();
    assert!(
        texts(&r[0]).contains("insufficient_scope: the token needs scope docs:write"),
        "{}",
        texts(&r[0])
    );

    let (_, r) = run(vec![format!("{base2}/vault")]).await.unwrap();
    assert_eq!(r[0]["status"], 404);
    assert!(
        texts(&r[0]).contains("the same answer as a path that does not exist"),
        "{}",
        texts(&r[0])
    );

    let (_, r) = run(vec![format!("{base2}/limited")]).await.unwrap();
    assert_eq!(r[0]["status"], 200);
    assert!(texts(&r[0]).contains("in front: warden") || !texts(&r[0]).contains("Problem"));
    let (_, r) = run(vec![format!("{base2}/limited")]).await.unwrap();
    assert_eq!(r[0]["status"], 429);
    let t = texts(&r[0]);
    assert!(
        t.contains("Retry-After") && t.contains("ratelimit: \"l\";r=0"),
        "{t}"
    );

    let (code, r) = run(vec![format!("{base2}/me"), "-X".into(), "DELETE".into()])
        .await
        .unwrap();
    assert_eq!(code, 2);
    assert!(
        texts(&r[0]).contains("Allow: GET, HEAD"),
        "{}",
        texts(&r[0])
    );
    gw.shutdown().await;
}

/// A server that answers every path with a classic mistake.
async fn careless_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let (status, body, extra): (u16, &str, Vec<(&str, &str)>) = match req
                        .uri()
                        .path()
                    {
                        "/no-challenge" => (401, "{\"message\":\"login\"}", vec![]),
                        "/forbidden-anonymous" => (403, "denied", vec![]),
                        "/ok-with-error" => (200, "{\"error\":\"user not found\"}", vec![]),
                        "/slow-down" => (429, "", vec![]),
                        "/forbidden-busy" => (403, "{\"message\":\"Rate limit exceeded\"}", vec![]),
                        "/no-allow" => (405, "", vec![]),
                        "/cors" => (
                            200,
                            "{}",
                            vec![("access-control-allow-origin", "https://app.example")],
                        ),
                        _ => (404, "nothing", vec![]),
                    };
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                    resp.headers_mut()
                        .insert("server", "cloudflare".parse().unwrap());
                    resp.headers_mut()
                        .insert("cf-ray", "8a1b2c3d4e5f-CDG".parse().unwrap());
                    for (n, v) in extra {
                        resp.headers_mut().insert(n, v.parse().unwrap());
                    }
                    Ok::<_, Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn classic_mistakes_are_called_out() {
    let addr = careless_server().await;
    let check = move |path: &'static str, expected: &'static str| async move {
        let (_, r) = tokio::task::spawn_blocking(move || probe(&[&format!("http://{addr}{path}")]))
            .await
            .unwrap();
        let t = texts(&r[0]);
        assert!(
            t.contains(expected),
            "{path}: expected `{expected}` in:\n{t}"
        );
        assert!(t.contains("in front: Cloudflare"), "{t}");
        t
    };
    check("/no-challenge", "401 without WWW-Authenticate").await;
    check(
        "/forbidden-anonymous",
        "403 to a request that sent no credentials",
    )
    .await;
    let t = check(
        "/ok-with-error",
        "a success status with an error in the body",
    )
    .await;
    assert!(t.contains("problem: "), "{t}");
    check("/slow-down", "429 without Retry-After").await;
    check("/forbidden-busy", "403 that is a rate limit").await;
    check("/no-allow", "405 without Allow").await;
    check("/forbidden-anonymous", "not application/problem+json").await;

    let (_, r) = tokio::task::spawn_blocking(move || {
        probe(&[
            &format!("http://{addr}/cors"),
            "--origin",
            "https://app.example",
        ])
    })
    .await
    .unwrap();
    assert!(
        texts(&r[0]).contains("CORS: https://app.example may read the answer"),
        "{}",
        texts(&r[0])
    );
    let (_, r) = tokio::task::spawn_blocking(move || {
        probe(&[
            &format!("http://{addr}/cors"),
            "--origin",
            "https://evil.example",
        ])
    })
    .await
    .unwrap();
    assert!(
        texts(&r[0])
            .contains("CORS: the answer allows https://app.example, not https://evil.example"),
        "{}",
        texts(&r[0])
    );

    let out = Command::new(env!("CARGO_BIN_EXE_warden"))
        .args(["probe", "not a url"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}
