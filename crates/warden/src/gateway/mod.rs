//! The gateway: a reverse proxy on tokio and hyper that runs the engine on every request.
//!
//! Phases of one request, each a function of its own in [`proxy`]: build the request view,
//! decide, answer a refusal (rendered by `warden_core::response`), or forward and relay.

mod admin;
mod body;
mod decide;
mod ext_authz;
pub(crate) mod forward_auth;
mod jwks;
mod outcome;
mod proxy;
pub mod reload;
mod request_body;
mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulConnection;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use warden_core::{Config, Engine};

use crate::decision_log::DecisionLog;
use crate::metrics::Metrics;

pub use self::jwks::JwksRefresher;
pub use self::reload::{ReloadError, ReloadReport};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The decision log could not be opened.
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client that fetches JWKS documents could not be built (with its timeout and
    /// without redirects, or not at all).
    #[error("cannot build the JWKS client: {0}")]
    JwksClient(#[source] reqwest::Error),
}

/// Where a gateway listens, overriding the configuration.
#[derive(Debug, Clone, Default)]
pub struct Listeners {
    /// The proxy listener; the configuration's when `None`.
    pub proxy: Option<SocketAddr>,
    /// The admin listener; the configuration's when `None`.
    pub admin: Option<SocketAddr>,
    /// The forward-auth listener; `[forward_auth] listen` when `None`.
    pub forward_auth: Option<SocketAddr>,
    /// The gRPC `ext_authz` listener; `[forward_auth] grpc_listen` when `None`.
    pub grpc: Option<SocketAddr>,
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub engine: ArcSwap<Engine>,
    /// Rebuilt on reload, so new timeouts apply; requests in flight keep the old pool.
    pub upstream: ArcSwap<upstream::UpstreamClient>,
    /// Counters, bans and revocations; replaced on reload only when its settings change.
    pub store: ArcSwap<crate::state::Store>,
    /// The file a reload reads; `None` for a configuration not read from a file (the demo).
    pub config_path: Option<std::path::PathBuf>,
    pub log: DecisionLog,
    pub metrics: Arc<Metrics>,
    pub jwks: JwksRefresher,
    /// Set once the gateway stops: `/readyz` answers not-ready while requests drain.
    pub draining: std::sync::atomic::AtomicBool,
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The proxy's bound address.
    pub proxy_addr: SocketAddr,
    /// The admin listener's bound address, if any.
    pub admin_addr: Option<SocketAddr>,
    /// The forward-auth listener's bound address, if any.
    pub forward_auth_addr: Option<SocketAddr>,
    /// The gRPC `ext_authz` listener's bound address, if any.
    pub grpc_addr: Option<SocketAddr>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The admin listener stops last, so `/readyz` says "draining" while requests drain.
    admin_shutdown: watch::Sender<bool>,
    admin_task: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Bind the listeners and start serving `config`.
    ///
    /// # Errors
    /// When a listener cannot bind or the decision log cannot be opened.
    pub async fn start(config: Config, listeners: Listeners) -> Result<Self, StartError> {
        let metrics = Arc::new(Metrics::new()?);
        let log = DecisionLog::start(
            &config.serve.log.target,
            config.serve.log.allowed,
            Arc::clone(&metrics),
        )
        .map_err(StartError::DecisionLog)?;
        let proxy_addr = listeners.proxy.unwrap_or(config.serve.listen);
        let admin_addr = listeners.admin.or(config.serve.admin_listen);
        let forward_auth_addr = listeners
            .forward_auth
            .or_else(|| config.forward_auth.as_ref().and_then(|f| f.listen));
        let grpc_addr = listeners
            .grpc
            .or_else(|| config.forward_auth.as_ref().and_then(|f| f.grpc_listen));
        let upstream = upstream::UpstreamClient::new(&config.serve);
        let jwks = JwksRefresher::new(Arc::clone(&metrics)).map_err(StartError::JwksClient)?;
        let config_path = config.origin.is_file().then(|| config.origin.clone());
        let store = crate::state::Store::new(&config.state);
        let engine = Engine::new(config);
        jwks.fetch_all(&engine).await;
        let shared = Arc::new(Shared {
            engine: ArcSwap::from_pointee(engine),
            upstream: ArcSwap::from_pointee(upstream),
            store: ArcSwap::from_pointee(store),
            config_path,
            log,
            metrics,
            jwks,
            draining: std::sync::atomic::AtomicBool::new(false),
        });

        let (shutdown, stop) = watch::channel(false);
        let (admin_shutdown, admin_stop) = watch::channel(false);
        let mut admin_task = None;
        let (proxy_listener, proxy_addr) = bind(proxy_addr).await?;
        let mut tasks = vec![tokio::spawn(serve_http(
            proxy_listener,
            Arc::clone(&shared),
            stop.clone(),
            proxy::handle,
        ))];
        let forward_auth_addr = match forward_auth_addr {
            Some(addr) => {
                let (listener, bound) = bind(addr).await?;
                tasks.push(tokio::spawn(serve_http(
                    listener,
                    Arc::clone(&shared),
                    stop.clone(),
                    forward_auth::handle,
                )));
                Some(bound)
            }
            None => None,
        };
        let grpc_addr = match grpc_addr {
            Some(addr) => {
                let (listener, bound) = bind(addr).await?;
                let serve = ext_authz::serve(listener, Arc::clone(&shared), stop.clone());
                tasks.push(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        let admin_addr = match admin_addr {
            Some(addr) => {
                let (listener, bound) = bind(addr).await?;
                let serve = admin::serve(listener, Arc::clone(&shared), admin_stop);
                admin_task = Some(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        tasks.push(tokio::spawn(jwks::refresh_loop(Arc::clone(&shared), stop)));
        tracing::info!(%proxy_addr, admin = ?admin_addr, forward_auth = ?forward_auth_addr, grpc = ?grpc_addr, "warden is serving");
        Ok(Self {
            proxy_addr,
            admin_addr,
            forward_auth_addr,
            grpc_addr,
            shared,
            shutdown,
            tasks,
            admin_shutdown,
            admin_task,
        })
    }

    /// Read the configuration file again and swap it in whole; see [`reload`].
    ///
    /// # Errors
    /// When there is no file to read or the new configuration is invalid; the running
    /// configuration then stays in force.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload::reload(&self.shared).await
    }

    /// Stop: `/readyz` turns not-ready, the listeners stop accepting, and requests in flight
    /// finish (up to `[gateway] drain_timeout`) before this returns.
    pub async fn shutdown(self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let _ = self.admin_shutdown.send(true);
        if let Some(task) = self.admin_task {
            let _ = task.await;
        }
    }
}

/// Accept HTTP/1.1 connections on `listener` and answer each request with `handle`, until
/// `stop` changes.
async fn serve_http<H, F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    handle: H,
) where
    H: Fn(Arc<Shared>, SocketAddr, http::Request<hyper::body::Incoming>) -> F
        + Copy
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = Result<http::Response<body::Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let mut connections = tokio::task::JoinSet::new();
    while let Some((stream, peer)) = accept(&listener, &mut stop).await {
        // Forget the connections that have ended, so the set holds only live ones.
        while connections.try_join_next().is_some() {}
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        connections.spawn(async move {
            let service =
                hyper::service::service_fn(move |req| handle(Arc::clone(&shared), peer, req));
            let conn = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive(true)
                .header_read_timeout(std::time::Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = until_stopped(conn, stop).await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    // Close the listener first: new connections are refused while the old ones drain.
    drop(listener);
    drain(connections, &shared).await;
}

/// Serve one connection until it ends, or until `stop` changes: then it finishes the request
/// in flight (answered with `Connection: close`, or a GOAWAY on HTTP/2) and takes no other.
async fn until_stopped<C: GracefulConnection>(
    conn: C,
    mut stop: watch::Receiver<bool>,
) -> Result<(), C::Error> {
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        ended = conn.as_mut() => ended,
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// Let the connections of a stopped listener finish their requests, up to the configured
/// drain timeout; those still open then are closed.
async fn drain(mut connections: tokio::task::JoinSet<()>, shared: &Shared) {
    let limit = shared.engine.load().config().serve.drain_timeout;
    let all_done = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limit, all_done).await.is_err() {
        tracing::warn!(
            open = connections.len(),
            "drain timeout reached; closing the connections still open"
        );
        connections.shutdown().await;
    }
}

/// A listener on `addr` and the address it is bound to (the port chosen for port 0).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// The next connection on `listener` (`TCP_NODELAY` set), or `None` once `stop` changes. A
/// failed accept (out of descriptors) is logged and tried again after a pause.
async fn accept(
    listener: &TcpListener,
    stop: &mut watch::Receiver<bool>,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return None,
        };
        match accepted {
            Ok((stream, peer)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, peer));
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}
