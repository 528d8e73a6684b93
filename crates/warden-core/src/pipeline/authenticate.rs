//! Authenticate: the one credential the request presents, verified by the route's
//! sources (or the identity an explanation assumes). A password is handed to the driver to
//! check; a token naming an unknown key asks the driver, once, to refresh the key sets.
//! A session cookie that opens asks the driver for the session's record, and for a refresh
//! of its tokens when they are about to expire. A browser navigation without a usable
//! session, on a route of an `oidc` source, is sent to sign in; API clients keep the 401.

use super::{Ctx, Outcome, Routed, Stop};
use crate::auth::{self, Source, Verified};
use crate::decision::{Reason, Stage, TokenProblem};
use crate::identity::Identity;
use crate::protocol::{Answer, Need};
use crate::request::RequestView;
use crate::session::{SessionAnswer, SessionLookup, SessionProblem};

pub(super) fn run(
    routed: &Routed<'_>,
    request: &RequestView<'_>,
    cx: &mut Ctx,
) -> Result<(), Stop> {
    let route = routed.route;
    if !route.authenticates() {
        cx.note(Stage::Authenticate, true, || {
            "public route: no credentials needed".to_owned()
        });
        return Ok(());
    }
    if let Some(assumed) = cx.assume.take() {
        cx.note(Stage::Authenticate, true, || {
            format!("assumed identity `{}`", assumed.subject)
        });
        cx.identity = Some(assumed);
        return Ok(());
    }
    let verify = |cx: &Ctx| {
        auth::authenticate(
            &route.sources,
            request.headers,
            request.client_certificates,
            cx.now_secs(),
        )
    };
    let verified = match cx.asked.take() {
        None => verify(cx),
        Some((Need::Password(_), Answer::Password(verdict))) => match verdict.0 {
            Some(identity) => identity
                .map(Verified::Identity)
                .ok_or(Reason::InvalidCredentials),
            None => Err(Reason::StateUnavailable),
        },
        Some((Need::Keys, Answer::Keys { changed: true })) => verify(cx),
        Some((Need::Keys, Answer::Keys { changed: false })) => {
            Err(Reason::InvalidToken(TokenProblem::UnknownKey))
        }
        Some((Need::Session(lookup) | Need::RefreshSession(lookup), Answer::Session(answer))) => {
            match session_identity(routed, cx, lookup, answer) {
                Ok(identity) => Ok(Verified::Identity(identity)),
                Err(SessionStep::Refresh(lookup)) => {
                    return Err(Stop::Need(Need::RefreshSession(lookup)));
                }
                Err(SessionStep::Refused(reason)) => Err(reason),
            }
        }
        Some(_) => return Err(super::limits::misanswered(Some(route))),
    };
    let identity = match verified {
        Ok(Verified::Identity(identity)) => identity,
        Ok(Verified::Password(check)) if cx.driven() => {
            return Err(Stop::Need(Need::Password(check)));
        }
        Ok(Verified::Password(check)) => match check.verify().0.flatten() {
            Some(identity) => identity,
            None => return Err(refuse(routed, request, cx, Reason::InvalidCredentials)),
        },
        Ok(Verified::Session(lookup)) if cx.driven() => {
            cx.note(Stage::Authenticate, true, || {
                format!(
                    "session cookie of `{}` opens; looking the session up",
                    lookup.source
                )
            });
            return Err(Stop::Need(Need::Session(lookup)));
        }
        Ok(Verified::Session(lookup)) => {
            // Without a driver there is no state backend to find the session in.
            cx.note(Stage::Authenticate, false, || {
                format!(
                    "session cookie of `{}` opens; its record is in the state backend, which is not read here",
                    lookup.source
                )
            });
            return Err(
                Outcome::deny(Stage::Authenticate, Some(route), Reason::StateUnavailable).into(),
            );
        }
        Err(Reason::InvalidToken(TokenProblem::UnknownKey))
            if cx.driven()
                && !cx.keys_refreshed
                && route.sources.iter().any(|s| s.refreshable()) =>
        {
            // The key set may have changed since it was fetched: the driver refreshes it and
            // the token is verified again here, without running the stages before.
            cx.keys_refreshed = true;
            return Err(Stop::Need(Need::Keys));
        }
        Err(reason) => return Err(refuse(routed, request, cx, reason)),
    };
    cx.note(Stage::Authenticate, true, || {
        format!(
            "`{}` verified by source `{}`",
            identity.subject, identity.source
        )
    });
    cx.identity = Some(identity);
    Ok(())
}

/// What came of a session's record: the identity, a refresh to ask for, or a refusal.
enum SessionStep {
    Refresh(SessionLookup),
    Refused(Reason),
}

fn session_identity(
    routed: &Routed<'_>,
    cx: &mut Ctx,
    lookup: SessionLookup,
    answer: SessionAnswer,
) -> Result<Identity, SessionStep> {
    let refused = |p: SessionProblem| SessionStep::Refused(Reason::Session(p));
    let sealed = match answer {
        SessionAnswer::Found(sealed) => sealed,
        SessionAnswer::Missing => return Err(refused(SessionProblem::Ended)),
        SessionAnswer::RefreshFailed => return Err(refused(SessionProblem::RefreshFailed)),
        SessionAnswer::Unavailable => return Err(SessionStep::Refused(Reason::StateUnavailable)),
    };
    let Some(source) = routed.route.sources.iter().find_map(|s| match s.as_ref() {
        Source::Oidc(o) if *o.name() == lookup.source => Some(o),
        _ => None,
    }) else {
        return Err(refused(SessionProblem::Tampered));
    };
    let record = source
        .sessions
        .open_record(&lookup.id, &sealed)
        .map_err(|_| refused(SessionProblem::Tampered))?;
    let now = cx.now_secs();
    let refresh_at = record
        .expires
        .saturating_sub(source.sessions.refresh_before.as_secs());
    if now >= refresh_at && record.refresh_token.is_some() && !cx.session_refreshed {
        cx.session_refreshed = true;
        cx.note(Stage::Authenticate, true, || {
            "the session's tokens are about to expire: refreshing them".to_owned()
        });
        return Err(SessionStep::Refresh(lookup));
    }
    if now >= record.expires {
        return Err(refused(SessionProblem::Expired));
    }
    Ok(record.identity(source.name()))
}

fn refuse(routed: &Routed<'_>, request: &RequestView<'_>, cx: &mut Ctx, reason: Reason) -> Stop {
    let reason = login_instead(routed, request, reason);
    cx.note(Stage::Authenticate, false, || reason.log_detail());
    Outcome::deny(Stage::Authenticate, Some(routed.route), reason).into()
}

/// A browser navigation (a page load, not a script's request) without a usable session, on
/// a route that accepts an `oidc` source, is sent to sign in; every other request keeps its
/// refusal (a redirect would turn a script's 401 into a CORS error).
fn login_instead(routed: &Routed<'_>, request: &RequestView<'_>, reason: Reason) -> Reason {
    let problem = match &reason {
        Reason::NoCredentials => None,
        Reason::Session(problem) => Some(*problem),
        _ => return reason,
    };
    let Some(source) = routed.route.sources.iter().find_map(|s| match s.as_ref() {
        Source::Oidc(o) => Some(o.name()),
        _ => None,
    }) else {
        return reason;
    };
    if !is_navigation(request) {
        return reason;
    }
    Reason::LoginRequired {
        source: std::sync::Arc::clone(source),
        return_to: routed.target.path_and_query(),
        problem,
    }
}

/// A page load: `GET` or `HEAD`, and `Sec-Fetch-Mode: navigate` when the browser sends the
/// fetch metadata, else an `Accept` that prefers HTML.
fn is_navigation(request: &RequestView<'_>) -> bool {
    if !matches!(*request.method, http::Method::GET | http::Method::HEAD) {
        return false;
    }
    match request.headers.get("sec-fetch-mode") {
        Some(mode) => mode.as_bytes().eq_ignore_ascii_case(b"navigate"),
        None => request.prefers_html(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use http::{HeaderMap, HeaderValue, Method};

    use crate::protocol::{Answer, Need, Progress};
    use crate::session::{SessionAnswer, SessionCookie, SessionRecord};
    use crate::{Config, Engine, Reason, RequestView};

    const NOW: u64 = 1_800_000_000;

    fn engine() -> Engine {
        let dir = std::env::temp_dir().join(format!("warden-session-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("session.key"),
            "a-session-key-of-at-least-32-bytes-long",
        )
        .unwrap();
        std::fs::write(dir.join("client.secret"), "client-secret").unwrap();
        let text = r#"
[upstreams.app]
url = "http://127.0.0.1:9"
[sessions]
keys = [{ secret_file = "session.key" }]
refresh_before = "60s"
[sources.idp]
type = "oidc"
issuer = "https://idp.example"
client_id = "warden"
client_secret_file = "client.secret"
redirect_uri = "https://app.example/oauth2/callback"
[[routes]]
path = "/app"
upstream = "app"
auth = ["idp"]
"#;
        let origin: PathBuf = dir.join("warden.toml");
        Engine::new(Config::parse(text, &origin).unwrap())
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        h
    }

    fn session(engine: &Engine, ends: u64) -> String {
        let sessions = engine.config().sessions.as_ref().unwrap();
        let cookie = SessionCookie {
            id: "s1".to_owned(),
            source: "idp".to_owned(),
            created: NOW - 10,
            ends,
        };
        format!("__Host-warden_session={}", sessions.seal_cookie(&cookie))
    }

    fn notes(engine: &Engine, h: &HeaderMap) -> (Reason, String) {
        let view = RequestView::new(&Method::GET, "/app", h, [127, 0, 0, 1].into());
        let explained = engine.explain(&view, at(NOW), None);
        let notes: Vec<String> = explained.steps.iter().map(|s| s.note.clone()).collect();
        (
            explained.decision.reason().unwrap().clone(),
            notes.join(" | "),
        )
    }

    #[test]
    fn explain_shows_the_session_stage() {
        let engine = engine();
        let (reason, note) = notes(&engine, &headers(&[("accept", "text/html".to_owned())]));
        assert!(
            matches!(reason, Reason::LoginRequired { problem: None, .. }),
            "{reason:?}"
        );
        assert!(note.contains("no session → redirect to login"), "{note}");
        // A script's request keeps its 401.
        let (reason, _) = notes(&engine, &headers(&[("sec-fetch-mode", "cors".to_owned())]));
        assert_eq!(reason, Reason::NoCredentials);
        let expired = session(&engine, NOW - 1);
        let (reason, note) = notes(&engine, &headers(&[("cookie", expired)]));
        assert_eq!(
            reason,
            Reason::Session(crate::session::SessionProblem::Expired)
        );
        assert!(note.contains("session expired"), "{note}");
    }

    #[test]
    fn tokens_about_to_expire_ask_for_a_refresh_and_a_failed_one_is_refused() {
        let engine = engine();
        let sessions = engine.config().sessions.as_ref().unwrap();
        let h = headers(&[("cookie", session(&engine, NOW + 3600))]);
        let view = RequestView::new(&Method::GET, "/app", &h, [127, 0, 0, 1].into());
        let record = SessionRecord {
            subject: "alice".to_owned(),
            roles: vec![],
            scopes: vec![],
            attributes: Default::default(),
            expires: NOW + 30,
            refresh_token: Some("rt".to_owned()),
            id_token: None,
            sid: None,
        };
        let Progress::Needs(pending) = engine.begin(&view, at(NOW)) else {
            panic!("the session is looked up");
        };
        assert!(matches!(pending.need(), Need::Session(l) if l.id == "s1"));
        let found = Answer::Session(SessionAnswer::Found(sessions.seal_record("s1", &record)));
        let Progress::Needs(pending) = engine.resume(&view, pending, found) else {
            panic!("a refresh is asked");
        };
        assert!(matches!(pending.need(), Need::RefreshSession(_)));
        let Progress::Decided(decision) = engine.resume(
            &view,
            pending,
            Answer::Session(SessionAnswer::RefreshFailed),
        ) else {
            panic!("decided");
        };
        assert_eq!(
            decision.reason(),
            Some(&Reason::Session(
                crate::session::SessionProblem::RefreshFailed
            ))
        );
        assert_eq!(decision.reason().unwrap().log_detail(), "refresh failed");

        // A record sealed for another session is refused as tampered.
        let Progress::Needs(pending) = engine.begin(&view, at(NOW)) else {
            panic!("looked up");
        };
        let other = Answer::Session(SessionAnswer::Found(sessions.seal_record("s2", &record)));
        let Progress::Decided(decision) = engine.resume(&view, pending, other) else {
            panic!("decided");
        };
        assert_eq!(decision.status(), http::StatusCode::UNAUTHORIZED);
        // A fresh record is the identity.
        let fresh = SessionRecord {
            expires: NOW + 3600,
            ..record
        };
        let Progress::Needs(pending) = engine.begin(&view, at(NOW)) else {
            panic!("looked up");
        };
        let answer = Answer::Session(SessionAnswer::Found(sessions.seal_record("s1", &fresh)));
        let Progress::Decided(decision) = engine.resume(&view, pending, answer) else {
            panic!("decided");
        };
        assert!(decision.is_allowed(), "{decision:?}");
    }
}
