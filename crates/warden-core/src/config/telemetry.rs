//! `[tracing]`: where the gateway sends its OpenTelemetry spans, and what they may say of
//! the subject. Only a server reads it (`ServeSettings::tracing`); without the section the
//! gateway builds no span at all.

use std::path::Path;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use toml::Spanned;

use super::error::Collector;
use super::parse_duration;
use super::raw::RawTracing;
use super::tls::{KeyPair, key_pair, read_certificates};

/// What a span says of the request's subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SubjectInSpans {
    /// The first 16 bytes of the subject's SHA-256, in hex: the same subject is the same
    /// value across spans, but the subject itself is not sent (the default).
    #[default]
    Hash,
    /// No subject attribute.
    Omit,
    /// The subject as it is.
    Raw,
}

/// TLS to the collector, for an `https` endpoint.
#[derive(Debug, Clone)]
pub struct CollectorTls {
    /// The CA certificates the collector's certificate must chain to; empty: the system's.
    pub roots: Vec<CertificateDer<'static>>,
    /// The certificate warden presents, when the collector asks for one.
    pub client: Option<KeyPair>,
}

impl PartialEq for CollectorTls {
    /// The same roots and the same client certificate and key (a reload compares settings
    /// to say what needs a restart).
    fn eq(&self, other: &Self) -> bool {
        let same_client = match (&self.client, &other.client) {
            (None, None) => true,
            (Some(a), Some(b)) => a.chain == b.chain && a.key.secret_der() == b.key.secret_der(),
            _ => false,
        };
        self.roots == other.roots && same_client
    }
}

impl Eq for CollectorTls {}

/// The OTLP export of request spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TracingSettings {
    /// The collector's OTLP/gRPC endpoint (`http://host:4317`, or `https://` with TLS).
    pub endpoint: String,
    /// TLS to the collector, for an `https` endpoint.
    pub tls: Option<CollectorTls>,
    /// The `service.name` resource attribute (`warden` by default).
    pub service_name: String,
    /// What spans say of the subject.
    pub subject: SubjectInSpans,
    /// Spans waiting for export at most; past it spans are dropped and counted (2048).
    pub queue: usize,
    /// Spans in one export at most (512).
    pub batch: usize,
    /// How long a span may wait for a batch to fill (1 s).
    pub interval: Duration,
    /// How long one export may take before it counts as failed (5 s).
    pub export_timeout: Duration,
}

pub(super) fn settings(
    section: &Spanned<RawTracing>,
    base_dir: &Path,
    errors: &mut Collector<'_>,
) -> Option<TracingSettings> {
    let t = section.get_ref();
    let endpoint = t.endpoint.get_ref().trim();
    let endpoint_ok = endpoint
        .parse::<http::Uri>()
        .ok()
        .filter(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.authority().is_some());
    if endpoint_ok.is_none() {
        errors.at(
            t.endpoint.span(),
            "tracing.endpoint",
            "expected the collector's OTLP/gRPC address such as http://127.0.0.1:4317 \
             or https://collector.example:4317",
        );
    }
    let https = endpoint_ok
        .as_ref()
        .is_some_and(|u| u.scheme_str() == Some("https"));
    let tls = if https {
        Some(CollectorTls {
            roots: t
                .ca
                .as_ref()
                .and_then(|ca| read_certificates(base_dir, ca, "tracing.ca", errors))
                .unwrap_or_default(),
            client: t.client_certificate.as_ref().and_then(|pair| {
                let pair = pair.get_ref();
                key_pair(
                    base_dir,
                    (&pair.cert, &pair.key),
                    "tracing.client_certificate",
                    errors,
                )
            }),
        })
    } else {
        let fields = [
            t.ca.as_ref().map(|v| (v.span(), "tracing.ca")),
            t.client_certificate
                .as_ref()
                .map(|v| (v.span(), "tracing.client_certificate")),
        ];
        for (span, field) in fields.into_iter().flatten() {
            errors.at(span, field, "TLS settings need an https endpoint");
        }
        None
    };
    let subject = match t.subject.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "hash")) => SubjectInSpans::Hash,
        Some((_, "omit")) => SubjectInSpans::Omit,
        Some((_, "raw")) => SubjectInSpans::Raw,
        Some((s, _)) => {
            errors.at(
                s.span(),
                "tracing.subject",
                "expected `hash`, `omit` or `raw`",
            );
            SubjectInSpans::Hash
        }
    };
    let count =
        |v: Option<&Spanned<usize>>, field: &str, default: usize, errors: &mut Collector<'_>| {
            match v {
                None => default,
                Some(n) if (1..=1_000_000).contains(n.get_ref()) => *n.get_ref(),
                Some(n) => {
                    errors.at(n.span(), field, "expected a number from 1 to 1000000");
                    default
                }
            }
        };
    let queue = count(t.queue.as_ref(), "tracing.queue", 2048, errors);
    let batch = count(t.batch.as_ref(), "tracing.batch", 512, errors);
    if let Some(b) = t.batch.as_ref().filter(|_| batch > queue) {
        errors.at(b.span(), "tracing.batch", "must not exceed `queue`");
    }
    let duration = |v: Option<&Spanned<String>>,
                    field: &str,
                    default: Duration,
                    errors: &mut Collector<'_>| {
        v.and_then(|v| parse_duration(v, field, errors))
            .unwrap_or(default)
    };
    let interval = duration(
        t.interval.as_ref(),
        "tracing.interval",
        Duration::from_secs(1),
        errors,
    );
    let export_timeout = duration(
        t.export_timeout.as_ref(),
        "tracing.export_timeout",
        Duration::from_secs(5),
        errors,
    );
    let service_name = match &t.service_name {
        None => "warden".to_owned(),
        Some(name) if name.get_ref().trim().is_empty() => {
            errors.at(name.span(), "tracing.service_name", "must not be empty");
            "warden".to_owned()
        }
        Some(name) => name.get_ref().trim().to_owned(),
    };
    endpoint_ok.map(|_| TracingSettings {
        endpoint: endpoint.to_owned(),
        tls,
        service_name,
        subject,
        queue,
        batch,
        interval,
        export_timeout,
    })
}
