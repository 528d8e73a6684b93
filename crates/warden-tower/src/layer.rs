//! [`WardenLayer`]: one engine, one state and the settings every [`Warden`] service shares.

use std::fmt;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use tower_layer::Layer;
use warden_core::config::Backend;
use warden_core::limit::StateStore;
use warden_core::{Config, Decision, Engine};

use crate::peer::{self, ClientAddr, PeerReader};
use crate::service::Warden;
use crate::state::{DEFAULT_MAX_KEYS, MemoryState};

/// A callback that sees every decision (to log or count it).
pub(crate) type DecisionHook = Arc<dyn Fn(&Decision) + Send + Sync>;

/// A tower [`Layer`] that runs warden's decision engine in front of a service.
///
/// Every request is decided by the same engine, with the same configuration, as in the
/// `warden` gateway: a refusal is answered by the layer (the inner service never sees it),
/// an allowed request reaches the inner service with the normalized path, warden's
/// identity headers and the verified [`warden_core::Identity`] as a request extension.
///
/// Clones share the engine and the state.
#[derive(Clone)]
pub struct WardenLayer {
    pub(crate) shared: Shared,
}

/// What every service of a layer shares.
#[derive(Clone)]
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub state: Arc<MemoryState>,
    /// A store shared with other deciders, answering instead of `state` when set.
    pub store: Option<Arc<dyn StateStore>>,
    pub peer: PeerReader,
    pub on_decision: Option<DecisionHook>,
}

impl WardenLayer {
    /// A layer deciding with `engine`, with a fresh [`MemoryState`] as large as the
    /// configuration's `[state] max_keys` (a Redis backend in the configuration is not used:
    /// the layer's state is always in this process).
    #[must_use]
    pub fn new(engine: Arc<Engine>) -> Self {
        let max_keys = match &engine.config().state.backend {
            Backend::Memory { max_keys } => *max_keys,
            Backend::Redis { .. } => DEFAULT_MAX_KEYS,
        };
        Self {
            shared: Shared {
                engine,
                state: Arc::new(MemoryState::new(max_keys)),
                store: None,
                peer: peer::read::<ClientAddr>,
                on_decision: None,
            },
        }
    }

    /// A layer for a checked configuration (see [`Config::load`] and [`Config::parse`]).
    #[must_use]
    pub fn from_config(config: Config) -> Self {
        Self::new(Arc::new(Engine::new(config)))
    }

    /// Share `state` (counters, bans, revocations) with other layers, or keep a handle to it.
    #[must_use]
    pub fn with_state(mut self, state: Arc<MemoryState>) -> Self {
        self.shared.state = state;
        self
    }

    /// Count limits, bans and revocations in `store` instead of this process's
    /// [`MemoryState`]: a store shared with other deciders, so that every instance of an app
    /// and every `warden` gateway counting in the same Redis enforce one limit and one ban
    /// list. The gateway's store for a configuration is
    /// `warden::state::Store::new(&config.state)`; revoke through any gateway's
    /// `POST /revoke` on the same Redis. A store that cannot answer is handled by the
    /// configuration's `[state] fail` mode, as in the gateway.
    #[must_use]
    pub fn with_store(mut self, store: Arc<dyn StateStore>) -> Self {
        self.shared.store = Some(store);
        self
    }

    /// Read the peer address from the request extension `T` (falling back to
    /// [`ClientAddr`]). With axum, serve the app with
    /// `into_make_service_with_connect_info::<SocketAddr>()` and use
    /// `.peer_from::<axum::extract::ConnectInfo<SocketAddr>>()`.
    ///
    /// With no address on a request, the peer is `0.0.0.0`; see [`crate::peer`].
    #[must_use]
    pub fn peer_from<T>(mut self) -> Self
    where
        T: Deref<Target = SocketAddr> + Send + Sync + 'static,
    {
        self.shared.peer = peer::read::<T>;
        self
    }

    /// Call `hook` with every decision, allowed or refused, before it is answered: the
    /// place to write a decision log or count refusals. It runs on the request's task, so it
    /// should be quick.
    #[must_use]
    pub fn on_decision(mut self, hook: impl Fn(&Decision) + Send + Sync + 'static) -> Self {
        self.shared.on_decision = Some(Arc::new(hook));
        self
    }

    /// The engine.
    #[must_use]
    pub fn engine(&self) -> &Arc<Engine> {
        &self.shared.engine
    }

    /// The state: counters, bans, and the revocation API
    /// ([`MemoryState::revoke_token`], [`MemoryState::revoke_subject`]).
    #[must_use]
    pub fn state(&self) -> &Arc<MemoryState> {
        &self.shared.state
    }
}

impl<S> Layer<S> for WardenLayer {
    type Service = Warden<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Warden::new(inner, self.shared.clone())
    }
}

impl fmt::Debug for WardenLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WardenLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.engine.config().origin)
            .field("state", &self.state)
            .field("store", &self.store)
            .field("on_decision", &self.on_decision.is_some())
            .finish_non_exhaustive()
    }
}
