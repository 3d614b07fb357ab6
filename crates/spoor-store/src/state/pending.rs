//! The pending state: every change the processor made since the last durable checkpoint,
//! shared with readers.
//!
//! Why it exists: writing each event's effects through a storage engine caps processing
//! at 10–50 k events/s (DESIGN.md; with 1 M profiles and random traffic almost every event
//! dirties a different profile, so coalescing per short checkpoint saves little and the
//! B-tree rewrites a page per profile). So the processor applies events to this in-memory
//! layer, which readers see at once, and writes it to the backend in one large, sorted
//! transaction only every few seconds (or when it grows past a bound). Long intervals make
//! coalescing real: a profile touched 50 times between checkpoints is written once, and
//! sorted bulk writes touch each B-tree page at most once. The log stays the source of
//! truth: a crash loses only pending changes, and the processor replays them from the last
//! durable position.
//!
//! Values are `Arc`s: a checkpoint hands them to the backend without copying, and a reader
//! holding one while the processor changes it makes the processor copy (copy-on-write via
//! `Arc::make_mut`) instead of waiting.

use super::memberships::MembershipChange;
use roaring::RoaringTreemap;
use spoor_core::identity::{Decision, ProfileIdentity};
use spoor_core::profile::{Group, Profile};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// ((seq, index within the event), decision).
pub(super) type DecisionRow = ((u64, u32), Arc<Decision>);

/// Changes not yet in the backend. Readers consult this before the backend snapshot.
#[derive(Default)]
pub(super) struct Pending {
    /// How many checkpoints have been cleared from here. A reader whose backend snapshot is
    /// older than this must reopen it (the cleared changes are only in newer snapshots).
    pub epoch: u64,
    /// Identifier key → owner (`None`: removed).
    pub owners: HashMap<String, Option<u64>>,
    pub identities: HashMap<u64, Option<Arc<ProfileIdentity>>>,
    pub profiles: HashMap<u64, Option<Arc<Profile>>>,
    pub groups: HashMap<String, Arc<Group>>,
    /// New timeline rows (event time, seq) per profile.
    pub timeline: HashMap<u64, Vec<(i64, u64)>>,
    /// New decisions per profile (0: none) in insertion order.
    pub decisions: HashMap<u64, Vec<DecisionRow>>,
    /// Profiles whose committed timeline and decision rows are superseded (a split
    /// re-derives them); readers skip those committed rows.
    pub dropped: HashSet<u64>,
    /// Audience → members, when a processor has loaded them (`None`: readers use the
    /// backend). Not a delta: a checkpoint does not clear it.
    pub members: Option<HashMap<String, Arc<RoaringTreemap>>>,
    /// New membership change feed rows (change number, change), in number order.
    pub membership_feed: Vec<(u64, Arc<MembershipChange>)>,
    /// The same rows per profile (a split drops a profile's rows from here, not the feed).
    pub membership_history: HashMap<u64, Vec<(u64, Arc<MembershipChange>)>>,
}

impl Pending {
    /// Entries that a checkpoint would write (a bound on memory, not bytes).
    pub fn entries(&self) -> usize {
        self.owners.len()
            + self.identities.len()
            + self.profiles.len()
            + self.groups.len()
            + self.membership_feed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries() == 0
            && self.timeline.is_empty()
            && self.decisions.is_empty()
            && self.dropped.is_empty()
            && self.membership_history.is_empty()
    }

    /// Empties it after a checkpoint made its content durable.
    pub fn clear(&mut self) {
        self.epoch += 1;
        self.owners.clear();
        self.identities.clear();
        self.profiles.clear();
        self.groups.clear();
        self.timeline.clear();
        self.decisions.clear();
        self.dropped.clear();
        self.membership_feed.clear();
        self.membership_history.clear();
    }

    /// Timeline rows of `pids` strictly before `before`.
    pub fn timeline_of(&self, pids: &[u64], before: Option<(i64, u64)>) -> Vec<(i64, u64)> {
        let mut out = Vec::new();
        for p in pids {
            if let Some(rows) = self.timeline.get(p) {
                out.extend(rows.iter().filter(|r| before.is_none_or(|b| **r < b)));
            }
        }
        out
    }

    /// Decisions of `pids` as ((seq, index), decision).
    pub fn decisions_of(&self, pids: &[u64]) -> Vec<DecisionRow> {
        let mut out = Vec::new();
        for p in pids {
            if let Some(rows) = self.decisions.get(p) {
                out.extend(rows.iter().cloned());
            }
        }
        out
    }
}
