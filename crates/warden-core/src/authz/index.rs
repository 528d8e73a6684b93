//! The policies a request evaluates: those that can apply to it.
//!
//! Cedar evaluates every policy of the set it is given. A policy's condition is its scope
//! (`principal in Role::"a"`, `resource is Document`) and then its `when` conditions,
//! evaluated left to right with `&&` short-circuiting: a policy whose scope, or whose
//! leading test, is false for a request is false before anything else of it is read, so it
//! is neither satisfied nor in error. Leaving it out of the set changes no decision, no
//! reason and no error. This module finds those policies, with tests that are exact and
//! cheap, and otherwise keeps the policy (a test it cannot decide keeps it):
//!
//! - the principal and resource scopes (`==`, `in`, `is`, `is … in`), against the
//!   principal's roles and their ancestors, and the resource's ancestors in the entities
//!   file (as Cedar's own policy slicing does with scopes);
//! - the leading conjuncts of the first `when`, while they are of these forms:
//!   `principal has a`, `resource has a`, `principal.a == literal` (and `resource.a`),
//!   `principal.a < n` (`<=`, `>`, `>=`, on Longs), `context.scopes.contains("s")` and
//!   `context.ip.isInRange(ip("cidr"))`.
//!
//! The action scope is handled before, by the per-action slices. The selected sets are
//! kept per thread, by the set of policies they hold: requests alike share one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{
    Entity, EntityTypeName, EntityUid, EvalResult, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};
use serde_json::Value as Json;

use super::UidSet;
use crate::identity::Identity;

/// A scope test on the principal or the resource. An `in` names its entity by a number
/// of the index, under which a request remembers the answer (many policies name one role).
#[derive(Debug, Clone)]
enum Scope {
    Any,
    Eq(EntityUid),
    In(EntityUid, usize),
    Is(EntityTypeName),
    IsIn(EntityTypeName, EntityUid, usize),
}

impl Scope {
    fn of(
        constraint: (Option<EntityTypeName>, Option<EntityUid>, bool),
        number: &mut impl FnMut(&EntityUid) -> usize,
    ) -> Self {
        match constraint {
            (None, None, _) => Self::Any,
            (None, Some(e), false) => Self::Eq(e),
            (None, Some(e), true) => {
                let n = number(&e);
                Self::In(e, n)
            }
            (Some(t), None, _) => Self::Is(t),
            (Some(t), Some(e), _) => {
                let n = number(&e);
                Self::IsIn(t, e, n)
            }
        }
    }

    /// `known[n]`: 0 not yet asked, 1 false, 2 true.
    fn holds(&self, uid: &EntityUid, ancestors: &UidSet, known: &mut [u8]) -> bool {
        let mut is_in = |e: &EntityUid, n: usize| match known.get(n).copied() {
            Some(2) => true,
            Some(1) => false,
            _ => {
                let answer = e == uid || ancestors.contains(e);
                if let Some(slot) = known.get_mut(n) {
                    *slot = if answer { 2 } else { 1 };
                }
                answer
            }
        };
        match self {
            Self::Any => true,
            Self::Eq(e) => e == uid,
            Self::In(e, n) => is_in(e, *n),
            Self::Is(t) => uid.type_name() == t,
            Self::IsIn(t, e, n) => uid.type_name() == t && is_in(e, *n),
        }
    }
}

/// What one request's selection has looked up already.
struct Memo {
    principal_in: Vec<u8>,
    resource_in: Vec<u8>,
    attrs: Vec<(On, String, Option<Attr>)>,
}

impl Memo {
    fn attr(&mut self, facts: &Facts<'_>, on: On, name: &str) -> Option<&Attr> {
        let found = self
            .attrs
            .iter()
            .position(|(o, n, _)| *o == on && n == name);
        let at = match found {
            Some(at) => at,
            None => {
                self.attrs.push((on, name.to_owned(), facts.attr(on, name)));
                self.attrs.len() - 1
            }
        };
        self.attrs.get(at).and_then(|(_, _, attr)| attr.as_ref())
    }
}

/// Whose attribute a test reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum On {
    Principal,
    Resource,
}

/// A literal of a test.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    String(String),
    Long(i64),
    Bool(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Lt,
    Le,
    Gt,
    Ge,
}

/// A leading test of a policy's first `when`.
#[derive(Debug, Clone)]
enum Test {
    Has(On, String),
    Eq(On, String, Literal),
    Compare(On, String, Compare, i64),
    HasScope(String),
    InRange(ipnet::IpNet),
}

/// An attribute as the tests see it.
#[derive(Debug, Clone)]
enum Attr {
    Absent,
    String(String),
    Long(i64),
    Bool(bool),
    /// A set, a record, an entity or an extension value: `==` with a literal is false,
    /// a comparison is an error.
    Other,
}

/// What a request offers the tests.
pub(crate) struct Facts<'a> {
    pub identity: &'a Identity,
    pub principal: &'a EntityUid,
    /// The principal's roles and their ancestors.
    pub principal_ancestors: &'a UidSet,
    pub resource: &'a EntityUid,
    pub resource_entity: Option<&'a Entity>,
    pub resource_ancestors: &'a UidSet,
    pub client: IpAddr,
}

impl Facts<'_> {
    /// `None` when the attribute cannot be read exactly (an entity not in the file).
    fn attr(&self, on: On, name: &str) -> Option<Attr> {
        match on {
            On::Principal => {
                // The principal's attributes are the identity's, and `source` (see
                // `entities_for`).
                if name == "source" {
                    return Some(Attr::String(self.identity.source.to_string()));
                }
                Some(match self.identity.attributes.get(name) {
                    None => Attr::Absent,
                    Some(Json::String(s)) => Attr::String(s.clone()),
                    Some(Json::Bool(b)) => Attr::Bool(*b),
                    Some(Json::Number(n)) => Attr::Long(n.as_i64()?),
                    Some(Json::Null) => return None,
                    Some(_) => Attr::Other,
                })
            }
            On::Resource => {
                let entity = self.resource_entity?;
                Some(match entity.attr(name) {
                    None => Attr::Absent,
                    Some(Ok(EvalResult::String(s))) => Attr::String(s),
                    Some(Ok(EvalResult::Long(n))) => Attr::Long(n),
                    Some(Ok(EvalResult::Bool(b))) => Attr::Bool(b),
                    Some(Ok(_)) => Attr::Other,
                    Some(Err(_)) => return None,
                })
            }
        }
    }
}

impl Test {
    /// `Some(value)` when the test is decided exactly and without error; `None` otherwise.
    fn eval(&self, facts: &Facts<'_>, memo: &mut Memo) -> Option<bool> {
        match self {
            Self::Has(on, name) => Some(!matches!(memo.attr(facts, *on, name)?, Attr::Absent)),
            Self::Eq(on, name, literal) => match (memo.attr(facts, *on, name)?, literal) {
                (Attr::Absent, _) => None, // Cedar: an error
                (Attr::String(a), Literal::String(b)) => Some(a == b),
                (Attr::Long(a), Literal::Long(b)) => Some(a == b),
                (Attr::Bool(a), Literal::Bool(b)) => Some(a == b),
                // Values of different types are not equal, without error.
                _ => Some(false),
            },
            Self::Compare(on, name, op, n) => match memo.attr(facts, *on, name)? {
                &Attr::Long(a) => Some(match op {
                    Compare::Lt => a < *n,
                    Compare::Le => a <= *n,
                    Compare::Gt => a > *n,
                    Compare::Ge => a >= *n,
                }),
                _ => None, // absent or not a Long: an error
            },
            Self::HasScope(scope) => Some(facts.identity.scopes.iter().any(|s| s == scope)),
            Self::InRange(net) => Some(net.contains(&facts.client)),
        }
    }
}

/// One policy, with what can set it aside.
#[derive(Debug)]
struct Entry {
    policy: Policy,
    principal: Scope,
    resource: Scope,
    tests: Vec<Test>,
    /// No `when` or `unless`: the scope alone decides it (its action scope already held).
    unconditional: bool,
    permit: bool,
}

/// What the index makes of a policy for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// False for the request, without error.
    Skipped,
    /// Only Cedar can say.
    Evaluated,
    /// True for the request, without error: its scope holds and it has no condition.
    Satisfied,
}

impl Entry {
    fn new(
        policy: &Policy,
        ip: &cedar_policy_core::ast::ExtensionFunction,
        principals: &mut impl FnMut(&EntityUid) -> usize,
        resources: &mut impl FnMut(&EntityUid) -> usize,
    ) -> Self {
        let principal = Scope::of(
            match policy.principal_constraint() {
                PrincipalConstraint::Any => (None, None, false),
                PrincipalConstraint::Eq(e) => (None, Some(e), false),
                PrincipalConstraint::In(e) => (None, Some(e), true),
                PrincipalConstraint::Is(t) => (Some(t), None, false),
                PrincipalConstraint::IsIn(t, e) => (Some(t), Some(e), true),
            },
            principals,
        );
        let resource = Scope::of(
            match policy.resource_constraint() {
                ResourceConstraint::Any => (None, None, false),
                ResourceConstraint::Eq(e) => (None, Some(e), false),
                ResourceConstraint::In(e) => (None, Some(e), true),
                ResourceConstraint::Is(t) => (Some(t), None, false),
                ResourceConstraint::IsIn(t, e) => (Some(t), Some(e), true),
            },
            resources,
        );
        let json = policy.to_json().ok();
        let tests = json
            .as_ref()
            .map(|json| leading_tests(json, ip))
            .unwrap_or_default();
        let unconditional = json
            .as_ref()
            .and_then(|j| j.get("conditions"))
            .and_then(Json::as_array)
            .is_some_and(Vec::is_empty);
        Self {
            policy: policy.clone(),
            principal,
            resource,
            tests,
            unconditional,
            permit: policy.effect() == cedar_policy::Effect::Permit,
        }
    }

    /// What the policy is for the request.
    fn fate(&self, facts: &Facts<'_>, memo: &mut Memo) -> Fate {
        if !self.principal.holds(
            facts.principal,
            facts.principal_ancestors,
            &mut memo.principal_in,
        ) || !self.resource.holds(
            facts.resource,
            facts.resource_ancestors,
            &mut memo.resource_in,
        ) {
            return Fate::Skipped;
        }
        if self.unconditional {
            return Fate::Satisfied;
        }
        for test in &self.tests {
            match test.eval(facts, memo) {
                Some(true) => {}
                Some(false) => return Fate::Skipped,
                None => return Fate::Evaluated,
            }
        }
        Fate::Evaluated
    }
}

/// The tests at the head of a policy's first condition, if it is a `when`.
fn leading_tests(policy: &Json, ip: &cedar_policy_core::ast::ExtensionFunction) -> Vec<Test> {
    let Some(first) = policy
        .get("conditions")
        .and_then(Json::as_array)
        .and_then(|c| c.first())
    else {
        return Vec::new();
    };
    if first.get("kind").and_then(Json::as_str) != Some("when") {
        return Vec::new();
    }
    let Some(body) = first.get("body") else {
        return Vec::new();
    };
    let mut conjuncts = Vec::new();
    flatten_and(body, &mut conjuncts);
    conjuncts
        .into_iter()
        .map_while(|c| test_of(c, ip))
        .collect()
}

/// `a && b && c` (parsed `(a && b) && c`) as `[a, b, c]`, in evaluation order.
fn flatten_and<'a>(expr: &'a Json, out: &mut Vec<&'a Json>) {
    match expr.get("&&") {
        Some(and) => {
            if let (Some(left), Some(right)) = (and.get("left"), and.get("right")) {
                flatten_and(left, out);
                flatten_and(right, out);
            } else {
                out.push(expr);
            }
        }
        None => out.push(expr),
    }
}

/// `{"Var": name}`.
fn is_var(expr: &Json, name: &str) -> bool {
    expr.get("Var").and_then(Json::as_str) == Some(name)
}

/// `principal.a` or `resource.a`.
fn attribute_of(expr: &Json) -> Option<(On, String)> {
    let access = expr.get(".")?;
    let left = access.get("left")?;
    let on = if is_var(left, "principal") {
        On::Principal
    } else if is_var(left, "resource") {
        On::Resource
    } else {
        return None;
    };
    Some((on, access.get("attr")?.as_str()?.to_owned()))
}

/// `context.name`.
fn is_context_key(expr: &Json, name: &str) -> bool {
    expr.get(".").is_some_and(|access| {
        access.get("left").is_some_and(|l| is_var(l, "context"))
            && access.get("attr").and_then(Json::as_str) == Some(name)
    })
}

fn literal_of(expr: &Json) -> Option<Literal> {
    match expr.get("Value")? {
        Json::String(s) => Some(Literal::String(s.clone())),
        Json::Bool(b) => Some(Literal::Bool(*b)),
        Json::Number(n) => n.as_i64().map(Literal::Long),
        _ => None,
    }
}

fn test_of(expr: &Json, ip: &cedar_policy_core::ast::ExtensionFunction) -> Option<Test> {
    let map = expr.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (op, args) = map.iter().next()?;
    match op.as_str() {
        "has" => {
            let left = args.get("left")?;
            let attr = args.get("attr")?.as_str()?.to_owned();
            if is_var(left, "principal") {
                Some(Test::Has(On::Principal, attr))
            } else if is_var(left, "resource") {
                Some(Test::Has(On::Resource, attr))
            } else {
                None
            }
        }
        "==" => {
            let (left, right) = (args.get("left")?, args.get("right")?);
            let ((on, attr), literal) = match (attribute_of(left), literal_of(right)) {
                (Some(a), Some(l)) => (a, l),
                _ => (attribute_of(right)?, literal_of(left)?),
            };
            Some(Test::Eq(on, attr, literal))
        }
        "<" | "<=" | ">" | ">=" => {
            let (on, attr) = attribute_of(args.get("left")?)?;
            let Literal::Long(n) = literal_of(args.get("right")?)? else {
                return None;
            };
            let compare = match op.as_str() {
                "<" => Compare::Lt,
                "<=" => Compare::Le,
                ">" => Compare::Gt,
                _ => Compare::Ge,
            };
            Some(Test::Compare(on, attr, compare, n))
        }
        "contains" => {
            if !is_context_key(args.get("left")?, "scopes") {
                return None;
            }
            match literal_of(args.get("right")?)? {
                Literal::String(s) => Some(Test::HasScope(s)),
                _ => None,
            }
        }
        "isInRange" => {
            let [address, range] = args.as_array()?.as_slice() else {
                return None;
            };
            if !is_context_key(address, "ip") {
                return None;
            }
            let [text] = range.get("ip")?.as_array()?.as_slice() else {
                return None;
            };
            let text = text.get("Value")?.as_str()?;
            in_range_test(text, ip)
        }
        _ => None,
    }
}

/// `ip(text)` as a range, only where warden's reading of it is Cedar's: Cedar must accept
/// it (a literal it refuses is an error at evaluation, which must stay), and the range
/// must contain, for Cedar too, its first and last address and nothing just outside.
fn in_range_test(text: &str, ip: &cedar_policy_core::ast::ExtensionFunction) -> Option<Test> {
    use cedar_policy_core::ast::{PartialValue, Value};
    let net: ipnet::IpNet = text
        .parse()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(ipnet::IpNet::from))?;
    let cedar = |s: String| match ip.call(&[Value::from(smol_str::SmolStr::from(s))]) {
        Ok(PartialValue::Value(v)) => Some(v),
        _ => None,
    };
    let range = cedar(text.to_owned())?;
    let is_in_range = super::context::extension("isInRange").ok()?;
    let first = net.network();
    let last = net.broadcast();
    let outside = [step(first, false), step(last, true)];
    let in_range = |address: IpAddr| -> Option<bool> {
        let value = cedar(address.to_string())?;
        match is_in_range.call(&[value, range.clone()]).ok()? {
            PartialValue::Value(v) => match v.value_kind() {
                cedar_policy_core::ast::ValueKind::Lit(cedar_policy_core::ast::Literal::Bool(
                    b,
                )) => Some(*b),
                _ => None,
            },
            PartialValue::Residual(_) => None,
        }
    };
    let agrees = in_range(first)? && in_range(last)?;
    let outside_agree = outside
        .into_iter()
        .flatten()
        .filter(|a| !net.contains(a))
        .all(|a| in_range(a) == Some(false));
    (agrees && outside_agree).then_some(Test::InRange(net))
}

/// The next or previous address, if any.
fn step(address: IpAddr, up: bool) -> Option<IpAddr> {
    match address {
        IpAddr::V4(a) => {
            let n = u32::from(a);
            let n = if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            };
            Some(IpAddr::V4(n.into()))
        }
        IpAddr::V6(a) => {
            let n = u128::from(a);
            let n = if up {
                n.checked_add(1)?
            } else {
                n.checked_sub(1)?
            };
            Some(IpAddr::V6(n.into()))
        }
    }
}

/// A set of policies (one action's slice), indexed.
pub(crate) struct IndexedSet {
    /// The whole set for Cedar, when the index can decide no policy.
    all: Arc<Selection>,
    entries: Vec<Entry>,
    /// How many entities principal and resource `in` scopes name.
    scope_entities: (usize, usize),
    /// Whether any entry can be set aside at all (otherwise `all` is always the answer).
    selective: bool,
    id: u64,
}

impl std::fmt::Debug for IndexedSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexedSet")
            .field("policies", &self.entries.len())
            .field("selective", &self.selective)
            .finish_non_exhaustive()
    }
}

/// The policies of one request: those Cedar must evaluate, and those the index found
/// satisfied (by their scope alone), which Cedar would have found satisfied too.
#[derive(Debug)]
pub(crate) struct Selection {
    pub cedar: Arc<PolicySet>,
    pub satisfied_permits: Vec<String>,
    pub satisfied_forbids: Vec<String>,
}

/// Per thread: recent selections, by index and by each policy's fate.
type Selected = foldhash::HashMap<(u64, Vec<u64>), Arc<Selection>>;

thread_local! {
    static SELECTED: RefCell<Selected> = RefCell::new(Selected::default());
}

/// At most this many selections are kept per thread.
const MAX_SELECTED: usize = 256;

impl IndexedSet {
    /// Index `set`.
    ///
    /// # Errors
    /// When Cedar's `ip` extension is missing.
    pub fn new(set: PolicySet) -> Result<Self, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        let ip = super::context::extension("ip")?;
        let (mut principals, mut resources) = (HashMap::new(), HashMap::new());
        let number = |numbers: &mut HashMap<EntityUid, usize>, uid: &EntityUid| {
            let next = numbers.len();
            *numbers.entry(uid.clone()).or_insert(next)
        };
        let entries: Vec<Entry> = set
            .policies()
            .map(|p| {
                Entry::new(p, ip, &mut |uid| number(&mut principals, uid), &mut |uid| {
                    number(&mut resources, uid)
                })
            })
            .collect();
        let selective = entries.iter().any(|e| {
            !matches!(e.principal, Scope::Any)
                || !matches!(e.resource, Scope::Any)
                || !e.tests.is_empty()
                || e.unconditional
        });
        let all = Arc::new(Selection {
            cedar: Arc::new(set),
            satisfied_permits: Vec::new(),
            satisfied_forbids: Vec::new(),
        });
        Ok(Self {
            all,
            entries,
            scope_entities: (principals.len(), resources.len()),
            selective,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The policies of a request with these facts.
    pub fn select(&self, facts: &Facts<'_>) -> Arc<Selection> {
        if !self.selective {
            return Arc::clone(&self.all);
        }
        // Two bits per policy: evaluated, satisfied (neither: skipped).
        let mut bits = vec![0u64; (2 * self.entries.len()).div_ceil(64)];
        let mut evaluated = 0;
        let mut memo = Memo {
            principal_in: vec![0; self.scope_entities.0],
            resource_in: vec![0; self.scope_entities.1],
            attrs: Vec::new(),
        };
        for (i, entry) in self.entries.iter().enumerate() {
            let bit = match entry.fate(facts, &mut memo) {
                Fate::Skipped => continue,
                Fate::Evaluated => {
                    evaluated += 1;
                    2 * i
                }
                Fate::Satisfied => 2 * i + 1,
            };
            if let Some(word) = bits.get_mut(bit / 64) {
                *word |= 1 << (bit % 64);
            }
        }
        if evaluated == self.entries.len() {
            return Arc::clone(&self.all);
        }
        let key = (self.id, bits);
        if let Some(selection) = SELECTED.with(|s| s.borrow().get(&key).cloned()) {
            return selection;
        }
        let set = |bit: usize| {
            key.1
                .get(bit / 64)
                .is_some_and(|w| w & (1 << (bit % 64)) != 0)
        };
        let mut cedar = PolicySet::new();
        let (mut satisfied_permits, mut satisfied_forbids) = (Vec::new(), Vec::new());
        for (i, entry) in self.entries.iter().enumerate() {
            // Ids are unique in the source set; a failure keeps the whole set.
            if set(2 * i) && cedar.add(entry.policy.clone()).is_err() {
                return Arc::clone(&self.all);
            }
            if set(2 * i + 1) {
                let id = entry.policy.id().to_string();
                if entry.permit {
                    satisfied_permits.push(id);
                } else {
                    satisfied_forbids.push(id);
                }
            }
        }
        let selection = Arc::new(Selection {
            cedar: Arc::new(cedar),
            satisfied_permits,
            satisfied_forbids,
        });
        SELECTED.with(|s| {
            let mut selected = s.borrow_mut();
            if selected.len() >= MAX_SELECTED {
                selected.clear();
            }
            selected.insert(key, Arc::clone(&selection));
        });
        selection
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn entry(text: &str) -> Entry {
        let policy = Policy::from_str(text).unwrap();
        let ip = super::super::context::extension("ip").unwrap();
        let mut n = 0;
        let mut number = |_: &EntityUid| {
            n += 1;
            n
        };
        let mut other = |_: &EntityUid| 0;
        Entry::new(&policy, ip, &mut number, &mut other)
    }

    #[test]
    fn each_form_of_leading_test_is_recognised() {
        let cases = [
            (
                r#"permit(principal, action, resource) when { principal has department && principal.department == "d1" && resource.level <= 3 && context.local.hour > 8 };"#,
                3,
            ),
            (
                r#"permit(principal, action, resource) when { "d1" == principal.department };"#,
                1,
            ),
            (
                r#"permit(principal, action, resource) when { resource has level && resource.level > 3 && !(principal in Role::"admin") };"#,
                2,
            ),
            (
                r#"permit(principal, action, resource) when { context.scopes.contains("s2") && principal.flag == true };"#,
                2,
            ),
            (
                r#"forbid(principal, action, resource) when { context.ip.isInRange(ip("10.1.0.0/16")) };"#,
                1,
            ),
            (
                r#"forbid(principal, action, resource) when { context.ip.isInRange(ip("2001:db8::/32")) && principal.n >= 2 };"#,
                2,
            ),
            // An `unless` first, another variable, or a literal Cedar refuses: no test.
            (
                r#"forbid(principal, action, resource) unless { principal has department };"#,
                0,
            ),
            (
                r#"forbid(principal, action, resource) when { context.method == "GET" };"#,
                0,
            ),
            (
                r#"forbid(principal, action, resource) when { context.ip.isInRange(ip("10.01.0.0/16")) };"#,
                0,
            ),
        ];
        for (text, tests) in cases {
            assert_eq!(
                entry(text).tests.len(),
                tests,
                "{text}: {:?}",
                entry(text).tests
            );
        }
        let scoped =
            entry(r#"permit(principal in Role::"a", action, resource is Doc in Folder::"f");"#);
        assert!(matches!(scoped.principal, Scope::In(..)));
        assert!(matches!(scoped.resource, Scope::IsIn(..)));
    }

    /// Not vacuous: a request evaluates only the policies that can apply to it.
    #[test]
    fn a_request_evaluates_only_what_can_apply() {
        let text = r#"
            permit(principal in Role::"viewer", action, resource);
            permit(principal in Role::"admin", action, resource);
            permit(principal, action, resource is Doc) when { principal has dept && principal.dept == "d1" };
            permit(principal, action, resource is Doc) when { principal has dept && principal.dept == "d2" };
            forbid(principal, action, resource) when { context.ip.isInRange(ip("10.0.0.0/8")) };
            forbid(principal, action, resource) when { context.scopes.contains("banned") };
            forbid(principal, action, resource) when { context.method == "DELETE" };
        "#;
        let set = IndexedSet::new(PolicySet::from_str(text).unwrap()).unwrap();
        let identity = Identity {
            subject: "alice".into(),
            source: "idp".into(),
            kind: crate::identity::CredentialKind::Bearer,
            roles: vec!["viewer".into()],
            scopes: vec!["read".into()],
            token_id: None,
            expires_at: None,
            issued_at: None,
            attributes: [("dept".to_owned(), serde_json::json!("d1"))].into(),
        };
        let uid = |s: &str| EntityUid::from_str(s).unwrap();
        let principal = uid(r#"User::"alice""#);
        let resource = uid(r#"Doc::"x""#);
        let roles: UidSet = [uid(r#"Role::"viewer""#)].into_iter().collect();
        let none = UidSet::default();
        let facts = |client: &str| Facts {
            identity: &identity,
            principal: &principal,
            principal_ancestors: &roles,
            resource: &resource,
            resource_entity: None,
            resource_ancestors: &none,
            client: client.parse().unwrap(),
        };
        // The viewer grant is satisfied by its scope; Cedar evaluates dept d1 and the
        // forbid no test can decide.
        let selection = set.select(&facts("192.0.2.1"));
        assert_eq!(selection.cedar.policies().count(), 2);
        assert_eq!(selection.satisfied_permits.len(), 1);
        assert!(selection.satisfied_forbids.is_empty());
        // From 10/8 the address forbid can apply too; the same selection again is shared.
        let first = set.select(&facts("10.1.2.3"));
        assert_eq!(first.cedar.policies().count(), 3);
        assert!(Arc::ptr_eq(&first, &set.select(&facts("10.9.9.9"))));
    }
}
