//! Spoor's storage layer: the durable, append-only event log (the source of truth) and the
//! embedded metadata store (sources, tokens). Everything else Spoor holds is derived from
//! these two and can be rebuilt by replaying the log.

pub mod error;
pub mod log;
pub mod meta;
pub mod rewrite;
pub mod state;

pub use error::{StoreError, StoreResult};
