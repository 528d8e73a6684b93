//! HTTP/1.1 to an upstream host for requests without a body, written and read by warden
//! itself, on connections kept per worker thread.
//!
//! Most API traffic is bodyless (`GET`, `HEAD`, `DELETE`), and for it hyper's client costs
//! more than the exchange: each request crosses two channels to the connection's own task
//! and back (a task switch each way), and the response head is parsed into a message that
//! is then converted again. Here the request head is written from the header map in one
//! buffer and one write, and the response head is parsed with `httparse` (the parser hyper
//! uses) straight into the response, its values sharing the bytes read; the body is read by
//! the same task that relays it. No crate offers an HTTP/1.1 client codec apart from a
//! client (hyper's is internal to it), so it is written here, and kept strict: whatever is
//! not plainly framed is a 502 and the connection is closed, never reused.
//!
//! Framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, 204 and 304; `chunked` (the only
//! transfer coding accepted); then `Content-Length` (every value the same, digits only);
//! otherwise the body runs to the close. A connection goes back to its thread's idle list
//! only after a response read to its end, on HTTP/1.1 without `Connection: close`, with no
//! byte left over; a body dropped half read closes it.
//!
//! Requests with a body take hyper's connection ([`super::h1`]).

use std::fmt;
use std::future::poll_fn;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::Failure;
use super::connect::Connector;
use super::idle::IdleList;
use crate::gateway::request_body::CappedBody;

/// A connection to a host, plaintext or TLS.
type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// The largest response head read (status line and fields).
const MAX_HEAD: usize = 64 * 1024;

/// The most fields a response head or a trailer section may have (hyper's own bound).
const MAX_FIELDS: usize = 100;

/// How much is asked of the socket at a time.
const READ_SIZE: usize = 16 * 1024;

/// The longest chunk-size line (with its extensions) read before the body is refused.
const MAX_CHUNK_LINE: usize = 4096;

/// The largest trailer section read.
const MAX_TRAILERS: usize = 16 * 1024;

/// How many idle connections found closed under a request are passed over before a new one
/// is made.
const MAX_STALE: usize = 3;

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    /// Reading or writing failed.
    #[error("upstream connection: {0}")]
    Io(#[from] std::io::Error),
    /// The host closed the connection before any byte of an answer.
    #[error("the upstream closed the connection before answering")]
    Closed,
    /// The host closed the connection inside the response.
    #[error("the upstream closed the connection inside its response")]
    Truncated,
    /// The response head is not HTTP/1.x.
    #[error("malformed response head from the upstream: {0}")]
    Head(httparse::Error),
    /// The response head outgrew [`MAX_HEAD`].
    #[error("the upstream's response head is over {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// A field name or value the response may not carry, or a status code out of range.
    #[error("the upstream's response has an invalid status or field")]
    Field,
    /// `Content-Length` values that are not one number.
    #[error("the upstream's Content-Length is invalid")]
    ContentLength,
    /// A transfer coding other than `chunked` alone.
    #[error("the upstream's Transfer-Encoding is not `chunked`")]
    TransferCoding,
    /// A 101 to a request that asked for no upgrade.
    #[error("the upstream switched protocols unasked")]
    Upgrade,
    /// A chunked body that does not follow RFC 9112 §7.1.
    #[error("malformed chunked body from the upstream")]
    Chunked,
}

/// A connection, with what has been read from it and not used yet. Always boxed: a TLS
/// stream is kilobytes, and the request's future and the body move it.
pub(crate) struct Conn {
    io: Io,
    read: BytesMut,
    /// The request head, written here and sent in one write.
    write: Vec<u8>,
}

impl Conn {
    fn new(io: Io) -> Box<Self> {
        Box::new(Self {
            io,
            read: BytesMut::with_capacity(READ_SIZE),
            write: Vec::with_capacity(1024),
        })
    }

    /// Read more into the buffer: `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read)
    }

    async fn fill(&mut self) -> std::io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Whether an idle connection is still open, without waiting and, while nothing has
    /// arrived on it, without a system call: the runtime knows the socket has not turned
    /// readable. A closed connection (or one with bytes nobody asked for) is not.
    fn still_open(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut probe = [MaybeUninit::uninit(); 1];
        let mut probe = ReadBuf::uninit(&mut probe);
        let mut cx = Context::from_waker(Waker::noop());
        matches!(
            Pin::new(&mut self.io).poll_read(&mut cx, &mut probe),
            Poll::Pending
        )
    }
}

/// The idle connections to one host, a list per worker thread.
pub(crate) type Connections = IdleList<Box<Conn>>;

/// Send `request` (bodyless, its URI absolute, naming the host) on an idle connection of
/// this thread, or on a new one, and read the response head.
pub(super) async fn send(
    connections: &Arc<Connections>,
    connector: &Connector,
    request: Request<CappedBody>,
) -> Result<Response<WireBody>, Failure> {
    let (parts, _empty) = request.into_parts();
    let head_request = parts.method == Method::HEAD;
    let mut stale = 0;
    loop {
        let idle = if stale < MAX_STALE {
            connections.take(|conn| conn.still_open())
        } else {
            None
        };
        let (mut conn, reused) = match idle {
            Some(conn) => (conn, true),
            // Boxed: the connector's future (a TLS handshake) is large and rarely awaited.
            _ => (Box::pin(connect(connector, &parts.uri)).await?, false),
        };
        encode_head(&mut conn.write, &parts.method, &parts.uri, &parts.headers);
        let sent = match conn.io.write_all(&conn.write).await {
            Ok(()) => conn.io.flush().await,
            Err(e) => Err(e),
        };
        let answer = match sent {
            Ok(()) => read_head(&mut conn, head_request).await,
            Err(e) => Err(WireError::Io(e)),
        };
        match answer {
            Ok(head) => return Ok(respond(head, conn, Arc::clone(connections))),
            // Closed by the host while idle: nothing came back. A request that changes
            // nothing goes again on another connection (nginx's rule for its keep-alive
            // connections); one that may have, is a 502.
            Err(WireError::Closed | WireError::Io(_))
                if reused && conn.read.is_empty() && parts.method.is_idempotent() =>
            {
                tracing::debug!("idle upstream connection closed under a request; taking another");
                stale += 1;
            }
            Err(e) => return Err(Failure::Exchange(Box::new(e))),
        }
    }
}

/// A new connection to the host of `address`.
async fn connect(connector: &Connector, address: &Uri) -> Result<Box<Conn>, Failure> {
    let mut connector = connector.clone();
    poll_fn(|cx| connector.poll_ready(cx))
        .await
        .map_err(Failure::Connect)?;
    let stream = connector
        .call(address.clone())
        .await
        .map_err(Failure::Connect)?;
    Ok(Conn::new(TokioIo::new(stream)))
}

/// Write the request head: the request line in origin form (RFC 9112 §3.2.1) and every
/// field. The map's names and values are valid on the wire by construction (no CR, LF or
/// NUL can be in them).
fn encode_head(out: &mut Vec<u8>, method: &Method, uri: &Uri, headers: &HeaderMap) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        uri.path_and_query()
            .map_or("/", |pq| pq.as_str())
            .as_bytes(),
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method that gives content a meaning says it has none (RFC 9110 §8.6).
    if matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        && !headers.contains_key(header::CONTENT_LENGTH)
    {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A response head and how its body is framed.
struct Head {
    status: StatusCode,
    version: Version,
    headers: HeaderMap,
    framing: Framing,
    /// Whether the connection may carry another request after this response.
    reusable: bool,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    Empty,
    /// This many bytes.
    Length(u64),
    /// Chunked (RFC 9112 §7.1).
    Chunked,
    /// At the close of the connection.
    Close,
}

/// Read the response head to a request, passing over interim (1xx) responses.
async fn read_head(conn: &mut Conn, head_request: bool) -> Result<Head, WireError> {
    loop {
        if !conn.read.is_empty() {
            if let Some(head) = parse_head(&mut conn.read, head_request)? {
                return Ok(head);
            }
            if conn.read.len() >= MAX_HEAD {
                return Err(WireError::HeadTooLarge);
            }
        }
        let was_empty = conn.read.is_empty();
        if conn.fill().await? == 0 {
            return Err(if was_empty {
                WireError::Closed
            } else {
                WireError::Truncated
            });
        }
    }
}

/// Parse a complete response head off the front of `buf` (`None`: not all there yet). An
/// interim response is consumed and the next one parsed.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, WireError> {
    loop {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buf, &mut fields)
            .map_err(WireError::Head)?;
        let httparse::Status::Complete(len) = parsed else {
            return Ok(None);
        };
        let code = response.code.unwrap_or_default();
        if code == 101 {
            return Err(WireError::Upgrade);
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|_| WireError::Field)?;
        let version = match response.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        // Where each field sits in the head, so that its value shares the head's bytes.
        let base = buf.as_ptr() as usize;
        let mut spans = Vec::with_capacity(response.headers.len());
        for field in response.headers.iter() {
            let name =
                HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| WireError::Field)?;
            let len = field.value.len();
            let start = (field.value.as_ptr() as usize)
                .checked_sub(base)
                .filter(|start| start + len <= buf.len());
            match start {
                Some(start) => spans.push((name, start, start + len)),
                // An empty value need not point into the head.
                None if len == 0 => spans.push((name, 0, 0)),
                None => return Err(WireError::Field),
            }
        }
        let head = buf.split_to(len).freeze();
        let mut headers = HeaderMap::with_capacity(spans.len());
        for (name, start, end) in spans {
            let value = HeaderValue::from_maybe_shared(head.slice(start..end))
                .map_err(|_| WireError::Field)?;
            headers.append(name, value);
        }
        let (framing, framed_cleanly) = framing(status, head_request, &headers)?;
        let reusable = framed_cleanly
            && version == Version::HTTP_11
            && framing != Framing::Close
            && !has_token(&headers, header::CONNECTION, "close");
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            reusable,
        }));
    }
}

/// How the body of a response is framed, and whether the framing leaves the connection fit
/// for another request (a `Content-Length` beside `Transfer-Encoding` does not: RFC 9112
/// §6.3, item 3).
fn framing(
    status: StatusCode,
    head_request: bool,
    headers: &HeaderMap,
) -> Result<(Framing, bool), WireError> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        let mut codings = headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|c| !c.is_empty());
        let chunked = codings
            .next()
            .is_some_and(|c| c.eq_ignore_ascii_case(b"chunked"))
            && codings.next().is_none();
        if !chunked {
            return Err(WireError::TransferCoding);
        }
        return Ok((
            Framing::Chunked,
            !headers.contains_key(header::CONTENT_LENGTH),
        ));
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|b| *b == b',') {
            let part = part.trim_ascii();
            let n = if !part.is_empty() && part.len() <= 19 && part.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(part)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
            } else {
                None
            };
            match (n, length) {
                (None, _) => return Err(WireError::ContentLength),
                (Some(n), Some(seen)) if n != seen => return Err(WireError::ContentLength),
                (Some(n), _) => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(0) => (Framing::Empty, true),
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, true),
    })
}

/// Whether a comma-separated field holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The response to hand on: a body with nothing to read gives its connection back now.
fn respond(head: Head, conn: Box<Conn>, home: Arc<Connections>) -> Response<WireBody> {
    let state = match head.framing {
        Framing::Empty => State::Done,
        Framing::Length(n) => State::Length(n),
        Framing::Chunked => State::Chunk(Chunk::Size),
        Framing::Close => State::Close,
    };
    let mut body = WireBody {
        conn: Some(conn),
        state,
        reusable: head.reusable,
        home,
    };
    if body.state == State::Done {
        body.finish();
    }
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = head.version;
    *response.headers_mut() = head.headers;
    response
}

/// Where a body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes still to come.
    Length(u64),
    /// Until the close.
    Close,
    /// Inside a chunked body.
    Chunk(Chunk),
    /// Read to the end (or failed).
    Done,
}

/// Where a chunked body's reading stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// This many bytes of a chunk's data still to come.
    Data(u64),
    /// Before the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then an empty line.
    Trailers,
}

/// A response body read off its connection by the task that relays it. Read to the end,
/// the connection goes back to the host's idle list of the thread reading it (when fit for
/// another request); dropped before, the connection closes with it.
pub(crate) struct WireBody {
    conn: Option<Box<Conn>>,
    state: State,
    reusable: bool,
    home: Arc<Connections>,
}

impl fmt::Debug for WireBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WireBody")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl WireBody {
    /// The body is read: the connection serves the next request, if it may and nothing
    /// beyond the response came on it.
    fn finish(&mut self) {
        self.state = State::Done;
        if let Some(conn) = self.conn.take()
            && self.reusable
            && conn.read.is_empty()
        {
            self.home.put(conn);
        }
    }

    /// The body cannot be read on: the connection closes.
    fn fail(&mut self, error: WireError) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }

    /// Up to `remaining` bytes of data from what has been read (`None`: nothing read yet).
    fn take_data(conn: &mut Conn, remaining: u64) -> Option<(Bytes, u64)> {
        if conn.read.is_empty() {
            return None;
        }
        let n = usize::try_from(remaining).map_or(conn.read.len(), |r| r.min(conn.read.len()));
        let data = conn.read.split_to(n).freeze();
        Some((data, remaining - n as u64))
    }
}

impl Body for WireBody {
    type Data = Bytes;
    type Error = WireError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, WireError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // What to do once more has been read; `None` when the state moved on.
            let at_end = match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) => {
                    if let Some((data, left)) = Self::take_data(conn, remaining) {
                        this.state = State::Length(left);
                        if left == 0 {
                            this.finish();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Some(WireError::Truncated)
                }
                State::Close => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    None
                }
                State::Chunk(Chunk::Data(remaining)) => {
                    if let Some((data, left)) = Self::take_data(conn, remaining) {
                        this.state = State::Chunk(if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        });
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Some(WireError::Truncated)
                }
                State::Chunk(Chunk::Size) => match chunk_size(&conn.read) {
                    Ok(Some((consumed, size))) => {
                        conn.read.advance(consumed);
                        this.state = State::Chunk(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                        continue;
                    }
                    Ok(None) if conn.read.len() > MAX_CHUNK_LINE => {
                        return this.fail(WireError::Chunked);
                    }
                    Ok(None) => Some(WireError::Truncated),
                    Err(e) => return this.fail(e),
                },
                State::Chunk(Chunk::DataEnd) => match conn.read.get(..2) {
                    Some(b"\r\n") => {
                        conn.read.advance(2);
                        this.state = State::Chunk(Chunk::Size);
                        continue;
                    }
                    Some(_) => return this.fail(WireError::Chunked),
                    None if conn.read.first().is_some_and(|b| *b != b'\r') => {
                        return this.fail(WireError::Chunked);
                    }
                    None => Some(WireError::Truncated),
                },
                State::Chunk(Chunk::Trailers) => match trailers(&conn.read) {
                    Ok(Some((consumed, fields))) => {
                        conn.read.advance(consumed);
                        this.finish();
                        return match fields {
                            Some(fields) => Poll::Ready(Some(Ok(Frame::trailers(fields)))),
                            None => Poll::Ready(None),
                        };
                    }
                    Ok(None) if conn.read.len() > MAX_TRAILERS => {
                        return this.fail(WireError::Chunked);
                    }
                    Ok(None) => Some(WireError::Truncated),
                    Err(e) => return this.fail(e),
                },
            };
            match ready!(conn.poll_fill(cx)) {
                Ok(0) => match at_end {
                    Some(error) => return this.fail(error),
                    // A body that runs to the close has ended.
                    None => {
                        this.state = State::Done;
                        this.conn = None;
                        return Poll::Ready(None);
                    }
                },
                Ok(_) => {}
                Err(e) => return this.fail(WireError::Io(e)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(n) => SizeHint::with_exact(n),
            State::Close | State::Chunk(_) => SizeHint::default(),
        }
    }
}

/// A chunk-size line off the front of `buf`: how many bytes it takes and the size (`None`:
/// not all there yet). The size must have a digit; extensions are passed over.
fn chunk_size(buf: &[u8]) -> Result<Option<(usize, u64)>, WireError> {
    match buf.first() {
        None => return Ok(None),
        Some(b) if !b.is_ascii_hexdigit() => return Err(WireError::Chunked),
        Some(_) => {}
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete(found)) => Ok(Some(found)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(WireError::Chunked),
    }
}

/// The trailer section off the front of `buf`: how many bytes it takes and its fields
/// (`None` when it has none); `None` when not all there yet.
fn trailers(buf: &[u8]) -> Result<Option<(usize, Option<HeaderMap>)>, WireError> {
    match buf.get(..2) {
        None => return Ok(None),
        Some(b"\r\n") => return Ok(Some((2, None))),
        Some(_) => {}
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((consumed, fields))) => {
            let mut map = HeaderMap::with_capacity(fields.len());
            for field in fields {
                let name = HeaderName::from_bytes(field.name.as_bytes())
                    .map_err(|_| WireError::Chunked)?;
                let value = HeaderValue::from_bytes(field.value).map_err(|_| WireError::Chunked)?;
                map.append(name, value);
            }
            Ok(Some((consumed, Some(map))))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(WireError::Chunked),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, WireError> {
        parse_head(&mut BytesMut::from(text), false)
    }

    #[test]
    fn heads_are_framed_as_rfc_9112_says() {
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Length(3), true));
        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, true));
        // Both: chunked wins and the connection is not reused.
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Chunked, false));
        // Neither: to the close.
        let h = head("HTTP/1.1 200 OK\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.reusable), (Framing::Close, false));
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Empty);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.reusable, "HTTP/1.0 closes");
        let h =
            head("HTTP/1.1 200 OK\r\nconnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(!h.reusable);
        let h = parse_head(
            &mut BytesMut::from("HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n"),
            true,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Empty, "a HEAD answer has no body");
        // Repeated identical lengths are one length.
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 4, 4\r\ncontent-length: 4\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(4));
    }

    #[test]
    fn ambiguous_or_unsupported_framing_is_refused() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0x10\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(WireError::ContentLength)),
                "{text:?}"
            );
        }
        for text in [
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: identity\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(WireError::TransferCoding)),
                "{text:?}"
            );
        }
        assert!(matches!(
            head("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            Err(WireError::Upgrade)
        ));
        // A space before the colon, a field folded over two lines, a bare LF in a value.
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length : 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(head(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn interim_responses_are_passed_over_and_partial_heads_wait() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert!(buf.is_empty());
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }

    #[test]
    fn field_values_share_the_heads_bytes() {
        let h = head("HTTP/1.1 404 Not Found\r\nServer: up\r\nX-Two: a\r\nx-two: b\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, StatusCode::NOT_FOUND);
        assert_eq!(h.headers["server"], "up");
        let two: Vec<_> = h.headers.get_all("x-two").iter().collect();
        assert_eq!(two, ["a", "b"]);
    }

    #[test]
    fn chunk_size_lines_are_strict() {
        assert_eq!(chunk_size(b"1a\r\n").unwrap(), Some((4, 26)));
        assert_eq!(chunk_size(b"5;name=\"v\"\r\n").unwrap(), Some((12, 5)));
        assert_eq!(chunk_size(b"5").unwrap(), None);
        for line in [
            &b"\r\n"[..],
            b";x\r\n",
            b"-1\r\n",
            b"g\r\n",
            b"5\rx",
            b"11111111111111111\r\n",
        ] {
            assert!(chunk_size(line).is_err(), "{line:?}");
        }
    }

    #[test]
    fn trailers_are_fields_or_nothing() {
        assert_eq!(
            trailers(b"\r\n").unwrap().map(|(n, f)| (n, f.is_none())),
            Some((2, true))
        );
        let (n, fields) = trailers(b"grpc-status: 0\r\n\r\nnext").unwrap().unwrap();
        assert_eq!(n, 18);
        assert_eq!(fields.unwrap()["grpc-status"], "0");
        assert!(trailers(b"grpc-status: 0\r\n").unwrap().is_none());
        assert!(trailers(b"bad field\r\n\r\n").is_err());
    }

    #[test]
    fn request_heads_are_written_in_origin_form() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("up:8080"));
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        let uri: Uri = "http://up:8080/a/b?c=d".parse().unwrap();
        let mut out = Vec::new();
        encode_head(&mut out, &Method::GET, &uri, &headers);
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "GET /a/b?c=d HTTP/1.1\r\nhost: up:8080\r\nx-a: 1\r\nx-a: 2\r\n\r\n"
        );
        encode_head(&mut out, &Method::POST, &uri, &HeaderMap::new());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a/b?c=d HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
        );
    }
}
