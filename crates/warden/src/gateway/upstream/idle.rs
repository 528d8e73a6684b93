//! The idle connections to one host, a list per worker thread: a request takes an idle
//! connection of its own thread, so taking and returning one touches nothing another worker
//! writes. Both HTTP/1.1 clients keep theirs here ([`super::h1`], [`super::wire`]).

use std::cell::RefCell;
use std::fmt;
use std::time::{Duration, Instant};

use thread_local::ThreadLocal;

/// How long an idle connection is kept (as the pooled client keeps its own).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many idle connections to one host each worker thread keeps.
const MAX_IDLE_PER_THREAD: usize = 256;

/// Idle connections of one kind to one host. Dropped with its pool (a reload): the idle
/// connections close then.
pub(crate) struct IdleList<C: Send> {
    idle: ThreadLocal<RefCell<Vec<(C, Instant)>>>,
}

impl<C: Send> Default for IdleList<C> {
    fn default() -> Self {
        Self {
            idle: ThreadLocal::new(),
        }
    }
}

impl<C: Send> fmt::Debug for IdleList<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdleList").finish_non_exhaustive()
    }
}

impl<C: Send> IdleList<C> {
    /// The most recently returned connection of this thread that `open` finds still open
    /// (the others are dropped, closing them).
    pub(super) fn take(&self, mut open: impl FnMut(&mut C) -> bool) -> Option<C> {
        let mut list = self.idle.get()?.borrow_mut();
        let now = Instant::now();
        while let Some((mut conn, since)) = list.pop() {
            if now.duration_since(since) > IDLE_TIMEOUT {
                // The rest of the list is older still.
                list.clear();
                return None;
            }
            if open(&mut conn) {
                return Some(conn);
            }
        }
        None
    }

    /// Keep `conn` for the next request on this thread.
    pub(super) fn put(&self, conn: C) {
        let mut list = self.idle.get_or_default().borrow_mut();
        if list.len() >= MAX_IDLE_PER_THREAD {
            // The oldest goes: the list is in the order the connections came back.
            list.remove(0);
        }
        list.push((conn, Instant::now()));
    }
}
