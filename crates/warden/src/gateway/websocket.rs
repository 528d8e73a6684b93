//! WebSocket handshakes: authorized like any request (the engine sees a `GET` of the path),
//! then the tunnel is passed through. Both forms are accepted from clients — HTTP/1.1
//! `Upgrade: websocket` and RFC 8441's extended `CONNECT` over HTTP/2 — and both reach the
//! upstream as an HTTP/1.1 upgrade. A refused handshake gets the normal refusal, never a
//! 101; an upgrade that carries a body is refused by the engine's framing checks.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode, Version};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::body::{Body, full};

/// How the client asked to open a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// `GET` with `Connection: upgrade` and `Upgrade: websocket` (RFC 6455).
    Http1,
    /// `CONNECT` with `:protocol websocket` on an HTTP/2 stream (RFC 8441).
    Http2,
}

/// The handshake a request is, if it is one.
pub(crate) fn handshake(parts: &Parts) -> Option<Handshake> {
    if parts.version == Version::HTTP_2 {
        let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
        return (parts.method == Method::CONNECT
            && protocol.as_str().eq_ignore_ascii_case("websocket"))
        .then_some(Handshake::Http2);
    }
    let upgrade = parts.headers.get(header::UPGRADE)?.to_str().ok()?;
    let connection_upgrade = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    (parts.method == Method::GET
        && connection_upgrade
        && upgrade.trim().eq_ignore_ascii_case("websocket"))
    .then_some(Handshake::Http1)
}

/// The upgrade headers for the upstream, after hop-by-hop removal took the client's out.
/// An HTTP/2 client sends no key (RFC 8441 §5): warden makes one for the HTTP/1.1 upstream.
pub(crate) fn prepare_upstream(handshake: Handshake, headers: &mut HeaderMap) {
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if handshake == Handshake::Http2 || !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        let key: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let key = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, key);
        if let Ok(value) = HeaderValue::from_str(&key) {
            headers.insert(header::SEC_WEBSOCKET_KEY, value);
        }
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_VERSION) {
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
}

/// The answer to the client once the upstream switched protocols: 101 for HTTP/1.1, 200
/// for an HTTP/2 stream, with the upstream's negotiated subprotocol and extensions.
pub(crate) fn client_answer<B>(handshake: Handshake, upstream: &Response<B>) -> Response<Body> {
    let mut answer = Response::new(full(Bytes::new()));
    let headers = answer.headers_mut();
    for name in [
        header::SEC_WEBSOCKET_PROTOCOL,
        header::SEC_WEBSOCKET_EXTENSIONS,
    ] {
        if let Some(value) = upstream.headers().get(&name) {
            headers.insert(name, value.clone());
        }
    }
    match handshake {
        Handshake::Http1 => {
            *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let headers = answer.headers_mut();
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            if let Some(accept) = upstream.headers().get(header::SEC_WEBSOCKET_ACCEPT) {
                headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept.clone());
            }
        }
        Handshake::Http2 => *answer.status_mut() = StatusCode::OK,
    }
    answer
}

/// Copy bytes both ways between the client's and the upstream's upgraded connections,
/// until either side closes.
pub(crate) fn tunnel(client: OnUpgrade, upstream: OnUpgrade, decision: warden_core::DecisionId) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(decision_id = %decision, error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            Ok((sent, received)) => {
                tracing::debug!(decision_id = %decision, sent, received, "WebSocket closed");
            }
            Err(e) => tracing::debug!(decision_id = %decision, error = %e, "WebSocket ended"),
        }
    });
}
