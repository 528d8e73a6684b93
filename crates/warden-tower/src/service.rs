//! [`Warden`]: one request through the engine, then refused here or passed on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use tower_service::Service;
use warden_core::body::{BoxError, CappedBody};
use warden_core::decision::{Allow, Verbosity};
use warden_core::response::{self, Branding, Rendered};
use warden_core::{Decision, Engine, Reason, RequestView};

use crate::body::WardenBody;
use crate::decide::LayerHost;
use crate::layer::Shared;
use crate::peer;

/// The service [`crate::WardenLayer`] wraps around an inner service.
///
/// Per request: build the engine's view (method, path and query, headers, the peer address
/// from the request's extensions), decide (reading the body first when the route's WAF
/// inspects it), and either answer the refusal or call the inner service with the
/// authorized request, its body capped at the route's limit. Response headers
/// `RateLimit-Policy` and `RateLimit` are added to both, as the gateway does.
#[derive(Clone, Debug)]
pub struct Warden<S> {
    inner: S,
    shared: Shared,
}

impl<S> Warden<S> {
    pub(crate) fn new(inner: S, shared: Shared) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }
}

/// The future of [`Warden`]'s responses.
pub type ResponseFuture<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<WardenBody<B>>, E>> + Send + 'static>>;

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Warden<S>
where
    S: Service<Request<CappedBody<ReqBody>>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body<Data = Bytes> + Send + Unpin + 'static,
    ReqBody::Error: Into<BoxError>,
    ResBody: Send + 'static,
{
    type Response = Response<WardenBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResBody, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        // Call the instance that was driven to readiness, and keep a fresh clone for the
        // next request (tower's clone-and-swap).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(handle(self.shared.clone(), inner, request))
    }
}

async fn handle<S, ReqBody, ResBody>(
    shared: Shared,
    mut inner: S,
    request: Request<ReqBody>,
) -> Result<Response<WardenBody<ResBody>>, S::Error>
where
    S: Service<Request<CappedBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body<Data = Bytes> + Send + Unpin,
{
    let engine = &shared.engine;
    let now = SystemTime::now();
    let peer = peer::peer_ip(shared.peer, request.extensions());
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), PathAndQuery::as_str)
        .to_owned();
    let (body, body_view) = warden_core::body::split(body);
    let view = RequestView::new(&parts.method, &target, &parts.headers, peer).with_body(body_view);
    let html = view.prefers_html();
    let mut host = LayerHost::new(&shared.state, shared.store.as_deref(), now, body);
    let decision = warden_core::drive(engine, &view, now, &mut host).await;
    if let Some(hook) = &shared.on_decision {
        hook(&decision);
    }
    let branding = Branding::from(engine.config());
    // Headers every answer carries: the rate limits, and CORS for an allowed origin.
    let decision_headers = response::decision_headers(&decision);
    let mut response = match response::render(&decision, branding, html) {
        Rendered::Respond(refusal) => refusal.map(WardenBody::rendered),
        Rendered::Forward(allow) => {
            let (read, unread) = host.into_body();
            let (body, exceeded) = CappedBody::new(read, unread, allow.body_limit);
            match authorized(Request::from_parts(parts, body), &decision, allow) {
                Ok(request) => {
                    let response = inner.call(request).await?;
                    if exceeded.fired() {
                        // The body outgrew the limit while the handler read it: 413,
                        // whatever the handler made of the cut-off body.
                        let reason = Reason::BodyTooLarge {
                            limit: allow.body_limit,
                        };
                        own(&decision, &reason, branding, html)
                    } else if allow.concealed && response.status() == StatusCode::NOT_FOUND {
                        // The handler's own 404 would differ from warden's: send the
                        // canonical one, so a concealed resource looks exactly like a path
                        // that does not exist.
                        response::not_found(decision.id, branding, html).map(WardenBody::rendered)
                    } else {
                        response.map(WardenBody::inner)
                    }
                }
                // The normalized target is always a valid URI; should it ever not be,
                // refuse rather than pass on a request that differs from the one decided.
                Err(_) => {
                    let reason = Reason::MalformedRequest {
                        detail: "The request target cannot be forwarded",
                    };
                    own(&decision, &reason, branding, html)
                }
            }
        }
    };
    response::add_decision_headers(response.headers_mut(), decision_headers);
    Ok(response)
}

/// A refusal the layer makes itself, after the decision.
fn own<B>(
    decision: &Decision,
    reason: &Reason,
    branding: Branding<'_>,
    html: bool,
) -> Response<WardenBody<B>> {
    response::render_reason(decision.id, reason, &[], Verbosity::Public, branding, html)
        .map(WardenBody::rendered)
}

/// The request as it was authorized: the normalized path and query, warden's identity
/// headers instead of any the client sent, the identity and the decision id as extensions.
fn authorized<B>(
    mut request: Request<B>,
    decision: &Decision,
    allow: &Allow,
) -> Result<Request<B>, http::Error> {
    let path_and_query: PathAndQuery = allow.path_and_query.parse()?;
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.path_and_query = Some(path_and_query);
    *request.uri_mut() = Uri::from_parts(parts)?;

    allow.headers.apply(request.headers_mut());

    let extensions = request.extensions_mut();
    // Whatever an outer layer put there, the handler sees only what warden verified.
    extensions.remove::<warden_core::Identity>();
    if let Some(identity) = &allow.identity {
        extensions.insert(identity.clone());
    }
    extensions.insert(decision.id);
    Ok(request)
}
