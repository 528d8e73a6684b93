//! Where alerts go: each webhook has its own task and its own bounded queue (a webhook that
//! is down or slow delays only its own alerts; when its queue is full, alerts are dropped
//! and counted in `warden_alerts_dropped_total`); the syslog line is one non-blocking UDP
//! datagram sent from the live thread.
//!
//! A delivery is retried on a connection error, a timeout, a 408, a 429 or a 5xx, up to
//! the webhook's `retries`, after 250 ms, 500 ms, 1 s… (at most 10 s between attempts).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use warden_core::config::{AlertSettings, Webhook};

use super::LiveMetrics;
use super::alerts::Alert;

/// How many alerts may wait for one webhook.
pub const QUEUE: usize = 64;
/// The first pause between attempts; it doubles after each.
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// The longest syslog line sent (RFC 5424 receivers must take 480 bytes, most take 2 KiB).
const MAX_SYSLOG: usize = 2048;

/// The queues of the alert targets; the live thread puts alerts in them.
#[derive(Debug, Default)]
pub struct Outbox {
    webhooks: Vec<mpsc::Sender<Arc<Alert>>>,
    syslog: Option<(UdpSocket, SocketAddr)>,
}

impl Outbox {
    /// An outbox that sends nothing (no targets configured).
    #[must_use]
    pub fn none() -> Self {
        Self::default()
    }

    /// Offer `alert` to every target without waiting.
    pub(crate) fn send(&self, alert: &Alert, metrics: &LiveMetrics) {
        if self.webhooks.is_empty() && self.syslog.is_none() {
            return;
        }
        let shared = Arc::new(alert.clone());
        for queue in &self.webhooks {
            if queue.try_send(Arc::clone(&shared)).is_err() {
                metrics.alerts_dropped.with_label_values(&["webhook"]).inc();
                tracing::warn!(rule = %alert.rule, key = %alert.key, "alert dropped: the webhook's queue is full");
            }
        }
        if let Some((socket, addr)) = &self.syslog {
            let line = syslog_line(alert);
            let result = match socket.send_to(line.as_bytes(), addr) {
                Ok(_) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, %addr, "syslog alert not sent");
                    "failed"
                }
            };
            metrics
                .deliveries
                .with_label_values(&["syslog", result])
                .inc();
        }
    }
}

/// Start one delivery task per webhook (on the current tokio runtime) and open the syslog
/// socket.
///
/// # Errors
/// When the HTTP client or the UDP socket cannot be made.
pub fn start(settings: &AlertSettings, metrics: &LiveMetrics) -> std::io::Result<Outbox> {
    let mut outbox = Outbox::default();
    if !settings.webhooks.is_empty() {
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(std::io::Error::other)?;
        for webhook in &settings.webhooks {
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(deliver(
                client.clone(),
                webhook.clone(),
                rx,
                metrics.clone(),
            ));
            outbox.webhooks.push(tx);
        }
    }
    if let Some(addr) = settings.syslog {
        let local: SocketAddr = if addr.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.set_nonblocking(true)?;
        outbox.syslog = Some((socket, addr));
    }
    Ok(outbox)
}

async fn deliver(
    client: reqwest::Client,
    webhook: Webhook,
    mut queue: mpsc::Receiver<Arc<Alert>>,
    metrics: LiveMetrics,
) {
    while let Some(alert) = queue.recv().await {
        let Ok(body) = serde_json::to_vec(&*alert) else {
            continue;
        };
        let mut pause = FIRST_BACKOFF;
        let mut attempt = 0;
        loop {
            let sent = client
                .post(&webhook.url)
                .timeout(webhook.timeout)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(
                    http::header::USER_AGENT,
                    concat!("warden/", env!("CARGO_PKG_VERSION")),
                )
                .body(body.clone())
                .send()
                .await;
            let retry = match &sent {
                Ok(answer) if answer.status().is_success() => {
                    metrics
                        .deliveries
                        .with_label_values(&["webhook", "ok"])
                        .inc();
                    break;
                }
                Ok(answer) => {
                    let s = answer.status();
                    s.is_server_error() || s.as_u16() == 408 || s.as_u16() == 429
                }
                Err(_) => true,
            };
            if !retry || attempt >= webhook.retries {
                metrics
                    .deliveries
                    .with_label_values(&["webhook", "failed"])
                    .inc();
                let outcome = match sent {
                    Ok(answer) => answer.status().to_string(),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(url = %webhook.url, rule = %alert.rule, attempts = attempt + 1, %outcome, "alert not delivered");
                break;
            }
            metrics
                .deliveries
                .with_label_values(&["webhook", "retry"])
                .inc();
            attempt += 1;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }
}

/// The alert as one RFC 5424 syslog line (facility authpriv, severity warning) whose
/// message is a CEF event.
#[must_use]
pub fn syslog_line(alert: &Alert) -> String {
    // PRI = facility 10 (authpriv) × 8 + severity 4 (warning).
    let time = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned());
    let reasons: Vec<String> = alert
        .top_reasons
        .iter()
        .map(|r| format!("{}:{}", r.reason, r.count))
        .collect();
    let mut extension = format!(
        "rt={} cnt={} cs1Label=rule cs1={} cs2Label=key cs2={} cs3Label=reasons cs3={} cs4Label=window cs4={}s cs5Label=decisions cs5={}",
        cef_value(&alert.to),
        alert.count,
        cef_value(&alert.rule),
        cef_value(&alert.key),
        cef_value(&reasons.join(",")),
        alert.window_seconds,
        cef_value(&alert.sample_decision_ids.join(",")),
    );
    match alert.what {
        "client" => extension.push_str(&format!(" src={}", cef_value(&alert.key))),
        "subject" => extension.push_str(&format!(" suser={}", cef_value(&alert.key))),
        _ => {}
    }
    let mut line = format!(
        "<84>1 {time} {host} warden {} alert - CEF:0|warden|warden|{}|refusals_by_{}|{}|7|{extension}",
        std::process::id(),
        env!("CARGO_PKG_VERSION"),
        alert.what,
        cef_header(&format!(
            "more than {} refusals by {} in {}s",
            alert.threshold, alert.what, alert.window_seconds
        )),
    );
    if line.len() > MAX_SYSLOG {
        let mut end = MAX_SYSLOG;
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line.truncate(end);
    }
    line
}

/// A CEF header field: `\` and `|` escaped, no line breaks.
fn cef_header(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\r', '\n'], " ")
}

/// A CEF extension value: `\` and `=` escaped, line breaks as `\n`.
fn cef_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('=', "\\=")
        .replace("\r\n", "\\n")
        .replace(['\r', '\n'], "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::alerts::ReasonCount;

    #[test]
    fn the_syslog_line_is_rfc5424_with_an_escaped_cef_payload() {
        let alert = Alert {
            id: "a".into(),
            rule: Arc::from("spray|x"),
            what: "subject",
            key: "eve=1\nroot".into(),
            count: 4,
            threshold: 3,
            window_seconds: 60,
            from: "2026-12-02T04:00:00.000Z".into(),
            to: "2026-12-02T04:00:01.000Z".into(),
            top_reasons: vec![ReasonCount {
                reason: "forbidden",
                status: 403,
                count: 4,
            }],
            sample_decision_ids: vec!["d1".into(), "d2".into()],
        };
        let line = syslog_line(&alert);
        assert!(line.starts_with("<84>1 "), "{line}");
        assert!(line.contains(" warden "), "{line}");
        assert!(line.contains("CEF:0|warden|warden|"), "{line}");
        assert!(
            line.contains("|refusals_by_subject|more than 3 refusals by subject in 60s|7|"),
            "{line}"
        );
        assert!(line.contains("cs1=spray|x "), "{line}");
        assert!(line.contains("suser=eve\\=1\\nroot"), "{line}");
        assert!(line.contains("cs3=forbidden:4 "), "{line}");
        assert!(!line.contains('\n'));
    }
}
