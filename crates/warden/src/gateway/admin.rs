//! The admin listener: health, Prometheus metrics, recent decisions, reload and revocation.
//!
//! `/healthz` (alive) and `/readyz` (configuration, key sets and state backend loaded) are
//! open. `/reload`, `/revoke` and `/decisions/recent` (clients and subjects)
//! need `Authorization: Bearer TOKEN` with a token whose SHA-256 is in `[admin] tokens`:
//! without one the answer is 401 with a `Bearer` challenge, with a wrong one 401
//! `invalid_token`, and while no token is configured every such request is refused (403).
//! `/metrics` is open unless `[admin] metrics = "token"`. A refused request changes nothing.
//! With `[admin] client_ca`, the listener serves TLS (the certificates of `[gateway.tls]`)
//! and a client certificate of that CA, verified in the handshake, is an admin credential
//! beside the tokens: a connection that presented one may use every endpoint.
//! The live dashboard (`gateway/dashboard.rs`) is served under `/dashboard`: the page is
//! open, its data (`/dashboard/…`) needs the admin token like `/decisions/recent`.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Shared;
use super::body::{Body, full};

pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.changed() => return,
        };
        let Ok((stream, peer)) = accepted else {
            continue;
        };
        let shared = Arc::clone(&shared);
        let tls = shared.admin_tls.as_ref().map(|config| config.load_full());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                serve_connection(TokioIo::new(stream), shared, false).await;
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            match tokio::time::timeout(super::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    // rustls verified any certificate it let through against the admin CAs.
                    let certified = stream.get_ref().1.peer_certificates().is_some();
                    serve_connection(TokioIo::new(stream), shared, certified).await;
                }
                Ok(Err(e)) => tracing::debug!(error = %e, %peer, "admin TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
            }
        });
    }
}

/// Serve one admin connection; `certified` when it presented an admin CA's certificate.
async fn serve_connection<I>(io: I, shared: Arc<Shared>, certified: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req, certified));
    let _ = http1::Builder::new().serve_connection(io, service).await;
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
    certified: bool,
) -> Result<Response<Body>, Infallible> {
    let path = request.uri().path().to_owned();
    if let Some(refusal) = refuse_unless_admin(&shared, &path, request.headers(), certified) {
        return Ok(refusal);
    }
    if path == "/dashboard" || path.starts_with("/dashboard/") {
        return Ok(super::dashboard::handle(&shared, &request).await);
    }
    let (status, content_type, body) = match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ok\n".to_owned(),
        ),
        (&Method::GET, "/readyz") => readiness(&shared).await,
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            shared.metrics.render(),
        ),
        (&Method::GET, "/decisions/recent") => {
            let lines = shared.log.recent();
            (
                StatusCode::OK,
                "application/x-ndjson",
                lines.join("\n") + if lines.is_empty() { "" } else { "\n" },
            )
        }
        (&Method::POST, "/reload") => reload_answer(&shared).await,
        (&Method::POST, "/revoke") => revoke_answer(&shared, request).await,
        (_, "/reload" | "/revoke") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use POST\n".to_owned(),
        ),
        (_, "/healthz" | "/readyz" | "/metrics" | "/decisions/recent") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "use GET\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        let allow = if path == "/reload" || path == "/revoke" {
            "POST"
        } else {
            "GET"
        };
        response
            .headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static(allow));
    }
    Ok(response)
}

/// `GET /readyz`: 200 once the configuration is loaded, every key set from a URL has keys
/// and the state backend answers; 503 with what is missing otherwise. (`/healthz` says the
/// process is alive; this says whether to send it traffic.)
async fn readiness(shared: &Shared) -> (StatusCode, &'static str, String) {
    if shared.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "not ready:\ndraining: the gateway is stopping\n".to_owned(),
        );
    }
    let engine = shared.engine.load_full();
    let mut missing: Vec<String> = engine
        .config()
        .key_sets_missing()
        .iter()
        .map(|source| format!("no keys yet for JWT source `{source}`"))
        .collect();
    if let Err(e) = shared.store.load_full().ready().await {
        missing.push(e.to_string());
    }
    if missing.is_empty() {
        (
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "ready\n".to_owned(),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("not ready:\n{}\n", missing.join("\n")),
        )
    }
}

/// Why a request for a protected endpoint may not go on.
enum NotAdmin {
    /// No bearer token (401 with a challenge).
    NoToken,
    /// A token that is not an admin token (401 `invalid_token`).
    WrongToken,
    /// No admin token is configured: the endpoint is off (403).
    Disabled,
}

/// The refusal for a protected endpoint without a valid admin token, `None` when it may go
/// on (or the endpoint is open).
fn refuse_unless_admin(
    shared: &Shared,
    path: &str,
    headers: &http::HeaderMap,
    certified: bool,
) -> Option<Response<Body>> {
    let engine = shared.engine.load();
    let admin = &engine.config().serve.admin;
    let protected = match path {
        "/reload" | "/revoke" | "/decisions/recent" => true,
        // The page itself holds no data; everything under it shows clients and subjects.
        p if p.starts_with("/dashboard/") => true,
        "/metrics" => admin.metrics_need_token,
        _ => false,
    };
    // A certificate counts while `client_ca` is configured (the handshake checked it
    // against the CAs in force when the connection was accepted).
    if !protected || (certified && !admin.client_roots.is_empty()) {
        return None;
    }
    let refusal = if admin.token_hashes.is_empty() && admin.client_roots.is_empty() {
        NotAdmin::Disabled
    } else {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let token = match (values.next(), values.next()) {
            (Some(v), None) => v
                .to_str()
                .ok()
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim()),
            _ => None,
        };
        match token {
            None => NotAdmin::NoToken,
            Some(_) if admin.token_hashes.is_empty() => NotAdmin::WrongToken,
            Some(token) if admin.accepts(token) => return None,
            Some(_) => NotAdmin::WrongToken,
        }
    };
    let (status, challenge, text) = match refusal {
        NotAdmin::NoToken if admin.token_hashes.is_empty() => (
            StatusCode::UNAUTHORIZED,
            Some(r#"ClientCertificate realm="warden-admin""#),
            "this endpoint needs an admin client certificate\n",
        ),
        NotAdmin::NoToken if !admin.client_roots.is_empty() => (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="warden-admin", ClientCertificate realm="warden-admin""#),
            "this endpoint needs an admin token or client certificate\n",
        ),
        NotAdmin::NoToken => (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="warden-admin""#),
            "this endpoint needs an admin token\n",
        ),
        NotAdmin::WrongToken => (
            StatusCode::UNAUTHORIZED,
            Some(r#"Bearer realm="warden-admin", error="invalid_token""#),
            "the admin token is not valid\n",
        ),
        NotAdmin::Disabled => (
            StatusCode::FORBIDDEN,
            None,
            "this endpoint is off: no [admin] tokens are configured\n",
        ),
    };
    tracing::warn!(path, status = status.as_u16(), "admin request refused");
    let mut response = Response::new(full(text));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    if let Some(challenge) = challenge {
        headers.insert(
            header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    Some(response)
}

/// `POST /reload`: 200 with what was swapped in, 422 with every error (the running
/// configuration stays), 409 when there is no file to reload.
async fn reload_answer(shared: &Arc<Shared>) -> (StatusCode, &'static str, String) {
    let (status, body) = match super::reload::reload(shared).await {
        Ok(report) => (
            StatusCode::OK,
            json!({ "status": "reloaded", "routes": report.routes, "needs_restart": report.needs_restart }),
        ),
        Err(e @ super::ReloadError::NoFile) => (
            StatusCode::CONFLICT,
            json!({ "status": "refused", "error": e.to_string() }),
        ),
        Err(super::ReloadError::Invalid(errors)) => {
            let list: Vec<_> = errors
                .0
                .iter()
                .map(|e| {
                    json!({ "file": e.file, "line": e.line, "column": e.column, "field": e.field, "message": e.message })
                })
                .collect();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({ "status": "refused", "errors": list }),
            )
        }
        Err(e @ (super::ReloadError::Tls(_) | super::ReloadError::Upstream(_))) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "status": "refused", "error": e.to_string() }),
        ),
    };
    (status, "application/json", body.to_string())
}

/// `POST /revoke` with `{"jti": "…", "ttl": 3600}` (one token) or
/// `{"subject": "…", "before": 1795459905, "ttl": 86400}` (every token of a subject issued
/// before a time; `before` defaults to now). `ttl` is how long to remember it, at least the
/// longest token lifetime; it defaults to a day.
async fn revoke_answer(
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> (StatusCode, &'static str, String) {
    use http_body_util::BodyExt;
    const MAX_BODY: usize = 4096;
    let bad = |message: &str| {
        (
            StatusCode::BAD_REQUEST,
            "application/json",
            json!({ "error": message }).to_string(),
        )
    };
    let body = match http_body_util::Limited::new(request.into_body(), MAX_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => return bad("the body is unreadable or larger than 4 KiB"),
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return bad("expected a JSON object");
    };
    let ttl = fields
        .get("ttl")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(86_400);
    let revocation = match (
        fields.get("jti").and_then(|v| v.as_str()),
        fields.get("subject").and_then(|v| v.as_str()),
    ) {
        (Some(jti), None) if !jti.is_empty() => crate::state::Revocation::Token {
            jti: jti.to_owned(),
            ttl_secs: ttl,
        },
        (None, Some(subject)) if !subject.is_empty() => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let before = fields
                .get("before")
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(now.saturating_add(1));
            crate::state::Revocation::Subject {
                subject: subject.to_owned(),
                before,
                ttl_secs: ttl,
            }
        }
        _ => return bad("give exactly one of `jti` and `subject`"),
    };
    match shared.store.load_full().revoke(&revocation).await {
        Ok(()) => {
            // Revocation is checked on every request anyway; flushing also stops the
            // revoked token from being remembered as verified.
            shared.engine.load().flush_token_cache();
            tracing::info!(?revocation, "revoked");
            (
                StatusCode::OK,
                "application/json",
                json!({ "status": "revoked" }).to_string(),
            )
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "application/json",
            json!({ "error": e.to_string() }).to_string(),
        ),
    }
}
