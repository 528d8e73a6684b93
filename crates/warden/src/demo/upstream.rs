//! The demo's upstream: answers every request with what it received, identity included.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;

/// Start the demo upstream on a free loopback port.
///
/// # Errors
/// When no loopback port can be bound.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(answer);
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let path = request.uri().path().to_owned();
    // A vault entry that does not exist: warden replaces this 404 with its canonical one.
    let status = if path == "/vault/missing" {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::OK
    };
    let body = json!({
        "upstream": "demo",
        "method": request.method().as_str(),
        "path": request.uri().path_and_query().map(|pq| pq.as_str()),
        "subject": header("x-warden-subject"),
        "roles": header("x-warden-roles"),
        "scopes": header("x-warden-scopes"),
        "source": header("x-warden-auth-source"),
        "decision_id": header("x-warden-decision-id"),
    });
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
