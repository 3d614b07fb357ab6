//! Reads of the state, for the Profile API and tools: the processor's pending changes over
//! the backend's [`StateSnapshot`], with the conveniences callers want (typed ids, following
//! merges, clusters). Readers lock the pending changes only for the duration of one call
//! and never wait for a checkpoint.

use super::backend::{StateBackend, StateSnapshot};
use super::pending::Pending;
use super::shared::Shared;
use super::tables::{ident_key, split_ident_key};
use crate::error::StoreError;
use spoor_core::identity::{
    Decision, Identifier, ProfileId, ProfileIdentity, ProfileStatus, SplitRule,
};
use spoor_core::profile::{Group, Profile};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

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

/// A reader of the state: the processor's pending changes (when given) over a snapshot of
/// the last checkpoint. Each call sees the state as it is then; when a checkpoint has moved
/// pending changes into the backend since the snapshot was taken, the reader moves to the
/// one the processor opened after that checkpoint (`Pending::snapshot`), shared by every
/// reader, or opens one if none was shared.
pub struct StateReader {
    backend: Arc<dyn StateBackend>,
    pending: Option<Arc<Shared>>,
    /// (pending epoch it is fresh for, snapshot).
    snap: RefCell<(u64, Arc<dyn StateSnapshot>)>,
}

/// The snapshot the processor shared, or a new one of the backend if it shared none.
fn shared_or_new(
    backend: &dyn StateBackend,
    shared: Option<Arc<dyn StateSnapshot>>,
) -> Result<Arc<dyn StateSnapshot>, StoreError> {
    match shared {
        Some(s) => Ok(s),
        None => Ok(backend.snapshot()?.into()),
    }
}

fn first<T>(mut v: Vec<Option<T>>) -> Option<T> {
    v.pop().flatten()
}

impl StateReader {
    pub(super) fn new(
        backend: Arc<dyn StateBackend>,
        pending: Option<Arc<Shared>>,
    ) -> Result<Self, StoreError> {
        let (epoch, shared) = match &pending {
            Some(p) => {
                let g = p.read();
                (g.epoch, g.snapshot.clone())
            }
            None => (0, None),
        };
        let snap = shared_or_new(&*backend, shared)?;
        Ok(Self {
            backend,
            pending,
            snap: RefCell::new((epoch, snap)),
        })
    }

    /// The snapshot to move to when ours is older than `g`'s epoch (`None`: ours is
    /// fresh). Called under the pending lock; the lock can be released before
    /// [`Self::refresh`].
    fn newer(&self, g: &Pending) -> Option<(u64, Option<Arc<dyn StateSnapshot>>)> {
        (self.snap.borrow().0 < g.epoch).then(|| (g.epoch, g.snapshot.clone()))
    }

    /// Moves to the snapshot [`Self::newer`] found: the one the processor shared for that
    /// epoch, or a new one if it shared none.
    fn refresh(
        &self,
        newer: Option<(u64, Option<Arc<dyn StateSnapshot>>)>,
    ) -> Result<(), StoreError> {
        if let Some((epoch, shared)) = newer {
            *self.snap.borrow_mut() = (epoch, shared_or_new(&*self.backend, shared)?);
        }
        Ok(())
    }

    /// Runs `f` over the pending changes (if any) and a snapshot at least as new as the
    /// last checkpoint cleared from them — with the pending changes locked for reading,
    /// so no checkpoint can move data between the two meanwhile.
    pub(super) fn with<R>(
        &self,
        f: impl FnOnce(Option<&Pending>, &dyn StateSnapshot) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match &self.pending {
            None => f(None, &*self.snap.borrow().1),
            Some(p) => {
                let g = p.read();
                self.refresh(self.newer(&g))?;
                f(Some(&g), &*self.snap.borrow().1)
            }
        }
    }

    /// A point lookup: `hit` looks in the pending changes under the lock; on a miss the
    /// lock is released before `miss` reads the backend snapshot (reopened if a checkpoint
    /// was cleared since it was taken). Holding the lock through a backend read and decode
    /// would starve the processor, which takes the write lock for every change it makes.
    /// Safe because a checkpoint commits before it clears the pending changes: what was
    /// not pending at epoch E is in any snapshot opened after E was observed (or a newer
    /// value is, which is a state that existed after the lookup began).
    fn point<H, R>(
        &self,
        hit: impl FnOnce(&Pending) -> Option<H>,
        found: impl FnOnce(H) -> R,
        miss: impl FnOnce(&dyn StateSnapshot) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let Some(p) = &self.pending else {
            return miss(&*self.snap.borrow().1);
        };
        let newer = {
            let g = p.read();
            match hit(&g) {
                Some(h) => {
                    drop(g);
                    return Ok(found(h));
                }
                None => self.newer(&g),
            }
        };
        self.refresh(newer)?;
        miss(&*self.snap.borrow().1)
    }

    /// Like [`Self::point`] for reads that merge both layers: `look` copies what it needs
    /// from the pending changes under the lock, `read` then merges it with the snapshot
    /// without the lock. The snapshot may already hold some of the copied rows (a
    /// checkpoint committed them meanwhile), so `read` must tolerate duplicates.
    pub(super) fn split<H, R>(
        &self,
        look: impl FnOnce(Option<&Pending>) -> H,
        read: impl FnOnce(H, &dyn StateSnapshot) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let Some(p) = &self.pending else {
            return read(look(None), &*self.snap.borrow().1);
        };
        let (h, newer) = {
            let g = p.read();
            (look(Some(&g)), self.newer(&g))
        };
        self.refresh(newer)?;
        read(h, &*self.snap.borrow().1)
    }

    /// Reads only the backend, through a snapshot at least as new as the last checkpoint.
    pub(super) fn fresh<R>(
        &self,
        read: impl FnOnce(&dyn StateSnapshot) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        self.split(|_| (), |(), s| read(s))
    }

    /// The processor's pending layer, if this reader sees it.
    pub(super) fn pending_layer(&self) -> Option<&Arc<Shared>> {
        self.pending.as_ref()
    }

    /// The last log seq whose effects are durable (in the backend).
    pub fn processed_seq(&self) -> Result<u64, StoreError> {
        self.fresh(|s| s.processed_seq())
    }

    /// The last log seq whose effects this reader sees now: the processor publishes it
    /// together with the changes, so after seeing a seq here (or in the processor's
    /// status, set after publishing) every read shows at least that state.
    pub fn visible_seq(&self) -> Result<u64, StoreError> {
        self.with(|p, s| Ok(s.processed_seq()?.max(p.map_or(0, |p| p.seq))))
    }

    /// Live profiles as of the last checkpoint.
    pub fn live_profiles(&self) -> Result<u64, StoreError> {
        self.fresh(|s| s.live_profiles())
    }

    /// The admin split rules (configuration, not derived state: a rebuild carries them over).
    pub fn split_rules(&self) -> Result<Vec<SplitRule>, StoreError> {
        self.fresh(|s| s.split_rules())
    }

    /// The profile that owns an identifier (already normalised).
    pub fn owner(&self, kind: &str, value: &str) -> Result<Option<ProfileId>, StoreError> {
        let key = ident_key(kind, value);
        let raw = self.point(
            |p| p.owner(&key),
            |v| v,
            |s| Ok(first(s.owners(&[key.as_str()])?)),
        )?;
        Ok(raw.map(ProfileId::from_raw))
    }

    pub fn identity(&self, pid: ProfileId) -> Result<Option<ProfileIdentity>, StoreError> {
        Ok(self.identity_arc(pid)?.map(Arc::unwrap_or_clone))
    }

    /// [`Self::identity`] without copying a pending record (readers that only look at it
    /// share the processor's `Arc`).
    pub fn identity_arc(&self, pid: ProfileId) -> Result<Option<Arc<ProfileIdentity>>, StoreError> {
        self.point(
            |p| p.identity(pid.raw()),
            |v| v,
            |s| Ok(first(s.identities(&[pid.raw()])?).map(Arc::new)),
        )
    }

    /// Follows merges to the live profile (a merged-away id resolves to its survivor).
    pub fn resolve(&self, p: ProfileId) -> Result<Option<ProfileId>, StoreError> {
        Ok(self.resolve_identity(p)?.map(|(p, _)| p))
    }

    /// [`Self::resolve`], with the live profile's identity record read on the way (a
    /// lookup needs it anyway: reading it once instead of three times was a measurable
    /// part of a Profile API lookup).
    pub fn resolve_identity(
        &self,
        p: ProfileId,
    ) -> Result<Option<(ProfileId, Arc<ProfileIdentity>)>, StoreError> {
        let mut cur = p;
        for _ in 0..4096 {
            let Some(id) = self.identity_arc(cur)? else {
                return Ok(None);
            };
            match id.status {
                ProfileStatus::Live => return Ok(Some((cur, id))),
                ProfileStatus::MergedInto(next) => cur = next,
                _ => return Ok(None),
            }
        }
        Ok(None)
    }

    pub fn profile(&self, pid: ProfileId) -> Result<Option<Profile>, StoreError> {
        Ok(self.profile_arc(pid)?.map(Arc::unwrap_or_clone))
    }

    /// [`Self::profile`], its activation left encoded until used when it is read from the
    /// store (a pending profile is as it is): for a rewrite of a few audience entries
    /// (`spoor_core::codec::ActivationView::splice`).
    pub fn profile_lazy(&self, pid: ProfileId) -> Result<Option<Profile>, StoreError> {
        self.point(
            |p| p.profile(pid.raw()),
            |v| v.map(Arc::unwrap_or_clone),
            |s| Ok(first(s.profiles_lazy(&[pid.raw()])?)),
        )
    }

    /// [`Self::profile`] without copying a pending profile.
    pub fn profile_arc(&self, pid: ProfileId) -> Result<Option<Arc<Profile>>, StoreError> {
        self.point(
            |p| p.profile(pid.raw()),
            |v| v,
            |s| Ok(first(s.profiles(&[pid.raw()])?).map(Arc::new)),
        )
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        self.point(
            |p| p.group(id),
            |g| Some(Arc::unwrap_or_clone(g)),
            |s| Ok(first(s.groups(&[id])?)),
        )
    }

    /// The profile and every profile merged into it, transitively.
    pub fn cluster(&self, p: ProfileId) -> Result<Vec<ProfileId>, StoreError> {
        match self.identity_arc(p)? {
            Some(id) => self.cluster_of(p, &id),
            None => Ok(vec![p]),
        }
    }

    /// [`Self::cluster`] of a profile whose identity record the caller has already read
    /// (most profiles absorbed none, and then nothing more is read).
    pub fn cluster_of(
        &self,
        p: ProfileId,
        ident: &ProfileIdentity,
    ) -> Result<Vec<ProfileId>, StoreError> {
        let mut out = vec![p];
        let push = |out: &mut Vec<ProfileId>, absorbed: &[ProfileId]| {
            for a in absorbed {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        };
        push(&mut out, &ident.absorbed);
        let mut i = 1;
        while i < out.len() && out.len() < 100_000 {
            if let Some(id) = self.identity_arc(out[i])? {
                push(&mut out, &id.absorbed);
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
        let before = before.map(|c| (c.ts_ms, c.seq));
        let all: Vec<u64> = cluster.iter().map(|p| p.raw()).collect();
        let mut rows = self.split(
            |p| match p {
                None => (all.clone(), Vec::new()),
                Some(p) => (
                    all.iter().copied().filter(|raw| !p.dropped(*raw)).collect(),
                    p.timeline_of(&all, before),
                ),
            },
            |(committed, newer), s| {
                let mut rows = s.timeline(&committed, before, limit)?;
                rows.extend(newer);
                Ok(rows)
            },
        )?;
        rows.sort_unstable_by(|a, b| b.cmp(a));
        rows.dedup();
        rows.truncate(limit);
        Ok(rows
            .into_iter()
            .map(|(ts_ms, seq)| TimelineCursor { ts_ms, seq })
            .collect())
    }

    /// Every timeline row of the last checkpoint whose profile id (at processing time) is
    /// in `pids`, as (that id, seq), by id then time; pending changes are not seen, so
    /// callers checkpoint first. A backfill maps every event to its person with it: a
    /// sequential read of the table (on each core, split by id range) instead of an
    /// identity read and a range per person.
    pub fn committed_timeline_rows(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, u64),
    ) -> Result<(), StoreError> {
        self.with(|_, s| s.timeline_rows(pids, visit))
    }

    /// Every committed profile's status, in id order ([`StateSnapshot::profile_statuses`]);
    /// like the timeline rows, only for a reader with nothing pending (a durable reader).
    pub fn committed_profile_statuses(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, ProfileStatus),
    ) -> Result<(), StoreError> {
        self.with(|_, s| s.profile_statuses(pids, visit))
    }

    /// The lowest and highest profile ids with committed timeline rows.
    pub fn committed_timeline_span(&self) -> Result<Option<(u64, u64)>, StoreError> {
        self.with(|_, s| s.timeline_span())
    }

    /// Every identity decision recorded for the cluster, oldest first.
    pub fn decisions(&self, cluster: &[ProfileId]) -> Result<Vec<Decision>, StoreError> {
        self.with(|p, s| {
            let committed: Vec<u64> = cluster
                .iter()
                .map(|p| p.raw())
                .filter(|raw| p.is_none_or(|p| !p.dropped(*raw)))
                .collect();
            let mut out = s.decisions(&committed)?;
            if let Some(p) = p {
                let all: Vec<u64> = cluster.iter().map(|p| p.raw()).collect();
                let mut newer = p.decisions_of(&all);
                newer.sort_by_key(|(k, _)| *k);
                out.extend(newer.into_iter().map(|(_, d)| (*d).clone()));
                // Stable: committed rows keep their (seq, index) order within a seq.
                out.sort_by_key(|d| d.seq);
            }
            Ok(out)
        })
    }

    /// Identifiers of a type whose value starts with `prefix`, in value order after `after`.
    pub fn search_identifiers(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Identifier, ProfileId)>, StoreError> {
        let rows = self.with(|p, s| {
            let want = ident_key(kind, prefix);
            let after_key = after.map(|a| ident_key(kind, a));
            let newer: Vec<(&String, Option<u64>)> = p
                .map(|p| {
                    p.all_owners()
                        .into_iter()
                        .filter(|(k, _)| {
                            k.starts_with(&want) && after_key.as_ref().is_none_or(|a| *k > a)
                        })
                        .collect()
                })
                .unwrap_or_default();
            // Ask for enough committed rows that pending removals cannot shorten the page.
            let mut merged: BTreeMap<String, u64> = s
                .search_identifiers(kind, prefix, after, limit + newer.len())?
                .into_iter()
                .map(|(k, v, owner)| (ident_key(&k, &v), owner))
                .collect();
            for (k, v) in newer {
                match v {
                    Some(owner) => merged.insert(k.clone(), owner),
                    None => merged.remove(k),
                };
            }
            Ok(merged.into_iter().take(limit).collect::<Vec<_>>())
        })?;
        Ok(rows
            .into_iter()
            .map(|(key, owner)| {
                let (k, v) = split_ident_key(&key);
                (Identifier::new(k, v), ProfileId::from_raw(owner))
            })
            .collect())
    }

    /// Live profiles in id order after `after`.
    pub fn list_profiles(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let after = after.map(|p| p.raw());
        self.with(|p, s| {
            let newer: Vec<(u64, Option<&Arc<Profile>>)> = p
                .map(|p| {
                    p.all_profiles()
                        .into_iter()
                        .filter(|(k, _)| after.is_none_or(|a| *k > a))
                        .collect()
                })
                .unwrap_or_default();
            let mut merged: BTreeMap<u64, Profile> = s
                .list_profiles(after, limit + newer.len())?
                .into_iter()
                .map(|p| (p.id.raw(), p))
                .collect();
            for (k, v) in newer {
                match v {
                    Some(p) => merged.insert(k, (**p).clone()),
                    None => merged.remove(&k),
                };
            }
            Ok(merged.into_values().take(limit).collect())
        })
    }

    /// Live profile ids in id order after `after` (a backfill lists every person without
    /// decoding every profile).
    pub fn list_profile_ids(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<ProfileId>, StoreError> {
        let after = after.map(|p| p.raw());
        self.with(|p, s| {
            let newer: Vec<(u64, bool)> = p
                .map(|p| {
                    p.all_profiles()
                        .into_iter()
                        .filter(|(k, _)| after.is_none_or(|a| *k > a))
                        .map(|(k, v)| (k, v.is_some()))
                        .collect()
                })
                .unwrap_or_default();
            let mut merged: std::collections::BTreeSet<u64> = s
                .list_profile_ids(after, limit + newer.len())?
                .into_iter()
                .collect();
            for (k, live) in newer {
                if live {
                    merged.insert(k);
                } else {
                    merged.remove(&k);
                }
            }
            Ok(merged
                .into_iter()
                .take(limit)
                .map(ProfileId::from_raw)
                .collect())
        })
    }

    /// Seqs of the events that carried an identifier (for splits).
    pub fn events_with(
        &self,
        kind: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        self.fresh(|s| s.events_with(&ident_key(kind, value), limit))
    }

    /// Every durably stored fact as text, canonically ordered: two states (incremental vs
    /// rebuilt) are compared line by line. Pending changes are not included: checkpoint
    /// first.
    pub fn dump(&self) -> Result<Vec<String>, StoreError> {
        self.fresh(|s| s.dump())
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
