//! Authentication: find the one credential the request presents, then verify it with the
//! route's identity sources.
//!
//! Exactly one credential may be presented. Two (say a bearer token and an API key, or
//! two `Authorization` headers) are refused as `invalid_request` rather than guessed at
//! (RFC 6750 §3.1): a valid credential must never mask an invalid one.
//!
//! A client certificate is a property of the connection, not of the request, but on a route
//! that accepts an `mtls` source it counts as that route's credential like any other: a
//! certificate and a bearer token together are two credentials, refused the same way (an
//! invalid certificate is never masked by a valid token, nor the reverse). On a route
//! without an `mtls` source the certificate is not looked at.

pub mod api_key;
pub mod basic;
pub(crate) mod cache;
pub mod jwt;
pub mod mtls;
pub mod oidc;

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, HeaderName, header};
use rustls_pki_types::CertificateDer;

use crate::decision::{Reason, Scheme, TokenProblem};
use crate::identity::{CredentialKind, Identity};

/// A configured identity source.
/// Built once at load and shared behind an `Arc`; never moved on the request path, so the
/// variants' sizes do not matter.
#[derive(Debug)]
pub(crate) enum Source {
    Jwt(jwt::JwtSource),
    ApiKey(api_key::ApiKeySource),
    Basic(basic::BasicSource),
    Oidc(oidc::OidcSource),
    Mtls(mtls::MtlsSource),
}

impl Source {
    pub fn name(&self) -> &Arc<str> {
        match self {
            Self::Jwt(s) => &s.name,
            Self::ApiKey(s) => &s.name,
            Self::Basic(s) => &s.name,
            Self::Oidc(s) => s.name(),
            Self::Mtls(s) => &s.name,
        }
    }

    /// Whether its keys come from a URL, and so can be refreshed when a token names a key
    /// the source does not know.
    pub fn refreshable(&self) -> bool {
        matches!(self, Self::Jwt(jwt) if jwt.jwks_url.is_some()) || matches!(self, Self::Oidc(_))
    }

    /// The challenge scheme this source answers a 401 with.
    pub fn scheme(&self) -> Scheme {
        match self {
            Self::Jwt(s) => match &s.cookie {
                Some(name) => Scheme::Cookie {
                    name: Arc::clone(name),
                },
                None => Scheme::Bearer,
            },
            Self::ApiKey(s) => Scheme::ApiKey {
                header: Arc::from(s.header.as_str()),
            },
            Self::Basic(_) => Scheme::Basic,
            Self::Oidc(s) => Scheme::Cookie {
                name: Arc::clone(&s.sessions.cookie),
            },
            Self::Mtls(_) => Scheme::ClientCertificate,
        }
    }
}

/// The credential a request presents, borrowed from its headers.
#[derive(Debug)]
pub(crate) enum Presented<'a> {
    Bearer(&'a str),
    Basic {
        user: String,
        password: String,
    },
    ApiKey {
        header: &'a HeaderName,
        key: &'a str,
    },
    Cookie {
        name: &'a str,
        token: &'a str,
    },
    /// The sealed session cookie of `oidc` sources.
    Session {
        name: &'a str,
        sealed: &'a str,
    },
    /// The connection's client certificate chain, leaf first, on a route of `mtls` sources.
    ClientCertificate(&'a [CertificateDer<'a>]),
}

/// What a credential verified to.
#[derive(Debug)]
pub(crate) enum Verified {
    /// The identity.
    Identity(Identity),
    /// A user name and password, still to be checked.
    Password(PasswordCheck),
    /// A session cookie that opens: its record is still to be looked up.
    Session(crate::session::SessionLookup),
}

/// A user name and password to check against the route's Basic sources. Checking is slow by
/// design (argon2, bcrypt), so the engine hands it to its driver as a [`crate::Need`].
#[derive(Clone)]
pub struct PasswordCheck {
    sources: Vec<Arc<Source>>,
    user: String,
    password: String,
}

impl std::fmt::Debug for PasswordCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordCheck")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// The result of a [`PasswordCheck`]: pass it back with [`crate::Answer::Password`].
#[derive(Debug, Clone)]
pub struct PasswordVerdict(pub(crate) Option<Option<Identity>>);

impl PasswordVerdict {
    /// The check could not run (the driver's blocking pool is gone, as while shutting
    /// down): the request is refused with 503, never let through.
    #[must_use]
    pub fn not_checked() -> Self {
        Self(None)
    }
}

impl PasswordCheck {
    /// Check the password (slow by design: run it where blocking is allowed).
    #[must_use]
    pub fn verify(&self) -> PasswordVerdict {
        PasswordVerdict(Some(self.sources.iter().find_map(|s| match s.as_ref() {
            Source::Basic(src) => src.verify(&self.user, &self.password),
            _ => None,
        })))
    }
}

/// Authenticate a request against the route's sources at time `now` (seconds since epoch).
pub(crate) fn authenticate(
    sources: &[Arc<Source>],
    headers: &HeaderMap,
    client_certificates: &[CertificateDer<'_>],
    now: u64,
) -> Result<Verified, Reason> {
    let presented = match find_credential(sources, headers, client_certificates)? {
        Some(p) => p,
        None => return Err(Reason::NoCredentials),
    };
    match presented {
        Presented::Bearer(token) => {
            let mut problem: Option<TokenProblem> = None;
            for source in sources {
                if let Source::Jwt(jwt) = source.as_ref()
                    && jwt.cookie.is_none()
                {
                    match jwt.verify(token, now, CredentialKind::Bearer) {
                        Ok(identity) => return Ok(Verified::Identity(identity)),
                        Err(p) => problem = Some(more_telling(problem, p)),
                    }
                }
            }
            Err(Reason::InvalidToken(
                problem.unwrap_or(TokenProblem::UnknownKey),
            ))
        }
        Presented::Cookie { name, token } => {
            let mut problem: Option<TokenProblem> = None;
            for source in sources {
                if let Source::Jwt(jwt) = source.as_ref()
                    && jwt.cookie.as_deref() == Some(name)
                {
                    match jwt.verify(token, now, CredentialKind::Cookie) {
                        Ok(identity) => return Ok(Verified::Identity(identity)),
                        Err(p) => problem = Some(more_telling(problem, p)),
                    }
                }
            }
            Err(Reason::InvalidToken(
                problem.unwrap_or(TokenProblem::UnknownKey),
            ))
        }
        Presented::Session { name, sealed } => open_session(sources, name, sealed, now),
        Presented::ClientCertificate(chain) => {
            // The route's sources in order: the first whose CAs the chain verifies against.
            // Of the refusals, one that got past the issuer (expired, not for client
            // authentication) says more than another source's "unknown issuer".
            let mut problem = None;
            for source in sources {
                if let Source::Mtls(src) = source.as_ref() {
                    match src.verify(chain, now) {
                        Ok(identity) => return Ok(Verified::Identity(identity)),
                        Err(p) => {
                            if problem.is_none()
                                || problem == Some(mtls::CertificateProblem::UnknownIssuer)
                            {
                                problem = Some(p);
                            }
                        }
                    }
                }
            }
            Err(Reason::InvalidCertificate(
                problem.unwrap_or(mtls::CertificateProblem::UnknownIssuer),
            ))
        }
        Presented::ApiKey { header, key } => sources
            .iter()
            .find_map(|s| match s.as_ref() {
                Source::ApiKey(src) if src.header == header => src.verify(key),
                _ => None,
            })
            .map(Verified::Identity)
            .ok_or(Reason::InvalidCredentials),
        // Checking a password is slow by design: it is handed to the driver, which may run
        // it off the threads that serve requests.
        Presented::Basic { user, password } => Ok(Verified::Password(PasswordCheck {
            sources: sources
                .iter()
                .filter(|s| matches!(s.as_ref(), Source::Basic(_)))
                .cloned()
                .collect(),
            user,
            password,
        })),
    }
}

/// Open a session cookie with the keys of the route's `oidc` sources: the session it names,
/// to be looked up, unless it does not open (tampered, or an old key) or its absolute
/// lifetime is over.
fn open_session(
    sources: &[Arc<Source>],
    name: &str,
    sealed: &str,
    now: u64,
) -> Result<Verified, Reason> {
    use crate::session::{SessionCookie, SessionLookup, SessionProblem};
    let mut oidc = sources.iter().filter_map(|s| match s.as_ref() {
        Source::Oidc(o) if o.sessions.cookie.as_ref() == name => Some(o),
        _ => None,
    });
    let Some(first) = oidc.next() else {
        return Err(Reason::NoCredentials);
    };
    // Every oidc source shares the `[sessions]` keys; the cookie names its source.
    let cookie: SessionCookie = first
        .sessions
        .open_cookie(sealed)
        .map_err(|_| Reason::Session(SessionProblem::Tampered))?;
    let source = std::iter::once(first)
        .chain(oidc)
        .find(|o| o.name().as_ref() == cookie.source)
        .ok_or(Reason::Session(SessionProblem::Tampered))?;
    if now >= cookie.ends {
        return Err(Reason::Session(SessionProblem::Expired));
    }
    Ok(Verified::Session(SessionLookup {
        id: cookie.id,
        source: Arc::clone(source.name()),
        idle: source.sessions.idle_timeout,
        ends: cookie.ends,
    }))
}

/// Of two token problems from different sources, the one that says more: a source that
/// knew the key explains the refusal better than one that did not.
fn more_telling(current: Option<TokenProblem>, next: TokenProblem) -> TokenProblem {
    let vague = |p: TokenProblem| {
        matches!(
            p,
            TokenProblem::UnknownKey
                | TokenProblem::AlgorithmNotAllowed
                | TokenProblem::WrongIssuer
        )
    };
    match current {
        Some(c) if !vague(c) || vague(next) => c,
        _ => next,
    }
}

/// The one credential the request presents to these sources, unverified.
pub(crate) fn find_credential<'a>(
    sources: &'a [Arc<Source>],
    headers: &'a HeaderMap,
    client_certificates: &'a [CertificateDer<'a>],
) -> Result<Option<Presented<'a>>, Reason> {
    let accepts_bearer = sources
        .iter()
        .any(|s| matches!(s.as_ref(), Source::Jwt(j) if j.cookie.is_none()));
    let accepts_basic = sources
        .iter()
        .any(|s| matches!(s.as_ref(), Source::Basic(_)));
    let mut found: Vec<Presented<'a>> = Vec::new();

    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        if authorization.next().is_some() {
            return Err(malformed("More than one Authorization header was sent"));
        }
        let not_ascii = || malformed("The Authorization header is not visible ASCII");
        // Read as bytes: a bearer token is checked once, by the token68 test (which only
        // visible ASCII passes), rather than once for ASCII and again for its characters.
        let bytes = value.as_bytes();
        let mut parts = bytes.splitn(2, |&b| b == b' ');
        let scheme = parts.next().unwrap_or_default();
        let rest = parts.next().unwrap_or_default();
        // Spaces only (RFC 7235: `1*SP`); a tab is not a separator.
        let spaces = rest.iter().take_while(|&&b| b == b' ').count();
        let credentials = rest.get(spaces..).unwrap_or_default();
        if scheme.eq_ignore_ascii_case(b"bearer") && accepts_bearer {
            if !is_b64token(credentials) {
                value.to_str().map_err(|_| not_ascii())?;
                return Err(malformed("The Bearer credentials are not a single token"));
            }
            let token = std::str::from_utf8(credentials).map_err(|_| not_ascii())?;
            found.push(Presented::Bearer(token));
        } else {
            value.to_str().map_err(|_| not_ascii())?;
            if scheme.eq_ignore_ascii_case(b"basic") && accepts_basic {
                let credentials = std::str::from_utf8(credentials).map_err(|_| not_ascii())?;
                let (user, password) = decode_basic(credentials)?;
                found.push(Presented::Basic { user, password });
            }
        }
        // Any other scheme is not a credential this route accepts: the request is answered as
        // one that sent none, with the challenges of the schemes that are accepted.
    }

    for source in sources {
        match source.as_ref() {
            Source::ApiKey(src) => {
                if found.iter().any(
                    |p| matches!(p, Presented::ApiKey { header, .. } if **header == src.header),
                ) {
                    continue;
                }
                let mut values = headers.get_all(&src.header).iter();
                if let Some(value) = values.next() {
                    if values.next().is_some() {
                        return Err(malformed("The API key header was sent more than once"));
                    }
                    let key = value
                        .to_str()
                        .map_err(|_| malformed("The API key is not visible ASCII"))?
                        .trim();
                    if key.is_empty() {
                        return Err(malformed("The API key header is empty"));
                    }
                    found.push(Presented::ApiKey {
                        header: &src.header,
                        key,
                    });
                }
            }
            Source::Jwt(jwt) => {
                if let Some(name) = jwt.cookie.as_deref() {
                    if found
                        .iter()
                        .any(|p| matches!(p, Presented::Cookie { name: n, .. } if *n == name))
                    {
                        continue;
                    }
                    if let Some(token) = find_cookie(headers, name)? {
                        found.push(Presented::Cookie { name, token });
                    }
                }
            }
            Source::Oidc(oidc) => {
                let name = oidc.sessions.cookie.as_ref();
                if found
                    .iter()
                    .any(|p| matches!(p, Presented::Session { name: n, .. } if *n == name))
                {
                    continue;
                }
                if let Some(sealed) = find_cookie(headers, name)? {
                    found.push(Presented::Session { name, sealed });
                }
            }
            Source::Mtls(_) => {
                if !client_certificates.is_empty()
                    && !found
                        .iter()
                        .any(|p| matches!(p, Presented::ClientCertificate(_)))
                {
                    found.push(Presented::ClientCertificate(client_certificates));
                }
            }
            Source::Basic(_) => {}
        }
    }

    if found.len() > 1 {
        return Err(malformed("More than one credential was sent"));
    }
    Ok(found.pop())
}

fn malformed(detail: &'static str) -> Reason {
    Reason::MalformedCredentials { detail }
}

/// RFC 6750 §2.1: `b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(s: &[u8]) -> bool {
    let padding = s.iter().rev().take_while(|&&b| b == b'=').count();
    let body = s.get(..s.len() - padding).unwrap_or_default();
    // Every byte tested, without a branch per byte: the loop is vectorized (a token is
    // hundreds of bytes, read on every request).
    !body.is_empty()
        && body.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_alphanumeric()
                | (b == b'-')
                | (b == b'.')
                | (b == b'_')
                | (b == b'~')
                | (b == b'+')
                | (b == b'/'))
        })
}

fn decode_basic(credentials: &str) -> Result<(String, String), Reason> {
    let bytes = STANDARD
        .decode(credentials)
        .map_err(|_| malformed("The Basic credentials are not base64"))?;
    let text =
        String::from_utf8(bytes).map_err(|_| malformed("The Basic credentials are not UTF-8"))?;
    let (user, password) = text
        .split_once(':')
        .ok_or_else(|| malformed("The Basic credentials have no colon"))?;
    if user.chars().chain(password.chars()).any(char::is_control) {
        return Err(malformed(
            "The Basic credentials contain control characters",
        ));
    }
    Ok((user.to_owned(), password.to_owned()))
}

/// The value of the named cookie (without the quotes a cookie value may carry), refusing a
/// name sent twice (cookie tossing).
fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, Reason> {
    let value = crate::request::cookie(headers, name)
        .map_err(|_| malformed("The session cookie was sent more than once"))?;
    Ok(value.map(|v| v.trim_matches('"')).filter(|v| !v.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b64token_accepts_tokens_and_refuses_spaces_and_commas() {
        assert!(is_b64token(b"abc.def-ghi_jkl~+/=="));
        assert!(!is_b64token(b""));
        assert!(!is_b64token(b"=="));
        assert!(!is_b64token(b"abc def"));
        assert!(!is_b64token(b"abc,def"));
        assert!(!is_b64token(b"abc\"def"));
        assert!(!is_b64token(b"abc=def"), "padding only at the end");
        assert!(!is_b64token("abc\u{e9}".as_bytes()), "visible ASCII only");
    }

    #[test]
    fn basic_credentials_decode_and_malformed_ones_are_invalid_request() {
        assert_eq!(
            decode_basic("b3BzOnMzY3JldA==").unwrap(),
            ("ops".to_owned(), "s3cret".to_owned())
        );
        assert!(matches!(
            decode_basic("!!!"),
            Err(Reason::MalformedCredentials { .. })
        ));
        assert!(matches!(
            decode_basic("bm9jb2xvbg=="),
            Err(Reason::MalformedCredentials { .. })
        ));
    }

    #[test]
    fn a_cookie_sent_twice_is_refused() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, "a=1; session=x".parse().unwrap());
        assert_eq!(find_cookie(&headers, "session").unwrap(), Some("x"));
        headers.append(header::COOKIE, "session=y".parse().unwrap());
        assert!(find_cookie(&headers, "session").is_err());
    }
}
