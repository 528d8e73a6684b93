//! The WAF pass: SQL injection and XSS detection (libinjection's tokenizer and fingerprints,
//! through the pure-Rust `libinjectionrs` port) plus custom rules as one `RegexSet`.
//!
//! What is scanned: each decoded path segment, each decoded query parameter name and value,
//! header values (cookies pair by pair; credentials are never scanned: a token is opaque),
//! and a bounded body: form fields and JSON strings one by one, other text whole. libinjection
//! judges one parameter at a time — scanning a whole document at once makes it both miss
//! and misfire — so every value is handed over on its own.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;
use percent_encoding::percent_decode_str;
use regex::RegexSet;

/// Where in the request a value was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// A path segment, percent-decoded.
    Path,
    /// A query parameter name or value, form-decoded.
    Query,
    /// A header value (a cookie value for `Cookie`).
    Header,
    /// The request body (a form field, a JSON string, or the text).
    Body,
}

impl Part {
    /// The name used in configuration and logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Path => "path",
            Self::Query => "query",
            Self::Header => "headers",
            Self::Body => "body",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "path" => Self::Path,
            "query" => Self::Query,
            "headers" => Self::Header,
            "body" => Self::Body,
            _ => return None,
        })
    }
}

/// A custom rule: an id for the log, a pattern, and the parts it applies to.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: Arc<str>,
    pub parts: Vec<Part>,
}

/// What the WAF found: the rule and where. Logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// `sqli`, `xss`, or a custom rule's id.
    pub rule: Arc<str>,
    /// The part of the request.
    pub part: Part,
    /// The parameter, header or field name, when there is one.
    pub name: Option<String>,
    /// libinjection's SQL fingerprint, for `sqli`.
    pub fingerprint: Option<String>,
}

impl Detection {
    /// One line for the log.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut out = format!("rule {} in {}", self.rule, self.part.as_str());
        if let Some(name) = &self.name {
            out.push_str(&format!(" `{name}`"));
        }
        if let Some(fp) = &self.fingerprint {
            out.push_str(&format!(" (fingerprint {fp})"));
        }
        out
    }
}

/// The checked WAF rules of a configuration.
#[derive(Debug, Clone, Default)]
pub struct Waf {
    set: Option<RegexSet>,
    rules: Vec<Rule>,
}

/// Headers never scanned: credentials (opaque, and logging a match would leak them) and
/// headers whose grammar is fixed and checked elsewhere.
const SKIPPED_HEADERS: [&str; 8] = [
    "authorization",
    "proxy-authorization",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "accept",
    "accept-encoding",
];

/// Bytes of one value handed to libinjection: longer values are scanned in their first
/// part only by libinjection (the custom rules see all of it). Attack strings are short; a
/// cap bounds the work per value.
const MAX_VALUE: usize = 8 * 1024;

impl Waf {
    /// Custom rules compiled into one set.
    pub(crate) fn new(patterns: Vec<String>, rules: Vec<Rule>) -> Result<Self, regex::Error> {
        let set = if patterns.is_empty() {
            None
        } else {
            Some(
                regex::RegexSetBuilder::new(patterns)
                    .size_limit(16 << 20)
                    .build()?,
            )
        };
        Ok(Self { set, rules })
    }

    /// The number of custom rules.
    #[must_use]
    pub fn custom_rules(&self) -> usize {
        self.rules.len()
    }

    /// Scan a request; the first finding ends the scan.
    ///
    /// `skip_headers` names further headers that carry credentials (API key headers).
    #[must_use]
    pub(crate) fn scan(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        skip_headers: &[http::HeaderName],
        body: Option<(&[u8], Option<&str>)>,
        session_cookies: &[Arc<str>],
    ) -> Option<Detection> {
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            let decoded = percent_decode_str(segment).decode_utf8_lossy();
            if let Some(d) = self.value(&decoded, Part::Path, None) {
                return Some(d);
            }
        }
        if let Some(query) = query {
            for (name, value) in form_pairs(query.as_bytes()) {
                if let Some(d) = self
                    .value(&name, Part::Query, Some(&name))
                    .or_else(|| self.value(&value, Part::Query, Some(&name)))
                {
                    return Some(d);
                }
            }
        }
        for (name, value) in headers {
            let lower = name.as_str();
            if SKIPPED_HEADERS.contains(&lower) || skip_headers.contains(name) {
                continue;
            }
            let text = String::from_utf8_lossy(value.as_bytes());
            if name == http::header::COOKIE {
                for pair in text.split(';') {
                    let (cookie, value) = pair.trim().split_once('=').unwrap_or(("", pair));
                    if session_cookies.iter().any(|c| c.as_ref() == cookie.trim()) {
                        continue;
                    }
                    if let Some(d) = self.value(value.trim(), Part::Header, Some(cookie.trim())) {
                        return Some(d);
                    }
                }
            } else if let Some(d) = self.value(&text, Part::Header, Some(lower)) {
                return Some(d);
            }
        }
        if let Some((bytes, content_type)) = body {
            return self.body(bytes, content_type);
        }
        None
    }

    fn body(&self, bytes: &[u8], content_type: Option<&str>) -> Option<Detection> {
        let media = content_type
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if media == "application/x-www-form-urlencoded" {
            for (name, value) in form_pairs(bytes) {
                if let Some(d) = self
                    .value(&name, Part::Body, Some(&name))
                    .or_else(|| self.value(&value, Part::Body, Some(&name)))
                {
                    return Some(d);
                }
            }
            return None;
        }
        // Not JSON after all: scanned as text below.
        if (media == "application/json" || media.ends_with("+json"))
            && let Ok(json) = serde_json::from_slice::<serde_json::Value>(bytes)
        {
            return self.json(&json, None, 0);
        }
        let text = String::from_utf8_lossy(bytes);
        let textual = media.is_empty()
            || media.starts_with("text/")
            || media.ends_with("json")
            || media.ends_with("xml")
            || media.starts_with("multipart/");
        if textual {
            self.value(&text, Part::Body, None)
        } else {
            // Binary media: libinjection would misfire on arbitrary bytes; custom rules
            // still apply.
            self.custom(&text, Part::Body, None)
        }
    }

    fn json(
        &self,
        value: &serde_json::Value,
        name: Option<&str>,
        depth: usize,
    ) -> Option<Detection> {
        // serde_json refuses nesting deeper than 128; the depth here only bounds recursion.
        if depth > 128 {
            return None;
        }
        match value {
            serde_json::Value::String(s) => self.value(s, Part::Body, name),
            serde_json::Value::Array(items) => items
                .iter()
                .find_map(|item| self.json(item, name, depth + 1)),
            serde_json::Value::Object(map) => map.iter().find_map(|(k, v)| {
                self.value(k, Part::Body, Some(k))
                    .or_else(|| self.json(v, Some(k), depth + 1))
            }),
            _ => None,
        }
    }

    fn value(&self, text: &str, part: Part, name: Option<&str>) -> Option<Detection> {
        if text.is_empty() {
            return None;
        }
        let head = head(text, MAX_VALUE);
        let found = |rule: &str, fingerprint: Option<String>| Detection {
            rule: Arc::from(rule),
            part,
            name: name.map(str::to_owned),
            fingerprint,
        };
        // Plain words cannot be an injection: skip libinjection for the common case.
        if head
            .bytes()
            .any(|b| !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            let sqli = libinjectionrs::detect_sqli(head.as_bytes());
            if sqli.is_injection() {
                let fp = sqli.fingerprint.map(|f| f.to_string());
                return Some(found("sqli", fp));
            }
            if libinjectionrs::detect_xss(head.as_bytes()).is_injection() {
                return Some(found("xss", None));
            }
        }
        self.custom(text, part, name)
    }

    fn custom(&self, text: &str, part: Part, name: Option<&str>) -> Option<Detection> {
        let set = self.set.as_ref()?;
        set.matches(text)
            .iter()
            .filter_map(|i| self.rules.get(i))
            .find(|rule| rule.parts.contains(&part))
            .map(|rule| Detection {
                rule: Arc::clone(&rule.id),
                part,
                name: name.map(str::to_owned),
                fingerprint: None,
            })
    }
}

/// The first `max` bytes of `text`, cut at a character boundary.
fn head(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

/// `application/x-www-form-urlencoded` pairs, decoded (`+` is a space).
fn form_pairs(input: &[u8]) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
    input
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = it.next().unwrap_or_default();
            let value = it.next().unwrap_or_default();
            (form_decode(name), form_decode(value))
        })
}

fn form_decode(bytes: &[u8]) -> Cow<'_, str> {
    if bytes.contains(&b'+') {
        let spaced: Vec<u8> = bytes
            .iter()
            .map(|b| if *b == b'+' { b' ' } else { *b })
            .collect();
        Cow::Owned(
            percent_encoding::percent_decode(&spaced)
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        percent_encoding::percent_decode(bytes).decode_utf8_lossy()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waf() -> Waf {
        Waf::new(
            vec![
                r"(?i)/etc/passwd".to_owned(),
                r"(?i)\bwp-admin\b".to_owned(),
            ],
            vec![
                Rule {
                    id: Arc::from("lfi-passwd"),
                    parts: vec![Part::Path, Part::Query, Part::Header, Part::Body],
                },
                Rule {
                    id: Arc::from("wordpress-probe"),
                    parts: vec![Part::Path],
                },
            ],
        )
        .unwrap()
    }

    fn query(q: &str) -> Option<Detection> {
        waf().scan("/search", Some(q), &HeaderMap::new(), &[], None, &[])
    }

    /// Attacks every scanner must catch, one value each (from public SQLi/XSS cheat sheets).
    const ATTACKS: &[(&str, &str)] = &[
        ("id=1%27%20OR%20%271%27%3D%271", "sqli"),
        ("id=1+OR+1%3D1--", "sqli"),
        ("id=1%27%3B+DROP+TABLE+users--", "sqli"),
        (
            "q=%27+UNION+SELECT+username%2C+password+FROM+users--",
            "sqli",
        ),
        ("id=1+AND+SLEEP(5)", "sqli"),
        ("u=admin%27--", "sqli"),
        ("id=-1+UNION+ALL+SELECT+NULL%2CNULL%2CNULL", "sqli"),
        ("q=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss"),
        ("q=%3Cimg+src%3Dx+onerror%3Dalert(1)%3E", "xss"),
        ("q=%3Csvg%2Fonload%3Dalert(1)%3E", "xss"),
        ("q=%22%3E%3Cscript%3Ealert(1)%3C%2Fscript%3E", "xss"),
        ("q=%3Cbody+onload%3Dalert(1)%3E", "xss"),
        ("q=%3Ciframe+src%3D%22javascript%3Aalert(1)%22%3E", "xss"),
        ("file=..%2F..%2F..%2Fetc%2Fpasswd", "lfi-passwd"),
    ];

    /// Ordinary values that must pass (false positives break real APIs).
    const BENIGN: &[&str] = &[
        "q=hello+world",
        "email=alice%40example.com",
        "name=O%27Brien",
        "sort=-created_at&limit=50&offset=100",
        "q=rock+%26+roll",
        "title=Select+the+best+option",
        "filter=status%3Aopen",
        "redirect=%2Fdocs%2F42",
        "date=2026-11-23T10%3A00%3A00Z",
        "ids=1%2C2%2C3",
        "q=C%2B%2B+and+C%23",
        "comment=I+like+1%2B1%3D2+math",
        "price=%3C100",
        "tags=a%3Bb%3Bc",
    ];

    #[test]
    fn known_attacks_are_detected_with_their_rule() {
        for (q, rule) in ATTACKS {
            let found = query(q).unwrap_or_else(|| panic!("missed {q}"));
            assert_eq!(found.rule.as_ref(), *rule, "{q}: {}", found.describe());
            assert_eq!(found.part, Part::Query);
        }
    }

    #[test]
    fn ordinary_values_pass() {
        for q in BENIGN {
            assert_eq!(query(q), None, "false positive on {q}");
        }
    }

    #[test]
    fn path_segments_headers_and_bodies_are_scanned() {
        let w = waf();
        let none = HeaderMap::new();
        let d = w
            .scan(
                "/items/1%27%20OR%20%271%27%3D%271",
                None,
                &none,
                &[],
                None,
                &[],
            )
            .unwrap();
        assert_eq!((d.rule.as_ref(), d.part), ("sqli", Part::Path));
        let d = w
            .scan("/wp-admin/setup.php", None, &none, &[], None, &[])
            .unwrap();
        assert_eq!(d.rule.as_ref(), "wordpress-probe");
        // A path-only rule does not fire on the query.
        assert_eq!(
            w.scan("/x", Some("a=wp-admin"), &none, &[], None, &[]),
            None
        );

        let mut headers = HeaderMap::new();
        headers.insert("user-agent", "<script>alert(1)</script>".parse().unwrap());
        let d = w.scan("/x", None, &headers, &[], None, &[]).unwrap();
        assert_eq!((d.rule.as_ref(), d.part), ("xss", Part::Header));
        assert_eq!(d.name.as_deref(), Some("user-agent"));

        let mut cookies = HeaderMap::new();
        cookies.insert("cookie", "session=abc; pref=1' OR '1'='1".parse().unwrap());
        let d = w.scan("/x", None, &cookies, &[], None, &[]).unwrap();
        assert_eq!((d.part, d.name.as_deref()), (Part::Header, Some("pref")));

        let json = br#"{"user": {"name": "x", "bio": "<script>alert(1)</script>"}}"#;
        let d = w
            .scan(
                "/x",
                None,
                &none,
                &[],
                Some((json, Some("application/json"))),
                &[],
            )
            .unwrap();
        assert_eq!((d.rule.as_ref(), d.name.as_deref()), ("xss", Some("bio")));

        let form = b"user=bob&pass=x%27+OR+%271%27%3D%271";
        let d = w
            .scan(
                "/x",
                None,
                &none,
                &[],
                Some((
                    form,
                    Some("application/x-www-form-urlencoded; charset=utf-8"),
                )),
                &[],
            )
            .unwrap();
        assert_eq!((d.rule.as_ref(), d.name.as_deref()), ("sqli", Some("pass")));

        let ok = br#"{"title": "Select a plan", "note": "O'Brien's order"}"#;
        assert_eq!(
            w.scan(
                "/x",
                None,
                &none,
                &[],
                Some((ok, Some("application/json"))),
                &[]
            ),
            None
        );
    }

    #[test]
    fn credentials_are_never_scanned() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer ' OR '1'='1".parse().unwrap());
        headers.insert("x-api-key", "' OR '1'='1".parse().unwrap());
        headers.insert("cookie", "session=' OR '1'='1".parse().unwrap());
        let skip = [http::HeaderName::from_static("x-api-key")];
        let session = [Arc::from("session")];
        assert_eq!(
            waf().scan("/x", None, &headers, &skip, None, &session),
            None
        );
    }

    #[test]
    fn ordinary_browser_headers_pass() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36",
            ),
            ("accept-language", "en-US,en;q=0.9,fr;q=0.8"),
            (
                "referer",
                "https://app.example.com/projects/42?tab=settings",
            ),
            (
                "sec-ch-ua",
                "\"Chromium\";v=\"156\", \"Not-A.Brand\";v=\"24\"",
            ),
            ("if-none-match", "W/\"5e1-abc\""),
            ("content-type", "application/json; charset=utf-8"),
            ("cache-control", "max-age=0"),
        ] {
            headers.insert(name, value.parse().unwrap());
        }
        assert_eq!(waf().scan("/x", None, &headers, &[], None, &[]), None);
    }
}
