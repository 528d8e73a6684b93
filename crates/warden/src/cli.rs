//! The command line: a library of commands behind a thin `main`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use warden_core::Config;

use crate::explain::{self, Assumed, Format, RequestSpec};
use crate::gateway::{Gateway, Listeners};
use crate::service_manager;
use crate::token::{TokenSpec, mint};

/// warden: an access-control gateway that answers every refusal correctly and explains it.
#[derive(Debug, Parser)]
#[command(name = "warden", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway. With no --config, runs the embedded demo.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen here instead of the configured address (port 0 picks a free port).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Run the admin listener here instead of the configured address.
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
    },
    /// Check a configuration: exit 0 when valid, 1 with every error otherwise.
    Check {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Print a signed JWT (by default with the demo key, accepted by the demo).
    Token {
        /// The subject (`sub`).
        #[arg(long)]
        sub: String,
        /// A role (repeatable).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// An OAuth scope (repeatable).
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, such as 15m or 1h.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// A PEM private key (or a file holding an HMAC secret) instead of the demo key.
        #[arg(long, requires = "alg")]
        key: Option<PathBuf>,
        /// The algorithm for --key, such as RS256, ES256, EdDSA or HS256.
        #[arg(long)]
        alg: Option<String>,
        /// The `kid` header.
        #[arg(long)]
        kid: Option<String>,
        /// The issuer.
        #[arg(long, default_value = crate::demo::ISSUER)]
        iss: String,
        /// The audience.
        #[arg(long, default_value = crate::demo::ISSUER)]
        aud: String,
    },
    /// Show how one request is decided: every stage, the response, what would change it.
    ///
    /// Exit 0 when allowed, 2 when denied, 1 on errors.
    Explain(ExplainArgs),
    /// Send a request and explain the answer: 401 vs 403 vs 404 vs 429, the challenge, the
    /// problem document, rate-limit fields, CORS and the WAF or CDN in front.
    ///
    /// Exit 0 for success answers, 2 for refusals and errors, 1 when nothing could be sent.
    Probe(ProbeArgs),
    /// Audit an HTTP API for broken access control and status-code misuse: every
    /// operation of an OpenAPI document (or request of a HAR file) as every identity.
    ///
    /// Exit 0 when clean, 2 on findings at or above --fail-on, 1 for bad input, 3 when the
    /// target is unreachable.
    Audit(Box<warden_audit::cli::AuditArgs>),
    /// Run the access cases of a YAML file against a configuration.
    ///
    /// Exit 0 when all pass, 2 when any fails, 1 when a file cannot be read.
    Test {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
        /// The cases file.
        cases: PathBuf,
    },
}

#[derive(Debug, Args)]
struct ExplainArgs {
    /// The configuration file.
    #[arg(long, short)]
    config: PathBuf,
    /// The method.
    #[arg(short = 'X', long, default_value = "GET", value_parser = explain::parse_method)]
    method: Method,
    /// The request target: a path and an optional query, as a client sends it (not with
    /// `--forwarded`).
    #[arg(required_unless_present = "forwarded", conflicts_with = "forwarded")]
    path: Option<String>,
    /// A request header, `Name: value` (repeatable); real credentials go here.
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = explain::parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// The headers are a proxy's forward-auth question (NGINX, Caddy, Traefik): the method
    /// and target come from `X-Forwarded-Method` and `X-Forwarded-Uri` (or
    /// `X-Original-URI`), the client from `X-Forwarded-For`; `--ip` is the proxy's address.
    #[arg(long, conflicts_with = "method")]
    forwarded: bool,
    /// The client address.
    #[arg(long, default_value = "127.0.0.1")]
    ip: IpAddr,
    /// The time of the request, RFC 3339 with an offset (default: now).
    #[arg(long, value_name = "TIME", value_parser = explain::parse_time)]
    at: Option<SystemTime>,
    /// Assume this subject is authenticated instead of verifying credentials.
    #[arg(long = "as", value_name = "SUBJECT")]
    subject: Option<String>,
    /// A role of the assumed subject (repeatable).
    #[arg(long = "role", value_name = "ROLE", requires = "subject")]
    roles: Vec<String>,
    /// A scope of the assumed subject (repeatable).
    #[arg(long = "scope", value_name = "SCOPE", requires = "subject")]
    scopes: Vec<String>,
    /// An attribute of the assumed subject, `key=value`; integers and true/false are typed.
    #[arg(long = "attr", value_name = "KEY=VALUE", requires = "subject", value_parser = explain::parse_attr)]
    attributes: Vec<(String, serde_json::Value)>,
    /// A PEM file with the client certificate (and its intermediates) the request presents
    /// in the TLS handshake, for routes of `mtls` sources.
    #[arg(long, value_name = "FILE")]
    client_cert: Option<PathBuf>,
    /// The output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Parse the command line and run it. A usage error exits 1 (2 means "denied").
#[must_use]
pub fn run() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(explain::EXIT_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve {
            config,
            listen,
            admin_listen,
        } => serve(
            config,
            Listeners {
                proxy: listen,
                admin: admin_listen,
                ..Listeners::default()
            },
        ),
        Command::Check { config } => check(&config),
        Command::Token {
            sub,
            roles,
            scopes,
            ttl,
            key,
            alg,
            kid,
            iss,
            aud,
        } => {
            let spec = TokenSpec {
                subject: sub,
                roles,
                scopes,
                ttl,
                issuer: iss,
                audience: aud,
                kid,
            };
            token(&spec, key, alg.as_deref())
        }
        Command::Explain(args) => explain_command(args),
        Command::Probe(args) => {
            let spec = crate::probe::ProbeSpec {
                url: args.url,
                method: args.method,
                headers: args.headers,
                identities: args.identities,
                origin: args.origin,
            };
            crate::probe::command(&spec, args.format)
        }
        Command::Audit(args) => warden_audit::cli::command(&args),
        Command::Test { config, cases } => crate::cases::command(&config, &cases),
    }
}

/// `warden probe` arguments.
#[derive(Debug, clap::Args)]
struct ProbeArgs {
    /// The URL to send the request to.
    url: String,
    /// The method.
    #[arg(short = 'X', long, default_value = "GET", value_parser = explain::parse_method)]
    method: http::Method,
    /// A request header (repeatable).
    #[arg(short = 'H', long = "header", value_name = "NAME: VALUE", value_parser = explain::parse_header)]
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Send the request as NAME with a bearer TOKEN (repeatable: one request each).
    #[arg(long = "as", value_name = "NAME=TOKEN", value_parser = parse_identity)]
    identities: Vec<(String, String)>,
    /// Check CORS for this origin (and send a preflight).
    #[arg(long)]
    origin: Option<String>,
    /// The output format.
    #[arg(long, value_enum, default_value_t)]
    format: explain::Format,
}

fn parse_identity(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, token)) if !name.is_empty() && !token.is_empty() => {
            Ok((name.to_owned(), token.to_owned()))
        }
        _ => Err(format!("`{text}` is not NAME=TOKEN")),
    }
}

fn explain_command(args: ExplainArgs) -> ExitCode {
    let headers = args.headers.into_iter().collect::<HeaderMap>();
    let (method, target, headers) = if args.forwarded {
        match crate::gateway::forward_auth::original_request(&headers) {
            Ok(original) => original,
            Err(detail) => {
                eprintln!("warden: not a forward-auth question: {detail} (400 at the listener)");
                return ExitCode::from(1);
            }
        }
    } else {
        (args.method, args.path.unwrap_or_default(), headers)
    };
    let client_certificates = match &args.client_cert {
        None => Vec::new(),
        Some(path) => match explain::read_client_certificates(path) {
            Ok(chain) => chain,
            Err(message) => {
                eprintln!("warden: --client-cert: {message}");
                return ExitCode::from(1);
            }
        },
    };
    let request = RequestSpec {
        method,
        target,
        headers,
        peer: args.ip,
        at: args.at.unwrap_or_else(SystemTime::now),
        client_certificates,
    };
    let assumed = args.subject.map(|subject| Assumed {
        subject,
        roles: args.roles,
        scopes: args.scopes,
        attributes: args.attributes.into_iter().collect(),
    });
    explain::command(&args.config, &request, assumed.as_ref(), args.format)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn serve(config_path: Option<PathBuf>, listeners: Listeners) -> ExitCode {
    init_tracing();
    crate::install_crypto_provider();
    let config = match &config_path {
        Some(path) => match Config::load(path) {
            Ok(config) => Some(config),
            Err(errors) => {
                eprintln!("{errors}");
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let runtime = match runtime(config.as_ref().and_then(|c| c.serve.workers)) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let demo = config.is_none();
        let config = match config {
            Some(config) => config,
            None => {
                let upstream = match crate::demo::start_upstream().await {
                    Ok(addr) => addr,
                    Err(e) => {
                        eprintln!("cannot start the demo upstream: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match crate::demo::config(upstream) {
                    Ok(config) => config,
                    Err(errors) => {
                        eprintln!("the embedded demo configuration is invalid:\n{errors}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        let gateway = match Gateway::start(config, listeners).await {
            Ok(g) => g,
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        };
        // Installed before the gateway says it listens: a SIGHUP or SIGTERM sent as soon as
        // it does must be handled, not end the process by the signal's default action.
        let signals = Signals::install();
        let scheme = if gateway.tls { "https" } else { "http" };
        eprintln!("warden listening on {scheme}://{}", gateway.proxy_addr);
        if let Some(admin) = gateway.admin_addr {
            eprintln!("warden admin on http://{admin} (/healthz, /metrics, /decisions/recent)");
        }
        if demo {
            let exe = std::env::current_exe()
                .map_or_else(|_| "warden".to_owned(), |p| p.display().to_string());
            eprintln!("{}", crate::demo::welcome(gateway.proxy_addr, &exe));
        }
        service_manager::ready(&format!("serving on {scheme}://{}", gateway.proxy_addr));
        service_manager::spawn_watchdog();
        wait_for_shutdown(&gateway, signals).await;
        tracing::info!("shutting down");
        service_manager::stopping();
        gateway.shutdown().await;
        ExitCode::SUCCESS
    })
}

/// The signals `warden serve` answers: SIGHUP reloads, SIGTERM (or Ctrl-C) stops.
struct Signals {
    hangup: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self {
            hangup: signal(SignalKind::hangup()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }
}

/// Serve until Ctrl-C or SIGTERM; reload the configuration on every SIGHUP.
async fn wait_for_shutdown(gateway: &Gateway, signals: Signals) {
    let (Some(mut hangup), Some(mut terminate)) = (signals.hangup, signals.terminate) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = terminate.recv() => return,
            _ = hangup.recv() => {
                // Success and refusal are both logged by the reload itself.
                service_manager::reloading();
                let status = match gateway.reload().await {
                    Ok(report) => format!("serving; reloaded ({} routes)", report.routes),
                    Err(_) => "serving the previous configuration; the reload was refused (see the log)".to_owned(),
                };
                service_manager::reloaded(&status);
            }
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            // What takes a crypto provider to tell: keys that do not go with their
            // certificates, CA bundles rustls cannot use.
            if let Err(e) = crate::gateway::check_tls(&config) {
                eprintln!("{}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!(
                "{}: ok ({} routes, {} upstreams)",
                path.display(),
                config.routes().len(),
                config.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::FAILURE
        }
    }
}

fn token(spec: &TokenSpec, key: Option<PathBuf>, alg: Option<&str>) -> ExitCode {
    let (algorithm, key) = match (key, alg) {
        (Some(path), Some(alg)) => {
            let Ok(algorithm) = alg.parse::<jsonwebtoken::Algorithm>() else {
                eprintln!("unknown algorithm `{alg}`");
                return ExitCode::FAILURE;
            };
            match std::fs::read(&path) {
                Ok(bytes) => (algorithm, bytes),
                Err(e) => {
                    eprintln!("cannot read {}: {e}", path.display());
                    return ExitCode::FAILURE;
                }
            }
        }
        _ => (
            jsonwebtoken::Algorithm::RS256,
            crate::demo::PRIVATE_KEY.as_bytes().to_vec(),
        ),
    };
    let mut spec = spec.clone();
    if spec.kid.is_none()
        && algorithm == jsonwebtoken::Algorithm::RS256
        && key == crate::demo::PRIVATE_KEY.as_bytes()
    {
        spec.kid = Some(crate::demo::KID.to_owned());
    }
    match mint(&spec, algorithm, &key) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// The gateway's runtime: `[gateway] workers` worker threads, or one per core when unset.
/// One worker is a current-thread runtime: the same thread serves every connection without
/// the work-stealing scheduler's bookkeeping (measured in BENCHMARKS.md); password hashing
/// still goes to the blocking pool.
fn runtime(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match workers {
        Some(0 | 1) => tokio::runtime::Builder::new_current_thread(),
        Some(workers) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().build()
}

#[cfg(test)]
mod runtime_tests {
    use super::runtime;

    #[test]
    fn the_runtime_has_the_configured_number_of_workers() {
        let sized = |w: Option<usize>| runtime(w).unwrap().metrics().num_workers();
        assert_eq!(sized(Some(3)), 3);
        assert_eq!(sized(Some(0)), 1, "zero means one, not the default");
        assert!(sized(None) >= 1, "one per core when unset");
    }
}
