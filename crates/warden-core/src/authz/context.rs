//! The Cedar context of a request. Cedar has no clock: warden passes the time as a
//! `datetime`, and the local hour, minute and day of week for the configured time zone.
//!
//! ```text
//! context = {
//!   ip: ipaddr,                 // the client address
//!   now: datetime,              // UTC
//!   local: { hour: Long, minute: Long, day_of_week: String, weekday: Long, date: String },
//!   scopes: Set<String>,
//!   method: String,
//!   path: String,               // normalized
//!   params: { <name>: String }, // path parameters
//!   auth_source: String,
//! }
//! ```
//!
//! Only the keys some policy reads are built: a policy reaches the context only through
//! `context.key`, `context["key"]` or `context has key`, so a key no policy names cannot
//! change a decision. A policy that uses `context` any other way gets every key.
//!
//! The context is built from evaluated Cedar values, not from expressions. Cedar's public
//! API only takes a context as expressions (`RestrictedExpression`), which it evaluates on
//! every request, and its `ip(…)` and `datetime(…)` constructors parse their function name
//! with the full policy grammar each time one is made: under load that was most of the
//! authorization stage. The values come from Cedar's own core crate (the same version the
//! `cedar-policy` crate uses), the extension constructors are looked up once, and the
//! values of the current client address, millisecond and second are kept per thread.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cedar_policy::{Context, PolicySet};
use cedar_policy_core::ast::{self, ExtensionFunction, Name, PartialValue, Value};
use cedar_policy_core::extensions::Extensions;
use ref_cast::RefCast;
use smol_str::SmolStr;

use super::AuthzInput;

/// The top-level keys of the context, in the order of the documentation.
const KEYS: [&str; 8] = [
    "ip",
    "now",
    "local",
    "scopes",
    "method",
    "path",
    "params",
    "auth_source",
];

/// Which context keys the policies read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reads([bool; KEYS.len()]);

impl Reads {
    /// Every key.
    pub fn all() -> Self {
        Self([true; KEYS.len()])
    }

    /// The keys `policies` read (every key when one uses `context` as a whole).
    pub fn of<'a>(policies: impl IntoIterator<Item = &'a PolicySet>) -> Self {
        let mut reads = Self([false; KEYS.len()]);
        for policy in policies.into_iter().flat_map(PolicySet::policies) {
            let whole = match policy.to_json() {
                Ok(json) => reads.scan(&json),
                Err(_) => true,
            };
            if whole {
                return Self::all();
            }
        }
        reads
    }

    fn reads(&self, key: &str) -> bool {
        KEYS.iter()
            .position(|k| *k == key)
            .and_then(|i| self.0.get(i).copied())
            .unwrap_or(false)
    }

    fn mark(&mut self, key: &str) {
        if let Some(slot) = KEYS
            .iter()
            .position(|k| *k == key)
            .and_then(|i| self.0.get_mut(i))
        {
            *slot = true;
        }
    }

    /// Mark the keys read in a policy's JSON form; `true` when `context` is used other
    /// than through one of its attributes.
    fn scan(&mut self, json: &serde_json::Value) -> bool {
        match json {
            serde_json::Value::Object(map) => {
                if map.get("Var").and_then(serde_json::Value::as_str) == Some("context") {
                    return true;
                }
                for op in [".", "has"] {
                    if let Some(access) = map.get(op).and_then(serde_json::Value::as_object) {
                        let on_context = access
                            .get("left")
                            .and_then(|l| l.get("Var"))
                            .and_then(serde_json::Value::as_str)
                            == Some("context");
                        if on_context {
                            match access.get("attr").and_then(serde_json::Value::as_str) {
                                Some(attr) => self.mark(attr),
                                None => return true,
                            }
                            return false;
                        }
                    }
                }
                map.values().any(|v| self.scan(v))
            }
            serde_json::Value::Array(items) => items.iter().any(|v| self.scan(v)),
            _ => false,
        }
    }
}

/// Builds the context of each request, for one authorization configuration.
pub(crate) struct ContextBuilder {
    reads: Reads,
    timezone: jiff::tz::TimeZone,
    ip: &'static ExtensionFunction,
    datetime: &'static ExtensionFunction,
    /// Tells this builder's per-thread values from another's (after a reload, say).
    id: u64,
}

impl std::fmt::Debug for ContextBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextBuilder")
            .field("reads", &self.reads)
            .field("timezone", &self.timezone.iana_name())
            .finish_non_exhaustive()
    }
}

/// Per thread: the values of recent client addresses, of the last millisecond and of the
/// last second, for the builder that made them.
#[derive(Default)]
struct Recent {
    ips: HashMap<IpAddr, Value>,
    now: Option<(u64, i64, Value)>,
    local: Option<(u64, i64, Value)>,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::new(Recent::default());
}

/// A function of Cedar's extensions (`ip`, `datetime`, `isInRange`…), looked up once by
/// its callers.
///
/// # Errors
/// When this build of Cedar does not have it.
pub(super) fn extension(name: &str) -> Result<&'static ExtensionFunction, String> {
    let name = Name::parse_unqualified_name(name).map_err(|e| e.to_string())?;
    Extensions::all_available()
        .func(&name)
        .map_err(|e| format!("Cedar has no `{name}` extension: {e}"))
}

/// At most this many client addresses' values are kept per thread.
const MAX_RECENT_IPS: usize = 1024;

impl ContextBuilder {
    /// A builder for requests evaluated against `reads`' keys.
    ///
    /// # Errors
    /// When Cedar's `ip` or `datetime` extension is missing (a build of Cedar without them).
    pub fn new(reads: Reads, timezone: jiff::tz::TimeZone) -> Result<Self, String> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(Self {
            reads,
            timezone,
            ip: extension("ip")?,
            datetime: extension("datetime")?,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The time zone of `context.local`.
    pub fn timezone(&self) -> &jiff::tz::TimeZone {
        &self.timezone
    }

    /// The context of one request.
    ///
    /// # Errors
    /// When a value cannot be made (a time out of Cedar's range).
    pub fn build(&self, input: &AuthzInput<'_>) -> Result<Context, String> {
        let mut attrs: BTreeMap<SmolStr, Value> = BTreeMap::new();
        let string = |s: &str| Value::from(SmolStr::new(s));
        for key in KEYS {
            if !self.reads.reads(key) {
                continue;
            }
            let value = match key {
                "ip" => self.ip_value(input.client)?,
                "now" => self.now_value(input.now_ms)?,
                "local" => self.local_value(input.now_ms)?,
                "scopes" => Value::set(input.identity.scopes.iter().map(|s| string(s)), None),
                "method" => string(input.method),
                "path" => string(input.path),
                "params" => Value::record(
                    input
                        .params
                        .iter()
                        .map(|(k, v)| (SmolStr::new(k), string(v))),
                    None,
                ),
                "auth_source" => string(&input.identity.source),
                _ => continue,
            };
            attrs.insert(SmolStr::new_static(key), value);
        }
        let context = ast::Context::Value(Arc::new(attrs));
        Ok(Context::ref_cast(&context).clone())
    }

    fn construct(&self, function: &ExtensionFunction, text: String) -> Result<Value, String> {
        match function.call(&[Value::from(SmolStr::from(text))]) {
            Ok(PartialValue::Value(value)) => Ok(value),
            Ok(PartialValue::Residual(_)) => Err("a Cedar constructor gave no value".to_owned()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn ip_value(&self, address: IpAddr) -> Result<Value, String> {
        if let Some(value) = RECENT.with(|r| r.borrow().ips.get(&address).cloned()) {
            return Ok(value);
        }
        let value = self.construct(self.ip, address.to_string())?;
        RECENT.with(|r| {
            let mut recent = r.borrow_mut();
            if recent.ips.len() >= MAX_RECENT_IPS {
                recent.ips.clear();
            }
            recent.ips.insert(address, value.clone());
        });
        Ok(value)
    }

    fn now_value(&self, now_ms: i64) -> Result<Value, String> {
        let cached = RECENT.with(|r| match &r.borrow().now {
            Some((id, ms, value)) if *id == self.id && *ms == now_ms => Some(value.clone()),
            _ => None,
        });
        if let Some(value) = cached {
            return Ok(value);
        }
        let timestamp = jiff::Timestamp::from_millisecond(now_ms).map_err(|e| e.to_string())?;
        let text = timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
        let value = self.construct(self.datetime, text)?;
        RECENT.with(|r| r.borrow_mut().now = Some((self.id, now_ms, value.clone())));
        Ok(value)
    }

    /// `context.local`, the same for every millisecond of a second.
    fn local_value(&self, now_ms: i64) -> Result<Value, String> {
        let second = now_ms.div_euclid(1000);
        let cached = RECENT.with(|r| match &r.borrow().local {
            Some((id, s, value)) if *id == self.id && *s == second => Some(value.clone()),
            _ => None,
        });
        if let Some(value) = cached {
            return Ok(value);
        }
        let timestamp = jiff::Timestamp::from_second(second).map_err(|e| e.to_string())?;
        let local = timestamp.to_zoned(self.timezone.clone());
        let weekday = local.weekday();
        let value = Value::record(
            [
                ("hour", Value::from(i64::from(local.hour()))),
                ("minute", Value::from(i64::from(local.minute()))),
                (
                    "day_of_week",
                    Value::from(SmolStr::from(format!("{weekday:?}"))),
                ),
                (
                    "weekday",
                    Value::from(i64::from(weekday.to_monday_one_offset())),
                ),
                ("date", Value::from(SmolStr::from(local.date().to_string()))),
            ],
            None,
        );
        RECENT.with(|r| r.borrow_mut().local = Some((self.id, second, value.clone())));
        Ok(value)
    }
}

/// A JSON claim as a Cedar value: strings, integers, booleans, arrays (sets) and objects
/// (records). Floats and nulls have no Cedar counterpart and are refused.
pub(super) fn json_to_expr(
    value: &serde_json::Value,
) -> Result<cedar_policy::RestrictedExpression, String> {
    use cedar_policy::RestrictedExpression;
    use serde_json::Value as Json;
    Ok(match value {
        Json::String(s) => RestrictedExpression::new_string(s.clone()),
        Json::Bool(b) => RestrictedExpression::new_bool(*b),
        Json::Number(n) => RestrictedExpression::new_long(
            n.as_i64()
                .ok_or_else(|| format!("{n} is not a Cedar Long"))?,
        ),
        Json::Array(items) => RestrictedExpression::new_set(
            items
                .iter()
                .map(json_to_expr)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Json::Object(map) => RestrictedExpression::new_record(
            map.iter()
                .map(|(k, v)| json_to_expr(v).map(|e| (k.clone(), e)))
                .collect::<Result<Vec<_>, _>>()?,
        )
        .map_err(|e| e.to_string())?,
        Json::Null => return Err("null has no Cedar value".to_owned()),
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Authorizer, Decision, Entities, EntityUid, Request, RestrictedExpression};

    use super::*;
    use crate::identity::Identity;

    /// The context as Cedar's public API builds it from expressions: the reference the
    /// built values must equal.
    fn by_expressions(input: &AuthzInput<'_>, tz: &jiff::tz::TimeZone) -> Context {
        let timestamp = jiff::Timestamp::from_millisecond(input.now_ms).unwrap();
        let local = timestamp.to_zoned(tz.clone());
        let weekday = local.weekday();
        let local = RestrictedExpression::new_record([
            (
                "hour".to_owned(),
                RestrictedExpression::new_long(i64::from(local.hour())),
            ),
            (
                "minute".to_owned(),
                RestrictedExpression::new_long(i64::from(local.minute())),
            ),
            (
                "day_of_week".to_owned(),
                RestrictedExpression::new_string(format!("{weekday:?}")),
            ),
            (
                "weekday".to_owned(),
                RestrictedExpression::new_long(i64::from(weekday.to_monday_one_offset())),
            ),
            (
                "date".to_owned(),
                RestrictedExpression::new_string(local.date().to_string()),
            ),
        ])
        .unwrap();
        let params = RestrictedExpression::new_record(
            input
                .params
                .iter()
                .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone()))),
        )
        .unwrap();
        Context::from_pairs([
            (
                "ip".to_owned(),
                RestrictedExpression::new_ip(input.client.to_string()),
            ),
            (
                "now".to_owned(),
                RestrictedExpression::new_datetime(
                    timestamp.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
                ),
            ),
            ("local".to_owned(), local),
            (
                "scopes".to_owned(),
                RestrictedExpression::new_set(
                    input
                        .identity
                        .scopes
                        .iter()
                        .map(|s| RestrictedExpression::new_string(s.clone())),
                ),
            ),
            (
                "method".to_owned(),
                RestrictedExpression::new_string(input.method.to_owned()),
            ),
            (
                "path".to_owned(),
                RestrictedExpression::new_string(input.path.to_owned()),
            ),
            ("params".to_owned(), params),
            (
                "auth_source".to_owned(),
                RestrictedExpression::new_string(input.identity.source.to_string()),
            ),
        ])
        .unwrap()
    }

    fn identity() -> Identity {
        Identity {
            subject: "alice".into(),
            source: "idp".into(),
            kind: crate::identity::CredentialKind::Bearer,
            roles: vec![],
            scopes: vec!["docs:read".into(), "admin".into()],
            token_id: None,
            expires_at: None,
            issued_at: None,
            attributes: std::collections::BTreeMap::new(),
        }
    }

    fn target() -> super::super::RouteTarget {
        super::super::RouteTarget {
            action: super::super::action_uid("read").unwrap(),
            resource_type: super::super::type_name("Doc").unwrap(),
            resource_id: "x".into(),
        }
    }

    /// Policies that read every key, in each way a policy can: each must decide the same
    /// with the built context as with the expressions Cedar's API evaluates.
    const POLICIES: &str = r#"
        @id("ip") permit(principal, action, resource) when { context.ip.isInRange(ip("10.0.0.0/8")) };
        @id("ip-v6") permit(principal, action, resource) when { context.ip.isIpv6() };
        @id("now") permit(principal, action, resource) when { context.now > datetime("2027-01-01") };
        @id("now-ms") permit(principal, action, resource) when { context.now == datetime("2026-12-02T01:02:03.456Z") };
        @id("local") permit(principal, action, resource) when { context.local.hour == 1 && context.local.day_of_week == "Wednesday" && context.local.date == "2026-12-02" };
        @id("weekday") permit(principal, action, resource) when { context["local"].weekday == 3 && context.local.minute == 2 };
        @id("scopes") permit(principal, action, resource) when { context.scopes.contains("admin") };
        @id("method") permit(principal, action, resource) when { context.method == "GET" && context.path like "/docs/*" };
        @id("params") permit(principal, action, resource) when { context.params has id && context.params.id == "7" };
        @id("source") permit(principal, action, resource) when { context.auth_source == "idp" };
        @id("has") forbid(principal, action, resource) when { context has nothing };
        @id("v6-only") permit(principal, action, resource) when { context.ip == ip("2001:db8::1") };
    "#;

    #[test]
    fn built_values_decide_as_evaluated_expressions() {
        let policies = PolicySet::from_str(POLICIES).unwrap();
        let reads = Reads::of([&policies]);
        assert_eq!(reads, Reads::all());
        let tz = jiff::tz::TimeZone::UTC;
        let builder = ContextBuilder::new(reads, tz.clone()).unwrap();
        let identity = identity();
        let target = target();
        let params = vec![("id".to_owned(), "7".to_owned())];
        // 2026-12-02T01:02:03.456Z and a year later.
        for now_ms in [1_796_173_323_456, 1_827_709_323_456, 0] {
            for client in ["10.1.2.3", "192.0.2.1", "2001:db8::1"] {
                let input = AuthzInput {
                    identity: &identity,
                    target: &target,
                    params: &params,
                    client: client.parse().unwrap(),
                    method: "GET",
                    path: "/docs/7",
                    now_ms,
                };
                let built = builder.build(&input).unwrap();
                let expected = by_expressions(&input, &tz);
                for policy in policies.policies() {
                    let mut one = PolicySet::new();
                    one.add(policy.clone()).unwrap();
                    let decide = |context: Context| {
                        let uid = |t: &str, id: &str| {
                            EntityUid::from_str(&format!("{t}::\"{id}\"")).unwrap()
                        };
                        let request = Request::new(
                            uid("User", "alice"),
                            uid("Action", "read"),
                            uid("Doc", "x"),
                            context,
                            None,
                        )
                        .unwrap();
                        let r = Authorizer::new().is_authorized(&request, &one, &Entities::empty());
                        (r.decision(), r.diagnostics().errors().count())
                    };
                    assert_eq!(
                        decide(built.clone()),
                        decide(expected.clone()),
                        "{} at {now_ms} from {client}",
                        policy.id()
                    );
                }
            }
        }
        // Not vacuous: some policies allow, some do not.
        let input = AuthzInput {
            identity: &identity,
            target: &target,
            params: &params,
            client: "10.1.2.3".parse().unwrap(),
            method: "GET",
            path: "/docs/7",
            now_ms: 1_796_173_323_456,
        };
        let r = Authorizer::new().is_authorized(
            &Request::new(
                EntityUid::from_str(r#"User::"alice""#).unwrap(),
                EntityUid::from_str(r#"Action::"read""#).unwrap(),
                EntityUid::from_str(r#"Doc::"x""#).unwrap(),
                builder.build(&input).unwrap(),
                None,
            )
            .unwrap(),
            &policies,
            &Entities::empty(),
        );
        assert_eq!(r.decision(), Decision::Allow);
        // Policy ids are Cedar's own here (`policy0`…); their `@id` names them.
        let reasons: Vec<String> = r
            .diagnostics()
            .reason()
            .filter_map(|id| policies.policy(id)?.annotation("id").map(str::to_owned))
            .collect();
        for id in [
            "ip", "now-ms", "local", "weekday", "scopes", "method", "params", "source",
        ] {
            assert!(reasons.contains(&id.to_owned()), "{id} in {reasons:?}");
        }
        assert_eq!(r.diagnostics().errors().count(), 0);
    }

    #[test]
    fn only_the_keys_policies_read_are_built() {
        let set = |text: &str| PolicySet::from_str(text).unwrap();
        let none = set(r#"permit(principal in Role::"a", action, resource);"#);
        assert_eq!(Reads::of([&none]), Reads([false; KEYS.len()]));
        let some = set(
            r#"permit(principal, action, resource) when { context.scopes.contains("x") };
               forbid(principal, action, resource) unless { context has ip && context["method"] == "GET" };"#,
        );
        let reads = Reads::of([&some]);
        for key in KEYS {
            assert_eq!(
                reads.reads(key),
                matches!(key, "scopes" | "ip" | "method"),
                "{key}"
            );
        }
        // `context` as a whole: every key.
        let whole = set(r#"permit(principal, action, resource) when { context == {} };"#);
        assert_eq!(Reads::of([&whole]), Reads::all());
        // Shadow policies count too.
        assert!(Reads::of([&none, &some]).reads("ip"));
    }
}
