//! What every front end does once a request is answered: count the decision in the metrics
//! (by outcome, status, stage and reason; WAF findings; shadow disagreements) and write it
//! to the decision log, and hand it to the live view (dashboard and alerts). The proxy and the forward-auth endpoints call the same function.

use http::StatusCode;
use warden_core::{Decision, Reason};

use super::Shared;
use crate::decision_log::RequestFacts;

/// Count and log one decision with the status its answer had.
pub(crate) fn record(
    shared: &Shared,
    decision: &Decision,
    facts: RequestFacts<'_>,
    status: StatusCode,
) {
    shared
        .metrics
        .decision_histogram(decision.stage.as_str())
        .observe(decision.elapsed.as_secs_f64());
    count_waf(shared, decision);
    let reason = decision.reason().map_or("", Reason::code);
    shared
        .metrics
        .decision_counter(
            decision.is_allowed(),
            status,
            decision.stage.as_str(),
            reason,
        )
        .inc();
    if let Some(Reason::PolicyError { errors }) = decision.reason() {
        tracing::error!(decision_id = %decision.id, route = decision.route.as_deref(), ?errors, "policy evaluation failed; denied");
    }
    if let Some(shadow) = &decision.shadow {
        let verdict = |allowed: bool| if allowed { "allow" } else { "deny" };
        shared
            .metrics
            .shadow_disagreements
            .with_label_values(&[
                decision.route.as_deref().unwrap_or(""),
                verdict(shadow.active_allowed),
                verdict(shadow.shadow_allowed),
            ])
            .inc();
    }
    shared.log.record(decision, facts, status.as_u16());
    shared.live.record(decision, facts, status.as_u16());
}

/// Count WAF findings: refused ones and detect-only ones.
fn count_waf(shared: &Shared, decision: &Decision) {
    if let Some(Reason::WafBlocked(found)) = decision.reason() {
        shared
            .metrics
            .waf_findings
            .with_label_values(&[found.rule.as_ref(), "true"])
            .inc();
    }
    for found in &decision.detections {
        shared
            .metrics
            .waf_findings
            .with_label_values(&[found.rule.as_ref(), "false"])
            .inc();
    }
}
