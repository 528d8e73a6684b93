//! What `warden serve` tells its service manager, in systemd's notify protocol
//! (`sd_notify(3)`; the datagram socket named by `NOTIFY_SOCKET`): `READY=1` once every
//! listener is bound, `RELOADING=1` (with `MONOTONIC_USEC`, as `Type=notify-reload` asks)
//! and `READY=1` again around a `SIGHUP` reload, `STOPPING=1` when the drain begins, a
//! `STATUS=` line each time, and `WATCHDOG=1` at half the interval of `WatchdogSec=` from a
//! task of the runtime that serves requests, so a wedged runtime stops the pings and
//! systemd restarts it.
//!
//! Without `NOTIFY_SOCKET` every call is a no-op. A manager that cannot be told is logged at
//! debug and never stops the gateway.

use std::time::Duration;

use sd_notify::NotifyState;

fn tell(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::debug!(%error, "could not notify the service manager");
    }
}

/// Every listener is bound: the service is up.
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => tell(&[NotifyState::Reloading, now]),
        Err(_) => tell(&[NotifyState::Reloading]),
    }
}

/// A reload ended, applied or refused (the old configuration keeps serving either way).
pub fn reloaded(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// The drain begins.
pub fn stopping() {
    tell(&[
        NotifyState::Stopping,
        NotifyState::Status("draining: finishing the requests in flight"),
    ]);
}

/// When systemd runs a watchdog for this process (`WATCHDOG_USEC`, and `WATCHDOG_PID` this
/// process or unset), ping it at half its interval from the current runtime.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            tell(&[NotifyState::Watchdog]);
        }
    });
}
