//! Reloading: the whole configuration is read and checked again, its key sets fetched, and
//! only then swapped in, atomically. An invalid file is refused and logged; the running
//! configuration keeps serving.
//!
//! Listener addresses and the decision log target are fixed at start; a reload that changes
//! them is applied for everything else and says so in the log.

use std::sync::Arc;

use warden_core::{Config, ConfigErrors, Engine};

use super::Shared;
use super::upstream::UpstreamClient;

/// What a successful reload swapped in.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ReloadReport {
    /// Routes in the new configuration.
    pub routes: usize,
    /// Settings that changed but only take effect on restart.
    pub needs_restart: Vec<&'static str>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The running configuration was not read from a file.
    #[error("the running configuration was not read from a file; there is nothing to reload")]
    NoFile,
    /// The new configuration is invalid.
    #[error("{0}")]
    Invalid(ConfigErrors),
    /// The new TLS certificates could not be used (a key that does not go with its
    /// certificate).
    #[error("{0}")]
    Tls(#[from] super::tls::TlsError),
    /// An upstream's client could not be built.
    #[error("{0}")]
    Upstream(#[from] super::upstream::UpstreamError),
}

pub(crate) async fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let Some(path) = &shared.config_path else {
        return Err(ReloadError::NoFile);
    };
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(errors) => {
            shared.metrics.reloads.with_label_values(&["refused"]).inc();
            tracing::error!(file = %path.display(), %errors, "configuration reload refused; the running configuration stays");
            return Err(ReloadError::Invalid(errors));
        }
    };
    let old = shared.engine.load_full();
    let mut needs_restart = Vec::new();
    if config.serve.listen != old.config().serve.listen {
        needs_restart.push("gateway.listen");
    }
    if config.serve.admin_listen != old.config().serve.admin_listen {
        needs_restart.push("gateway.admin_listen");
    }
    if config.serve.tracing != old.config().serve.tracing {
        needs_restart.push("tracing");
    }
    if config.forward_auth != old.config().forward_auth {
        needs_restart.push("forward_auth");
    }
    if config.serve.log.target != old.config().serve.log.target
        || config.serve.log.allowed != old.config().serve.log.allowed
    {
        needs_restart.push("log");
    }
    if config.serve.tls.is_some() != shared.tls.is_some() {
        needs_restart.push("gateway.tls");
    }
    if config.serve.admin.client_roots.is_empty() != shared.admin_tls.is_none() {
        needs_restart.push("admin.client_ca");
    }
    if config.serve.http2 != old.config().serve.http2 {
        needs_restart.push("gateway.http2");
    }
    if config.serve.alerts != old.config().serve.alerts {
        needs_restart.push("alerts");
    }
    // Everything that can fail is built before anything is swapped in.
    let refused = |e: ReloadError| {
        shared.metrics.reloads.with_label_values(&["refused"]).inc();
        tracing::error!(file = %path.display(), error = %e, "configuration reload refused; the running configuration stays");
        e
    };
    let upstream = UpstreamClient::replacing(&config, Some(&shared.upstream.load()))
        .map_err(|e| refused(e.into()))?;
    let tls = match (&config.serve.tls, &shared.tls) {
        (Some(settings), Some(_)) => Some(
            super::tls::server_config(
                settings,
                &old.config().serve.http2,
                &config.client_certificate_roots(),
            )
            .map_err(|e| refused(e.into()))?,
        ),
        _ => None,
    };
    let admin_tls = match (&config.serve.tls, &shared.admin_tls) {
        (Some(settings), Some(_)) if !config.serve.admin.client_roots.is_empty() => Some(
            super::tls::admin_server_config(settings, &config.serve.admin.client_roots)
                .map_err(|e| refused(e.into()))?,
        ),
        _ => None,
    };
    // Counters survive a reload unless the backend itself changed.
    let store =
        (config.state != old.config().state).then(|| crate::state::Store::new(&config.state));
    let engine = Engine::new(config);
    shared.oidc.discover(&engine, false).await;
    shared.jwks.fetch_all(&engine).await;
    let routes = engine.config().routes().len();
    shared.upstream.store(Arc::new(upstream));
    if let (Some(tls), Some(current)) = (tls, &shared.tls) {
        // New connections get the new certificates; open ones keep theirs.
        current.store(tls);
    }
    if let (Some(tls), Some(current)) = (admin_tls, &shared.admin_tls) {
        current.store(tls);
    }
    if let Some(store) = store {
        tracing::info!("state backend settings changed; counters start afresh");
        shared.store.store(Arc::new(store));
    }
    shared.engine.store(Arc::new(engine));
    shared.metrics.reloads.with_label_values(&["ok"]).inc();
    if needs_restart.is_empty() {
        tracing::info!(file = %path.display(), routes, "configuration reloaded");
    } else {
        tracing::warn!(file = %path.display(), routes, ?needs_restart, "configuration reloaded; some changes apply only after a restart");
    }
    Ok(ReloadReport {
        routes,
        needs_restart,
    })
}
