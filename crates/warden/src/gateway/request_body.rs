//! Request bodies on their way upstream: read whole (bounded) when the WAF inspects them,
//! and capped at the route's limit while streaming otherwise.
//!
//! `http_body_util::Limited` caps a body too, but its error cannot be told apart from the
//! client's own failures once hyper's client has wrapped it; the cap here records that it
//! fired, so the gateway answers 413 rather than 502.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// A boxed error for upstream request bodies.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What reading a body for inspection gave.
pub(crate) enum Read {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// More than the limit: what was read, and the rest, unread.
    TooLarge { prefix: Bytes, rest: Incoming },
    /// The client broke off, sent a malformed body, or was too slow.
    Failed,
}

/// Read at most `limit` bytes of a body (one more tells it is larger), within `timeout`.
pub(crate) async fn read_for_inspection(
    mut body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Read {
    let read = async {
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return None;
            };
            if let Ok(data) = frame.into_data() {
                buf.extend_from_slice(&data);
                if buf.len() > limit {
                    return Some((buf.freeze(), Some(())));
                }
            }
        }
        Some((buf.freeze(), None))
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Some((bytes, None))) => Read::Complete(bytes),
        Ok(Some((prefix, Some(())))) => Read::TooLarge { prefix, rest: body },
        Ok(None) | Err(_) => Read::Failed,
    }
}

/// A request body sent upstream: an optional prefix already read, then the rest of the
/// client's body, refused past `max` bytes.
#[derive(Debug)]
pub(crate) struct CappedBody {
    prefix: Option<Bytes>,
    rest: Option<Incoming>,
    sent: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

/// Set when a capped body went past its limit.
#[derive(Debug, Clone, Default)]
pub(crate) struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    pub(crate) fn fired(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The body went past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub(crate) struct TooLarge(u64);

impl CappedBody {
    pub(crate) fn new(prefix: Option<Bytes>, rest: Option<Incoming>, max: u64) -> (Self, Exceeded) {
        let exceeded = Exceeded::default();
        let body = Self {
            prefix: prefix.filter(|p| !p.is_empty()),
            rest,
            sent: 0,
            max,
            exceeded: Arc::clone(&exceeded.0),
        };
        (body, exceeded)
    }

    fn count(&mut self, n: usize) -> Result<(), BoxError> {
        self.sent = self
            .sent
            .saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
        if self.sent > self.max {
            self.exceeded.store(true, Ordering::Relaxed);
            self.rest = None;
            return Err(Box::new(TooLarge(self.max)));
        }
        Ok(())
    }
}

impl HttpBody for CappedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            if let Err(e) = self.count(prefix.len()) {
                return Poll::Ready(Some(Err(e)));
            }
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let Some(rest) = self.rest.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(rest).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                self.rest = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, Bytes::len);
                if let Err(e) = self.count(n) {
                    return Poll::Ready(Some(Err(e)));
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let hint = rest.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower().saturating_add(prefix));
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper.saturating_add(prefix));
                }
                out
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_alone_is_counted_against_the_cap() {
        let (body, exceeded) = CappedBody::new(Some(Bytes::from_static(b"12345")), None, 4);
        assert!(body.collect().await.is_err());
        assert!(exceeded.fired());
        let (body, exceeded) = CappedBody::new(Some(Bytes::from_static(b"1234")), None, 4);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "1234");
        assert!(!exceeded.fired());
    }
}
