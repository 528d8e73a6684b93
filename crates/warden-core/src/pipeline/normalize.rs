//! Normalize: refuse ambiguous framing (request smuggling), then find the one
//! canonical path, with the configured case and trailing-slash policies.

use super::{Ctx, Outcome, Stop};
use crate::config::Config;
use crate::decision::{Reason, Stage};
use crate::hygiene::{HygieneSettings, PathCase, TrailingSlash};
use crate::normalize::{Normalized, normalize};
use crate::request::RequestView;

pub(super) fn run(
    config: &Config,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<Normalized, Stop> {
    if let Some(detail) = ambiguous_framing(request.headers).or_else(|| ambiguous_host(request)) {
        cx.note(Stage::Normalize, false, || detail.to_owned());
        return Err(malformed(detail));
    }
    let mut target = match normalize(request.target) {
        Ok(t) => t,
        Err(e) => {
            cx.note(Stage::Normalize, false, || e.detail().to_owned());
            return Err(malformed(e.detail()));
        }
    };
    apply_path_policies(&config.hygiene, &mut target);
    cx.note(Stage::Normalize, true, || {
        format!("canonical path {}", target.path)
    });
    Ok(target)
}

fn malformed(detail: &'static str) -> Stop {
    Outcome::deny(Stage::Normalize, None, Reason::MalformedRequest { detail }).into()
}

/// The configured case and trailing-slash policies, applied to the canonical path (which is
/// then both routed and forwarded).
fn apply_path_policies(settings: &HygieneSettings, target: &mut Normalized) {
    if settings.trailing_slash == TrailingSlash::Ignore && target.path.len() > 1 {
        while target.path.len() > 1 && target.path.ends_with('/') {
            target.path.pop();
        }
    }
    if settings.path_case == PathCase::Insensitive {
        target.path.make_ascii_lowercase();
    }
}

/// A message whose length two parsers could read differently (RFC 9112 §6.3): both
/// `Transfer-Encoding` and `Content-Length`, or `Content-Length` more than once.
fn ambiguous_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    if lengths > 0 && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Some("The request has both Transfer-Encoding and Content-Length");
    }
    if lengths > 1 {
        return Some("The request has more than one Content-Length");
    }
    // What follows a WebSocket upgrade is the tunnel: a body before it would be read as
    // the first bytes of the tunnel by one side and as a body by the other.
    let has_body = headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if has_body && asks_websocket_upgrade(headers) {
        return Some("An upgrade request must not carry a body");
    }
    None
}

/// `Upgrade: websocket` with `upgrade` among the `Connection` options: a handshake the
/// gateway would honour. (An `Upgrade` header alone, or an upgrade to another protocol, is
/// only a hop-by-hop header the gateway removes.)
fn asks_websocket_upgrade(headers: &http::HeaderMap) -> bool {
    let websocket = headers
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
        });
    websocket
        && headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A request that names two hosts: `Host` twice, or a `Host` that is not its `:authority`
/// (HTTP/2) or the authority of its absolute-form target. A proxy that routes by one and an
/// upstream that reads the other would disagree on where the request goes.
fn ambiguous_host(request: &RequestView<'_>) -> Option<&'static str> {
    let mut hosts = request.headers.get_all(http::header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some("The request has more than one Host");
    }
    match (request.authority, host) {
        (Some(authority), Some(host))
            if !host.as_bytes().eq_ignore_ascii_case(authority.as_bytes()) =>
        {
            Some("The request's authority and its Host disagree")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn two_hosts_are_refused() {
        let method = http::Method::GET;
        let mut h = http::HeaderMap::new();
        h.append(
            http::header::HOST,
            HeaderValue::from_static("api.example.com"),
        );
        let peer = std::net::IpAddr::from([127, 0, 0, 1]);
        let view = RequestView::new(&method, "/", &h, peer);
        assert_eq!(ambiguous_host(&view), None);
        let same = view.with_authority(Some("API.example.com"));
        assert_eq!(ambiguous_host(&same), None, "names compare without case");
        let other = view.with_authority(Some("internal.example.com"));
        assert!(ambiguous_host(&other).is_some());
        h.append(
            http::header::HOST,
            HeaderValue::from_static("api.example.com"),
        );
        let twice = RequestView::new(&method, "/", &h, peer);
        assert!(ambiguous_host(&twice).is_some());
    }

    #[test]
    fn ambiguous_framing_is_found() {
        let mut h = http::HeaderMap::new();
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert!(ambiguous_framing(&h).is_some(), "two Content-Length fields");
        let mut h = http::HeaderMap::new();
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        h.append(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(ambiguous_framing(&h).is_some(), "CL and TE");
    }
}
