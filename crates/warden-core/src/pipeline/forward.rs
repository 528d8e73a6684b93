//! Forward: the allowed request as it goes to the upstream — the canonical path and
//! query, and warden's identity headers instead of any the client sent.

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::authorize::Permitted;
use super::{Ctx, Outcome, Routed};
use crate::config::Config;
use crate::decision::{Allow, DecisionId, ForwardHeaders, Stage, Verdict};
use crate::identity::Identity;

/// Characters escaped in forwarded identity values: controls, non-ASCII, and the list
/// separators, so a claim can never forge a second value or header.
const IDENTITY_VALUE: &AsciiSet = &CONTROLS.add(b'%').add(b',').add(b' ').add(b'"');

pub(super) fn run(
    config: &Config,
    routed: &Routed<'_>,
    cx: &mut Ctx,
    permitted: Permitted,
) -> Outcome {
    let route = routed.route;
    let identity = cx.identity.take();
    let headers = forward_headers(config, identity.as_ref(), cx.id);
    let path_and_query = routed.target.path_and_query();
    cx.note(Stage::Forward, true, || {
        format!("to upstream `{}` as {path_and_query}", route.upstream)
    });
    Outcome {
        stage: Stage::Forward,
        route: Some(Arc::clone(&route.name)),
        verdict: Verdict::Allow(Allow {
            upstream: Arc::clone(&route.upstream),
            path_and_query,
            identity,
            headers,
            concealed: route.concealed,
            body_limit: route.hygiene.max_body.unwrap_or(config.hygiene.max_body),
        }),
        policies: permitted.policies,
        shadow: permitted.shadow,
        limits: std::mem::take(&mut cx.applied),
    }
}

/// The identity headers for the upstream. Each value is built in one buffer that becomes
/// the header's bytes without a copy.
fn forward_headers(
    config: &Config,
    identity: Option<&Identity>,
    decision_id: DecisionId,
) -> ForwardHeaders {
    let names = &config.identity_headers;
    let mut add: Vec<(HeaderName, HeaderValue)> = Vec::with_capacity(5);
    let mut push = |name: &HeaderName, value: String| {
        if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            add.push((name.clone(), v));
        }
    };
    push(&names.decision_id, decision_id.to_string());
    if let Some(id) = identity {
        let encoded = |items: &[String], separator: char| {
            let mut value = String::new();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    value.push(separator);
                }
                value.extend(utf8_percent_encode(item, IDENTITY_VALUE));
            }
            value
        };
        push(
            &names.subject,
            encoded(std::slice::from_ref(&id.subject), ','),
        );
        push(
            &names.source,
            utf8_percent_encode(&id.source, IDENTITY_VALUE).collect(),
        );
        if !id.roles.is_empty() {
            push(&names.roles, encoded(&id.roles, ','));
        }
        if !id.scopes.is_empty() {
            push(&names.scopes, encoded(&id.scopes, ' '));
        }
    }
    ForwardHeaders {
        remove: names.all(),
        remove_cookies: config
            .sessions
            .as_ref()
            .map(|s| Arc::clone(&s.own_cookies))
            .unwrap_or_default(),
        add,
    }
}
