//! The storage contract of derived state. The embedded redb backend implements it today; a
//! PostgreSQL backend implements the same traits, unchanged, and runs the same
//! [conformance suite](super::conformance).
//!
//! Shaped for that: batch-oriented (one atomic [`ChangeSet`] per checkpoint, point reads
//! that take slices, so a SQL backend answers with one round trip each), and only domain
//! types in signatures — no engine transactions, tables or rows leak out.

use super::memberships::MembershipChange;
use crate::error::StoreError;
use spoor_core::identity::{Decision, ProfileIdentity, ProfileStatus, SplitRule};
use spoor_core::profile::{Group, Profile};
use std::sync::Arc;

/// Everything one checkpoint changes, applied atomically together with `processed_seq`:
/// after a crash either all of it is there or none of it is, and the processor replays the
/// log from the last committed `processed_seq`.
#[derive(Debug, Default, Clone)]
pub struct ChangeSet {
    /// The last log seq whose effects this change set completes.
    pub processed_seq: u64,
    pub live_profiles: u64,
    /// The full list of split rules, when it changed.
    pub split_rules: Option<Vec<SplitRule>>,
    /// Identifier key ([`super::ident_key`]) → owning profile (`None` deletes).
    pub owners: Vec<(String, Option<u64>)>,
    /// Values are shared (`Arc`) so a checkpoint hands the processor's copies to the
    /// backend without cloning them.
    pub identities: Vec<(u64, Option<Arc<ProfileIdentity>>)>,
    pub profiles: Vec<(u64, Option<Arc<Profile>>)>,
    pub groups: Vec<(String, Arc<Group>)>,
    /// (group id, profile) rows: the profile joined the group.
    pub group_members: Vec<(String, u64)>,
    /// Profiles whose timeline and decision rows are deleted before this set's rows are
    /// added (a split re-derives them).
    pub drop_rows: Vec<u64>,
    /// (profile, event time ms, seq).
    pub timeline: Vec<(u64, i64, u64)>,
    /// ([`super::ident_hash`] of the identifier key, seq): which events carried an
    /// identifier.
    pub ident_events: Vec<(u64, u64)>,
    /// Identifier hashes whose event rows are all deleted before `ident_events` are added
    /// (an erasure).
    pub drop_ident_events: Vec<u64>,
    /// ((profile or 0, seq, index), decision). A later entry with the same key replaces an
    /// earlier one.
    pub decisions: Vec<((u64, u64, u32), Arc<Decision>)>,
    /// Audience → its members serialized ([`super::encode_members`]); `None` deletes (a
    /// deleted audience, or one without members: such audiences have no row).
    pub audiences: Vec<(String, Option<Vec<u8>>)>,
    /// Timers (at ms, profile) added and removed; a key is in at most one of the two.
    pub timers_add: Vec<(i64, u64)>,
    pub timers_remove: Vec<(i64, u64)>,
    /// Membership change feed rows (change number, change).
    pub membership_feed: Vec<(u64, Arc<MembershipChange>)>,
    /// Per-profile membership history rows (change number, change), kept under
    /// (change.profile, change.at_ms, number). `drop_rows` removes a profile's older rows
    /// (not its feed rows) before these are added.
    pub membership_history: Vec<(u64, Arc<MembershipChange>)>,
    /// The number the next membership change gets, when it changed.
    pub next_change_no: Option<u64>,
}

/// A store of derived state.
pub trait StateBackend: Send + Sync {
    /// Applies a checkpoint atomically and durably. It may reorder the entries (to write
    /// in key order) but leaves them in place: the caller keeps the values as its cache.
    fn commit(&self, changes: &mut ChangeSet) -> Result<(), StoreError>;
    /// A consistent view of the last committed checkpoint; later commits do not change it.
    fn snapshot(&self) -> Result<Box<dyn StateSnapshot>, StoreError>;
}

/// Reads of one consistent snapshot.
/// `Sync`: one snapshot per checkpoint is shared by every reader (see `Pending::snapshot`).
pub trait StateSnapshot: Send + Sync {
    fn processed_seq(&self) -> Result<u64, StoreError>;
    fn live_profiles(&self) -> Result<u64, StoreError>;
    fn split_rules(&self) -> Result<Vec<SplitRule>, StoreError>;
    /// Owners of identifier keys, in the order asked.
    fn owners(&self, keys: &[&str]) -> Result<Vec<Option<u64>>, StoreError>;
    fn identities(&self, pids: &[u64]) -> Result<Vec<Option<ProfileIdentity>>, StoreError>;
    fn profiles(&self, pids: &[u64]) -> Result<Vec<Option<Profile>>, StoreError>;
    /// [`Self::profiles`], each activation left encoded until used where the stored form
    /// allows (`spoor_core::audience::LazyActivation`): for a rewrite that replaces a few
    /// audience entries and copies the rest. A backend that cannot returns them decoded.
    fn profiles_lazy(&self, pids: &[u64]) -> Result<Vec<Option<Profile>>, StoreError> {
        self.profiles(pids)
    }
    fn groups(&self, ids: &[&str]) -> Result<Vec<Option<Group>>, StoreError>;
    /// Ids of the profiles that joined a group, ascending: each as it was when it joined,
    /// so some may be merged away or gone (callers resolve them to live profiles).
    fn group_members(&self, group: &str) -> Result<Vec<u64>, StoreError>;
    /// Up to `limit` (time, seq) of the profiles' events, newest first across all of them,
    /// strictly before `before`.
    fn timeline(
        &self,
        pids: &[u64],
        before: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError>;
    /// Every timeline row of the profiles with ids in `pids`, as (profile id at processing
    /// time, seq), in key order (by profile, then time). One sequential read of the table,
    /// for a backfill mapping every event to its person.
    fn timeline_rows(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, u64),
    ) -> Result<(), StoreError>;
    /// The lowest and highest profile ids with timeline rows (to split a scan of them).
    fn timeline_span(&self) -> Result<Option<(u64, u64)>, StoreError>;
    /// The status (live, merged into another, dissolved) of every profile with an
    /// identity record and an id in `pids`, in id order: one sequential read of a status
    /// kept beside each identity record, no record decoded. A backfill tells with it which
    /// profile each event was applied to belongs to now, without reading a record each.
    fn profile_statuses(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, ProfileStatus),
    ) -> Result<(), StoreError>;
    /// The profiles' decisions ordered by (seq, index).
    fn decisions(&self, pids: &[u64]) -> Result<Vec<Decision>, StoreError>;
    /// (type, value, owner) of identifiers of `kind` whose value starts with `prefix`, in
    /// value order, strictly after `after`.
    fn search_identifiers(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String, u64)>, StoreError>;
    /// Live profiles in id order, strictly after `after`.
    fn list_profiles(&self, after: Option<u64>, limit: usize) -> Result<Vec<Profile>, StoreError>;
    /// Live profile ids in order, strictly after `after`, without reading the profiles.
    fn list_profile_ids(&self, after: Option<u64>, limit: usize) -> Result<Vec<u64>, StoreError>;
    /// Seqs of the events that carried an identifier key, ascending. May include events
    /// of another identifier with the same [`super::ident_hash`]; callers re-check.
    fn events_with(&self, key: &str, limit: usize) -> Result<Vec<u64>, StoreError>;
    /// Audiences that have members, in name order.
    fn audience_names(&self) -> Result<Vec<String>, StoreError>;
    /// Serialized member bitmaps ([`super::decode_members`]) of audiences, in the order asked.
    fn audience_bitmaps(&self, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError>;
    /// Up to `limit` timers (at ms, profile) in order, strictly after `after`.
    fn timers(
        &self,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError>;
    /// Up to `limit` (change number, change) of the profiles' membership history, newest
    /// first (by time, then number) across all of them.
    fn membership_history(
        &self,
        pids: &[u64],
        limit: usize,
    ) -> Result<Vec<(u64, MembershipChange)>, StoreError>;
    /// Up to `limit` feed rows numbered after `after`, in number order.
    fn membership_feed(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MembershipChange)>, StoreError>;
    /// The number the next membership change gets (0 when none was ever recorded).
    fn next_change_no(&self) -> Result<u64, StoreError>;
    /// Every stored fact as a line of text, in a canonical order (differential tests
    /// compare two states with it; backends must produce the same lines for the same state).
    /// The group→members index is left out: it is a superset of the members by design (a
    /// split leaves rows of re-derived profiles behind), so two equal states may differ there.
    fn dump(&self) -> Result<Vec<String>, StoreError>;
}
