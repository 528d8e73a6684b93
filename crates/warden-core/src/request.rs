//! The request as the engine sees it: borrowed parts of an HTTP request, no body, no socket.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue, Method};
use rustls_pki_types::CertificateDer;

/// A borrowed view of one request. The gateway, the tower layer and the CLI build it from
/// whatever they hold; the engine never owns or mutates the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target as sent (origin form: path and optional query), not yet normalized.
    pub target: &'a str,
    /// The request headers as received.
    pub headers: &'a HeaderMap,
    /// The address of the TCP peer.
    pub peer: IpAddr,
    /// The body, when the driver read it for inspection (see [`crate::Need::Body`]).
    pub body: BodyView<'a>,
    /// The authority the request names besides `Host`: HTTP/2's `:authority`, or the
    /// authority of an absolute-form target. One that disagrees with `Host` is refused.
    pub authority: Option<&'a str>,
    /// The certificate chain the client presented in the TLS handshake, leaf first; empty
    /// when it presented none (or the connection is not TLS). Only a front end that
    /// terminated the TLS connection sets it, from the connection itself: never from a
    /// header. The `mtls` sources verify it against their own CAs, whatever the handshake
    /// accepted.
    pub client_certificates: &'a [CertificateDer<'a>],
}

/// What the engine knows of the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BodyView<'a> {
    /// Not read (streamed to the upstream after the decision, within the body limit).
    #[default]
    NotRead,
    /// Read whole.
    Complete(&'a [u8]),
    /// Larger than the inspection limit the driver was given.
    TooLarge,
}

impl<'a> RequestView<'a> {
    /// A view over the given parts.
    #[must_use]
    pub fn new(method: &'a Method, target: &'a str, headers: &'a HeaderMap, peer: IpAddr) -> Self {
        Self {
            method,
            target,
            headers,
            peer,
            body: BodyView::NotRead,
            authority: None,
            client_certificates: &[],
        }
    }

    /// The same view with the certificate chain the client presented (leaf first).
    #[must_use]
    pub fn with_client_certificates(mut self, chain: &'a [CertificateDer<'a>]) -> Self {
        self.client_certificates = chain;
        self
    }

    /// The same view with the authority the request names besides `Host`.
    #[must_use]
    pub fn with_authority(mut self, authority: Option<&'a str>) -> Self {
        self.authority = authority;
        self
    }

    /// The same view with the body the driver read.
    #[must_use]
    pub fn with_body(mut self, body: BodyView<'a>) -> Self {
        self.body = body;
        self
    }

    /// Whether the client prefers an HTML page to a problem+json document.
    ///
    /// Only an `Accept` header that ranks `text/html` above both `application/problem+json`
    /// and `application/json` asks for HTML; a missing header or `*/*` gets JSON.
    #[must_use]
    pub fn prefers_html(&self) -> bool {
        let mut html = 0.0_f32;
        let mut json = 0.0_f32;
        for value in self.headers.get_all(http::header::ACCEPT) {
            let Ok(text) = value.to_str() else { continue };
            for item in text.split(',') {
                let mut parts = item.split(';');
                let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                match media.as_str() {
                    "text/html" | "application/xhtml+xml" => html = html.max(q),
                    "application/problem+json" | "application/json" => json = json.max(q),
                    _ => {}
                }
            }
        }
        html > 0.0 && html > json
    }
}

/// A header's value if it is sent exactly once: a browser sends `Origin` or
/// `Sec-Fetch-Site` once, so two values are treated as none (and the checks that read them
/// fail closed).
pub(crate) fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// One `name=value` pair of a `Cookie` field, both trimmed; `None` without a `=`. The one
/// rule for a cookie's name: what reads warden's cookies and what strips them before the
/// upstream must never disagree about one.
pub(crate) fn cookie_pair(pair: &str) -> Option<(&str, &str)> {
    pair.split_once('=').map(|(n, v)| (n.trim(), v.trim()))
}

/// A cookie name sent more than once (cookie tossing: a sibling site planting a second
/// cookie of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CookieSentTwice;

/// The trimmed value of the named cookie across every `Cookie` header, `None` when absent
/// or empty.
///
/// # Errors
/// When the name is sent twice.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, CookieSentTwice> {
    let mut found = None;
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((n, v)) = cookie_pair(pair)
                && n == name
            {
                if found.is_some() {
                    return Err(CookieSentTwice);
                }
                found = Some(v);
            }
        }
    }
    Ok(found.filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_with_accept(accept: Option<&str>) -> bool {
        let mut headers = HeaderMap::new();
        if let Some(a) = accept {
            headers.insert(
                http::header::ACCEPT,
                http::HeaderValue::from_str(a).unwrap(),
            );
        }
        RequestView::new(&Method::GET, "/", &headers, IpAddr::from([127, 0, 0, 1])).prefers_html()
    }

    #[test]
    fn browsers_get_html_and_api_clients_get_json() {
        assert!(view_with_accept(Some(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        )));
        assert!(!view_with_accept(None));
        assert!(!view_with_accept(Some("*/*")));
        assert!(!view_with_accept(Some("application/json")));
        assert!(!view_with_accept(Some(
            "text/html;q=0.5, application/problem+json"
        )));
        assert!(!view_with_accept(Some("text/html;q=0")));
    }
}
