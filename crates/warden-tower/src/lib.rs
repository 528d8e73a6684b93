#![doc = include_str!("../README.md")]

mod body;
mod decide;
mod layer;
pub mod peer;
mod service;
mod state;

pub use body::WardenBody;
pub use layer::WardenLayer;
pub use peer::ClientAddr;
pub use service::{ResponseFuture, Warden};
pub use state::{DEFAULT_MAX_KEYS, MemoryState};
pub use warden_core::{Config, DecisionId, Engine, Identity};
