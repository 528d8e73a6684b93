//! The live dashboard on the admin listener.
//!
//! - `GET /dashboard`: one self-contained HTML page (its script and style inline, allowed by
//!   their hashes in the `Content-Security-Policy`; nothing loaded from elsewhere). It is
//!   static and open: it holds no data. It takes the admin token from its URL fragment
//!   (`/dashboard#token=…`, never sent to a server, removed from the address bar at once) or
//!   asks for it, and keeps it in memory only.
//! - `GET /dashboard/snapshot?FILTERS`: the data as JSON.
//! - `GET /dashboard/events?FILTERS`: the same, as server-sent events: a `snapshot` event at
//!   once, then whenever refusals arrive (at most every 250 ms) and every 5 s.
//! - `GET /dashboard/explain?id=DECISION`: `warden explain`'s text for a recent refusal.
//!
//! All but the page need the admin token (`gateway/admin.rs` checks it first). Filters are
//! checked by [`crate::live::Filter`]; a bad one is a 400 problem. Each event stream has its
//! own queue of [`SUBSCRIBER_QUEUE`] frames: a subscriber that does not read is skipped
//! (`warden_dashboard_lag_total{event="skipped"}`) and, after [`MAX_SKIPPED`] skipped
//! frames in a row, dropped (`event="dropped"`). Nothing a dashboard does touches requests.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use warden_core::DecisionId;
use warden_core::response::{self, Branding, Problem};

use super::Shared;
use super::body::{Body, full};
use crate::explain::{self, RequestSpec};
use crate::live::Filter;

/// The page, with its script and style inline.
const PAGE: &str = include_str!("dashboard.html");
/// Frames that may wait for one subscriber.
pub(crate) const SUBSCRIBER_QUEUE: usize = 4;
/// Frames skipped in a row before a subscriber is dropped.
pub(crate) const MAX_SKIPPED: u32 = 12;
/// The most event streams open at once.
const MAX_SUBSCRIBERS: usize = 64;
/// The shortest time between two frames of one stream.
const MIN_INTERVAL: Duration = Duration::from_millis(250);
/// A frame is sent at least this often (the chart moves on with time).
const HEARTBEAT: Duration = Duration::from_secs(5);

static SUBSCRIBERS: AtomicUsize = AtomicUsize::new(0);

/// Answer a request under `/dashboard`; the admin token was checked unless it is the page.
pub(crate) async fn handle(
    shared: &Arc<Shared>,
    request: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    let path = request.uri().path();
    if request.method() != http::Method::GET {
        let mut answer = problem(
            shared,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "use GET",
        );
        answer
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET"));
        return answer;
    }
    if path == "/dashboard" {
        return page();
    }
    let query = request.uri().query();
    match path {
        "/dashboard/snapshot" | "/dashboard/events" => {
            let routes: Vec<Arc<str>> = shared
                .engine
                .load()
                .config()
                .routes()
                .iter()
                .map(|r| Arc::clone(&r.name))
                .collect();
            let filter = match Filter::parse(query, &routes) {
                Ok(filter) => filter,
                Err(e) => {
                    tracing::info!(error = %e, path, "dashboard query refused");
                    return problem(
                        shared,
                        StatusCode::BAD_REQUEST,
                        "bad_filter",
                        &e.to_string(),
                    );
                }
            };
            if path == "/dashboard/snapshot" {
                let body = shared.live.snapshot(&filter).to_string();
                data(StatusCode::OK, "application/json", full(body))
            } else {
                events(shared, filter)
            }
        }
        "/dashboard/explain" => explanation(shared, query).await,
        _ => problem(
            shared,
            StatusCode::NOT_FOUND,
            "not_found",
            "no such dashboard endpoint",
        ),
    }
}

/// The page, with a policy that allows only its own inline script and style.
fn page() -> Response<Body> {
    let mut answer = data(StatusCode::OK, "text/html; charset=utf-8", full(PAGE));
    let policy = format!(
        "default-src 'none'; script-src '{}'; style-src '{}'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        inline_hash("<script>", "</script>"),
        inline_hash("<style>", "</style>"),
    );
    if let Ok(v) = HeaderValue::from_str(&policy) {
        answer
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, v);
    }
    answer.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    answer
}

/// `sha256-…` of the page's one element between `open` and `close`.
fn inline_hash(open: &str, close: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let inner = PAGE
        .split_once(open)
        .and_then(|(_, rest)| rest.split_once(close))
        .map_or("", |(inner, _)| inner);
    format!(
        "sha256-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(inner.as_bytes()))
    )
}

/// A data answer: never cached, never sniffed.
fn data(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut answer = Response::new(body);
    *answer.status_mut() = status;
    let headers = answer.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    answer
}

/// A problem document, rendered like every other problem warden sends.
fn problem(shared: &Shared, status: StatusCode, code: &str, detail: &str) -> Response<Body> {
    let engine = shared.engine.load();
    let rendered = response::render_problem(
        DecisionId::new(),
        &Problem {
            status,
            code,
            detail,
        },
        Branding::from(engine.config()),
        false,
    );
    rendered.map(full)
}

/// `GET /dashboard/events`: a stream of snapshots.
fn events(shared: &Arc<Shared>, filter: Filter) -> Response<Body> {
    if SUBSCRIBERS.fetch_add(1, Ordering::AcqRel) >= MAX_SUBSCRIBERS {
        SUBSCRIBERS.fetch_sub(1, Ordering::AcqRel);
        return problem(
            shared,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_dashboards",
            "too many dashboards are open",
        );
    }
    let (tx, rx) = mpsc::channel::<Bytes>(SUBSCRIBER_QUEUE);
    let live = shared.live.clone();
    tokio::spawn(async move {
        struct Leave;
        impl Drop for Leave {
            fn drop(&mut self) {
                SUBSCRIBERS.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _leave = Leave;
        let mut changes = live.changes();
        let mut skipped = 0;
        loop {
            let frame = format!("event: snapshot\ndata: {}\n\n", live.snapshot(&filter));
            match offer(&tx, Bytes::from(frame), &mut skipped) {
                Offer::Sent => {}
                Offer::Skipped => {
                    live.metrics()
                        .dashboard_lag
                        .with_label_values(&["skipped"])
                        .inc();
                }
                Offer::Drop => {
                    live.metrics()
                        .dashboard_lag
                        .with_label_values(&["dropped"])
                        .inc();
                    tracing::info!("dashboard stream dropped: the subscriber is not reading");
                    return;
                }
                Offer::Gone => return,
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(HEARTBEAT) => {}
                () = tx.closed() => return,
            }
            tokio::time::sleep(MIN_INTERVAL).await;
        }
    });
    let mut answer = data(StatusCode::OK, "text/event-stream", EventBody(rx).boxed());
    answer
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    answer
}

/// What became of one frame offered to a subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued.
    Sent,
    /// The queue was full: this frame is skipped (the next one holds everything it held).
    Skipped,
    /// Too many skipped in a row: the subscriber is dropped.
    Drop,
    /// The subscriber went away.
    Gone,
}

/// Offer a frame without waiting; `skipped` counts the frames skipped in a row.
pub(crate) fn offer(tx: &mpsc::Sender<Bytes>, frame: Bytes, skipped: &mut u32) -> Offer {
    match tx.try_send(frame) {
        Ok(()) => {
            *skipped = 0;
            Offer::Sent
        }
        Err(mpsc::error::TrySendError::Full(_)) => {
            *skipped += 1;
            if *skipped >= MAX_SKIPPED {
                Offer::Drop
            } else {
                Offer::Skipped
            }
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Offer::Gone,
    }
}

/// A response body fed by a subscriber's queue. (A dozen lines instead of another crate's
/// stream adapter.)
#[derive(Debug)]
struct EventBody(mpsc::Receiver<Bytes>);

impl http_body::Body for EventBody {
    type Data = Bytes;
    type Error = super::body::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|frame| frame.map(|bytes| Ok(Frame::data(bytes))))
    }
}

/// `GET /dashboard/explain?id=…`: the request of a recent refusal run through `warden
/// explain` against the configuration in force, with what was recorded of it first.
async fn explanation(shared: &Arc<Shared>, query: Option<&str>) -> Response<Body> {
    let id = query
        .and_then(|q| q.strip_prefix("id="))
        .filter(|id| id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    let Some(id) = id else {
        return problem(
            shared,
            StatusCode::BAD_REQUEST,
            "bad_decision_id",
            "give one decision id: /dashboard/explain?id=0190…",
        );
    };
    let Some(kept) = shared.live.replay(&id.to_ascii_lowercase()) else {
        return problem(
            shared,
            StatusCode::NOT_FOUND,
            "decision_not_kept",
            "that decision is not among the recent refusals whose requests are kept",
        );
    };
    let engine = shared.engine.load_full();
    let id = id.to_owned();
    // `explain` checks Basic passwords itself (argon2 is slow by design): off the runtime.
    let text = tokio::task::spawn_blocking(move || {
        let spec = RequestSpec {
            method: kept.method.clone(),
            target: kept.target.clone(),
            headers: kept.replay.headers.clone(),
            peer: kept.replay.peer,
            at: kept.at,
            client_certificates: kept.replay.client_certificates.to_vec(),
        };
        let explanation = explain::explain(&engine, &spec, None);
        format!(
            "decision {id}: {} {} at {} (as recorded)\nreplayed against the configuration in force now, without the request body and without the state backend (limits, bans and revocations are not replayed)\n\n{}",
            kept.status,
            if kept.reason.is_empty() { "-" } else { kept.reason },
            explain::format_time(kept.at),
            explain::render_text(&engine, &spec, &explanation),
        )
    })
    .await;
    match text {
        Ok(text) => data(StatusCode::OK, "text/plain; charset=utf-8", full(text)),
        Err(_) => problem(
            shared,
            StatusCode::INTERNAL_SERVER_ERROR,
            "explain_failed",
            "the explanation could not be made",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_that_does_not_read_is_skipped_then_dropped() {
        let (tx, rx) = mpsc::channel(SUBSCRIBER_QUEUE);
        let mut skipped = 0;
        for _ in 0..SUBSCRIBER_QUEUE {
            assert_eq!(
                offer(&tx, Bytes::from_static(b"x"), &mut skipped),
                Offer::Sent
            );
        }
        for _ in 1..MAX_SKIPPED {
            assert_eq!(
                offer(&tx, Bytes::from_static(b"x"), &mut skipped),
                Offer::Skipped
            );
        }
        assert_eq!(
            offer(&tx, Bytes::from_static(b"x"), &mut skipped),
            Offer::Drop
        );
        drop(rx);
        let mut skipped = 0;
        assert_eq!(
            offer(&tx, Bytes::from_static(b"x"), &mut skipped),
            Offer::Gone
        );
    }

    #[test]
    fn the_page_is_self_contained() {
        assert!(!PAGE.contains("src=\"http") && !PAGE.contains("href=\"http"));
        assert_eq!(PAGE.matches("<script>").count(), 1);
        assert_eq!(PAGE.matches("<style>").count(), 1);
        assert!(inline_hash("<script>", "</script>").len() > 50);
    }
}
