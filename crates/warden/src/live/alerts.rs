//! Alert rules over refusals: more than `refusals` refusals of one key (client, subject,
//! route, or all together) within `window` fires one [`Alert`], and that key stays quiet
//! for a window after it. Runs on the live thread, never on the request path.
//!
//! Each key's refusals are counted in ten buckets per window (a tenth of the window wide),
//! so memory per key is bounded whatever the rate; the count can include up to a tenth of a
//! window more than the window itself. At most [`MAX_KEYS`] keys are followed per rule;
//! past that, keys that have gone quiet are forgotten first and new ones wait for room.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use warden_core::DecisionId;
use warden_core::config::{AlertKey, AlertRule};

use super::Event;

/// The most keys followed per rule.
pub const MAX_KEYS: usize = 10_000;
/// The most sample decision ids in an alert.
const SAMPLES: usize = 5;
/// How often keys that went quiet are forgotten.
const SWEEP: Duration = Duration::from_secs(10);

/// One alert, as POSTed to webhooks (JSON) and summarized in the syslog line.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// A unique id, for receivers that deduplicate.
    pub id: String,
    /// The rule's name.
    pub rule: Arc<str>,
    /// What the refusals were counted by: `client`, `subject`, `route` or `total`.
    pub what: &'static str,
    /// The client address, subject or route (`*` for `total`).
    pub key: String,
    /// The refusals counted within the window.
    pub count: u64,
    /// The rule's threshold: more than this many fires.
    pub threshold: u32,
    /// The rule's window.
    pub window_seconds: u64,
    /// The first and the last refusal counted (RFC 3339).
    pub from: String,
    /// The last refusal counted.
    pub to: String,
    /// The reasons counted, most frequent first.
    pub top_reasons: Vec<ReasonCount>,
    /// Ids of some of the decisions counted (the latest ones), for `/decisions/recent`,
    /// the decision log and the dashboard.
    pub sample_decision_ids: Vec<String>,
}

/// A reason code and how many refusals had it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// The reason code.
    pub reason: &'static str,
    /// The status of the refusals.
    pub status: u16,
    /// How many.
    pub count: u64,
}

#[derive(Debug)]
struct Bucket {
    start: Instant,
    count: u64,
    reasons: Vec<ReasonCount>,
    first: SystemTime,
    last: SystemTime,
    samples: VecDeque<DecisionId>,
}

#[derive(Debug, Default)]
struct KeyState {
    buckets: VecDeque<Bucket>,
    quiet_until: Option<Instant>,
}

#[derive(Debug)]
struct RuleState {
    rule: AlertRule,
    width: Duration,
    keys: HashMap<String, KeyState>,
}

/// Every rule's counts.
#[derive(Debug)]
pub(crate) struct Rules {
    rules: Vec<RuleState>,
    last_sweep: Option<Instant>,
}

impl Rules {
    pub(crate) fn new(rules: &[AlertRule]) -> Self {
        Self {
            rules: rules
                .iter()
                .map(|rule| RuleState {
                    width: (rule.window / 10).max(Duration::from_millis(100)),
                    rule: rule.clone(),
                    keys: HashMap::new(),
                })
                .collect(),
            last_sweep: None,
        }
    }

    /// Count one event; the alerts it fires.
    pub(crate) fn observe(&mut self, event: &Event, now: Instant) -> Vec<Alert> {
        let mut fired = Vec::new();
        if !event.refused {
            return fired;
        }
        for state in &mut self.rules {
            if !state.rule.statuses.is_empty() && !state.rule.statuses.contains(&event.status) {
                continue;
            }
            let key = match state.rule.per {
                AlertKey::Client => event.client.to_string(),
                AlertKey::Subject => match &event.subject {
                    Some(s) => s.to_string(),
                    None => continue,
                },
                AlertKey::Route => match &event.route {
                    Some(r) => r.to_string(),
                    None => continue,
                },
                AlertKey::Total => "*".to_owned(),
            };
            if !state.keys.contains_key(&key) && state.keys.len() >= MAX_KEYS {
                forget_quiet(state, now);
                if state.keys.len() >= MAX_KEYS {
                    continue;
                }
            }
            let (window, width, threshold) = (state.rule.window, state.width, state.rule.refusals);
            let entry = state.keys.entry(key).or_default();
            while entry
                .buckets
                .front()
                .is_some_and(|b| b.start + width + window <= now)
            {
                entry.buckets.pop_front();
            }
            add(entry, event, now, width);
            let count: u64 = entry.buckets.iter().map(|b| b.count).sum();
            let quiet = entry.quiet_until.is_some_and(|until| now < until);
            if count > u64::from(threshold) && !quiet {
                entry.quiet_until = Some(now + window);
                fired.push(alert(&state.rule, entry, event, count));
            }
        }
        fired
    }

    /// Forget keys whose refusals all left the window, every [`SWEEP`].
    pub(crate) fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|at| now < at + SWEEP) {
            return;
        }
        self.last_sweep = Some(now);
        for state in &mut self.rules {
            forget_quiet(state, now);
        }
    }
}

fn forget_quiet(state: &mut RuleState, now: Instant) {
    let (window, width) = (state.rule.window, state.width);
    state.keys.retain(|_, key| {
        let counting = key
            .buckets
            .back()
            .is_some_and(|b| now < b.start + width + window);
        let quiet = key.quiet_until.is_some_and(|until| now < until);
        counting || quiet
    });
}

fn add(key: &mut KeyState, event: &Event, now: Instant, width: Duration) {
    let fits = key.buckets.back().is_some_and(|b| now < b.start + width);
    if !fits {
        key.buckets.push_back(Bucket {
            start: now,
            count: 0,
            reasons: Vec::new(),
            first: event.at,
            last: event.at,
            samples: VecDeque::new(),
        });
    }
    let Some(bucket) = key.buckets.back_mut() else {
        return;
    };
    bucket.count += 1;
    bucket.last = event.at;
    match bucket
        .reasons
        .iter_mut()
        .find(|r| r.reason == event.reason && r.status == event.status)
    {
        Some(r) => r.count += 1,
        None => bucket.reasons.push(ReasonCount {
            reason: event.reason,
            status: event.status,
            count: 1,
        }),
    }
    if bucket.samples.len() == SAMPLES {
        bucket.samples.pop_front();
    }
    bucket.samples.push_back(event.id);
}

fn alert(rule: &AlertRule, key: &KeyState, event: &Event, count: u64) -> Alert {
    let mut reasons: Vec<ReasonCount> = Vec::new();
    for bucket in &key.buckets {
        for r in &bucket.reasons {
            match reasons
                .iter_mut()
                .find(|t| t.reason == r.reason && t.status == r.status)
            {
                Some(t) => t.count += r.count,
                None => reasons.push(r.clone()),
            }
        }
    }
    reasons.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(b.reason)));
    reasons.truncate(5);
    let samples: Vec<String> = key
        .buckets
        .iter()
        .rev()
        .flat_map(|b| b.samples.iter().rev())
        .take(SAMPLES)
        .map(ToString::to_string)
        .collect();
    let first = key.buckets.front().map_or(event.at, |b| b.first);
    let key_text = match rule.per {
        AlertKey::Client => event.client.to_string(),
        AlertKey::Subject => event.subject.as_deref().unwrap_or("").to_owned(),
        AlertKey::Route => event.route.as_deref().unwrap_or("").to_owned(),
        AlertKey::Total => "*".to_owned(),
    };
    Alert {
        id: uuid::Uuid::now_v7().to_string(),
        rule: Arc::clone(&rule.name),
        what: rule.per.as_str(),
        key: key_text,
        count,
        threshold: rule.refusals,
        window_seconds: rule.window.as_secs(),
        from: humantime::format_rfc3339_millis(first).to_string(),
        to: humantime::format_rfc3339_millis(event.at).to_string(),
        top_reasons: reasons,
        sample_decision_ids: samples,
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn refusal(client: &str, reason: &'static str, status: u16) -> Event {
        Event {
            id: DecisionId::new(),
            at: SystemTime::now(),
            status,
            refused: true,
            stage: "authenticate",
            reason,
            route: None,
            subject: None,
            client: client.parse::<IpAddr>().unwrap(),
            method: http::Method::GET,
            target: "/".into(),
            waf: Vec::new(),
            replay: None,
        }
    }

    fn rule(per: AlertKey, refusals: u32, statuses: Vec<u16>) -> AlertRule {
        AlertRule {
            name: Arc::from("r"),
            per,
            refusals,
            window: Duration::from_secs(60),
            statuses,
        }
    }

    #[test]
    fn more_than_the_threshold_fires_once_per_key_per_window() {
        let mut rules = Rules::new(&[rule(AlertKey::Client, 3, vec![401])]);
        let now = Instant::now();
        let mut fired = Vec::new();
        for i in 0..10 {
            let reason = if i % 2 == 0 {
                "invalid_token"
            } else {
                "unauthenticated"
            };
            fired.extend(rules.observe(&refusal("127.0.0.1", reason, 401), now));
            // Other statuses and other clients do not count towards this key.
            fired.extend(rules.observe(&refusal("127.0.0.1", "forbidden", 403), now));
        }
        fired.extend(rules.observe(&refusal("127.0.0.2", "invalid_token", 401), now));
        assert_eq!(fired.len(), 1, "{fired:?}");
        let alert = &fired[0];
        assert_eq!(
            (alert.what, alert.key.as_str(), alert.count),
            ("client", "127.0.0.1", 4)
        );
        assert_eq!(
            alert.top_reasons[0],
            ReasonCount {
                reason: "invalid_token",
                status: 401,
                count: 2
            }
        );
        assert_eq!(alert.sample_decision_ids.len(), 4);
        // A window (and the tenth of one that a bucket spans) later the key fires again.
        let later = now + Duration::from_secs(67);
        let again: Vec<_> = (0..5)
            .flat_map(|_| rules.observe(&refusal("127.0.0.1", "invalid_token", 401), later))
            .collect();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].count, 4, "the old refusals left the window");
    }

    #[test]
    fn totals_subjects_and_quiet_keys() {
        let mut rules = Rules::new(&[
            rule(AlertKey::Total, 2, vec![]),
            rule(AlertKey::Subject, 0, vec![]),
        ]);
        let now = Instant::now();
        let fired: Vec<_> = (0..3)
            .flat_map(|i| rules.observe(&refusal(&format!("127.0.0.{i}"), "forbidden", 403), now))
            .collect();
        assert_eq!(fired.len(), 1);
        assert_eq!(fired[0].key, "*");
        rules.sweep(now + Duration::from_secs(200));
        assert!(rules.rules.iter().all(|r| r.keys.is_empty()));
    }
}
