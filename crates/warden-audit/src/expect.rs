//! The expectations file (TOML): who may call what, and whose objects are whose.
//!
//! ```toml
//! # Who may call an operation (by operationId or "METHOD /path"); an identity not listed
//! # that gets a 2xx is a BFLA finding. Operations not listed have no expectation.
//! [operations]
//! "GET /admin/users" = ["admin"]
//! getOrder = ["user", "admin"]
//!
//! # Whose objects are whose: path parameter values per identity. Each identity is asked
//! # for the others' objects too; a 2xx is a BOLA finding, unless it may see every object.
//! [identities.user]
//! owns = { orderId = "o-7", id = "7" }
//! [identities.admin]
//! owns = { orderId = "o-1", id = "1" }
//! sees_all = true
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::AuditError;
use crate::identity::Identity;
use crate::operation::Operation;

/// The checked expectations.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Operation id → the identities that may call it.
    pub operations: BTreeMap<String, Vec<String>>,
    /// Identity name → its objects and whether it may see everyone's.
    pub identities: BTreeMap<String, Owner>,
}

/// What one identity owns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Owner {
    /// Path parameter name → the value naming this identity's object.
    #[serde(default)]
    pub owns: BTreeMap<String, String>,
    /// May reach every identity's objects (an administrator).
    #[serde(default)]
    pub sees_all: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    operations: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    identities: BTreeMap<String, Owner>,
}

impl Expectations {
    /// Parse the text of an expectations file and check every name it uses against the
    /// operations and identities of the audit.
    ///
    /// # Errors
    /// [`AuditError::Syntax`] for TOML errors (with line and column),
    /// [`AuditError::Expectations`] naming the key of an unknown operation or identity.
    pub fn parse(
        text: &str,
        path: &Path,
        operations: &[Operation],
        identities: &[Identity],
    ) -> Result<Self, AuditError> {
        let raw: Raw = toml::from_str(text).map_err(|e| AuditError::Syntax {
            path: path.to_owned(),
            format: "TOML",
            message: e.to_string(),
        })?;
        let fail = |message: String| AuditError::Expectations {
            path: path.to_owned(),
            message,
        };
        let known = |name: &str| identities.iter().any(|i| i.name == name);
        let mut checked = BTreeMap::new();
        for (key, allowed) in raw.operations {
            let Some(op) = operations
                .iter()
                .find(|o| o.id == key || format!("{} {}", o.method, o.path) == key)
            else {
                return Err(fail(format!("operations.\"{key}\": no such operation")));
            };
            if let Some(unknown) = allowed.iter().find(|n| !known(n)) {
                return Err(fail(format!(
                    "operations.\"{key}\": no identity `{unknown}` (give it with --as)"
                )));
            }
            checked.insert(op.id.clone(), allowed);
        }
        for name in raw.identities.keys() {
            if !known(name) {
                return Err(fail(format!(
                    "identities.{name}: no identity `{name}` (give it with --as)"
                )));
            }
        }
        Ok(Self {
            operations: checked,
            identities: raw.identities,
        })
    }

    /// Who may call an operation, when the file says.
    #[must_use]
    pub fn allowed(&self, op: &Operation) -> Option<&[String]> {
        self.operations.get(&op.id).map(Vec::as_slice)
    }

    /// The identity's values for every parameter of the operation, when it owns one each.
    #[must_use]
    pub fn object_of(&self, identity: &str, op: &Operation) -> Option<BTreeMap<String, String>> {
        if op.params.is_empty() {
            return None;
        }
        let owner = self.identities.get(identity)?;
        op.params
            .iter()
            .map(|p| owner.owns.get(&p.name).map(|v| (p.name.clone(), v.clone())))
            .collect()
    }

    /// Whether the identity may reach every object.
    #[must_use]
    pub fn sees_all(&self, identity: &str) -> bool {
        self.identities.get(identity).is_some_and(|o| o.sees_all)
    }
}
