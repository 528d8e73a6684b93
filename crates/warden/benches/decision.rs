//! A full decision of the decision core for the demo configuration, with a cached token:
//! normalize, client address, route, authenticate (a cache hit), roles, forward headers.
//!
//! Also what the live view (dashboard, alerts) adds per decision (`live_record`).
//!
//! `cargo bench -p warden --bench decision -- --warm-up-time 1 --measurement-time 3`
//! (results and the machine they were taken on: `BENCHMARKS.md`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};
use warden_core::limit::memory::MemoryState;
use warden_core::{Answer, Engine, Need, Progress, RequestView};

fn demo_engine() -> Engine {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    Engine::new(warden::demo::config(upstream).unwrap())
}

/// The headers of a typical API call with the demo's admin token.
fn headers() -> HeaderMap {
    let token = warden::demo::token("ada", &["admin"], Duration::from_secs(3600)).unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn decision(c: &mut Criterion) {
    let engine = demo_engine();
    let headers = headers();
    let view = RequestView::new(&Method::GET, "/docs/7", &headers, [127, 0, 0, 1].into());
    let now = SystemTime::now();
    // The first decision verifies the token and fills the cache.
    assert!(engine.decide(&view, now).is_allowed());

    let mut group = c.benchmark_group("decision_demo_cached_token");
    group.bench_function("decide", |b| {
        b.iter(|| engine.decide(black_box(&view), now));
    });
    // As the gateway drives it: the revocation check answered by the in-memory store.
    let state = MemoryState::new(100_000);
    group.bench_function("begin_resume_memory_state", |b| {
        b.iter(|| {
            let mut progress = engine.begin(black_box(&view), now);
            loop {
                match progress {
                    Progress::Decided(decision) => break decision,
                    Progress::Needs(pending) => {
                        let Need::State(checks) = pending.need() else {
                            panic!("a request without a body or a password needs only state");
                        };
                        let answers = state.answer(checks, now);
                        progress = engine.resume(&view, pending, Answer::State(Ok(answers)));
                    }
                }
            }
        });
    });
    group.finish();
}

/// What `gateway/outcome.rs` adds per decision for the live view (dashboard and alerts):
/// an allowed decision, and a refusal whose request is kept for its explanation.
fn live_record(c: &mut Criterion) {
    let engine = demo_engine();
    let headers = headers();
    let now = SystemTime::now();
    let allowed = engine.decide(
        &RequestView::new(&Method::GET, "/docs/7", &headers, [127, 0, 0, 1].into()),
        now,
    );
    assert!(allowed.is_allowed());
    let mut anonymous = headers.clone();
    anonymous.remove(header::AUTHORIZATION);
    let refused = engine.decide(
        &RequestView::new(&Method::GET, "/docs/7", &anonymous, [127, 0, 0, 1].into()),
        now,
    );
    assert!(!refused.is_allowed());
    let metrics = warden::metrics::Metrics::new().unwrap();
    let live = warden::live::Live::start(
        warden::live::LiveMetrics::register(&metrics).unwrap(),
        &warden_core::config::AlertSettings::default(),
        warden::live::notify::Outbox::none(),
    )
    .unwrap();
    let facts = |headers| warden::decision_log::RequestFacts {
        client: [127, 0, 0, 1].into(),
        peer: [127, 0, 0, 1].into(),
        headers,
        method: &Method::GET,
        target: "/docs/7",
        at: now,
        client_certificates: &[],
    };
    let mut group = c.benchmark_group("live_record");
    group.bench_function("allowed", |b| {
        b.iter(|| live.record(black_box(&allowed), facts(None), 200));
    });
    group.bench_function("refused_with_request_kept", |b| {
        b.iter(|| live.record(black_box(&refused), facts(Some(&anonymous)), 401));
    });
    group.finish();
}

criterion_group!(benches, decision, live_record);
criterion_main!(benches);
