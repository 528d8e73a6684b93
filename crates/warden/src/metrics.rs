//! Prometheus metrics, served by the admin listener.

use std::sync::Arc;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Buckets of the latencies that leave the process (upstreams, Redis): 0.5 ms to 10 s.
const NETWORK_BUCKETS: [f64; 14] = [
    5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric warden exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Unique in the process: tells this registry's cached counters from another's.
    id: u64,
    /// Decisions by outcome, status, stage and reason code.
    pub decisions: IntCounterVec,
    /// Time taken by the decision engine, by the stage that ended the decision.
    pub decision_seconds: HistogramVec,
    /// Time to an upstream's response head, by upstream.
    pub upstream_seconds: HistogramVec,
    /// Time the state backend took to answer one request's checks, by backend.
    pub state_seconds: HistogramVec,
    /// Connections open on the HTTP listeners (proxy and forward-auth).
    pub connections_open: IntGauge,
    /// Connections accepted on the HTTP listeners.
    pub connections: IntCounter,
    /// Spans handed to the OTLP exporter, by result (`exported`, `failed`, `dropped`).
    pub trace_spans: IntCounterVec,
    /// Upstream failures by kind (`connect`, `timeout`, `protocol`).
    pub upstream_errors: IntCounterVec,
    /// Decision log lines dropped because the writer fell behind.
    pub decision_log_dropped: IntCounter,
    /// JWKS fetches by source and result.
    pub jwks_fetches: IntCounterVec,
    /// Configuration reloads by result (`ok`, `refused`).
    pub reloads: IntCounterVec,
    /// Requests on which the shadow policies disagreed with the active ones.
    pub shadow_disagreements: IntCounterVec,
    /// State checks the backend could not answer.
    pub state_unavailable: IntCounter,
    /// Clients banned after bursts of refusals.
    pub bans: IntCounter,
    /// WAF findings by rule and by whether they were refused (`detect` routes only log).
    pub waf_findings: IntCounterVec,
    /// TLS handshakes that failed (no common version or cipher, a bad client certificate,
    /// a client too slow).
    pub tls_handshake_failures: IntCounter,
}

impl Metrics {
    /// The `warden_decisions_total` counter of one label set. Finding a counter by its
    /// labels hashes them and takes the family's lock; the request path asks for the same
    /// few label sets all the time, so each thread keeps the counters it used.
    pub fn decision_counter(
        &self,
        allowed: bool,
        status: http::StatusCode,
        stage: &'static str,
        reason: &'static str,
    ) -> IntCounter {
        type Key = (u64, bool, u16, &'static str, &'static str);
        thread_local! {
            static COUNTERS: std::cell::RefCell<FastMap<Key, IntCounter>> =
                std::cell::RefCell::new(FastMap::default());
        }
        let key = (self.id, allowed, status.as_u16(), stage, reason);
        COUNTERS.with(|counters| {
            let mut counters = counters.borrow_mut();
            if let Some(counter) = counters.get(&key) {
                return counter.clone();
            }
            let outcome = if allowed { "allow" } else { "deny" };
            let counter =
                self.decisions
                    .with_label_values(&[outcome, status.as_str(), stage, reason]);
            // Bounded: label sets are few, registries come and go only in tests.
            if counters.len() >= 4096 {
                counters.clear();
            }
            counters.insert(key, counter.clone());
            counter
        })
    }

    /// The `warden_decision_seconds` histogram of one stage, kept per thread.
    pub fn decision_histogram(&self, stage: &'static str) -> Histogram {
        thread_local! {
            static HISTOGRAMS: PerThread<&'static str> = PerThread::default();
        }
        HISTOGRAMS.with(|h| {
            h.get(
                self.id,
                stage,
                || stage,
                || self.decision_seconds.with_label_values(&[stage]),
            )
        })
    }

    /// The `warden_upstream_seconds` histogram of one upstream, kept per thread.
    pub fn upstream_histogram(&self, upstream: &Arc<str>) -> Histogram {
        thread_local! {
            static HISTOGRAMS: PerThread<Arc<str>> = PerThread::default();
        }
        HISTOGRAMS.with(|h| {
            // Found by the name's text: no reference count is taken on the shared name.
            h.get(
                self.id,
                &**upstream,
                || Arc::clone(upstream),
                || {
                    self.upstream_seconds
                        .with_label_values(&[upstream.as_ref()])
                },
            )
        })
    }

    /// The `warden_state_seconds` histogram of one backend, kept per thread.
    pub fn state_histogram(&self, backend: &'static str) -> Histogram {
        thread_local! {
            static HISTOGRAMS: PerThread<&'static str> = PerThread::default();
        }
        HISTOGRAMS.with(|h| {
            h.get(
                self.id,
                backend,
                || backend,
                || self.state_seconds.with_label_values(&[backend]),
            )
        })
    }

    /// Count a connection opened; the guard counts it closed when dropped.
    #[must_use]
    pub fn connection_opened(self: &Arc<Self>) -> ConnectionGuard {
        self.connections.inc();
        self.connections_open.inc();
        ConnectionGuard(Arc::clone(self))
    }

    /// A fresh registry with every metric registered.
    ///
    /// # Errors
    /// Only if two metrics were given the same name (a programming error caught by tests).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let decisions = IntCounterVec::new(
            Opts::new(
                "warden_decisions_total",
                "Decisions by outcome, status, stage and reason",
            ),
            &["outcome", "status", "stage", "reason"],
        )?;
        let decision_seconds = HistogramVec::new(
            HistogramOpts::new(
                "warden_decision_seconds",
                "Time taken by the decision engine, by the stage that ended the decision",
            )
            .buckets(vec![
                1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2,
            ]),
            &["stage"],
        )?;
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "warden_upstream_seconds",
                "Time from sending a request upstream to its response head, by upstream",
            )
            .buckets(NETWORK_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        registry.register(Box::new(upstream_seconds.clone()))?;
        let state_seconds = HistogramVec::new(
            HistogramOpts::new(
                "warden_state_seconds",
                "Time the state backend took to answer a request's checks, by backend",
            )
            .buckets(NETWORK_BUCKETS.to_vec()),
            &["backend"],
        )?;
        registry.register(Box::new(state_seconds.clone()))?;
        let connections_open = IntGauge::new(
            "warden_connections_open",
            "Connections open on the proxy and forward-auth listeners",
        )?;
        registry.register(Box::new(connections_open.clone()))?;
        let connections = IntCounter::new(
            "warden_connections_total",
            "Connections accepted on the proxy and forward-auth listeners",
        )?;
        registry.register(Box::new(connections.clone()))?;
        let trace_spans = IntCounterVec::new(
            Opts::new(
                "warden_trace_spans_total",
                "Spans handed to the OTLP exporter, by result (exported, failed, dropped)",
            ),
            &["result"],
        )?;
        registry.register(Box::new(trace_spans.clone()))?;
        let upstream_errors = IntCounterVec::new(
            Opts::new("warden_upstream_errors_total", "Upstream failures by kind"),
            &["kind"],
        )?;
        let decision_log_dropped = IntCounter::new(
            "warden_decision_log_dropped_total",
            "Decision log lines dropped (writer behind)",
        )?;
        let jwks_fetches = IntCounterVec::new(
            Opts::new(
                "warden_jwks_fetches_total",
                "JWKS fetches by source and result",
            ),
            &["source", "result"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "warden_config_reloads_total",
                "Configuration reloads by result",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let shadow_disagreements = IntCounterVec::new(
            Opts::new(
                "warden_shadow_disagreements_total",
                "Requests where shadow policies disagreed with the active ones",
            ),
            &["route", "active", "candidate"],
        )?;
        registry.register(Box::new(shadow_disagreements.clone()))?;
        let state_unavailable = IntCounter::new(
            "warden_state_unavailable_total",
            "State checks the backend (memory or Redis) could not answer",
        )?;
        registry.register(Box::new(state_unavailable.clone()))?;
        let bans = IntCounter::new(
            "warden_bans_total",
            "Clients banned after bursts of refusals",
        )?;
        registry.register(Box::new(bans.clone()))?;
        let waf_findings = IntCounterVec::new(
            Opts::new(
                "warden_waf_findings_total",
                "Requests the WAF flagged, by rule and by whether they were refused",
            ),
            &["rule", "refused"],
        )?;
        registry.register(Box::new(waf_findings.clone()))?;
        registry.register(Box::new(decisions.clone()))?;
        registry.register(Box::new(decision_seconds.clone()))?;
        let tls_handshake_failures = IntCounter::new(
            "warden_tls_handshake_failures_total",
            "TLS handshakes on the proxy listener that failed",
        )?;
        registry.register(Box::new(tls_handshake_failures.clone()))?;
        registry.register(Box::new(upstream_errors.clone()))?;
        registry.register(Box::new(decision_log_dropped.clone()))?;
        registry.register(Box::new(jwks_fetches.clone()))?;
        // Series that exist before their first event, so `rate()` and alerts on them work
        // from the start (and the dashboard's queries find them).
        for result in ["ok", "refused"] {
            reloads.with_label_values(&[result]);
        }
        for kind in ["connect", "timeout", "protocol"] {
            upstream_errors.with_label_values(&[kind]);
        }
        for result in ["exported", "failed", "dropped"] {
            trace_spans.with_label_values(&[result]);
        }
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Ok(Self {
            registry,
            id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            decisions,
            decision_seconds,
            upstream_seconds,
            state_seconds,
            connections_open,
            connections,
            trace_spans,
            upstream_errors,
            tls_handshake_failures,
            decision_log_dropped,
            jwks_fetches,
            reloads,
            shadow_disagreements,
            state_unavailable,
            bans,
            waf_findings,
        })
    }

    /// Register another metric (the live view's, `crate::live::LiveMetrics`).
    ///
    /// # Errors
    /// When a metric of that name is registered already.
    pub fn register(
        &self,
        metric: Box<dyn prometheus::core::Collector>,
    ) -> Result<(), prometheus::Error> {
        self.registry.register(metric)
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Counts a connection closed when dropped (see [`Metrics::connection_opened`]).
#[derive(Debug)]
pub struct ConnectionGuard(Arc<Metrics>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}

/// Histograms of one label a thread has used, by registry id and label: finding one in a
/// family hashes the labels and takes the family's lock, which the request path avoids.
struct PerThread<K>(std::cell::RefCell<PerThreadMaps<K>>);

/// The histograms by registry id, then label, and how many there are in all.
struct PerThreadMaps<K> {
    by_registry: FastMap<u64, FastMap<K, Histogram>>,
    count: usize,
}

impl<K> Default for PerThread<K> {
    fn default() -> Self {
        Self(std::cell::RefCell::new(PerThreadMaps {
            by_registry: FastMap::default(),
            count: 0,
        }))
    }
}

/// A map keyed by names from the configuration and static labels, never by client input,
/// hashed with a fast hasher rather than the standard library's SipHash.
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::FixedState>;

impl<K: std::hash::Hash + Eq> PerThread<K> {
    /// The histogram of `label` in registry `id`, found by the borrowed label; `key` makes
    /// the owned one only when it is kept.
    fn get<Q>(
        &self,
        id: u64,
        label: &Q,
        key: impl FnOnce() -> K,
        make: impl FnOnce() -> Histogram,
    ) -> Histogram
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        let mut maps = self.0.borrow_mut();
        if let Some(h) = maps.by_registry.get(&id).and_then(|m| m.get(label)) {
            return h.clone();
        }
        let h = make();
        // Bounded: labels are few, registries come and go only in tests.
        if maps.count >= 4096 {
            maps.by_registry.clear();
            maps.count = 0;
        }
        maps.count += 1;
        maps.by_registry
            .entry(id)
            .or_default()
            .insert(key(), h.clone());
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_thread_histograms_observe_into_their_own_registry() {
        let (a, b) = (Metrics::new().unwrap(), Metrics::new().unwrap());
        let app: Arc<str> = Arc::from("app");
        // The same label on one thread, in two registries: each keeps its own series.
        for _ in 0..3 {
            a.upstream_histogram(&app).observe(0.001);
            a.decision_histogram("route").observe(0.001);
        }
        b.upstream_histogram(&Arc::from("app")).observe(0.001);
        let (a, b) = (a.render(), b.render());
        assert!(
            a.contains("warden_upstream_seconds_count{upstream=\"app\"} 3"),
            "{a}"
        );
        assert!(
            a.contains("warden_decision_seconds_count{stage=\"route\"} 3"),
            "{a}"
        );
        assert!(
            b.contains("warden_upstream_seconds_count{upstream=\"app\"} 1"),
            "{b}"
        );
    }
}
