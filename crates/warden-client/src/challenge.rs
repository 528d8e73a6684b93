//! `WWW-Authenticate` challenges (RFC 9110 §11.6.1) and the Bearer attributes of RFC 6750
//! §3 (`error`, `error_description`, `scope`).
//!
//! ```text
//! WWW-Authenticate = #challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! Commas separate both challenges and the parameters of one challenge, so a parameter is
//! told from the next challenge by the `=` after its name. A response may carry several
//! challenges in one field, in several fields, or both; every field is parsed on its own and
//! the challenges are concatenated. Scheme and parameter names are case-insensitive
//! (parameter names are stored in lower case). Malformed input never panics: the parser
//! skips what it cannot read up to the next comma and keeps going.

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

/// One challenge: an auth scheme with either a token68 or a list of parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
    /// The auth scheme as the server spelled it (compare with [`Challenge::is`]).
    pub scheme: String,
    /// The token68 form (`Negotiate abc==`), if the challenge uses it.
    pub token68: Option<String>,
    /// The parameters in order: names in lower case, values unquoted.
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Whether the challenge's scheme is `scheme` (case-insensitive).
    #[must_use]
    pub fn is(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The value of the first parameter called `name` (case-insensitive).
    #[must_use]
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The attributes of a Bearer challenge (RFC 6750 §3).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BearerChallenge {
    /// `realm`.
    pub realm: Option<String>,
    /// `error`: `invalid_request`, `invalid_token`, `insufficient_scope` or another code.
    pub error: Option<String>,
    /// `error_description`.
    pub error_description: Option<String>,
    /// `scope`, split on spaces: the scopes the resource requires.
    pub scope: Vec<String>,
}

impl BearerChallenge {
    /// The first Bearer challenge among `challenges`.
    #[must_use]
    pub fn find(challenges: &[Challenge]) -> Option<Self> {
        challenges
            .iter()
            .find(|c| c.is("Bearer"))
            .map(Self::from_challenge)
    }

    /// The Bearer attributes of one challenge (whatever its scheme).
    #[must_use]
    pub fn from_challenge(challenge: &Challenge) -> Self {
        let owned = |name: &str| challenge.param(name).map(str::to_owned);
        Self {
            realm: owned("realm"),
            error: owned("error"),
            error_description: owned("error_description"),
            scope: challenge
                .param("scope")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
}

/// Every challenge in every `WWW-Authenticate` field of `headers`, in order.
#[must_use]
pub fn from_headers(headers: &HeaderMap) -> Vec<Challenge> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .flat_map(|v| parse(&String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

/// The challenges of one `WWW-Authenticate` field value.
#[must_use]
pub fn parse(field: &str) -> Vec<Challenge> {
    let mut cursor = Cursor::new(field);
    let mut out = Vec::new();
    loop {
        cursor.skip_separators();
        if cursor.at_end() {
            break;
        }
        let scheme = cursor.token();
        if scheme.is_empty() {
            cursor.skip_to_comma();
            continue;
        }
        let mut challenge = Challenge {
            scheme,
            ..Challenge::default()
        };
        let spaced = cursor.skip_ows();
        if spaced && !cursor.at_end() && cursor.peek() != Some(',') {
            if let Some(token68) = cursor.token68() {
                challenge.token68 = Some(token68);
            } else {
                parse_params(&mut cursor, &mut challenge);
            }
        }
        out.push(challenge);
        cursor.skip_ows();
        if !cursor.at_end() && cursor.peek() != Some(',') {
            cursor.skip_to_comma();
        }
    }
    out
}

/// The auth-params of one challenge; stops before the scheme of the next one.
fn parse_params(cursor: &mut Cursor, challenge: &mut Challenge) {
    loop {
        let start = cursor.pos;
        let name = cursor.token();
        if name.is_empty() {
            cursor.skip_to_comma();
        } else {
            cursor.skip_ows();
            if cursor.peek() != Some('=') {
                // Not a parameter: the next challenge starts here.
                cursor.pos = start;
                return;
            }
            cursor.bump();
            cursor.skip_ows();
            let value = if cursor.peek() == Some('"') {
                cursor.quoted_string()
            } else {
                cursor.token()
            };
            challenge.params.push((name.to_ascii_lowercase(), value));
            cursor.skip_ows();
            if !cursor.at_end() && cursor.peek() != Some(',') {
                cursor.skip_to_comma();
            }
        }
        // At a comma or the end: continue only if a parameter (token BWS "=") follows.
        let before = cursor.pos;
        cursor.skip_separators();
        if cursor.at_end() || !cursor.param_ahead() {
            cursor.pos = before;
            return;
        }
    }
}

/// A position in a field value, read one `char` at a time.
struct Cursor {
    chars: Vec<char>,
    pos: usize,
}

impl Cursor {
    fn new(text: &str) -> Self {
        Self {
            chars: text.chars().collect(),
            pos: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }

    /// Skips spaces and tabs; whether there were any.
    fn skip_ows(&mut self) -> bool {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Skips spaces, tabs and commas (empty list elements are allowed, RFC 9110 §5.6.1).
    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(' ' | '\t' | ',')) {
            self.pos += 1;
        }
    }

    /// Skips to the next comma outside a quoted-string (or the end); always moves forward
    /// unless already at a comma or the end.
    fn skip_to_comma(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                ',' => return,
                '"' => {
                    self.quoted_string();
                }
                _ => self.pos += 1,
            }
        }
    }

    /// A token (RFC 9110 §5.6.2); empty if none starts here.
    fn token(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek().filter(|c| is_tchar(*c)) {
            out.push(c);
            self.pos += 1;
        }
        out
    }

    /// A token68 that makes up the whole rest of the challenge, or `None` (and the position
    /// unchanged) when what follows is not one.
    fn token68(&mut self) -> Option<String> {
        let start = self.pos;
        let mut out = String::new();
        while let Some(c) = self.peek().filter(|c| is_token68_char(*c)) {
            out.push(c);
            self.pos += 1;
        }
        if !out.is_empty() {
            while self.peek() == Some('=') {
                out.push('=');
                self.pos += 1;
            }
            self.skip_ows();
            if self.at_end() || self.peek() == Some(',') {
                return Some(out);
            }
        }
        self.pos = start;
        None
    }

    /// A quoted-string starting at `"`, unescaped. An unterminated string runs to the end.
    fn quoted_string(&mut self) -> String {
        let mut out = String::new();
        if self.peek() != Some('"') {
            return out;
        }
        self.pos += 1;
        while let Some(c) = self.bump() {
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.bump() {
                        out.push(escaped);
                    }
                }
                c => out.push(c),
            }
        }
        out
    }

    /// Whether an auth-param (`token BWS "="`) starts here; the position is unchanged.
    fn param_ahead(&mut self) -> bool {
        let start = self.pos;
        let name = self.token();
        self.skip_ows();
        let ahead = !name.is_empty() && self.peek() == Some('=');
        self.pos = start;
        ahead
    }
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token68_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~+/".contains(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn params(c: &Challenge) -> Vec<(&str, &str)> {
        c.params
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn one_bearer_challenge_with_an_error() {
        let c = parse(
            r#"Bearer realm="warden", error="invalid_token", error_description="The access token expired""#,
        );
        assert_eq!(c.len(), 1);
        let b = BearerChallenge::from_challenge(&c[0]);
        assert_eq!(b.realm.as_deref(), Some("warden"));
        assert_eq!(b.error.as_deref(), Some("invalid_token"));
        assert_eq!(
            b.error_description.as_deref(),
            Some("The access token expired")
        );
        assert!(b.scope.is_empty());
    }

    #[test]
    fn several_challenges_in_one_field() {
        let c = parse(
            r#"Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple", Negotiate abc/def==, Bearer"#,
        );
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c[0].scheme, "Newauth");
        assert_eq!(
            params(&c[0]),
            vec![
                ("realm", "apps"),
                ("type", "1"),
                ("title", "Login to \"apps\"")
            ]
        );
        assert!(c[1].is("basic"));
        assert_eq!(c[1].param("realm"), Some("simple"));
        assert_eq!(c[2].token68.as_deref(), Some("abc/def=="));
        assert!(c[2].params.is_empty());
        assert!(c[3].is("Bearer"));
        assert!(c[3].params.is_empty() && c[3].token68.is_none());
    }

    #[test]
    fn quoted_strings_keep_commas_and_escaped_quotes() {
        let c = parse(
            r#"Bearer error="invalid_token", error_description="bad, \"very\" bad \\ here", scope="a b""#,
        );
        assert_eq!(c.len(), 1);
        let b = BearerChallenge::from_challenge(&c[0]);
        assert_eq!(
            b.error_description.as_deref(),
            Some(r#"bad, "very" bad \ here"#)
        );
        assert_eq!(b.scope, vec!["a", "b"]);
    }

    #[test]
    fn names_are_case_insensitive_and_whitespace_around_equals_is_allowed() {
        let c = parse(r#"bEaReR REALM = "x" ,  Error=insufficient_scope,SCOPE="docs:write""#);
        let b = BearerChallenge::find(&c).unwrap();
        assert_eq!(b.realm.as_deref(), Some("x"));
        assert_eq!(b.error.as_deref(), Some("insufficient_scope"));
        assert_eq!(b.scope, vec!["docs:write"]);
    }

    #[test]
    fn several_fields_are_concatenated() {
        let mut h = HeaderMap::new();
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Basic realm="w", charset="UTF-8""#),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="w", error="invalid_token""#),
        );
        let c = from_headers(&h);
        assert_eq!(c.len(), 2);
        assert_eq!(params(&c[0]), vec![("realm", "w"), ("charset", "UTF-8")]);
        assert_eq!(
            BearerChallenge::find(&c).unwrap().error.as_deref(),
            Some("invalid_token")
        );
    }

    #[test]
    fn empty_list_elements_and_garbage_are_skipped() {
        let c = parse(r#" , ,Bearer realm="a",, , Basic ~~ !!, "junk", Digest realm="d""#);
        let schemes: Vec<&str> = c.iter().map(|c| c.scheme.as_str()).collect();
        assert_eq!(schemes, vec!["Bearer", "Basic", "Digest"]);
        assert_eq!(c[0].param("realm"), Some("a"));
        assert_eq!(c[2].param("realm"), Some("d"));
        assert!(parse("").is_empty());
        assert!(parse(r#"Bearer realm="unterminated"#)[0].param("realm") == Some("unterminated"));
    }

    proptest! {
        #[test]
        fn never_panics_on_random_text(s in "\\PC*") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_challenge_like_text(s in r#"[A-Za-z =,"\\\t/+~.-]{0,64}"#) {
            for c in parse(&s) {
                prop_assert!(!c.scheme.is_empty());
                let _ = BearerChallenge::from_challenge(&c);
            }
        }

        #[test]
        fn a_rendered_challenge_reads_back(
            realm in "[ -~]{0,20}",
            description in "[ -~]{0,40}",
        ) {
            let quote = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
            let field = format!(
                "Bearer realm={}, error=\"invalid_token\", error_description={}",
                quote(&realm),
                quote(&description)
            );
            let c = parse(&field);
            prop_assert_eq!(c.len(), 1);
            let b = BearerChallenge::from_challenge(&c[0]);
            prop_assert_eq!(b.realm.as_deref(), Some(realm.as_str()));
            prop_assert_eq!(b.error_description.as_deref(), Some(description.as_str()));
        }
    }
}
