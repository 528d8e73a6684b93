//! Authorization with Cedar: principal, action, resource and context from the verified
//! identity, the route and the request; policies parsed once at load.
//!
//! Fail closed: a policy that errors during evaluation (a missing attribute, a type error)
//! is skipped by Cedar, which silently disables a `forbid`. warden therefore denies any
//! request whose evaluation produced an error, and logs the errors. A default deny (no
//! `permit` matched) carries no reason from Cedar; warden says so itself.

mod context;
mod entities;
mod index;
mod load;
mod principal;

use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{
    Authorizer as CedarAuthorizer, Context, Decision as CedarDecision, Entities, EntityId,
    EntityTypeName, EntityUid, PolicyId, PolicySet, Request, Schema,
};

pub(crate) use self::entities::StaticEntities;
pub(crate) use self::load::load;
use crate::identity::Identity;

/// A set of entity uids. The uids come from the configuration (the entities file, the
/// routes' actions) and from verified identities, and a request's sets hold a handful of
/// them: a fast hasher, not SipHash, which resists crafted keys these are not.
pub(crate) type UidSet = foldhash::HashSet<EntityUid>;

/// A map keyed by entity uids (see [`UidSet`]).
pub(crate) type UidMap<V> = foldhash::HashMap<EntityUid, V>;

/// The checked authorization configuration.
pub(crate) struct Authorization {
    pub policies: PolicySet,
    pub shadow: Option<PolicySet>,
    pub schema: Option<Schema>,
    /// The entities file, prepared once: each request copies only what it can reach.
    pub entities: StaticEntities,
    /// Builds each request's context (only the keys the policies read).
    pub context: context::ContextBuilder,
    pub principal_type: EntityTypeName,
    pub role_type: EntityTypeName,
    /// Role names that appear in the policies, for explanations.
    pub roles_in_policies: Vec<String>,
    /// Per route action, the active and shadow policies whose action scope can match it
    /// (see [`Authorization::slice`]), indexed (see [`index`]); an action not listed is
    /// evaluated against all.
    pub slices: UidMap<(index::IndexedSet, Option<index::IndexedSet>)>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field("policies", &self.policies.policies().count())
            .field(
                "shadow",
                &self.shadow.as_ref().map(|s| s.policies().count()),
            )
            .field("schema", &self.schema.is_some())
            .field("timezone", &self.context.timezone().iana_name())
            .finish_non_exhaustive()
    }
}

/// What a route contributes to a Cedar request.
#[derive(Debug, Clone)]
pub(crate) struct RouteTarget {
    pub action: EntityUid,
    pub resource_type: EntityTypeName,
    /// The resource id, with `{param}` placeholders.
    pub resource_id: String,
}

/// The policies a request is decided by.
#[derive(Clone, Copy)]
enum Selected<'a> {
    /// Every policy, to Cedar.
    All(&'a PolicySet),
    /// What the index selected.
    Indexed(&'a index::Selection),
}

impl Selected<'_> {
    /// Whether Cedar evaluates any of these policies (and so reads the request's entities);
    /// the index's satisfied policies alone need none.
    fn evaluates(self) -> bool {
        match self {
            Self::All(_) => true,
            Self::Indexed(selection) => !selection.cedar.is_empty(),
        }
    }
}

/// A verdict of errors, which denies.
fn errors(error: String) -> (Verdict, Option<ShadowDisagreement>) {
    (
        Verdict::Errors {
            errors: vec![error],
        },
        None,
    )
}

/// The facts of one request that authorization looks at.
#[derive(Debug)]
pub(crate) struct AuthzInput<'a> {
    pub identity: &'a Identity,
    pub target: &'a RouteTarget,
    pub params: &'a [(String, String)],
    pub client: IpAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub now_ms: i64,
}

/// Cedar's answer, with what warden adds to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    Allow {
        policies: Vec<String>,
    },
    /// A `forbid` matched.
    Forbidden {
        policies: Vec<String>,
    },
    /// No `permit` matched (Cedar's default deny).
    NoPermit,
    /// Evaluation errors: denied, fail closed.
    Errors {
        errors: Vec<String>,
    },
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }
}

/// A disagreement between the active and the shadow policies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowDisagreement {
    /// Whether the active policies allowed.
    pub active_allowed: bool,
    /// Whether the shadow policies would have allowed.
    pub shadow_allowed: bool,
    /// The shadow policies that decided.
    pub shadow_policies: Vec<String>,
}

impl Authorization {
    /// Evaluate the active policies (and the shadow ones, if any).
    pub fn evaluate(&self, input: &AuthzInput<'_>) -> (Verdict, Option<ShadowDisagreement>) {
        let resource = self.resource(input);
        let principal = match principal::principal(
            input.identity,
            &self.principal_type,
            &self.role_type,
            &self.entities,
        ) {
            Ok(p) => p,
            Err(error) => return errors(error),
        };
        let (selected, selected_shadow);
        let (policies, shadow) = match self.slices.get(&input.target.action) {
            Some((policies, shadow)) => {
                // A resource that is the principal itself is the principal's entity in the
                // request (its roles as ancestors), not the file's.
                let is_principal = resource == principal.uid;
                let resource_ancestors: UidSet = if is_principal {
                    principal.ancestors.clone()
                } else {
                    self.entities.ancestors(&resource).cloned().collect()
                };
                let facts = index::Facts {
                    identity: input.identity,
                    principal: &principal.uid,
                    principal_ancestors: &principal.ancestors,
                    resource: &resource,
                    // Its attributes are then the identity's: left to Cedar.
                    resource_entity: if is_principal {
                        None
                    } else {
                        self.entities.get(&resource)
                    },
                    resource_ancestors: &resource_ancestors,
                    client: input.client,
                };
                selected = policies.select(&facts);
                selected_shadow = shadow.as_ref().map(|s| s.select(&facts));
                (
                    Selected::Indexed(&selected),
                    selected_shadow.as_deref().map(Selected::Indexed),
                )
            }
            None => (
                Selected::All(&self.policies),
                self.shadow.as_ref().map(Selected::All),
            ),
        };
        // The principal comes from the verified identity; an entity of the same uid in the
        // entities file is replaced for this request. The store is made only when Cedar
        // evaluates a policy: when the index has settled every policy (the usual RBAC
        // scopes), nothing reads it.
        let store = if policies.evaluates() || shadow.is_some_and(Selected::evaluates) {
            match self.entities.for_request(
                Arc::clone(&principal.entity),
                &input.target.action,
                &resource,
            ) {
                Ok(store) => Some(store),
                Err(error) => return errors(error),
            }
        } else {
            None
        };
        let request = match self.request(input, principal.uid.clone(), resource) {
            Ok(r) => r,
            Err(error) => return errors(error),
        };
        let empty = Entities::empty();
        let entities = store
            .as_ref()
            .map_or(&empty, entities::RequestEntities::get);
        let verdict = self.decide(policies, &request, entities);
        let shadow = shadow.and_then(|shadow| {
            let candidate = self.decide(shadow, &request, entities);
            (candidate.allowed() != verdict.allowed()).then(|| ShadowDisagreement {
                active_allowed: verdict.allowed(),
                shadow_allowed: candidate.allowed(),
                shadow_policies: match candidate {
                    Verdict::Allow { policies } | Verdict::Forbidden { policies } => policies,
                    Verdict::NoPermit => Vec::new(),
                    Verdict::Errors { errors } => errors,
                },
            })
        });
        (verdict, shadow)
    }

    /// Prepare, for each of `actions`, the policies that can apply to it. A policy whose
    /// action scope (`action == A`, `action in [A, B]`) cannot match an action is false for
    /// every request with that action, before its conditions are read: leaving it out
    /// changes no decision, no reason and no error, and spares evaluating it. The action
    /// hierarchy is the one of the entities file, as in evaluation.
    pub fn slice<'a>(&mut self, actions: impl IntoIterator<Item = &'a EntityUid>) {
        let mut slices = UidMap::default();
        for action in actions {
            if slices.contains_key(action) {
                continue;
            }
            let mut scope: Vec<&EntityUid> = self.entities.ancestors(action).collect();
            scope.push(action);
            let pick = |set: &PolicySet| {
                let mut out = PolicySet::new();
                for policy in set.policies() {
                    let applies = match policy.action_constraint() {
                        cedar_policy::ActionConstraint::Any => true,
                        cedar_policy::ActionConstraint::Eq(uid) => uid == *action,
                        cedar_policy::ActionConstraint::In(uids) => {
                            uids.iter().any(|uid| scope.contains(&uid))
                        }
                    };
                    // Ids are unique in the source set; a failure keeps the whole set.
                    if applies && out.add(policy.clone()).is_err() {
                        return None;
                    }
                }
                Some(out)
            };
            let Some(Ok(active)) = pick(&self.policies).map(index::IndexedSet::new) else {
                continue;
            };
            let shadow = match self.shadow.as_ref().map(pick) {
                Some(None) => continue,
                Some(Some(s)) => match index::IndexedSet::new(s) {
                    Ok(s) => Some(s),
                    Err(_) => continue,
                },
                None => None,
            };
            slices.insert(action.clone(), (active, shadow));
        }
        self.slices = slices;
    }

    /// Would the request be allowed if the principal also had `role`? For explanations.
    pub fn allowed_with_role(&self, input: &AuthzInput<'_>, role: &str) -> bool {
        let mut identity = input.identity.clone();
        identity.roles.push(role.to_owned());
        let input = AuthzInput {
            identity: &identity,
            ..*input
        };
        matches!(self.evaluate(&input).0, Verdict::Allow { .. })
    }

    /// Cedar's verdict over the selected policies, with the ones the index found satisfied.
    fn decide(&self, selected: Selected<'_>, request: &Request, entities: &Entities) -> Verdict {
        let selection = match selected {
            Selected::All(policies) => return self.run(policies, request, entities),
            Selected::Indexed(selection) => selection,
        };
        let cedar = if selected.evaluates() {
            self.run(&selection.cedar, request, entities)
        } else {
            Verdict::NoPermit // no policy, no reason, no error
        };
        let (permits, forbids) = (&selection.satisfied_permits, &selection.satisfied_forbids);
        match cedar {
            // Errors deny whatever else was satisfied.
            Verdict::Errors { errors } => Verdict::Errors { errors },
            Verdict::Forbidden { mut policies } => {
                policies.extend(forbids.iter().cloned());
                Verdict::Forbidden { policies }
            }
            Verdict::Allow { .. } | Verdict::NoPermit if !forbids.is_empty() => {
                Verdict::Forbidden {
                    policies: forbids.clone(),
                }
            }
            Verdict::Allow { mut policies } => {
                policies.extend(permits.iter().cloned());
                Verdict::Allow { policies }
            }
            Verdict::NoPermit if !permits.is_empty() => Verdict::Allow {
                policies: permits.clone(),
            },
            Verdict::NoPermit => Verdict::NoPermit,
        }
    }

    fn run(&self, policies: &PolicySet, request: &Request, entities: &Entities) -> Verdict {
        let response = CedarAuthorizer::new().is_authorized(request, policies, entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(ToString::to_string)
            .collect();
        if !errors.is_empty() {
            return Verdict::Errors { errors };
        }
        let policies: Vec<String> = response
            .diagnostics()
            .reason()
            .map(|id| self.name(id))
            .collect();
        match response.decision() {
            CedarDecision::Allow => Verdict::Allow { policies },
            CedarDecision::Deny if policies.is_empty() => Verdict::NoPermit,
            CedarDecision::Deny => Verdict::Forbidden { policies },
        }
    }

    /// Policies are given ids at load: their `@id` annotation, or `file#n`.
    fn name(&self, id: &PolicyId) -> String {
        id.to_string()
    }

    fn resource(&self, input: &AuthzInput<'_>) -> EntityUid {
        let resource_id = fill_params(&input.target.resource_id, input.params);
        EntityUid::from_type_name_and_id(
            input.target.resource_type.clone(),
            EntityId::new(resource_id),
        )
    }

    fn request(
        &self,
        input: &AuthzInput<'_>,
        principal: EntityUid,
        resource: EntityUid,
    ) -> Result<Request, String> {
        let context: Context = self.context.build(input)?;
        // The request is not checked against the schema: warden builds it, and its context
        // shape is documented; policies are validated against the schema at load.
        Request::new(
            principal,
            input.target.action.clone(),
            resource,
            context,
            None,
        )
        .map_err(|e| e.to_string())
    }
}

/// Replace `{name}` placeholders with path parameters, in one pass: a parameter's value is
/// inserted as text and never read as a placeholder itself.
fn fill_params(template: &str, params: &[(String, String)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(rest.get(..open).unwrap_or(""));
        let after = rest.get(open + 1..).unwrap_or("");
        match after.find('}') {
            Some(close) => {
                let name = after.get(..close).unwrap_or("");
                match params.iter().find(|(k, _)| k == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = after.get(close + 1..).unwrap_or("");
            }
            None => {
                out.push_str(rest.get(open..).unwrap_or(""));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// An entity type name, checked.
pub(crate) fn type_name(name: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(name)
        .map_err(|e| format!("`{name}` is not a Cedar entity type name: {e}"))
}

/// The action uid for an action name.
pub(crate) fn action_uid(name: &str) -> Result<EntityUid, String> {
    Ok(EntityUid::from_type_name_and_id(
        type_name("Action")?,
        EntityId::new(name),
    ))
}

/// Names of roles mentioned in policy text (`Role::"admin"`), for explanations.
pub(crate) fn roles_mentioned(text: &str, role_type: &str) -> Vec<String> {
    let needle = format!("{role_type}::\"");
    let mut out: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&needle) {
        rest = rest.get(start + needle.len()..).unwrap_or("");
        if let Some(end) = rest.find('"') {
            let role = rest.get(..end).unwrap_or("").to_owned();
            if !out.contains(&role) {
                out.push(role);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_fill_templates() {
        let params = vec![
            ("id".to_owned(), "42".to_owned()),
            ("org".to_owned(), "acme".to_owned()),
        ];
        assert_eq!(fill_params("{org}/{id}", &params), "acme/42");
        assert_eq!(fill_params("fixed", &params), "fixed");
        let tricky = vec![
            ("org".to_owned(), "{id}".to_owned()),
            ("id".to_owned(), "5".to_owned()),
        ];
        assert_eq!(fill_params("{org}/{id}", &tricky), "{id}/5");
        assert_eq!(fill_params("{unknown}/{id", &params), "{unknown}/{id");
    }

    #[test]
    fn roles_are_found_in_policy_text() {
        let text = r#"permit(principal in Role::"admin", action, resource);
permit(principal, action, resource) when { principal in Role::"viewer" || principal in Role::"admin" };"#;
        assert_eq!(
            roles_mentioned(text, "Role"),
            vec!["admin".to_owned(), "viewer".to_owned()]
        );
    }

    mod index_property {
        use std::collections::{BTreeMap, HashMap};
        use std::sync::Arc;

        use proptest::prelude::*;

        use super::super::context::{ContextBuilder, Reads};
        use super::super::*;
        use crate::identity::{CredentialKind, Identity};

        const ENTITIES: &str = r#"[
          { "uid": { "type": "Role", "id": "r0" }, "attrs": {}, "parents": [] },
          { "uid": { "type": "Role", "id": "r1" }, "attrs": {}, "parents": [{ "type": "Role", "id": "r0" }] },
          { "uid": { "type": "Role", "id": "r2" }, "attrs": {}, "parents": [{ "type": "Role", "id": "r1" }] },
          { "uid": { "type": "Folder", "id": "f0" }, "attrs": {}, "parents": [] },
          { "uid": { "type": "Folder", "id": "f1" }, "attrs": {}, "parents": [{ "type": "Folder", "id": "f0" }] },
          { "uid": { "type": "Doc", "id": "d0" }, "attrs": { "sens": 1, "name": "n0" }, "parents": [{ "type": "Folder", "id": "f1" }] },
          { "uid": { "type": "Doc", "id": "d1" }, "attrs": { "sens": 4, "name": "n1", "owner": { "__entity": { "type": "User", "id": "u0" } } }, "parents": [{ "type": "Folder", "id": "f0" }] },
          { "uid": { "type": "Doc", "id": "d2" }, "attrs": { "sens": "high" }, "parents": [] },
          { "uid": { "type": "User", "id": "u1" }, "attrs": { "sens": 2, "dept": "d0" }, "parents": [{ "type": "Role", "id": "r2" }] }
        ]"#;

        fn principal_scope() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("principal".to_owned()),
                (0..4u8).prop_map(|k| format!("principal in Role::\"r{k}\"")),
                (0..3u8).prop_map(|k| format!("principal == User::\"u{k}\"")),
                Just("principal is User".to_owned()),
                (0..3u8).prop_map(|k| format!("principal is User in Role::\"r{k}\"")),
            ]
        }

        fn action_scope() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("action".to_owned()),
                Just("action == Action::\"read\"".to_owned()),
                Just("action == Action::\"write\"".to_owned()),
                Just("action in [Action::\"read\", Action::\"write\"]".to_owned()),
            ]
        }

        fn resource_scope() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("resource".to_owned()),
                (0..4u8).prop_map(|k| format!("resource == Doc::\"d{k}\"")),
                (0..2u8).prop_map(|k| format!("resource in Folder::\"f{k}\"")),
                (0..3u8).prop_map(|k| format!("resource in Role::\"r{k}\"")),
                Just("resource is User".to_owned()),
                Just("resource is Doc".to_owned()),
                Just("resource is Folder".to_owned()),
                (0..2u8).prop_map(|k| format!("resource is Doc in Folder::\"f{k}\"")),
            ]
        }

        /// Tests the index knows, tests it does not, and tests that error.
        fn atom() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("principal has dept".to_owned()),
                (0..3u8).prop_map(|k| format!("principal.dept == \"d{k}\"")),
                (0..3i64).prop_map(|k| format!("principal.dept == {k}")),
                (0..4i64).prop_map(|k| format!("principal.level > {k}")),
                (0..4i64).prop_map(|k| format!("principal.level <= {k}")),
                Just("principal.flag == true".to_owned()),
                Just("principal.source == \"idp\"".to_owned()),
                Just("resource has sens".to_owned()),
                Just("resource has owner".to_owned()),
                (0..5i64).prop_map(|k| format!("resource.sens >= {k}")),
                (0..5i64).prop_map(|k| format!("resource.sens < {k}")),
                (0..2u8).prop_map(|k| format!("resource.name == \"n{k}\"")),
                (0..3u8).prop_map(|k| format!("context.scopes.contains(\"s{k}\")")),
                (0..3u8).prop_map(|k| format!("context.ip.isInRange(ip(\"10.{k}.0.0/16\"))")),
                Just("context.ip.isInRange(ip(\"2001:db8::/32\"))".to_owned()),
                (0..3u8).prop_map(|k| format!("principal in Role::\"r{k}\"")),
                Just("context.method == \"GET\"".to_owned()),
                Just("resource.owner == principal".to_owned()),
            ]
        }

        fn policy() -> impl Strategy<Value = String> {
            (
                any::<bool>(),
                principal_scope(),
                action_scope(),
                resource_scope(),
                proptest::collection::vec(atom(), 0..4),
                proptest::option::of(atom()),
            )
                .prop_map(|(permit, p, a, r, when, unless)| {
                    let mut text = format!(
                        "{}({p}, {a}, {r})",
                        if permit { "permit" } else { "forbid" }
                    );
                    if !when.is_empty() {
                        text.push_str(&format!(" when {{ {} }}", when.join(" && ")));
                    }
                    if let Some(u) = unless {
                        text.push_str(&format!(" unless {{ {u} }}"));
                    }
                    text.push(';');
                    text
                })
        }

        fn attribute() -> impl Strategy<Value = Option<serde_json::Value>> {
            prop_oneof![
                Just(None),
                (0..3u8).prop_map(|k| Some(serde_json::json!(format!("d{k}")))),
                (0..4i64).prop_map(|k| Some(serde_json::json!(k))),
                Just(Some(serde_json::json!(true))),
                Just(Some(serde_json::json!(["d0"]))),
            ]
        }

        fn authorization(text: &str) -> Authorization {
            let policies = PolicySet::from_str(text).unwrap();
            let all = Entities::from_json_str(ENTITIES, None).unwrap();
            let mut authz = Authorization {
                entities: StaticEntities::new(all, [&policies]),
                context: ContextBuilder::new(Reads::of([&policies]), jiff::tz::TimeZone::UTC)
                    .unwrap(),
                policies,
                shadow: None,
                schema: None,
                principal_type: type_name("User").unwrap(),
                role_type: type_name("Role").unwrap(),
                roles_in_policies: Vec::new(),
                slices: UidMap::default(),
            };
            let actions = [action_uid("read").unwrap(), action_uid("write").unwrap()];
            authz.slice(actions.iter());
            authz
        }

        /// Cedar's own answer, over every policy, for the same request and entities.
        fn plain(authz: &Authorization, input: &AuthzInput<'_>) -> Verdict {
            // The whole file, the principal upserted, the hierarchy computed by Cedar.
            let uid = |t: &str, id: &str| {
                EntityUid::from_type_name_and_id(type_name(t).unwrap(), EntityId::new(id))
            };
            let resource = authz.resource(input);
            let principal = uid("User", &input.identity.subject);
            let Ok(request) = authz.request(input, principal, resource.clone()) else {
                return Verdict::Errors { errors: vec![] };
            };
            let mut attrs = HashMap::new();
            for (name, value) in &input.identity.attributes {
                attrs.insert(name.clone(), context::json_to_expr(value).unwrap());
            }
            attrs.insert(
                "source".to_owned(),
                cedar_policy::RestrictedExpression::new_string(input.identity.source.to_string()),
            );
            let parents = input
                .identity
                .roles
                .iter()
                .map(|r| uid("Role", r))
                .collect();
            let principal =
                cedar_policy::Entity::new(uid("User", &input.identity.subject), attrs, parents)
                    .unwrap();
            let entities = Entities::from_json_str(ENTITIES, None)
                .unwrap()
                .upsert_entities([principal], None)
                .unwrap();
            authz.run(&authz.policies, &request, &entities)
        }

        fn sorted(verdict: Verdict) -> Verdict {
            match verdict {
                Verdict::Allow { mut policies } => {
                    policies.sort();
                    Verdict::Allow { policies }
                }
                Verdict::Forbidden { mut policies } => {
                    policies.sort();
                    Verdict::Forbidden { policies }
                }
                Verdict::Errors { mut errors } => {
                    errors.sort();
                    Verdict::Errors { errors }
                }
                other => other,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(300))]
            /// The indexed evaluation decides every request exactly as Cedar does over the
            /// whole set: the same decision, the same policies, the same errors.
            #[test]
            fn indexed_decisions_are_cedars(
                policies in proptest::collection::vec(policy(), 1..30),
                roles in proptest::collection::vec(0..4u8, 0..3),
                subject in 0..3u8,
                dept in attribute(),
                level in attribute(),
                flag in attribute(),
                scopes in proptest::collection::vec(0..3u8, 0..3),
                client in prop_oneof![
                    (0..4u8, any::<u8>()).prop_map(|(a, b)| format!("10.{a}.{b}.1")),
                    Just("192.0.2.1".to_owned()),
                    Just("2001:db8::5".to_owned()),
                    Just("2001:db9::5".to_owned()),
                ],
                resource in prop_oneof![
                    (0..4u8).prop_map(|k| ("Doc", format!("d{k}"))),
                    (0..2u8).prop_map(|k| ("Folder", format!("f{k}"))),
                    // The principal itself, or another user (one of the file).
                    (0..3u8).prop_map(|k| ("User", format!("u{k}"))),
                ],
                write in any::<bool>(),
            ) {
                let text = policies.join("\n");
                let authz = authorization(&text);
                let mut attributes = BTreeMap::new();
                for (name, value) in [("dept", dept), ("level", level), ("flag", flag)] {
                    if let Some(v) = value {
                        attributes.insert(name.to_owned(), v);
                    }
                }
                let identity = Identity {
                    subject: format!("u{subject}"),
                    source: Arc::from("idp"),
                    kind: CredentialKind::Bearer,
                    roles: roles.iter().map(|r| format!("r{r}")).collect(),
                    scopes: scopes.iter().map(|s| format!("s{s}")).collect(),
                    token_id: None,
                    expires_at: None,
                    issued_at: None,
                    attributes,
                };
                let target = RouteTarget {
                    action: action_uid(if write { "write" } else { "read" }).unwrap(),
                    resource_type: type_name(resource.0).unwrap(),
                    resource_id: resource.1.clone(),
                };
                let input = AuthzInput {
                    identity: &identity,
                    target: &target,
                    params: &[],
                    client: client.parse().unwrap(),
                    method: "GET",
                    path: "/x",
                    now_ms: 1_796_173_323_456,
                };
                let indexed = sorted(authz.evaluate(&input).0);
                let cedar = sorted(plain(&authz, &input));
                prop_assert_eq!(indexed, cedar, "policies:\n{}", text);
            }
        }
    }
}
