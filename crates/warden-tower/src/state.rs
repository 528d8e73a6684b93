//! The layer's state: rate-limit counters, bans and revocations, in this process — the
//! same bounded store the gateway's memory backend uses ([`warden_core::limit::memory`]).
//! It is per process: two instances of an app each count on their own, and a restart
//! forgets everything. Apps that need one truth across instances run the `warden` gateway
//! with its Redis backend instead.

pub use warden_core::limit::memory::{DEFAULT_MAX_KEYS, MemoryState};
