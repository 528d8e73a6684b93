//! One canonical path, computed once, before routing: what is routed and authorized is
//! exactly what the upstream receives.
//!
//! Rules:
//! - the target must be in origin form (`/…`), visible ASCII, with no `#` and no `\`;
//! - percent-encoded unreserved characters are decoded (`%41` → `A`, `%2e` → `.`); other
//!   escapes keep their encoding with upper-case hex;
//! - `%2F`, `%5C` and `%00` are refused: an encoded slash, backslash or NUL means one thing
//!   to warden and another to some upstream;
//! - empty segments (`//`) are removed; `.` segments are removed; `..` removes the segment
//!   before it and is refused above the root; a segment that is `.` or `..` followed by a `;`
//!   parameter, raw or encoded (`..;`, `..%3B`), is refused (servlet containers treat `..;`
//!   as `..`, and a server that decodes before reading parameters sees `..;` in `..%3B`).

/// A normalized request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The canonical path: starts with `/`, no empty, `.` or `..` segments.
    pub path: String,
    /// The raw query (without `?`), if any.
    pub query: Option<String>,
}

impl Normalized {
    /// The path and query to send upstream.
    #[must_use]
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Why a target was refused (each is a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.detail())]
pub enum NormalizeError {
    /// Not origin form.
    NotOriginForm,
    /// Control characters, spaces or non-ASCII bytes.
    BadCharacter,
    /// A fragment (`#`) in the request line.
    Fragment,
    /// A raw or encoded backslash.
    Backslash,
    /// An encoded slash.
    EncodedSlash,
    /// An encoded NUL.
    EncodedNul,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// `..` above the root.
    AboveRoot,
    /// `.;` or `..;` segments.
    DotSegmentParameter,
}

impl NormalizeError {
    /// What was wrong, as told to the client.
    #[must_use]
    pub fn detail(self) -> &'static str {
        match self {
            Self::NotOriginForm => "The request target must be an absolute path",
            Self::BadCharacter => "The request target contains characters that are not allowed",
            Self::Fragment => "The request target contains a fragment",
            Self::Backslash => "The request target contains a backslash",
            Self::EncodedSlash => "The request target contains an encoded slash",
            Self::EncodedNul => "The request target contains an encoded NUL",
            Self::BadEscape => "The request target contains a malformed percent-encoding",
            Self::AboveRoot => "The request target climbs above the root",
            Self::DotSegmentParameter => {
                "The request target contains a dot segment with parameters"
            }
        }
    }
}

/// Normalize a request target.
///
/// # Errors
/// When the target is ambiguous or malformed; its detail says which.
pub fn normalize(target: &str) -> Result<Normalized, NormalizeError> {
    if !target.starts_with('/') {
        return Err(NormalizeError::NotOriginForm);
    }
    if target.bytes().any(|b| !(0x21..=0x7e).contains(&b)) {
        return Err(NormalizeError::BadCharacter);
    }
    if target.contains('#') {
        return Err(NormalizeError::Fragment);
    }
    let (raw_path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if raw_path.contains('\\') {
        return Err(NormalizeError::Backslash);
    }

    // Each kept segment is decoded straight into `path` as `/segment`: no allocation per
    // segment, and `..` removes back to the previous `/` (a decoded segment never holds
    // one: `%2F` is refused).
    let mut path = String::with_capacity(raw_path.len() + 1);
    let trailing_slash = raw_path.len() > 1 && raw_path.ends_with('/');
    for raw in raw_path.split('/') {
        if raw.is_empty() {
            continue;
        }
        let start = path.len();
        path.push('/');
        decode_segment_into(raw, &mut path)?;
        let segment = path.get(start + 1..).unwrap_or("");
        if segment == "." {
            path.truncate(start);
            continue;
        }
        if segment == ".." {
            path.truncate(start);
            match path.rfind('/') {
                Some(previous) => path.truncate(previous),
                None => return Err(NormalizeError::AboveRoot),
            }
            continue;
        }
        if is_dot_segment_with_parameter(segment) {
            return Err(NormalizeError::DotSegmentParameter);
        }
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(Normalized { path, query })
}

/// `.` or `..` followed by a `;` parameter, raw or encoded (the decoded segment keeps
/// `;` as `%3B`, upper-case).
fn is_dot_segment_with_parameter(segment: &str) -> bool {
    let rest = segment
        .strip_prefix("..")
        .or_else(|| segment.strip_prefix('.'));
    rest.is_some_and(|r| r.starts_with(';') || r.starts_with("%3B"))
}

/// Decode one segment onto the end of `out`.
fn decode_segment_into(raw: &str, out: &mut String) -> Result<(), NormalizeError> {
    if !raw.contains('%') {
        out.push_str(raw);
        return Ok(());
    }
    let bytes = raw.as_bytes();
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b != b'%' {
            out.push(char::from(b));
            i += 1;
            continue;
        }
        let (Some(h), Some(l)) = (
            bytes.get(i + 1).and_then(hex),
            bytes.get(i + 2).and_then(hex),
        ) else {
            return Err(NormalizeError::BadEscape);
        };
        let decoded = h * 16 + l;
        match decoded {
            b'/' => return Err(NormalizeError::EncodedSlash),
            b'\\' => return Err(NormalizeError::Backslash),
            0 => return Err(NormalizeError::EncodedNul),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b))
            }
            b => {
                out.push('%');
                for nibble in [b >> 4, b & 0xf] {
                    let digit = char::from_digit(u32::from(nibble), 16).unwrap_or('0');
                    out.push(digit.to_ascii_uppercase());
                }
            }
        }
        i += 3;
    }
    Ok(())
}

fn hex(b: &u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn path(t: &str) -> Result<String, NormalizeError> {
        normalize(t).map(|n| n.path_and_query())
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(path("/").unwrap(), "/");
        assert_eq!(path("/a//b").unwrap(), "/a/b");
        assert_eq!(path("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(path("/%61dmin").unwrap(), "/admin");
        assert_eq!(path("/a/%2e%2E/admin").unwrap(), "/admin");
        assert_eq!(path("/docs/%7e1?x=%2F").unwrap(), "/docs/~1?x=%2F");
        assert_eq!(path("/a%3bb").unwrap(), "/a%3Bb");
        assert_eq!(path("/me/").unwrap(), "/me/");
    }

    #[test]
    fn ambiguous_targets_are_refused() {
        assert_eq!(path("/a%2Fb"), Err(NormalizeError::EncodedSlash));
        assert_eq!(path("/a%5cb"), Err(NormalizeError::Backslash));
        assert_eq!(path("/a\\b"), Err(NormalizeError::Backslash));
        assert_eq!(path("/a%00"), Err(NormalizeError::EncodedNul));
        assert_eq!(path("/a%zz"), Err(NormalizeError::BadEscape));
        assert_eq!(path("/a%4"), Err(NormalizeError::BadEscape));
        assert_eq!(path("/../etc"), Err(NormalizeError::AboveRoot));
        assert_eq!(
            path("/public/..;/admin"),
            Err(NormalizeError::DotSegmentParameter)
        );
        for encoded in [
            "/public/..%3b/admin",
            "/public/..%3B/admin",
            "/.%3bx/admin",
            "/a/%2e%2e%3b/b",
        ] {
            assert_eq!(
                path(encoded),
                Err(NormalizeError::DotSegmentParameter),
                "{encoded}"
            );
        }
        // A `;` elsewhere is an ordinary character of the segment.
        assert_eq!(path("/a%3b/b").unwrap(), "/a%3B/b");
        assert_eq!(path("/...%3b").unwrap(), "/...%3B");
        assert_eq!(path("/a#frag"), Err(NormalizeError::Fragment));
        assert_eq!(path("http://x/a"), Err(NormalizeError::NotOriginForm));
        assert_eq!(path("*"), Err(NormalizeError::NotOriginForm));
        assert_eq!(path("/a b"), Err(NormalizeError::BadCharacter));
    }

    /// What no normalized path may contain, whatever the input.
    fn assert_canonical(path: &str) -> Result<(), TestCaseError> {
        prop_assert!(path.starts_with('/'));
        prop_assert!(
            !path.split('/').any(|s| s == "." || s == ".."),
            "dot segment in {}",
            path
        );
        prop_assert!(!path.contains("//"), "empty segment in {}", path);
        prop_assert!(!path.contains('\\'), "backslash in {}", path);
        prop_assert!(!path.contains('?') && !path.contains('#'));
        let upper = path.to_ascii_uppercase();
        for escape in ["%2F", "%5C", "%00"] {
            prop_assert!(!upper.contains(escape), "{} in {}", escape, path);
        }
        // Every remaining escape is two upper-case hex digits, and never an unreserved
        // character (which would have been decoded).
        let bytes = path.as_bytes();
        for (i, _) in path.match_indices('%') {
            let pair = bytes.get(i + 1..i + 3).unwrap_or_default();
            prop_assert!(
                pair.len() == 2
                    && pair
                        .iter()
                        .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b)),
                "bad escape in {}",
                path
            );
            let value = u8::from_str_radix(std::str::from_utf8(pair).unwrap(), 16).unwrap();
            prop_assert!(!(value.is_ascii_alphanumeric() || b"-._~".contains(&value)));
        }
        Ok(())
    }

    /// Path-ish inputs: separators, dots, `;`, and escapes of the characters that matter
    /// (dots, slashes, backslashes, NUL, `;`, `%`, letters), in any case.
    fn target() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("/".to_owned()),
            Just(".".to_owned()),
            Just("..".to_owned()),
            Just(";".to_owned()),
            Just("a".to_owned()),
            Just("Z~".to_owned()),
            Just("\\".to_owned()),
            "%(2[eEfF5]|5[cC]|00|3[bBfF]|25|4[1-9]|6[1-9]|[c-fC-F][0-9a-fA-F]|[0-9a-fA-F]?)",
        ];
        prop::collection::vec(piece, 0..16).prop_map(|p| format!("/{}", p.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn normalizing_is_idempotent_and_canonical(t in target()) {
            if let Ok(n) = normalize(&t) {
                assert_canonical(&n.path)?;
                let again = normalize(&n.path).unwrap();
                prop_assert_eq!(&again.path, &n.path);
                prop_assert_eq!(again.query, None);
            }
        }

        #[test]
        fn the_narrow_alphabet_is_idempotent_too(t in "/[a-z./%2eEfF;]{0,40}") {
            if let Ok(n) = normalize(&t) {
                assert_canonical(&n.path)?;
                prop_assert_eq!(normalize(&n.path).unwrap().path, n.path);
            }
        }

        #[test]
        fn any_input_is_refused_or_canonical(t in "\\PC{0,60}") {
            if let Ok(n) = normalize(&t) {
                assert_canonical(&n.path)?;
                prop_assert_eq!(normalize(&n.path).unwrap().path, n.path);
            }
        }
    }
}
