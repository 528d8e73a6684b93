//! The one response body type: a buffered refusal or a streamed upstream body.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

/// Why a streamed body could not be read on.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// hyper's: a client or an HTTP/2 upstream.
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    /// The HTTP/1.1 upstream codec's.
    #[error(transparent)]
    Upstream(#[from] super::upstream::WireError),
}

/// Every response body the gateway sends.
pub(crate) type Body = BoxBody<Bytes, BodyError>;

/// A body from bytes held in memory.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Turn a rendered response into a gateway response.
pub(crate) fn from_rendered(response: http::Response<Bytes>) -> http::Response<Body> {
    response.map(full)
}
