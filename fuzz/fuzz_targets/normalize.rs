//! The path normalizer: any input is refused or becomes a canonical path that normalizes
//! to itself, with no dot or empty segment and no encoded slash, backslash or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_core::fuzzing::normalize;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = normalize(target) else {
        return;
    };
    let path = normalized.path.as_str();
    assert!(path.starts_with('/'), "{target:?} -> {path:?}");
    assert!(
        !path.split('/').any(|s| s == "." || s == ".."),
        "dot segment: {target:?} -> {path:?}"
    );
    assert!(
        !path.contains("//"),
        "empty segment: {target:?} -> {path:?}"
    );
    assert!(!path.contains(['\\', '?', '#']), "{target:?} -> {path:?}");
    let upper = path.to_ascii_uppercase();
    for escape in ["%2F", "%5C", "%00"] {
        assert!(!upper.contains(escape), "{escape}: {target:?} -> {path:?}");
    }
    let again = normalize(path).unwrap_or_else(|e| panic!("{path:?} refused: {e}"));
    assert_eq!(again.path, path, "not idempotent: {target:?}");
    assert_eq!(again.query, None);
    // The query is passed through untouched.
    assert_eq!(
        normalized.query.as_deref(),
        target.split_once('?').map(|(_, q)| q)
    );
});
