//! Browser sign-in: warden's own endpoints of the OpenID Connect authorization code flow,
//! and the provider calls the engine's session needs lead to.
//!
//! - `GET /oauth2/start?source=S&rd=/path` — a fresh `state`, `nonce` and PKCE verifier
//!   sealed in a short-lived login cookie; 302 to the provider's authorization endpoint.
//! - `GET /oauth2/callback` — the login cookie opened, `state` (and `iss`) compared, the code
//!   exchanged with the verifier and the client's credentials, the ID token verified by the
//!   core (signature, issuer, audience, `nonce`, `at_hash`); the session record stored, the
//!   session cookie set, 302 back to the same-origin path the login began from.
//! - `GET|POST /oauth2/logout` — the session ended server-side and its cookie cleared, then
//!   RP-initiated logout at the provider when it has an `end_session_endpoint`.
//! - `POST /oauth2/backchannel-logout` — a verified `logout_token` ends the sessions it names
//!   (by `sid`, else by subject) in the shared store, so on every instance.
//!
//! The engine stays sans-IO: it opens the session cookie and asks for the record
//! (`Need::Session`) or a refresh (`Need::RefreshSession`); the gateway's host answers
//! through [`lookup`] and [`refresh`] here. Every refusal is rendered by
//! `warden_core::response`. Secrets (client secret, tokens, cookies) are never logged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use tokio::sync::Mutex;
use warden_core::auth::oidc::{ClientAuth, OidcSource, is_safe_return, pkce_challenge};
use warden_core::decision::{TokenProblem, Verbosity};
use warden_core::response::{self, Branding};
use warden_core::session::{
    LoginState, SessionAnswer, SessionCookie, SessionLookup, SessionRecord, random_token,
};
use warden_core::{DecisionId, Engine, Reason, RequestView};

use super::Shared;
use super::body::{Body, from_rendered, full};
use crate::state::sessions::{self, SessionStore};

/// How long a login may take between the redirect to the provider and the callback.
const LOGIN_TTL: u64 = 600;
/// The longest a call to the provider may take.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest answer read from the provider, and the largest back-channel logout body.
const MAX_PROVIDER_BYTES: usize = 256 * 1024;
/// How long a refresh holds the store's lock at most: longer than its provider call.
const REFRESH_LOCK: Duration = Duration::from_secs(PROVIDER_TIMEOUT.as_secs() + 5);
/// How long a request waits for another instance's refresh of its session.
const REFRESH_WAIT: Duration = REFRESH_LOCK;
/// How often a waiting request looks for the refreshed record.
const REFRESH_POLL: Duration = Duration::from_millis(50);
/// The least time between two discovery attempts of a source that has none yet.
const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// The paths warden answers itself when `[sessions]` is configured.
pub(crate) fn owns(path: &str) -> bool {
    matches!(
        path,
        "/oauth2/start" | "/oauth2/callback" | "/oauth2/logout" | "/oauth2/backchannel-logout"
    )
}

/// What the sign-in endpoints share: the provider client, the session store, the
/// single-flight locks of refreshes in progress.
#[derive(Debug)]
pub(crate) struct Oidc {
    client: reqwest::Client,
    pub(crate) sessions: SessionStore,
    refreshing: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    last_discovery: Mutex<Option<std::time::Instant>>,
}

impl Oidc {
    /// The provider client (a time limit, no redirects followed) and the session store.
    ///
    /// # Errors
    /// When the client cannot be built.
    pub(crate) fn new(config: &warden_core::Config) -> Result<Self, reqwest::Error> {
        crate::install_crypto_provider();
        Ok(Self {
            client: reqwest::Client::builder()
                .timeout(PROVIDER_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            sessions: SessionStore::new(&config.state),
            refreshing: std::sync::Mutex::new(HashMap::new()),
            last_discovery: Mutex::new(None),
        })
    }

    /// Fetch the discovery document of every `oidc` source that has none (at start, after a
    /// reload, and every few seconds while one is missing).
    pub(crate) async fn discover(&self, engine: &Engine, throttled: bool) {
        let missing: Vec<&OidcSource> = engine
            .config()
            .oidc_sources()
            .filter(|s| s.discovery().is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        {
            let mut last = self.last_discovery.lock().await;
            if throttled && last.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        for source in missing {
            let url = source.discovery_url();
            let result = async {
                let bytes = self.fetch(self.client.get(url)).await?;
                source.set_discovery(&bytes).map_err(|e| e.to_string())
            }
            .await;
            match result {
                Ok(()) => {
                    tracing::info!(source = %source.name(), url, "fetched the OpenID provider configuration")
                }
                Err(error) => {
                    tracing::error!(source = %source.name(), url, %error, "OpenID discovery failed; sign-in with this source is unavailable")
                }
            }
        }
    }

    /// Send a request to the provider and read its successful answer, bounded.
    async fn fetch(&self, request: reqwest::RequestBuilder) -> Result<Bytes, String> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = read_bounded(response).await?;
        if !status.is_success() {
            // The provider's OAuth error code only (RFC 6749 §5.2), never the whole body.
            let code = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(short))
                .unwrap_or_default();
            return Err(format!("status {status} {code}"));
        }
        Ok(bytes)
    }

    /// The token endpoint's answer to a grant, the client authenticated as configured.
    async fn token(
        &self,
        source: &OidcSource,
        endpoint: &str,
        mut form: Vec<(&str, &str)>,
    ) -> Result<TokenResponse, String> {
        let mut request = self.client.post(endpoint);
        let assertion;
        match source.client_auth() {
            ClientAuth::SecretPost => {
                form.push(("client_id", source.client_id()));
                form.push(("client_secret", source.client_secret()));
            }
            ClientAuth::PrivateKeyJwt => {
                assertion = source
                    .client_assertion(endpoint, now_secs())
                    .map_err(|e| e.to_string())?;
                form.push(("client_id", source.client_id()));
                form.push(("client_assertion_type", JWT_BEARER));
                form.push(("client_assertion", &assertion));
            }
            // RFC 6749 §2.3.1: the id and secret are form-urlencoded before Basic.
            _ => {
                request = request.basic_auth(
                    form_encode(source.client_id()),
                    Some(form_encode(source.client_secret())),
                );
            }
        }
        let bytes = self
            .fetch(
                request
                    .header(header::ACCEPT, "application/json")
                    .form(&form),
            )
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| format!("not a token response: {e}"))
    }

    fn lock_for(&self, id: &str) -> Arc<Mutex<()>> {
        match self.refreshing.lock() {
            Ok(mut map) => Arc::clone(map.entry(id.to_owned()).or_default()),
            // A poisoned map still serializes nothing wrongly: a lock of its own.
            Err(_) => Arc::default(),
        }
    }

    fn unlock_for(&self, id: &str, lock: Arc<Mutex<()>>) {
        if let Ok(mut map) = self.refreshing.lock() {
            // Two references: the map's and ours; nobody else waits for it.
            if Arc::strong_count(&lock) <= 2 {
                map.remove(id);
            }
        }
    }
}

/// The client assertion type of `private_key_jwt` (RFC 7523 §2.2).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// A token endpoint's answer (RFC 6749 §5.1, OpenID Connect Core §3.1.3.3).
#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    id_token: Option<String>,
    #[serde(default)]
    access_token: Option<String>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
}

async fn read_bounded(response: reqwest::Response) -> Result<Bytes, String> {
    let mut response = response;
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if out.len() + chunk.len() > MAX_PROVIDER_BYTES {
            return Err("the provider's answer is too large".to_owned());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A provider's error code, shortened and reduced to safe characters for the log.
fn short(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Answer one of warden's sign-in endpoints.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    let engine = shared.engine.load_full();
    let (parts, body) = request.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str())
        .to_owned();
    let view = RequestView::new(&parts.method, &target, &parts.headers, peer.ip());
    let cx = Endpoint {
        shared: &shared,
        engine: &engine,
        headers: &parts.headers,
        html: view.prefers_html(),
        id: DecisionId::new(),
    };
    let query = parts.uri.query().unwrap_or("");
    let answer = match (parts.uri.path(), &parts.method) {
        ("/oauth2/start", &Method::GET) => cx.start(query),
        ("/oauth2/callback", &Method::GET) => cx.callback(query).await,
        ("/oauth2/logout", &Method::GET | &Method::POST) => cx.logout().await,
        ("/oauth2/backchannel-logout", &Method::POST) => cx.backchannel(body).await,
        _ => Err(Reason::MethodNotAllowed {
            allow: if parts.uri.path() == "/oauth2/backchannel-logout" {
                vec![Method::POST]
            } else if parts.uri.path() == "/oauth2/logout" {
                vec![Method::GET, Method::POST]
            } else {
                vec![Method::GET]
            },
        }),
    };
    match answer {
        Ok(response) => response,
        Err(reason) => {
            tracing::info!(
                decision_id = %cx.id,
                client = %peer.ip(),
                path = parts.uri.path(),
                code = reason.code(),
                detail = %reason.log_detail(),
                "sign-in endpoint refused the request"
            );
            cx.refuse(&reason)
        }
    }
}

/// One request to a sign-in endpoint.
struct Endpoint<'a> {
    shared: &'a Arc<Shared>,
    engine: &'a Engine,
    headers: &'a http::HeaderMap,
    html: bool,
    id: DecisionId,
}

fn failed(detail: &'static str) -> Reason {
    Reason::LoginFailed { detail }
}

/// A 302 to `location`, never cached, with these cookies.
fn redirect(location: &str, cookies: &[String]) -> Result<Response<Body>, Reason> {
    let mut builder = Response::builder()
        .status(StatusCode::FOUND)
        .header(header::CACHE_CONTROL, "no-store")
        .header(
            header::LOCATION,
            HeaderValue::from_str(location)
                .map_err(|_| failed("the redirect is not a valid URL"))?,
        );
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            builder = builder.header(header::SET_COOKIE, v);
        }
    }
    builder
        .body(full(Bytes::new()))
        .map_err(|_| Reason::StateUnavailable)
}

fn query_param(query: &str, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Endpoint<'_> {
    fn refuse(&self, reason: &Reason) -> Response<Body> {
        from_rendered(response::render_reason(
            self.id,
            reason,
            &[],
            Verbosity::Public,
            Branding::from(self.engine.config()),
            self.html,
        ))
    }

    fn source(&self, name: Option<&str>) -> Result<&OidcSource, Reason> {
        let config = self.engine.config();
        match name {
            Some(name) => config.oidc_source(name),
            None => {
                let mut all = config.oidc_sources();
                match (all.next(), all.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
        .ok_or(failed("no such sign-in source"))
    }

    /// `/oauth2/start`: a new login, sent to the provider.
    fn start(&self, query: &str) -> Result<Response<Body>, Reason> {
        let return_to = query_param(query, "rd").unwrap_or_else(|| "/".to_owned());
        if !is_safe_return(&return_to) {
            return Err(failed("the return target is not a path on this site"));
        }
        let source = self.source(query_param(query, "source").as_deref())?;
        let discovery = source.discovery().ok_or(Reason::StateUnavailable)?;
        let sessions = source.sessions();
        let login = LoginState {
            state: random_token(32),
            nonce: random_token(32),
            verifier: random_token(32),
            return_to,
            source: source.name().to_string(),
            expires: now_secs() + LOGIN_TTL,
        };
        let mut url = url::Url::parse(&discovery.authorization_endpoint)
            .map_err(|_| Reason::StateUnavailable)?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", source.client_id())
            .append_pair("redirect_uri", source.redirect_uri())
            .append_pair("scope", &source.scopes().join(" "))
            .append_pair("state", &login.state)
            .append_pair("nonce", &login.nonce)
            .append_pair("code_challenge", &pkce_challenge(&login.verifier))
            .append_pair("code_challenge_method", "S256");
        let cookie = format!(
            "{}={}; Max-Age={LOGIN_TTL}; {}",
            sessions.login_cookie,
            sessions.seal_login(&login),
            sessions.cookie_attributes()
        );
        redirect(url.as_str(), &[cookie])
    }

    /// `/oauth2/callback`: the provider's answer, checked, turned into a session.
    async fn callback(&self, query: &str) -> Result<Response<Body>, Reason> {
        let sessions = self
            .engine
            .config()
            .sessions
            .as_ref()
            .ok_or(failed("sign-in is not configured"))?;
        let sealed = warden_core::request::cookie(self.headers, &sessions.login_cookie)
            .map_err(|_| failed("the login cookie was sent more than once"))?
            .ok_or(failed("no sign-in is in progress in this browser"))?;
        let login = sessions
            .open_login(sealed)
            .map_err(|_| failed("the login cookie is not valid"))?;
        let now = now_secs();
        if now >= login.expires {
            return Err(failed("the sign-in took too long; start again"));
        }
        let state = query_param(query, "state").unwrap_or_default();
        if !bool::from(state.as_bytes().ct_eq(login.state.as_bytes())) {
            return Err(failed("the state does not match this sign-in"));
        }
        if let Some(error) = query_param(query, "error") {
            tracing::info!(error = %short(&error), "the provider refused the sign-in");
            return Err(failed("the provider refused the sign-in"));
        }
        let source = self.source(Some(&login.source))?;
        // RFC 9207: a provider that names itself must be the one the login went to.
        if let Some(iss) = query_param(query, "iss")
            && iss != source.issuer()
        {
            return Err(failed("the answer came from another issuer"));
        }
        let code = query_param(query, "code").ok_or(failed("the provider sent no code"))?;
        let discovery = source.discovery().ok_or(Reason::StateUnavailable)?;
        let oidc = &self.shared.oidc;
        let tokens = oidc
            .token(
                source,
                &discovery.token_endpoint,
                vec![
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", source.redirect_uri()),
                    ("code_verifier", &login.verifier),
                ],
            )
            .await
            .map_err(|error| {
                tracing::info!(source = %source.name(), %error, "the code exchange failed");
                failed("the provider did not accept the code")
            })?;
        let id_token = tokens
            .id_token
            .as_deref()
            .ok_or(failed("the provider sent no ID token"))?;
        let verified = verify_id_token(
            self.shared,
            self.engine,
            source,
            id_token,
            Some(&login.nonce),
            tokens.access_token.as_deref(),
        )
        .await?;
        let record = source.record(
            &verified,
            id_token,
            tokens.refresh_token,
            tokens.expires_in.map(|e| now + e),
        );
        let id = random_token(32);
        let lifetime = sessions.absolute_timeout;
        let mut indexes = vec![sessions::by_subject(source.name(), &record.subject)];
        if let Some(sid) = &record.sid {
            indexes.push(sessions::by_sid(source.name(), sid));
        }
        oidc.sessions
            .create(
                &id,
                &sessions.seal_record(&id, &record),
                sessions.idle_timeout,
                lifetime,
                &indexes,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not store a new session");
                Reason::StateUnavailable
            })?;
        let cookie = SessionCookie {
            id,
            source: source.name().to_string(),
            created: now,
            ends: now + lifetime.as_secs(),
        };
        tracing::info!(source = %source.name(), subject = %record.subject, "signed in");
        // Checked at the start, and again here: only a path on this site.
        let back = if is_safe_return(&login.return_to) {
            login.return_to.as_str()
        } else {
            "/"
        };
        redirect(
            back,
            &[
                sessions.session_cookie(&sessions.seal_cookie(&cookie), lifetime.as_secs()),
                sessions.clear_cookie(&sessions.login_cookie),
            ],
        )
    }

    /// `/oauth2/logout`: the session ended here and at the provider.
    async fn logout(&self) -> Result<Response<Body>, Reason> {
        let config = self.engine.config();
        let sessions = config
            .sessions
            .as_ref()
            .ok_or(failed("sign-in is not configured"))?;
        let clear = sessions.clear_cookie(&sessions.cookie);
        let cookie = warden_core::request::cookie(self.headers, &sessions.cookie)
            .ok()
            .flatten()
            .and_then(|sealed| sessions.open_cookie(sealed).ok());
        let Some(cookie) = cookie else {
            return redirect("/", &[clear]);
        };
        let store = &self.shared.oidc.sessions;
        let record = match store
            .get(&cookie.id, sessions.idle_timeout, cookie.ends)
            .await
        {
            Ok(Some(sealed)) => sessions.open_record(&cookie.id, &sealed).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a session to log it out");
                return Err(Reason::StateUnavailable);
            }
        };
        store.delete(&cookie.id).await.map_err(|e| {
            tracing::warn!(error = %e, "could not end a session");
            Reason::StateUnavailable
        })?;
        tracing::info!(source = %cookie.source, "signed out");
        let source = config.oidc_source(&cookie.source);
        let end_session = source
            .and_then(|s| s.discovery())
            .and_then(|d| d.end_session_endpoint.clone());
        match (source, end_session) {
            (Some(source), Some(endpoint)) => {
                let mut url = url::Url::parse(&endpoint).map_err(|_| Reason::StateUnavailable)?;
                {
                    let mut pairs = url.query_pairs_mut();
                    pairs.append_pair("client_id", source.client_id());
                    if let Some(hint) = record.as_ref().and_then(|r| r.id_token.as_deref()) {
                        pairs.append_pair("id_token_hint", hint);
                    }
                    if let Some(back) = source.post_logout_redirect_uri() {
                        pairs.append_pair("post_logout_redirect_uri", back);
                    }
                }
                redirect(url.as_str(), &[clear])
            }
            _ => redirect("/", &[clear]),
        }
    }

    /// `/oauth2/backchannel-logout`: the provider ends sessions.
    async fn backchannel(&self, body: Incoming) -> Result<Response<Body>, Reason> {
        let timeout = self.engine.config().serve.upstream_timeout;
        let body = tokio::time::timeout(timeout, Limited::new(body, MAX_PROVIDER_BYTES).collect())
            .await
            .map_err(|_| failed("the logout request was too slow"))?
            .map_err(|_| failed("the logout request could not be read"))?
            .to_bytes();
        let token = url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "logout_token")
            .map(|(_, v)| v.into_owned())
            .ok_or(failed("no logout_token"))?;
        let now = now_secs();
        let mut refreshed = false;
        let (source, logout) = loop {
            let mut unknown_key = false;
            let found = self.engine.config().oidc_sources().find_map(|s| {
                match s.verify_logout_token(&token, now) {
                    Ok(logout) => Some((s, logout)),
                    Err(TokenProblem::UnknownKey) => {
                        unknown_key = true;
                        None
                    }
                    Err(_) => None,
                }
            });
            match found {
                Some(found) => break found,
                None if unknown_key && !refreshed => {
                    refreshed = true;
                    self.shared.jwks.refresh_on_unknown_key(self.engine).await;
                }
                None => return Err(failed("the logout token is not valid")),
            }
        };
        let index = match (&logout.sid, &logout.subject) {
            (Some(sid), _) => sessions::by_sid(source.name(), sid),
            (None, Some(subject)) => sessions::by_subject(source.name(), subject),
            (None, None) => return Err(failed("the logout token names no session")),
        };
        let ended = self
            .shared
            .oidc
            .sessions
            .delete_indexed(&index)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "could not end sessions for a back-channel logout");
                Reason::StateUnavailable
            })?;
        tracing::info!(source = %source.name(), sessions = ended, "back-channel logout");
        Response::builder()
            .status(StatusCode::OK)
            .header(header::CACHE_CONTROL, "no-store")
            .body(full(Bytes::new()))
            .map_err(|_| Reason::StateUnavailable)
    }
}

/// Verify an ID token through the core, refreshing the provider's keys once when it names a
/// key warden does not know yet.
async fn verify_id_token(
    shared: &Shared,
    engine: &Engine,
    source: &OidcSource,
    id_token: &str,
    nonce: Option<&str>,
    access_token: Option<&str>,
) -> Result<warden_core::auth::oidc::IdToken, Reason> {
    let now = now_secs();
    let mut result = source.verify_id_token(id_token, now, nonce, access_token);
    if matches!(result, Err(TokenProblem::UnknownKey))
        && shared.jwks.refresh_on_unknown_key(engine).await
    {
        result = source.verify_id_token(id_token, now, nonce, access_token);
    }
    result.map_err(|problem| {
        tracing::info!(source = %source.name(), problem = problem.as_str(), "ID token refused");
        match problem {
            TokenProblem::WrongNonce => failed("the ID token does not belong to this sign-in"),
            _ => failed("the ID token is not valid"),
        }
    })
}

/// The host's answer to `Need::Session`: the stored record, its idle lifetime renewed.
pub(crate) async fn lookup(
    shared: &Shared,
    lookup: &SessionLookup,
) -> (SessionAnswer, Option<String>) {
    match shared
        .oidc
        .sessions
        .get(&lookup.id, lookup.idle, lookup.ends)
        .await
    {
        Ok(Some(sealed)) => (SessionAnswer::Found(sealed.clone()), Some(sealed)),
        Ok(None) => (SessionAnswer::Missing, None),
        Err(e) => {
            shared.metrics.state_unavailable.inc();
            tracing::warn!(error = %e, "could not look a session up");
            (SessionAnswer::Unavailable, None)
        }
    }
}

/// The host's answer to `Need::RefreshSession`: one refresh per session at a time (others
/// wait and take its result); `seen` is the record the engine judged, so a waiter that finds
/// another one stored takes it instead of refreshing again (a rotated refresh token must not
/// be used twice). A refused refresh ends the session.
pub(crate) async fn refresh(
    shared: &Shared,
    engine: &Engine,
    lookup: &SessionLookup,
    seen: Option<&str>,
) -> SessionAnswer {
    let oidc = &shared.oidc;
    let lock = oidc.lock_for(&lookup.id);
    let answer = {
        let _guard = lock.lock().await;
        refresh_across_instances(shared, engine, lookup, seen).await
    };
    oidc.unlock_for(&lookup.id, lock);
    answer
}

/// The refresh, single-flight across the instances sharing the store: the instance that
/// takes the store's refresh lock refreshes; the others wait for the record it stores (or
/// for the lock, if its holder went away), at most [`REFRESH_WAIT`], then take what is
/// stored — the engine still refuses it if its tokens have expired.
async fn refresh_across_instances(
    shared: &Shared,
    engine: &Engine,
    lookup: &SessionLookup,
    seen: Option<&str>,
) -> SessionAnswer {
    let store = &shared.oidc.sessions;
    let deadline = tokio::time::Instant::now() + REFRESH_WAIT;
    loop {
        match store.try_lock_refresh(&lookup.id, REFRESH_LOCK).await {
            Ok(Some(token)) => {
                let answer = refresh_locked(shared, engine, lookup, seen).await;
                if let Err(e) = store.unlock_refresh(&lookup.id, &token).await {
                    // It expires by itself: another instance waits at most that long.
                    tracing::warn!(error = %e, "could not release a session's refresh lock");
                }
                return answer;
            }
            Ok(None) => {}
            Err(_) => {
                shared.metrics.state_unavailable.inc();
                return SessionAnswer::Unavailable;
            }
        }
        match store.get(&lookup.id, lookup.idle, lookup.ends).await {
            Ok(None) => return SessionAnswer::Missing,
            Ok(Some(current))
                if seen.is_some_and(|s| s != current)
                    || tokio::time::Instant::now() >= deadline =>
            {
                return SessionAnswer::Found(current);
            }
            Ok(Some(_)) => {}
            Err(_) => {
                shared.metrics.state_unavailable.inc();
                return SessionAnswer::Unavailable;
            }
        }
        tokio::time::sleep(REFRESH_POLL).await;
    }
}

async fn refresh_locked(
    shared: &Shared,
    engine: &Engine,
    lookup: &SessionLookup,
    seen: Option<&str>,
) -> SessionAnswer {
    let store = &shared.oidc.sessions;
    let Some(source) = engine.config().oidc_source(&lookup.source) else {
        return SessionAnswer::RefreshFailed;
    };
    let sessions = source.sessions();
    let current = match store.get(&lookup.id, lookup.idle, lookup.ends).await {
        Ok(Some(sealed)) => sealed,
        Ok(None) => return SessionAnswer::Missing,
        Err(_) => return SessionAnswer::Unavailable,
    };
    if seen.is_some_and(|s| s != current) {
        // Refreshed by a request that held the lock before this one.
        return SessionAnswer::Found(current);
    }
    let Ok(record) = sessions.open_record(&lookup.id, &current) else {
        return SessionAnswer::RefreshFailed;
    };
    let ended = |why: &str| {
        tracing::info!(source = %source.name(), subject = %record.subject, why, "session refresh failed; the session ends");
    };
    let (Some(refresh_token), Some(discovery)) =
        (record.refresh_token.as_deref(), source.discovery())
    else {
        ended("no refresh token or provider configuration");
        let _ = store.delete(&lookup.id).await;
        return SessionAnswer::RefreshFailed;
    };
    let now = now_secs();
    let tokens = match shared
        .oidc
        .token(
            source,
            &discovery.token_endpoint,
            vec![
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    {
        Ok(tokens) => tokens,
        Err(error) => {
            ended(&error);
            let _ = store.delete(&lookup.id).await;
            return SessionAnswer::RefreshFailed;
        }
    };
    let refreshed = match tokens.id_token.as_deref() {
        Some(id_token) => {
            match verify_id_token(
                shared,
                engine,
                source,
                id_token,
                None,
                tokens.access_token.as_deref(),
            )
            .await
            {
                Ok(verified) if verified.identity.subject == record.subject => Some(
                    source.record(
                        &verified,
                        id_token,
                        tokens
                            .refresh_token
                            .clone()
                            .or_else(|| record.refresh_token.clone()),
                        tokens.expires_in.map(|e| now + e),
                    ),
                ),
                _ => None,
            }
        }
        // No new ID token: the same claims, for as long as the new access token lasts.
        None => tokens.expires_in.map(|e| SessionRecord {
            expires: now + e,
            refresh_token: tokens
                .refresh_token
                .clone()
                .or_else(|| record.refresh_token.clone()),
            ..record.clone()
        }),
    };
    let Some(mut refreshed) = refreshed else {
        ended("the refreshed tokens did not verify");
        let _ = store.delete(&lookup.id).await;
        return SessionAnswer::RefreshFailed;
    };
    if refreshed.sid.is_none() {
        refreshed.sid.clone_from(&record.sid);
    }
    let sealed = sessions.seal_record(&lookup.id, &refreshed);
    match store.replace(&lookup.id, &sealed, lookup.idle).await {
        Ok(true) => {
            tracing::debug!(source = %source.name(), "session refreshed");
            SessionAnswer::Found(sealed)
        }
        Ok(false) => SessionAnswer::Missing,
        Err(_) => SessionAnswer::Unavailable,
    }
}
