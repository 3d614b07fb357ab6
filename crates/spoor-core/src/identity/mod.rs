//! Identity resolution: which events belong to one person.
//!
//! Pure and deterministic — no I/O, no clock, no randomness, no hash-order in outcomes — so the
//! graph is a function of (event log, configuration, split rules) and can be rebuilt by replay.
//!
//! # Model
//! - An event carries `(type, value)` pairs ([`IdentityInput`]); values are normalised
//!   ([`Normalize`]) and placeholder values blocked, per [`IdentityConfig`].
//! - Each identifier is owned by at most one live profile ([`ProfileId`]). An event links all
//!   its identifiers; if they belong to different profiles these are merged into the
//!   **oldest** (stable ids), unless a per-type limit or an admin split rule forbids it — then
//!   the lowest-priority conflicting identifier is left out.
//! - Every link, merge and refusal is a [`Decision`] carrying the event's `seq`, `messageId`
//!   and time, so the API can explain why two identifiers are (not) one person.
//! - State lives behind [`IdentityStore`], so the processor can back it by a cache over
//!   storage; [`MemIdentityStore`] is the in-memory version.
//!
//! # Where this differs from the first design, and why
//! - **Anchor = highest-priority identifier, whether owned or not.** The draft anchored on the
//!   highest-priority *owned* identifier. Then `identify(u2)` from a computer whose anonymous
//!   id belongs to u1's profile would land on u1's profile (with u2 refused) — the event of
//!   one person attributed to another. Here identifiers are added in priority order to a
//!   growing group and the first is always accepted, so the event lands with `u2` and the
//!   shared anonymous id is the one refused (what Segment Unify does too).
//! - **Profile id = seq of the creating event**, not a store counter. A counter makes ids
//!   depend on how much was replayed; with the seq a full replay and a partial re-derivation
//!   give the same ids, and a split keeps the surviving side's id. The trait therefore has no
//!   `next_profile_id`. Ordering ids is ordering by age.
//! - **Limit windows count by last-seen, not first-seen.** With first-seen, a user id first
//!   seen 40 days ago but used daily would not count against "1 user_id per 30 days", and a
//!   second user on the same device would merge in. `last_seen_ms` is maintained only for
//!   windowed types so events whose identifiers are all known write nothing.
//! - **Re-derivation replays a connected component, not only the cluster's events.** An event
//!   touching the cluster may also carry an identifier (e.g. refused by a limit) held by
//!   another profile; replaying it without that profile's history gives a different graph
//!   than a full replay. [`component_events`] closes the event set over shared identifiers,
//!   which makes re-derivation exactly equal to a full replay (tested).
//! - **Split rules apply to all of history** ("these identifiers are different people"), and
//!   are looked up per identifier ([`IdentityStore::split_memberships`]) so a store can index
//!   them instead of scanning every rule for every event.
//! - **Lowering a limit does not split existing profiles**; only types a link would add are
//!   checked against it. Replay to apply a stricter rule to history.
//!
//! # Limitations
//! - `seq` must be unique, increasing in processing order and below 2^56.
//! - Phone numbers are normalised heuristically (see [`normalize`]), without number plans.
//! - Windowed limits constrain *linking*; an old identifier seen again later counts again, so
//!   a profile may hold more active identifiers than the limit after the fact.
//! - An event with no usable identifier resolves to no profile (`Resolution::profile = None`).

mod config;
mod model;
pub mod normalize;
mod resolve;
mod score;
mod split;
mod store;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use config::{IdTypeConfig, IdentityConfig, IdentityRules};
pub use model::{
    Decision, DecisionKind, IdType, Identifier, IdentityInput, LinkedIdentifier, ProfileId,
    ProfileIdentity, ProfileStatus, RefusalRule, Resolution, SplitOrigin, SplitRule, SplitRuleId,
    SplitSide,
};
pub use normalize::Normalize;
pub use resolve::{resolve, resolve_visiting};
pub use score::pairwise_scores;
pub use split::{
    component_events, plan_detach, plan_undo_merge, rederive, split_and_rederive, Rederived,
    SplitPlan,
};
pub use store::{resolve_profile, IdentityStore, MemIdentityStore};

/// Configuration and split errors. Resolution itself never fails: every problem with an
/// event's identifiers becomes a recorded [`RefusalRule`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity type {name:?}: {reason}")]
    BadType { name: String, reason: String },
    #[error("blocked pattern {pattern:?} is not a valid regex: {reason}")]
    BadPattern { pattern: String, reason: String },
    #[error("no identifier types configured")]
    NoTypes,
    #[error("unknown profile {0}")]
    UnknownProfile(ProfileId),
    #[error("profile {0} was not merged into another")]
    NotMerged(ProfileId),
    #[error("identifier {0} belongs to no profile")]
    UnownedIdentifier(Identifier),
    #[error("nothing to split: one side would be empty")]
    NothingToSplit,
    #[error("the affected component has more than {0} events")]
    ComponentTooLarge(usize),
}
