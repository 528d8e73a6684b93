//! The recording upstream: a real HTTP server on loopback that keeps what reached it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method, as sent.
    pub method: String,
    /// The path and query, as received.
    pub target: String,
    /// Every header received.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Which connection it came on: the upstream numbers the connections it accepts from 0.
    pub connection: usize,
}

/// A real HTTP server on loopback that records what reaches it.
///
/// `/slow` answers after two seconds, `/missing` answers 404, `/echo-status/NNN` answers NNN.
/// A path ending in `/no-content` answers 204, one ending in `/large` 4 MiB of `x`, one ending
/// in `/close` the JSON below with `Connection: close`, closing its connection; anything else
/// answers 200 with a small JSON body,
/// `{"upstream":true,"target":"<path and query>","bytes":<body length>}`, which also names a
/// header in `Connection` (`x-upstream-secret`) that a proxy must not pass on.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Where it listens (a free loopback port).
    pub addr: SocketAddr,
    /// Every request it received, in order.
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Bind a free loopback port and serve on the current tokio runtime.
    pub async fn start() -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            let mut accepted = 0;
            while let Ok((stream, _)) = listener.accept().await {
                let record = Arc::clone(&record);
                let connection = accepted;
                accepted += 1;
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        answer(Arc::clone(&record), connection, req)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen }
    }

    /// The requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The last request received; panics when there was none.
    pub fn last(&self) -> Seen {
        self.seen()
            .last()
            .cloned()
            .expect("the upstream saw no request")
    }
}

async fn answer(
    record: Arc<Mutex<Vec<Seen>>>,
    connection: usize,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map(|pq| pq.to_string())
        .unwrap_or_default();
    record.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        target: target.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
        connection,
    });
    let path = parts.uri.path();
    if path == "/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let status = if path == "/missing" || path.ends_with("/missing") {
        StatusCode::NOT_FOUND
    } else if let Some(code) = path.strip_prefix("/echo-status/") {
        StatusCode::from_u16(code.parse().unwrap_or(200)).unwrap_or(StatusCode::OK)
    } else {
        StatusCode::OK
    };
    if path.ends_with("/no-content") {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        return Ok(response);
    }
    if path.ends_with("/large") {
        return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 4 << 20]))));
    }
    let mut response = Response::new(Full::new(Bytes::from(format!(
        "{{\"upstream\":true,\"target\":\"{target}\",\"bytes\":{}}}",
        body.len()
    ))));
    *response.status_mut() = status;
    if path.ends_with("/close") {
        response
            .headers_mut()
            .insert("connection", HeaderValue::from_static("close"));
        return Ok(response);
    }
    response
        .headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    response
        .headers_mut()
        .insert("connection", HeaderValue::from_static("x-upstream-secret"));
    response
        .headers_mut()
        .insert("x-upstream-secret", HeaderValue::from_static("hop"));
    Ok(response)
}
