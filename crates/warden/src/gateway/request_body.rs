//! Request bodies on their way upstream: the WAF's bounded read of the client's body, in
//! time as well as in size. The reading and the cap are `warden_core::body`'s, shared with
//! the tower layer.

use std::time::Duration;

use hyper::body::Incoming;
use warden_core::body::{self, Prefix};

/// A client's body capped at the route's limit on its way upstream.
pub(crate) type CappedBody = body::CappedBody<Incoming>;

/// Read at most `limit` bytes of a body (one frame more tells it is larger), within
/// `timeout`: a client too slow to send it is refused like one that broke off.
pub(crate) async fn read_for_inspection(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Prefix<Incoming> {
    tokio::time::timeout(timeout, body::read_prefix(body, limit))
        .await
        .unwrap_or(Prefix::Failed)
}
