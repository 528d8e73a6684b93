//! Geo rules: allow or deny by country, from a MaxMind database. A rule may answer 451
//! (RFC 7725) with a `Link: <…>; rel="blocked-by"` instead of 403.

use std::net::IpAddr;
use std::sync::Arc;

use maxminddb::{Reader, geoip2};

use super::Action;

/// One rule: countries and what to do with them.
#[derive(Debug, Clone)]
pub struct GeoRule {
    /// Allow or deny.
    pub action: Action,
    /// ISO 3166-1 alpha-2 codes, upper case; `*` matches every country (and unknown ones).
    pub countries: Vec<String>,
    /// For a legal block: the URL of the notice, answered as 451 with `rel="blocked-by"`.
    pub blocked_by: Option<Arc<str>>,
}

/// Geo rules over a loaded database.
pub struct GeoRules {
    reader: Reader<Vec<u8>>,
    rules: Vec<GeoRule>,
}

impl std::fmt::Debug for GeoRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeoRules")
            .field("database_type", &self.reader.metadata.database_type)
            .field("rules", &self.rules)
            .finish()
    }
}

/// Why a geo database could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The bytes are not a MaxMind database (or a damaged one).
    #[error("not a MaxMind database: {0}")]
    NotMaxMind(#[source] maxminddb::MaxMindDbError),
}

/// A geo refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeoDenial {
    /// The country the address is in, when the database knows it.
    pub country: Option<String>,
    /// The legal notice, for a 451.
    pub blocked_by: Option<Arc<str>>,
}

impl GeoRules {
    /// Rules over a database read from bytes.
    ///
    /// # Errors
    /// [`GeoError::NotMaxMind`] when the bytes are not a MaxMind database.
    pub fn new(database: Vec<u8>, rules: Vec<GeoRule>) -> Result<Self, GeoError> {
        let reader = Reader::from_source(database).map_err(GeoError::NotMaxMind)?;
        Ok(Self { reader, rules })
    }

    /// The country of an address, if the database has one.
    #[must_use]
    pub fn country(&self, addr: IpAddr) -> Option<String> {
        let result = self.reader.lookup(addr.to_canonical()).ok()?;
        let record: geoip2::Country<'_> = result.decode().ok()??;
        record.country.iso_code.map(str::to_ascii_uppercase)
    }

    /// The refusal for an address, if the first matching rule denies it.
    #[must_use]
    pub fn check(&self, addr: IpAddr) -> Option<GeoDenial> {
        let country = self.country(addr);
        let rule = self.rules.iter().find(|r| {
            r.countries
                .iter()
                .any(|c| c == "*" || country.as_deref() == Some(c.as_str()))
        })?;
        (rule.action == Action::Deny).then(|| GeoDenial {
            country,
            blocked_by: rule.blocked_by.clone(),
        })
    }
}
