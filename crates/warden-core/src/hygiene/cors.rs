//! CORS: preflights answered from configuration, and the headers that let a page of an
//! allowed origin read warden's answers (its refusals included: a page must be able to read
//! a 401's problem document to react to it).
//!
//! A disallowed origin gets no CORS headers at all; its preflight is refused with 403.
//! Allowing an origin never widens what a request may do: authentication and authorization
//! still decide every actual request.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method};

/// Which origins may read responses.
#[derive(Debug, Clone)]
pub enum AllowedOrigins {
    /// Any origin (`*`); never with credentials.
    Any,
    /// These origins, as `scheme://host[:port]`, lower case.
    List(Vec<String>),
}

/// The CORS settings.
#[derive(Debug, Clone)]
pub struct CorsSettings {
    /// Allowed origins.
    pub origins: AllowedOrigins,
    /// Methods a preflight may ask for; `None`: the methods of the route's path.
    pub methods: Option<Vec<Method>>,
    /// Request headers a preflight may ask for (lower case), beyond the CORS-safelisted ones.
    pub headers: Vec<String>,
    /// Response headers a page may read.
    pub expose: Vec<String>,
    /// Whether cookies and credentials may be sent (`Access-Control-Allow-Credentials`).
    pub credentials: bool,
    /// How long a browser may cache a preflight, in seconds.
    pub max_age: Option<u64>,
}

/// What a granted request or preflight answers with.
#[derive(Debug, Clone)]
pub struct CorsGrant {
    /// The origin, echoed (or `*`).
    pub origin: HeaderValue,
    /// The settings that granted it.
    pub settings: Arc<CorsSettings>,
    /// For a preflight: the methods and headers granted.
    pub preflight: Option<PreflightGrant>,
}

/// The part of a grant only a preflight has.
#[derive(Debug, Clone)]
pub struct PreflightGrant {
    /// `Access-Control-Allow-Methods`.
    pub methods: Vec<Method>,
    /// `Access-Control-Allow-Headers` (the requested ones, all allowed).
    pub headers: Vec<String>,
}

/// Request headers a page may always send (Fetch's CORS-safelisted request headers).
const SAFELISTED: [&str; 4] = [
    "accept",
    "accept-language",
    "content-language",
    "content-type",
];

/// Whether the request is a CORS preflight.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(http::header::ORIGIN)
        && headers.contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl CorsSettings {
    /// The grant for an actual request, if it comes from an allowed origin.
    pub(crate) fn actual(self: &Arc<Self>, headers: &HeaderMap) -> Option<CorsGrant> {
        let origin = self.allowed_origin(headers)?;
        Some(CorsGrant {
            origin,
            settings: Arc::clone(self),
            preflight: None,
        })
    }

    /// Answer a preflight for a path whose routes accept `path_methods`.
    pub(crate) fn preflight(
        self: &Arc<Self>,
        headers: &HeaderMap,
        path_methods: &[Method],
    ) -> Result<CorsGrant, &'static str> {
        let origin = self
            .allowed_origin(headers)
            .ok_or("the origin is not allowed")?;
        let requested = headers
            .get(http::header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| Method::from_bytes(v.as_bytes()).ok())
            .ok_or("the requested method is malformed")?;
        let allowed: &[Method] = self.methods.as_deref().unwrap_or(path_methods);
        if !allowed.contains(&requested) || !path_methods.contains(&requested) {
            return Err("the requested method is not allowed");
        }
        let mut asked = Vec::new();
        for value in headers.get_all(http::header::ACCESS_CONTROL_REQUEST_HEADERS) {
            let text = value
                .to_str()
                .map_err(|_| "the requested headers are malformed")?;
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                let name = name.to_ascii_lowercase();
                if !SAFELISTED.contains(&name.as_str()) && !self.headers.contains(&name) {
                    return Err("a requested header is not allowed");
                }
                asked.push(name);
            }
        }
        let methods = allowed
            .iter()
            .filter(|m| path_methods.contains(m))
            .cloned()
            .collect();
        Ok(CorsGrant {
            origin,
            settings: Arc::clone(self),
            preflight: Some(PreflightGrant {
                methods,
                headers: asked,
            }),
        })
    }

    fn allowed_origin(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        let origin = crate::request::single_header(headers, "origin")?;
        let text = origin.to_str().ok()?.trim();
        match &self.origins {
            AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
            AllowedOrigins::List(list) => {
                let lower = text.to_ascii_lowercase();
                list.contains(&lower)
                    .then(|| HeaderValue::from_str(text).ok())
                    .flatten()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Arc<CorsSettings> {
        Arc::new(CorsSettings {
            origins: AllowedOrigins::List(vec!["https://app.example.com".to_owned()]),
            methods: None,
            headers: vec!["authorization".to_owned(), "x-request-id".to_owned()],
            expose: vec![],
            credentials: true,
            max_age: Some(600),
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_allowed_preflight_is_granted_what_it_asked() {
        let grant = settings()
            .preflight(
                &headers(&[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "PUT"),
                    (
                        "access-control-request-headers",
                        "Authorization, Content-Type",
                    ),
                ]),
                &[Method::GET, Method::PUT],
            )
            .unwrap();
        assert_eq!(grant.origin, "https://app.example.com");
        let p = grant.preflight.unwrap();
        assert_eq!(p.methods, vec![Method::GET, Method::PUT]);
        assert_eq!(p.headers, vec!["authorization", "content-type"]);
    }

    #[test]
    fn disallowed_preflights_are_refused() {
        let s = settings();
        let methods = [Method::GET, Method::PUT];
        for h in [
            headers(&[
                ("origin", "https://evil.example"),
                ("access-control-request-method", "GET"),
            ]),
            headers(&[("origin", "null"), ("access-control-request-method", "GET")]),
            headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "DELETE"),
            ]),
            headers(&[
                ("origin", "https://app.example.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-admin"),
            ]),
        ] {
            assert!(s.preflight(&h, &methods).is_err(), "{h:?}");
        }
    }

    #[test]
    fn actual_requests_get_a_grant_only_for_allowed_origins() {
        let s = settings();
        assert!(
            s.actual(&headers(&[("origin", "https://app.example.com")]))
                .is_some()
        );
        assert!(
            s.actual(&headers(&[("origin", "https://evil.example")]))
                .is_none()
        );
        assert!(s.actual(&HeaderMap::new()).is_none());
        assert!(is_preflight(
            &Method::OPTIONS,
            &headers(&[
                ("origin", "https://a"),
                ("access-control-request-method", "GET")
            ])
        ));
        assert!(!is_preflight(
            &Method::OPTIONS,
            &headers(&[("origin", "https://a")])
        ));
    }
}
