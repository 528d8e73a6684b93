//! What an audit asks: operations read from an OpenAPI document or a HAR file.

use http::{HeaderName, HeaderValue, Method};

/// One operation: a method on a path template.
#[derive(Debug, Clone)]
pub struct Operation {
    /// `operationId`, or `METHOD /path`.
    pub id: String,
    /// The method.
    pub method: Method,
    /// The path template (`/files/{id}`), or the recorded path of a HAR entry.
    pub path: String,
    /// The path parameters, in template order.
    pub params: Vec<PathParam>,
    /// The query, already encoded (`a=1&b=2`), without the `?`.
    pub query: Option<String>,
    /// Headers to send besides the identity's credential (a HAR entry's, minus its own
    /// credentials).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The body and its media type, for methods that have one.
    pub body: Option<(String, Vec<u8>)>,
    /// Whether the document says authentication is required; `None` when it cannot say
    /// (a HAR file).
    pub requires_auth: Option<bool>,
    /// An absolute URL that replaces the base URL (HAR entries).
    pub url: Option<String>,
}

/// A path parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathParam {
    /// Its name in the template.
    pub name: String,
    /// A value from the document (`example`, `default`), when it has one.
    pub example: Option<String>,
    /// What kind of value it takes.
    pub kind: ParamKind,
}

/// What kind of value a path parameter takes, to make up a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// An integer or a number.
    Number,
    /// A UUID.
    Uuid,
    /// Anything else.
    Text,
}

impl PathParam {
    /// A value of the right kind that surely names nothing.
    #[must_use]
    pub fn missing(&self) -> &'static str {
        match self.kind {
            ParamKind::Number => "987654321",
            ParamKind::Uuid => "00000000-0000-4000-8000-00000000dead",
            ParamKind::Text => "warden-audit-missing",
        }
    }

    /// A value to use when nothing better is known.
    #[must_use]
    pub fn default_value(&self) -> String {
        match (&self.example, self.kind) {
            (Some(e), _) => e.clone(),
            (None, ParamKind::Uuid) => "00000000-0000-4000-8000-000000000001".to_owned(),
            (None, _) => "1".to_owned(),
        }
    }
}

impl Operation {
    /// Whether the method changes state (POST, PUT, PATCH, DELETE, and any unknown one).
    #[must_use]
    pub fn is_unsafe(&self) -> bool {
        !matches!(
            self.method,
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        )
    }

    /// The path with each parameter replaced by `value(param)`, percent-encoded.
    #[must_use]
    pub fn concrete_path(&self, value: impl Fn(&PathParam) -> String) -> String {
        let mut out = self.path.clone();
        for p in &self.params {
            out = out.replace(&format!("{{{}}}", p.name), &encode_segment(&value(p)));
        }
        out
    }
}

/// The names of the `{param}` segments of a template, in order.
#[must_use]
pub fn template_params(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        let after = rest.get(open + 1..).unwrap_or("");
        match after.find('}') {
            Some(close) => {
                let name = after.get(..close).unwrap_or("");
                if !name.is_empty() && !out.iter().any(|n| n == name) {
                    out.push(name.to_owned());
                }
                rest = after.get(close + 1..).unwrap_or("");
            }
            None => break,
        }
    }
    out
}

fn encode_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_and_encoded() {
        assert_eq!(template_params("/a/{x}/b/{y}"), ["x", "y"]);
        let op = Operation {
            id: "t".into(),
            method: Method::GET,
            path: "/a/{x}".into(),
            params: vec![PathParam {
                name: "x".into(),
                example: None,
                kind: ParamKind::Text,
            }],
            query: None,
            headers: Vec::new(),
            body: None,
            requires_auth: None,
            url: None,
        };
        assert_eq!(op.concrete_path(|_| "a b/c".into()), "/a/a%20b%2Fc");
    }
}
