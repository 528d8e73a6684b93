//! The entities of a request, without copying the entities file each time.
//!
//! Cedar reads an entity's data (attributes, tags, ancestors) only when the entity is a
//! value during evaluation, and an entity becomes a value only as the principal, the
//! action or the resource, as a literal in a policy's conditions, or as an attribute or tag of an
//! entity already read (warden's context holds no entity references). The right side of
//! `in` is compared by uid only. So the entities a request needs are: the principal (built
//! from the verified identity), the closure of the conditions' literals (computed once, at
//! load), and the closure of the action and the resource (a few lookups per request).
//! Each static entity keeps the transitive ancestors Cedar computed at load, so the
//! hierarchy of a subset is the hierarchy of the whole file, and a request's store is made
//! without computing it again: the entities the policies name are one prepared store,
//! copied per request (a table of shared pointers), and Cedar's core is told the hierarchy
//! is closed (its public API would compute it on every request, which was a third of an
//! authorization).

use std::sync::Arc;

use cedar_policy::{Entities, Entity, EntityUid, PolicySet};
use cedar_policy_core::ast;
use cedar_policy_core::entities::{Entities as CoreEntities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::extensions::Extensions;
use serde_json::Value;

use super::{UidMap, UidSet};

/// The entities file, prepared at load for per-request subsets.
pub(crate) struct StaticEntities {
    /// Every entity of the file, with its ancestors transitively closed.
    all: Entities,
    /// The entities each entity's attributes and tags refer to.
    refs: UidMap<Vec<EntityUid>>,
    /// Each entity of the file, shared, for the stores of requests.
    shared: UidMap<Arc<ast::Entity>>,
    /// The entities policy conditions name, and the entities those refer to: in every
    /// request.
    base: CoreEntities,
    base_uids: UidSet,
    /// Tells this file's per-thread values (principals) from another's.
    id: u64,
}

impl std::fmt::Debug for StaticEntities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticEntities")
            .field("entities", &self.all.len())
            .field("base", &self.base_uids.len())
            .finish_non_exhaustive()
    }
}

impl StaticEntities {
    /// Prepare `all` for requests evaluated against `policies` (active and shadow).
    pub fn new<'a>(all: Entities, policies: impl IntoIterator<Item = &'a PolicySet>) -> Self {
        let mut refs = UidMap::default();
        for entity in all.iter() {
            let mut found = Vec::new();
            if let Ok(json) = entity.to_json_value() {
                for key in ["attrs", "tags"] {
                    if let Some(value) = json.get(key) {
                        entity_refs(value, &mut found);
                    }
                }
            }
            if !found.is_empty() {
                refs.insert(entity.uid(), found);
            }
        }
        let shared = all
            .iter()
            .map(|e| (e.uid(), Arc::new(e.as_ref().clone())))
            .collect();
        let mut prepared = Self {
            all,
            refs,
            shared,
            base: CoreEntities::new(),
            base_uids: UidSet::default(),
            id: {
                static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            },
        };
        let literals: Vec<EntityUid> = policies
            .into_iter()
            .flat_map(PolicySet::policies)
            .flat_map(condition_literals)
            .collect();
        let mut base = Vec::new();
        let mut base_uids = UidSet::default();
        prepared.closure(literals, &mut base_uids, &mut base);
        // A subset of a checked file: no duplicates, hierarchy closed.
        prepared.base = CoreEntities::new()
            .add_entities(
                base,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .unwrap_or_default();
        prepared.base_uids = base_uids;
        prepared
    }

    /// This prepared file's id, unique in the process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// An entity of the file.
    pub fn get(&self, uid: &EntityUid) -> Option<&Entity> {
        self.all.get(uid)
    }

    /// The ancestors of an entity of the file (none for an entity it does not have).
    pub fn ancestors(&self, uid: &EntityUid) -> impl Iterator<Item = &EntityUid> {
        self.all.ancestors(uid).into_iter().flatten()
    }

    /// The entities of one request: `principal`, which replaces any entity of the file with
    /// its uid, the entities the policies name, and those the action and the resource lead to.
    ///
    /// The principal's ancestors must be closed (its roles and all their ancestors).
    ///
    /// # Errors
    /// When Cedar refuses the set (it never should: it is a subset of a checked file).
    pub fn for_request(
        &self,
        principal: Arc<ast::Entity>,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Result<RequestEntities, String> {
        let principal_uid = EntityUid::from(principal.uid().clone());
        let mut seen = UidSet::default();
        seen.insert(principal_uid);
        let mut extra = Vec::new();
        self.closure([action.clone(), resource.clone()], &mut seen, &mut extra);
        // Upserted: the principal replaces an entity of the file with its uid.
        let entities = self
            .base
            .clone()
            .upsert_entities(
                std::iter::once(principal).chain(extra),
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| e.to_string())?;
        Ok(RequestEntities(entities))
    }

    /// Add to `out` the entities of the file reachable from `seeds` through attributes and
    /// tags, skipping those in `seen` and in the base.
    fn closure(
        &self,
        seeds: impl IntoIterator<Item = EntityUid>,
        seen: &mut UidSet,
        out: &mut Vec<Arc<ast::Entity>>,
    ) {
        let mut stack: Vec<EntityUid> = seeds.into_iter().collect();
        while let Some(uid) = stack.pop() {
            if self.base_uids.contains(&uid) || seen.contains(&uid) {
                continue;
            }
            let Some(entity) = self.shared.get(&uid) else {
                continue;
            };
            if let Some(next) = self.refs.get(&uid) {
                stack.extend(next.iter().cloned());
            }
            out.push(Arc::clone(entity));
            seen.insert(uid);
        }
    }
}

/// The entities of one request, as Cedar's public API takes them.
pub(crate) struct RequestEntities(CoreEntities);

impl RequestEntities {
    /// The store, for [`cedar_policy::Authorizer::is_authorized`].
    pub fn get(&self) -> &Entities {
        use ref_cast::RefCast;
        Entities::ref_cast(&self.0)
    }
}

/// The entity literals of a policy whose data evaluation may read: those in its `when` and
/// `unless` conditions. Literals of the scope (`principal in Role::"admin"`,
/// `action == Action::"read"`) are only compared with the principal's, action's or
/// resource's own uid and ancestors.
fn condition_literals(policy: &cedar_policy::Policy) -> Vec<EntityUid> {
    match policy.to_json() {
        Ok(json) => {
            let mut found = Vec::new();
            if let Some(conditions) = json.get("conditions") {
                entity_refs(conditions, &mut found);
            }
            found
        }
        Err(_) => policy.entity_literals(),
    }
}

/// Entity references (`{"__entity": {…}}`) anywhere in a JSON value of an entity or a
/// policy.
fn entity_refs(value: &Value, out: &mut Vec<EntityUid>) {
    match value {
        Value::Object(map) => {
            if map.contains_key("__entity") {
                if let Ok(uid) = EntityUid::from_json(value.clone()) {
                    out.push(uid);
                }
                return;
            }
            for v in map.values() {
                entity_refs(v, out);
            }
        }
        Value::Array(items) => {
            for v in items {
                entity_refs(v, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Context, Decision, Request, RestrictedExpression};

    use super::*;

    const FILE: &str = r#"[
      { "uid": { "type": "Role", "id": "admin" }, "attrs": {}, "parents": [{ "type": "Role", "id": "staff" }] },
      { "uid": { "type": "Role", "id": "staff" }, "attrs": { "level": 2 }, "parents": [] },
      { "uid": { "type": "User", "id": "bob" }, "attrs": { "manager": { "__entity": { "type": "User", "id": "carol" } } }, "parents": [] },
      { "uid": { "type": "User", "id": "carol" }, "attrs": { "office": "paris" }, "parents": [] },
      { "uid": { "type": "User", "id": "alice" }, "attrs": { "office": "file" }, "parents": [{ "type": "Role", "id": "admin" }] },
      { "uid": { "type": "Document", "id": "d1" }, "attrs": { "owner": { "__entity": { "type": "User", "id": "bob" } } }, "parents": [{ "type": "Folder", "id": "f1" }] },
      { "uid": { "type": "Folder", "id": "f1" }, "attrs": {}, "parents": [] },
      { "uid": { "type": "Team", "id": "core" }, "attrs": { "lead": { "__entity": { "type": "User", "id": "dave" } } }, "parents": [] },
      { "uid": { "type": "User", "id": "dave" }, "attrs": { "office": "lyon" }, "parents": [] },
      { "uid": { "type": "Unrelated", "id": "x" }, "attrs": {}, "parents": [] }
    ]"#;

    const POLICIES: &str = r#"
      @id("staff") permit(principal in Role::"staff", action == Action::"staff", resource);
      @id("level") permit(principal, action == Action::"level", resource) when { Role::"staff".level == 2 };
      @id("manager") permit(principal, action == Action::"manager", resource in Folder::"f1")
        when { resource.owner.manager.office == "paris" };
      @id("team") permit(principal, action == Action::"team", resource) when { Team::"core".lead.office == "lyon" };
      @id("attr") permit(principal, action == Action::"attr", resource) when { principal.office == "token" };
      @id("self") permit(principal, action == Action::"self", resource) when { resource == principal && principal.office == "token" };
    "#;

    fn uid(t: &str, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(
            cedar_policy::EntityTypeName::from_str(t).unwrap(),
            cedar_policy::EntityId::new(id),
        )
    }

    fn principal(roles: &[&str]) -> Entity {
        let all = Entities::from_json_str(FILE, None).unwrap();
        let mut parents = HashSet::new();
        for r in roles {
            let role = uid("Role", r);
            parents.extend(all.ancestors(&role).into_iter().flatten().cloned());
            parents.insert(role);
        }
        let attrs = HashMap::from([(
            "office".to_owned(),
            RestrictedExpression::new_string("token".to_owned()),
        )]);
        Entity::new(uid("User", "alice"), attrs, parents).unwrap()
    }

    /// The subset decides every request exactly as the whole file with the principal upserted.
    #[test]
    fn a_subset_decides_as_the_whole_file() {
        let policies = PolicySet::from_str(POLICIES).unwrap();
        let all = Entities::from_json_str(FILE, None).unwrap();
        let prepared = StaticEntities::new(all.clone(), [&policies]);
        let base: HashSet<String> = prepared.base_uids.iter().map(ToString::to_string).collect();
        assert!(
            base.contains(r#"Team::"core""#) && base.contains(r#"User::"dave""#),
            "{base:?}"
        );
        assert!(!base.contains(r#"Unrelated::"x""#));
        assert!(
            !base.contains(r#"Folder::"f1""#),
            "a scope literal needs no data"
        );
        for action in ["staff", "level", "manager", "team", "attr", "self", "none"] {
            for resource in [
                uid("Document", "d1"),
                uid("User", "alice"),
                uid("Folder", "f1"),
            ] {
                for roles in [&["admin"][..], &["staff"], &[]] {
                    let action = uid("Action", action);
                    let subset = prepared
                        .for_request(
                            Arc::new(principal(roles).as_ref().clone()),
                            &action,
                            &resource,
                        )
                        .unwrap();
                    let subset = subset.get();
                    assert!(subset.len() < all.len() + 1);
                    let whole = all
                        .clone()
                        .upsert_entities([principal(roles)], None)
                        .unwrap();
                    let request = Request::new(
                        uid("User", "alice"),
                        action.clone(),
                        resource.clone(),
                        Context::empty(),
                        None,
                    )
                    .unwrap();
                    let decide = |e: &Entities| {
                        let r = Authorizer::new().is_authorized(&request, &policies, e);
                        let errors = r.diagnostics().errors().count();
                        (r.decision() == Decision::Allow, errors)
                    };
                    assert_eq!(
                        decide(subset),
                        decide(&whole),
                        "{action} on {resource} with {roles:?}"
                    );
                }
            }
        }
        // Spot checks that the comparison is not vacuous.
        let request = |a: &str, r: EntityUid| {
            Request::new(
                uid("User", "alice"),
                uid("Action", a),
                r,
                Context::empty(),
                None,
            )
            .unwrap()
        };
        let allowed = |a: &str, r: EntityUid, roles: &[&str]| {
            let e = prepared
                .for_request(
                    Arc::new(principal(roles).as_ref().clone()),
                    &uid("Action", a),
                    &r,
                )
                .unwrap();
            Authorizer::new()
                .is_authorized(&request(a, r), &policies, e.get())
                .decision()
                == Decision::Allow
        };
        assert!(
            allowed("staff", uid("Folder", "f1"), &["admin"]),
            "role hierarchy"
        );
        assert!(!allowed("staff", uid("Folder", "f1"), &[]));
        assert!(
            allowed("manager", uid("Document", "d1"), &[]),
            "attribute chain"
        );
        assert!(allowed("team", uid("Folder", "f1"), &[]), "literal chain");
        assert!(
            allowed("self", uid("User", "alice"), &[]),
            "the principal replaces the file's"
        );
    }
}
