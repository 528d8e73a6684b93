//! Keeping JWKS key sets current: fetched at start, refreshed on a timer, and refreshed at
//! once (at most every few seconds) when a token names a key warden does not know.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};
use warden_core::Engine;

use super::Shared;
use crate::metrics::Metrics;

/// The least time between two fetches of one key set triggered by unknown keys.
const MIN_ON_DEMAND_INTERVAL: Duration = Duration::from_secs(5);
/// The longest a fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest key set accepted.
const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Fetches key sets; single-flight per source.
#[derive(Debug)]
pub struct JwksRefresher {
    client: reqwest::Client,
    last_fetch: Mutex<HashMap<Arc<str>, Instant>>,
    metrics: Arc<Metrics>,
}

impl JwksRefresher {
    /// A refresher whose client has a time limit and follows no redirect.
    ///
    /// # Errors
    /// When the client cannot be built: a client without those limits is never used instead.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        Ok(Self {
            client: fetch_client(reqwest::Client::builder())?,
            last_fetch: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    /// Fetch every key set of an engine's configuration (at start and after a reload).
    pub async fn fetch_all(&self, engine: &Engine) {
        let mut last = self.last_fetch.lock().await;
        for fetch in engine.config().jwks_fetches() {
            self.fetch(engine, &fetch.source, &fetch.url).await;
            last.insert(fetch.source, Instant::now());
        }
    }

    /// Refresh key sets after a token named an unknown key. Returns whether any set was
    /// fetched anew, so the caller decides again. Concurrent callers wait for one fetch.
    pub(crate) async fn refresh_on_unknown_key(&self, engine: &Engine) -> bool {
        let fetches = engine.config().jwks_fetches();
        if fetches.is_empty() {
            return false;
        }
        let asked_at = Instant::now();
        let mut last = self.last_fetch.lock().await;
        let mut refreshed = false;
        for fetch in fetches {
            match last.get(&fetch.source) {
                // Another request fetched while this one waited for the lock.
                Some(t) if *t >= asked_at => refreshed = true,
                Some(t) if t.elapsed() < MIN_ON_DEMAND_INTERVAL => {}
                _ => {
                    refreshed |= self.fetch(engine, &fetch.source, &fetch.url).await;
                    last.insert(fetch.source, Instant::now());
                }
            }
        }
        refreshed
    }

    async fn fetch(&self, engine: &Engine, source: &str, url: &str) -> bool {
        let result = async {
            let response = self
                .client
                .get(url)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let bytes = response.bytes().await.map_err(|e| e.to_string())?;
            if bytes.len() > MAX_JWKS_BYTES {
                return Err("key set too large".to_owned());
            }
            engine
                .config()
                .set_fetched_keys(source, &bytes)
                .map_err(|e| e.to_string())
        }
        .await;
        match result {
            Ok(count) => {
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[source, "ok"])
                    .inc();
                tracing::info!(source, url, keys = count, "fetched JWKS");
                true
            }
            Err(error) => {
                // The previous keys stay in force; tokens signed by unknown keys stay refused.
                self.metrics
                    .jwks_fetches
                    .with_label_values(&[source, "error"])
                    .inc();
                tracing::error!(source, url, %error, "JWKS fetch failed");
                false
            }
        }
    }
}

/// Refresh every key set on its configured interval.
pub(crate) async fn refresh_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let tick = Duration::from_secs(1);
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = stop.changed() => return,
        }
        let engine = shared.engine.load_full();
        shared.oidc.discover(&engine, true).await;
        let due: Vec<_> = {
            let last = shared.jwks.last_fetch.lock().await;
            engine
                .config()
                .jwks_fetches()
                .into_iter()
                .filter(|f| last.get(&f.source).is_none_or(|t| t.elapsed() >= f.refresh))
                .collect()
        };
        for fetch in due {
            shared.jwks.fetch(&engine, &fetch.source, &fetch.url).await;
            shared
                .jwks
                .last_fetch
                .lock()
                .await
                .insert(fetch.source, Instant::now());
        }
    }
}

/// The JWKS client: `builder` with the fetch time limit and no redirects.
fn fetch_client(builder: reqwest::ClientBuilder) -> Result<reqwest::Client, reqwest::Error> {
    builder
        .timeout(FETCH_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_that_cannot_be_built_is_an_error_not_a_default() {
        // A TLS configuration of no known backend makes the build fail.
        let broken = reqwest::Client::builder().use_preconfigured_tls(());
        assert!(fetch_client(broken).is_err());
        crate::install_crypto_provider();
        assert!(fetch_client(reqwest::Client::builder()).is_ok());
    }
}
