//! Spoor's domain model: what an event is, how a Segment-style message becomes a canonical
//! event, and (later) identities, profiles and audiences.
//!
//! This crate does no I/O and has no async: every function is a pure transformation, so the
//! rules can be tested exhaustively and reused by every backend and entry point (HTTP, bulk
//! import, replay).

pub mod audience;
pub mod clock;
pub mod codec;
pub mod computed;
pub mod consent;
pub mod enrich;
pub mod event;
pub mod identity;
pub mod ids;
pub mod ingest;
pub mod profile;
pub mod share;

pub use clock::{Clock, FixedClock, SystemClock};
pub use event::{EventType, StoredEvent};
pub use ids::SourceId;
