//! A load generator for warden's gRPC `ext_authz` service, as Envoy would ask it: the same
//! `Check` (a bearer token, a path) over a few HTTP/2 connections, many streams each, for a
//! fixed time. It prints one line: the checks answered, the rate, and how many were not OK.
//!
//! ```sh
//! cargo run --release -p warden --example check_load -- \
//!     --addr 127.0.0.1:9192 --token "$TOKEN" --path /bench --duration 10 --concurrency 32
//! ```
//!
//! `bench/run` uses it for the gRPC `ext_authz` figure in BENCHMARKS.md, and `bench/traffic`
//! (with `--call-token`) for gRPC proxied by warden (`ghz` is not to be had here).
//! Loopback only: the address must be on 127.0.0.0/8 or ::1.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
use envoy_types::pb::envoy::service::auth::v3::attribute_context::{HttpRequest, Peer, Request};
use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
use envoy_types::pb::envoy::service::auth::v3::{AttributeContext, CheckRequest};
use tonic::transport::Endpoint;

/// Ask warden's `ext_authz` service the same question over and over.
#[derive(Debug, Parser)]
struct Args {
    /// warden's `[forward_auth] grpc_listen` address (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    /// The bearer token to present.
    #[arg(long)]
    token: String,
    /// The path to ask about.
    #[arg(long, default_value = "/bench")]
    path: String,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the requests are spread over.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Also present the token as the call's own `authorization` metadata: for warden's proxy
    /// listener in front of a gRPC upstream, which decides each call itself (`bench/traffic`).
    #[arg(long)]
    call_token: bool,
}

fn question(path: &str, token: &str) -> CheckRequest {
    let headers = HashMap::from([
        (":method".to_owned(), "GET".to_owned()),
        (":path".to_owned(), path.to_owned()),
        (":authority".to_owned(), "api.example.com".to_owned()),
        ("authorization".to_owned(), format!("Bearer {token}")),
    ]);
    CheckRequest {
        attributes: Some(AttributeContext {
            source: Some(Peer {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".to_owned(),
                        ..SocketAddress::default()
                    })),
                }),
                ..Peer::default()
            }),
            request: Some(Request {
                http: Some(HttpRequest {
                    method: "GET".to_owned(),
                    path: path.to_owned(),
                    host: "api.example.com".to_owned(),
                    scheme: "http".to_owned(),
                    headers,
                    ..HttpRequest::default()
                }),
                ..Request::default()
            }),
            ..AttributeContext::default()
        }),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.addr.ip().is_loopback() {
        eprintln!("check_load: {} is not a loopback address", args.addr);
        return ExitCode::from(2);
    }
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = match Endpoint::from_shared(format!("http://{}", args.addr)) {
            Ok(endpoint) => endpoint.connect_timeout(Duration::from_secs(5)),
            Err(e) => {
                eprintln!("check_load: {e}");
                return ExitCode::from(2);
            }
        };
        match channel.connect().await {
            Ok(channel) => clients.push(AuthorizationClient::new(channel)),
            Err(e) => {
                eprintln!("check_load: cannot connect to {}: {e}", args.addr);
                return ExitCode::from(2);
            }
        }
    }
    let request = question(&args.path, &args.token);
    let call_token =
        match format!("Bearer {}", args.token).parse::<tonic::metadata::MetadataValue<_>>() {
            Ok(value) => args.call_token.then_some(value),
            Err(e) => {
                eprintln!("check_load: the token is not a metadata value: {e}");
                return ExitCode::from(2);
            }
        };
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused, failed) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.concurrency.max(1) {
        let Some(client) = clients.get(i % clients.len()) else {
            break;
        };
        let mut client = client.clone();
        let request = request.clone();
        let call_token = call_token.clone();
        let (stop, ok, refused, failed) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&refused),
            Arc::clone(&failed),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut call = tonic::Request::new(request.clone());
                if let Some(token) = &call_token {
                    call.metadata_mut().insert("authorization", token.clone());
                }
                match client.check(call).await {
                    Ok(answer)
                        if answer
                            .get_ref()
                            .status
                            .as_ref()
                            .is_some_and(|s| s.code == 0) =>
                    {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {
                        refused.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        let _ = task.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let (ok, refused, failed) = (
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    let total = ok + refused + failed;
    #[expect(
        clippy::cast_precision_loss,
        reason = "a count of checks in a few seconds is far below 2^52"
    )]
    let rate = total as f64 / secs;
    println!("checks {total} in {secs:.2} s: {rate:.0}/s; not OK {refused}; errors {failed}");
    if refused + failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
