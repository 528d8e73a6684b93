//! The dashboard's filters, from its query string: `route`, `status` (comma-separated),
//! `subject` and `client` (an address or a CIDR block). Anything else — an unknown or
//! repeated parameter, an empty value, a bad status, address or encoding, a route the
//! configuration does not have — is a [`FilterError`], answered with a 400 problem.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::{Value, json};

use super::Event;

/// The longest route or subject a filter may name.
const MAX_VALUE: usize = 256;

/// What a dashboard shows: the events every given criterion keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    route: Option<String>,
    statuses: Vec<u16>,
    subject: Option<String>,
    client: Option<IpNet>,
}

/// Why a query string is not a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A parameter the dashboard does not know.
    #[error("unknown parameter `{0}`: the filters are route, status, subject and client")]
    Unknown(String),
    /// A parameter given twice.
    #[error("`{0}` is given more than once")]
    Repeated(&'static str),
    /// A parameter without a value.
    #[error("`{0}` is empty")]
    Empty(&'static str),
    /// A value that is too long.
    #[error("`{0}` is longer than 256 characters")]
    TooLong(&'static str),
    /// A query string that is not valid percent-encoded UTF-8.
    #[error("the query string is not valid percent-encoded UTF-8")]
    Encoding,
    /// A status that is not a refusal status.
    #[error("`{0}` is not a refusal status (400 to 599)")]
    Status(String),
    /// A client that is not an address or a CIDR block.
    #[error("`{0}` is not an IP address or a CIDR block")]
    Client(String),
    /// A route the configuration does not have.
    #[error("there is no route named `{0}`")]
    Route(String),
}

impl Filter {
    /// The filter of a query string, checked against the configuration's route names.
    ///
    /// # Errors
    /// Every problem a [`FilterError`] names.
    pub fn parse(query: Option<&str>, routes: &[Arc<str>]) -> Result<Self, FilterError> {
        let mut filter = Self::default();
        let mut seen = 0_u8;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = decode(name)?;
            let value = decode(value)?;
            let (slot, field) = match name.as_str() {
                "route" => (0, "route"),
                "status" => (1, "status"),
                "subject" => (2, "subject"),
                "client" => (3, "client"),
                _ => return Err(FilterError::Unknown(name.chars().take(64).collect())),
            };
            if seen & (1 << slot) != 0 {
                return Err(FilterError::Repeated(field));
            }
            seen |= 1 << slot;
            let value = value.trim();
            if value.is_empty() {
                return Err(FilterError::Empty(field));
            }
            if value.chars().count() > MAX_VALUE {
                return Err(FilterError::TooLong(field));
            }
            match field {
                "route" => {
                    if !routes.iter().any(|r| r.as_ref() == value) {
                        return Err(FilterError::Route(value.to_owned()));
                    }
                    filter.route = Some(value.to_owned());
                }
                "status" => {
                    for s in value.split(',') {
                        match s.trim().parse::<u16>() {
                            Ok(code) if (400..=599).contains(&code) => filter.statuses.push(code),
                            _ => return Err(FilterError::Status(s.chars().take(16).collect())),
                        }
                    }
                }
                "subject" => filter.subject = Some(value.to_owned()),
                _ => {
                    let net = value
                        .parse::<IpNet>()
                        .or_else(|_| value.parse::<IpAddr>().map(IpNet::from))
                        .map_err(|_| FilterError::Client(value.chars().take(64).collect()))?;
                    filter.client = Some(net.trunc());
                }
            }
        }
        Ok(filter)
    }

    /// Whether an event passes every criterion.
    pub(crate) fn keeps(&self, event: &Event) -> bool {
        self.route
            .as_deref()
            .is_none_or(|r| event.route.as_deref() == Some(r))
            && (self.statuses.is_empty() || self.statuses.contains(&event.status))
            && self
                .subject
                .as_deref()
                .is_none_or(|s| event.subject.as_deref() == Some(s))
            && self.client.is_none_or(|net| net.contains(&event.client))
    }

    /// The filter as the snapshot reports it.
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "route": self.route,
            "status": self.statuses,
            "subject": self.subject,
            "client": self.client.map(|n| n.to_string()),
        })
    }
}

/// One percent-decoded component (`+` is a space, as HTML forms send it).
fn decode(text: &str) -> Result<String, FilterError> {
    let spaced = text.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| FilterError::Encoding)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        let routes = [Arc::from("docs")];
        let ok = Filter::parse(
            Some("route=docs&status=401,403&subject=ada+l&client=127.0.0.0%2F8"),
            &routes,
        )
        .unwrap();
        assert_eq!(ok.statuses, [401, 403]);
        assert_eq!(ok.subject.as_deref(), Some("ada l"));
        assert_eq!(ok.client.unwrap().to_string(), "127.0.0.0/8");
        assert_eq!(Filter::parse(None, &routes).unwrap(), Filter::default());
        for (query, error) in [
            ("colour=red", FilterError::Unknown("colour".into())),
            ("status=401&status=403", FilterError::Repeated("status")),
            ("status=200", FilterError::Status("200".into())),
            ("status=4O1", FilterError::Status("4O1".into())),
            ("client=300.1.1.1", FilterError::Client("300.1.1.1".into())),
            ("route=nope", FilterError::Route("nope".into())),
            ("subject=", FilterError::Empty("subject")),
            ("subject=%FF", FilterError::Encoding),
        ] {
            assert_eq!(Filter::parse(Some(query), &routes), Err(error), "{query}");
        }
        assert_eq!(
            Filter::parse(Some(&format!("subject={}", "a".repeat(300))), &routes),
            Err(FilterError::TooLong("subject"))
        );
    }
}
