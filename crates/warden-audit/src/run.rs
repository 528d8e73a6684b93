//! Plan the requests, check them against the safety limits, send them.
//!
//! Safety first: every URL's host must be on the allow list, unsafe methods need
//! `allow_unsafe`, the whole plan must fit the budget before anything is sent, requests
//! are paced at `rate` per second, and redirects are never followed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore};

use crate::error::AuditError;
use crate::expect::Expectations;
use crate::identity::Identity;
use crate::operation::Operation;
use crate::rules::Answer;

/// At most this much of a body is read.
const MAX_BODY: usize = 64 * 1024;
/// Evidence keeps this much of a body.
const EXCERPT: usize = 512;

/// The limits of one audit.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Hosts requests may go to.
    pub hosts: Vec<String>,
    /// Requests per second; 0 lifts the limit.
    pub rate: f64,
    /// The most requests the audit may send.
    pub budget: usize,
    /// Send POST, PUT, PATCH and DELETE.
    pub allow_unsafe: bool,
    /// Time limit of one request.
    pub timeout: Duration,
}

/// Why a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The cell of the matrix: the identity's own object, or the document's example.
    Main,
    /// The same operation on an object that surely does not exist.
    Missing,
    /// Another identity's object (the index of that identity).
    ObjectOf(usize),
}

/// One planned request.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Index of the operation.
    pub op: usize,
    /// Index of the identity.
    pub identity: usize,
    /// Why.
    pub purpose: Purpose,
    /// Where.
    pub url: reqwest::Url,
}

/// A request and its answer, as a finding shows them.
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// Who asked.
    pub identity: String,
    /// `METHOD URL`.
    pub request: String,
    /// The credential sent, redacted.
    pub credential: Option<String>,
    /// The status.
    pub status: u16,
    /// The response headers.
    pub headers: Vec<(String, String)>,
    /// The beginning of the body.
    pub body: String,
}

/// A sent probe with its answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// What was sent.
    pub probe: Probe,
    /// What came back.
    pub answer: Answer,
    /// Both, as evidence.
    pub evidence: Evidence,
}

/// An operation left out, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    /// The operation id.
    pub operation: String,
    /// Why.
    pub reason: String,
}

/// The plan: probes, and the operations left out.
#[derive(Debug, Clone)]
pub struct Plan {
    /// In sending order.
    pub probes: Vec<Probe>,
    /// Left out.
    pub skipped: Vec<Skipped>,
}

/// Plan every request.
///
/// # Errors
/// [`AuditError::OverBudget`] when the plan needs more requests than the budget,
/// [`AuditError::Usage`] for a base URL that cannot take a path.
pub fn plan(
    base: &reqwest::Url,
    operations: &[Operation],
    identities: &[Identity],
    expectations: &Expectations,
    limits: &Limits,
) -> Result<Plan, AuditError> {
    let mut probes = Vec::new();
    let mut skipped = Vec::new();
    for (o, op) in operations.iter().enumerate() {
        if op.is_unsafe() && !limits.allow_unsafe {
            skipped.push(Skipped {
                operation: op.id.clone(),
                reason: format!(
                    "{} changes state: pass --allow-unsafe to send it",
                    op.method
                ),
            });
            continue;
        }
        let url_of = |values: &dyn Fn(&crate::operation::PathParam) -> String| {
            url(base, op, &op.concrete_path(values))
        };
        let main_url = url_of(&|p| p.default_value())?;
        if let Some(host) = main_url.host_str()
            && !limits.hosts.iter().any(|h| same_host(h, host))
        {
            skipped.push(Skipped {
                operation: op.id.clone(),
                reason: format!("the host `{host}` is not in the --host allow list"),
            });
            continue;
        }
        for (i, identity) in identities.iter().enumerate() {
            if identity.forged {
                if op.requires_auth == Some(true) {
                    probes.push(Probe {
                        op: o,
                        identity: i,
                        purpose: Purpose::Main,
                        url: main_url.clone(),
                    });
                }
                continue;
            }
            let own = expectations.object_of(&identity.name, op);
            let main = match &own {
                Some(values) => url_of(&|p| {
                    values
                        .get(&p.name)
                        .cloned()
                        .unwrap_or_else(|| p.default_value())
                })?,
                None => main_url.clone(),
            };
            probes.push(Probe {
                op: o,
                identity: i,
                purpose: Purpose::Main,
                url: main.clone(),
            });
            if op.params.is_empty() {
                continue;
            }
            probes.push(Probe {
                op: o,
                identity: i,
                purpose: Purpose::Missing,
                url: url_of(&|p| p.missing().to_owned())?,
            });
            for (j, owner) in identities.iter().enumerate() {
                if j == i {
                    continue;
                }
                let Some(values) = expectations.object_of(&owner.name, op) else {
                    continue;
                };
                let theirs = url_of(&|p| {
                    values
                        .get(&p.name)
                        .cloned()
                        .unwrap_or_else(|| p.default_value())
                })?;
                if theirs != main {
                    probes.push(Probe {
                        op: o,
                        identity: i,
                        purpose: Purpose::ObjectOf(j),
                        url: theirs,
                    });
                }
            }
        }
    }
    if probes.len() > limits.budget {
        return Err(AuditError::OverBudget {
            needed: probes.len(),
            budget: limits.budget,
        });
    }
    Ok(Plan { probes, skipped })
}

/// Host names compare without case; IPv6 addresses with or without their brackets.
pub(crate) fn same_host(a: &str, b: &str) -> bool {
    let bare = |h: &str| {
        h.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

fn url(base: &reqwest::Url, op: &Operation, path: &str) -> Result<reqwest::Url, AuditError> {
    if let Some(recorded) = &op.url {
        return reqwest::Url::parse(recorded)
            .map_err(|e| AuditError::Usage(format!("`{recorded}`: {e}")));
    }
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(op.query.as_deref());
    Ok(url)
}

/// What was sent: the answers in the order of the plan, and the requests that ran out of
/// time (the target answered others, so it is up; their cells stay empty).
#[derive(Debug, Clone, Default)]
pub struct Sent {
    /// Answered probes.
    pub exchanges: Vec<Exchange>,
    /// Probes without an answer within the time limit, as the report lists them.
    pub timed_out: Vec<Skipped>,
}

/// Send every probe: the first alone (an unreachable target is one error), then the rest
/// concurrently, paced at the rate.
///
/// # Errors
/// [`AuditError::Unreachable`] when the first request gets no answer, or any request
/// cannot connect.
pub async fn send(
    probes: &[Probe],
    operations: &[Operation],
    identities: &[Identity],
    limits: &Limits,
) -> Result<Sent, AuditError> {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(limits.timeout)
        .build()
        .map_err(|e| AuditError::Usage(format!("cannot build an HTTP client: {e}")))?;
    let pace = Arc::new(Pace::new(limits.rate));
    let Some((first, rest)) = probes.split_first() else {
        return Ok(Sent::default());
    };
    let mut out = Vec::with_capacity(probes.len());
    out.push(
        one(&client, &pace, first, operations, identities)
            .await
            .map_err(|f| f.error)?,
    );
    let mut timed_out = Vec::new();
    let in_flight = Arc::new(Semaphore::new(if limits.rate > 0.0 { 4 } else { 16 }));
    let mut tasks = tokio::task::JoinSet::new();
    let operations: Arc<[Operation]> = operations.into();
    let identities: Arc<[Identity]> = identities.into();
    for (n, probe) in rest.iter().enumerate() {
        let (client, pace, in_flight) = (client.clone(), pace.clone(), in_flight.clone());
        let (probe, operations, identities) =
            (probe.clone(), operations.clone(), identities.clone());
        tasks.spawn(async move {
            let _permit = in_flight.acquire_owned().await;
            (
                n,
                one(&client, &pace, &probe, &operations, &identities).await,
            )
        });
    }
    let mut answers: Vec<Option<Exchange>> = vec![None; rest.len()];
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((n, Ok(exchange))) => {
                if let Some(slot) = answers.get_mut(n) {
                    *slot = Some(exchange);
                }
            }
            Ok((n, Err(f))) if f.timeout => {
                if let Some(probe) = rest.get(n) {
                    timed_out.push(Skipped {
                        operation: operations
                            .get(probe.op)
                            .map_or_else(String::new, |o| o.id.clone()),
                        reason: format!(
                            "as {}: {} got no answer within {:?}",
                            identities
                                .get(probe.identity)
                                .map_or("?", |i| i.name.as_str()),
                            probe.url,
                            limits.timeout
                        ),
                    });
                }
            }
            Ok((_, Err(f))) => {
                failure.get_or_insert(f.error);
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                failure.get_or_insert(AuditError::Usage(format!("a request task failed: {e}")));
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    out.extend(answers.into_iter().flatten());
    timed_out.sort_by(|a, b| (&a.operation, &a.reason).cmp(&(&b.operation, &b.reason)));
    Ok(Sent {
        exchanges: out,
        timed_out,
    })
}

/// A request that got no answer; `timeout` when the time limit ran out (the target
/// accepted the connection).
#[derive(Debug)]
struct Failure {
    timeout: bool,
    error: AuditError,
}

async fn one(
    client: &reqwest::Client,
    pace: &Pace,
    probe: &Probe,
    operations: &[Operation],
    identities: &[Identity],
) -> Result<Exchange, Failure> {
    let (Some(op), Some(identity)) = (operations.get(probe.op), identities.get(probe.identity))
    else {
        return Err(Failure {
            timeout: false,
            error: AuditError::Usage("a probe names no operation".to_owned()),
        });
    };
    pace.wait().await;
    let mut request = client.request(op.method.clone(), probe.url.clone());
    for (name, value) in &op.headers {
        request = request.header(name, value);
    }
    if let Some((name, value)) = &identity.credential {
        request = request.header(name, value);
    }
    if let Some((media_type, body)) = &op.body {
        request = request
            .header(http::header::CONTENT_TYPE, media_type)
            .body(body.clone());
    }
    // reqwest's own message repeats the URL; its causes say what failed.
    let unreachable = |e: reqwest::Error| Failure {
        timeout: e.is_timeout(),
        error: AuditError::Unreachable {
            url: probe.url.to_string(),
            reason: match std::error::Error::source(&e) {
                Some(cause) if e.is_connect() || e.is_request() => error_chain(cause),
                _ => error_chain(&e),
            },
        },
    };
    let Answer {
        status,
        headers,
        body,
    } = fetch(request).await.map_err(unreachable)?;
    let excerpt = String::from_utf8_lossy(body.get(..body.len().min(EXCERPT)).unwrap_or_default())
        .into_owned();
    let evidence = Evidence {
        identity: identity.name.clone(),
        request: format!("{} {}", op.method, probe.url),
        credential: identity.redacted(),
        status: status.as_u16(),
        headers: headers
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    redact(n, &String::from_utf8_lossy(v.as_bytes())),
                )
            })
            .collect(),
        body: excerpt,
    };
    Ok(Exchange {
        probe: probe.clone(),
        answer: Answer {
            status,
            headers,
            body,
        },
        evidence,
    })
}

/// Send a request and read its answer: the status, the headers and at most 64 KiB of the
/// body (a body that breaks off is kept as far as it came). `warden probe` fetches with it
/// too.
///
/// # Errors
/// When the request cannot be sent or no answer comes in time.
pub async fn fetch(request: reqwest::RequestBuilder) -> Result<Answer, reqwest::Error> {
    let mut response = request.send().await?;
    let status = response.status();
    let headers: HeaderMap = response.headers().clone();
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= MAX_BODY {
            body.truncate(MAX_BODY);
            break;
        }
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// A response header as evidence shows it: the values of cookies and credentials the
/// target hands out are not copied into reports (a cookie keeps its name).
fn redact(name: &http::HeaderName, value: &str) -> String {
    match name.as_str() {
        "set-cookie" => match value.split_once('=') {
            Some((cookie, _)) => format!("{cookie}=… (redacted)"),
            None => "… (redacted)".to_owned(),
        },
        "authorization" | "proxy-authorization" | "x-api-key" | "cookie" => {
            "… (redacted)".to_owned()
        }
        _ => value.to_owned(),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Requests at most `rate` per second: each takes the next slot.
#[derive(Debug)]
struct Pace {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pace {
    fn new(rate: f64) -> Self {
        let interval =
            (rate > 0.0 && rate.is_finite()).then(|| Duration::from_secs_f64(1.0 / rate));
        Self {
            interval,
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_the_target_sets_are_redacted() {
        let set_cookie = http::header::SET_COOKIE;
        assert_eq!(
            redact(&set_cookie, "sid=secret; HttpOnly"),
            "sid=… (redacted)"
        );
        assert_eq!(
            redact(&http::header::CONTENT_TYPE, "text/plain"),
            "text/plain"
        );
    }
}
