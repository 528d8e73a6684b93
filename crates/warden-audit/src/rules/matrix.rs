//! The rules across answers: every identity's answers to every operation, with the
//! expectations. Each broken rule is one [`Finding`] per operation, whichever identities
//! broke it, with the evidence of the first answer that did (and the answer it is compared
//! with, for an existence leak).

use serde::Serialize;

use super::answer::{self, Asked};
use super::{Rule, Severity};
use crate::expect::Expectations;
use crate::identity::Identity;
use crate::operation::Operation;
use crate::run::{Evidence, Exchange, Purpose};

/// One broken rule on one operation.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// Its severity.
    pub severity: Severity,
    /// The rule as a sentence.
    pub statement: &'static str,
    /// The operation id.
    pub operation: String,
    /// The identity whose answer broke it first.
    pub identity: String,
    /// What was seen.
    pub message: String,
    /// The answers that show it.
    pub evidence: Vec<Evidence>,
}

/// Judge every answer and the answers together.
#[must_use]
pub fn judge(
    operations: &[Operation],
    identities: &[Identity],
    expectations: &Expectations,
    exchanges: &[Exchange],
) -> Vec<Finding> {
    let mut out = Findings(Vec::new());
    let ident = |i: usize| identities.get(i);
    let main = |o: usize, i: usize| {
        exchanges
            .iter()
            .find(|x| x.probe.op == o && x.probe.identity == i && x.probe.purpose == Purpose::Main)
    };
    let ok = |x: &Exchange| x.answer.status.is_success();
    let no_valid_credentials =
        |i: usize| ident(i).is_some_and(|id| id.forged || !id.sends_credentials());

    // Identities known to be authenticated: a 2xx where an identity without valid
    // credentials was refused with 401 or 403.
    let authenticated: Vec<bool> = (0..identities.len())
        .map(|i| {
            !no_valid_credentials(i)
                && exchanges.iter().any(|x| {
                    x.probe.identity == i
                        && x.probe.purpose == Purpose::Main
                        && ok(x)
                        && (0..identities.len()).any(|j| {
                            no_valid_credentials(j)
                                && main(x.probe.op, j)
                                    .is_some_and(|y| matches!(y.answer.status.as_u16(), 401 | 403))
                        })
                })
        })
        .collect();

    for (o, op) in operations.iter().enumerate() {
        // Ignored authentication: 2xx without valid credentials where the document
        // requires authentication.
        let mut ignored = Vec::new();
        if op.requires_auth == Some(true) {
            for i in (0..identities.len()).filter(|&i| no_valid_credentials(i)) {
                if let Some(x) = main(o, i).filter(|x| ok(x)) {
                    ignored.push(i);
                    let message = format!(
                        "{} answered {} without valid credentials; \
                         the document requires authentication",
                        op.id, x.answer.status
                    );
                    let evidence = vec![x.evidence.clone()];
                    out.add(
                        op,
                        Rule::IgnoredAuthentication,
                        &x.evidence.identity,
                        message,
                        evidence,
                    );
                }
            }
        }
        // BFLA: an identity the expectations leave out is allowed.
        if let Some(allowed) = expectations.allowed(op) {
            for (i, identity) in identities.iter().enumerate() {
                if identity.forged || ignored.contains(&i) || allowed.contains(&identity.name) {
                    continue;
                }
                if let Some(x) = main(o, i).filter(|x| ok(x)) {
                    out.add(
                        op,
                        Rule::Bfla,
                        &identity.name,
                        format!(
                            "{} answered {} to {}; the expectations allow only {}",
                            op.id,
                            x.answer.status,
                            identity.name,
                            allowed.join(", ")
                        ),
                        vec![x.evidence.clone()],
                    );
                }
            }
        }
        for x in exchanges.iter().filter(|x| x.probe.op == o) {
            let Some(identity) = ident(x.probe.identity) else {
                continue;
            };
            // BOLA: another identity's object answered 2xx.
            if let Purpose::ObjectOf(owner) = x.probe.purpose
                && ok(x)
                && !identity.forged
                && !expectations.sees_all(&identity.name)
                && !ignored.contains(&x.probe.identity)
            {
                let owner = ident(owner).map_or("another identity", |i| i.name.as_str());
                out.add(
                    op,
                    Rule::Bola,
                    &identity.name,
                    format!(
                        "{} reached {owner}'s object: {} answered {}",
                        identity.name, x.evidence.request, x.answer.status
                    ),
                    vec![x.evidence.clone()],
                );
            }
            // Every single-answer rule, on every answer.
            let asked = Asked {
                method: &op.method,
                sent_credentials: identity.sends_credentials(),
                baseline: None,
            };
            for (rule, text) in answer::explain(asked, &x.answer).broken() {
                out.add(
                    op,
                    rule,
                    &identity.name,
                    format!("{}: {text}", x.evidence.request),
                    vec![x.evidence.clone()],
                );
            }
        }
        // Existence leak: for one caller, 403 for an existing object, 404 for a missing one.
        for i in 0..identities.len() {
            let missing = exchanges.iter().find(|x| {
                x.probe.op == o
                    && x.probe.identity == i
                    && x.probe.purpose == Purpose::Missing
                    && x.answer.status == 404
            });
            let existing = exchanges.iter().find(|x| {
                x.probe.op == o
                    && x.probe.identity == i
                    && x.probe.purpose != Purpose::Missing
                    && x.answer.status == 403
            });
            if let (Some(missing), Some(existing)) = (missing, existing) {
                let who = &existing.evidence.identity;
                let message = format!(
                    "{who} gets 403 for an existing object and 404 for a missing one: \
                     the status tells which ids exist"
                );
                let evidence = vec![existing.evidence.clone(), missing.evidence.clone()];
                out.add(op, Rule::ExistenceLeak, who, message, evidence);
            }
        }
        // 401 to an authenticated caller who lacks permission, while another is allowed.
        let someone_allowed = (0..identities.len()).any(|i| main(o, i).is_some_and(ok));
        if someone_allowed {
            for (i, _) in identities
                .iter()
                .enumerate()
                .filter(|(i, _)| authenticated.get(*i) == Some(&true))
            {
                if let Some(x) = main(o, i).filter(|x| x.answer.status == 401) {
                    let who = &x.evidence.identity;
                    let message = format!(
                        "{} answered 401 to {who}, whose credentials are accepted elsewhere, \
                         while another identity is allowed: a caller without permission gets 403",
                        op.id
                    );
                    let evidence = vec![x.evidence.clone()];
                    out.add(
                        op,
                        Rule::UnauthorizedForAuthenticated,
                        who,
                        message,
                        evidence,
                    );
                }
            }
        }
    }
    let mut findings = out.0;
    findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), f.rule, f.operation.clone()));
    findings
}

struct Findings(Vec<Finding>);

impl Findings {
    /// One finding per rule and operation: the first evidence is kept.
    fn add(
        &mut self,
        op: &Operation,
        rule: Rule,
        identity: &str,
        message: String,
        evidence: Vec<Evidence>,
    ) {
        if self
            .0
            .iter()
            .any(|f| f.rule == rule && f.operation == op.id)
        {
            return;
        }
        self.0.push(Finding {
            rule,
            severity: rule.severity(),
            statement: rule.statement(),
            operation: op.id.clone(),
            identity: identity.to_owned(),
            message,
            evidence,
        });
    }
}
