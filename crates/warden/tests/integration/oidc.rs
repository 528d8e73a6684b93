//! Browser sign-in against the real OpenID provider (Node's `oidc-provider`, started by the
//! test on loopback): the whole authorization code flow with a cookie-keeping client that
//! fills the provider's login and consent forms, every refusal of the callback and of the
//! session (nothing of them reaches the upstream), refresh, logout across two instances
//! sharing Redis (RP-initiated and back-channel), API clients that keep their 401, open
//! redirects, and the flow once in headless Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::cookie::{CookieStore, Jar};
use warden::gateway::{Gateway, Listeners};
use warden_core::Config;
use warden_core::session::SessionSettings;

use crate::common::Upstream;
use crate::common::oidc_provider::{self, CLIENT_SECRET, Client, Provider, node_dir};
use crate::common::redis_server::{Cleanup, SHARED, free_port, require_shared, unique_prefix};

const SESSION_KEY: &str = "session-key-for-the-sign-in-tests-0123456789";

/// A directory of its own for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tmp/oidc")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Instance {
    gateway: Gateway,
    base: String,
    sessions: Arc<SessionSettings>,
}

/// How the instances of the tests authenticate at the provider, unless a test says otherwise.
const WITH_SECRET: &str = r#"client_secret_file = "client.secret""#;

/// The configuration of one warden instance at `port` in front of `upstream`; `client_auth`
/// is how it authenticates at the provider.
fn config_text(
    provider: &Provider,
    port: u16,
    upstream: SocketAddr,
    extra: &str,
    client_auth: &str,
) -> String {
    format!(
        r#"
[log]
decisions = "off"

[upstreams.app]
url = "http://{upstream}"

[sessions]
keys = [{{ secret_file = "session.key" }}]
secure = false
{extra}

[sources.idp]
type = "oidc"
issuer = "{issuer}"
client_id = "warden"
{client_auth}
redirect_uri = "http://127.0.0.1:{port}/oauth2/callback"
post_logout_redirect_uri = "http://127.0.0.1:{port}/"
roles_claim = "realm_access.roles"
attributes = ["email"]

[[routes]]
path = "/app"
upstream = "app"
auth = ["idp"]
roles = ["viewer"]

[[routes]]
path = "/"
upstream = "app"
"#,
        issuer = provider.issuer(),
    )
}

async fn instance(
    dir: &Path,
    name: &str,
    provider: &Provider,
    port: u16,
    upstream: &Upstream,
    extra: &str,
) -> Instance {
    instance_with(dir, name, provider, port, upstream, extra, WITH_SECRET).await
}

async fn instance_with(
    dir: &Path,
    name: &str,
    provider: &Provider,
    port: u16,
    upstream: &Upstream,
    extra: &str,
    client_auth: &str,
) -> Instance {
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("session.key"), SESSION_KEY).unwrap();
    std::fs::write(dir.join("client.secret"), CLIENT_SECRET).unwrap();
    let path = dir.join("warden.toml");
    let text = config_text(provider, port, upstream.addr, extra, client_auth);
    std::fs::write(&path, &text).unwrap();
    let config = Config::parse(&text, &path).unwrap_or_else(|e| panic!("{e:?}"));
    let sessions = Arc::clone(config.sessions.as_ref().unwrap());
    let gateway = Gateway::start(
        config,
        Listeners {
            proxy: Some(SocketAddr::from(([127, 0, 0, 1], port))),
            ..Listeners::default()
        },
    )
    .await
    .unwrap();
    Instance {
        base: format!("http://127.0.0.1:{port}"),
        gateway,
        sessions,
    }
}

/// A browser-like client: it keeps cookies, and follows redirects unless told to stop at
/// warden's callback.
fn browser(jar: &Arc<Jar>, stop_at_callback: bool) -> reqwest::Client {
    warden::install_crypto_provider();
    let policy = if stop_at_callback {
        reqwest::redirect::Policy::custom(|attempt| {
            if attempt.url().path() == "/oauth2/callback" {
                attempt.stop()
            } else if attempt.previous().len() > 20 {
                attempt.error("too many redirects")
            } else {
                attempt.follow()
            }
        })
    } else {
        reqwest::redirect::Policy::limited(20)
    };
    reqwest::Client::builder()
        .cookie_provider(Arc::clone(jar))
        .redirect(policy)
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A client that follows nothing and keeps no cookies (cookies are set by hand).
fn plain() -> reqwest::Client {
    warden::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

const PAGE: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The first `<form ... action="...">` of a page and its hidden fields.
fn form(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = html.find("<form")?;
    let tag_end = start + html[start..].find('>')?;
    let tag = &html[start..tag_end];
    let action = attr(tag, "action")?;
    let end = html[tag_end..]
        .find("</form>")
        .map_or(html.len(), |e| tag_end + e);
    let mut fields = Vec::new();
    let mut rest = &html[tag_end..end];
    while let Some(i) = rest.find("<input") {
        let close = rest[i..].find('>').map_or(rest.len(), |c| i + c);
        let input = &rest[i..close];
        if attr(input, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attr(input, "name"), attr(input, "value"))
        {
            fields.push((name, value));
        }
        rest = &rest[close..];
    }
    Some((action.replace("&amp;", "&"), fields))
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!("{name}=\"");
    let i = tag.find(&key)? + key.len();
    let len = tag[i..].find('"')?;
    Some(tag[i..i + len].to_owned())
}

/// Fill the provider's pages (login as `user`, then consent) until an answer that is not one
/// of its forms: the page the browser lands on (or warden's callback when stopped there).
async fn sign_in(
    client: &reqwest::Client,
    mut response: reqwest::Response,
    user: &str,
    provider: &Provider,
) -> reqwest::Response {
    for _ in 0..6 {
        let at_provider = response.url().port() == Some(provider.port);
        if !at_provider || response.status() != StatusCode::OK {
            return response;
        }
        let html = response.text().await.unwrap();
        let (action, mut fields) = form(&html).unwrap_or_else(|| panic!("no form in {html}"));
        if html.contains("name=\"login\"") {
            fields.push(("login".to_owned(), user.to_owned()));
            fields.push(("password".to_owned(), "any".to_owned()));
        }
        if html.contains("name=\"logout\"") {
            fields.push(("logout".to_owned(), "yes".to_owned()));
        }
        response = client.post(&action).form(&fields).send().await.unwrap();
    }
    panic!("the provider kept asking");
}

/// Sign `user` in through a navigation to `/app`; returns the landing response.
async fn login(
    client: &reqwest::Client,
    base: &str,
    user: &str,
    provider: &Provider,
) -> reqwest::Response {
    let first = client
        .get(format!("{base}/app"))
        .header("accept", PAGE)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(
        first.url().port(),
        Some(provider.port),
        "sent to the provider"
    );
    sign_in(client, first, user, provider).await
}

/// The value of a cookie in the jar for `base`.
fn cookie(jar: &Jar, base: &str, name: &str) -> Option<String> {
    let url: reqwest::Url = base.parse().unwrap();
    let header = jar.cookies(&url)?;
    header
        .to_str()
        .unwrap()
        .split("; ")
        .find_map(|pair| pair.strip_prefix(&format!("{name}=")).map(str::to_owned))
}

/// An XHR: what a page's script sends.
async fn xhr(base: &str, cookie_header: Option<&str>) -> reqwest::Response {
    let mut request = plain()
        .get(format!("{base}/app"))
        .header("accept", "application/json")
        .header("sec-fetch-mode", "cors");
    if let Some(c) = cookie_header {
        request = request.header("cookie", c);
    }
    request.send().await.unwrap()
}

fn provider_for(ports: &[u16], backchannel: Option<u16>, ttl: u64, auth: &'static str) -> Provider {
    oidc_provider::start(
        &[Client {
            client_id: "warden".to_owned(),
            ports: ports.to_vec(),
            backchannel_port: backchannel,
            auth_method: auth,
            jwks: None,
        }],
        ttl,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_and_api_clients_keep_their_401() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let provider = provider_for(&[port], None, 600, "client_secret_basic");
    let dir = scratch("sign-in");
    let warden = instance(&dir, "a", &provider, port, &upstream, "").await;
    let base = &warden.base;

    // A script's request without a session: the 401 with its challenge, never a redirect.
    let answer = xhr(base, None).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert!(answer.headers().get("location").is_none());
    let challenge = answer.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains("cookie-name=\"warden_session\""),
        "{challenge}"
    );
    // A navigation: 302 to warden's login start, then to the provider.
    let nav = plain()
        .get(format!("{base}/app?tab=1"))
        .header("accept", PAGE)
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), StatusCode::FOUND);
    assert_eq!(
        nav.headers()["location"],
        "/oauth2/start?source=idp&rd=%2Fapp%3Ftab%3D1"
    );
    let start = plain()
        .get(format!("{base}/oauth2/start?source=idp&rd=%2Fapp"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::FOUND);
    let to: reqwest::Url = start.headers()["location"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(to.port(), Some(provider.port));
    let params: std::collections::HashMap<String, String> = to.query_pairs().into_owned().collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert_eq!(params["response_type"], "code");
    for p in ["state", "nonce", "code_challenge"] {
        assert!(params[p].len() >= 43, "{p} is random and long");
    }
    let login_cookie = start.headers()["set-cookie"].to_str().unwrap();
    assert!(
        login_cookie.starts_with("warden_session_login=v1."),
        "{login_cookie}"
    );
    assert!(login_cookie.contains("HttpOnly") && login_cookie.contains("SameSite=Lax"));
    assert!(
        upstream.seen().is_empty(),
        "nothing forwarded before a session"
    );

    // The whole flow, as a browser does it.
    let jar = Arc::new(Jar::default());
    let client = browser(&jar, false);
    let landed = login(&client, base, "alice", &provider).await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert_eq!(landed.url().as_str(), format!("{base}/app"));
    let body: serde_json::Value = landed.json().await.unwrap();
    assert_eq!(body["upstream"], true);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-warden-subject"], "alice");
    let session = cookie(&jar, base, "warden_session").expect("a session cookie");
    assert!(session.starts_with("v1."));

    // With the session, a script's request goes through too; bob lacks the role.
    let with = format!("warden_session={session}");
    assert_eq!(xhr(base, Some(&with)).await.status(), StatusCode::OK);
    // The sealed session is warden's: the upstream sees the application's cookies only.
    let app_cookie = format!("theme=dark; {with}; lang=en");
    assert_eq!(xhr(base, Some(&app_cookie)).await.status(), StatusCode::OK);
    let cookies: Vec<_> = upstream
        .last()
        .headers
        .get_all("cookie")
        .iter()
        .cloned()
        .collect();
    assert_eq!(
        cookies,
        ["theme=dark; lang=en"],
        "the session cookie is not forwarded"
    );
    let bob_jar = Arc::new(Jar::default());
    let bob = login(&browser(&bob_jar, false), base, "bob", &provider).await;
    assert_eq!(bob.status(), StatusCode::FORBIDDEN);

    // Open redirects are refused, at the start and in any spelling.
    for target in [
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "evil.example",
    ] {
        let url = format!("{base}/oauth2/start?rd={}", url_encode(target));
        let answer = plain().get(url).send().await.unwrap();
        assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{target}");
        assert!(answer.headers().get("location").is_none());
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(problem["code"], "login_failed");
    }

    // Logout: the session ends server-side, the cookie is cleared, then the provider's
    // RP-initiated logout with the ID token as hint.
    let before = upstream.seen().len();
    let out = plain()
        .get(format!("{base}/oauth2/logout"))
        .header("cookie", &with)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    let to: reqwest::Url = out.headers()["location"].to_str().unwrap().parse().unwrap();
    assert_eq!(to.path(), "/session/end");
    assert!(to.query_pairs().any(|(k, _)| k == "id_token_hint"));
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    let answer = xhr(base, Some(&with)).await;
    assert_eq!(
        answer.status(),
        StatusCode::UNAUTHORIZED,
        "the old cookie no longer works"
    );
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "invalid_session");
    assert_eq!(
        upstream.seen().len(),
        before,
        "nothing forwarded after logout"
    );
    warden.gateway.shutdown().await;
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The callback URL the provider sends the browser to, and the login cookie set for it.
async fn until_callback(base: &str, provider: &Provider) -> (String, String) {
    let jar = Arc::new(Jar::default());
    let client = browser(&jar, true);
    let stopped = login(&client, base, "alice", provider).await;
    assert_eq!(
        stopped.status(),
        StatusCode::SEE_OTHER,
        "stopped at the callback"
    );
    let callback = stopped.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        callback.starts_with(&format!("{base}/oauth2/callback?")),
        "{callback}"
    );
    let login = cookie(&jar, base, "warden_session_login").unwrap();
    (callback, login)
}

async fn callback(url: &str, login: &str) -> reqwest::Response {
    plain()
        .get(url)
        .header("cookie", format!("warden_session_login={login}"))
        .send()
        .await
        .unwrap()
}

async fn assert_login_failed(answer: reqwest::Response, what: &str) {
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST, "{what}");
    assert!(
        answer.headers().get("set-cookie").is_none(),
        "{what}: no session"
    );
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "login_failed", "{what}");
}

/// `client_key` for the test key `name` (in `testdata/keys`).
fn client_key(name: &str, kid: &str, algorithm: &str) -> String {
    let keys = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys");
    format!(
        "client_auth = \"private_key_jwt\"\nclient_key = {{ pem_file = \"{}\", kid = \"{kid}\", algorithm = \"{algorithm}\" }}",
        keys.join(name).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_signs_warden_in_without_a_secret_and_a_wrong_key_is_refused() {
    let upstream = Upstream::start().await;
    let port = free_port();
    // The provider holds only the public half of `ec256.key` (kid `ec-1` in jwks.json).
    let jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/keys/jwks.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let ec = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == "ec-1")
        .unwrap()
        .clone();
    let provider = oidc_provider::start(
        &[Client {
            client_id: "warden".to_owned(),
            ports: vec![port],
            backchannel_port: None,
            auth_method: "private_key_jwt",
            jwks: Some(serde_json::json!({ "keys": [ec] })),
        }],
        600,
    );
    let dir = scratch("private-key-jwt");
    let signed = client_key("ec256.key", "ec-1", "ES256");
    let warden = instance_with(&dir, "a", &provider, port, &upstream, "", &signed).await;
    let jar = Arc::new(Jar::default());
    let landed = login(&browser(&jar, false), &warden.base, "alice", &provider).await;
    assert_eq!(
        landed.status(),
        StatusCode::OK,
        "{:?}",
        provider.log.lock().unwrap()
    );
    assert_eq!(landed.url().path(), "/app");
    assert_eq!(upstream.last().headers["x-warden-subject"], "alice");
    assert_eq!(provider.count("grant authorization_code"), 1);
    assert_eq!(provider.count("grant error"), 0);
    warden.gateway.shutdown().await;

    // A key the provider does not know: the code exchange is refused, no session, nothing
    // forwarded.
    let other = client_key("rsa2.key", "rsa-2", "RS256");
    let warden = instance_with(&dir, "b", &provider, port, &upstream, "", &other).await;
    let before = upstream.seen().len();
    let jar = Arc::new(Jar::default());
    let landed = login(&browser(&jar, false), &warden.base, "alice", &provider).await;
    assert_login_failed(landed, "an unregistered client key").await;
    assert_eq!(
        provider.count("grant error"),
        1,
        "{:?}",
        provider.log.lock().unwrap()
    );
    assert_eq!(upstream.seen().len(), before, "nothing forwarded");
    assert!(cookie(&jar, &warden.base, "warden_session").is_none());
    warden.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_and_the_session_refuse_every_forgery() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let provider = provider_for(&[port], None, 600, "client_secret_post");
    let dir = scratch("forgery");
    let warden = instance(&dir, "a", &provider, port, &upstream, "").await;
    let base = &warden.base;
    let sessions = &warden.sessions;

    // Wrong state: refused before the code is used.
    let (url, login) = until_callback(base, &provider).await;
    let forged = url.replace("state=", "state=x");
    assert_login_failed(callback(&forged, &login).await, "wrong state").await;
    // No login cookie at all (a callback sent to another browser).
    let answer = plain().get(&url).send().await.unwrap();
    assert_login_failed(answer, "no login cookie").await;
    // The genuine callback works once (client_secret_post); its code replayed is refused.
    let ok = callback(&url, &login).await;
    assert_eq!(ok.status(), StatusCode::FOUND);
    assert_eq!(ok.headers()["location"], "/app");
    assert_login_failed(callback(&url, &login).await, "replayed code").await;
    // The provider logs its refusal of the replayed code (its output is read by a thread).
    provider.wait_for("grant error").await;

    // Wrong nonce: the login cookie re-sealed with another nonce (the test holds the keys);
    // the provider accepts the code, warden refuses the ID token.
    let (url, login) = until_callback(base, &provider).await;
    let mut state = sessions.open_login(&login).unwrap();
    state.nonce = "another-nonce".to_owned();
    let forged = sessions.seal_login(&state);
    assert_login_failed(callback(&url, &forged).await, "wrong nonce").await;
    // A tampered login cookie.
    let (url, login) = until_callback(base, &provider).await;
    assert_login_failed(callback(&url, &flip(&login)).await, "tampered login cookie").await;

    // A real session, then its cookie tampered with, expired, or of an unknown session.
    let (url, login) = until_callback(base, &provider).await;
    let ok = callback(&url, &login).await;
    let set = ok.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = set
        .strip_prefix("warden_session=")
        .and_then(|s| s.split(';').next())
        .unwrap()
        .to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && !set.contains("Secure"));
    let before = upstream.seen().len();
    assert_eq!(
        xhr(base, Some(&format!("warden_session={session}")))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(upstream.seen().len(), before + 1);

    let mut expired = sessions.open_cookie(&session).unwrap();
    expired.ends = 1;
    let mut unknown = expired.clone();
    unknown.ends = u64::MAX / 2;
    unknown.id = "no-such-session".to_owned();
    for (what, value, says) in [
        ("tampered", flip(&session), "not valid"),
        ("expired", sessions.seal_cookie(&expired), "expired"),
        ("unknown", sessions.seal_cookie(&unknown), "ended"),
    ] {
        let answer = xhr(base, Some(&format!("warden_session={value}"))).await;
        assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{what}");
        let problem: serde_json::Value = answer.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_session", "{what}");
        assert!(
            problem["detail"].as_str().unwrap().contains(says),
            "{what}: {problem}"
        );
        // A navigation with the same cookie is sent to sign in again.
        let nav = plain()
            .get(format!("{base}/app"))
            .header("accept", PAGE)
            .header("cookie", format!("warden_session={value}"))
            .send()
            .await
            .unwrap();
        assert_eq!(nav.status(), StatusCode::FOUND, "{what}");
    }
    assert_eq!(
        upstream.seen().len(),
        before + 1,
        "nothing refused reached the upstream"
    );
    warden.gateway.shutdown().await;
}

/// The value with one character of its sealed part changed.
fn flip(value: &str) -> String {
    let mut bytes = value.as_bytes().to_vec();
    let i = bytes.len() / 2;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_about_to_expire_are_refreshed_once_per_session() {
    let upstream = Upstream::start().await;
    let port = free_port();
    // Tokens of 60 s, refreshed from 10 minutes before they expire: always due.
    let provider = provider_for(&[port], None, 60, "client_secret_basic");
    let dir = scratch("refresh");
    let warden = instance(
        &dir,
        "a",
        &provider,
        port,
        &upstream,
        "refresh_before = \"10m\"",
    )
    .await;
    let base = &warden.base;
    let jar = Arc::new(Jar::default());
    let landed = login(&browser(&jar, false), base, "alice", &provider).await;
    // The landing request itself refreshed the brand-new tokens once.
    assert_eq!(landed.status(), StatusCode::OK);
    let session = cookie(&jar, base, "warden_session").unwrap();
    let with = format!("warden_session={session}");
    provider.wait_count("grant refresh_token", 1).await;
    let refreshes = provider.count("grant refresh_token");
    assert_eq!(refreshes, 1, "{:?}", provider.log.lock().unwrap());

    // Concurrent requests of one session: one refresh at a time, each with the newest
    // refresh token (a rotated token used twice would make the provider revoke the grant).
    let answers = futures_join(&with, base).await;
    assert!(answers.iter().all(|s| *s == StatusCode::OK), "{answers:?}");
    assert!(
        provider.count("grant error") == 0,
        "{:?}",
        provider.log.lock().unwrap()
    );
    provider
        .wait_count("grant refresh_token", refreshes + 1)
        .await;

    // An ended session is refused without a refresh.
    let record_before = provider.count("grant refresh_token");
    let out = plain()
        .get(format!("{base}/oauth2/logout"))
        .header("cookie", &with)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    let answer = xhr(base, Some(&with)).await;
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        provider.count("grant refresh_token"),
        record_before,
        "no refresh for an ended session"
    );
    warden.gateway.shutdown().await;
}

async fn futures_join(cookie: &str, base: &str) -> Vec<StatusCode> {
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (cookie, base) = (cookie.to_owned(), base.to_owned());
        tasks.push(tokio::spawn(async move {
            xhr(&base, Some(&cookie)).await.status()
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// The `[state]` of instances sharing the test Redis under `prefix`.
fn shared_state(prefix: &str) -> String {
    format!(
        "\n[state]\nbackend = \"redis\"\nredis_url = \"redis://{SHARED}\"\nkey_prefix = \"{prefix}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_sharing_redis_refresh_a_session_once_between_them() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    // Tokens of 40 s, refreshed from 35 s before they expire: due 5 s after they are issued,
    // and not again for 5 s after a refresh.
    let provider = provider_for(&[port_a, port_b], None, 40, "client_secret_basic");
    let dir = scratch("refresh-two-instances");
    let extra = format!("refresh_before = \"35s\"\n{}", shared_state(&prefix));
    let a = instance(&dir, "a", &provider, port_a, &upstream, &extra).await;
    let b = instance(&dir, "b", &provider, port_b, &upstream, &extra).await;
    let jar = Arc::new(Jar::default());
    let landed = login(&browser(&jar, false), &a.base, "alice", &provider).await;
    assert_eq!(landed.status(), StatusCode::OK);
    assert_eq!(provider.count("grant refresh_token"), 0, "fresh tokens");
    let with = format!(
        "warden_session={}",
        cookie(&jar, &a.base, "warden_session").unwrap()
    );
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Now due: requests on both instances at once. One of them refreshes; every other one,
    // on either instance, takes its result (the provider rotates refresh tokens, and one
    // used twice would be a grant error that revokes the grant).
    let mut tasks = Vec::new();
    for base in [&a.base, &b.base, &a.base, &b.base, &a.base, &b.base] {
        let (base, with) = (base.clone(), with.clone());
        tasks.push(tokio::spawn(async move {
            xhr(&base, Some(&with)).await.status()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), StatusCode::OK);
    }
    let log = || provider.log.lock().unwrap().clone();
    assert_eq!(provider.count("grant refresh_token"), 1, "{:?}", log());
    assert_eq!(provider.count("grant error"), 0, "{:?}", log());
    // The refreshed session serves on both.
    assert_eq!(xhr(&b.base, Some(&with)).await.status(), StatusCode::OK);
    assert_eq!(xhr(&a.base, Some(&with)).await.status(), StatusCode::OK);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_ends_the_session_on_every_instance_sharing_redis() {
    require_shared();
    let prefix = unique_prefix();
    let _cleanup = Cleanup(prefix.clone());
    let upstream = Upstream::start().await;
    let (port_a, port_b) = (free_port(), free_port());
    let provider = provider_for(&[port_a, port_b], Some(port_b), 600, "client_secret_basic");
    let dir = scratch("two-instances");
    let state = shared_state(&prefix);
    let a = instance(&dir, "a", &provider, port_a, &upstream, &state).await;
    let b = instance(&dir, "b", &provider, port_b, &upstream, &state).await;

    // RP-initiated logout on A ends the session on B.
    let jar = Arc::new(Jar::default());
    let client = browser(&jar, false);
    assert_eq!(
        login(&client, &a.base, "alice", &provider).await.status(),
        StatusCode::OK
    );
    let with = format!(
        "warden_session={}",
        cookie(&jar, &a.base, "warden_session").unwrap()
    );
    assert_eq!(
        xhr(&b.base, Some(&with)).await.status(),
        StatusCode::OK,
        "one session, two instances"
    );
    let out = plain()
        .get(format!("{}/oauth2/logout", a.base))
        .header("cookie", &with)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::FOUND);
    assert_eq!(
        xhr(&b.base, Some(&with)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        xhr(&a.base, Some(&with)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Back-channel logout: the user signs out at the provider; it calls B, and the session
    // made on A ends there too.
    let jar = Arc::new(Jar::default());
    let client = browser(&jar, false);
    assert_eq!(
        login(&client, &a.base, "alice", &provider).await.status(),
        StatusCode::OK
    );
    let with = format!(
        "warden_session={}",
        cookie(&jar, &a.base, "warden_session").unwrap()
    );
    assert_eq!(xhr(&a.base, Some(&with)).await.status(), StatusCode::OK);
    let end = client
        .get(format!("{}/session/end", provider.issuer()))
        .send()
        .await
        .unwrap();
    let html = end.text().await.unwrap();
    let (action, mut fields) = form(&html).unwrap_or_else(|| panic!("no logout form in {html}"));
    fields.push(("logout".to_owned(), "yes".to_owned()));
    let done = client.post(&action).form(&fields).send().await.unwrap();
    assert!(done.status().is_success(), "{}", done.status());
    provider.wait_for("backchannel").await;
    assert_eq!(
        provider.count("backchannel error"),
        0,
        "{:?}",
        provider.log.lock().unwrap()
    );
    assert_eq!(
        xhr(&a.base, Some(&with)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        xhr(&b.base, Some(&with)).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // A forged logout token is refused and ends nothing.
    let answer = plain()
        .post(format!("{}/oauth2/backchannel-logout", b.base))
        .form(&[("logout_token", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.")])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::BAD_REQUEST);
    a.gateway.shutdown().await;
    b.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_signs_in_and_lands_on_the_protected_page() {
    let upstream = Upstream::start().await;
    let port = free_port();
    let provider = provider_for(&[port], None, 600, "client_secret_basic");
    let dir = scratch("chromium");
    let warden = instance(&dir, "a", &provider, port, &upstream, "").await;
    let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: .ci/run installs it");
    let png = dir.join("landed.png");
    let script = node_dir().join(format!("browse-{port}.mjs"));
    std::fs::write(
        &script,
        format!(
            r#"
import {{ chromium }} from 'playwright-core';
const browser = await chromium.launch({{
  executablePath: '{chromium}',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--no-first-run'],
}});
const page = await (await browser.newContext()).newPage();
await page.goto('{base}/app');
await page.fill('input[name=login]', 'alice');
await page.fill('input[name=password]', 'any');
await page.click('button[type=submit]');
await page.waitForSelector('input[name=prompt][value=consent]', {{ state: 'attached' }});
await page.click('button[type=submit]');
await page.waitForURL('{base}/app');
console.log('landed ' + page.url());
console.log('body ' + (await page.textContent('body')));
await page.screenshot({{ path: '{png}' }});
await browser.close();
"#,
            base = warden.base,
            png = png.display(),
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("node")
        .arg(&script)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the browser did not finish in 180 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("landed {}/app", warden.base)),
        "{stdout}"
    );
    assert!(stdout.contains("\"upstream\":true"), "{stdout}");
    assert_eq!(upstream.last().headers["x-warden-subject"], "alice");
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    println!("screenshot kept at {}", png.display());
    warden.gateway.shutdown().await;
}
