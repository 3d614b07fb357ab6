//! Read snapshots of the state, for the Profile API and tools: the backend's
//! [`StateSnapshot`] with the conveniences callers want (typed ids, following merges,
//! clusters). A snapshot sees one committed checkpoint and never blocks the processor.

use super::backend::StateSnapshot;
use super::tables::ident_key;
use crate::error::StoreError;
use spoor_core::identity::{
    Decision, Identifier, ProfileId, ProfileIdentity, ProfileStatus, SplitRule,
};
use spoor_core::profile::{Group, Profile};
use std::fmt;
use std::str::FromStr;

/// Position in a timeline (event time, seq), newest-first paging.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimelineCursor {
    pub ts_ms: i64,
    pub seq: u64,
}

impl fmt::Display for TimelineCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.ts_ms, self.seq)
    }
}

impl FromStr for TimelineCursor {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (a, b) = s.split_once('.').ok_or(())?;
        Ok(Self {
            ts_ms: a.parse().map_err(|_| ())?,
            seq: b.parse().map_err(|_| ())?,
        })
    }
}

/// A consistent snapshot of the state.
pub struct StateReader {
    snap: Box<dyn StateSnapshot>,
}

fn first<T>(mut v: Vec<Option<T>>) -> Option<T> {
    v.pop().flatten()
}

impl StateReader {
    pub(super) fn new(snap: Box<dyn StateSnapshot>) -> Self {
        Self { snap }
    }

    /// The last log seq whose effects this snapshot contains.
    pub fn processed_seq(&self) -> Result<u64, StoreError> {
        self.snap.processed_seq()
    }

    pub fn live_profiles(&self) -> Result<u64, StoreError> {
        self.snap.live_profiles()
    }

    /// The admin split rules (configuration, not derived state: a rebuild carries them over).
    pub fn split_rules(&self) -> Result<Vec<SplitRule>, StoreError> {
        self.snap.split_rules()
    }

    /// The profile that owns an identifier (already normalised).
    pub fn owner(&self, kind: &str, value: &str) -> Result<Option<ProfileId>, StoreError> {
        let key = ident_key(kind, value);
        Ok(first(self.snap.owners(&[key.as_str()])?).map(ProfileId::from_raw))
    }

    pub fn identity(&self, p: ProfileId) -> Result<Option<ProfileIdentity>, StoreError> {
        Ok(first(self.snap.identities(&[p.raw()])?))
    }

    /// Follows merges to the live profile (a merged-away id resolves to its survivor).
    pub fn resolve(&self, p: ProfileId) -> Result<Option<ProfileId>, StoreError> {
        let mut cur = p;
        for _ in 0..4096 {
            match self.identity(cur)?.map(|i| i.status) {
                Some(ProfileStatus::Live) => return Ok(Some(cur)),
                Some(ProfileStatus::MergedInto(next)) => cur = next,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    pub fn profile(&self, p: ProfileId) -> Result<Option<Profile>, StoreError> {
        Ok(first(self.snap.profiles(&[p.raw()])?))
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        Ok(first(self.snap.groups(&[id])?))
    }

    /// The profile and every profile merged into it, transitively.
    pub fn cluster(&self, p: ProfileId) -> Result<Vec<ProfileId>, StoreError> {
        let mut out = vec![p];
        let mut i = 0;
        while i < out.len() && out.len() < 100_000 {
            if let Some(id) = self.identity(out[i])? {
                for a in id.absorbed {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            i += 1;
        }
        Ok(out)
    }

    /// Up to `limit` (time, seq) of the cluster's events, newest first, strictly before
    /// `before` when given.
    pub fn timeline(
        &self,
        cluster: &[ProfileId],
        before: Option<TimelineCursor>,
        limit: usize,
    ) -> Result<Vec<TimelineCursor>, StoreError> {
        let pids: Vec<u64> = cluster.iter().map(|p| p.raw()).collect();
        let rows = self
            .snap
            .timeline(&pids, before.map(|c| (c.ts_ms, c.seq)), limit)?;
        Ok(rows
            .into_iter()
            .map(|(ts_ms, seq)| TimelineCursor { ts_ms, seq })
            .collect())
    }

    /// Every identity decision recorded for the cluster, oldest first.
    pub fn decisions(&self, cluster: &[ProfileId]) -> Result<Vec<Decision>, StoreError> {
        let pids: Vec<u64> = cluster.iter().map(|p| p.raw()).collect();
        self.snap.decisions(&pids)
    }

    /// Identifiers of a type whose value starts with `prefix`, in value order after `after`.
    pub fn search_identifiers(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Identifier, ProfileId)>, StoreError> {
        Ok(self
            .snap
            .search_identifiers(kind, prefix, after, limit)?
            .into_iter()
            .map(|(k, v, owner)| (Identifier::new(k, v), ProfileId::from_raw(owner)))
            .collect())
    }

    /// Live profiles in id order after `after`.
    pub fn list_profiles(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        self.snap.list_profiles(after.map(|p| p.raw()), limit)
    }

    /// Seqs of the events that carried an identifier (for splits).
    pub fn events_with(
        &self,
        kind: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        self.snap.events_with(&ident_key(kind, value), limit)
    }

    /// Every stored fact as text, canonically ordered: two states (incremental vs rebuilt)
    /// are compared line by line.
    pub fn dump(&self) -> Result<Vec<String>, StoreError> {
        self.snap.dump()
    }
}
