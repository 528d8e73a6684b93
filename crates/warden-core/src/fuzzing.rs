//! Entry points for the fuzz targets in `fuzz/`: thin wrappers that reach the parsers a
//! request goes through before any key or password is checked. Not part of the API.

use std::net::IpAddr;

use http::HeaderMap;

use crate::auth::{self, Source};
use crate::decision::{Reason, TokenProblem};
use crate::identity::{CredentialKind, Identity};
use crate::network::client::{ForwardedHeader, client_address};
use crate::{Config, route::Route};

pub use crate::normalize::{Normalized, normalize};

/// The routes of `config`, in order.
fn routes(config: &Config) -> &[Route] {
    config.router.routes()
}

/// Whether some route of `config` would find a credential in `headers` (unverified),
/// or why the headers are refused, for each route in turn.
pub fn credentials(config: &Config, headers: &HeaderMap) -> Vec<Result<bool, Reason>> {
    routes(config)
        .iter()
        .map(|route| auth::find_credential(&route.sources, headers, &[]).map(|p| p.is_some()))
        .collect()
}

/// The client address of a request from `peer`, read from either forwarding header with
/// the configuration's trusted proxies.
pub fn client_addresses(config: &Config, peer: IpAddr, headers: &HeaderMap) -> [IpAddr; 2] {
    let trusted = &config.gateway.trusted_proxies;
    [
        client_address(peer, headers, trusted, ForwardedHeader::XForwardedFor),
        client_address(peer, headers, trusted, ForwardedHeader::Forwarded),
    ]
}

/// The JWT sources of `config`.
fn jwt_sources(config: &Config) -> impl Iterator<Item = &auth::jwt::JwtSource> {
    config.sources.values().filter_map(|s| match s.as_ref() {
        Source::Jwt(jwt) => Some(jwt),
        _ => None,
    })
}

/// The checks of every JWT source of `config` on `token`, up to the signature check.
pub fn token_headers(config: &Config, token: &str) -> Vec<Result<(), TokenProblem>> {
    jwt_sources(config)
        .map(|jwt| jwt.check_header(token).map(|_| ()))
        .collect()
}

/// The claim checks of every JWT source of `config` on a JSON claims document, as if
/// its signature had been verified, at `now` (seconds since the epoch).
pub fn token_claims(
    config: &Config,
    claims: &[u8],
    now: u64,
) -> Vec<Result<Identity, TokenProblem>> {
    let Ok(serde_json::Value::Object(claims)) = serde_json::from_slice(claims) else {
        return Vec::new();
    };
    jwt_sources(config)
        .map(|jwt| {
            jwt.identity(&claims, now, CredentialKind::Bearer)
                .map(|(identity, _)| identity)
        })
        .collect()
}
