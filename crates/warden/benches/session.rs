//! A request with a valid session cookie against the same request with a cached bearer
//! token, both driven as the gateway drives them: `warden_core::drive` with a host whose
//! state checks come from the in-memory store and whose session lookups come from the
//! gateway's in-memory session store. The session's extra work is opening the sealed cookie
//! (AES-GCM), the lookup, and opening the sealed record.
//!
//! `cargo bench -p warden --bench session -- --warm-up-time 1 --measurement-time 3`
//! (results: `BENCHMARKS.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};
use warden::state::sessions::SessionStore;
use warden_core::limit::BanPolicy;
use warden_core::limit::memory::MemoryState;
use warden_core::session::{SessionAnswer, SessionCookie, SessionLookup, SessionRecord};
use warden_core::{
    BodyRead, Config, Engine, Host, RequestView, StateAnswer, StateCheck, StateUnavailable,
};
use warden_testkit::Token;

struct BenchHost<'a> {
    state: &'a MemoryState,
    sessions: &'a SessionStore,
}

impl Host for BenchHost<'_> {
    async fn read_body(&mut self, _limit: usize) -> BodyRead {
        BodyRead::Complete(bytes::Bytes::new())
    }
    async fn answer_state(
        &mut self,
        checks: &[StateCheck],
    ) -> Result<Vec<StateAnswer>, StateUnavailable> {
        Ok(self.state.answer(checks, SystemTime::now()))
    }
    async fn lookup_session(&mut self, lookup: &SessionLookup) -> SessionAnswer {
        match self
            .sessions
            .get(&lookup.id, lookup.idle, lookup.ends)
            .await
        {
            Ok(Some(sealed)) => SessionAnswer::Found(sealed),
            Ok(None) => SessionAnswer::Missing,
            Err(_) => SessionAnswer::Unavailable,
        }
    }
    async fn record_refusal(&mut self, _client: IpAddr, _policy: &BanPolicy) {}
}

fn engine(dir: &std::path::Path) -> Engine {
    std::fs::write(
        dir.join("session.key"),
        "a-session-key-of-at-least-32-bytes-long",
    )
    .unwrap();
    std::fs::write(dir.join("client.secret"), "client-secret").unwrap();
    let keys = warden_testkit::keys_dir().display().to_string();
    let text = format!(
        r#"
[upstreams.app]
url = "http://127.0.0.1:9"
[sessions]
keys = [{{ secret_file = "session.key" }}]
[sources.jwt]
type = "jwt"
algorithms = ["RS256"]
keys = [{{ pem_file = "{keys}/rsa.pub.pem" }}]
[sources.idp]
type = "oidc"
issuer = "https://idp.example"
client_id = "warden"
client_secret_file = "client.secret"
redirect_uri = "https://app.example/oauth2/callback"
[[routes]]
path = "/api/{{id}}"
upstream = "app"
auth = ["jwt"]
roles = ["viewer"]
[[routes]]
path = "/app/{{id}}"
upstream = "app"
auth = ["idp"]
roles = ["viewer"]
"#
    );
    Engine::new(Config::parse(&text, &dir.join("warden.toml")).unwrap())
}

fn base_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("app.example"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("Mozilla/5.0"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers
}

fn session(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("warden-bench-session-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let engine = engine(&dir);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let state = MemoryState::new(100_000);
    let store = SessionStore::new(&engine.config().state);
    let sessions = engine.config().sessions.clone().unwrap();
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();

    let token = Token::new()
        .sub("ada")
        .roles(["viewer"])
        .exp_in(3600)
        .sign_rs256();
    let mut bearer = base_headers();
    bearer.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );

    let record = SessionRecord {
        subject: "ada".to_owned(),
        roles: vec!["viewer".to_owned()],
        scopes: vec![],
        attributes: Default::default(),
        expires: secs + 3600,
        refresh_token: Some("a-refresh-token-of-the-usual-length-0123456789".to_owned()),
        id_token: Some(token.clone()),
        sid: Some("provider-session".to_owned()),
    };
    let id = warden_core::session::random_token(32);
    runtime
        .block_on(store.create(
            &id,
            &sessions.seal_record(&id, &record),
            Duration::from_secs(1800),
            Duration::from_secs(43_200),
            &[],
        ))
        .unwrap();
    let cookie = SessionCookie {
        id,
        source: "idp".to_owned(),
        created: secs,
        ends: secs + 43_200,
    };
    let mut browser = base_headers();
    browser.insert(
        header::COOKIE,
        HeaderValue::from_str(&format!(
            "{}={}",
            sessions.cookie,
            sessions.seal_cookie(&cookie)
        ))
        .unwrap(),
    );

    let api = RequestView::new(&Method::GET, "/api/7", &bearer, [127, 0, 0, 1].into());
    let app = RequestView::new(&Method::GET, "/app/7", &browser, [127, 0, 0, 1].into());
    let mut host = BenchHost {
        state: &state,
        sessions: &store,
    };
    for view in [&api, &app] {
        let decision = runtime.block_on(warden_core::drive(&engine, view, now, &mut host));
        assert!(decision.is_allowed(), "{decision:?}");
    }

    let mut group = c.benchmark_group("session_vs_cached_bearer");
    group.bench_function("cached_bearer_token", |b| {
        b.iter(|| runtime.block_on(warden_core::drive(&engine, black_box(&api), now, &mut host)));
    });
    group.bench_function("session_cookie", |b| {
        b.iter(|| runtime.block_on(warden_core::drive(&engine, black_box(&app), now, &mut host)));
    });
    group.finish();
}

criterion_group!(benches, session);
criterion_main!(benches);
