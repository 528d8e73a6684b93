//! The decision log: one JSON line per decision, written off the request path.
//!
//! Records go through a bounded channel to a writer thread, which renders and writes them:
//! the request's thread only copies the decision. When the writer falls behind, records
//! are dropped and counted (`warden_decision_log_dropped_total`) rather than making
//! requests wait. The last records are also kept in memory for the admin listener, which
//! renders them when asked.

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
    /// The peer the engine saw: the connection's (the client, or the proxy in front of it),
    /// or for `ext_authz` the downstream address Envoy reports.
    pub peer: IpAddr,
    /// The request headers the engine saw, when the front end still has them (the live
    /// view keeps them for the latest refusals, to explain them).
    pub headers: Option<&'a http::HeaderMap>,
    /// The method.
    pub method: &'a Method,
    /// The request target as received (truncated in the log).
    pub target: &'a str,
    /// When the request arrived.
    pub at: SystemTime,
    /// The client certificate chain of the connection (empty for none), kept with the
    /// headers to explain a refusal.
    pub client_certificates: &'a [rustls_pki_types::CertificateDer<'static>],
}

/// One decision as logged: the decision and the facts of its request, owned.
#[derive(Debug)]
struct Record {
    decision: Decision,
    client: IpAddr,
    method: Method,
    /// The request target, truncated.
    target: String,
    at: SystemTime,
    status: u16,
}

/// A handle to the decision log; cheap to clone.
#[derive(Debug, Clone)]
pub struct DecisionLog {
    sender: Option<SyncSender<Arc<Record>>>,
    log_allowed: bool,
    recent: Arc<Mutex<VecDeque<Arc<Record>>>>,
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
            let (tx, rx) = mpsc::sync_channel::<Arc<Record>>(CHANNEL_CAPACITY);
            std::thread::Builder::new()
                .name("warden-decision-log".to_owned())
                .spawn(move || {
                    let mut out = BufWriter::new(sink);
                    let write = |out: &mut BufWriter<_>, record: &Record| {
                        let _ = serde_json::to_writer(&mut *out, &line(record));
                        let _ = out.write_all(b"\n");
                    };
                    while let Ok(record) = rx.recv() {
                        write(&mut out, &record);
                        // Flush whenever the queue is drained, so lines appear promptly.
                        while let Ok(record) = rx.try_recv() {
                            write(&mut out, &record);
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
        let record = Arc::new(Record {
            decision: decision.clone(),
            client: facts.client,
            method: facts.method.clone(),
            target: facts.target.chars().take(512).collect(),
            at: facts.at,
            status,
        });
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(Arc::clone(&record));
        }
        if let Some(sender) = &self.sender {
            match sender.try_send(record) {
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
        let records: Vec<Arc<Record>> = self
            .recent
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default();
        records.iter().map(|r| line(r).to_string()).collect()
    }
}

fn line(record: &Record) -> serde_json::Value {
    let Record {
        decision, status, ..
    } = record;
    let identity = decision.identity();
    json!({
        "decision_id": decision.id.to_string(),
        "time": humantime::format_rfc3339_micros(record.at).to_string(),
        "client": record.client.to_string(),
        "method": record.method.as_str(),
        "path": record.target,
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
