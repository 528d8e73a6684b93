//! When and how long to wait before sending a request again after a 429 or a 503.
//!
//! The server's word comes first: `Retry-After` (RFC 9110 §10.2.3) as delta-seconds or an
//! HTTP-date, then the `RateLimit` field of the IETF httpapi draft (`"name";r=0;t=N`: no
//! quota remaining, reset in N seconds). Only when the server says nothing does the client
//! choose, with exponential backoff and full jitter: a uniformly random wait between zero and
//! `min(max_wait, base × 2^retry)`. A server that asks for longer than
//! [`RetryPolicy::max_wait`] is not waited for at all: the caller gets the 429 or 503 at once.

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Method};

/// How the middleware retries 429 and 503 answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Requests sent at most for one call, the first included (`1` never retries). The
    /// single retry after a token refresh is not counted.
    pub max_attempts: u32,
    /// The longest single wait. A `Retry-After` (or `RateLimit` reset) beyond it ends the
    /// call at once with the 429/503; computed backoff is capped at it.
    pub max_wait: Duration,
    /// The first backoff step when the server gives no wait; doubled on every retry.
    pub base: Duration,
    /// Also retry methods that are not idempotent (POST, PATCH, …). Off by default: a 429
    /// or 503 does not prove the server did nothing.
    pub retry_non_idempotent: bool,
}

impl Default for RetryPolicy {
    /// Three attempts, waits of at most 10 s, backoff from 250 ms, idempotent methods only.
    fn default() -> Self {
        Self {
            max_attempts: 3,
            max_wait: Duration::from_secs(10),
            base: Duration::from_millis(250),
            retry_non_idempotent: false,
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries a 429 or 503 (the token refresh still happens).
    #[must_use]
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// Whether a request with this method may be sent again under this policy.
    #[must_use]
    pub fn allows(&self, method: &Method) -> bool {
        self.retry_non_idempotent || is_idempotent(method)
    }

    /// The client-chosen wait before retry number `retry` (0 for the first retry): full
    /// jitter over `[0, min(max_wait, base × 2^retry)]`.
    #[must_use]
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = backoff_ceiling(self.base, self.max_wait, retry);
        ceiling.mul_f64(fastrand::f64())
    }
}

/// The upper bound of the backoff before retry number `retry`: `min(cap, base × 2^retry)`.
#[must_use]
pub fn backoff_ceiling(base: Duration, cap: Duration, retry: u32) -> Duration {
    let factor = 1u32.checked_shl(retry).unwrap_or(u32::MAX);
    base.saturating_mul(factor).min(cap)
}

/// Whether a method is idempotent (RFC 9110 §9.2.2): GET, HEAD, OPTIONS, PUT, DELETE, TRACE.
#[must_use]
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// The wait a response asks for: `Retry-After`, else a `RateLimit` item with no remaining
/// quota. `None` when neither says anything readable.
#[must_use]
pub fn server_wait(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, now));
    retry_after.or_else(|| {
        headers
            .get_all("ratelimit")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(rate_limit_reset)
            .max()
    })
}

/// A `Retry-After` value: delta-seconds or an HTTP-date (a date in the past is no wait).
/// `None` for anything else.
#[must_use]
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // delta-seconds: a number too large for u64 is still "very long".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The reset of a `RateLimit` field (IETF httpapi ratelimit-headers draft) whose quota is
/// exhausted: the largest `t` among items with `r=0`. `None` when no item is exhausted.
#[must_use]
pub fn rate_limit_reset(value: &str) -> Option<Duration> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|item| {
            let mut remaining = None;
            let mut reset = None;
            for param in split_outside_quotes(item, ';').into_iter().skip(1) {
                let Some((name, v)) = param.split_once('=') else {
                    continue;
                };
                let number = v.trim().parse::<u64>().ok();
                match name.trim() {
                    "r" => remaining = number,
                    "t" => reset = number,
                    _ => {}
                }
            }
            (remaining == Some(0)).then_some(reset).flatten()
        })
        .max()
        .map(Duration::from_secs)
}

/// `value` split on `sep` where it is not inside a quoted string.
fn split_outside_quotes(value: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                out.push(value.get(start..i).unwrap_or_default());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(value.get(start..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn retry_after_in_seconds() {
        let now = SystemTime::now();
        assert_eq!(retry_after("1", now), Some(Duration::from_secs(1)));
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("0", now), Some(Duration::ZERO));
        assert_eq!(
            retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_as_an_http_date() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        // The obsolete formats httpdate accepts are fine too.
        assert_eq!(
            retry_after("Sunday, 06-Nov-94 08:49:38 GMT", now),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn garbage_retry_after_is_none() {
        let now = SystemTime::now();
        for junk in [
            "",
            " ",
            "-1",
            "1.5",
            "soon",
            "1s",
            "+3",
            "Sun, 06 Nov 1994",
            "0x10",
        ] {
            assert_eq!(retry_after(junk, now), None, "{junk:?}");
        }
    }

    #[test]
    fn ratelimit_field_is_a_fallback() {
        assert_eq!(
            rate_limit_reset("\"per-client\";r=0;t=7"),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            rate_limit_reset("\"a,b;c\";r=0;t=3, other;r=0;t=9"),
            Some(Duration::from_secs(9))
        );
        assert_eq!(rate_limit_reset("\"l\";r=2;t=30"), None);
        assert_eq!(rate_limit_reset("garbage"), None);

        let mut h = HeaderMap::new();
        h.insert("ratelimit", HeaderValue::from_static("\"l\";r=0;t=4"));
        assert_eq!(
            server_wait(&h, SystemTime::now()),
            Some(Duration::from_secs(4))
        );
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(
            server_wait(&h, SystemTime::now()),
            Some(Duration::from_secs(2)),
            "Retry-After wins"
        );
        assert_eq!(server_wait(&HeaderMap::new(), SystemTime::now()), None);
    }

    #[test]
    fn backoff_stays_within_bounds_and_jitters() {
        let policy = RetryPolicy {
            max_attempts: 10,
            max_wait: Duration::from_millis(500),
            base: Duration::from_millis(100),
            retry_non_idempotent: false,
        };
        assert_eq!(
            backoff_ceiling(policy.base, policy.max_wait, 0),
            Duration::from_millis(100)
        );
        assert_eq!(
            backoff_ceiling(policy.base, policy.max_wait, 2),
            Duration::from_millis(400)
        );
        assert_eq!(
            backoff_ceiling(policy.base, policy.max_wait, 3),
            Duration::from_millis(500)
        );
        assert_eq!(
            backoff_ceiling(policy.base, policy.max_wait, 200),
            Duration::from_millis(500),
            "no overflow"
        );
        for retry in 0..40 {
            let ceiling = backoff_ceiling(policy.base, policy.max_wait, retry);
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= ceiling);
            }
        }
        let samples: std::collections::HashSet<Duration> =
            (0..50).map(|_| policy.backoff(3)).collect();
        assert!(samples.len() > 10, "full jitter spreads the waits");
    }

    #[test]
    fn only_idempotent_methods_by_default() {
        let policy = RetryPolicy::default();
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(policy.allows(&m.parse().unwrap()), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "PURGE"] {
            assert!(!policy.allows(&m.parse().unwrap()), "{m}");
        }
        let permissive = RetryPolicy {
            retry_non_idempotent: true,
            ..RetryPolicy::default()
        };
        assert!(permissive.allows(&Method::POST));
    }
}
