//! The layer as the engine's [`Host`]: state checks answered from the layer's
//! [`MemoryState`] (or the shared [`StateStore`] it was given), the body read from the
//! request for the WAF, passwords checked on the
//! request's task (the layer has no blocking pool of its own), refusals counted towards
//! bans. Key sets from URLs are not refreshed: the layer does no I/O of its own.

use std::net::IpAddr;
use std::time::SystemTime;

use bytes::Bytes;
use http_body::Body;
use warden_core::body::{Held, read_prefix};
use warden_core::limit::{BanPolicy, StateStore};
use warden_core::{BodyRead, Host, StateAnswer, StateCheck, StateUnavailable};

use crate::state::MemoryState;

/// One request's host.
pub(crate) struct LayerHost<'a, B> {
    state: &'a MemoryState,
    store: Option<&'a dyn StateStore>,
    now: SystemTime,
    body: Held<B>,
}

impl<'a, B> LayerHost<'a, B> {
    pub(crate) fn new(
        state: &'a MemoryState,
        store: Option<&'a dyn StateStore>,
        now: SystemTime,
        body: Option<B>,
    ) -> Self {
        Self {
            state,
            store,
            now,
            body: Held::new(body),
        }
    }

    /// The body to pass on: what was read, and the rest.
    pub(crate) fn into_body(self) -> (Option<Bytes>, Option<B>) {
        self.body.into_parts()
    }
}

impl<B> Host for LayerHost<'_, B>
where
    B: Body<Data = Bytes> + Send + Unpin,
{
    async fn read_body(&mut self, limit: usize) -> BodyRead {
        let Some(body) = self.body.take_unread() else {
            return BodyRead::Complete(Bytes::new());
        };
        let prefix = read_prefix(body, limit).await;
        self.body.settle(prefix)
    }

    async fn answer_state(
        &mut self,
        checks: &[StateCheck],
    ) -> Result<Vec<StateAnswer>, StateUnavailable> {
        match self.store {
            Some(store) => store.answer(checks, self.now).await,
            None => Ok(self.state.answer(checks, self.now)),
        }
    }

    /// Counted before the refusal is answered: the layer has no runtime to spawn on.
    async fn record_refusal(&mut self, client: IpAddr, policy: &BanPolicy) {
        match self.store {
            // A store that cannot count is the same outage the next check will meet; the
            // refusal itself stands either way.
            Some(store) => {
                let _ = store.record_failure(client, policy, self.now).await;
            }
            None => {
                self.state.record_failure(client, policy, self.now);
            }
        }
    }
}
