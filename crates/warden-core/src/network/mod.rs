//! Network rules: which client addresses may reach a route, and which address is the client.
//!
//! Rules are ordered and the first rule whose prefix contains the address decides, as in
//! NGINX's `allow`/`deny`. They are stored in prefix tries (one for IPv4, one for IPv6)
//! whose values carry each rule's position, so a lookup walks at most 33 (or 129) prefixes
//! whatever the number of rules, and picks the earliest covering rule.

pub mod client;
pub mod geo;

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;

/// What a rule does with a matching address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the request continue.
    Allow,
    /// Refuse it (403).
    Deny,
}

/// The rule that matched an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleMatch {
    /// What it does.
    pub action: Action,
    /// Its position in the list (0-based), for logs.
    pub index: u32,
}

/// An ordered list of CIDR rules.
#[derive(Debug, Clone, Default)]
pub struct IpRules {
    v4: PrefixMap<Ipv4Net, RuleMatch>,
    v6: PrefixMap<Ipv6Net, RuleMatch>,
    len: u32,
}

impl IpRules {
    /// An empty list (matches nothing).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Append a rule. An earlier rule for the same prefix keeps precedence.
    pub fn push(&mut self, net: IpNet, action: Action) {
        let rule = RuleMatch {
            action,
            index: self.len,
        };
        self.len = self.len.saturating_add(1);
        match net.trunc() {
            IpNet::V4(n) => {
                if self.v4.get(&n).is_none() {
                    self.v4.insert(n, rule);
                }
            }
            IpNet::V6(n) => {
                if self.v6.get(&n).is_none() {
                    self.v6.insert(n, rule);
                }
            }
        }
    }

    /// Append `all` (both `0.0.0.0/0` and `::/0`).
    pub fn push_all(&mut self, action: Action) {
        let index = self.len;
        self.push(IpNet::V4(Ipv4Net::default()), action);
        self.len = index;
        self.push(IpNet::V6(Ipv6Net::default()), action);
    }

    /// The number of rules.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether there are no rules.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first rule that covers `addr`. An IPv4-mapped IPv6 address is looked up as IPv4.
    #[must_use]
    pub fn first_match(&self, addr: IpAddr) -> Option<RuleMatch> {
        let earliest = |a: Option<RuleMatch>, b: &RuleMatch| match a {
            Some(a) if a.index <= b.index => Some(a),
            _ => Some(*b),
        };
        match addr.to_canonical() {
            IpAddr::V4(v4) => self
                .v4
                .cover_values(&Ipv4Net::from(v4))
                .fold(None, earliest),
            IpAddr::V6(v6) => self
                .v6
                .cover_values(&Ipv6Net::from(v6))
                .fold(None, earliest),
        }
    }

    /// Whether the first matching rule denies `addr` (no match: allowed).
    #[must_use]
    pub fn denies(&self, addr: IpAddr) -> Option<RuleMatch> {
        self.first_match(addr).filter(|m| m.action == Action::Deny)
    }

    /// Whether any rule covers `addr` with `Allow` first (used as a set of trusted proxies).
    #[must_use]
    pub fn contains(&self, addr: IpAddr) -> bool {
        self.first_match(addr)
            .is_some_and(|m| m.action == Action::Allow)
    }
}

/// Why a network rule's text could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// Neither a CIDR prefix (with a prefix length that fits the address), an address, nor
    /// `all`. Holds the text, trimmed.
    #[error("`{0}` is not an address, a CIDR prefix or `all`")]
    NotANetwork(String),
}

/// Parse `10.0.0.0/8`, `2001:db8::/32`, a bare address, or `all`.
///
/// # Errors
/// [`NetError::NotANetwork`] when the text is none of these.
pub fn parse_net(text: &str) -> Result<Option<IpNet>, NetError> {
    let text = text.trim();
    if text == "all" {
        return Ok(None);
    }
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(Some(net));
    }
    text.parse::<IpAddr>()
        .map(|a| Some(IpNet::from(a)))
        .map_err(|_| NetError::NotANetwork(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rules(list: &[(&str, Action)]) -> IpRules {
        let mut r = IpRules::new();
        for (net, action) in list {
            match parse_net(net).unwrap() {
                Some(n) => r.push(n, *action),
                None => r.push_all(*action),
            }
        }
        r
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_first_matching_rule_wins_like_nginx() {
        let r = rules(&[
            ("10.1.0.0/16", Action::Deny),
            ("10.0.0.0/8", Action::Allow),
            ("all", Action::Deny),
        ]);
        assert_eq!(r.first_match(ip("10.1.2.3")).unwrap().action, Action::Deny);
        assert_eq!(r.first_match(ip("10.2.2.3")).unwrap().action, Action::Allow);
        assert_eq!(r.first_match(ip("192.0.2.1")).unwrap().action, Action::Deny);
        assert_eq!(
            r.first_match(ip("2001:db8::1")).unwrap().action,
            Action::Deny
        );
        // A broader rule first hides a narrower one after it.
        let r = rules(&[("10.0.0.0/8", Action::Allow), ("10.1.0.0/16", Action::Deny)]);
        assert_eq!(r.first_match(ip("10.1.2.3")).unwrap().action, Action::Allow);
    }

    #[test]
    fn ipv6_and_mapped_ipv4_are_looked_up_correctly() {
        let r = rules(&[
            ("2001:db8::/32", Action::Deny),
            ("192.0.2.0/24", Action::Deny),
        ]);
        assert!(r.denies(ip("2001:db8:1::5")).is_some());
        assert!(r.denies(ip("2001:db9::5")).is_none());
        assert!(
            r.denies(ip("::ffff:192.0.2.7")).is_some(),
            "an IPv4-mapped address is the IPv4 address"
        );
        assert!(r.first_match(ip("198.51.100.1")).is_none());
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(parse_net("10.0.0.0/33").is_err());
        assert_eq!(
            parse_net(" ten "),
            Err(NetError::NotANetwork("ten".to_owned()))
        );
        assert_eq!(
            parse_net("ten").unwrap_err().to_string(),
            "`ten` is not an address, a CIDR prefix or `all`"
        );
        assert_eq!(
            parse_net("192.0.2.1").unwrap(),
            Some("192.0.2.1/32".parse().unwrap())
        );
    }

    proptest! {
        #[test]
        fn the_trie_agrees_with_a_linear_scan(
            nets in proptest::collection::vec((any::<u32>(), 0u8..=32, any::<bool>()), 1..40),
            probes in proptest::collection::vec(any::<u32>(), 1..40),
        ) {
            let mut r = IpRules::new();
            let mut list = Vec::new();
            for (addr, len, allow) in &nets {
                let net = Ipv4Net::new(std::net::Ipv4Addr::from(*addr), *len).unwrap().trunc();
                let action = if *allow { Action::Allow } else { Action::Deny };
                r.push(IpNet::V4(net), action);
                list.push((net, action));
            }
            for probe in probes {
                let addr = std::net::Ipv4Addr::from(probe);
                let linear = list.iter().find(|(n, _)| n.contains(&addr)).map(|(_, a)| *a);
                prop_assert_eq!(r.first_match(IpAddr::V4(addr)).map(|m| m.action), linear);
            }
        }
    }
}
