//! The span queue between requests and the OTLP exporter.
//!
//! Written here rather than taking the SDK's `BatchSpanProcessor` because warden must count
//! what it drops (`warden_trace_spans_total{result="dropped"}`), and that processor keeps its
//! count private. The bargain is the same: a request ends its span by putting it in a
//! bounded queue without waiting (a full queue drops the span); one task takes batches from
//! the queue and exports them, each export bounded in time. An endpoint that is down or slow
//! fills the queue, never a request's time.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, watch};
use warden_core::config::TracingSettings;

use crate::metrics::Metrics;

/// The SDK's end of the queue: `on_end` is called on the request's thread.
#[derive(Debug)]
pub(super) struct QueueProcessor {
    queue: mpsc::Sender<SpanData>,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
}

impl QueueProcessor {
    /// The processor, and the task that exports what it queues (to spawn on the runtime).
    pub(super) fn new<E: SpanExporter + 'static>(
        exporter: E,
        settings: &TracingSettings,
        metrics: Arc<Metrics>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let (queue, spans) = mpsc::channel(settings.queue);
        let (stop, stopped) = watch::channel(false);
        let export = Batches {
            spans,
            stopped,
            batch: settings.batch,
            interval: settings.interval,
            timeout: settings.export_timeout,
            metrics: Arc::clone(&metrics),
        }
        .run(exporter);
        (
            Self {
                queue,
                metrics,
                stop,
            },
            export,
        )
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.queue.try_send(span).is_err() {
            self.metrics
                .trace_spans
                .with_label_values(&["dropped"])
                .inc();
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    /// Tells the export task to export what is queued and stop; the gateway awaits it.
    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        self.stop
            .send(true)
            .map_err(|_| OTelSdkError::AlreadyShutdown)
    }
}

struct Batches {
    spans: mpsc::Receiver<SpanData>,
    stopped: watch::Receiver<bool>,
    batch: usize,
    interval: Duration,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Batches {
    async fn run<E: SpanExporter>(mut self, exporter: E) {
        let mut batch = Vec::with_capacity(self.batch);
        loop {
            // Wait for a first span, then for the batch to fill or the interval to pass.
            tokio::select! {
                received = self.spans.recv_many(&mut batch, self.batch) => {
                    if received == 0 {
                        break;
                    }
                }
                _ = self.stopped.changed() => break,
            }
            let deadline = tokio::time::Instant::now() + self.interval;
            while batch.len() < self.batch {
                let room = self.batch - batch.len();
                tokio::select! {
                    received = self.spans.recv_many(&mut batch, room) => {
                        if received == 0 {
                            break;
                        }
                    }
                    () = tokio::time::sleep_until(deadline) => break,
                    _ = self.stopped.changed() => break,
                }
            }
            self.export(&exporter, &mut batch).await;
            if *self.stopped.borrow() {
                break;
            }
        }
        // Stopping: what is queued goes out too, batch by batch.
        loop {
            while batch.len() < self.batch {
                match self.spans.try_recv() {
                    Ok(span) => batch.push(span),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                break;
            }
            self.export(&exporter, &mut batch).await;
        }
        let _ = exporter.shutdown();
    }

    async fn export<E: SpanExporter>(&self, exporter: &E, batch: &mut Vec<SpanData>) {
        if batch.is_empty() {
            return;
        }
        let count = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let spans = std::mem::replace(batch, Vec::with_capacity(self.batch));
        let result = tokio::time::timeout(self.timeout, exporter.export(spans)).await;
        let outcome = match result {
            Ok(Ok(())) => "exported",
            Ok(Err(e)) => {
                warn_throttled(&e.to_string());
                "failed"
            }
            Err(_) => {
                warn_throttled("the OTLP export timed out");
                "failed"
            }
        };
        self.metrics
            .trace_spans
            .with_label_values(&[outcome])
            .inc_by(count);
    }
}

/// A failed export is logged at most once a minute: an endpoint that is down must not flood
/// the log.
fn warn_throttled(error: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60);
    if LAST.swap(minute, Ordering::Relaxed) != minute {
        tracing::warn!(%error, "OTLP span export failed; spans of that batch are lost (warden_trace_spans_total counts them)");
    }
}
