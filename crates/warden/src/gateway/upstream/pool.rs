//! The hosts of one upstream: which one gets the next request (round robin or least
//! requests), passive health (consecutive failures take a host out of rotation for a while)
//! and the active health check (`GET /health` at an interval).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use http::uri::Authority;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use warden_core::config::{Balance, PassiveHealth, ServeSettings, Upstream};

use super::UpstreamError;
use super::connect::{self, Connector};
use super::h1::Connections;
use crate::gateway::request_body::CappedBody;

/// One upstream's hosts and its client.
#[derive(Debug)]
pub(crate) struct Pool {
    name: Arc<str>,
    upstream: Upstream,
    client: Client<Connector, CappedBody>,
    /// The connector of the HTTP/1.1 connections kept by the hosts.
    connector: Connector,
    /// The active health check's client, when one is configured.
    checker: Option<Client<Connector, Empty<Bytes>>>,
    hosts: Box<[Host]>,
    next: AtomicUsize,
    /// What the hosts' ejection times count from; a pool that replaces another keeps its.
    epoch: Instant,
}

impl Pool {
    /// The pool of `upstream`. When it replaces `previous` (a reload), each host that was
    /// already there keeps what is known of its health: an ejected host stays out for the
    /// rest of its time (while ejection still applies), a host the active check found down
    /// stays down until the check finds it up (while a check still runs). A reload does not
    /// send requests to a host known to fail.
    pub(super) fn new(
        name: &Arc<str>,
        upstream: &Upstream,
        serve: &ServeSettings,
        previous: Option<&Self>,
    ) -> Result<Self, UpstreamError> {
        let connector = connect::connector(name, upstream, serve)?;
        let checker = upstream
            .health
            .is_some()
            .then(|| connect::client(connector.clone(), upstream));
        let epoch = previous.map_or_else(Instant::now, |p| p.epoch);
        // Ejecting the only host would only turn its 502s into 503s and hide its recovery.
        let passive = (upstream.hosts.len() > 1).then_some(upstream.passive);
        let hosts: Box<[Host]> = upstream
            .hosts
            .iter()
            .map(|authority| {
                let host = Host::new(authority.clone(), passive, epoch);
                let known =
                    previous.and_then(|p| p.hosts.iter().find(|h| h.authority == *authority));
                if let Some(old) = known {
                    host.carry(old, upstream.health.is_some());
                }
                host
            })
            .collect();
        Ok(Self {
            name: Arc::clone(name),
            client: connect::client(connector.clone(), upstream),
            connector,
            checker,
            hosts,
            upstream: upstream.clone(),
            next: AtomicUsize::new(0),
            epoch,
        })
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The upstream's settings.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    pub(super) fn client(&self) -> &Client<Connector, CappedBody> {
        &self.client
    }

    pub(super) fn connector(&self) -> &Connector {
        &self.connector
    }

    pub(super) fn host_count(&self) -> usize {
        self.hosts.len()
    }

    /// The host for the next request, or `None` when every host is out of rotation.
    pub(super) fn choose(&self) -> Option<&Host> {
        let n = self.hosts.len();
        if n == 1 {
            // No turn to take: the counter, shared by every worker, is left alone.
            return self.hosts.first().filter(|h| h.available());
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let in_turn = (0..n).filter_map(|i| self.hosts.get((start + i) % n));
        match self.upstream.balance {
            Balance::RoundRobin => in_turn.into_iter().find(|h| h.available()),
            // Ties go to the first in turn, so equal hosts still take turns.
            Balance::LeastRequests => in_turn
                .filter(|h| h.available())
                .min_by_key(|h| h.in_flight.load(Ordering::Relaxed)),
        }
    }
}

/// One host of an upstream and what warden knows of its health.
#[derive(Debug)]
pub(crate) struct Host {
    authority: Authority,
    /// `Host` for HTTP/1.1 requests to it, made once.
    host_header: Option<http::HeaderValue>,
    /// Idle HTTP/1.1 connections to the host, by worker thread.
    connections: Arc<Connections>,
    /// Idle connections of warden's own codec (bodyless requests), by worker thread.
    wire_connections: Arc<super::wire::Connections>,
    in_flight: AtomicUsize,
    /// Consecutive failures since the last success.
    failures: AtomicU32,
    /// Out of rotation until this many milliseconds after `epoch` (0: in rotation).
    ejected_until: AtomicU64,
    /// The last active check failed.
    down: AtomicBool,
    passive: Option<PassiveHealth>,
    epoch: Instant,
}

impl Host {
    fn new(authority: Authority, passive: Option<PassiveHealth>, epoch: Instant) -> Self {
        Self {
            host_header: http::HeaderValue::from_str(authority.as_str()).ok(),
            connections: Arc::default(),
            wire_connections: Arc::default(),
            authority,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            down: AtomicBool::new(false),
            passive,
            epoch,
        }
    }

    /// Take over what `old` (the same host, in the pool this one's replaces, with the same
    /// epoch) knew: its failures and ejection when ejection still applies, its active check's
    /// verdict when a check still runs (else nothing would ever bring it back).
    fn carry(&self, old: &Self, checked: bool) {
        if self.passive.is_some() {
            self.failures
                .store(old.failures.load(Ordering::Relaxed), Ordering::Relaxed);
            self.ejected_until
                .store(old.ejected_until.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if checked {
            self.down
                .store(old.down.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// `host:port`.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    pub(super) fn connections(&self) -> &Arc<Connections> {
        &self.connections
    }

    pub(super) fn wire_connections(&self) -> &Arc<super::wire::Connections> {
        &self.wire_connections
    }

    /// `host:port` as the `Host` field of an HTTP/1.1 request.
    pub fn host_header(&self) -> Option<&http::HeaderValue> {
        self.host_header.as_ref()
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// In rotation: not failing its health check and not ejected.
    pub fn available(&self) -> bool {
        if self.down.load(Ordering::Relaxed) {
            return false;
        }
        // Never ejected (the usual case) needs no clock.
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || until <= self.now_ms()
    }

    /// A request starts: counted in flight until the guard is dropped.
    ///
    /// Only least-requests balancing reads the count; round robin leaves the counter, shared
    /// by every worker, alone.
    pub(super) fn start(&self, balance: Balance) -> Option<InFlight<'_>> {
        if balance != Balance::LeastRequests {
            return None;
        }
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(&self.in_flight))
    }

    /// The outcome of a request: a success clears the failures, a failure counts towards
    /// ejection.
    pub(super) fn record(&self, ok: bool) {
        if ok {
            // A store only when there is something to clear: the line stays shared
            // between the workers' caches on the usual path.
            if self.failures.load(Ordering::Relaxed) != 0 {
                self.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let Some(passive) = self.passive else {
            return;
        };
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= passive.eject_after {
            self.failures.store(0, Ordering::Relaxed);
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(passive.eject_for.as_millis()).unwrap_or(u64::MAX));
            self.ejected_until.store(until, Ordering::Relaxed);
            tracing::warn!(host = %self.authority, failures, eject_for = ?passive.eject_for, "upstream host taken out of rotation after consecutive failures");
        }
    }
}

/// A request in flight on a host.
#[derive(Debug)]
pub(super) struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Start the active health check of `pool`, if it has one: every host asked in turn at
/// the interval; the task ends once the pool is dropped (a reload replaced it).
pub(super) fn start_health_checks(pool: &Arc<Pool>) {
    let Some(check) = pool.upstream.health.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<Pool> = Arc::downgrade(pool);
    runtime.spawn(async move {
        let mut ticks = tokio::time::interval(check.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(pool) = weak.upgrade() else {
                return;
            };
            let Some(checker) = pool.checker.clone() else {
                return;
            };
            for host in pool.hosts.iter() {
                let healthy = match pool.upstream.uri(&host.authority, check.path.as_str()) {
                    Ok(uri) => {
                        let mut request = http::Request::new(Empty::new());
                        *request.uri_mut() = uri;
                        if pool.upstream.protocol == warden_core::config::UpstreamProtocol::Http1
                            && let Ok(value) = http::HeaderValue::from_str(host.authority.as_str())
                        {
                            request.headers_mut().insert(http::header::HOST, value);
                        }
                        matches!(
                            tokio::time::timeout(check.timeout, checker.request(request)).await,
                            Ok(Ok(response)) if response.status().is_success()
                        )
                    }
                    Err(_) => false,
                };
                let was_down = host.down.swap(!healthy, Ordering::Relaxed);
                if was_down == healthy {
                    if healthy {
                        tracing::info!(upstream = %pool.name, host = %host.authority, "upstream host passed its health check; back in rotation");
                    } else {
                        tracing::warn!(upstream = %pool.name, host = %host.authority, path = %check.path, "upstream host failed its health check; out of rotation");
                    }
                }
            }
        }
    });
}
