//! Refusals to gRPC clients, answered as gRPC: a gRPC client (`content-type:
//! application/grpc*`) reads `grpc-status`, not the HTTP status, so warden's 401 is
//! `UNAUTHENTICATED` (16) with its `www-authenticate` metadata, a 403 `PERMISSION_DENIED` (7),
//! concealment `NOT_FOUND` (5), a 429 `RESOURCE_EXHAUSTED` (8) with `google.rpc.RetryInfo`,
//! and `grpc-message` carries the public detail. The refusal itself is rendered by
//! `warden_core::response` like every other; this module only changes its form.
//!
//! The answer is a *Trailers-Only* response (HTTP 200, the status in the headers, no body),
//! as the gRPC-over-HTTP/2 protocol defines for calls that end before any message.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

use super::body::{Body, full};

/// Whether the request is a gRPC call (`application/grpc`, `application/grpc+proto`,
/// `application/grpc-web`…).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.get(..16)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/grpc"))
        })
}

/// The gRPC code of a refusal answered with `status`. Never `OK`: only an allow is.
pub(crate) fn grpc_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 | 413 | 414 | 431 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        404 => Code::NotFound,
        429 => Code::ResourceExhausted,
        502 | 503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        500..=599 => Code::Internal,
        _ => Code::PermissionDenied,
    }
}

/// Headers of the HTTP refusal a gRPC client still needs, as metadata.
const KEPT: [HeaderName; 4] = [
    header::WWW_AUTHENTICATE,
    header::RETRY_AFTER,
    header::CACHE_CONTROL,
    header::ALLOW,
];

/// The gRPC form of a rendered refusal: its status as `grpc-status`, `detail` as
/// `grpc-message`, the challenges and `Retry-After` kept (with `RetryInfo` in
/// `grpc-status-details-bin` when the refusal has one).
pub(crate) fn refusal(rendered: &Response<Bytes>, detail: &str) -> Response<Body> {
    let code = grpc_code(rendered.status());
    let retry = rendered
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let status = match retry {
        Some(delay) => tonic::Status::with_error_details(
            code,
            detail,
            ErrorDetails::with_retry_info(Some(delay)),
        ),
        None => tonic::Status::new(code, detail),
    };
    let mut answer = status.into_http::<()>().map(|()| full(Bytes::new()));
    let headers = answer.headers_mut();
    for name in &KEPT {
        for value in rendered.headers().get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_recognised() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (value, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC-web", true),
            ("application/json", false),
            ("application/gr", false),
        ] {
            h.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_grpc(&h), grpc, "{value}");
        }
    }

    #[test]
    fn refusals_keep_their_challenge_and_retry_info() {
        let rendered = Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header(header::RETRY_AFTER, "7")
            .body(Bytes::new())
            .unwrap();
        let answer = refusal(&rendered, "Too many requests; retry later.");
        assert_eq!(answer.status(), StatusCode::OK);
        let h = answer.headers();
        assert_eq!(h["grpc-status"], "8");
        assert_eq!(h[header::RETRY_AFTER], "7");
        assert!(h.contains_key("grpc-status-details-bin"));
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/grpc")
        );

        let rendered = Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Bearer realm=\"warden\"")
            .body(Bytes::new())
            .unwrap();
        let answer = refusal(&rendered, "Authentication is required.");
        assert_eq!(answer.headers()["grpc-status"], "16");
        assert_eq!(
            answer.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"warden\""
        );
    }
}
