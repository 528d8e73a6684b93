//! The decision log: one JSON line per decision, written off the request path.
//!
//! Lines go through a bounded channel to a writer thread. When the writer falls behind,
//! lines are dropped and counted (`warden_decision_log_dropped_total`) rather than making
//! requests wait. The last lines are also kept in memory for the admin listener.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use http::Method;
use serde_json::json;
use warden_core::Decision;
use warden_core::config::LogTarget;

use crate::metrics::Metrics;

/// How many lines the writer may fall behind before lines are dropped.
const CHANNEL_CAPACITY: usize = 65_536;
/// How many recent lines the admin listener can show.
const RECENT: usize = 256;

/// The facts of one request that the decision itself does not hold.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The client address.
    pub client: IpAddr,
    /// The method.
    pub method: &'a Method,
    /// The request target as received (truncated in the log).
    pub target: &'a str,
    /// When the request arrived.
    pub at: SystemTime,
}

/// A handle to the decision log; cheap to clone.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: Option<SyncSender<String>>,
    log_allowed: bool,
    recent: Arc<Mutex<VecDeque<String>>>,
    metrics: Arc<Metrics>,
}

impl DecisionLog {
    /// Start the writer for a target.
    ///
    /// # Errors
    /// When the log file cannot be opened.
    pub fn start(
        target: &LogTarget,
        log_allowed: bool,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let sink: Option<Box<dyn Write + Send>> = match target {
            LogTarget::Off => None,
            LogTarget::Stdout => Some(Box::new(std::io::stdout())),
            LogTarget::File(path) => Some(Box::new(
                OpenOptions::new().create(true).append(true).open(path)?,
            )),
        };
        let sender = sink.map(|sink| {
            let (tx, rx) = mpsc::sync_channel::<String>(CHANNEL_CAPACITY);
            std::thread::Builder::new()
                .name("warden-decision-log".to_owned())
                .spawn(move || {
                    let mut out = BufWriter::new(sink);
                    while let Ok(line) = rx.recv() {
                        let _ = out.write_all(line.as_bytes());
                        let _ = out.write_all(b"\n");
                        // Flush whenever the queue is drained, so lines appear promptly.
                        while let Ok(line) = rx.try_recv() {
                            let _ = out.write_all(line.as_bytes());
                            let _ = out.write_all(b"\n");
                        }
                        let _ = out.flush();
                    }
                })
                .map(|_| tx)
        });
        let sender = match sender {
            Some(Ok(tx)) => Some(tx),
            Some(Err(e)) => return Err(e),
            None => None,
        };
        Ok(Self {
            sender,
            log_allowed,
            recent: Arc::new(Mutex::new(VecDeque::with_capacity(RECENT))),
            metrics,
        })
    }

    /// Record a decision and the final status sent to the client.
    pub fn record(&self, decision: &Decision, facts: RequestFacts<'_>, status: u16) {
        // A shadow disagreement is always worth a line, even on an allowed request.
        // With the log off, allowed requests are not even rendered (the line is most of the
        // cost of an allowed request); refusals still feed `/decisions/recent`.
        if decision.is_allowed()
            && (!self.log_allowed || self.sender.is_none())
            && decision.shadow.is_none()
            && decision.detections.is_empty()
        {
            return;
        }
        let line = line(decision, facts, status).to_string();
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(line.clone());
        }
        if let Some(sender) = &self.sender {
            match sender.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.metrics.decision_log_dropped.inc()
                }
            }
        }
    }

    /// The most recent lines, oldest first.
    #[must_use]
    pub fn recent(&self) -> Vec<String> {
        self.recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn line(decision: &Decision, facts: RequestFacts<'_>, status: u16) -> serde_json::Value {
    let identity = decision.identity();
    let target: String = facts.target.chars().take(512).collect();
    json!({
        "decision_id": decision.id.to_string(),
        "time": humantime::format_rfc3339_micros(facts.at).to_string(),
        "client": facts.client.to_string(),
        "method": facts.method.as_str(),
        "path": target,
        "route": decision.route.as_deref(),
        "subject": identity.map(|i| i.subject.as_str()),
        "source": identity.map(|i| i.source.as_ref()),
        "stage": decision.stage.as_str(),
        "outcome": if decision.is_allowed() { "allow" } else { "deny" },
        "status": status,
        "reason": decision.reason().map(warden_core::Reason::code),
        "detail": decision.reason().map(warden_core::Reason::log_detail),
        "duration_us": u64::try_from(decision.elapsed.as_micros()).unwrap_or(u64::MAX),
        "policies": decision.policies,
        "waf_detected": (!decision.detections.is_empty()).then(|| {
            decision.detections.iter().map(warden_core::hygiene::Detection::describe).collect::<Vec<_>>()
        }),
        "shadow": decision.shadow.as_ref().map(|d| json!({
            "active": if d.active_allowed { "allow" } else { "deny" },
            "candidate": if d.shadow_allowed { "allow" } else { "deny" },
            "candidate_policies": d.shadow_policies,
        })),
    })
}
