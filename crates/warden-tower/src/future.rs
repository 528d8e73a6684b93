//! The response future of [`crate::Warden`]: a refusal ready at once, or the inner
//! service's response with warden's finishing touches.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use warden_core::response::{self, Branding};
use warden_core::{DecisionId, Engine};

use crate::body::WardenBody;

pin_project! {
    /// The future of [`crate::Warden`]'s responses.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F> {
        Refused { response: Option<Response<Bytes>> },
        Forwarded { #[pin] future: F, finish: Option<Finish> },
    }
}

/// What to do to the inner service's response.
#[derive(Debug)]
pub(crate) struct Finish {
    /// The headers every answer carries (`RateLimit` fields, CORS for an allowed origin).
    pub decision_headers: Vec<(HeaderName, HeaderValue)>,
    /// On a concealed route, how to replace the inner service's 404 with the canonical one.
    pub concealed: Option<Concealed>,
}

/// The parts of the canonical 404 of a concealed route.
#[derive(Debug)]
pub(crate) struct Concealed {
    pub engine: Arc<Engine>,
    pub id: DecisionId,
    pub html: bool,
}

impl<F> ResponseFuture<F> {
    /// A refusal (or any response warden rendered), ready at once.
    pub(crate) fn refused(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Refused {
                response: Some(response),
            },
        }
    }

    /// The inner service's response, finished on the way out.
    pub(crate) fn forwarded(future: F, finish: Finish) -> Self {
        Self {
            kind: Kind::Forwarded {
                future,
                finish: Some(finish),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<WardenBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response.map(WardenBody::rendered))),
                // Polled again after it completed: a caller's bug, and never an answer.
                None => Poll::Pending,
            },
            KindProj::Forwarded { future, finish } => {
                // Errors of the inner service pass through unchanged.
                let response = ready!(future.poll(cx))?;
                let response = match finish.take() {
                    Some(finish) => finish.apply(response),
                    None => response.map(WardenBody::inner),
                };
                Poll::Ready(Ok(response))
            }
        }
    }
}

impl Finish {
    fn apply<B>(self, response: Response<B>) -> Response<WardenBody<B>> {
        let mut response = match self.concealed {
            Some(c) if response.status() == StatusCode::NOT_FOUND => {
                // The handler's own 404 would differ from warden's: send the canonical one,
                // so a concealed resource looks exactly like a path that does not exist.
                let branding = Branding::from(c.engine.config());
                response::not_found(c.id, branding, c.html).map(WardenBody::rendered)
            }
            _ => response.map(WardenBody::inner),
        };
        response::add_decision_headers(response.headers_mut(), self.decision_headers);
        response
    }
}
