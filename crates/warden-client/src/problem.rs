//! RFC 9457 problem details: the JSON body of an HTTP error.
//!
//! A problem is read only from a body whose media type is `application/problem+json` or
//! `application/json`. Members of the wrong type are ignored, as RFC 9457 §3.1 requires,
//! rather than making the whole document unreadable; every member that is not one of the
//! standard ones (or warden's `code`) is kept in [`Problem::extensions`].

use http::HeaderMap;
use http::header::CONTENT_TYPE;
use serde_json::{Map, Value};

/// The `type` of a problem that does not name one (RFC 9457 §4.2.1).
pub const ABOUT_BLANK: &str = "about:blank";

/// A problem details document (RFC 9457).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Problem {
    /// The problem type URI; [`ABOUT_BLANK`] when the document has none.
    pub problem_type: String,
    /// A short, human-readable summary of the problem type.
    pub title: Option<String>,
    /// The HTTP status code the server generated for this occurrence.
    pub status: Option<u16>,
    /// A human-readable explanation of this occurrence.
    pub detail: Option<String>,
    /// A URI reference that identifies this occurrence.
    pub instance: Option<String>,
    /// A stable, machine-readable reason code (an extension member warden always sends).
    pub code: Option<String>,
    /// Every other member of the document.
    pub extensions: Map<String, Value>,
}

impl Problem {
    /// Reads a problem from a JSON document. `None` when the text is not a JSON object.
    #[must_use]
    pub fn from_json(body: &[u8]) -> Option<Self> {
        let Ok(Value::Object(mut members)) = serde_json::from_slice::<Value>(body) else {
            return None;
        };
        let mut string = |name: &str| match members.remove(name) {
            Some(Value::String(s)) => Some(s),
            _ => None,
        };
        let problem_type = string("type").unwrap_or_else(|| ABOUT_BLANK.to_owned());
        let title = string("title");
        let detail = string("detail");
        let instance = string("instance");
        let code = string("code");
        let status = match members.remove("status") {
            Some(Value::Number(n)) => n
                .as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| (100..=999).contains(n)),
            _ => None,
        };
        Some(Self {
            problem_type,
            title,
            status,
            detail,
            instance,
            code,
            extensions: members,
        })
    }

    /// Reads a problem from a response body, if the headers say it is one.
    #[must_use]
    pub fn from_parts(headers: &HeaderMap, body: &[u8]) -> Option<Self> {
        if is_problem_media_type(headers) {
            Self::from_json(body)
        } else {
            None
        }
    }

    /// An extension member that is an array of strings, or a space-separated string
    /// (warden's `required_scopes`, for example). Empty when absent or of another type.
    #[must_use]
    pub fn string_list(&self, name: &str) -> Vec<String> {
        match self.extensions.get(name) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        }
    }
}

/// Whether `Content-Type` is `application/problem+json` or `application/json` (parameters
/// such as `charset` are ignored; the comparison is case-insensitive).
#[must_use]
pub fn is_problem_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/problem+json")
        || essence.eq_ignore_ascii_case("application/json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(content_type: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(content_type).unwrap());
        h
    }

    #[test]
    fn reads_the_standard_members_and_keeps_extensions() {
        let body = br#"{"type":"urn:warden:problem:insufficient_scope","title":"Forbidden",
            "status":403,"detail":"The access token lacks the required scope: docs:write.",
            "instance":"urn:uuid:1","code":"insufficient_scope",
            "required_scopes":["docs:write"]}"#;
        let p = Problem::from_parts(&headers("application/problem+json"), body).unwrap();
        assert_eq!(p.problem_type, "urn:warden:problem:insufficient_scope");
        assert_eq!(p.title.as_deref(), Some("Forbidden"));
        assert_eq!(p.status, Some(403));
        assert_eq!(p.code.as_deref(), Some("insufficient_scope"));
        assert_eq!(p.instance.as_deref(), Some("urn:uuid:1"));
        assert_eq!(p.string_list("required_scopes"), vec!["docs:write"]);
        assert!(!p.extensions.contains_key("code"));
    }

    #[test]
    fn wrong_types_are_ignored_and_type_defaults_to_about_blank() {
        let p = Problem::from_json(br#"{"status":"403","title":7,"x":1}"#).unwrap();
        assert_eq!(p.problem_type, ABOUT_BLANK);
        assert_eq!(p.status, None);
        assert_eq!(p.title, None);
        assert_eq!(p.extensions.get("x"), Some(&Value::from(1)));
    }

    #[test]
    fn only_json_media_types_are_parsed() {
        let body = br#"{"title":"x"}"#;
        assert!(Problem::from_parts(&headers("Application/JSON; charset=utf-8"), body).is_some());
        assert!(Problem::from_parts(&headers("text/html"), body).is_none());
        assert!(Problem::from_parts(&HeaderMap::new(), body).is_none());
        assert!(Problem::from_parts(&headers("application/json"), b"[1]").is_none());
        assert!(Problem::from_parts(&headers("application/json"), b"{not json").is_none());
    }
}
