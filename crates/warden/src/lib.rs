//! warden: the gateway, the demo and the command line around `warden-core`.
//!
//! - [`gateway`]: the reverse proxy, the admin listener and JWKS refresh.
//! - [`decision_log`]: one JSON line per decision.
//! - [`live`]: what the dashboard shows and the alert rules watch.
//! - [`demo`]: the embedded demo that `warden serve` runs with no configuration.
//! - [`cli`]: the commands.
//! - [`service_manager`]: what `warden serve` tells systemd.

pub mod cases;
pub mod cli;
pub mod decision_log;
pub mod demo;
pub mod explain;
pub mod gateway;
pub mod live;
pub mod metrics;
pub mod probe;
pub mod service_manager;
pub mod state;
pub mod telemetry;
pub mod token;

/// Install the TLS crypto provider (ring) for outbound HTTPS, such as JWKS fetches.
/// Idempotent; the first provider installed in a process stays.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
