//! The Cedar context of a request. Cedar has no clock: warden passes the time as a
//! `datetime`, and the local hour, minute and day of week for the configured time zone.
//!
//! ```text
//! context = {
//!   ip: ipaddr,                 // the client address
//!   now: datetime,              // UTC
//!   local: { hour: Long, minute: Long, day_of_week: String, weekday: Long, date: String },
//!   scopes: Set<String>,
//!   method: String,
//!   path: String,               // normalized
//!   params: { <name>: String }, // path parameters
//!   auth_source: String,
//! }
//! ```

use cedar_policy::{Context, RestrictedExpression};
use serde_json::Value;

use super::AuthzInput;

pub(super) fn build(input: &AuthzInput<'_>, tz: &jiff::tz::TimeZone) -> Result<Context, String> {
    let timestamp = jiff::Timestamp::from_millisecond(input.now_ms).map_err(|e| e.to_string())?;
    let local = timestamp.to_zoned(tz.clone());
    let weekday = local.weekday();
    let local_record = RestrictedExpression::new_record([
        (
            "hour".to_owned(),
            RestrictedExpression::new_long(i64::from(local.hour())),
        ),
        (
            "minute".to_owned(),
            RestrictedExpression::new_long(i64::from(local.minute())),
        ),
        (
            "day_of_week".to_owned(),
            RestrictedExpression::new_string(format!("{weekday:?}")),
        ),
        (
            "weekday".to_owned(),
            RestrictedExpression::new_long(i64::from(weekday.to_monday_one_offset())),
        ),
        (
            "date".to_owned(),
            RestrictedExpression::new_string(local.date().to_string()),
        ),
    ])
    .map_err(|e| e.to_string())?;
    let params = RestrictedExpression::new_record(
        input
            .params
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
    )
    .map_err(|e| e.to_string())?;
    Context::from_pairs([
        ("ip".to_owned(), ip_expression(input.client)),
        (
            "now".to_owned(),
            datetime_expression(input.now_ms, timestamp),
        ),
        ("local".to_owned(), local_record),
        (
            "scopes".to_owned(),
            RestrictedExpression::new_set(
                input
                    .identity
                    .scopes
                    .iter()
                    .map(|s| RestrictedExpression::new_string(s.clone())),
            ),
        ),
        (
            "method".to_owned(),
            RestrictedExpression::new_string(input.method.to_owned()),
        ),
        (
            "path".to_owned(),
            RestrictedExpression::new_string(input.path.to_owned()),
        ),
        ("params".to_owned(), params),
        (
            "auth_source".to_owned(),
            RestrictedExpression::new_string(input.identity.source.to_string()),
        ),
    ])
    .map_err(|e| e.to_string())
}

/// The `ip` value of an address. Cedar parses the extension function's name anew each time
/// an `ip(…)` expression is made, which costs more than the rest of the context together; the
/// expressions of recent client addresses are kept per thread (a small bounded map).
fn ip_expression(address: std::net::IpAddr) -> RestrictedExpression {
    const MAX: usize = 1024;
    thread_local! {
        static RECENT: std::cell::RefCell<std::collections::HashMap<std::net::IpAddr, RestrictedExpression>> =
            std::cell::RefCell::new(std::collections::HashMap::new());
    }
    RECENT.with(|recent| {
        let mut recent = recent.borrow_mut();
        if let Some(expr) = recent.get(&address) {
            return expr.clone();
        }
        let expr = RestrictedExpression::new_ip(address.to_string());
        if recent.len() >= MAX {
            recent.clear();
        }
        recent.insert(address, expr.clone());
        expr
    })
}

/// The `datetime` value of the decision's time, kept for the current millisecond per
/// thread: under load many decisions share one (the same cost as `ip_expression` saves).
fn datetime_expression(now_ms: i64, timestamp: jiff::Timestamp) -> RestrictedExpression {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(i64, RestrictedExpression)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some((ms, expr)) if *ms == now_ms => expr.clone(),
            _ => {
                let text = timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
                let expr = RestrictedExpression::new_datetime(text);
                *last = Some((now_ms, expr.clone()));
                expr
            }
        }
    })
}

/// A JSON claim as a Cedar value: strings, integers, booleans, arrays (sets) and objects
/// (records). Floats and nulls have no Cedar counterpart and are refused.
pub(super) fn json_to_expr(value: &Value) -> Result<RestrictedExpression, String> {
    Ok(match value {
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(
            n.as_i64()
                .ok_or_else(|| format!("{n} is not a Cedar Long"))?,
        ),
        Value::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(json_to_expr)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .map(|(k, v)| json_to_expr(v).map(|e| (k.clone(), e)))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .map_err(|e| e.to_string())?,
        Value::Null => return Err("null has no Cedar value".to_owned()),
    })
}
