#![doc = include_str!("../README.md")]

pub mod auth;
pub mod challenge;
pub mod error;
pub mod problem;
pub mod retry;

use std::future::Future;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Extensions, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};

pub use crate::auth::{BoxError, TokenSource};
pub use crate::challenge::{BearerChallenge, Challenge};
pub use crate::error::{Error, SharedError};
pub use crate::problem::Problem;
pub use crate::retry::RetryPolicy;

use crate::auth::{Lease, TokenCache};

/// The largest error body [`check`] reads to find a problem document.
pub const MAX_PROBLEM_BYTES: usize = 64 * 1024;

/// A request extension that marks one request as safe to send again on a 429 or 503 even
/// though its method is not idempotent (a POST with an idempotency key, say):
/// `client.post(url).with_extension(Idempotent)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Idempotent;

/// Middleware for [`reqwest_middleware`] that answers 401, 403, 429 and 503 the way the
/// standards say a client should.
///
/// - With a [`TokenSource`], every request that does not already carry `Authorization`
///   gets `Authorization: Bearer <token>`. A 401 whose challenge says the token is invalid
///   (or says nothing) makes it refresh the token once — one refresh for all concurrent
///   requests rejected with the same token — and send the request once more. A second 401
///   is returned as it is. Requests that brought their own `Authorization` are left alone.
/// - A 403 is returned at once: never refreshed, never retried.
/// - A 429 or 503 is retried after the wait the server asked for (`Retry-After`, else
///   `RateLimit`), or exponential backoff with full jitter, within
///   [`RetryPolicy::max_attempts`] and [`RetryPolicy::max_wait`], and only for idempotent
///   methods unless [`RetryPolicy::retry_non_idempotent`] or [`Idempotent`] says otherwise.
///
/// Sending a request again needs a copy of it ([`Request::try_clone`]): a request whose body
/// is a stream cannot be copied and is sent exactly once, whatever the answer.
///
/// The middleware hands back the final response unchanged; [`check`] (or
/// [`SendChecked::send_checked`]) turns an error status into a typed [`Error`]. Failures of
/// the token source come back as a [`reqwest_middleware::Error::Middleware`] wrapping
/// [`Error::Token`] or [`Error::Refresh`]; `Error::from` unwraps them.
#[derive(Debug, Clone, Default)]
pub struct WardenMiddleware {
    tokens: Option<Arc<TokenCache>>,
    policy: RetryPolicy,
}

impl WardenMiddleware {
    /// Middleware that retries 429 and 503 per `policy` and adds no credentials.
    #[must_use]
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            tokens: None,
            policy,
        }
    }

    /// Adds `Authorization: Bearer` tokens from `source`, refreshed on 401.
    #[must_use]
    pub fn with_token_source(mut self, source: impl TokenSource + 'static) -> Self {
        self.tokens = Some(Arc::new(TokenCache::new(Arc::new(source))));
        self
    }

    async fn run(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> Result<Response, Error> {
        // Tokens are ours to manage only if the caller did not bring credentials.
        let tokens = self
            .tokens
            .as_deref()
            .filter(|_| !req.headers().contains_key(AUTHORIZATION));
        let may_resend =
            self.policy.allows(req.method()) || extensions.get::<Idempotent>().is_some();
        let mut refreshed = false;
        let mut sent: u32 = 0;
        loop {
            let lease = match tokens {
                Some(cache) => {
                    let lease = cache.current().await?;
                    set_bearer(&mut req, &lease)?;
                    Some(lease)
                }
                None => None,
            };
            let spare = req.try_clone();
            let resp = next.clone().run(req, extensions).await?;
            sent += 1;
            let Some(spare) = spare else {
                // The body could not be copied: there is nothing to send again.
                return Ok(resp);
            };
            match resp.status() {
                StatusCode::UNAUTHORIZED => {
                    let (Some(cache), Some(lease), false) = (tokens, lease, refreshed) else {
                        return Ok(resp);
                    };
                    if !auth::refreshable(&challenge::from_headers(resp.headers())) {
                        return Ok(resp);
                    }
                    drop(resp);
                    cache.refresh(&lease).await?;
                    refreshed = true;
                }
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    // The retry after a refresh does not use up the budget.
                    let budget = self
                        .policy
                        .max_attempts
                        .saturating_add(u32::from(refreshed));
                    if !may_resend || sent >= budget {
                        return Ok(resp);
                    }
                    let wait = match retry::server_wait(resp.headers(), SystemTime::now()) {
                        Some(wait) if wait > self.policy.max_wait => {
                            tracing::debug!(
                                status = resp.status().as_u16(),
                                wait_ms = wait.as_millis(),
                                "the server asks for a wait beyond max_wait; not retrying"
                            );
                            return Ok(resp);
                        }
                        Some(wait) => wait,
                        None => self.policy.backoff(sent.saturating_sub(1)),
                    };
                    tracing::debug!(
                        status = resp.status().as_u16(),
                        wait_ms = wait.as_millis(),
                        attempt = sent,
                        "retrying after a wait"
                    );
                    drop(resp);
                    tokio::time::sleep(wait).await;
                }
                _ => return Ok(resp),
            }
            req = spare;
        }
    }
}

#[async_trait::async_trait]
impl Middleware for WardenMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.run(req, extensions, next).await.map_err(|e| match e {
            Error::Request(inner) => inner,
            other => reqwest_middleware::Error::middleware(other),
        })
    }
}

fn set_bearer(req: &mut Request, lease: &Lease) -> Result<(), Error> {
    let mut value = HeaderValue::try_from(format!("Bearer {}", lease.token))
        .map_err(|e| Error::Token(Arc::new(e)))?;
    value.set_sensitive(true);
    req.headers_mut().insert(AUTHORIZATION, value);
    Ok(())
}

/// A client with [`WardenMiddleware`]: bearer tokens from `tokens`, retries per `policy`.
#[must_use]
pub fn client(
    http: reqwest::Client,
    tokens: impl TokenSource + 'static,
    policy: RetryPolicy,
) -> ClientWithMiddleware {
    ClientBuilder::new(http)
        .with(WardenMiddleware::new(policy).with_token_source(tokens))
        .build()
}

/// The response if its status is below 400; otherwise the typed [`Error`] for it, with the
/// problem document of its body (RFC 9457; read only for `application/problem+json` and
/// `application/json`, at most [`MAX_PROBLEM_BYTES`]) and its challenges.
///
/// # Errors
///
/// [`Error::Unauthorized`] for 401, [`Error::Forbidden`] for 403, [`Error::RateLimited`] for
/// 429, [`Error::Unavailable`] for 503 and [`Error::Status`] for any other status of 400 or
/// more.
pub async fn check(resp: Response) -> Result<Response, Error> {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return Ok(resp);
    }
    let headers = resp.headers().clone();
    let challenges = challenge::from_headers(&headers);
    let retry_after = retry::server_wait(&headers, SystemTime::now());
    let body = read_capped(resp, MAX_PROBLEM_BYTES).await;
    let problem = body
        .and_then(|body| Problem::from_parts(&headers, &body))
        .map(Box::new);
    Err(match status {
        StatusCode::UNAUTHORIZED => Error::Unauthorized {
            problem,
            challenge: BearerChallenge::find(&challenges),
        },
        StatusCode::FORBIDDEN => {
            let from_challenge = BearerChallenge::find(&challenges)
                .map(|b| b.scope)
                .unwrap_or_default();
            let required_scopes = if from_challenge.is_empty() {
                problem
                    .as_deref()
                    .map(|p| p.string_list("required_scopes"))
                    .unwrap_or_default()
            } else {
                from_challenge
            };
            Error::Forbidden {
                problem,
                required_scopes,
            }
        }
        StatusCode::TOO_MANY_REQUESTS => Error::RateLimited {
            retry_after,
            problem,
        },
        StatusCode::SERVICE_UNAVAILABLE => Error::Unavailable {
            retry_after,
            problem,
        },
        status => Error::Status { status, problem },
    })
}

/// The body, or `None` if it is longer than `limit` or cannot be read.
async fn read_capped(mut resp: Response, limit: usize) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body)
}

/// Sending through the middleware and [`check`]ing the answer in one call.
pub trait SendChecked {
    /// Sends the request; a status of 400 or more becomes the typed [`Error`].
    fn send_checked(self) -> impl Future<Output = Result<Response, Error>> + Send;
}

impl SendChecked for reqwest_middleware::RequestBuilder {
    async fn send_checked(self) -> Result<Response, Error> {
        check(self.send().await?).await
    }
}
