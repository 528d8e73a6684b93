//! Benches of the decision core: Cedar authorization with 10, 100 and 1,000 policies, JWT
//! verification per algorithm (cold, no cache), the token digest the cache is keyed by,
//! IP list lookup with 1,000,000 CIDRs, and normalization of long paths.
//!
//! `cargo bench -p warden-core --bench core -- --warm-up-time 1 --measurement-time 3`
//! (results and the machine they were taken on: `BENCHMARKS.md`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, header};
use ipnet::{IpNet, Ipv4Net};
use serde_json::json;
use sha2::{Digest, Sha256};
use warden_core::fuzzing::normalize;
use warden_core::network::{Action, IpRules};
use warden_core::{Engine, RequestView};
use warden_testkit::{Algorithm, Key, Token, fixture};

const NOW: u64 = 1_800_000_000;
const ROLES: usize = 50;
const DOCUMENTS: usize = 1_000;

fn at() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

/// A small deterministic generator (xorshift64*): the benches need no randomness crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warden-bench-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------------------------------
// Cedar

/// `n` policies, a mix found in real deployments, spread over 20 actions: role grants
/// (RBAC), attribute and time conditions (ABAC), scope checks, network conditions, and
/// forbids. With `one_action`, every policy is about the benched route's action instead:
/// the worst case, where no policy can be set aside by its action scope.
fn policies(n: usize, one_action: bool) -> String {
    let mut text = String::new();
    for i in 0..n {
        let role = i % ROLES;
        let action = if one_action { 7 } else { i % 20 };
        let _ = match (i / 20) % 5 {
            0 => writeln!(
                text,
                "@id(\"p{i}\") permit(principal in Role::\"role{role}\", action == Action::\"act{action}\", resource);"
            ),
            1 => writeln!(
                text,
                "@id(\"p{i}\") permit(principal, action == Action::\"act{action}\", resource is Document)\n  when {{ principal has department && principal.department == \"dept{}\" && resource.sensitivity <= {} && context.local.hour >= 8 && context.local.hour < 20 }};",
                i % 30,
                i % 4
            ),
            2 => writeln!(
                text,
                "@id(\"p{i}\") permit(principal in Role::\"role{role}\", action in [Action::\"act{action}\", Action::\"act{}\"], resource)\n  when {{ context.scopes.contains(\"scope{}\") }};",
                (action + 1) % 20,
                i % 10
            ),
            3 => writeln!(
                text,
                "@id(\"p{i}\") forbid(principal, action == Action::\"act{action}\", resource)\n  when {{ context.ip.isInRange(ip(\"10.{}.0.0/16\")) }};",
                i % 256
            ),
            _ => writeln!(
                text,
                "@id(\"p{i}\") forbid(principal, action == Action::\"act{action}\", resource)\n  when {{ resource has sensitivity && resource.sensitivity > 3 && !(principal in Role::\"admin\") }};"
            ),
        };
    }
    text
}

/// Roles in a hierarchy and documents with attributes.
fn entities() -> String {
    let mut list = Vec::new();
    for r in 0..ROLES {
        let parents = if r == 0 {
            json!([])
        } else {
            json!([{ "type": "Role", "id": format!("role{}", r / 2) }])
        };
        list.push(json!({ "uid": { "type": "Role", "id": format!("role{r}") }, "attrs": {}, "parents": parents }));
    }
    for d in 0..DOCUMENTS {
        list.push(json!({
            "uid": { "type": "Document", "id": format!("{d}") },
            "attrs": { "sensitivity": d % 5, "department": format!("dept{}", d % 30) },
            "parents": []
        }));
    }
    serde_json::to_string(&list).unwrap()
}

/// An engine with an HS256 source and a route authorized by `policies` policies (or none):
/// the `bench-cedar` fixture, with the policies and entities written for it.
fn cedar_engine(policies_count: Option<usize>, one_action: bool) -> Engine {
    let mut config = fixture("bench-cedar");
    if let Some(n) = policies_count {
        let dir = scratch_dir(&format!("cedar-{policies_count:?}-{one_action}"));
        let (policies_file, entities_file) =
            (dir.join("policies.cedar"), dir.join("entities.json"));
        std::fs::write(&policies_file, policies(n, one_action)).unwrap();
        std::fs::write(&entities_file, entities()).unwrap();
        config = config.append(&format!(
            "\n[authorization]\npolicies = [\"{}\"]\nentities = \"{}\"\n",
            policies_file.display(),
            entities_file.display()
        ));
    }
    Engine::new(config.config())
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn cedar(c: &mut Criterion) {
    let token = Token::at(NOW)
        .sub("alice")
        .exp_in(86_400)
        .roles(["role7", "role31"])
        .scope("scope2 scope4")
        .claim("department", "dept1")
        .sign_hs256();
    let headers = bearer(&token);
    let mut group = c.benchmark_group("cedar");
    // The same decision without authorization: what the policies add is the difference.
    for (count, one_action) in [
        (None, false),
        (Some(10), false),
        (Some(100), false),
        (Some(1_000), false),
        (Some(1_000), true),
    ] {
        let engine = cedar_engine(count, one_action);
        let view = RequestView::new(&Method::GET, "/docs/31", &headers, [192, 0, 2, 1].into());
        let first = engine.decide(&view, at());
        if count.is_some() {
            assert!(first.is_allowed(), "{:?}", first.reason());
        }
        let id = match (count, one_action) {
            (None, _) => "none".to_owned(),
            (Some(n), false) => n.to_string(),
            (Some(n), true) => format!("{n}_one_action"),
        };
        group.bench_function(BenchmarkId::new("decision_with_policies", id), |b| {
            b.iter(|| engine.decide(black_box(&view), at()));
        });
    }
    group.finish();
}

// ---------------------------------------------------------------------------------------
// JWT

fn jwt(c: &mut Criterion) {
    let engine = Engine::new(fixture("jwt-algorithms").config());
    let claims = Token::at(NOW)
        .sub("alice")
        .iat(NOW)
        .exp_in(3600)
        .jti("b7c3c8e0")
        .roles(["viewer", "editor"])
        .scope("docs:read docs:write");
    let mut group = c.benchmark_group("jwt_cold");
    for (alg, source, key) in [
        (Algorithm::HS256, "hs256", Key::Hmac),
        (Algorithm::RS256, "rs256", Key::Rsa),
        (Algorithm::PS256, "ps256", Key::Rsa),
        (Algorithm::ES256, "es256", Key::Ec256),
        (Algorithm::ES384, "es384", Key::Ec384),
        (Algorithm::EdDSA, "eddsa", Key::Ed25519),
    ] {
        let token = claims.sign_with(alg, key);
        assert!(engine.verify_token(source, &token, at()).unwrap().is_ok());
        group.bench_function(format!("{alg:?}"), |b| {
            b.iter(|| engine.verify_token(source, black_box(&token), at()));
        });
    }
    group.finish();

    // The cache key: the SHA-256 of a token of typical size.
    let token = claims.sign_rs256();
    c.bench_function(&format!("token_digest/sha256_{}_bytes", token.len()), |b| {
        b.iter(|| Sha256::digest(black_box(token.as_bytes())));
    });
}

// ---------------------------------------------------------------------------------------
// IP lists

fn ip_lookup(c: &mut Criterion) {
    const CIDRS: usize = 1_000_000;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rules = IpRules::new();
    for _ in 0..CIDRS {
        let bits = rng.next();
        // Mostly /24 to /32, as in real block lists, with some shorter prefixes.
        let len = match bits % 10 {
            0 => 16 + (bits >> 8) % 8,
            _ => 24 + (bits >> 8) % 9,
        };
        let addr = Ipv4Addr::from((bits >> 32) as u32);
        let net = Ipv4Net::new(addr, len as u8).unwrap().trunc();
        let action = if bits.is_multiple_of(3) {
            Action::Allow
        } else {
            Action::Deny
        };
        rules.push(IpNet::V4(net), action);
    }
    let probes: Vec<IpAddr> = (0..4096)
        .map(|_| IpAddr::V4(Ipv4Addr::from((rng.next() >> 32) as u32)))
        .collect();
    let mut i = 0usize;
    c.bench_function("ip_lookup/1000000_cidrs", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            rules.first_match(black_box(probes[i]))
        });
    });
}

// ---------------------------------------------------------------------------------------
// Normalization

fn long_path(segment: impl Fn(usize) -> String) -> String {
    let mut path = String::new();
    let mut n = 0;
    while path.len() < 2048 {
        path.push('/');
        path.push_str(&segment(n));
        n += 1;
    }
    path
}

fn normalization(c: &mut Criterion) {
    let plain = long_path(|n| format!("segment-{n}"));
    let encoded = long_path(|n| format!("s%65g%2Dment%7E{n}%3B%20x"));
    let dotted = long_path(|n| {
        if n % 3 == 2 {
            "..".to_owned()
        } else {
            format!("d{n}/./")
        }
    });
    let mut group = c.benchmark_group("normalize_2KiB");
    for (name, path) in [
        ("plain", &plain),
        ("encoded", &encoded),
        ("dot_segments", &dotted),
    ] {
        assert!(normalize(path).is_ok(), "{name}");
        group.bench_function(name, |b| b.iter(|| normalize(black_box(path))));
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default().configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = cedar, jwt, ip_lookup, normalization
}
criterion_main!(benches);
