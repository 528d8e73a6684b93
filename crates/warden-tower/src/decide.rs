//! Driving the engine for one request: begin, answer the state checks it asks for from the
//! layer's [`MemoryState`], resume until it decides; then count a 401 or 403 towards a ban,
//! as the gateway does.

use std::time::SystemTime;

use http::StatusCode;
use warden_core::{Decision, Engine, Progress, RequestView};

use crate::state::MemoryState;

/// More rounds than the engine ever asks for (one before authentication, one after).
const MAX_ROUNDS: usize = 4;

/// Decide one request at `now`.
pub(crate) fn decide(
    engine: &Engine,
    state: &MemoryState,
    view: &RequestView<'_>,
    now: SystemTime,
) -> Decision {
    let mut progress = engine.begin(view, now);
    for _ in 0..MAX_ROUNDS {
        match progress {
            Progress::Decided(decision) => {
                count_refusal(engine, state, &decision, now);
                return decision;
            }
            Progress::NeedsState(pending) => {
                let answers = state.answer(pending.checks(), now);
                progress = engine.resume(view, pending, Ok(answers));
            }
        }
    }
    match progress {
        Progress::Decided(decision) => {
            count_refusal(engine, state, &decision, now);
            decision
        }
        // An engine that keeps asking is a bug: refuse (503), never allow.
        Progress::NeedsState(_) => engine.unavailable(view, now),
    }
}

/// Count a 401 or 403 towards the client's ban, when the configuration has bans.
fn count_refusal(engine: &Engine, state: &MemoryState, decision: &Decision, now: SystemTime) {
    let (Some(policy), Some(reason)) = (engine.config().bans, decision.reason()) else {
        return;
    };
    if matches!(
        reason.status(),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ) {
        state.record_failure(decision.client, &policy, now);
    }
}
