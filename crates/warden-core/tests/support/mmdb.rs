//! A minimal MaxMind DB writer for tests: country records for a few networks, written in
//! the documented format (binary search tree, data section, metadata) so the real reader
//! is exercised on a database the suite builds itself.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use std::net::IpAddr;

/// Build an IPv6 database (IPv4 networks live under `::/96`) mapping networks to ISO codes.
pub fn country_db(entries: &[(&str, &str)]) -> Vec<u8> {
    // Data section: one record per distinct country.
    let mut data = Vec::new();
    let mut offsets: Vec<(String, usize)> = Vec::new();
    for (_, iso) in entries {
        if !offsets.iter().any(|(c, _)| c == iso) {
            offsets.push(((*iso).to_owned(), data.len()));
            map(&mut data, 1);
            string(&mut data, "country");
            map(&mut data, 1);
            string(&mut data, "iso_code");
            string(&mut data, iso);
        }
    }

    // The tree, as nodes of [left, right]; None is "no data", Some(Err(offset)) is data.
    #[derive(Clone, Copy)]
    enum Rec {
        Empty,
        Node(usize),
        Data(usize),
    }
    let mut nodes: Vec<[Rec; 2]> = vec![[Rec::Empty, Rec::Empty]];
    for (net, iso) in entries {
        let (addr, len) = net.split_once('/').unwrap();
        let len: usize = len.parse().unwrap();
        let (bits, len) = match addr.parse::<IpAddr>().unwrap() {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), len + 96),
            IpAddr::V6(v6) => (u128::from(v6), len),
        };
        let offset = offsets.iter().find(|(c, _)| c == iso).unwrap().1;
        let mut node = 0;
        for depth in 0..len {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth == len - 1 {
                nodes[node][bit] = Rec::Data(offset);
            } else {
                node = match nodes[node][bit] {
                    Rec::Node(n) => n,
                    _ => {
                        nodes.push([Rec::Empty, Rec::Empty]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }
    let node_count = nodes.len();
    let mut out = Vec::new();
    for node in &nodes {
        for rec in node {
            let value = match rec {
                Rec::Empty => node_count,
                Rec::Node(n) => *n,
                Rec::Data(offset) => node_count + 16 + offset,
            };
            out.extend_from_slice(&(value as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);

    // Metadata.
    out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
    map(&mut out, 9);
    string(&mut out, "binary_format_major_version");
    uint(&mut out, 5, 2);
    string(&mut out, "binary_format_minor_version");
    uint(&mut out, 5, 0);
    string(&mut out, "build_epoch");
    extended_uint(&mut out, 9, 1_700_000_000);
    string(&mut out, "database_type");
    string(&mut out, "warden-test-Country");
    string(&mut out, "description");
    map(&mut out, 1);
    string(&mut out, "en");
    string(&mut out, "warden test database");
    string(&mut out, "ip_version");
    uint(&mut out, 5, 6);
    string(&mut out, "languages");
    out.push(1); // extended type, size 1
    out.push(4); // array (11 - 7)
    string(&mut out, "en");
    string(&mut out, "node_count");
    uint(&mut out, 6, node_count as u64);
    string(&mut out, "record_size");
    uint(&mut out, 5, 24);
    out
}

fn control(out: &mut Vec<u8>, kind: u8, size: usize) {
    assert!(size < 29);
    out.push((kind << 5) | size as u8);
}

fn map(out: &mut Vec<u8>, entries: usize) {
    control(out, 7, entries);
}

fn string(out: &mut Vec<u8>, s: &str) {
    control(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn minimal(value: u64) -> Vec<u8> {
    value
        .to_be_bytes()
        .iter()
        .copied()
        .skip_while(|b| *b == 0)
        .collect()
}

fn uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = minimal(value);
    control(out, kind, bytes.len());
    out.extend_from_slice(&bytes);
}

fn extended_uint(out: &mut Vec<u8>, kind: u8, value: u64) {
    let bytes = minimal(value);
    out.push(bytes.len() as u8);
    out.push(kind - 7);
    out.extend_from_slice(&bytes);
}
