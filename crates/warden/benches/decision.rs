//! A full decision of the decision core for the demo configuration, with a cached token:
//! normalize, client address, route, authenticate (a cache hit), roles, forward headers.
//!
//! Also what the live view (dashboard, alerts) adds per decision (`live_record`), and how
//! decisions scale over threads sharing one engine and one in-memory state (`scaling`).
//!
//! `cargo bench -p warden --bench decision -- --warm-up-time 1 --measurement-time 3`
//! (results and the machine they were taken on: `BENCHMARKS.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};
use warden_core::limit::memory::MemoryState;
use warden_core::{Answer, Config, Decision, Engine, Need, Progress, RequestView};

fn demo_engine() -> Engine {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    Engine::new(warden::demo::config(upstream).unwrap())
}

/// The headers of a typical API call with the demo's admin token.
fn headers() -> HeaderMap {
    headers_of("ada")
}

/// The headers of a typical API call with an admin token of `subject`.
fn headers_of(subject: &str) -> HeaderMap {
    let token = warden::demo::token(subject, &["admin"], Duration::from_secs(3600)).unwrap();
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
        b.iter(|| drive(&engine, &state, black_box(&view), now));
    });
    group.finish();
}

/// One decision as the gateway drives it, its state needs answered by `state`.
fn drive(
    engine: &Engine,
    state: &MemoryState,
    view: &RequestView<'_>,
    now: SystemTime,
) -> Decision {
    let mut progress = engine.begin(view, now);
    loop {
        match progress {
            Progress::Decided(decision) => return decision,
            Progress::Needs(pending) => {
                let Need::State(checks) = pending.need() else {
                    panic!("a request without a body or a password needs only state");
                };
                let answers = state.answer(checks, now);
                progress = engine.resume(view, pending, Answer::State(Ok(answers)));
            }
        }
    }
}

/// Decisions on 1 and 2 threads at once, sharing the engine (its token cache, policies and
/// identity caches) and one in-memory state, as the gateway's workers do: the demo
/// configuration with a rate limit per subject added, each decision a cached RS256 token,
/// Cedar and the limit's counter. The figure is the wall time per decision of all threads
/// together: equal at 1 and 2 threads is linear scaling (twice the decisions per second),
/// as long as the machine has a core per thread.
///
/// `one_subject`: every thread sends the same token, so all count on one limit counter (the
/// worst case: one client's requests spread over the workers). `subject_per_thread`: each
/// thread a subject of its own. `state_per_thread`: the engine shared, the in-memory state
/// not. `engine_per_thread`, the control: each thread its own engine and state, nothing
/// shared, so what it shows at 2 threads is what the machine itself allows.
fn scaling(c: &mut Criterion) {
    let upstream = SocketAddr::from(([127, 0, 0, 1], 9));
    let text = warden::demo::config_text(upstream)
        + "\n[[limits]]\nname = \"per-subject\"\nkey = [\"subject\"]\nlimit = 1000000000\nwindow = \"1m\"\n";
    let now = SystemTime::now();
    let subjects = ["ada", "bob"];
    let headers: Vec<HeaderMap> = subjects.iter().map(|s| headers_of(s)).collect();
    // Two engines and two states: the second ones only for the variants that share less.
    let engines: Vec<Engine> = (0..2)
        .map(|_| Engine::new(Config::parse(&text, Path::new("demo-with-limit.toml")).unwrap()))
        .collect();
    let states: Vec<MemoryState> = (0..2).map(|_| MemoryState::new(100_000)).collect();
    for (engine, state) in engines.iter().zip(&states) {
        for h in &headers {
            let view = RequestView::new(&Method::GET, "/docs/7", h, [127, 0, 0, 1].into());
            // Verifies the token once (the cache keeps it) and checks the limit is on.
            let decision = drive(engine, state, &view, now);
            assert!(decision.is_allowed());
            assert!(!decision.limits.is_empty(), "the limit applies");
        }
    }
    let mut group = c.benchmark_group("scaling");
    let variants = [
        ("one_subject", false, false, false),
        ("subject_per_thread", true, false, false),
        ("state_per_thread", true, false, true),
        ("engine_per_thread", true, true, true),
    ];
    for (name, subject_per_thread, engine_per_thread, state_per_thread) in variants {
        for threads in [1_usize, 2] {
            group.bench_function(BenchmarkId::new(name, threads), |b| {
                b.iter_custom(|iters| {
                    let start = Barrier::new(threads + 1);
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let headers = &headers[if subject_per_thread { t } else { 0 }];
                            let engine = &engines[if engine_per_thread { t } else { 0 }];
                            let state = &states[if state_per_thread { t } else { 0 }];
                            let start = &start;
                            scope.spawn(move || {
                                let view = RequestView::new(
                                    &Method::GET,
                                    "/docs/7",
                                    headers,
                                    [127, 0, 0, 1].into(),
                                );
                                start.wait();
                                for _ in 0..iters {
                                    black_box(drive(engine, state, black_box(&view), now));
                                }
                            });
                        }
                        start.wait();
                        let began = Instant::now();
                        // The scope joins every thread before it returns.
                        began
                    })
                    .elapsed()
                        / u32::try_from(threads).unwrap()
                });
            });
        }
    }
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

criterion_group!(benches, decision, live_record, scaling);
criterion_main!(benches);
