//! [`Warden`]: one request through the engine, then refused here or passed on.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use tower_service::Service;
use warden_core::decision::{Allow, Verbosity};
use warden_core::response::{self, Branding};
use warden_core::{Decision, Engine, Reason, RequestView, Verdict};

use crate::body::WardenBody;
use crate::decide::decide;
use crate::future::{Concealed, Finish, ResponseFuture};
use crate::layer::Shared;
use crate::peer;

/// The service [`crate::WardenLayer`] wraps around an inner service.
///
/// Per request: build the engine's view (method, path and query, headers, the peer address
/// from the request's extensions), decide, and either answer the refusal or call the inner
/// service with the authorized request. Response headers `RateLimit-Policy` and `RateLimit`
/// are added to both, as the gateway does.
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

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Warden<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
{
    type Response = Response<WardenBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let engine = &shared.engine;
        let now = SystemTime::now();
        let peer = peer::peer_ip(shared.peer, request.extensions());
        let uri = request.uri();
        let target = uri
            .path_and_query()
            .map_or_else(|| uri.path(), PathAndQuery::as_str);
        let view = RequestView::new(request.method(), target, request.headers(), peer);
        let html = view.prefers_html();
        let decision = decide(engine, &shared.state, &view, now);
        if let Some(hook) = &shared.on_decision {
            hook(&decision);
        }
        // Headers every answer carries: the rate limits, and CORS for an allowed origin.
        let decision_headers = response::decision_headers(&decision);

        let mut response = match &decision.verdict {
            Verdict::Deny(deny) => {
                response::render_deny(decision.id, deny, Branding::from(engine.config()), html)
            }
            Verdict::Preflight => response::render_preflight(decision.cors.as_ref()),
            Verdict::Allow(allow) => match authorized(request, &decision, allow) {
                Ok(request) => {
                    let finish = Finish {
                        decision_headers,
                        concealed: allow.concealed.then(|| Concealed {
                            engine: Arc::clone(engine),
                            id: decision.id,
                            html,
                        }),
                    };
                    // Call the instance that was driven to readiness, and keep a fresh clone
                    // for the next request (tower's clone-and-swap).
                    let clone = self.inner.clone();
                    let mut ready = std::mem::replace(&mut self.inner, clone);
                    return ResponseFuture::forwarded(ready.call(request), finish);
                }
                // The normalized target is always a valid URI; should it ever not be,
                // refuse rather than pass on a request that differs from the one decided.
                Err(_) => response::render_reason(
                    decision.id,
                    &Reason::MalformedRequest {
                        detail: "The request target cannot be forwarded",
                    },
                    &[],
                    Verbosity::Public,
                    Branding::from(engine.config()),
                    html,
                ),
            },
        };
        response::add_decision_headers(response.headers_mut(), decision_headers);
        ResponseFuture::refused(response)
    }
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

    let headers = request.headers_mut();
    for name in allow.headers.remove.iter() {
        headers.remove(name);
    }
    for (name, value) in &allow.headers.add {
        headers.insert(name.clone(), value.clone());
    }

    let extensions = request.extensions_mut();
    // Whatever an outer layer put there, the handler sees only what warden verified.
    extensions.remove::<warden_core::Identity>();
    if let Some(identity) = &allow.identity {
        extensions.insert(identity.clone());
    }
    extensions.insert(decision.id);
    Ok(request)
}
