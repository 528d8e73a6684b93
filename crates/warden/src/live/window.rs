//! What the dashboard reads: the latest refusals (the last [`MAX_AGE`], at most
//! [`MAX_EVENTS`]), the requests of the latest [`MAX_REPLAYS`] of them for their
//! explanations, and totals since start. Filtered views are computed from the kept events
//! when a dashboard asks, so the request path never pays for them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{Event, Filter, Replay};

/// How far back the dashboard looks.
pub(crate) const MAX_AGE: Duration = Duration::from_secs(600);
/// The most events kept (a flood keeps the latest ones).
pub(crate) const MAX_EVENTS: usize = 20_000;
/// How many of the latest refusals keep their request for an explanation.
pub(crate) const MAX_REPLAYS: usize = 512;
/// The width of one bar of the chart.
const BUCKET: Duration = Duration::from_secs(10);
/// How many rows each top list has.
const TOP: usize = 10;
/// How many recent decisions the snapshot lists.
const RECENT: usize = 50;
/// The statuses the dashboard shows on their own; the others are summed as `other`.
pub(crate) const STATUSES: [u16; 5] = [401, 403, 404, 429, 451];

/// A kept request and what was recorded of its decision.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub replay: Replay,
    pub method: http::Method,
    pub target: String,
    pub at: SystemTime,
    pub status: u16,
    pub reason: &'static str,
}

/// Totals since start, by status and by reason.
#[derive(Debug, Default)]
struct Totals {
    refused: u64,
    by_status: BTreeMap<u16, u64>,
    waf_refused: u64,
    waf_detected: u64,
}

#[derive(Debug)]
pub(crate) struct Window {
    started: SystemTime,
    events: VecDeque<Event>,
    replays: VecDeque<(String, Box<Replay>)>,
    totals: Totals,
}

impl Window {
    pub(crate) fn new(started: SystemTime) -> Self {
        Self {
            started,
            events: VecDeque::new(),
            replays: VecDeque::new(),
            totals: Totals::default(),
        }
    }

    pub(crate) fn push(&mut self, mut event: Event) {
        if event.refused {
            self.totals.refused += 1;
            *self.totals.by_status.entry(event.status).or_default() += 1;
        }
        for (_, refused) in &event.waf {
            if *refused {
                self.totals.waf_refused += 1;
            } else {
                self.totals.waf_detected += 1;
            }
        }
        if let Some(replay) = event.replay.take() {
            if self.replays.len() == MAX_REPLAYS {
                self.replays.pop_front();
            }
            self.replays.push_back((event.id.to_string(), replay));
        }
        if self.events.len() == MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Forget the events older than the window.
    pub(crate) fn expire(&mut self, now: SystemTime) {
        let Some(horizon) = now.checked_sub(MAX_AGE) else {
            return;
        };
        while self.events.front().is_some_and(|e| e.at < horizon) {
            self.events.pop_front();
        }
    }

    /// The kept request of the decision `id`, with what was recorded of it.
    pub(crate) fn kept(&self, id: &str) -> Option<Kept> {
        let (_, replay) = self.replays.iter().rev().find(|(kept, _)| kept == id)?;
        let event = self.events.iter().rev().find(|e| e.id.to_string() == id)?;
        Some(Kept {
            replay: Replay::clone(replay),
            method: event.method.clone(),
            target: event.target.to_string(),
            at: event.at,
            status: event.status,
            reason: event.reason,
        })
    }

    /// Everything the dashboard shows, for the events `filter` keeps.
    pub(crate) fn snapshot(
        &self,
        filter: &Filter,
        now: SystemTime,
        allowed: u64,
        dropped: u64,
    ) -> Value {
        let buckets = usize::try_from(MAX_AGE.as_secs() / BUCKET.as_secs()).unwrap_or(60);
        let mut series: BTreeMap<&str, Vec<u64>> = STATUSES
            .iter()
            .map(|s| status_key(*s))
            .chain(["other"])
            .map(|k| (k, vec![0; buckets]))
            .collect();
        let mut by_status: BTreeMap<&str, u64> = series.keys().map(|k| (*k, 0)).collect();
        let mut by_reason: HashMap<(&str, u16), u64> = HashMap::new();
        let mut clients: HashMap<String, u64> = HashMap::new();
        let mut routes: HashMap<&str, u64> = HashMap::new();
        let mut subjects: HashMap<&str, u64> = HashMap::new();
        let mut waf: HashMap<&str, (u64, u64)> = HashMap::new();
        let (mut refused, mut rate_limited, mut banned) = (0_u64, 0_u64, 0_u64);
        let mut recent = Vec::new();
        let explainable: std::collections::HashSet<&str> =
            self.replays.iter().map(|(id, _)| id.as_str()).collect();
        for event in self.events.iter().rev().filter(|e| filter.keeps(e)) {
            for (rule, refusing) in &event.waf {
                let entry = waf.entry(rule.as_ref()).or_default();
                if *refusing {
                    entry.0 += 1;
                } else {
                    entry.1 += 1;
                }
            }
            if !event.refused {
                continue;
            }
            refused += 1;
            let key = status_key(event.status);
            *by_status.entry(key).or_default() += 1;
            // The last bar ends now; an event stamped after now (another thread's clock)
            // is in it.
            let age = now.duration_since(event.at).unwrap_or_default();
            if let Some(slot) = usize::try_from(age.as_secs() / BUCKET.as_secs())
                .ok()
                .and_then(|back| buckets.checked_sub(back + 1))
                .and_then(|i| series.get_mut(key).and_then(|s| s.get_mut(i)))
            {
                *slot += 1;
            }
            *by_reason.entry((event.reason, event.status)).or_default() += 1;
            *clients.entry(event.client.to_string()).or_default() += 1;
            if let Some(route) = &event.route {
                *routes.entry(route.as_ref()).or_default() += 1;
            }
            if let Some(subject) = &event.subject {
                *subjects.entry(subject.as_ref()).or_default() += 1;
            }
            match event.reason {
                "rate_limited" => rate_limited += 1,
                "too_many_failures" => banned += 1,
                _ => {}
            }
            if recent.len() < RECENT {
                let id = event.id.to_string();
                let kept = explainable.contains(id.as_str());
                recent.push(recent_row(event, id, kept));
            }
        }
        let mut reasons: Vec<_> = by_reason.into_iter().collect();
        reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut waf: Vec<_> = waf.into_iter().collect();
        waf.sort_by(|a, b| (b.1.0 + b.1.1).cmp(&(a.1.0 + a.1.1)).then(a.0.cmp(b.0)));
        json!({
            "now": humantime::format_rfc3339_seconds(now).to_string(),
            "since": humantime::format_rfc3339_seconds(self.started).to_string(),
            "window_seconds": MAX_AGE.as_secs(),
            "bucket_seconds": BUCKET.as_secs(),
            "filter": filter.to_json(),
            "totals": {
                "allowed": allowed,
                "refused": self.totals.refused,
                "by_status": self.totals.by_status.iter().map(|(s, n)| (s.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
                "waf_refused": self.totals.waf_refused,
                "waf_detected": self.totals.waf_detected,
                "dropped": dropped,
            },
            "refused": refused,
            "by_status": by_status,
            "series": series,
            "by_reason": reasons.iter().map(|((reason, status), n)| json!({"reason": reason, "status": status, "count": n})).collect::<Vec<_>>(),
            "top_clients": top(clients.iter().map(|(k, n)| (k.as_str(), *n))),
            "top_routes": top(routes.into_iter()),
            "top_subjects": top(subjects.into_iter()),
            "waf": waf.iter().map(|(rule, (r, d))| json!({"rule": rule, "refused": r, "detected": d})).collect::<Vec<_>>(),
            "rate_limits": {"rate_limited": rate_limited, "banned": banned},
            "recent": recent,
        })
    }
}

fn status_key(status: u16) -> &'static str {
    match status {
        401 => "401",
        403 => "403",
        404 => "404",
        429 => "429",
        451 => "451",
        _ => "other",
    }
}

/// The `TOP` largest counts, largest first (ties by key, so the order is stable).
fn top<'a>(counts: impl Iterator<Item = (&'a str, u64)>) -> Vec<Value> {
    let mut all: Vec<(&str, u64)> = counts.collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    all.into_iter()
        .take(TOP)
        .map(|(key, count)| json!({"key": key, "count": count}))
        .collect()
}

fn recent_row(event: &Event, id: String, explainable: bool) -> Value {
    let target: String = event.target.chars().take(200).collect();
    json!({
        "id": id,
        "time": humantime::format_rfc3339_millis(event.at).to_string(),
        "status": event.status,
        "reason": event.reason,
        "stage": event.stage,
        "route": event.route.as_deref(),
        "subject": event.subject.as_deref(),
        "client": event.client.to_string(),
        "method": event.method.as_str(),
        "target": target,
        "explainable": explainable,
    })
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::sync::Arc;

    use super::*;

    fn event(status: u16, reason: &'static str, client: &str, at: SystemTime) -> Event {
        Event {
            id: warden_core::DecisionId::new(),
            at,
            status,
            refused: true,
            stage: "authenticate",
            reason,
            route: Some(Arc::from("docs")),
            subject: None,
            client: client.parse::<IpAddr>().unwrap(),
            method: http::Method::GET,
            target: "/docs/1".into(),
            waf: Vec::new(),
            replay: None,
        }
    }

    #[test]
    fn a_flood_keeps_the_latest_events_and_old_ones_expire() {
        let now = SystemTime::now();
        let mut window = Window::new(now);
        for _ in 0..MAX_EVENTS + 10 {
            window.push(event(401, "unauthenticated", "127.0.0.1", now));
        }
        assert_eq!(window.events.len(), MAX_EVENTS);
        assert_eq!(
            window.totals.refused,
            u64::try_from(MAX_EVENTS + 10).unwrap()
        );
        window.expire(now + MAX_AGE + Duration::from_secs(1));
        assert!(window.events.is_empty());
    }

    #[test]
    fn the_snapshot_counts_what_the_filter_keeps() {
        let now = SystemTime::now();
        let mut window = Window::new(now);
        window.push(event(401, "unauthenticated", "127.0.0.1", now));
        window.push(event(401, "invalid_token", "127.0.0.2", now));
        window.push(event(403, "forbidden", "127.0.0.2", now));
        let all = window.snapshot(&Filter::default(), now, 7, 0);
        assert_eq!(all["refused"], 3);
        assert_eq!(all["by_status"]["401"], 2);
        assert_eq!(all["by_status"]["403"], 1);
        assert_eq!(all["totals"]["allowed"], 7);
        assert_eq!(
            all["top_clients"][0],
            json!({"key": "127.0.0.2", "count": 2})
        );
        let series_401: u64 = all["series"]["401"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(series_401, 2);
        let filter = Filter::parse(Some("status=403&client=127.0.0.2"), &[]).unwrap();
        let some = window.snapshot(&filter, now, 7, 0);
        assert_eq!(some["refused"], 1);
        assert_eq!(some["by_reason"][0]["reason"], "forbidden");
    }
}
