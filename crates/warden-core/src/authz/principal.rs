//! The principal of a request: the verified identity as a Cedar entity, with its roles
//! and every ancestor of those roles in the entities file.
//!
//! Making it hashes every role's ancestors and evaluates every attribute; under load the
//! same few identities come again and again, so the last ones made are kept per thread,
//! by their identity (subject, source, roles, attributes) and entities file.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cedar_policy::{Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use cedar_policy_core::ast;

use super::{StaticEntities, UidSet};
use crate::identity::Identity;

/// A principal, ready for a request's entities and for the policy index.
#[derive(Debug)]
pub(crate) struct Principal {
    pub uid: EntityUid,
    /// Its roles and all their ancestors.
    pub ancestors: UidSet,
    pub entity: Arc<ast::Entity>,
}

/// What a principal is made from.
#[derive(PartialEq)]
struct Key {
    entities: u64,
    subject: String,
    source: Arc<str>,
    roles: Vec<String>,
    attributes: BTreeMap<String, serde_json::Value>,
}

impl Key {
    fn matches(&self, entities: u64, identity: &Identity) -> bool {
        self.entities == entities
            && self.subject == identity.subject
            && self.source == identity.source
            && self.roles == identity.roles
            && self.attributes == identity.attributes
    }
}

thread_local! {
    static RECENT: RefCell<Vec<(Key, Arc<Principal>)>> = const { RefCell::new(Vec::new()) };
}

/// At most this many principals are kept per thread (looked up in order, newest last).
const MAX_RECENT: usize = 16;

/// The principal of `identity`.
///
/// # Errors
/// When an attribute has no Cedar value (a float or a null claim).
pub(crate) fn principal(
    identity: &Identity,
    principal_type: &EntityTypeName,
    role_type: &EntityTypeName,
    entities: &StaticEntities,
) -> Result<Arc<Principal>, String> {
    let id = entities.id();
    let hit = RECENT.with(|r| {
        r.borrow()
            .iter()
            .rev()
            .find(|(key, _)| key.matches(id, identity))
            .map(|(_, p)| Arc::clone(p))
    });
    if let Some(principal) = hit {
        return Ok(principal);
    }
    let uid =
        EntityUid::from_type_name_and_id(principal_type.clone(), EntityId::new(&identity.subject));
    let mut ancestors = UidSet::default();
    for role in &identity.roles {
        let role = EntityUid::from_type_name_and_id(role_type.clone(), EntityId::new(role));
        ancestors.extend(entities.ancestors(&role).cloned());
        ancestors.insert(role);
    }
    let mut attrs = HashMap::new();
    for (name, value) in &identity.attributes {
        attrs.insert(name.clone(), super::context::json_to_expr(value)?);
    }
    attrs.insert(
        "source".to_owned(),
        RestrictedExpression::new_string(identity.source.to_string()),
    );
    let parents = ancestors.iter().cloned().collect();
    let entity = Entity::new(uid.clone(), attrs, parents).map_err(|e| e.to_string())?;
    let principal = Arc::new(Principal {
        uid,
        ancestors,
        entity: Arc::new(entity.as_ref().clone()),
    });
    RECENT.with(|r| {
        let mut recent = r.borrow_mut();
        if recent.len() >= MAX_RECENT {
            recent.remove(0);
        }
        recent.push((
            Key {
                entities: id,
                subject: identity.subject.clone(),
                source: Arc::clone(&identity.source),
                roles: identity.roles.clone(),
                attributes: identity.attributes.clone(),
            },
            Arc::clone(&principal),
        ));
    });
    Ok(principal)
}
