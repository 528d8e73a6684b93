//! Checking rate limits, bans and the state backend settings.

use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::error::Collector;
use super::parse_duration;
use super::raw::{RawBans, RawLimit, RawState};
use crate::limit::{BanPolicy, LimitPolicy, Quota, parse_key_part};

/// Which backend holds rate-limit counters, bans and revocations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// In this process; bounded.
    Memory {
        /// The most keys kept; the least recently used go first.
        max_keys: u64,
    },
    /// A Redis server shared by every instance.
    Redis {
        /// `redis://host:port/db`.
        url: String,
    },
}

/// What to do when the backend cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Refuse with 503 (the default: never a bypass).
    Closed,
    /// Let requests through unlimited, logged and counted.
    Open,
}

/// State backend settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSettings {
    /// The backend.
    pub backend: Backend,
    /// What to do when it cannot answer.
    pub fail: FailMode,
    /// How long to wait for it.
    pub timeout: Duration,
    /// Prefix of every key (Redis).
    pub key_prefix: String,
}

pub(super) fn state(raw: &RawState, errors: &mut Collector<'_>) -> StateSettings {
    let backend = match raw
        .backend
        .as_ref()
        .map(|b| (b.get_ref().as_str(), b.span()))
    {
        None | Some(("memory", _)) => Backend::Memory {
            max_keys: raw.max_keys.unwrap_or(1_000_000).max(1),
        },
        Some(("redis", span)) => match &raw.redis_url {
            Some(url) if url.get_ref().starts_with("redis://") => Backend::Redis {
                url: url.get_ref().clone(),
            },
            Some(url) => {
                errors.at(url.span(), "state.redis_url", "expected a redis:// URL");
                Backend::Memory { max_keys: 1 }
            }
            None => {
                errors.at(
                    span,
                    "state.redis_url",
                    "the redis backend needs `redis_url`",
                );
                Backend::Memory { max_keys: 1 }
            }
        },
        Some((other, span)) => {
            errors.at(
                span,
                "state.backend",
                format!("unknown backend `{other}`; expected `memory` or `redis`"),
            );
            Backend::Memory { max_keys: 1 }
        }
    };
    let fail = match raw.fail.as_ref().map(|f| (f.get_ref().as_str(), f.span())) {
        None | Some(("closed", _)) => FailMode::Closed,
        Some(("open", _)) => FailMode::Open,
        Some((other, span)) => {
            errors.at(
                span,
                "state.fail",
                format!("`{other}`: expected `closed` or `open`"),
            );
            FailMode::Closed
        }
    };
    StateSettings {
        backend,
        fail,
        timeout: raw
            .timeout
            .as_ref()
            .and_then(|t| parse_duration(t, "state.timeout", errors))
            .unwrap_or(Duration::from_millis(250)),
        key_prefix: raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| "warden:".to_owned()),
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn limits(
    raw: &[Spanned<RawLimit>],
    route_names: &[Arc<str>],
    errors: &mut Collector<'_>,
) -> Vec<LimitPolicy> {
    let mut out: Vec<LimitPolicy> = Vec::new();
    for (i, spanned) in raw.iter().enumerate() {
        let r = spanned.get_ref();
        let field = |f: &str| format!("limits[{i}].{f}");
        let before = errors.errors.len();
        if out.iter().any(|p| p.name.as_ref() == r.name) {
            errors.at(
                spanned.span(),
                field("name"),
                format!("limit `{}` is defined twice", r.name),
            );
        }
        let key: Vec<_> = r
            .key
            .get_ref()
            .iter()
            .filter_map(|k| {
                parse_key_part(k)
                    .map_err(|e| errors.at(r.key.span(), field("key"), e.to_string()))
                    .ok()
            })
            .collect();
        if r.key.get_ref().is_empty() {
            errors.at(
                r.key.span(),
                field("key"),
                "a limit needs a key, such as [\"client\"]",
            );
        }
        if *r.limit.get_ref() == 0 {
            errors.at(
                r.limit.span(),
                field("limit"),
                "a limit of 0 refuses everything; remove the route instead",
            );
        }
        let window = parse_duration(&r.window, &field("window"), errors).filter(|w| {
            let ok = !w.is_zero();
            if !ok {
                errors.at(
                    r.window.span(),
                    field("window"),
                    "the window must be longer than zero",
                );
            }
            ok
        });
        let routes = r.routes.as_ref().map(|list| {
            for name in list.get_ref() {
                if !route_names.iter().any(|n| n.as_ref() == name) {
                    errors.at(
                        list.span(),
                        field("routes"),
                        format!("no route named `{name}`"),
                    );
                }
            }
            list.get_ref()
                .iter()
                .map(|n| Arc::from(n.as_str()))
                .collect()
        });
        let burst = r
            .burst
            .as_ref()
            .map_or(*r.limit.get_ref(), |b| *b.get_ref());
        if burst == 0 {
            errors.at(
                r.burst.as_ref().map_or(spanned.span(), Spanned::span),
                field("burst"),
                "the burst must be at least 1",
            );
        }
        if errors.errors.len() != before {
            continue;
        }
        if let Some(window) = window {
            let quota = Quota {
                limit: *r.limit.get_ref(),
                window_us: micros(window),
                burst,
            };
            out.push(LimitPolicy {
                name: Arc::from(r.name.as_str()),
                key,
                quota,
                routes,
            });
        }
    }
    out
}

pub(super) fn bans(
    raw: Option<&Spanned<RawBans>>,
    errors: &mut Collector<'_>,
) -> Option<BanPolicy> {
    let b = raw?.get_ref();
    let window = parse_duration(&b.window, "bans.window", errors)?;
    let duration = parse_duration(&b.duration, "bans.duration", errors)?;
    if *b.failures.get_ref() == 0 || window.is_zero() || duration.is_zero() {
        errors.at(
            b.failures.span(),
            "bans",
            "failures, window and duration must all be above zero",
        );
        return None;
    }
    Some(BanPolicy {
        failures: *b.failures.get_ref(),
        window_us: micros(window),
        duration_us: micros(duration),
    })
}
