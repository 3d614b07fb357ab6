//! Profiles: what Spoor knows about a person (and a group), derived from their events.
//!
//! Pure, like the rest of the crate. The processor parses each log entry once into an
//! [`EventView`], asks [`extract_identifiers`] what the identity engine should resolve,
//! then [`Profile::apply`]s the event to the resolved profile; when the identity engine merges
//! two profiles, the processor [`Profile::absorb`]s one into the other.
//!
//! # The guarantee
//! A profile is a function of the *set* of its events: applying is order-independent
//! (traits are last-writer-wins by event time, ties by log position) and absorbing is a join
//! (commutative, associative, idempotent on disjoint event sets). So however the identity
//! engine grouped events over time, the merged result equals a rebuild from the log — checked
//! by property tests in `proptests.rs`.
//!
//! # Choices
//! - A person's traits come from `identify` (top-level `traits` over `context.traits`) and
//!   from `context.traits` of every other type; a `group` call's top-level traits belong to
//!   the [`Group`]. See [`EventView`].
//! - Nested trait objects are one value per top-level key: `identify({address: {city}})`
//!   replaces the whole `address`. Deep merging would make removal of a nested key
//!   impossible to express and the result depend on the order of partial writes.
//! - Removal leaves a tombstone (see [`traits`]), so an older set replayed after a newer
//!   unset stays removed.

pub mod group;
pub mod identifiers;
pub mod model;
pub mod stats;
pub mod traits;
pub mod view;

#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use group::Group;
pub use identifiers::{extract_identifiers, identity_input, IdentifierSource};
pub use model::Profile;
pub use stats::{channel_key, device_key, ChannelStat, DeviceStat, SourceStat};
pub use traits::{TraitMap, TraitValue, UNSET_KEY};
pub use view::{
    parse_event, parse_event_envelope_time, parse_event_lean, value_at_path, EventView, LeanView,
};

/// A log entry the profile stage cannot read. Ingest validated it, so this means a corrupt
/// log or a format change; the processor should stop rather than skip it silently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProfileError {
    #[error("log entry {seq}: invalid envelope: {reason}")]
    Envelope { seq: u64, reason: String },
    #[error("log entry {seq}: invalid message: {reason}")]
    Message { seq: u64, reason: String },
}
