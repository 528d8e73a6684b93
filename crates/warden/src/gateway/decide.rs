//! Driving the engine for one request: start the decision, answer the state checks it asks
//! for from the store, resume, until it decides. Decisions that verify passwords run on the
//! blocking pool: argon2 and bcrypt are slow by design and must not stall the I/O threads.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderMap, Method};
use warden_core::request::BodyView;
use warden_core::{Decision, Engine, Progress, RequestView};

use super::Shared;

/// The parts of a request the engine reads, owned, for a decision on another thread.
struct Owned {
    method: Method,
    target: String,
    headers: HeaderMap,
    peer: IpAddr,
    body: OwnedBody,
}

/// The body as the view held it.
enum OwnedBody {
    NotRead,
    Complete(bytes::Bytes),
    TooLarge,
}

impl Owned {
    fn from_view(view: &RequestView<'_>) -> Self {
        Self {
            method: view.method.clone(),
            target: view.target.to_owned(),
            headers: view.headers.clone(),
            peer: view.peer,
            body: match view.body {
                BodyView::NotRead => OwnedBody::NotRead,
                BodyView::Complete(bytes) => {
                    OwnedBody::Complete(bytes::Bytes::copy_from_slice(bytes))
                }
                BodyView::TooLarge => OwnedBody::TooLarge,
            },
        }
    }

    fn view(&self) -> RequestView<'_> {
        let body = match &self.body {
            OwnedBody::NotRead => BodyView::NotRead,
            OwnedBody::Complete(bytes) => BodyView::Complete(bytes),
            OwnedBody::TooLarge => BodyView::TooLarge,
        };
        RequestView::new(&self.method, &self.target, &self.headers, self.peer).with_body(body)
    }
}

/// Decide a request, answering the engine's state checks from the gateway's store.
pub(crate) async fn decide(
    shared: &Shared,
    engine: &Arc<Engine>,
    view: &RequestView<'_>,
    at: SystemTime,
) -> Decision {
    let blocking = presents_basic(view.headers);
    let mut progress = call(engine, view, blocking, move |e, v| e.begin(v, at)).await;
    loop {
        match progress {
            Progress::Decided(decision) => return decision,
            Progress::NeedsState(pending) => {
                let store = shared.store.load_full();
                let answers = store.answer(pending.checks()).await;
                if let Err(e) = &answers {
                    shared.metrics.state_unavailable.inc();
                    warn_throttled(&format!("{e}; the configured fail mode decides"));
                }
                progress = call(engine, view, blocking, move |e, v| {
                    e.resume(v, pending, answers)
                })
                .await;
            }
        }
    }
}

async fn call<F>(engine: &Arc<Engine>, view: &RequestView<'_>, blocking: bool, f: F) -> Progress
where
    F: FnOnce(&Engine, &RequestView<'_>) -> Progress + Send + 'static,
{
    if !blocking {
        return f(engine, view);
    }
    let owned = Owned::from_view(view);
    let engine_for_task = Arc::clone(engine);
    match tokio::task::spawn_blocking(move || f(&engine_for_task, &owned.view())).await {
        Ok(progress) => progress,
        // The blocking pool is gone only while the runtime shuts down: refuse, never skip.
        Err(_) => Progress::Decided(engine.unavailable(view, SystemTime::now())),
    }
}

/// Whether the request carries HTTP Basic credentials.
fn presents_basic(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::AUTHORIZATION)
        .iter()
        .any(|v| {
            v.as_bytes()
                .get(..6)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"basic "))
        })
}

/// A warning at most once a second: an outage must not flood the log.
fn warn_throttled(message: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST.swap(now, Ordering::Relaxed) != now {
        tracing::warn!("{message}");
    }
}
