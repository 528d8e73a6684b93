//! Request bodies for drivers: read a bounded prefix for the WAF ([`read_prefix`]), then
//! forward what was read and the rest, capped at the route's limit ([`CappedBody`]).
//! Poll-based and runtime-free, over any [`http_body::Body`]; the gateway and the tower
//! layer both use them. A driver adds its own time limit around [`read_prefix`].
//!
//! `http_body_util::Limited` caps a body too, but its error cannot be told apart from the
//! client's own failures once a client or a framework has wrapped it; the cap here records
//! that it fired ([`Exceeded`]), so the driver answers 413 rather than 502 or 400.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// A boxed error, the error type of [`CappedBody`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What reading a prefix of a body gave.
#[derive(Debug)]
pub enum Prefix<B> {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// More than the limit: what was read, and the rest, unread.
    TooLarge {
        /// The bytes read (one frame past the limit at most).
        prefix: Bytes,
        /// The body, positioned after them.
        rest: B,
    },
    /// The body failed (the client broke off or sent malformed framing).
    Failed,
}

/// Read at most `limit` bytes of `body` (one frame more tells that it is larger).
pub async fn read_prefix<B>(mut body: B, limit: usize) -> Prefix<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut buf = BytesMut::new();
    loop {
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => return Prefix::Complete(buf.freeze()),
            Some(Err(_)) => return Prefix::Failed,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Prefix::TooLarge {
                            prefix: buf.freeze(),
                            rest: body,
                        };
                    }
                }
            }
        }
    }
}

/// A request's body as a driver starts with it: one known to be empty is `None`, and the
/// view says so (`BodyView::Complete(&[])`, so the WAF waits for nothing); any other is
/// kept, for [`Held::new`], until the engine asks for it.
pub fn split<B: Body>(body: B) -> (Option<B>, crate::request::BodyView<'static>) {
    if body.is_end_stream() {
        (None, crate::request::BodyView::Complete(&[]))
    } else {
        (Some(body), crate::request::BodyView::NotRead)
    }
}

/// A request's body while it is decided: what was read for the WAF, and the rest. A
/// driver's [`crate::Host::read_body`] takes the unread body, reads a prefix its own way (the
/// gateway within a time limit) and settles the outcome here; [`Held::into_parts`] then
/// gives what to forward.
#[derive(Debug)]
pub struct Held<B> {
    unread: Option<B>,
    read: Option<Bytes>,
}

impl<B> Held<B> {
    /// A body not read yet; `None` for a request without one.
    #[must_use]
    pub fn new(body: Option<B>) -> Self {
        Self {
            unread: body,
            read: None,
        }
    }

    /// The body to read from, `None` when there is none (an empty body is complete).
    pub fn take_unread(&mut self) -> Option<B> {
        self.unread.take()
    }

    /// Keep what a read gave, and tell the engine what it means.
    pub fn settle(&mut self, prefix: Prefix<B>) -> crate::BodyRead {
        match prefix {
            Prefix::Complete(bytes) => {
                self.read = Some(bytes.clone());
                crate::BodyRead::Complete(bytes)
            }
            Prefix::TooLarge { prefix, rest } => {
                self.read = Some(prefix);
                self.unread = Some(rest);
                crate::BodyRead::TooLarge
            }
            Prefix::Failed => crate::BodyRead::Unreadable,
        }
    }

    /// What was read, and the rest, for [`CappedBody::new`].
    #[must_use]
    pub fn into_parts(self) -> (Option<Bytes>, Option<B>) {
        (self.read, self.unread)
    }
}

/// A request body on its way to the service behind: an optional prefix already read, then
/// the rest of the client's body, cut off with an error past `max` bytes.
#[derive(Debug)]
pub struct CappedBody<B> {
    prefix: Option<Bytes>,
    rest: Option<B>,
    sent: u64,
    max: u64,
    exceeded: Arc<AtomicBool>,
}

/// Set when a [`CappedBody`] went past its limit.
#[derive(Debug, Clone, Default)]
pub struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    /// Whether the cap fired: answer 413, whatever the service made of the cut-off body.
    #[must_use]
    pub fn fired(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The body went past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {0} bytes")]
pub struct TooLarge(u64);

impl<B> CappedBody<B> {
    /// `prefix` then `rest`, at most `max` bytes in all.
    #[must_use]
    pub fn new(prefix: Option<Bytes>, rest: Option<B>, max: u64) -> (Self, Exceeded) {
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

impl<B> Body for CappedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
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
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
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
        self.prefix.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
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
    use std::convert::Infallible;
    use std::task::Waker;

    use super::*;

    /// A body of the given chunks.
    #[derive(Debug)]
    struct Chunks(std::collections::VecDeque<&'static [u8]>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(
                self.0
                    .pop_front()
                    .map(|c| Ok(Frame::data(Bytes::from_static(c)))),
            )
        }
    }

    fn ready<F: std::future::Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        match future
            .as_mut()
            .poll(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(out) => out,
            Poll::Pending => panic!("the bodies here are always ready"),
        }
    }

    fn collect<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Result<Vec<u8>, B::Error> {
        let mut out = Vec::new();
        while let Some(frame) = ready(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))) {
            out.extend_from_slice(frame?.data_ref().map_or(&[][..], |b| b.as_ref()));
        }
        Ok(out)
    }

    #[test]
    fn a_prefix_alone_is_counted_against_the_cap() {
        let (body, exceeded) =
            CappedBody::<Chunks>::new(Some(Bytes::from_static(b"12345")), None, 4);
        assert!(collect(body).is_err());
        assert!(exceeded.fired());
        let (body, exceeded) =
            CappedBody::<Chunks>::new(Some(Bytes::from_static(b"1234")), None, 4);
        assert_eq!(collect(body).unwrap(), b"1234");
        assert!(!exceeded.fired());
    }

    #[test]
    fn a_streamed_body_past_the_cap_is_cut_off() {
        let rest = Chunks([&b"abc"[..], b"def"].into());
        let (body, exceeded) = CappedBody::new(None, Some(rest), 5);
        assert!(collect(body).is_err());
        assert!(exceeded.fired());
    }

    #[test]
    fn a_prefix_is_read_within_its_limit() {
        let body = Chunks([&b"abc"[..], b"def"].into());
        assert!(matches!(ready(read_prefix(body, 6)), Prefix::Complete(b) if b == "abcdef"));
        let body = Chunks([&b"abc"[..], b"def", b"ghi"].into());
        match ready(read_prefix(body, 4)) {
            Prefix::TooLarge { prefix, rest } => {
                assert_eq!(prefix, "abcdef");
                let (capped, _) = CappedBody::new(Some(prefix), Some(rest), 100);
                assert_eq!(collect(capped).unwrap(), b"abcdefghi");
            }
            other => panic!("expected a prefix, got {other:?}"),
        }
    }
}
