//! Geo rules against a MaxMind database the test builds itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mmdb.rs"]
mod mmdb;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use http::{HeaderMap, Method, StatusCode};
use warden_core::response::{Branding, render_decision};
use warden_core::{Config, Engine, Reason, RequestView};

/// The test database, written once per test process (tests run in parallel threads).
fn database() -> PathBuf {
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("warden-geo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("country.mmdb");
        let db = mmdb::country_db(&[
            ("175.45.176.0/22", "KP"),
            ("5.160.0.0/16", "IR"),
            ("2.0.0.0/8", "FR"),
            ("2001:db8::/32", "DE"),
        ]);
        std::fs::write(&path, db).unwrap();
        path
    })
    .clone()
}

fn engine(rules: &str) -> Engine {
    let text = format!(
        "[geo]\ndatabase = {:?}\nrules = [{rules}]\n[upstreams.app]\nurl = \"http://127.0.0.1:9\"\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n",
        database().display().to_string()
    );
    Engine::new(
        Config::parse(&text, std::path::Path::new("geo.toml")).unwrap_or_else(|e| panic!("{e}")),
    )
}

fn decide(engine: &Engine, ip: &str) -> warden_core::Decision {
    let headers = HeaderMap::new();
    let peer: IpAddr = ip.parse().unwrap();
    engine.decide(
        &RequestView::new(&Method::GET, "/", &headers, peer),
        SystemTime::now(),
    )
}

#[test]
fn countries_are_allowed_denied_or_blocked_for_legal_reasons() {
    let e = engine(
        r#"{ deny = ["KP"], blocked_by = "https://example.org/legal/kp" }, { deny = ["IR"] }, { allow = ["FR", "DE"] }, { deny = ["*"] }"#,
    );
    let kp = decide(&e, "175.45.177.1");
    assert_eq!(kp.status(), StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS);
    let response = render_decision(&kp, Branding::from(e.config()), false).unwrap();
    assert_eq!(
        response.headers()["link"],
        "<https://example.org/legal/kp>; rel=\"blocked-by\""
    );
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["code"], "unavailable_for_legal_reasons");
    assert!(
        !body.to_string().contains("KP"),
        "the country is logged, not sent"
    );
    assert_eq!(
        kp.reason().unwrap().log_detail(),
        "country KP denied by a geo rule"
    );

    let ir = decide(&e, "5.160.1.1");
    assert_eq!(ir.status(), StatusCode::FORBIDDEN);
    assert!(matches!(
        ir.reason(),
        Some(Reason::GeoDenied {
            blocked_by: None,
            ..
        })
    ));

    assert!(decide(&e, "2.3.4.5").is_allowed());
    assert!(decide(&e, "2001:db8::1").is_allowed(), "IPv6 lookups work");
    assert!(
        decide(&e, "::ffff:2.3.4.5").is_allowed(),
        "an IPv4-mapped address is its IPv4 address"
    );
    // Not in the database: only the catch-all matches.
    assert_eq!(decide(&e, "198.51.100.1").status(), StatusCode::FORBIDDEN);
}

#[test]
fn without_a_catch_all_unknown_countries_pass() {
    let e = engine(r#"{ deny = ["KP"] }"#);
    assert!(decide(&e, "198.51.100.1").is_allowed());
    assert_eq!(decide(&e, "175.45.176.9").status(), StatusCode::FORBIDDEN);
}

#[test]
fn geo_configuration_errors_name_the_field() {
    let bad = |rules: &str, database: &str| {
        let text = format!("[geo]\ndatabase = {database:?}\nrules = [{rules}]\n");
        Config::parse(&text, std::path::Path::new("geo.toml"))
            .unwrap_err()
            .0
    };
    let db = database().display().to_string();
    let errs = bad(r#"{ deny = ["Korea"] }"#, &db);
    assert_eq!(errs[0].field, "geo.rules[0]");
    let errs = bad(
        r#"{ allow = ["FR"], blocked_by = "https://x.example" }"#,
        &db,
    );
    assert_eq!(errs[0].field, "geo.rules[0]");
    let errs = bad("", "missing.mmdb");
    assert_eq!(errs[0].field, "geo.database");
    let not_a_db = std::env::temp_dir().join(format!("warden-geo-bad-{}", std::process::id()));
    std::fs::write(&not_a_db, b"not a database").unwrap();
    let errs = bad("", &not_a_db.display().to_string());
    assert!(
        errs[0].message.contains("not a MaxMind database"),
        "{}",
        errs[0].message
    );
}
