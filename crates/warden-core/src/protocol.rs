//! The protocol between the engine and its driver: the engine decides, or says what it
//! [`Need`]s first; the driver fetches that and hands back the [`Answer`]. The engine never
//! does I/O and never blocks on slow work; [`crate::drive`] is the one driver loop that the
//! gateway, the tower layer and every other front end share.

use bytes::Bytes;

use crate::auth::{PasswordCheck, PasswordVerdict};
use crate::decision::Decision;
use crate::limit::{StateAnswer, StateCheck, StateUnavailable};
use crate::pipeline::{Ctx, Routed};
use crate::session::{SessionAnswer, SessionLookup};

/// What the engine needs from its driver before it can go on.
#[derive(Debug)]
#[non_exhaustive]
pub enum Need {
    /// The request body, read up to `limit` bytes, for the WAF (answer
    /// [`Answer::Body`]). The driver keeps what it read and forwards it with the rest.
    Body {
        /// The most bytes to read; a longer body is [`BodyRead::TooLarge`].
        limit: usize,
    },
    /// The state backend's answers to these checks, in this order (answer
    /// [`Answer::State`]).
    State(Vec<StateCheck>),
    /// A password to check (answer [`Answer::Password`] with [`PasswordCheck::verify`]'s
    /// verdict). Checking is slow by design: run it where blocking is allowed.
    Password(PasswordCheck),
    /// The token names a key that no source knows: refresh the key sets that come from URLs
    /// (answer [`Answer::Keys`]). Asked at most once per request.
    Keys,
    /// The record of a browser session, its idle lifetime renewed (answer
    /// [`Answer::Session`]). A host without sessions answers
    /// [`SessionAnswer::Unavailable`], and the request is refused (503).
    Session(SessionLookup),
    /// The session's tokens are about to expire: refresh them at the provider, once for
    /// all the session's requests, store the new record and answer it ([`Answer::Session`],
    /// [`SessionAnswer::RefreshFailed`] when the provider refused). Asked at most once per
    /// request.
    RefreshSession(SessionLookup),
}

/// The driver's answer to a [`Need`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Answer {
    /// What came of reading the body.
    Body(BodyRead),
    /// The backend's answers, or its failure (the configured fail mode decides).
    State(Result<Vec<StateAnswer>, StateUnavailable>),
    /// The password's verdict.
    Password(PasswordVerdict),
    /// The session's record, or why there is none.
    Session(SessionAnswer),
    /// Whether any key set changed.
    Keys {
        /// `true` when a key set was fetched anew, so the token is verified again.
        changed: bool,
    },
}

/// What came of reading a body for the WAF.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BodyRead {
    /// The whole body, within the limit.
    Complete(Bytes),
    /// Longer than the limit (with the WAF on, refused with 413).
    TooLarge,
    /// Broken off, malformed or too slow: refused with 400, and decided, logged and counted
    /// like every other refusal.
    Unreadable,
}

/// Where a decision stands.
#[derive(Debug)]
#[must_use]
#[expect(
    clippy::large_enum_variant,
    reason = "moved a few times per request; boxing the context would allocate on every wait"
)]
pub enum Progress<'e> {
    /// Decided.
    Decided(Decision),
    /// Waiting for the driver: answer [`Pending::need`] and call [`crate::Engine::resume`].
    Needs(Pending<'e>),
}

/// A decision waiting for its driver. It holds what the stages before learnt, so resuming
/// runs only the stages from the one that asked.
#[derive(Debug)]
pub struct Pending<'e> {
    pub(crate) cx: Ctx,
    pub(crate) routed: Option<Routed<'e>>,
    pub(crate) need: Need,
}

impl Pending<'_> {
    /// What the engine needs.
    #[must_use]
    pub fn need(&self) -> &Need {
        &self.need
    }

    /// The client address the decision is about.
    #[must_use]
    pub fn client(&self) -> std::net::IpAddr {
        self.cx.client
    }
}
