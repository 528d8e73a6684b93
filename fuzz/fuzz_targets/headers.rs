//! Header parsing: the credential a request presents (Authorization schemes, API-key
//! headers, session cookies, duplicates) and the client address walked through
//! `X-Forwarded-For` and `Forwarded`. Input: the first byte picks the TCP peer, the rest is
//! header lines `name: value`, one a line.
#![no_main]

mod config;

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use warden_core::fuzzing::{client_addresses, credentials};

const PEERS: [[u8; 4]; 4] = [
    [127, 0, 0, 1],
    [10, 1, 2, 3],
    [192, 0, 2, 7],
    [127, 0, 0, 2],
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let peer: IpAddr = match first % 5 {
        4 => "2001:db8::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
        n => IpAddr::from(PEERS[usize::from(n)]),
    };
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let value = value.strip_prefix(b" ").unwrap_or(value);
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    let config = &*config::FUZZ_CONFIG;
    let _ = credentials(config, &headers);
    let [xff, forwarded] = client_addresses(config, peer, &headers);
    // Nothing is believed from an untrusted peer.
    if !config.gateway.trusted_proxies.contains(peer) {
        assert_eq!((xff, forwarded), (peer, peer));
    }
});
