//! HAR files (a browser's developer tools, "Save all as HAR") into [`Operation`]s: each
//! recorded request is replayed per identity, without the credentials it was recorded with.

use std::path::Path;

use http::{HeaderName, HeaderValue, Method};
use serde_json::Value;

use crate::error::AuditError;
use crate::openapi::parse_value;
use crate::operation::Operation;

/// Headers a replay never copies from the recording: credentials (the identity supplies
/// its own), connection management, and what the client computes itself.
const DROPPED: [&str; 12] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "host",
    "content-length",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "accept-encoding",
    "x-api-key",
];

/// Read the requests of a HAR file's text; `path` names the file in errors. Identical
/// requests (method, URL, body) are kept once.
///
/// # Errors
/// [`AuditError::Syntax`] or [`AuditError::Invalid`] with the JSON pointer of the problem.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Operation>, AuditError> {
    let doc = parse_value(text, path)?;
    let invalid = |pointer: String, message: &str| AuditError::Invalid {
        path: path.to_owned(),
        pointer,
        message: message.to_owned(),
    };
    let entries = doc
        .pointer("/log/entries")
        .ok_or_else(|| invalid("/log/entries".into(), "missing: not a HAR file"))?
        .as_array()
        .ok_or_else(|| invalid("/log/entries".into(), "expected an array"))?;
    let mut out: Vec<Operation> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("/log/entries/{i}/request");
        let request = entry
            .get("request")
            .ok_or_else(|| invalid(at.clone(), "missing"))?;
        let method = request
            .get("method")
            .and_then(Value::as_str)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .ok_or_else(|| invalid(format!("{at}/method"), "expected a method"))?;
        let url_text = request
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid(format!("{at}/url"), "expected a URL string"))?;
        let url = reqwest::Url::parse(url_text)
            .map_err(|e| invalid(format!("{at}/url"), &format!("not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            continue;
        }
        let mut headers = Vec::new();
        if let Some(list) = request.get("headers") {
            let list = list
                .as_array()
                .ok_or_else(|| invalid(format!("{at}/headers"), "expected an array"))?;
            for (j, h) in list.iter().enumerate() {
                let name = h.get("name").and_then(Value::as_str).unwrap_or("");
                let value = h.get("value").and_then(Value::as_str).unwrap_or("");
                if name.starts_with(':') || DROPPED.contains(&name.to_ascii_lowercase().as_str()) {
                    continue;
                }
                let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) else {
                    return Err(invalid(format!("{at}/headers/{j}"), "not a valid header"));
                };
                headers.push((name, value));
            }
        }
        let body = request.get("postData").and_then(|p| {
            let text = p.get("text").and_then(Value::as_str)?;
            let mime = p
                .get("mimeType")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream");
            Some((mime.to_owned(), text.as_bytes().to_vec()))
        });
        let id = match url.query() {
            Some(q) => format!("{method} {}?{q}", url.path()),
            None => format!("{method} {}", url.path()),
        };
        let duplicate = out
            .iter()
            .any(|o| o.id == id && o.url.as_deref() == Some(url.as_str()) && o.body == body);
        if duplicate {
            continue;
        }
        out.push(Operation {
            id,
            method,
            path: url.path().to_owned(),
            params: Vec::new(),
            query: url.query().map(str::to_owned),
            headers,
            body,
            requires_auth: None,
            url: Some(url.to_string()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn entries_lose_their_credentials() {
        let har = r#"{"log":{"entries":[
          {"request":{"method":"GET","url":"http://127.0.0.1:1/a?x=1","headers":[
             {"name":"Authorization","value":"Bearer recorded"},{"name":"Accept","value":"application/json"},
             {"name":":authority","value":"x"}]}},
          {"request":{"method":"GET","url":"http://127.0.0.1:1/a?x=1","headers":[]}},
          {"request":{"method":"POST","url":"http://127.0.0.1:1/b","postData":{"mimeType":"application/json","text":"{}"}}}]}}"#;
        let ops = parse(har, Path::new("s.har")).unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].id, "GET /a?x=1");
        assert_eq!(ops[0].headers.len(), 1);
        assert_eq!(ops[0].headers[0].0, "accept");
        assert!(ops[1].is_unsafe());
        let e = parse(
            r#"{"log":{"entries":[{"request":{"method":"GET"}}]}}"#,
            Path::new("s.har"),
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "s.har: at /log/entries/0/request/url: expected a URL string"
        );
    }
}
