//! `--as`: who the audit asks as.
//!
//! | form | sends |
//! |---|---|
//! | `anon` or `NAME=none` | no credentials |
//! | `NAME=TOKEN` or `NAME=bearer:TOKEN` | `Authorization: Bearer TOKEN` |
//! | `NAME=header:Header-Name:VALUE` | `Header-Name: VALUE` |
//! | `NAME=cookie:NAME=VALUE` | `Cookie: NAME=VALUE` |
//! | `NAME=basic:USER:PASSWORD` | `Authorization: Basic base64(USER:PASSWORD)` |

use http::{HeaderName, HeaderValue};

use crate::error::AuditError;

/// The name of the identity the audit adds to send invalid credentials.
pub const FORGED: &str = "forged";
/// The credential of the forged identity: a well-formed bearer token signed by nobody.
const FORGED_CREDENTIAL: &str =
    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ3YXJkZW4tYXVkaXQifQ.aW52YWxpZA";

/// One identity.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Its name in the matrix and in the expectations.
    pub name: String,
    /// What it sends.
    pub credential: Option<(HeaderName, HeaderValue)>,
    /// Added by the audit: invalid credentials.
    pub forged: bool,
}

impl Identity {
    /// Whether the identity sends credentials (valid or not).
    #[must_use]
    pub fn sends_credentials(&self) -> bool {
        self.credential.is_some()
    }

    /// The identity that sends a bearer token nobody signed.
    #[must_use]
    pub fn forged() -> Self {
        Self {
            name: FORGED.to_owned(),
            credential: Some((
                http::header::AUTHORIZATION,
                HeaderValue::from_static(FORGED_CREDENTIAL),
            )),
            forged: true,
        }
    }

    /// The credential as evidence shows it: the header name and a redacted value.
    #[must_use]
    pub fn redacted(&self) -> Option<String> {
        let (name, value) = self.credential.as_ref()?;
        if self.forged {
            return Some(format!("{name}: {FORGED_CREDENTIAL}"));
        }
        let value = value.to_str().unwrap_or("");
        let shown = match value.split_once(' ') {
            Some((scheme, _)) if name == http::header::AUTHORIZATION => format!("{scheme} …"),
            _ if name == http::header::COOKIE => match value.split_once('=') {
                Some((cookie, _)) => format!("{cookie}=…"),
                None => "…".to_owned(),
            },
            _ => "…".to_owned(),
        };
        Some(format!("{name}: {shown} (redacted)"))
    }
}

/// Parse one `--as` value.
///
/// # Errors
/// When the form is none of the documented ones, or a header name or value is invalid.
pub fn parse(text: &str) -> Result<Identity, AuditError> {
    let bad = |why: &str| AuditError::Identity {
        text: text.to_owned(),
        why: why.to_owned(),
    };
    let (name, spec) = match text.split_once('=') {
        Some((name, spec)) => (name, Some(spec)),
        None => (text, None),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(bad("the name must be letters, digits, `-` or `_`"));
    }
    if name == FORGED {
        return Err(bad(
            "`forged` is the audit's own identity with invalid credentials",
        ));
    }
    let credential = match spec {
        None if name == "anon" => None,
        None => return Err(bad("expected `anon` or NAME=CREDENTIAL")),
        Some("none") => None,
        Some(spec) => Some(credential(spec).map_err(|why| bad(&why))?),
    };
    Ok(Identity {
        name: name.to_owned(),
        credential,
        forged: false,
    })
}

fn credential(spec: &str) -> Result<(HeaderName, HeaderValue), String> {
    let value = |v: &str| {
        HeaderValue::from_str(v)
            .map(|mut v| {
                v.set_sensitive(true);
                v
            })
            .map_err(|_| "the value is not a valid header value".to_owned())
    };
    if let Some(rest) = spec.strip_prefix("header:") {
        let (name, v) = rest
            .split_once(':')
            .ok_or_else(|| "expected header:NAME:VALUE".to_owned())?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("`{name}` is not a header name"))?;
        return Ok((name, value(v.trim())?));
    }
    if let Some(cookie) = spec.strip_prefix("cookie:") {
        if !cookie.contains('=') {
            return Err("expected cookie:NAME=VALUE".to_owned());
        }
        return Ok((http::header::COOKIE, value(cookie)?));
    }
    if let Some(pair) = spec.strip_prefix("basic:") {
        if !pair.contains(':') {
            return Err("expected basic:USER:PASSWORD".to_owned());
        }
        use base64::Engine as _;
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        return Ok((
            http::header::AUTHORIZATION,
            value(&format!("Basic {encoded}"))?,
        ));
    }
    let token = spec.strip_prefix("bearer:").unwrap_or(spec);
    if token.is_empty() {
        return Err("the token is empty".to_owned());
    }
    Ok((
        http::header::AUTHORIZATION,
        value(&format!("Bearer {token}"))?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_form() {
        assert!(parse("anon").unwrap().credential.is_none());
        assert!(parse("guest=none").unwrap().credential.is_none());
        let (n, v) = parse("user=abc").unwrap().credential.unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Bearer abc")
        );
        let (n, v) = parse("bot=header:X-Api-Key:k1")
            .unwrap()
            .credential
            .unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("x-api-key", "k1"));
        let (n, v) = parse("web=cookie:session=s1").unwrap().credential.unwrap();
        assert_eq!((n.as_str(), v.to_str().unwrap()), ("cookie", "session=s1"));
        let (n, v) = parse("ops=basic:ada:s3cret").unwrap().credential.unwrap();
        assert_eq!(
            (n.as_str(), v.to_str().unwrap()),
            ("authorization", "Basic YWRhOnMzY3JldA==")
        );
        assert_eq!(
            parse("ops=basic:ada:s3cret").unwrap().redacted().unwrap(),
            "authorization: Basic … (redacted)"
        );
        assert!(parse("ops=basic:ada").is_err());
        assert!(parse("user").is_err());
        assert!(parse("=x").is_err());
        assert!(parse("forged=x").is_err());
        assert!(parse("x=header:bad name:v").is_err());
        assert_eq!(
            parse("user=abc").unwrap().redacted().unwrap(),
            "authorization: Bearer … (redacted)"
        );
    }
}
