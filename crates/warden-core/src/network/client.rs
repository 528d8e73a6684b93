//! The client address: the TCP peer, unless the peer is a trusted proxy; then the
//! forwarding header is walked from the right, and the first hop that is not a trusted
//! proxy is the client. Nothing is believed from an untrusted peer.

use std::net::IpAddr;

use http::HeaderMap;

use super::IpRules;

/// Which header trusted proxies report the chain in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// The client address of a request from `peer`.
#[must_use]
pub fn client_address(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &IpRules,
    header: ForwardedHeader,
) -> IpAddr {
    let mut current = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(current) {
        return current;
    }
    let hops: Vec<Option<IpAddr>> = match header {
        ForwardedHeader::XForwardedFor => headers
            .get_all("x-forwarded-for")
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(|h| parse_hop(h.trim()))
            .collect(),
        ForwardedHeader::Forwarded => headers
            .get_all(http::header::FORWARDED)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(forwarded_for)
            .collect(),
    };
    for hop in hops.iter().rev() {
        // An unparseable hop ends the walk: what lies beyond it cannot be trusted.
        let Some(hop) = hop else { break };
        current = hop.to_canonical();
        if !trusted.contains(current) {
            break;
        }
    }
    current
}

/// `192.0.2.1`, `192.0.2.1:443`, `[2001:db8::1]`, `[2001:db8::1]:443`, `2001:db8::1`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim_matches('"');
    if let Ok(ip) = hop.parse() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    hop.rsplit_once(':')
        .and_then(|(host, _port)| host.parse().ok())
}

/// The `for=` of one `Forwarded` element; `unknown` and obfuscated identifiers are `None`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("for"))
        .and_then(|(_, v)| parse_hop(v.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::{Action, parse_net};

    fn trusted(nets: &[&str]) -> IpRules {
        let mut r = IpRules::new();
        for n in nets {
            r.push(parse_net(n).unwrap().unwrap(), Action::Allow);
        }
        r
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let h = headers("x-forwarded-for", &["127.0.0.1"]);
        assert_eq!(
            client_address(
                ip("203.0.113.9"),
                &h,
                &trusted(&["10.0.0.0/8"]),
                ForwardedHeader::XForwardedFor
            ),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_address(
                ip("203.0.113.9"),
                &h,
                &IpRules::new(),
                ForwardedHeader::XForwardedFor
            ),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn the_chain_is_walked_from_the_right_to_the_first_untrusted_hop() {
        let t = trusted(&["10.0.0.0/8"]);
        // The client forged the leftmost entry; the first untrusted hop from the right is the truth.
        let h = headers("x-forwarded-for", &["127.0.0.1, 198.51.100.7", "10.0.0.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::XForwardedFor),
            ip("198.51.100.7")
        );
        // Every hop trusted: the leftmost is the client.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.2"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::XForwardedFor),
            ip("10.9.9.9")
        );
        // Garbage stops the walk at the last trusted hop.
        let h = headers("x-forwarded-for", &["198.51.100.7, garbage"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::XForwardedFor),
            ip("10.0.0.1")
        );
        // No header: the peer.
        assert_eq!(
            client_address(
                ip("10.0.0.1"),
                &HeaderMap::new(),
                &t,
                ForwardedHeader::XForwardedFor
            ),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn forwarded_is_parsed_per_rfc_7239() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(
            "forwarded",
            &["for=192.0.2.60;proto=http;by=203.0.113.43, for=\"[2001:db8:cafe::17]:4711\""],
        );
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::Forwarded),
            ip("2001:db8:cafe::17")
        );
        let h = headers("forwarded", &["for=192.0.2.60, for=unknown"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::Forwarded),
            ip("10.0.0.1")
        );
        // X-Forwarded-For is ignored when Forwarded is configured.
        let h = headers("x-forwarded-for", &["192.0.2.60"]);
        assert_eq!(
            client_address(ip("10.0.0.1"), &h, &t, ForwardedHeader::Forwarded),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn hops_with_ports_and_brackets_parse() {
        assert_eq!(parse_hop("192.0.2.1:8080"), Some(ip("192.0.2.1")));
        assert_eq!(parse_hop("[2001:db8::1]:443"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("2001:db8::1"), Some(ip("2001:db8::1")));
        assert_eq!(parse_hop("_hidden"), None);
    }
}
