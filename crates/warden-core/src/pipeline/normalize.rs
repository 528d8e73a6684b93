//! Normalize: refuse ambiguous framing (request smuggling), then find the one
//! canonical path, with the configured case and trailing-slash policies.

use super::{Ctx, Outcome, Stop};
use crate::config::Config;
use crate::decision::{Reason, Stage};
use crate::hygiene::{HygieneSettings, PathCase, TrailingSlash};
use crate::normalize::{Normalized, normalize};
use crate::request::RequestView;

pub(super) fn run(
    config: &Config,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<Normalized, Stop> {
    if let Some(detail) = ambiguous_framing(request.headers) {
        cx.note(Stage::Normalize, false, || detail.to_owned());
        return Err(malformed(detail));
    }
    let mut target = match normalize(request.target) {
        Ok(t) => t,
        Err(e) => {
            cx.note(Stage::Normalize, false, || e.detail().to_owned());
            return Err(malformed(e.detail()));
        }
    };
    apply_path_policies(&config.hygiene, &mut target);
    cx.note(Stage::Normalize, true, || {
        format!("canonical path {}", target.path)
    });
    Ok(target)
}

fn malformed(detail: &'static str) -> Stop {
    Outcome::deny(Stage::Normalize, None, Reason::MalformedRequest { detail }).into()
}

/// The configured case and trailing-slash policies, applied to the canonical path (which is
/// then both routed and forwarded).
fn apply_path_policies(settings: &HygieneSettings, target: &mut Normalized) {
    if settings.trailing_slash == TrailingSlash::Ignore && target.path.len() > 1 {
        while target.path.len() > 1 && target.path.ends_with('/') {
            target.path.pop();
        }
    }
    if settings.path_case == PathCase::Insensitive {
        target.path.make_ascii_lowercase();
    }
}

/// A message whose length two parsers could read differently (RFC 9112 §6.3): both
/// `Transfer-Encoding` and `Content-Length`, or `Content-Length` more than once.
fn ambiguous_framing(headers: &http::HeaderMap) -> Option<&'static str> {
    let lengths = headers.get_all(http::header::CONTENT_LENGTH).iter().count();
    if lengths > 0 && headers.contains_key(http::header::TRANSFER_ENCODING) {
        return Some("The request has both Transfer-Encoding and Content-Length");
    }
    if lengths > 1 {
        return Some("The request has more than one Content-Length");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn ambiguous_framing_is_found() {
        let mut h = http::HeaderMap::new();
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert_eq!(ambiguous_framing(&h), None);
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        assert!(ambiguous_framing(&h).is_some(), "two Content-Length fields");
        let mut h = http::HeaderMap::new();
        h.append(http::header::CONTENT_LENGTH, HeaderValue::from_static("4"));
        h.append(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        assert!(ambiguous_framing(&h).is_some(), "CL and TE");
    }
}
