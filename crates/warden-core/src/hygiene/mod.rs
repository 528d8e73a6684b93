//! Request hygiene: body size limits, the WAF pass, CSRF and CORS. Settings are checked at
//! load (see `config::hygiene`); the checks run inside the pipeline.

pub mod cors;
pub mod csrf;
pub mod waf;

use std::sync::Arc;

pub use cors::{AllowedOrigins, CorsGrant, CorsSettings};
pub use csrf::CsrfSettings;
pub use waf::{Detection, Part, Waf};

/// What the WAF does on a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WafMode {
    /// Not run.
    #[default]
    Off,
    /// Run and log findings, never refuse.
    Detect,
    /// Refuse findings with 403.
    On,
}

/// How letters in paths are matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PathCase {
    /// `/Admin` and `/admin` are different paths (RFC 3986).
    #[default]
    Sensitive,
    /// Paths are lower-cased before routing, and forwarded lower-cased.
    Insensitive,
}

/// What a trailing slash means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrailingSlash {
    /// `/docs/` and `/docs` are different paths.
    #[default]
    Strict,
    /// A trailing slash is removed before routing, and the path forwarded without it.
    Ignore,
}

/// Default largest body: 10 MiB.
pub const DEFAULT_MAX_BODY: u64 = 10 << 20;
/// Default largest body the WAF inspects: 64 KiB.
pub const DEFAULT_WAF_BODY_LIMIT: usize = 64 << 10;

/// The global hygiene settings.
#[derive(Debug, Clone)]
pub struct HygieneSettings {
    /// The largest request body; larger ones are refused with 413.
    pub max_body: u64,
    /// The WAF mode of routes that do not set one.
    pub waf: WafMode,
    /// The largest body the WAF inspects. With the WAF on, a larger body is refused with
    /// 413 (it cannot be inspected, and an uninspected body is a bypass).
    pub waf_body_limit: usize,
    /// Custom WAF rules.
    pub rules: Waf,
    /// How letters in paths are matched.
    pub path_case: PathCase,
    /// What a trailing slash means.
    pub trailing_slash: TrailingSlash,
    /// CSRF checks for cookie-authenticated unsafe requests (always on).
    pub csrf: CsrfSettings,
    /// CORS, when configured.
    pub cors: Option<Arc<CorsSettings>>,
    /// Headers that carry credentials (API keys): never scanned by the WAF.
    pub credential_headers: Vec<http::HeaderName>,
    /// Cookies that carry session tokens: never scanned by the WAF.
    pub session_cookies: Vec<Arc<str>>,
}

impl Default for HygieneSettings {
    fn default() -> Self {
        Self {
            max_body: DEFAULT_MAX_BODY,
            waf: WafMode::Off,
            waf_body_limit: DEFAULT_WAF_BODY_LIMIT,
            rules: Waf::default(),
            path_case: PathCase::Sensitive,
            trailing_slash: TrailingSlash::Strict,
            csrf: CsrfSettings::default(),
            cors: None,
            credential_headers: Vec::new(),
            session_cookies: Vec::new(),
        }
    }
}

/// A route's own hygiene settings.
#[derive(Debug, Clone, Copy)]
pub struct RouteHygiene {
    /// Overrides the global body limit.
    pub max_body: Option<u64>,
    /// Overrides the global WAF mode.
    pub waf: Option<WafMode>,
    /// Whether CSRF checks apply (default true).
    pub csrf: bool,
    /// Whether CORS applies (default true).
    pub cors: bool,
}

impl Default for RouteHygiene {
    fn default() -> Self {
        Self {
            max_body: None,
            waf: None,
            csrf: true,
            cors: true,
        }
    }
}

/// Parse a byte size: `65536`, `64KiB`, `10MiB`, `1GB`.
pub(crate) fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("64KiB"), Some(65536));
        assert_eq!(parse_size("10 MiB"), Some(10 << 20));
        assert_eq!(parse_size("1MB"), Some(1_000_000));
        assert_eq!(parse_size("1.5MB"), None);
        assert_eq!(parse_size("MB"), None);
        assert_eq!(parse_size("99999999999999GiB"), None);
    }
}
