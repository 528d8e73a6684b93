//! Cross-site request forgery: a browser attaches cookies to requests any site starts, so
//! an unsafe request authenticated by a cookie must prove it comes from the site itself.
//!
//! The proof, in order: `Sec-Fetch-Site` (Fetch Metadata: `same-origin` or `none` pass),
//! else `Origin` equal to the request's own origin or a trusted one; a configured
//! double-submit token (cookie value repeated in a header) is required on top. With no
//! `Origin`, no `Sec-Fetch-Site` and no token configured, the request is refused: the
//! check fails closed. Safe methods and requests authenticated by a header (bearer token,
//! API key, Basic) are not checked: no browser attaches those on its own.

use http::{HeaderMap, HeaderName, Method};
use subtle::ConstantTimeEq;

/// A double-submit token: the value of `cookie` must be repeated in `header`.
#[derive(Debug, Clone)]
pub struct DoubleSubmit {
    /// The cookie holding the token.
    pub cookie: String,
    /// The header the client repeats it in.
    pub header: HeaderName,
}

/// The CSRF settings.
#[derive(Debug, Clone, Default)]
pub struct CsrfSettings {
    /// Origins besides the request's own allowed to send unsafe requests, as
    /// `scheme://host[:port]`, lower case.
    pub trusted_origins: Vec<String>,
    /// An optional double-submit token.
    pub double_submit: Option<DoubleSubmit>,
}

/// Why a request failed the check (for the log; the client sees a generic 403).
pub(crate) type Failure = &'static str;

/// Whether the method can change state.
pub(crate) fn unsafe_method(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl CsrfSettings {
    /// Check one cookie-authenticated request with an unsafe method.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<&'static str, Failure> {
        let fetch_site = single(headers, "sec-fetch-site");
        let origin = single(headers, "origin");
        let mut proof = None;
        if let Some(site) = fetch_site {
            if site.eq_ignore_ascii_case("same-origin") || site.eq_ignore_ascii_case("none") {
                proof = Some("Sec-Fetch-Site");
            } else if !origin.is_some_and(|o| self.trusted(o)) {
                return Err("a cross-site request (Sec-Fetch-Site) from an untrusted origin");
            } else {
                proof = Some("a trusted Origin");
            }
        }
        if let (None, Some(origin)) = (proof, origin) {
            if self.trusted(origin) || same_origin(origin, headers) {
                proof = Some("Origin");
            } else {
                return Err("the Origin is neither this site nor a trusted origin");
            }
        }
        if let Some(ds) = &self.double_submit {
            // A cookie sent twice proves nothing: treated as missing.
            let cookie = crate::request::cookie(headers, &ds.cookie).ok().flatten();
            let header = headers
                .get(&ds.header)
                .map(http::HeaderValue::as_bytes)
                .filter(|h| !h.is_empty());
            match (cookie, header) {
                (Some(c), Some(h)) if bool::from(c.as_bytes().ct_eq(h)) => {
                    return Ok(proof.unwrap_or("the double-submit token"));
                }
                _ => return Err("the double-submit token is missing or does not match"),
            }
        }
        proof.ok_or("no Origin or Sec-Fetch-Site header, and no double-submit token")
    }

    fn trusted(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        self.trusted_origins.contains(&origin)
    }
}

/// A header's value, if it is sent exactly once and readable.
fn single<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    crate::request::single_header(headers, name)?.to_str().ok()
}

/// Whether `Origin` names the host the request was sent to.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = single(headers, "host") else {
        return false;
    };
    let Some((scheme, authority)) = origin.trim().split_once("://") else {
        return false;
    };
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        && !authority.is_empty()
        && authority.eq_ignore_ascii_case(host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn settings() -> CsrfSettings {
        CsrfSettings {
            trusted_origins: vec!["https://app.example.com".to_owned()],
            double_submit: None,
        }
    }

    #[test]
    fn same_origin_and_trusted_origins_pass() {
        let s = settings();
        assert!(
            s.check(&headers(&[("sec-fetch-site", "same-origin")]))
                .is_ok()
        );
        assert!(s.check(&headers(&[("sec-fetch-site", "none")])).is_ok());
        assert!(
            s.check(&headers(&[
                ("host", "api.example.com"),
                ("origin", "https://api.example.com")
            ]))
            .is_ok()
        );
        assert!(
            s.check(&headers(&[("origin", "https://APP.example.com")]))
                .is_ok()
        );
        assert!(
            s.check(&headers(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://app.example.com")
            ]))
            .is_ok()
        );
    }

    #[test]
    fn cross_site_null_and_missing_origins_are_refused() {
        let s = settings();
        for h in [
            headers(&[
                ("sec-fetch-site", "cross-site"),
                ("origin", "https://evil.example"),
            ]),
            headers(&[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://sub.example.com"),
            ]),
            headers(&[
                ("host", "api.example.com"),
                ("origin", "https://evil.example"),
            ]),
            headers(&[("host", "api.example.com"), ("origin", "null")]),
            headers(&[
                ("host", "api.example.com"),
                ("origin", "https://api.example.com.evil.example"),
            ]),
            headers(&[("host", "api.example.com")]),
            // Two Origin headers: not a browser's request.
            headers(&[
                ("origin", "https://app.example.com"),
                ("origin", "https://evil.example"),
            ]),
        ] {
            assert!(s.check(&h).is_err(), "{h:?}");
        }
    }

    #[test]
    fn a_double_submit_token_must_match() {
        let s = CsrfSettings {
            trusted_origins: vec![],
            double_submit: Some(DoubleSubmit {
                cookie: "csrf".to_owned(),
                header: HeaderName::from_static("x-csrf-token"),
            }),
        };
        assert!(
            s.check(&headers(&[
                ("cookie", "csrf=abc123"),
                ("x-csrf-token", "abc123")
            ]))
            .is_ok()
        );
        assert!(
            s.check(&headers(&[
                ("cookie", "csrf=abc123"),
                ("x-csrf-token", "abc124")
            ]))
            .is_err()
        );
        assert!(s.check(&headers(&[("cookie", "csrf=abc123")])).is_err());
        assert!(s.check(&headers(&[("x-csrf-token", "abc123")])).is_err());
        assert!(
            s.check(&headers(&[
                ("cookie", "csrf=a; csrf=a"),
                ("x-csrf-token", "a")
            ]))
            .is_err()
        );
        // The token is required on top of a same-origin proof.
        assert!(
            s.check(&headers(&[("sec-fetch-site", "same-origin")]))
                .is_err()
        );
    }

    #[test]
    fn only_unsafe_methods_are_checked() {
        assert!(!unsafe_method(&Method::GET));
        assert!(!unsafe_method(&Method::HEAD));
        assert!(unsafe_method(&Method::POST));
        assert!(unsafe_method(&Method::DELETE));
        assert!(unsafe_method(&Method::from_bytes(b"PROPPATCH").unwrap()));
    }
}
