//! Network: the client address (from trusted proxies' headers only), the
//! global network rules and the geo rules; after routing, the route's own network rules.

use super::{Ctx, Outcome, Stop};
use crate::config::Config;
use crate::decision::{Reason, Stage};
use crate::network::client::client_address;
use crate::request::RequestView;
use crate::route::Route;

pub(super) fn client(config: &Config, request: &RequestView<'_>, cx: &mut Ctx) -> Result<(), Stop> {
    let gateway = &config.gateway;
    let client = client_address(
        request.peer,
        request.headers,
        &gateway.trusted_proxies,
        gateway.client_address_header,
    );
    cx.client = client;
    if let Some(rule) = config.network.denies(client) {
        cx.note(Stage::Network, false, || {
            format!("{client} denied by global network rule {}", rule.index)
        });
        let reason = Reason::AddressDenied {
            list: "global",
            rule: rule.index,
        };
        return Err(Outcome::deny(Stage::Network, None, reason).into());
    }
    if let Some(denial) = config.geo.as_ref().and_then(|geo| geo.check(client)) {
        cx.note(Stage::Network, false, || {
            format!(
                "{client} ({}) denied by a geo rule",
                denial.country.as_deref().unwrap_or("unknown country")
            )
        });
        let reason = Reason::GeoDenied {
            country: denial.country,
            blocked_by: denial.blocked_by,
        };
        return Err(Outcome::deny(Stage::Network, None, reason).into());
    }
    cx.note(Stage::Network, true, || {
        if client == request.peer {
            format!("client {client}")
        } else {
            format!("client {client} (via trusted proxy {})", request.peer)
        }
    });
    Ok(())
}

/// The route's network rules, after the global ones.
pub(super) fn route_rules(route: &Route, cx: &mut Ctx) -> Result<(), Stop> {
    let client = cx.client;
    let Some(rule) = route
        .network
        .as_ref()
        .and_then(|rules| rules.denies(client))
    else {
        return Ok(());
    };
    cx.note(Stage::Network, false, || {
        format!("{client} denied by route network rule {}", rule.index)
    });
    let reason = Reason::AddressDenied {
        list: "route",
        rule: rule.index,
    };
    Err(Outcome::deny(Stage::Network, Some(route), reason).into())
}
