//! OpenTelemetry tracing of requests: a server span per request with what the decision
//! said, a client span around the upstream exchange whose id goes upstream in
//! `traceparent`, exported over OTLP/gRPC in batches (over TLS to an `https` endpoint,
//! with a client certificate when configured).
//!
//! Built only when `[tracing]` is configured: without it the gateway holds `None` and the
//! request path tests one `Option`, building nothing. The client's `traceparent` is believed
//! only from a trusted proxy (`[gateway] trusted_proxies`, the peers whose forwarding
//! headers are believed); any other client starts a new trace.

mod export;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::{
    SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider, SpanExporter as _};
use rustls_pki_types::PrivateKeyDer;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use warden_core::config::{CollectorTls, SubjectInSpans, TracingSettings};
use warden_core::{Decision, Reason};

use crate::metrics::Metrics;

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the OTLP exporter: {0}")]
pub struct TracingError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The tracer of a running gateway.
#[derive(Debug)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
    subject: SubjectInSpans,
    /// How long the last export may take at shutdown.
    flush_limit: Duration,
    export: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Telemetry {
    /// Start the exporter and its task. The collector is connected lazily: warden starts
    /// while it is down, and spans wait in the queue (or are dropped and counted).
    ///
    /// # Errors
    /// When the exporter cannot be built from the settings.
    pub fn start(settings: &TracingSettings, metrics: Arc<Metrics>) -> Result<Self, TracingError> {
        use opentelemetry_otlp::WithExportConfig as _;
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(settings.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let mut builder = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(settings.endpoint.clone())
            .with_timeout(settings.export_timeout);
        if let Some(tls) = &settings.tls {
            use opentelemetry_otlp::WithTonicConfig as _;
            builder = builder.with_tls_config(client_tls(tls));
        }
        let mut exporter = builder.build()?;
        exporter.set_resource(&resource);
        let (processor, export) = export::QueueProcessor::new(exporter, settings, metrics);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
            .build();
        let tracer = provider.tracer("warden");
        Ok(Self {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
            subject: settings.subject,
            flush_limit: settings.export_timeout + Duration::from_secs(1),
            export: std::sync::Mutex::new(Some(tokio::spawn(export))),
        })
    }

    /// The span of one request, started at `at`; its parent is the client's `traceparent`
    /// when `trusted` (the peer is a trusted proxy), else none. `front_end` is the listener
    /// that decided it (`proxy`, `forward_auth`, `ext_authz`).
    pub(crate) fn request(
        &self,
        method: &http::Method,
        headers: &HeaderMap,
        trusted: bool,
        at: SystemTime,
        front_end: &'static str,
    ) -> RequestTrace<'_> {
        let parent = if trusted {
            self.propagator.extract(&Headers(headers))
        } else {
            Context::new()
        };
        let span = self
            .tracer
            .span_builder(method.as_str().to_owned())
            .with_kind(SpanKind::Server)
            .with_start_time(at)
            .start_with_context(&self.tracer, &parent);
        RequestTrace {
            telemetry: self,
            method: method.as_str().to_owned(),
            front_end,
            cx: parent.with_span(span),
        }
    }

    /// Export what is queued and stop the export task, waiting at most the export timeout.
    pub async fn shutdown(&self) {
        let limit = self.flush_limit;
        let _ = self.provider.shutdown();
        let task = self.export.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("the OTLP export did not finish in time; queued spans are lost");
        }
    }
}

/// tonic's TLS settings for the collector: the configured CA (else the system's roots), and
/// the client certificate when there is one. tonic takes PEM, so the checked DER is written
/// back as PEM here.
fn client_tls(tls: &CollectorTls) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    if tls.roots.is_empty() {
        config = config.with_native_roots();
    }
    for root in &tls.roots {
        config = config.ca_certificate(Certificate::from_pem(pem("CERTIFICATE", root)));
    }
    if let Some(pair) = &tls.client {
        let chain: String = pair.chain.iter().map(|c| pem("CERTIFICATE", c)).collect();
        let label = match pair.key.as_ref() {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        config = config.identity(Identity::from_pem(chain, pem(label, pair.key.secret_der())));
    }
    config
}

/// One PEM block (RFC 7468): the base64 of `der` in lines of 64.
fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// One request's server span.
#[derive(Debug)]
pub(crate) struct RequestTrace<'a> {
    telemetry: &'a Telemetry,
    method: String,
    front_end: &'static str,
    cx: Context,
}

impl RequestTrace<'_> {
    /// Start the client span of the upstream exchange and put its `traceparent` (and the
    /// client's `tracestate`, when its parent was believed) in the upstream request.
    pub(crate) fn upstream(&self, upstream: &str, headers: &mut HeaderMap) -> UpstreamSpan {
        let t = self.telemetry;
        let span = t
            .tracer
            .span_builder(format!("upstream {upstream}"))
            .with_kind(SpanKind::Client)
            .with_attributes([KeyValue::new("warden.upstream", upstream.to_owned())])
            .start_with_context(&t.tracer, &self.cx);
        let cx = self.cx.with_span(span);
        // The client's own trace headers never reach the upstream unless believed: what goes
        // up is this span's.
        headers.remove(TRACEPARENT);
        headers.remove(TRACESTATE);
        t.propagator.inject_context(&cx, &mut HeadersMut(headers));
        UpstreamSpan { cx }
    }

    /// End the span with what the decision said and the status the client got.
    pub(crate) fn finish(
        self,
        decision: &Decision,
        client: IpAddr,
        path: &str,
        status: http::StatusCode,
    ) {
        let span = self.cx.span();
        let outcome = if decision.is_allowed() {
            "allow"
        } else {
            "deny"
        };
        let route = decision.route.as_deref().unwrap_or("");
        let mut attributes = vec![
            KeyValue::new("http.response.status_code", i64::from(status.as_u16())),
            KeyValue::new("url.path", path.to_owned()),
            KeyValue::new("client.address", client.to_string()),
            KeyValue::new("warden.decision.id", decision.id.to_string()),
            KeyValue::new("warden.decision.stage", decision.stage.as_str()),
            KeyValue::new("warden.decision.outcome", outcome),
            KeyValue::new("warden.front_end", self.front_end),
        ];
        if !route.is_empty() {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
            span.update_name(format!("{} {route}", self.method));
        }
        if let Some(reason) = decision.reason() {
            attributes.push(KeyValue::new(
                "warden.decision.reason",
                Reason::code(reason),
            ));
        }
        if let Some(subject) = decision.identity().map(|i| i.subject.as_str())
            && let Some(value) = subject_value(self.telemetry.subject, subject)
        {
            attributes.push(KeyValue::new("enduser.id", value));
        }
        span.set_attributes(attributes);
        if status.is_server_error() {
            span.set_status(Status::error(status.as_str().to_owned()));
        }
        span.end();
    }
}

/// The upstream exchange's client span.
#[derive(Debug)]
pub(crate) struct UpstreamSpan {
    cx: Context,
}

impl UpstreamSpan {
    /// End it with the upstream's status, or the kind of failure.
    pub(crate) fn finish(self, outcome: Result<http::StatusCode, &'static str>) {
        let span = self.cx.span();
        match outcome {
            Ok(status) => {
                span.set_attribute(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
            }
            Err(kind) => {
                span.set_attribute(KeyValue::new("error.type", kind));
                span.set_status(Status::error(kind));
            }
        }
        span.end();
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The subject as the settings allow it in a span.
fn subject_value(form: SubjectInSpans, subject: &str) -> Option<String> {
    use sha2::Digest as _;
    match form {
        SubjectInSpans::Omit => None,
        SubjectInSpans::Raw => Some(subject.to_owned()),
        SubjectInSpans::Hash => {
            let digest = sha2::Sha256::digest(subject.as_bytes());
            Some(format!(
                "sha256:{}",
                hex::encode(digest.get(..16).unwrap_or_default())
            ))
        }
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_subject_is_stable_and_not_the_subject() {
        let a = subject_value(SubjectInSpans::Hash, "alice").unwrap();
        assert_eq!(a, subject_value(SubjectInSpans::Hash, "alice").unwrap());
        assert!(a.starts_with("sha256:") && a.len() == 7 + 32, "{a}");
        assert!(!a.contains("alice"));
        assert_ne!(a, subject_value(SubjectInSpans::Hash, "bob").unwrap());
        assert_eq!(subject_value(SubjectInSpans::Omit, "alice"), None);
        assert_eq!(
            subject_value(SubjectInSpans::Raw, "alice").as_deref(),
            Some("alice")
        );
    }
}
