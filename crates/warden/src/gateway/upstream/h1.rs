//! HTTP/1.1 to an upstream host for requests with a body: hyper's connection API, with the
//! idle connections kept per worker thread ([`super::idle`]). Bodyless requests take
//! warden's own codec ([`super::wire`]).
//!
//! hyper-util's pooled client costs more per request than the exchange itself on a fast
//! upstream: it finds a connection by hashing the host's scheme and authority with SipHash
//! (byte by byte), under a lock every worker shares, twice per request (checkout and
//! return), moves a request future of several kilobytes into a box, and spawns a task per
//! request to wait for the connection to be free again. Here each connection still runs as
//! a task of its own (hyper's `client::conn::http1`), and a request takes an idle
//! connection of its own worker thread from a list the host keeps; the response body gives
//! the connection back when it has been read to the end. No crate offers a pool over
//! hyper's connection API without those costs (hyper-util's is the one it replaces), so it
//! is written here. WebSocket handshakes and HTTP/2 upstreams keep the pooled client: an
//! upgraded connection outlives its request, and an HTTP/2 connection is shared by many.

use std::fmt;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tower_service::Service;

use super::Failure;
use super::connect::Connector;
use super::idle::IdleList;
use crate::gateway::request_body::CappedBody;

/// The idle connections to one host, a list per worker thread.
pub(crate) type Connections = IdleList<http1::SendRequest<CappedBody>>;

/// Send `request` (its URI absolute, naming the host) on an idle connection of this thread,
/// or on a new one, and wait for the response head.
pub(super) async fn send(
    connections: &Arc<Connections>,
    connector: &Connector,
    mut request: Request<CappedBody>,
) -> Result<Response<KeptBody>, Failure> {
    // On the wire an HTTP/1.1 request names its target in origin form (RFC 9112 §3.2.1);
    // the absolute URI stays for connecting.
    let origin = request
        .uri()
        .path_and_query()
        .cloned()
        .map_or_else(|| Uri::from_static("/"), Uri::from);
    let address = std::mem::replace(request.uri_mut(), origin);
    loop {
        let (mut sender, reused) = match connections.take(|sender| !sender.is_closed()) {
            Some(sender) => (sender, true),
            None => (connect(connector, address.clone()).await?, false),
        };
        if let Err(e) = poll_fn(|cx| sender.poll_ready(cx)).await {
            if reused {
                // Closed by the host while idle: the request has not left; try another.
                tracing::debug!(error = %e, "idle upstream connection closed; taking another");
                continue;
            }
            return Err(Failure::Exchange(Box::new(e)));
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                let home = Arc::clone(connections);
                return Ok(response.map(|body| KeptBody {
                    body,
                    sender: Some(sender),
                    home,
                }));
            }
            // The connection closed before the request was written: it never left, so it
            // goes on another connection.
            Err(mut e) => match e.take_message() {
                Some(unsent) if reused => {
                    tracing::debug!(error = %e.error(), "idle upstream connection closed; connecting anew");
                    request = unsent;
                }
                _ => return Err(Failure::Exchange(Box::new(e.into_error()))),
            },
        }
    }
}

/// A new connection to the host of `address`, running as a task of its own.
async fn connect(
    connector: &Connector,
    address: Uri,
) -> Result<http1::SendRequest<CappedBody>, Failure> {
    let mut connector = connector.clone();
    poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(Failure::Connect)?;
    let stream = connector.call(address).await.map_err(Failure::Connect)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(stream)
        .await
        .map_err(|e| Failure::Exchange(Box::new(e)))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A response body that gives its connection back to the host's idle list of the thread
/// reading it, once it has been read to the end. A body dropped half read takes its
/// connection with it (hyper closes it): its unread rest must never reach another request.
pub(crate) struct KeptBody {
    body: Incoming,
    /// The connection's handle, until it goes back to the idle list.
    sender: Option<http1::SendRequest<CappedBody>>,
    home: Arc<Connections>,
}

impl fmt::Debug for KeptBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptBody").finish_non_exhaustive()
    }
}

impl KeptBody {
    /// The body is read: the connection can serve the next request. It may still be
    /// finishing this response (the next taker waits for it to be ready).
    fn release(&mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            self.home.put(sender);
        }
    }
}

impl Body for KeptBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        match &frame {
            Poll::Ready(None) => this.release(),
            // The last frame: the reader may not ask again (it reads `is_end_stream`).
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.release(),
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for KeptBody {
    fn drop(&mut self) {
        // A body with nothing to read (a 204, an answer to HEAD) may be dropped unpolled.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
