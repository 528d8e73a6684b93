//! HTTP/1.1 to an upstream host on connections that the request using them drives itself.
//!
//! hyper-util's pooled client runs each connection as a task of its own: a request is handed
//! to that task through a channel, its response comes back through another, and the pool of
//! idle connections sits behind a mutex shared by every worker. That is two task wake-ups
//! and a shared lock per request. Here a request takes an idle connection of its own worker
//! thread, polls the connection itself while it waits for the response head, and the
//! response body polls it while it streams; when the body is done the connection goes back
//! to the thread's idle list. No crate offers this over hyper's connection API (hyper-util's
//! pool is the one it replaces), so it is written here. WebSocket upgrades and HTTP/2
//! upstreams keep the pooled client: an upgraded connection outlives its request, and an
//! HTTP/2 connection is shared by many.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use thread_local::ThreadLocal;
use tokio::net::TcpStream;
use tower_service::Service;

use super::connect::Connector;
use crate::gateway::request_body::CappedBody;

/// One HTTP/1.1 connection to a host, plaintext or TLS.
type Connection = http1::Connection<MaybeHttpsStream<TokioIo<TcpStream>>, CappedBody>;

/// How long an idle connection is kept (as the pooled client keeps its own).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many idle connections to one host each worker thread keeps.
const MAX_IDLE_PER_THREAD: usize = 256;

/// The idle connections to one host, a list per worker thread.
#[derive(Default)]
pub(crate) struct Connections {
    idle: ThreadLocal<RefCell<VecDeque<Idle>>>,
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// A connection ready for its next request.
struct Idle {
    link: Box<Link>,
    since: Instant,
}

/// A connection and the handle that sends requests on it; boxed once when it is made (a
/// connection's state is large, and it moves between the idle list and its requests).
struct Link {
    sender: http1::SendRequest<CappedBody>,
    connection: Connection,
}

impl Link {
    /// Drive the connection without waiting: `false` once it is closed or failed.
    fn poll_open(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.connection).poll(cx).is_pending()
    }
}

/// Why a request could not be exchanged.
#[derive(Debug)]
pub(super) enum Failure {
    /// No connection could be made (refused, unreachable, TLS): the request never left.
    Connect(Box<dyn std::error::Error + Send + Sync>),
    /// The exchange on the connection broke.
    Exchange(Box<dyn std::error::Error + Send + Sync>),
}

impl Connections {
    /// The most recently used idle connection of this thread that is still open.
    fn take(&self) -> Option<Box<Link>> {
        let list = self.idle.get()?;
        let mut list = list.borrow_mut();
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        while let Some(mut idle) = list.pop_back() {
            if now.duration_since(idle.since) > IDLE_TIMEOUT {
                // The rest of the list is older still.
                list.clear();
                return None;
            }
            // A connection the host closed meanwhile reads its end here.
            if idle.link.poll_open(&mut cx) && idle.link.sender.is_ready() {
                return Some(idle.link);
            }
        }
        None
    }

    /// Keep `link` for the next request on this thread, if it can take one.
    fn put(&self, mut link: Box<Link>) {
        let mut cx = Context::from_waker(Waker::noop());
        if !link.poll_open(&mut cx) || !link.sender.is_ready() {
            return;
        }
        let mut list = self.idle.get_or_default().borrow_mut();
        let now = Instant::now();
        while list
            .front()
            .is_some_and(|idle| now.duration_since(idle.since) > IDLE_TIMEOUT)
        {
            list.pop_front();
        }
        if list.len() >= MAX_IDLE_PER_THREAD {
            list.pop_front();
        }
        list.push_back(Idle { link, since: now });
    }
}

/// Send `request` (its URI absolute, naming the host) on an idle connection of this thread,
/// or a new one, and wait for the response head, driving the connection meanwhile.
pub(super) async fn send(
    connections: &Arc<Connections>,
    connector: &Connector,
    mut request: Request<CappedBody>,
) -> Result<Response<DrivenBody>, Failure> {
    let address = request.uri().clone();
    // On the wire an HTTP/1.1 request names its target in origin form (RFC 9112 §3.2.1).
    *request.uri_mut() = origin_form(&address);
    let mut reused = connections.take();
    loop {
        let mut link = match reused.take() {
            Some(link) => link,
            None => connect(connector, address.clone()).await?,
        };
        let mut head = std::pin::pin!(link.sender.try_send_request(request));
        let sent = poll_fn(|cx| {
            if let Poll::Ready(sent) = head.as_mut().poll(cx) {
                return Poll::Ready(sent);
            }
            // Once the connection is done the head's future has its answer.
            if !link.poll_open(cx) {
                return head.as_mut().poll(cx);
            }
            Poll::Pending
        })
        .await;
        match sent {
            Ok(response) => {
                let home = Arc::downgrade(connections);
                return Ok(response.map(|body| DrivenBody {
                    body,
                    link: Some(link),
                    home,
                }));
            }
            // The connection closed before the request was written: it never left, so
            // it goes on a new connection.
            Err(mut e) => match e.take_message() {
                Some(unsent) => {
                    tracing::debug!(error = %e.error(), "idle upstream connection closed; connecting anew");
                    request = unsent;
                }
                None => return Err(Failure::Exchange(Box::new(e.into_error()))),
            },
        }
    }
}

/// A new connection to the host of `address`.
async fn connect(connector: &Connector, address: Uri) -> Result<Box<Link>, Failure> {
    let mut connector = connector.clone();
    poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(Failure::Connect)?;
    let stream = connector.call(address).await.map_err(Failure::Connect)?;
    let (sender, connection) = http1::Builder::new()
        .handshake(stream)
        .await
        .map_err(|e| Failure::Exchange(Box::new(e)))?;
    Ok(Box::new(Link { sender, connection }))
}

/// `address`'s path and query alone.
fn origin_form(address: &Uri) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = address.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_else(|_| Uri::from_static("/"))
}

/// A response body that drives its connection while it is read, and gives the connection
/// back to its worker thread's idle list once read to the end.
pub(crate) struct DrivenBody {
    body: Incoming,
    /// The connection, until it closes or goes back to the idle list.
    link: Option<Box<Link>>,
    home: Weak<Connections>,
}

impl fmt::Debug for DrivenBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrivenBody").finish_non_exhaustive()
    }
}

impl DrivenBody {
    /// The body is read: the connection can serve the next request.
    fn release(&mut self) {
        if let (Some(link), Some(home)) = (self.link.take(), self.home.upgrade()) {
            home.put(link);
        }
    }
}

impl Body for DrivenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some(link) = &mut this.link
            && !link.poll_open(cx)
        {
            // Closed by the host (after its last byte, or broken): what was read stays
            // readable, and the body reports the rest.
            this.link = None;
        }
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.release();
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

impl Drop for DrivenBody {
    fn drop(&mut self) {
        // A body with nothing to read (a 204, an answer to HEAD) is dropped unpolled; one
        // dropped half read closes its connection with it.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}
