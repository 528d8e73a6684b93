//! Forward-auth: warden as the external authorizer of another proxy.
//!
//! The real NGINX (`auth_request` with the replay recipe) and the real Caddy
//! (`forward_auth`) run as children of the test, on free loopback ports, with the very
//! configurations of the README (checked below); every answer a client gets through them is
//! compared with the one warden's own proxy listener gives. Traefik's `forwardAuth` and
//! Envoy's `ext_authz` HTTP mode are tested by their request shapes, sent straight to the
//! forward-auth listener, with the malformed questions and the untrusted peers.
use crate::common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::redis_server::free_port;
use common::{Upstream, admin_get, client, fixture, forward_auth_gateway};
use reqwest::header::HeaderMap;
use serde_json::Value;
use warden::gateway::Gateway;
use warden_testkit::Token;

/// The `forward-auth` fixture: `/public` (GET, POST), `/me` behind the JWT source, `/admin`
/// for role admin, the concealed `/vault/{id}` (admin), `/search` limited to 2 per client.
const BASE: &str = "forward-auth";

/// The README's NGINX recipe; the test fills in its addresses.
const NGINX_SITE: &str = r#"upstream warden { server 127.0.0.1:9091; }   # warden's [forward_auth] listen
upstream app { server 127.0.0.1:3000; }

server {
    listen 80;

    location / {
        auth_request /_warden_auth;
        # What warden answered: the refusal to replay, the identity, the rate-limit fields.
        auth_request_set $warden_refusal $upstream_http_x_warden_refusal;
        auth_request_set $warden_subject $upstream_http_x_warden_subject;
        auth_request_set $warden_roles $upstream_http_x_warden_roles;
        auth_request_set $warden_scopes $upstream_http_x_warden_scopes;
        auth_request_set $warden_source $upstream_http_x_warden_auth_source;
        auth_request_set $warden_decision $upstream_http_x_warden_decision_id;
        auth_request_set $warden_ratelimit $upstream_http_ratelimit;
        auth_request_set $warden_ratelimit_policy $upstream_http_ratelimit_policy;
        auth_request_set $warden_cookie $upstream_http_cookie;
        # warden's identity replaces whatever the client sent (an empty value sends none),
        # and the client's cookies go without warden's session cookie.
        proxy_set_header X-Warden-Subject $warden_subject;
        proxy_set_header X-Warden-Roles $warden_roles;
        proxy_set_header X-Warden-Scopes $warden_scopes;
        proxy_set_header X-Warden-Auth-Source $warden_source;
        proxy_set_header X-Warden-Decision-Id $warden_decision;
        proxy_set_header Cookie $warden_cookie;
        add_header RateLimit $warden_ratelimit;
        add_header RateLimit-Policy $warden_ratelimit_policy;
        # auth_request sends its own page for a 401 or 403 and a 500 for anything else:
        # replay warden's refusal instead, with its own status (the `=`).
        error_page 401 403 500 = @warden_refusal;
        proxy_pass http://app;
    }

    location = /_warden_auth {
        internal;
        proxy_pass http://warden;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Warden-Replay on;
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        # Never the client's own: warden refuses a question whose two URIs disagree.
        proxy_set_header X-Forwarded-Uri "";
        proxy_set_header X-Original-Method "";
        # The encoded refusal rides in a response header.
        proxy_buffer_size 8k;
    }

    location @warden_refusal {
        # A named location's proxy_pass takes no URI: rewrite, then pass.
        rewrite ^ /_warden/replay? break;
        proxy_pass http://warden;
        proxy_method GET;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Warden-Refusal $warden_refusal;
    }
}
"#;

/// The README's Caddy recipe; the test fills in its addresses.
const CADDY_SITE: &str = "\
:80 {
	forward_auth 127.0.0.1:9091 {
		uri /auth
		# Caddy sets X-Forwarded-Method and X-Forwarded-Uri; a client's own
		# X-Original-URI would disagree with them, and warden refuses that (400).
		header_up -X-Original-URI
		header_up -X-Original-Method
		copy_headers X-Warden-Subject X-Warden-Roles X-Warden-Scopes X-Warden-Auth-Source X-Warden-Decision-Id Cookie
	}
	reverse_proxy 127.0.0.1:3000
}
";

/// The example addresses of the recipes: warden's forward-auth listener and the app.
const RECIPE_WARDEN: &str = "127.0.0.1:9091";
const RECIPE_APP: &str = "127.0.0.1:3000";

/// The identity headers warden sets (the fixture keeps the default names).
const IDENTITY: [&str; 5] = [
    "x-warden-subject",
    "x-warden-roles",
    "x-warden-scopes",
    "x-warden-auth-source",
    "x-warden-decision-id",
];

/// The headers warden puts on a refusal, compared between a proxy and warden itself.
const WARDEN_HEADERS: [&str; 9] = [
    "content-type",
    "cache-control",
    "www-authenticate",
    "vary",
    "x-content-type-options",
    "allow",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Nginx,
    Caddy,
}

/// A proxy binary running as the test's child; killed (by its own handle), reaped and its
/// directory removed on drop.
struct Proxy {
    kind: Kind,
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Proxy {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the proxy logged, for a failure message.
    fn log(&self) -> String {
        let name = match self.kind {
            Kind::Nginx => "error.log",
            Kind::Caddy => "caddy.log",
        };
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }
}

/// A binary as `which` would find it (`/usr/sbin` too: nginx lives there); a missing one
/// fails the test, never skips it.
fn binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: the forward-auth tests run the real NGINX and Caddy; \
                 install them with `apt-get install nginx-light caddy` (.ci/run does this)"
            )
        })
}

/// A recipe with the test's addresses for warden's forward-auth listener and the app.
fn filled(recipe: &str, warden: SocketAddr, app: SocketAddr) -> String {
    recipe
        .replace(RECIPE_WARDEN, &warden.to_string())
        .replace(RECIPE_APP, &app.to_string())
}

fn temp_dir(kind: Kind) -> PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "warden-forward-auth-{kind:?}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    dir
}

/// Start the proxy in front of `warden` (its forward-auth listener) and `app`, and wait
/// (bounded) until it accepts connections. A start that loses its port is retried.
fn start_proxy(kind: Kind, warden: SocketAddr, app: SocketAddr) -> Proxy {
    start_proxy_with(kind, warden, app, None, None)
}

/// [`start_proxy`] with another NGINX site (`listen 80` becomes the free port) and files
/// copied into the proxy's directory first.
fn start_proxy_with(
    kind: Kind,
    warden: SocketAddr,
    app: SocketAddr,
    site: Option<String>,
    files: Option<&Path>,
) -> Proxy {
    let program = binary(match kind {
        Kind::Nginx => "nginx",
        Kind::Caddy => "caddy",
    });
    let mut last_log = String::new();
    for _ in 0..3 {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let dir = temp_dir(kind);
        if let Some(from) = files {
            for entry in std::fs::read_dir(from).unwrap() {
                let entry = entry.unwrap();
                if entry.file_type().unwrap().is_file() {
                    std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
                }
            }
        }
        let mut command = Command::new(&program);
        match kind {
            Kind::Nginx => {
                let site = site
                    .clone()
                    .unwrap_or_else(|| filled(NGINX_SITE, warden, app))
                    .replace("listen 80", &format!("listen {addr}"));
                let conf = format!(
                    "worker_processes 1;\nmaster_process off;\npid nginx.pid;\n\
                     error_log error.log info;\nevents {{ worker_connections 64; }}\n\
                     http {{\n    access_log off;\n    client_body_temp_path tmp/body;\n    \
                     proxy_temp_path tmp/proxy;\n    fastcgi_temp_path tmp/fastcgi;\n    \
                     uwsgi_temp_path tmp/uwsgi;\n    scgi_temp_path tmp/scgi;\n\n{site}}}\n"
                );
                std::fs::write(dir.join("nginx.conf"), conf).unwrap();
                let mut prefix = dir.clone().into_os_string();
                prefix.push("/");
                command.arg("-p").arg(prefix).args([
                    "-c",
                    "nginx.conf",
                    "-e",
                    "error.log",
                    "-g",
                    "daemon off;",
                ]);
            }
            Kind::Caddy => {
                let site = filled(CADDY_SITE, warden, app)
                    .replace(":80 {", &format!("http://{addr} {{\n\tbind 127.0.0.1"));
                let conf = format!("{{\n\tadmin off\n\tauto_https off\n}}\n\n{site}");
                std::fs::write(dir.join("Caddyfile"), conf).unwrap();
                let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
                command
                    .args(["run", "--adapter", "caddyfile", "--config"])
                    .arg(dir.join("Caddyfile"))
                    // Caddy keeps its state under the home and XDG directories: the test's own.
                    .env("HOME", &dir)
                    .env("XDG_CONFIG_HOME", &dir)
                    .env("XDG_DATA_HOME", &dir)
                    .stderr(log);
            }
        }
        command
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if kind == Kind::Nginx {
            command.stderr(Stdio::null());
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut proxy = Proxy {
            kind,
            child,
            addr,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return proxy;
            }
            if let Ok(Some(_)) = proxy.child.try_wait() {
                last_log = proxy.log();
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{kind:?} did not listen on {addr} within 15 s:\n{}",
                proxy.log()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    panic!("{kind:?} exited at start three times:\n{last_log}");
}

/// warden (its proxy, admin and forward-auth listeners), the recording upstream and the
/// proxy in front of both.
struct Setup {
    upstream: Upstream,
    gw: Gateway,
    proxy: Proxy,
}

async fn setup(kind: Kind) -> Setup {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(fixture(BASE), &upstream).await;
    let proxy = start_proxy(kind, gw.forward_auth_addr.unwrap(), upstream.addr);
    Setup {
        upstream,
        gw,
        proxy,
    }
}

fn token(subject: &str, roles: &[&str]) -> String {
    Token::new()
        .sub(subject)
        .exp_in(600)
        .roles(roles)
        .kid("rsa-1")
        .sign_rs256()
}

/// One answer: status, the headers, the body.
struct Answer {
    status: u16,
    headers: HeaderMap,
    body: String,
}

async fn get(url: String, headers: &[(&str, &str)]) -> Answer {
    let mut request = client().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

impl Answer {
    /// warden's headers on the answer, each value in order.
    fn warden_headers(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for name in WARDEN_HEADERS {
            for value in self.headers.get_all(name) {
                out.push((name.to_owned(), value.to_str().unwrap().to_owned()));
            }
        }
        out
    }

    /// The body with the decision id (`urn:uuid:…`, in problem documents and HTML pages)
    /// blanked out.
    fn body_without_instance(&self) -> String {
        let mut out = String::new();
        let mut rest = self.body.as_str();
        while let Some(at) = rest.find("urn:uuid:") {
            out.push_str(&rest[..at]);
            out.push_str("urn:uuid:-");
            rest = rest.get(at + "urn:uuid:".len() + 36..).unwrap_or("");
        }
        out.push_str(rest);
        out
    }

    fn code(&self) -> String {
        serde_json::from_str::<Value>(&self.body).unwrap_or(Value::Null)["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Through the proxy and from warden's own proxy listener, the same request must get the
/// same status, the same warden headers and the same body (but for the decision id).
async fn same_as_warden(s: &Setup, path: &str, headers: &[(&str, &str)]) -> Answer {
    let through = get(s.proxy.url(path), headers).await;
    let direct = get(format!("http://{}{path}", s.gw.proxy_addr), headers).await;
    let what = format!("{:?} GET {path} {headers:?}", s.proxy.kind);
    assert_eq!(through.status, direct.status, "{what}\n{}", s.proxy.log());
    assert_eq!(through.warden_headers(), direct.warden_headers(), "{what}");
    assert_eq!(
        through.body_without_instance(),
        direct.body_without_instance(),
        "{what}"
    );
    through
}

/// Every refusal reaches the client as warden gave it: 401 without and with a bad token, 403,
/// the concealed 404 (the bytes of an unknown path's), HTML for a browser, and 429 with
/// `Retry-After`; nothing refused reaches the upstream.
async fn refusals_reach_the_client_exactly(kind: Kind) {
    let s = setup(kind).await;
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));

    let none = same_as_warden(&s, "/me", &[]).await;
    assert_eq!(none.status, 401);
    let challenges: Vec<_> = none.headers.get_all("www-authenticate").iter().collect();
    assert_eq!(
        challenges,
        [r#"Bearer realm="warden""#],
        "exactly one challenge"
    );
    assert_eq!(none.code(), "unauthenticated");

    let bad = same_as_warden(&s, "/me", &[("authorization", "Bearer junk")]).await;
    assert_eq!(bad.status, 401);
    assert!(
        bad.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="invalid_token""#)
    );
    assert_eq!(bad.code(), "invalid_token");

    let forbidden = same_as_warden(&s, "/admin", &[("authorization", &viewer)]).await;
    assert_eq!(forbidden.status, 403);
    assert_eq!(forbidden.code(), "forbidden");

    let unknown = same_as_warden(&s, "/nowhere/at-all", &[]).await;
    assert_eq!(unknown.status, 404);
    for auth in [None, Some("Bearer junk"), Some(viewer.as_str())] {
        let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
        let concealed = same_as_warden(&s, "/vault/1", &headers).await;
        assert_eq!(concealed.status, 404, "{auth:?}");
        assert_eq!(concealed.warden_headers(), unknown.warden_headers());
        assert_eq!(
            concealed.body_without_instance(),
            unknown.body_without_instance()
        );
    }

    let html = same_as_warden(&s, "/me", &[("accept", "text/html")]).await;
    assert_eq!(html.status, 401);
    assert!(html.body.contains("401 Unauthorized"), "{}", html.body);

    // The limit is 2 per client and route: two allowed (NGINX returns their RateLimit
    // fields; Caddy does not pass an allowed answer's headers on), then 429.
    for remaining in ["1", "0"] {
        let allowed = get(s.proxy.url("/search"), &[]).await;
        assert_eq!(allowed.status, 200);
        if kind == Kind::Nginx {
            let ratelimit = allowed.headers["ratelimit"].to_str().unwrap();
            assert!(
                ratelimit.starts_with(&format!(r#""search";r={remaining};t="#)),
                "{ratelimit}"
            );
            assert_eq!(
                allowed.headers["ratelimit-policy"],
                r#""search";q=2;w=3600"#
            );
        }
    }
    let limited = get(s.proxy.url("/search"), &[]).await;
    assert_eq!(limited.status, 429, "{}", s.proxy.log());
    assert_eq!(limited.code(), "rate_limited");
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600, "{retry}");
    assert_eq!(
        limited.headers["ratelimit-policy"],
        r#""search";q=2;w=3600"#
    );
    assert_eq!(
        limited.headers["content-type"], "application/problem+json",
        "{}",
        limited.body
    );
    let direct = get(format!("http://{}/search", s.gw.proxy_addr), &[]).await;
    assert_eq!(direct.status, 429);
    let without_time = |a: &Answer| -> Vec<(String, String)> {
        a.warden_headers()
            .into_iter()
            .filter(|(n, _)| n != "retry-after" && n != "ratelimit")
            .collect()
    };
    assert_eq!(without_time(&limited), without_time(&direct));

    // Only the two allowed searches reached the upstream.
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|r| r.target == "/search"));
    s.gw.shutdown().await;
}

/// An allowed request reaches the upstream with warden's identity headers, and identity
/// headers forged by the client never do; a body goes to the upstream, not to warden.
async fn allowed_requests_carry_warden_s_identity_only(kind: Kind) {
    let s = setup(kind).await;
    let forged = [
        ("x-warden-subject", "root"),
        ("x-warden-roles", "admin"),
        ("x-warden-scopes", "everything"),
        ("x-warden-auth-source", "forged"),
        ("x-warden-decision-id", "forged"),
    ];
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));
    let mut headers = vec![("authorization", viewer.as_str())];
    headers.extend(forged);
    let answer = get(s.proxy.url("/me"), &headers).await;
    assert_eq!(answer.status, 200, "{}\n{}", answer.body, s.proxy.log());
    assert!(answer.body.contains(r#""upstream":true"#));
    let seen = s.upstream.last();
    assert_eq!(seen.target, "/me");
    assert_eq!(seen.headers["x-warden-subject"], "vic");
    assert_eq!(seen.headers["x-warden-roles"], "viewer");
    assert_eq!(seen.headers["x-warden-auth-source"], "jwt");
    let id = seen.headers["x-warden-decision-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "{id}");
    // The token has no scopes: NGINX sends no header, Caddy an empty one; never the forged.
    no_forged_value(&seen.headers, "x-warden-scopes", kind);
    for name in ["x-warden-subject", "x-warden-roles", "x-warden-auth-source"] {
        assert_eq!(seen.headers.get_all(name).iter().count(), 1, "{name}");
    }

    // Anonymous on a public route: no identity at all, and none of the forged one.
    let answer = get(s.proxy.url("/public"), &forged).await;
    assert_eq!(answer.status, 200);
    let seen = s.upstream.last();
    assert_eq!(seen.target, "/public");
    for name in &IDENTITY[..4] {
        no_forged_value(&seen.headers, name, kind);
    }
    assert_ne!(seen.headers["x-warden-decision-id"], "forged");

    // The client's cookies reach the app without warden's session and sign-in cookies,
    // whatever they hold; an app's own cookies (look-alike names too) go as they came.
    for (sent, received) in [
        (
            "theme=dark; warden_session=stolen; lang=en",
            Some("theme=dark; lang=en"),
        ),
        (
            "theme=dark; warden_sessionx=1",
            Some("theme=dark; warden_sessionx=1"),
        ),
        ("warden_session=stolen; warden_session_login=state", None),
    ] {
        let answer = get(s.proxy.url("/public"), &[("cookie", sent)]).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        let seen = s.upstream.last();
        let cookies: Vec<&str> = seen
            .headers
            .get_all("cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .filter(|v| !v.is_empty()) // Caddy sends an empty copy, NGINX none
            .collect();
        assert_eq!(cookies, Vec::from_iter(received), "{kind:?}: {sent}");
    }

    // A body goes to the upstream (warden's question has none), and a refused one is
    // answered with warden's refusal all the same.
    let body = "x".repeat(10_000);
    let response = client()
        .post(s.proxy.url("/me"))
        .header("authorization", &viewer)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = s.upstream.last();
    assert_eq!(
        (seen.method.as_str(), seen.body.len()),
        ("POST", body.len())
    );
    let before = s.upstream.seen().len();
    let response = client()
        .post(s.proxy.url("/me"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    assert_eq!(s.upstream.seen().len(), before);
    s.gw.shutdown().await;
}

/// A header the upstream received is absent or empty: never a client's forged value.
fn no_forged_value(headers: &http::HeaderMap, name: &str, kind: Kind) {
    let values: Vec<_> = headers.get_all(name).iter().collect();
    match kind {
        Kind::Nginx => assert!(values.is_empty(), "{name}: {values:?}"),
        Kind::Caddy => assert_eq!(values, [""], "{name}"),
    }
}

/// What the client claims about the original request in forwarding headers changes
/// nothing: the proxy's own description is what warden decides on.
async fn spoofed_forwarding_headers_change_nothing(kind: Kind) {
    let s = setup(kind).await;
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));
    let spoof = [
        ("x-forwarded-uri", "/public"),
        ("x-original-uri", "/public"),
        ("x-forwarded-method", "OPTIONS"),
        ("x-original-method", "OPTIONS"),
    ];
    let mut headers = vec![("authorization", viewer.as_str())];
    headers.extend(spoof);
    let answer = get(s.proxy.url("/admin"), &headers).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    let answer = get(s.proxy.url("/me"), &spoof).await;
    assert_eq!(answer.status, 401, "{}", answer.body);
    assert!(s.upstream.seen().is_empty());

    // Nor is the client who it says it is in X-Forwarded-For: the proxy says who it is.
    let answer = get(s.proxy.url("/me"), &[("x-forwarded-for", "203.0.113.50")]).await;
    assert_eq!(answer.status, 401);
    let recent = admin_get(&s.gw, "/decisions/recent").await;
    let last: Value = serde_json::from_str(recent.lines().last().unwrap()).unwrap();
    assert_eq!(
        (last["path"].as_str(), last["status"].as_u64()),
        (Some("/me"), Some(401))
    );
    assert_eq!(last["client"], "127.0.0.1", "{recent}");

    // And the other way: an allowed request stays allowed, decided on its own path.
    let to_admin = [
        ("x-forwarded-uri", "/admin"),
        ("x-original-uri", "/admin"),
        ("x-forwarded-method", "DELETE"),
    ];
    let answer = get(s.proxy.url("/public?q=1"), &to_admin).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(s.upstream.last().target, "/public?q=1");
    s.gw.shutdown().await;
}

#[tokio::test]
async fn nginx_relays_warden_s_refusals_exactly() {
    refusals_reach_the_client_exactly(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_forwards_warden_s_identity_and_never_a_forged_one() {
    allowed_requests_carry_warden_s_identity_only(Kind::Nginx).await;
}

#[tokio::test]
async fn nginx_decides_on_its_own_description_of_the_request() {
    spoofed_forwarding_headers_change_nothing(Kind::Nginx).await;
}

#[tokio::test]
async fn caddy_relays_warden_s_refusals_exactly() {
    refusals_reach_the_client_exactly(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_forwards_warden_s_identity_and_never_a_forged_one() {
    allowed_requests_carry_warden_s_identity_only(Kind::Caddy).await;
}

#[tokio::test]
async fn caddy_decides_on_its_own_description_of_the_request() {
    spoofed_forwarding_headers_change_nothing(Kind::Caddy).await;
}

#[test]
fn the_readme_shows_the_tested_recipes() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"))
            .unwrap();
    for (name, recipe) in [
        ("NGINX", NGINX_SITE),
        ("Caddy", CADDY_SITE),
        ("NGINX mTLS", NGINX_MTLS_SITE),
    ] {
        assert!(
            readme.contains(recipe),
            "the README's {name} recipe is not the one the tests run:\n{recipe}"
        );
    }
}

// ---- The request shapes, straight to the forward-auth listener ----

/// A question to the forward-auth listener at `path`, from a client bound to `source`.
async fn ask_from(
    source: &str,
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = common::client_from(source).request(method, format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.text().await.unwrap(),
    }
}

async fn ask(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Answer {
    ask_from(
        "127.0.0.1",
        gw.forward_auth_addr.unwrap(),
        reqwest::Method::GET,
        path,
        headers,
    )
    .await
}

/// Traefik's `forwardAuth` question: the address's own path, the original request in
/// `X-Forwarded-*`, the client's headers as they were.
fn traefik<'a>(method: &'a str, uri: &'a str, client: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("x-forwarded-method", method),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "api.example.com"),
        ("x-forwarded-uri", uri),
        ("x-forwarded-for", client),
        ("accept", "application/json"),
    ]
}

#[tokio::test]
async fn traefik_s_forward_auth_questions_are_decided_like_requests() {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(fixture(BASE), &upstream).await;
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));
    let admin = format!("Bearer {}", token("ada", &["admin", "ops"]));

    let mut q = traefik("GET", "/me", "203.0.113.7");
    q.push(("authorization", &viewer));
    let allowed = ask(&gw, "/auth", &q).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert!(allowed.body.is_empty());
    assert_eq!(allowed.headers["x-warden-subject"], "vic");
    assert_eq!(allowed.headers["x-warden-roles"], "viewer");
    assert_eq!(allowed.headers["x-warden-auth-source"], "jwt");
    // Every identity header is there, empty when the identity has no value: a proxy that
    // copies them replaces the client's forged ones.
    assert_eq!(allowed.headers["x-warden-scopes"], "");
    assert!(!allowed.headers.contains_key("x-warden-refusal"));
    // No cookie came, so none is to be sent.
    assert!(!allowed.headers.contains_key("cookie"));

    // The cookies Traefik is to send (`authResponseHeaders` lists `Cookie`): the client's,
    // without warden's own; empty when only warden's came.
    let mut q = traefik("GET", "/public", "203.0.113.7");
    q.push(("cookie", "a=1; warden_session=stolen"));
    q.push(("cookie", "b=2"));
    assert_eq!(ask(&gw, "/auth", &q).await.headers["cookie"], "a=1; b=2");
    let mut q = traefik("GET", "/public", "203.0.113.7");
    q.push(("cookie", "a=1"));
    q.push(("cookie", "b=2"));
    assert_eq!(ask(&gw, "/auth", &q).await.headers["cookie"], "a=1; b=2");
    let mut q = traefik("GET", "/public", "203.0.113.7");
    q.push(("cookie", "warden_session_login=state"));
    assert_eq!(ask(&gw, "/auth", &q).await.headers["cookie"], "");

    let mut q = traefik("GET", "/vault/9?full=1", "203.0.113.7");
    q.push(("authorization", &admin));
    let vault = ask(&gw, "/auth", &q).await;
    assert_eq!(vault.status, 200);
    assert_eq!(vault.headers["x-warden-roles"], "admin,ops");

    let none = ask(&gw, "/auth", &traefik("GET", "/me", "203.0.113.7")).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], r#"Bearer realm="warden""#);
    assert_eq!(none.code(), "unauthenticated");
    // Without X-Warden-Replay (Traefik's and Caddy's case) there is nothing to replay.
    assert!(!none.headers.contains_key("x-warden-refusal"));

    let mut q = traefik("GET", "/admin", "203.0.113.7");
    q.push(("authorization", &viewer));
    assert_eq!(ask(&gw, "/auth", &q).await.status, 403);
    let mut q = traefik("GET", "/vault/1", "203.0.113.7");
    q.push(("authorization", &viewer));
    let concealed = ask(&gw, "/auth", &q).await;
    assert_eq!(
        (concealed.status, concealed.code().as_str()),
        (404, "not_found")
    );
    let wrong_method = ask(&gw, "/auth", &traefik("DELETE", "/public", "203.0.113.7")).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.headers["allow"], "GET, POST, HEAD");

    // The client is X-Forwarded-For's (the asking peer is a trusted proxy): each client
    // has its own limit.
    for _ in 0..2 {
        let a = ask(&gw, "/auth", &traefik("GET", "/search", "203.0.113.7")).await;
        assert_eq!(a.status, 200);
        assert!(a.headers.contains_key("ratelimit"));
    }
    let limited = ask(&gw, "/auth", &traefik("GET", "/search", "203.0.113.7")).await;
    assert_eq!(limited.status, 429);
    assert!(limited.headers.contains_key("retry-after"));
    let other = ask(&gw, "/auth", &traefik("GET", "/search", "203.0.113.8")).await;
    assert_eq!(other.status, 200);

    let recent = admin_get(&gw, "/decisions/recent").await;
    let last: Value = serde_json::from_str(recent.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], 429);
    assert_eq!(last["client"], "203.0.113.7");
    assert_eq!(last["path"], "/search");
    assert!(
        upstream.seen().is_empty(),
        "a question never reaches the upstream"
    );
    gw.shutdown().await;
}

/// Envoy's HTTP mode: the original headers Envoy lets through, and the ones it adds.
fn envoy_headers(auth: Option<&str>) -> Vec<(&str, &str)> {
    let mut h = vec![
        ("x-forwarded-for", "198.51.100.4"),
        ("x-forwarded-proto", "https"),
        ("x-request-id", "5d3b1d27-1c3e-4b6a-9bd7-0fd3f3bb7f1f"),
        ("x-envoy-expected-rq-timeout-ms", "1000"),
    ];
    h.extend(auth.map(|a| ("authorization", a)));
    h
}

#[tokio::test]
async fn envoy_s_http_mode_asks_with_the_original_request_behind_the_prefix() {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(fixture(BASE), &upstream).await;
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));
    let viewer = viewer.as_str();

    let allowed = ask(&gw, "/envoy/me?x=1", &envoy_headers(Some(viewer))).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.headers["x-warden-subject"], "vic");
    assert_eq!(allowed.headers["x-warden-roles"], "viewer");
    assert_eq!(allowed.headers["x-warden-scopes"], "");

    let none = ask(&gw, "/envoy/me", &envoy_headers(None)).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.headers["www-authenticate"], r#"Bearer realm="warden""#);
    let bad = ask(&gw, "/envoy/me", &envoy_headers(Some("Bearer junk"))).await;
    assert_eq!((bad.status, bad.code().as_str()), (401, "invalid_token"));
    let forbidden = ask(&gw, "/envoy/admin", &envoy_headers(Some(viewer))).await;
    assert_eq!(
        (forbidden.status, forbidden.code().as_str()),
        (403, "forbidden")
    );
    let concealed = ask(&gw, "/envoy/vault/1", &envoy_headers(Some(viewer))).await;
    let unknown = ask(&gw, "/envoy/nowhere", &envoy_headers(None)).await;
    assert_eq!((concealed.status, unknown.status), (404, 404));
    assert_eq!(
        concealed.body_without_instance(),
        unknown.body_without_instance()
    );
    assert_eq!(concealed.warden_headers(), unknown.warden_headers());
    // The original method is the question's own.
    let wrong = ask_from(
        "127.0.0.1",
        gw.forward_auth_addr.unwrap(),
        reqwest::Method::DELETE,
        "/envoy/public",
        &envoy_headers(None),
    )
    .await;
    assert_eq!(wrong.status, 405);
    // "/envoyish" is not behind the prefix: a forwarded-header question without its headers.
    assert_eq!(
        ask(&gw, "/envoyish/me", &envoy_headers(None)).await.status,
        400
    );

    let recent = admin_get(&gw, "/decisions/recent").await;
    let forbidden_line = recent
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|l| l["status"] == 403)
        .unwrap();
    assert_eq!(forbidden_line["path"], "/admin");
    assert_eq!(forbidden_line["client"], "198.51.100.4");
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

#[tokio::test]
async fn malformed_questions_are_400_problems_logged_and_counted_never_200() {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(fixture(BASE), &upstream).await;
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("no forwarded headers", vec![]),
        ("no URI", vec![("x-forwarded-method", "GET")]),
        ("no method", vec![("x-forwarded-uri", "/public")]),
        (
            "two URIs",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public"),
                ("x-forwarded-uri", "/admin"),
            ],
        ),
        (
            "two methods",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-method", "DELETE"),
                ("x-forwarded-uri", "/public"),
            ],
        ),
        (
            "URIs that disagree",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public"),
                ("x-original-uri", "/admin"),
            ],
        ),
        (
            "an absolute URI",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "http://evil.example/public"),
            ],
        ),
        (
            "a relative URI",
            vec![("x-forwarded-method", "GET"), ("x-forwarded-uri", "public")],
        ),
        (
            "a URI with a space",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/pub lic"),
            ],
        ),
        (
            "a method that is not one",
            vec![
                ("x-forwarded-method", "G E T"),
                ("x-forwarded-uri", "/public"),
            ],
        ),
        (
            "a URI the normalizer refuses",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public/%2e%2e/admin%00"),
            ],
        ),
    ];
    let count = cases.len();
    for (what, headers) in cases {
        let answer = ask(&gw, "/auth", &headers).await;
        assert_eq!(answer.status, 400, "{what}: {}", answer.body);
        assert_eq!(
            answer.headers["content-type"], "application/problem+json",
            "{what}"
        );
        assert!(!answer.headers.contains_key("x-warden-subject"), "{what}");
        assert!(!answer.code().is_empty(), "{what}: {}", answer.body);
    }
    // The replay without a refusal, or with a forged success, is no replay.
    let forged_success = base64_url(r#"{"status":200,"headers":[],"body":"ok"}"#);
    for headers in [vec![], vec![("x-warden-refusal", forged_success.as_str())]] {
        let answer = ask(&gw, "/_warden/replay", &headers).await;
        assert_eq!(answer.status, 400, "{}", answer.body);
    }

    let recent = admin_get(&gw, "/decisions/recent").await;
    let lines: Vec<Value> = recent
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), count, "{recent}");
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == 400 && l["outcome"] == "deny"),
        "{recent}"
    );
    let metrics = admin_get(&gw, "/metrics").await;
    let counted: u64 = metrics
        .lines()
        .filter(|l| l.starts_with("warden_decisions_total{") && l.contains(r#"status="400""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, count as u64, "{metrics}");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("warden_decisions_total{") && l.contains(r#"status="200""#))
    );
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

fn base64_url(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test]
async fn a_question_from_a_peer_that_is_not_a_trusted_proxy_is_refused() {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(
        fixture(BASE).replace(
            r#"trusted_proxies = ["127.0.0.1"]"#,
            r#"trusted_proxies = ["10.0.0.1"]"#,
        ),
        &upstream,
    )
    .await;
    let admin = format!("Bearer {}", token("ada", &["admin"]));
    let refusal = base64_url(r#"{"status":418,"headers":[],"body":"teapot"}"#);
    let questions: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "/auth",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-forwarded-uri", "/public"),
            ],
        ),
        (
            "/auth",
            vec![
                ("x-forwarded-method", "GET"),
                ("x-original-uri", "/admin"),
                ("authorization", &admin),
            ],
        ),
        ("/envoy/public", vec![]),
        ("/envoy/admin", vec![("authorization", &admin)]),
        ("/_warden/replay", vec![("x-warden-refusal", &refusal)]),
    ];
    let count = questions.len();
    for (path, headers) in questions {
        let answer = ask(&gw, path, &headers).await;
        assert_eq!(answer.status, 403, "{path} {headers:?}: {}", answer.body);
        assert_eq!(answer.code(), "forbidden", "{path}");
        for name in IDENTITY {
            assert!(!answer.headers.contains_key(name), "{path}: {name}");
        }
    }
    let recent = admin_get(&gw, "/decisions/recent").await;
    let lines: Vec<Value> = recent
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), count, "{recent}");
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == 403 && l["stage"] == "network"),
        "{recent}"
    );
    assert!(upstream.seen().is_empty());
    gw.shutdown().await;
}

/// The decision id of a refusal, from its problem's `instance`.
fn instance_id(problem: &str) -> String {
    let value: Value = serde_json::from_str(problem).unwrap();
    value["instance"]
        .as_str()
        .unwrap()
        .strip_prefix("urn:uuid:")
        .unwrap()
        .to_owned()
}

/// The dashboard's explanation of decision `id`, once the live view has it (bounded).
async fn explained(gw: &Gateway, id: &str) -> String {
    let url = format!(
        "http://{}/dashboard/explain?id={id}",
        gw.admin_addr.unwrap()
    );
    for _ in 0..200 {
        let answer = client()
            .get(&url)
            .bearer_auth(common::ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        if answer.status() == 200 {
            return answer.text().await.unwrap();
        }
        assert_eq!(answer.status(), 404, "only not kept yet");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("decision {id} was never kept for the dashboard");
}

#[tokio::test]
async fn forward_auth_and_ext_authz_refusals_are_explained_on_the_dashboard() {
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(fixture(BASE), &upstream).await;
    let viewer = format!("Bearer {}", token("vic", &["viewer"]));

    // A Traefik question for /admin from a viewer: explained as the request it describes,
    // from the client X-Forwarded-For names (the asking proxy is trusted on replay too).
    let mut q = traefik("GET", "/admin", "203.0.113.7");
    q.push(("authorization", &viewer));
    let refused = ask(&gw, "/auth", &q).await;
    assert_eq!(refused.status, 403);
    let id = instance_id(&refused.body);
    let text = explained(&gw, &id).await;
    assert!(text.starts_with(&format!("decision {id}: 403 ")), "{text}");
    assert!(text.contains("GET /admin"), "{text}");
    assert!(text.contains("203.0.113.7"), "{text}");
    assert!(text.contains("vic"), "{text}");
    assert!(!text.contains(&viewer[7..]), "the token is never shown");

    // An Envoy check for /me without a token: the request Envoy describes, from the
    // downstream address it reports.
    let mut envoy = crate::ext_authz::envoy(&gw, "127.0.0.1").await;
    let answer = crate::ext_authz::check(
        &mut envoy,
        crate::ext_authz::ask("GET", "/me", "198.51.100.9", &[]),
    )
    .await;
    let Some(envoy_types::ext_authz::v3::pb::HttpResponse::DeniedResponse(denied)) =
        answer.http_response
    else {
        panic!("a denial: {answer:?}");
    };
    let id = instance_id(&denied.body);
    let text = explained(&gw, &id).await;
    assert!(text.starts_with(&format!("decision {id}: 401 ")), "{text}");
    assert!(text.contains("GET /me"), "{text}");
    assert!(text.contains("198.51.100.9"), "{text}");
    gw.shutdown().await;
}

// ---- mTLS behind a forward-auth proxy ----

/// The README's NGINX recipe for `mtls` sources: NGINX terminates TLS, asks for a client
/// certificate and sends the one it received on every question; the test fills in its
/// addresses and puts the certificate files beside the configuration.
const NGINX_MTLS_SITE: &str = r#"upstream warden { server 127.0.0.1:9091; }   # warden's [forward_auth] listen
upstream app { server 127.0.0.1:3000; }

server {
    listen 80 ssl;
    ssl_certificate server.pem;
    ssl_certificate_key server.key;
    # Ask for a client certificate; warden verifies its chain against the source's `ca`
    # (`optional` with `ssl_client_certificate` makes NGINX verify it as well).
    ssl_verify_client optional_no_ca;

    location / {
        auth_request /_warden_auth;
        auth_request_set $warden_subject $upstream_http_x_warden_subject;
        auth_request_set $warden_source $upstream_http_x_warden_auth_source;
        proxy_set_header X-Warden-Subject $warden_subject;
        proxy_set_header X-Warden-Auth-Source $warden_source;
        proxy_pass http://app;
    }

    location = /_warden_auth {
        internal;
        proxy_pass http://warden;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Forwarded-Method $request_method;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Uri "";
        proxy_set_header X-Original-Method "";
        # The certificate the client presented, as URL-encoded PEM. Set on every question:
        # without a certificate it is empty, NGINX sends no such header, and a client's own
        # X-Client-Cert never reaches warden.
        proxy_set_header X-Client-Cert $ssl_client_escaped_cert;
    }
}
"#;

/// The forward-auth fixture reading client certificates from `header`, with the `mtls`
/// source `clients` (CA `ca`) on the route `/mtls`.
fn mtls_fixture(header: Option<&str>, ca: &Path) -> common::Fixture {
    let listen = "[forward_auth]\nlisten = \"127.0.0.1:0\"\n";
    let config = match header {
        Some(h) => fixture(BASE).replace(
            listen,
            &format!("{listen}client_certificate_header = \"{h}\"\n"),
        ),
        // Certificates then come only from Envoy's gRPC check.
        None => fixture(BASE).replace(listen, &format!("{listen}grpc_listen = \"127.0.0.1:0\"\n")),
    };
    config.append(&format!(
        "[sources.clients]\ntype = \"mtls\"\nca = \"{}\"\n\n\
         [[routes]]\nname = \"mtls\"\npath = \"/mtls\"\nupstream = \"app\"\nauth = [\"clients\"]\n",
        ca.display()
    ))
}

#[tokio::test]
async fn nginx_passes_the_client_certificate_and_warden_judges_it() {
    use crate::common::certs::TestCa;
    let dir = crate::tls::dir("forward-auth-mtls");
    crate::tls::listener_certs(&dir);
    let clients = TestCa::new("forward-auth clients CA");
    let ca = clients.write(&dir.join("warden"), "clients-ca");
    let upstream = Upstream::start().await;
    let gw = forward_auth_gateway(mtls_fixture(Some("X-Client-Cert"), &ca), &upstream).await;
    let warden = gw.forward_auth_addr.unwrap();
    let site = filled(NGINX_MTLS_SITE, warden, upstream.addr);
    let proxy = start_proxy_with(Kind::Nginx, warden, upstream.addr, Some(site), Some(&dir));
    let url = format!("https://localhost:{}/mtls", proxy.addr.port());

    let alice = clients.client("alice", &[]);
    let with_alice = crate::mtls::https_client(&dir, proxy.addr, Some(&alice));
    let response = with_alice.get(&url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{}", proxy.log());
    let seen = upstream.last();
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    assert_eq!(seen.headers["x-warden-auth-source"], "clients");
    assert!(seen.headers.get("x-client-cert").is_none());

    // No certificate: 401. Alice's certificate (public, and enough for a header) sent by
    // a client without her key: NGINX replaces the header, so it is still a 401.
    let anonymous = crate::mtls::https_client(&dir, proxy.addr, None);
    assert_eq!(anonymous.get(&url).send().await.unwrap().status(), 401);
    let forged: String =
        percent_encoding::utf8_percent_encode(&alice.cert, percent_encoding::NON_ALPHANUMERIC)
            .collect();
    let response = anonymous
        .get(&url)
        .header("x-client-cert", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "a client's own certificate header is never believed"
    );

    // Another CA's certificate: NGINX takes it (`optional_no_ca`), warden's source refuses it.
    let mallory = TestCa::new("another CA").client("alice", &[]);
    let with_mallory = crate::mtls::https_client(&dir, proxy.addr, Some(&mallory));
    assert_eq!(with_mallory.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        upstream.seen().len(),
        1,
        "only alice's request reached the app"
    );
    gw.shutdown().await;
}

/// Traefik's question for `/mtls` with the client certificate `cert` in `header`.
async fn ask_with_certificate(gw: &Gateway, header: &str, cert: &str) -> Answer {
    let mut headers = traefik("GET", "/mtls", "203.0.113.9");
    headers.push((header, cert));
    ask(gw, "/auth", &headers).await
}

#[tokio::test]
async fn traefik_s_client_certificate_header_is_read_only_when_configured() {
    use crate::common::certs::TestCa;
    use base64::Engine as _;
    let dir = crate::tls::dir("forward-auth-mtls-traefik");
    let clients = TestCa::new("forward-auth clients CA");
    let ca = clients.write(&dir, "clients-ca");
    let upstream = Upstream::start().await;
    // Traefik's passTLSClientCert: base64 DER without the PEM lines, the chain comma-separated.
    let alice = clients.client("alice", &[]);
    let der = rustls_pki_types::pem::PemObject::from_pem_slice(alice.cert.as_bytes())
        .map(|c: rustls_pki_types::CertificateDer<'static>| c.to_vec())
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    let header = "X-Forwarded-Tls-Client-Cert";
    let gw = forward_auth_gateway(mtls_fixture(Some(header), &ca), &upstream).await;
    let allowed = ask_with_certificate(&gw, header, &b64).await;
    assert_eq!(allowed.status, 200, "{}", allowed.body);
    assert_eq!(allowed.headers["x-warden-subject"], "alice");
    assert_eq!(
        ask_with_certificate(&gw, header, "").await.status,
        401,
        "an empty header: no certificate"
    );
    let malformed = ask_with_certificate(&gw, header, "bm90IGEgY2VydA==").await;
    assert_eq!(malformed.status, 400, "{}", malformed.body);
    assert!(
        malformed.body.contains("client certificate header"),
        "{}",
        malformed.body
    );
    gw.shutdown().await;

    // Without `client_certificate_header` the same header is only a header.
    let gw = forward_auth_gateway(mtls_fixture(None, &ca), &upstream).await;
    assert_eq!(ask_with_certificate(&gw, header, &b64).await.status, 401);
    gw.shutdown().await;
}
