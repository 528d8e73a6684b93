//! The test kit of the warden workspace, for tests and benches only (`publish = false`).
//!
//! - [`Token`]: a JWT builder that signs with the keys in `testdata/keys` — the one place
//!   tests sign tokens, adversarial ones included (`alg: none`, a foreign `kid`, header
//!   parameters such as `jku` or `crit`, oversize claims).
//! - [`fixture`]: the configurations in `testdata/fixtures/*.toml`, with their placeholders
//!   filled in, checked into a [`warden_core::Config`] whose errors name the fixture file.
//! - [`Upstream`]: an HTTP server on loopback that records every request reaching it.
//!
//! The kit fails loudly: a missing key file, an unfilled placeholder or a fixture that does
//! not load is a bug of the test, so it panics with what is wrong.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test kit fails the test that uses it: a missing key or a broken fixture is a bug of the test"
)]

mod fixture;
mod token;
mod upstream;

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

pub use fixture::{Fixture, fixture};
pub use jsonwebtoken::Algorithm;
pub use token::{Key, Token, b64url_json};
pub use upstream::{Seen, Upstream};

/// The workspace's `testdata` directory.
pub fn testdata() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata"))
}

/// The directory of the test keys (`testdata/keys`, see its README).
pub fn keys_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/keys"))
}

/// The bytes of a file in [`keys_dir`].
pub fn read_key(name: &str) -> Vec<u8> {
    let path = keys_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seconds since the epoch, by the system clock.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
