//! JWT parsing up to the signature check: the size limit, the JOSE header (base64url,
//! JSON), the pinned algorithm, `jwk`/`jku`/`x5u`/`x5c`/`crit`, the `kid`; and the claim
//! checks that follow a valid signature (times, required claims, roles, scopes,
//! attributes). The input is tried as a token, as a JOSE header and as a claims document.
#![no_main]

mod config;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use warden_core::fuzzing::{token_claims, token_headers};

/// 2023-11-14T22:13:20Z.
const NOW: u64 = 1_700_000_000;

fuzz_target!(|data: &[u8]| {
    let config = &*config::FUZZ_CONFIG;
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = token_headers(config, token);
    }
    let as_header = format!("{}.e30.c2ln", URL_SAFE_NO_PAD.encode(data));
    let _ = token_headers(config, &as_header);
    for identity in token_claims(config, data, NOW).into_iter().flatten() {
        // A verified identity is never past its expiry (beyond the leeway).
        if let Some(exp) = identity.expires_at {
            assert!(
                NOW < exp.saturating_add(30),
                "expired identity accepted: {exp}"
            );
        }
    }
});
