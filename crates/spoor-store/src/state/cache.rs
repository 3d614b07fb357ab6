//! The processor's view of the state: reads go through its staged changes, the
//! [pending](super::pending) changes, then a private clean cache, then the backend's last
//! durable checkpoint; writes are staged privately, published to readers by
//! [`ProcessorState::publish`] (at once, unless the processor batches them per chunk of
//! events), and reach the backend at the next [`ProcessorState::checkpoint`], together
//! with the log position, in one transaction.
//!
//! Memory is bounded: pending changes by the checkpoint policy (the processor checkpoints
//! when they exceed a bound), the clean cache by `cap` (about half is dropped when it is
//! exceeded — cheap, and the working set refills it), a profile counting for more than one
//! entry when it holds many audience and computed-trait states ([`super::profile_cache`]).

use super::backend::{ChangeSet, StateBackend, StateSnapshot};
use super::dropper::Dropper;
use super::memberships::{MembershipDelta, MembershipState};
use super::pending::{Layer, Staged};
use super::profile_cache::ProfileCache;
use super::shared::Shared;
use super::tables::{ident_hash_step, ident_key, IDENT_HASH_SEED};
use crate::error::StoreError;
use spoor_core::identity::{
    Decision, Identifier, IdentityStore, ProfileId, ProfileIdentity, SplitRule, SplitRuleId,
    SplitSide,
};
use spoor_core::profile::{Group, Profile};
use std::collections::HashMap;
use std::sync::Arc;

/// The write side of the state, owned by the single processor.
pub struct ProcessorState {
    backend: Arc<dyn StateBackend>,
    /// The last committed checkpoint, for cache misses (shared with readers through
    /// `Pending::snapshot`).
    snap: Arc<dyn StateSnapshot>,
    cap: usize,
    processed_seq: u64,
    durable_seq: u64,
    live_profiles: i64,
    rules: Vec<SplitRule>,
    rule_index: HashMap<Identifier, Vec<(SplitRuleId, SplitSide)>>,
    rules_dirty: bool,
    /// Changes since the last checkpoint, shared with readers.
    pub(super) shared: Arc<Shared>,
    /// Changes not yet published to `shared` (read first by the processor).
    pub(super) staged: Staged,
    /// Whether changes wait in `staged` for [`Self::publish`]; if not, each is published
    /// as it is made.
    batching: bool,
    /// Whether anyone may read `shared` while the processor runs; without readers (a
    /// rebuild's fresh state) changes stay staged until a checkpoint (see
    /// [`Self::without_readers`]).
    readers: bool,
    /// The processed seq last published with the changes.
    published_seq: u64,
    /// Timers and what changed in memberships since the last checkpoint.
    pub(super) mem: MembershipState,
    /// ([`ident_hash`], seq) rows since the last checkpoint (only splits read them, after a
    /// checkpoint).
    ident_events: Vec<(u64, u64)>,
    drop_ident_events: Vec<u64>,
    /// (group, profile) rows since the last checkpoint, and those of the checkpoint in
    /// flight (read with the backend's until it is durable). Only the processor reads them.
    group_members: Vec<(String, u64)>,
    group_members_in_flight: Vec<(String, u64)>,
    c_ident: HashMap<String, Option<u64>>,
    c_pident: HashMap<u64, Option<Arc<ProfileIdentity>>>,
    c_profiles: ProfileCache,
    c_groups: HashMap<String, Arc<Group>>,
    error: Option<StoreError>,
    /// The checkpoint being committed in the background.
    in_flight: Option<InFlight>,
    /// Frees replaced profiles and checkpointed layers off the processor thread.
    dropper: Dropper,
}

impl Drop for ProcessorState {
    /// A checkpoint in flight completes (or fails) before the state goes: a processor
    /// opened next must not read a backend that is still being written.
    fn drop(&mut self) {
        if let Some(f) = self.in_flight.take() {
            let _ = f.handle.join();
        }
    }
}

/// A checkpoint committing on its own thread; it hands the change set back (its values
/// become clean cache).
struct InFlight {
    handle: std::thread::JoinHandle<(ChangeSet, Result<(), StoreError>)>,
    /// The processed seq it makes durable.
    seq: u64,
}

/// The change set of a frozen layer: `head` (the log position, counters and the rows kept
/// outside the layers) completed with the layer's entries and the membership delta. Runs on
/// the checkpoint thread, without the pending lock.
fn change_set(mut c: ChangeSet, l: &Layer, mem: MembershipDelta) -> ChangeSet {
    c.owners = l.owners.iter().map(|(k, v)| (k.clone(), *v)).collect();
    c.identities = l.identities.iter().map(|(k, v)| (*k, v.clone())).collect();
    c.profiles = l.profiles.iter().map(|(k, v)| (*k, v.clone())).collect();
    c.groups = l
        .groups
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    c.drop_rows = l.dropped.iter().copied().collect();
    c.timeline = l
        .timeline
        .iter()
        .flat_map(|(p, rows)| rows.iter().map(move |(ts, seq)| (*p, *ts, *seq)))
        .collect();
    c.decisions = l
        .decisions
        .iter()
        .flat_map(|(p, rows)| {
            rows.iter()
                .map(move |((seq, idx), d)| ((*p, *seq, *idx), d.clone()))
        })
        .collect();
    mem.fill(l, &mut c);
    c
}

/// Drops about half of a map (whichever entries the hash order puts first).
fn halve<K, V>(m: &mut HashMap<K, V>) {
    let mut i = 0usize;
    m.retain(|_, _| {
        i += 1;
        i % 2 == 0
    });
}

impl ProcessorState {
    pub(super) fn new(
        backend: Arc<dyn StateBackend>,
        shared: Arc<Shared>,
        cap: usize,
    ) -> Result<Self, StoreError> {
        let snap: Arc<dyn StateSnapshot> = backend.snapshot()?.into();
        let processed_seq = snap.processed_seq()?;
        let live_profiles = snap.live_profiles()? as i64;
        let rules = snap.split_rules()?;
        let (mem, members) = MembershipState::load(&*snap)?;
        // A previous processor on this store may have left pending changes that never
        // became durable: they are replayed from the log, so start clean.
        // Each copy gets bitmaps of its own, so changing one never copies the other's.
        let mut members = Some(members);
        shared.write(|g, first| {
            g.clear();
            g.snapshot = Some(snap.clone());
            g.seq = processed_seq;
            g.members = if first {
                members.as_ref().map(|m| {
                    m.iter()
                        .map(|(k, b)| (k.clone(), Arc::new((**b).clone())))
                        .collect()
                })
            } else {
                members.take()
            };
        });
        let mut s = Self {
            backend,
            snap,
            cap: cap.max(1024),
            processed_seq,
            durable_seq: processed_seq,
            live_profiles,
            rules: Vec::new(),
            rule_index: HashMap::new(),
            rules_dirty: false,
            shared,
            staged: Staged::default(),
            batching: false,
            readers: true,
            published_seq: processed_seq,
            mem,
            ident_events: Vec::new(),
            drop_ident_events: Vec::new(),
            group_members: Vec::new(),
            group_members_in_flight: Vec::new(),
            c_ident: HashMap::new(),
            c_pident: HashMap::new(),
            c_profiles: ProfileCache::default(),
            c_groups: HashMap::new(),
            error: None,
            in_flight: None,
            dropper: Dropper::new(),
        };
        for r in rules {
            s.index_rule(&r);
            s.rules.push(r);
        }
        Ok(s)
    }

    /// The last log seq whose effects are applied (visible to readers; durable once
    /// [`Self::durable_seq`] reaches it).
    pub fn processed_seq(&self) -> u64 {
        self.processed_seq
    }

    /// The last log seq whose effects are in the backend (survive a crash).
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Marks `seq` applied; readers see it with the changes (see [`Self::publish`]).
    pub fn set_processed(&mut self, seq: u64) {
        self.processed_seq = seq;
        self.changed();
    }

    /// With `on`, changes are staged until [`Self::publish`] (the processor's event loop
    /// publishes once per chunk of events); without, each change is published as it is
    /// made (what the rarer paths — splits, erasures, timers, tests — expect). Turning it
    /// off publishes what is staged.
    pub fn set_batching(&mut self, on: bool) {
        self.batching = on;
        if !on {
            self.publish();
        }
    }

    /// For a state no one reads until it is complete (`spoor rebuild` builds a fresh one
    /// and swaps it in at the end): changes stay staged, owned by the processor alone,
    /// until a checkpoint begins. Publishing every chunk shares each changed profile with
    /// the readers' copies, so the person's next event copies the parts it changes
    /// (copy-on-write) and the old copy is freed later; with no one to read them that was
    /// half of a rebuild's CPU without audiences (2026-12-07, 1 M shop events over 100 k
    /// people: 45.6–50.9 k → 71.4–73.7 k events/s; 22.7–25.1 k → 26.3–27.2 k with 50
    /// audiences and 20 computed traits, whose evaluation dominates).
    pub fn without_readers(&mut self) {
        self.readers = false;
    }

    /// Makes the staged changes and the processed seq visible to readers, together (see
    /// [`Self::publish_now`]); with [`Self::without_readers`], waits for the next
    /// checkpoint instead.
    pub fn publish(&mut self) {
        if self.readers {
            self.publish_now();
        }
    }

    /// Makes the staged changes and the processed seq visible to readers, together: two
    /// short write sections (one per copy of the pending changes, see [`Shared`]) in
    /// which readers do not wait.
    pub(super) fn publish_now(&mut self) {
        if self.staged.is_empty() && self.published_seq == self.processed_seq {
            return;
        }
        // The first copy gets a copy of the changes, the second takes them; their emptied
        // maps come back (freed of their contents outside the locks) to stage the next
        // chunk without regrowing.
        let mut staged = Some(std::mem::take(&mut self.staged));
        let seq = self.processed_seq;
        // The profiles the second copy replaces are the last references to them: freed on
        // the dropper's thread, not in the write section on this one.
        let mut replaced = Vec::new();
        self.shared.write(|g, first| {
            let s = staged.take().expect("staged changes are taken once");
            staged = Some(if first {
                g.install(&s, seq);
                s
            } else {
                g.install_owned(s, seq, &mut replaced)
            });
        });
        if !replaced.is_empty() {
            self.dropper.drop_later(replaced);
        }
        // (Not after an unusually large chunk: its maps would hold their memory.)
        if let Some(mut s) = staged.filter(|s| s.layer.profiles.capacity() <= 1 << 14) {
            s.clear();
            self.staged = s;
        }
        self.published_seq = seq;
    }

    /// Called after every change: publishes it unless the caller batches.
    pub(super) fn changed(&mut self) {
        if !self.batching {
            self.publish();
        }
    }

    /// Entries a checkpoint would write now (for the checkpoint policy's memory bound;
    /// staged entries already pending are counted twice).
    pub fn pending_entries(&self) -> usize {
        self.shared.read().entries() + self.staged.layer.entries()
    }

    /// Whether anything awaits a checkpoint.
    pub fn has_pending(&self) -> bool {
        self.processed_seq != self.durable_seq
            || self.rules_dirty
            || !self.ident_events.is_empty()
            || !self.drop_ident_events.is_empty()
            || !self.group_members.is_empty()
            || self.mem.has_changes()
            || !self.staged.is_empty()
            || !self.shared.read().cur.is_empty()
    }

    /// Number of live profiles (committed + pending).
    pub fn live_profiles(&self) -> u64 {
        self.live_profiles.max(0) as u64
    }

    pub fn adjust_live_profiles(&mut self, delta: i64) {
        self.live_profiles += delta;
    }

    /// A storage failure seen inside an `IdentityStore` call (whose signatures cannot
    /// return errors); the processor checks it after each event and stops.
    pub fn take_error(&mut self) -> Option<StoreError> {
        self.error.take()
    }

    fn note<T>(&mut self, r: Result<T, StoreError>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// The current copy of a profile outside the pending changes: the clean cache (moved
    /// out, no copy) or the last checkpoint.
    fn base_profile(&mut self, raw: u64) -> Result<Option<Arc<Profile>>, StoreError> {
        let frozen = self
            .shared
            .read()
            .frozen
            .as_ref()
            .and_then(|f| f.profiles.get(&raw).cloned());
        if let Some(p) = frozen {
            return Ok(p);
        }
        match self.c_profiles.remove(&raw) {
            Some(p) => Ok(p),
            None => Ok(self.snap.profiles(&[raw])?.pop().flatten().map(Arc::new)),
        }
    }

    /// Changes a profile (created empty if it does not exist yet). Readers see the change
    /// once it is published.
    pub fn with_profile<R>(
        &mut self,
        pid: ProfileId,
        f: impl FnOnce(&mut Profile) -> R,
    ) -> Result<R, StoreError> {
        let raw = pid.raw();
        if let Some(slot) = self.staged.layer.profiles.get_mut(&raw) {
            let p = slot.get_or_insert_with(|| Arc::new(Profile::new(pid)));
            let r = f(Arc::make_mut(p));
            self.changed();
            return Ok(r);
        }
        // A published copy is shared with readers: `make_mut` changes a copy of it.
        let pending = self.shared.read().cur.profiles.get(&raw).cloned();
        let mut p = match pending {
            Some(p) => p,
            None => self.base_profile(raw)?,
        }
        .unwrap_or_else(|| Arc::new(Profile::new(pid)));
        let r = f(Arc::make_mut(&mut p));
        self.staged.layer.profiles.insert(raw, Some(p));
        self.changed();
        Ok(r)
    }

    /// Replaces a profile with one computed elsewhere from its current copy (a backfill
    /// re-evaluates profiles read from the last checkpoint on several threads), so the
    /// current copy is not read again here.
    pub fn put_profile(&mut self, p: Profile) {
        let raw = p.id.raw();
        self.c_profiles.remove(&raw);
        self.staged.layer.profiles.insert(raw, Some(Arc::new(p)));
        self.changed();
    }

    /// Empties the clean cache of profiles (freed on the dropper's thread). A backfill
    /// rewrites up to every profile once and reads none of them again: kept as clean cache
    /// after its checkpoints, they would only push out what processing reads (the cache's
    /// weighted bound keeps their memory bounded either way). Unrelated cached profiles
    /// go too; processing reads them back from the store.
    pub fn drop_clean_profiles(&mut self) {
        let gone = self.c_profiles.take();
        self.dropper.drop_later(gone);
    }

    /// Removes a profile (merged away) and returns what it held.
    pub fn take_profile(&mut self, pid: ProfileId) -> Result<Option<Profile>, StoreError> {
        let raw = pid.raw();
        let pending = match self.staged.layer.profiles.insert(raw, None) {
            Some(p) => Some(p),
            None => self.shared.read().cur.profiles.get(&raw).cloned(),
        };
        let p = match pending {
            Some(p) => p,
            None => self.base_profile(raw)?,
        };
        self.changed();
        Ok(p.map(|a| Arc::try_unwrap(a).unwrap_or_else(|a| (*a).clone())))
    }

    /// Changes a group (created empty if new).
    pub fn with_group<R>(
        &mut self,
        id: &str,
        f: impl FnOnce(&mut Group) -> R,
    ) -> Result<R, StoreError> {
        if let Some(grp) = self.staged.layer.groups.get_mut(id) {
            let r = f(Arc::make_mut(grp));
            self.changed();
            return Ok(r);
        }
        let pending = self.shared.read().group(id);
        let mut grp = match pending.or_else(|| self.c_groups.remove(id)) {
            Some(g) => g,
            None => match self.snap.groups(&[id])?.pop().flatten() {
                Some(g) => Arc::new(g),
                None => Arc::new(Group::new(id)),
            },
        };
        let r = f(Arc::make_mut(&mut grp));
        self.staged.layer.groups.insert(id.to_owned(), grp);
        self.changed();
        Ok(r)
    }

    /// A group as it is now (pending, cached or committed), without changing it.
    pub fn group(&mut self, id: &str) -> Result<Option<Arc<Group>>, StoreError> {
        if let Some(grp) = self.staged.layer.groups.get(id) {
            return Ok(Some(grp.clone()));
        }
        if let Some(grp) = self.shared.read().group(id) {
            return Ok(Some(grp));
        }
        if let Some(grp) = self.c_groups.get(id) {
            return Ok(Some(grp.clone()));
        }
        Ok(self.snap.groups(&[id])?.pop().flatten().map(Arc::new))
    }

    /// Records that a profile joined a group (see [`Self::group_members`]).
    pub fn add_group_member(&mut self, group: &str, pid: ProfileId) {
        self.group_members.push((group.to_owned(), pid.raw()));
    }

    /// Ids of the profiles that joined a group, ascending, each as it was when it joined
    /// (resolve them to live profiles: some may be merged away or gone).
    pub fn group_members(&self, group: &str) -> Result<Vec<u64>, StoreError> {
        let mut ids = self.snap.group_members(group)?;
        ids.extend(
            self.group_members_in_flight
                .iter()
                .chain(&self.group_members)
                .filter(|(g, _)| g == group)
                .map(|(_, p)| *p),
        );
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    pub fn add_timeline(&mut self, pid: ProfileId, ts_ms: i64, seq: u64) {
        self.staged
            .layer
            .timeline
            .entry(pid.raw())
            .or_default()
            .push((ts_ms, seq));
        self.changed();
    }

    pub fn add_ident_event(&mut self, kind: &str, value: &str, seq: u64) {
        // The hash of `ident_key(kind, value)`, without building the key.
        let h = [kind.as_bytes(), &[0x1f], value.as_bytes()]
            .iter()
            .flat_map(|b| b.iter())
            .fold(IDENT_HASH_SEED, |h, b| ident_hash_step(h, *b));
        self.ident_events.push((h, seq));
    }

    /// Deletes the rows saying which events carried this identifier (an erasure), at the
    /// next checkpoint.
    pub fn drop_ident_events(&mut self, kind: &str, value: &str) {
        let gone = super::tables::ident_hash(&super::tables::ident_key(kind, value));
        self.drop_ident_events.push(gone);
        // Rows added before this call go; rows added after it (a re-derivation) stay.
        self.ident_events.retain(|(h, _)| *h != gone);
    }

    pub fn add_decision(
        &mut self,
        pid: Option<ProfileId>,
        seq: u64,
        idx: u32,
        d: &Decision,
    ) -> Result<(), StoreError> {
        self.staged
            .layer
            .decisions
            .entry(pid.map_or(0, |p| p.raw()))
            .or_default()
            .push(((seq, idx), Arc::new(d.clone())));
        self.changed();
        Ok(())
    }

    /// Supersedes a profile's committed timeline, decision and membership history rows (a
    /// split re-derives them; the membership change feed keeps its rows): readers skip
    /// them now, and the next checkpoint deletes them before writing that checkpoint's
    /// rows.
    pub fn drop_rows(&mut self, pid: ProfileId) {
        let l = &mut self.staged.layer;
        l.dropped.insert(pid.raw());
        l.timeline.remove(&pid.raw());
        l.decisions.remove(&pid.raw());
        l.membership_history.remove(&pid.raw());
        self.changed();
    }

    /// Commits every pending change and the processed seq in one transaction and waits
    /// for it (a checkpoint already in flight is finished first).
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        self.begin_checkpoint()?;
        self.finish_checkpoint(true).map(|_| ())
    }

    /// Whether a checkpoint is being committed in the background.
    pub fn checkpoint_in_flight(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Starts a checkpoint: freezes the pending changes (readers and the processor go on
    /// reading them) and commits them, with the processed seq, on a background thread,
    /// while the processor fills a fresh layer. Finishes one already in flight first.
    pub fn begin_checkpoint(&mut self) -> Result<(), StoreError> {
        self.finish_checkpoint(true)?;
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.publish_now();
        // Under the write lock only what is O(1) or O(changed audiences): every Profile API
        // read and every processor change waits while it is held. The change set (about a
        // million entries after a busy interval) is built from the frozen layer, which no
        // one changes any more, on the checkpoint thread.
        // The other copy's current layer equals the frozen one: it is dropped (on a thread
        // of its own: up to a million entries) and the copy shares the frozen layer.
        let (mut frozen, mut mem, mut twin) = (None, None, None);
        self.shared.write(|g, first| {
            if first {
                let l = g.freeze();
                mem = Some(self.mem.take_delta(g));
                frozen = Some(l);
            } else {
                twin = Some(std::mem::take(&mut g.cur));
                g.frozen = frozen.clone();
            }
        });
        if let Some(t) = twin {
            self.dropper.drop_later(t);
        }
        let (layer, mem) = (
            frozen.expect("set by the first call"),
            mem.expect("set by the first call"),
        );
        let head = ChangeSet {
            processed_seq: self.processed_seq,
            live_profiles: self.live_profiles(),
            split_rules: self.rules_dirty.then(|| self.rules.clone()),
            ident_events: std::mem::take(&mut self.ident_events),
            drop_ident_events: std::mem::take(&mut self.drop_ident_events),
            group_members: self.group_members.clone(),
            ..ChangeSet::default()
        };
        self.rules_dirty = false;
        self.group_members_in_flight = std::mem::take(&mut self.group_members);
        let backend = self.backend.clone();
        let seq = self.processed_seq;
        let handle = std::thread::Builder::new()
            .name("spoor-checkpoint".into())
            .spawn(move || {
                let mut changes = change_set(head, &layer, mem);
                drop(layer);
                let r = backend.commit(&mut changes);
                (changes, r)
            })
            .map_err(|e| StoreError::Meta(format!("cannot start a checkpoint thread: {e}")))?;
        self.in_flight = Some(InFlight { handle, seq });
        Ok(())
    }

    /// Completes the checkpoint in flight if it has committed (or, with `wait`, once it
    /// has): the frozen changes are dropped from the pending layer (they are in the
    /// backend now) and kept as clean cache. Returns whether one completed.
    pub fn finish_checkpoint(&mut self, wait: bool) -> Result<bool, StoreError> {
        match &self.in_flight {
            None => return Ok(false),
            Some(f) if !wait && !f.handle.is_finished() => return Ok(false),
            Some(_) => {}
        }
        let InFlight { handle, seq } = self.in_flight.take().expect("checked above");
        let (changes, r) = handle
            .join()
            .map_err(|_| StoreError::Meta("the checkpoint thread panicked".into()))?;
        if let Err(e) = r {
            // Nothing was applied: the processor stops, and a restart replays from the
            // last committed seq. The cache is dropped so nothing uncommitted is believed.
            self.c_ident.clear();
            self.c_pident.clear();
            drop(self.c_profiles.take());
            self.c_groups.clear();
            return Err(e);
        }
        self.durable_seq = seq;
        // A snapshot with the new checkpoint first, then drop the frozen layer: a reader
        // that misses the pending changes from now on finds them in the backend. Readers
        // share this snapshot (installed with the new epoch), so none of them waits to
        // open one while the next checkpoint commits.
        self.snap = self.backend.snapshot()?.into();
        self.group_members_in_flight.clear();
        let snap = self.snap.clone();
        let frozen = self.shared.write(|g, _| g.checkpointed(snap.clone()));
        // The last reference to the frozen layer (up to a million map entries): freed
        // outside the lock, on the dropper's thread, so neither readers nor the processor
        // wait for millions of deallocations.
        if let Some(f) = frozen {
            self.dropper.drop_later(f);
        }
        // What was written is now the freshest copy outside the current layer (which is
        // read first): keep it as clean cache.
        let incoming = changes.owners.len()
            + changes.identities.len()
            + changes
                .profiles
                .iter()
                .map(|(_, p)| super::profile_cache::weight(p))
                .sum::<usize>();
        let held = |s: &Self| s.c_ident.len() + s.c_pident.len() + s.c_profiles.weight();
        while held(self) > 0 && held(self) + incoming > self.cap {
            halve(&mut self.c_ident);
            halve(&mut self.c_pident);
            let gone = self.c_profiles.halve();
            self.dropper.drop_later(gone);
            halve(&mut self.c_groups);
        }
        if incoming > self.cap {
            return Ok(true);
        }
        self.c_ident.extend(changes.owners);
        self.c_pident.extend(changes.identities);
        let replaced = self.c_profiles.extend(changes.profiles);
        self.dropper.drop_later(replaced);
        self.c_groups.extend(changes.groups);
        Ok(true)
    }

    fn index_rule(&mut self, r: &SplitRule) {
        for (ids, side) in [(&r.side_a, SplitSide::A), (&r.side_b, SplitSide::B)] {
            for id in ids {
                self.rule_index
                    .entry(id.clone())
                    .or_default()
                    .push((r.id, side));
            }
        }
    }

    fn get_ident(&mut self, key: &str) -> Result<Option<u64>, StoreError> {
        if let Some(v) = self.staged.layer.owners.get(key) {
            return Ok(*v);
        }
        if let Some(v) = self.shared.read().owner(key) {
            return Ok(v);
        }
        if let Some(v) = self.c_ident.get(key) {
            return Ok(*v);
        }
        let v = self.snap.owners(&[key])?.pop().flatten();
        self.c_ident.insert(key.to_owned(), v);
        Ok(v)
    }

    fn get_pident(&mut self, p: u64) -> Result<Option<ProfileIdentity>, StoreError> {
        if let Some(v) = self.staged.layer.identities.get(&p) {
            return Ok(v.as_deref().cloned());
        }
        if let Some(v) = self.shared.read().identity(p) {
            return Ok(v.as_deref().cloned());
        }
        if let Some(v) = self.c_pident.get(&p) {
            return Ok(v.as_deref().cloned());
        }
        let v = self.snap.identities(&[p])?.pop().flatten();
        self.c_pident.insert(p, v.clone().map(Arc::new));
        Ok(v)
    }
}

impl IdentityStore for ProcessorState {
    fn profile_of(&mut self, id: &Identifier) -> Option<ProfileId> {
        let key = ident_key(id.kind.as_str(), &id.value);
        let r = self.get_ident(&key);
        self.note(r).flatten().map(ProfileId::from_raw)
    }

    fn set_owner(&mut self, id: &Identifier, owner: Option<ProfileId>) {
        let key = ident_key(id.kind.as_str(), &id.value);
        self.c_ident.remove(&key);
        self.staged.layer.owners.insert(key, owner.map(|p| p.raw()));
        self.changed();
    }

    fn identity(&mut self, p: ProfileId) -> Option<ProfileIdentity> {
        let r = self.get_pident(p.raw());
        self.note(r).flatten()
    }

    fn put_identity(&mut self, p: ProfileId, v: ProfileIdentity) {
        self.c_pident.remove(&p.raw());
        self.staged
            .layer
            .identities
            .insert(p.raw(), Some(Arc::new(v)));
        self.changed();
    }

    fn remove_identity(&mut self, p: ProfileId) {
        self.c_pident.remove(&p.raw());
        self.staged.layer.identities.insert(p.raw(), None);
        self.changed();
    }

    fn split_rules(&self) -> &[SplitRule] {
        &self.rules
    }

    fn add_split_rule(&mut self, rule: SplitRule) {
        self.index_rule(&rule);
        self.rules.push(rule);
        self.rules_dirty = true;
    }

    fn split_memberships(&mut self, id: &Identifier) -> Vec<(SplitRuleId, SplitSide)> {
        self.rule_index.get(id).cloned().unwrap_or_default()
    }
}
