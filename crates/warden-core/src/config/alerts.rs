//! `[alerts]`: rules over refusals (per client, subject, route or in total) and where their
//! alerts go (webhooks, a syslog collector). Checked here like the rest of the file, so an
//! error names its line and field; only the gateway reads the result.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::error::Collector;
use super::parse_duration;
use super::raw::{RawAlertRule, RawAlerts, RawWebhook};

/// What an alert rule counts refusals by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKey {
    /// The client address.
    Client,
    /// The identity's subject (refusals without one are not counted).
    Subject,
    /// The route (refusals of unrouted paths are not counted).
    Route,
    /// Every refusal together.
    Total,
}

impl AlertKey {
    /// The name used in the configuration and in alerts.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Subject => "subject",
            Self::Route => "route",
            Self::Total => "total",
        }
    }
}

/// One `[[alerts.rules]]`: alert when more than `refusals` refusals of one key fall within
/// `window`; at most one alert per key per window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRule {
    /// The rule's name, unique in the file.
    pub name: Arc<str>,
    /// What the refusals are counted by.
    pub per: AlertKey,
    /// How many refusals within the window are still quiet.
    pub refusals: u32,
    /// The window.
    pub window: Duration,
    /// The statuses that count (every refusal when empty).
    pub statuses: Vec<u16>,
}

/// One `[[alerts.webhooks]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// An `http` or `https` URL.
    pub url: String,
    /// The time allowed for one attempt (2 s by default).
    pub timeout: Duration,
    /// Attempts after the first one fails (3 by default, at most 10), with backoff.
    pub retries: u32,
}

/// `[alerts]` as checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertSettings {
    /// The rules.
    pub rules: Vec<AlertRule>,
    /// Where alerts are POSTed.
    pub webhooks: Vec<Webhook>,
    /// Where an RFC 5424 line with a CEF payload is sent over UDP, if anywhere.
    pub syslog: Option<SocketAddr>,
}

const MAX_RETRIES: i64 = 10;

pub(super) fn settings(a: &RawAlerts, errors: &mut Collector<'_>) -> AlertSettings {
    let mut rules: Vec<AlertRule> = Vec::new();
    for (i, r) in a.rules.iter().enumerate() {
        if let Some(rule) = rule(i, r.get_ref(), errors) {
            if rules.iter().any(|other| other.name == rule.name) {
                errors.at(
                    r.get_ref().name.span(),
                    format!("alerts.rules[{i}].name"),
                    format!("a second rule named `{}`", rule.name),
                );
            }
            rules.push(rule);
        }
    }
    let webhooks = a
        .webhooks
        .iter()
        .enumerate()
        .filter_map(|(i, w)| webhook(i, w.get_ref(), errors))
        .collect::<Vec<_>>();
    let syslog = a.syslog.as_ref().and_then(|s| {
        let address = &s.get_ref().address;
        match address.get_ref().parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                errors.at(
                    address.span(),
                    "alerts.syslog.address",
                    "expected an address such as 127.0.0.1:514",
                );
                None
            }
        }
    });
    if let Some(first) = a.rules.first()
        && a.webhooks.is_empty()
        && a.syslog.is_none()
    {
        errors.at(
            first.span(),
            "alerts",
            "rules need somewhere to send alerts: add `[[alerts.webhooks]]` or `[alerts.syslog]`",
        );
    }
    AlertSettings {
        rules,
        webhooks,
        syslog,
    }
}

fn rule(i: usize, r: &RawAlertRule, errors: &mut Collector<'_>) -> Option<AlertRule> {
    let field = |name: &str| format!("alerts.rules[{i}].{name}");
    let name = r.name.get_ref().trim();
    if name.is_empty() || name.len() > 64 {
        errors.at(
            r.name.span(),
            field("name"),
            "expected a name of 1 to 64 characters",
        );
    }
    let per = match r.per.get_ref().as_str() {
        "client" => Some(AlertKey::Client),
        "subject" => Some(AlertKey::Subject),
        "route" => Some(AlertKey::Route),
        "total" => Some(AlertKey::Total),
        _ => {
            errors.at(
                r.per.span(),
                field("per"),
                "expected `client`, `subject`, `route` or `total`",
            );
            None
        }
    };
    let refusals = match u32::try_from(*r.refusals.get_ref()) {
        Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
        _ => {
            errors.at(
                r.refusals.span(),
                field("refusals"),
                "expected a number of refusals from 1 to 1000000",
            );
            None
        }
    };
    let window = parse_duration(&r.window, &field("window"), errors).and_then(|w| {
        if (Duration::from_secs(1)..=Duration::from_secs(86_400)).contains(&w) {
            Some(w)
        } else {
            errors.at(
                r.window.span(),
                field("window"),
                "expected a window from 1s to 1d",
            );
            None
        }
    });
    let mut statuses = Vec::new();
    for (j, s) in r.statuses.iter().enumerate() {
        match u16::try_from(*s.get_ref()) {
            Ok(code) if (400..=599).contains(&code) => statuses.push(code),
            _ => errors.at(
                s.span(),
                format!("alerts.rules[{i}].statuses[{j}]"),
                "expected a refusal status from 400 to 599",
            ),
        }
    }
    Some(AlertRule {
        name: Arc::from(name),
        per: per?,
        refusals: refusals?,
        window: window?,
        statuses,
    })
}

fn webhook(i: usize, w: &RawWebhook, errors: &mut Collector<'_>) -> Option<Webhook> {
    let field = |name: &str| format!("alerts.webhooks[{i}].{name}");
    let url = w.url.get_ref().trim();
    let valid = url
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
    if valid.is_none() {
        errors.at(
            w.url.span(),
            field("url"),
            "expected an http or https URL such as https://alerts.example/hook",
        );
    }
    let timeout = match &w.timeout {
        None => Some(Duration::from_secs(2)),
        Some(t) => parse_duration(t, &field("timeout"), errors).and_then(|d| {
            if (Duration::from_millis(10)..=Duration::from_secs(60)).contains(&d) {
                Some(d)
            } else {
                errors.at(
                    t.span(),
                    field("timeout"),
                    "expected a time from 10ms to 60s",
                );
                None
            }
        }),
    };
    let retries = match &w.retries {
        None => Some(3),
        Some(r) => match u32::try_from(*r.get_ref()) {
            Ok(n) if i64::from(n) <= MAX_RETRIES => Some(n),
            _ => {
                errors.at(r.span(), field("retries"), "expected 0 to 10 retries");
                None
            }
        },
    };
    valid?;
    Some(Webhook {
        url: url.to_owned(),
        timeout: timeout?,
        retries: retries?,
    })
}
