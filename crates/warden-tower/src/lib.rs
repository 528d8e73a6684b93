#![doc = include_str!("../README.md")]

mod body;
mod decide;
mod future;
mod layer;
pub mod peer;
mod service;
mod state;

pub use body::WardenBody;
pub use future::ResponseFuture;
pub use layer::WardenLayer;
pub use peer::ClientAddr;
pub use service::Warden;
pub use state::{DEFAULT_MAX_KEYS, MemoryState};
pub use warden_core::{Config, DecisionId, Engine, Identity};
