//! The live view of decisions: what the dashboard shows and what alert rules watch.
//!
//! The request's thread does as little as the decision log's: an allowed decision without
//! WAF findings is one relaxed atomic add; a refusal (or a detection) is copied into a small
//! [`Event`] and offered to a bounded channel (`try_send`, never a wait: when the channel is
//! full the event is dropped and counted in `warden_live_events_dropped_total`). One thread,
//! `warden-live`, takes the events, feeds the alert rules ([`alerts`]) and adds them to the
//! [`Window`] the dashboard reads (the last 10 minutes, at most 20,000 refusals, plus totals
//! since start). Dashboards and the event streams lock the window when they render a
//! snapshot, never the request path.

pub mod alerts;
pub mod filter;
pub mod notify;
mod window;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, Method};
use prometheus::{IntCounter, IntCounterVec, Opts};
use tokio::sync::watch;
use warden_core::config::AlertSettings;
use warden_core::{Decision, DecisionId, Reason};

pub use self::filter::{Filter, FilterError};
pub(crate) use self::window::Window;
use crate::decision_log::RequestFacts;
use crate::metrics::Metrics;

/// How many events the live thread may fall behind before events are dropped.
const CHANNEL_CAPACITY: usize = 65_536;
/// How often the live thread wakes without events (expiry, alert bookkeeping).
const TICK: Duration = Duration::from_millis(500);
/// The longest request target kept (a longer one is cut, and its request not replayed).
const MAX_TARGET: usize = 4096;

/// The request as the engine saw it, kept for the latest refusals so that the dashboard can
/// show `warden explain`'s text for them.
#[derive(Debug, Clone)]
pub(crate) struct Replay {
    /// The connection's peer (the engine derives the client from it and the headers).
    pub peer: IpAddr,
    /// The request headers, credentials included: kept in memory only, never rendered.
    pub headers: HeaderMap,
    /// The connection's client certificate chain (empty for none).
    pub client_certificates: Arc<[rustls_pki_types::CertificateDer<'static>]>,
}

/// One refusal or detection, as the live thread receives it.
#[derive(Debug)]
pub(crate) struct Event {
    pub id: DecisionId,
    pub at: SystemTime,
    pub status: u16,
    pub refused: bool,
    pub stage: &'static str,
    pub reason: &'static str,
    pub route: Option<Arc<str>>,
    pub subject: Option<Box<str>>,
    pub client: IpAddr,
    pub method: Method,
    pub target: Box<str>,
    /// WAF findings: the rule and whether it refused the request.
    pub waf: Vec<(Arc<str>, bool)>,
    pub replay: Option<Box<Replay>>,
}

/// The live view's own metrics, registered in the gateway's registry.
#[derive(Debug, Clone)]
pub struct LiveMetrics {
    /// Events the live thread could not take (it fell behind).
    pub events_dropped: IntCounter,
    /// Snapshots not sent to a dashboard that was not reading, and dashboards dropped.
    pub dashboard_lag: IntCounterVec,
    /// Alerts fired by rule.
    pub alerts: IntCounterVec,
    /// Alert deliveries by target (`webhook`, `syslog`) and result (`ok`, `retry`, `failed`).
    pub deliveries: IntCounterVec,
    /// Alerts dropped because a target's queue was full.
    pub alerts_dropped: IntCounterVec,
}

impl LiveMetrics {
    /// Register the live view's metrics in `metrics`' registry.
    ///
    /// # Errors
    /// Only if a name is registered twice (a programming error caught by tests).
    pub fn register(metrics: &Metrics) -> Result<Self, prometheus::Error> {
        let events_dropped = IntCounter::new(
            "warden_live_events_dropped_total",
            "Decisions the dashboard and the alert rules did not see (their thread fell behind)",
        )?;
        let dashboard_lag = IntCounterVec::new(
            Opts::new(
                "warden_dashboard_lag_total",
                "Dashboard snapshots skipped for a subscriber that was not reading, and subscribers dropped",
            ),
            &["event"],
        )?;
        let alerts = IntCounterVec::new(
            Opts::new("warden_alerts_total", "Alerts fired, by rule"),
            &["rule"],
        )?;
        let deliveries = IntCounterVec::new(
            Opts::new(
                "warden_alert_deliveries_total",
                "Alert deliveries by target and result",
            ),
            &["target", "result"],
        )?;
        let alerts_dropped = IntCounterVec::new(
            Opts::new(
                "warden_alerts_dropped_total",
                "Alerts dropped because a target's queue was full",
            ),
            &["target"],
        )?;
        metrics.register(Box::new(events_dropped.clone()))?;
        metrics.register(Box::new(dashboard_lag.clone()))?;
        metrics.register(Box::new(alerts.clone()))?;
        metrics.register(Box::new(deliveries.clone()))?;
        metrics.register(Box::new(alerts_dropped.clone()))?;
        Ok(Self {
            events_dropped,
            dashboard_lag,
            alerts,
            deliveries,
            alerts_dropped,
        })
    }
}

/// A handle to the live view; cheap to clone.
#[derive(Debug, Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    sender: SyncSender<Event>,
    /// Allowed decisions without findings, counted on the request path.
    allowed: AtomicU64,
    window: Arc<Mutex<Window>>,
    changes: watch::Receiver<u64>,
    metrics: LiveMetrics,
}

impl Live {
    /// Start the live thread. Alerts fired by `settings`' rules go to `outbox` (see
    /// [`notify::start`]); with no rules, none fire.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn start(
        metrics: LiveMetrics,
        settings: &AlertSettings,
        outbox: notify::Outbox,
    ) -> std::io::Result<Self> {
        let (sender, receiver) = mpsc::sync_channel::<Event>(CHANNEL_CAPACITY);
        let window = Arc::new(Mutex::new(Window::new(SystemTime::now())));
        let (changed, changes) = watch::channel(0_u64);
        let mut rules = alerts::Rules::new(&settings.rules);
        let thread_window = Arc::clone(&window);
        let thread_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("warden-live".to_owned())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    match receiver.recv_timeout(TICK) {
                        Ok(event) => {
                            batch.push(event);
                            while batch.len() < 4096 {
                                match receiver.try_recv() {
                                    Ok(event) => batch.push(event),
                                    Err(_) => break,
                                }
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    let now = Instant::now();
                    for event in &batch {
                        for alert in rules.observe(event, now) {
                            thread_metrics
                                .alerts
                                .with_label_values(&[alert.rule.as_ref()])
                                .inc();
                            outbox.send(&alert, &thread_metrics);
                        }
                    }
                    rules.sweep(now);
                    let had_events = !batch.is_empty();
                    if let Ok(mut window) = thread_window.lock() {
                        for event in batch.drain(..) {
                            window.push(event);
                        }
                        window.expire(SystemTime::now());
                    }
                    batch.clear();
                    if had_events {
                        changed.send_modify(|v| *v = v.wrapping_add(1));
                    }
                }
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                sender,
                allowed: AtomicU64::new(0),
                window,
                changes,
                metrics,
            }),
        })
    }

    /// Take one decision: called once per decision by `gateway/outcome.rs`.
    pub fn record(&self, decision: &Decision, facts: RequestFacts<'_>, status: u16) {
        let refused = !decision.is_allowed();
        if !refused && decision.detections.is_empty() {
            self.inner.allowed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let mut waf: Vec<(Arc<str>, bool)> = decision
            .detections
            .iter()
            .map(|d| (Arc::clone(&d.rule), false))
            .collect();
        if let Some(Reason::WafBlocked(found)) = decision.reason() {
            waf.push((Arc::clone(&found.rule), true));
        }
        let long = facts.target.len() > MAX_TARGET;
        let target: Box<str> = if long {
            facts.target.chars().take(MAX_TARGET).collect()
        } else {
            facts.target.into()
        };
        let replay = match facts.headers {
            Some(headers) if refused && !long => Some(Box::new(Replay {
                peer: facts.peer,
                headers: headers.clone(),
                client_certificates: Arc::from(facts.client_certificates),
            })),
            _ => None,
        };
        let event = Event {
            id: decision.id,
            at: facts.at,
            status,
            refused,
            stage: decision.stage.as_str(),
            reason: decision.reason().map_or("", Reason::code),
            route: decision.route.clone(),
            subject: decision.identity().map(|i| i.subject.as_str().into()),
            client: facts.client,
            method: facts.method.clone(),
            target,
            waf,
            replay,
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.inner.sender.try_send(event)
        {
            self.inner.metrics.events_dropped.inc();
        }
    }

    /// Allowed decisions (without WAF findings) since start.
    #[must_use]
    pub fn allowed(&self) -> u64 {
        self.inner.allowed.load(Ordering::Relaxed)
    }

    /// The dashboard's data for `filter`, as JSON.
    #[must_use]
    pub fn snapshot(&self, filter: &Filter) -> serde_json::Value {
        let allowed = self.allowed();
        let dropped = self.inner.metrics.events_dropped.get();
        match self.inner.window.lock() {
            Ok(window) => window.snapshot(filter, SystemTime::now(), allowed, dropped),
            Err(_) => serde_json::Value::Null,
        }
    }

    /// A receiver that changes whenever new events reached the window.
    #[must_use]
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.clone()
    }

    /// The live view's metrics.
    #[must_use]
    pub fn metrics(&self) -> &LiveMetrics {
        &self.inner.metrics
    }

    /// The kept request of a recent refusal, with what was recorded of it.
    pub(crate) fn replay(&self, id: &str) -> Option<window::Kept> {
        self.inner.window.lock().ok()?.kept(id)
    }
}
