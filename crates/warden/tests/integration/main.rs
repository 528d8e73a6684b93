//! The gateway's integration tests, in one binary (one link, one process): each module starts
//! real gateways, upstreams and peers on loopback and talks to them over real sockets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

mod alerts;
mod audit;
mod authentication;
mod authorization;
mod bypass;
mod cli;
mod dashboard;
mod demo;
mod deploy;
mod ext_authz;
mod forward_auth;
mod gateway;
mod http2;
mod hygiene;
mod limits;
mod mtls;
mod network;
mod oidc;
mod one_pass;
mod otlp;
mod probe;
mod redis_backend;
mod reload;
mod request_hygiene;
mod restart;
mod shadow;
mod tls;
mod upstream_pool;
mod upstream_wire;
mod websocket;
