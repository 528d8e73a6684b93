//! The gateway: a reverse proxy on tokio and hyper that runs the engine on every request.
//!
//! Phases of one request, each a function of its own in [`proxy`]: build the request view,
//! decide, answer a refusal (rendered by `warden_core::response`), or forward and relay.

mod admin;
mod body;
mod client_certificate;
mod dashboard;
mod decide;
mod ext_authz;
pub(crate) mod forward_auth;
mod grpc;
mod jwks;
mod listen;
mod oidc;
mod outcome;
mod proxy;
pub mod reload;
mod request_body;
pub mod tls;
mod upstream;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
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
    /// A socket the service manager handed over (`LISTEN_FDS`) is not a TCP listener.
    #[error("the socket handed over at LISTEN_FDS index {index} is unusable: {source}")]
    Inherited {
        /// Its index among the handed-over sockets.
        index: usize,
        /// The cause.
        source: std::io::Error,
    },
    /// The OTLP exporter of `[tracing]` could not be built.
    #[error(transparent)]
    Tracing(#[from] crate::telemetry::TracingError),
    /// The decision log could not be opened.
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
    /// The live view's thread or an alert target could not be started.
    #[error("cannot start the live view or its alert targets: {0}")]
    Live(std::io::Error),
    /// Metrics could not be registered.
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP client that fetches JWKS documents could not be built (with its timeout and
    /// without redirects, or not at all).
    #[error("cannot build the JWKS client: {0}")]
    JwksClient(#[source] reqwest::Error),
    /// The listener's TLS configuration could not be built (a key that does not go with
    /// its certificate, an unusable CA bundle).
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// An upstream's client could not be built (its CA bundle or client certificate).
    #[error("{0}")]
    Upstream(#[from] upstream::UpstreamError),
}

/// Build what `config`'s TLS settings make (the listener's server configuration, each
/// upstream's client) without serving: the checks a configuration file cannot show alone.
///
/// # Errors
/// When a key does not go with its certificate or a CA bundle cannot be used.
pub fn check_tls(config: &Config) -> Result<(), StartError> {
    if let Some(settings) = &config.serve.tls {
        tls::server_config(
            settings,
            &config.serve.http2,
            &config.client_certificate_roots(),
        )?;
        if !config.serve.admin.client_roots.is_empty() {
            tls::admin_server_config(settings, &config.serve.admin.client_roots)?;
        }
    }
    upstream::UpstreamClient::new(config)?;
    Ok(())
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
    /// What the dashboard shows and the alert rules watch.
    pub live: crate::live::Live,
    pub metrics: Arc<Metrics>,
    pub jwks: JwksRefresher,
    /// Browser sign-in: the provider client and the session store.
    pub oidc: oidc::Oidc,
    /// Set once the gateway stops: `/readyz` answers not-ready while requests drain.
    pub draining: std::sync::atomic::AtomicBool,
    /// The proxy listener's TLS configuration, when it serves TLS; a reload swaps it.
    pub tls: Option<TlsConfig>,
    /// The admin listener's, when `[admin] client_ca` makes it serve TLS; a reload swaps it
    /// (new CAs, new certificates), turning it on or off takes a restart.
    pub admin_tls: Option<TlsConfig>,
    /// Request spans, when `[tracing]` is configured (fixed at start).
    pub telemetry: Option<crate::telemetry::Telemetry>,
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
    /// Whether the proxy listener serves TLS.
    pub tls: bool,
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
        let live_metrics = crate::live::LiveMetrics::register(&metrics)?;
        let outbox = crate::live::notify::start(&config.serve.alerts, &live_metrics)
            .map_err(StartError::Live)?;
        let live = crate::live::Live::start(live_metrics, &config.serve.alerts, outbox)
            .map_err(StartError::Live)?;
        let proxy_addr = listeners.proxy.unwrap_or(config.serve.listen);
        let admin_addr = listeners.admin.or(config.serve.admin_listen);
        let forward_auth_addr = listeners
            .forward_auth
            .or_else(|| config.forward_auth.as_ref().and_then(|f| f.listen));
        let grpc_addr = listeners
            .grpc
            .or_else(|| config.forward_auth.as_ref().and_then(|f| f.grpc_listen));
        let reuse_port = config.serve.reuse_port;
        let mut inherited = listen::Inherited::from_env()?;
        let upstream = upstream::UpstreamClient::new(&config)?;
        let tls = match &config.serve.tls {
            Some(settings) => Some(Arc::new(ArcSwap::new(tls::server_config(
                settings,
                &config.serve.http2,
                &config.client_certificate_roots(),
            )?))),
            None => None,
        };
        // The admin listener serves TLS only to ask for admin client certificates; fixed at
        // start (a reload that changes `[admin] client_ca` says it needs a restart).
        let admin_tls = match (&config.serve.tls, &config.serve.admin.client_roots) {
            (Some(settings), roots) if !roots.is_empty() => Some(Arc::new(ArcSwap::new(
                tls::admin_server_config(settings, roots)?,
            ))),
            _ => None,
        };
        let jwks = JwksRefresher::new(Arc::clone(&metrics)).map_err(StartError::JwksClient)?;
        let telemetry = match &config.serve.tracing {
            Some(settings) => Some(crate::telemetry::Telemetry::start(
                settings,
                Arc::clone(&metrics),
            )?),
            None => None,
        };
        let config_path = config.origin.is_file().then(|| config.origin.clone());
        let store = crate::state::Store::new(&config.state);
        let oidc = oidc::Oidc::new(&config).map_err(StartError::JwksClient)?;
        let engine = Engine::new(config);
        oidc.discover(&engine, false).await;
        jwks.fetch_all(&engine).await;
        let shared = Arc::new(Shared {
            engine: ArcSwap::from_pointee(engine),
            upstream: ArcSwap::from_pointee(upstream),
            store: ArcSwap::from_pointee(store),
            config_path,
            log,
            live,
            metrics,
            jwks,
            oidc,
            draining: std::sync::atomic::AtomicBool::new(false),
            tls,
            admin_tls,
            telemetry,
        });

        let (shutdown, stop) = watch::channel(false);
        let (admin_shutdown, admin_stop) = watch::channel(false);
        let mut admin_task = None;
        let (proxy_listener, proxy_addr) =
            listen::acquire(&mut inherited, "proxy", proxy_addr, reuse_port)?;
        let mut tasks = vec![tokio::spawn(serve_http(
            proxy_listener,
            Arc::clone(&shared),
            stop.clone(),
            shared.tls.clone(),
            proxy::handle,
        ))];
        let forward_auth_addr = match forward_auth_addr {
            Some(addr) => {
                let (listener, bound) =
                    listen::acquire(&mut inherited, "forward_auth", addr, reuse_port)?;
                tasks.push(tokio::spawn(serve_http(
                    listener,
                    Arc::clone(&shared),
                    stop.clone(),
                    None,
                    forward_auth::handle,
                )));
                Some(bound)
            }
            None => None,
        };
        let grpc_addr = match grpc_addr {
            Some(addr) => {
                let (listener, bound) = listen::acquire(&mut inherited, "grpc", addr, reuse_port)?;
                let serve = ext_authz::serve(listener, Arc::clone(&shared), stop.clone());
                tasks.push(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        let admin_addr = match admin_addr {
            Some(addr) => {
                let (listener, bound) = listen::acquire(&mut inherited, "admin", addr, reuse_port)?;
                let serve = admin::serve(listener, Arc::clone(&shared), admin_stop);
                admin_task = Some(tokio::spawn(serve));
                Some(bound)
            }
            None => None,
        };
        inherited.warn_unused();
        tasks.push(tokio::spawn(jwks::refresh_loop(Arc::clone(&shared), stop)));
        tracing::info!(%proxy_addr, admin = ?admin_addr, forward_auth = ?forward_auth_addr, grpc = ?grpc_addr, "warden is serving");
        Ok(Self {
            tls: shared.tls.is_some(),
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
        if let Some(telemetry) = &self.shared.telemetry {
            telemetry.shutdown().await;
        }
        let _ = self.admin_shutdown.send(true);
        if let Some(task) = self.admin_task {
            let _ = task.await;
        }
    }
}

/// The TLS configuration a listener hands each new connection; swapped whole on reload.
pub(crate) type TlsConfig = Arc<ArcSwap<rustls::ServerConfig>>;

/// What the request handlers learn of the connection a request came on (a request
/// extension).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionInfo {
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The certificate chain the client presented in the handshake, leaf first (empty when
    /// none): the only place a request's client certificate comes from.
    pub client_certificates: Arc<[rustls_pki_types::CertificateDer<'static>]>,
}

/// Time a client has to finish its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Accept connections on `listener` (TLS first when `tls` is set; HTTP/1.1, and HTTP/2 by
/// ALPN or prior knowledge when enabled) and answer each request with `handle`, until `stop`
/// changes.
async fn serve_http<H, F>(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    tls: Option<TlsConfig>,
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
        let tls = tls.as_ref().map(|config| config.load_full());
        let open = shared.metrics.connection_opened();
        connections.spawn(async move {
            let _open = open;
            let http2 = shared.engine.load().config().serve.http2;
            let Some(tls) = tls else {
                let info = ConnectionInfo {
                    tls: false,
                    client_certificates: Arc::from([]),
                };
                serve_connection(
                    TokioIo::new(stream),
                    shared,
                    peer,
                    info,
                    http2,
                    stop,
                    handle,
                )
                .await;
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let client_certificates = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                        .unwrap_or_else(|| Arc::from([]));
                    let info = ConnectionInfo {
                        tls: true,
                        client_certificates,
                    };
                    serve_connection(
                        TokioIo::new(stream),
                        shared,
                        peer,
                        info,
                        http2,
                        stop,
                        handle,
                    )
                    .await;
                }
                Ok(Err(e)) => {
                    // An unsupported version, no common cipher, a bad certificate: rustls
                    // has sent its alert.
                    shared.metrics.tls_handshake_failures.inc();
                    tracing::debug!(error = %e, %peer, "TLS handshake failed");
                }
                Err(_) => {
                    shared.metrics.tls_handshake_failures.inc();
                    tracing::debug!(%peer, "TLS handshake timed out");
                }
            }
        });
    }
    // Close the listener first: new connections are refused while the old ones drain.
    drop(listener);
    drain(connections, &shared).await;
}

/// Serve the requests of one connection, HTTP/1.1 or HTTP/2, with upgrades (WebSockets).
async fn serve_connection<I, H, F>(
    io: I,
    shared: Arc<Shared>,
    peer: SocketAddr,
    info: ConnectionInfo,
    http2: warden_core::config::Http2Settings,
    stop: watch::Receiver<bool>,
    handle: H,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Arc<Shared>, SocketAddr, http::Request<hyper::body::Incoming>) -> F
        + Copy
        + Send
        + Sync
        + 'static,
    F: std::future::Future<Output = Result<http::Response<body::Body>, std::convert::Infallible>>
        + Send
        + 'static,
{
    let service = hyper::service::service_fn(move |mut req: http::Request<_>| {
        req.extensions_mut().insert(info.clone());
        let shared = Arc::clone(&shared);
        let http2 = req.version() == http::Version::HTTP_2;
        async move {
            let response = handle(Arc::clone(&shared), peer, req).await?;
            Ok::<_, std::convert::Infallible>(if http2 {
                response
            } else {
                close_when_draining(&shared, response)
            })
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(std::time::Duration::from_secs(30));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(http2.max_concurrent_streams)
        .max_header_list_size(http2.max_header_list_size)
        .max_pending_accept_reset_streams(http2.max_pending_reset_streams)
        .max_local_error_reset_streams(http2.max_local_error_reset_streams)
        .enable_connect_protocol();
    if !http2.enabled {
        builder = builder.http1_only();
    }
    let conn = builder.serve_connection_with_upgrades(io, service);
    if let Err(e) = until_stopped(conn, stop).await {
        tracing::debug!(error = %e, %peer, "connection ended with an error");
    }
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
            // A keep-alive client may be sending its next request right now: closing the
            // idle connection under it would fail that request. Its answer says
            // `Connection: close` (see `close_when_draining`), so the client moves to the
            // next process; a connection still idle after the grace is closed.
            if let Ok(ended) = tokio::time::timeout(IDLE_GRACE, conn.as_mut()).await {
                return ended;
            }
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

/// How long a stopping listener leaves an idle keep-alive connection open for the client's
/// next request.
const IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Once the gateway is draining, every HTTP/1.1 answer closes its connection after it
/// (HTTP/2 has no `Connection` header: its GOAWAY does the same; the caller skips it).
fn close_when_draining(
    shared: &Shared,
    mut response: http::Response<body::Body>,
) -> http::Response<body::Body> {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
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
