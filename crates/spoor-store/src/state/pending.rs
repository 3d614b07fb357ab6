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
//!
//! Two layers: `cur` takes the processor's changes; a checkpoint freezes it (`frozen`) and
//! commits it on a background thread while the processor goes on filling a fresh `cur`. A
//! commit of a large checkpoint takes seconds on a B-tree; processing does not stop for it.
//! Lookups read `cur`, then `frozen`, then the backend; once the commit is durable the
//! frozen layer is dropped and `epoch` moves on.
//!
//! The processor does not change this in place: it builds a chunk of events' changes in a
//! private [`Staged`] and installs it here with [`Pending::install`], in both copies of
//! [`super::shared::Shared`] — so readers never wait for it and see each event whole.

use super::backend::StateSnapshot;
use super::memberships::MembershipChange;
use super::profile_cache::weight;
use roaring::RoaringTreemap;
use spoor_core::identity::{Decision, ProfileIdentity};
use spoor_core::profile::{Group, Profile};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// ((seq, index within the event), decision).
pub(super) type DecisionRow = ((u64, u32), Arc<Decision>);

/// One generation of changes (what one checkpoint writes).
#[derive(Default, Clone)]
pub(super) struct Layer {
    /// Identifier key → owner (`None`: removed).
    pub owners: HashMap<String, Option<u64>>,
    pub identities: HashMap<u64, Option<Arc<ProfileIdentity>>>,
    pub profiles: HashMap<u64, Option<Arc<Profile>>>,
    pub groups: HashMap<String, Arc<Group>>,
    /// New timeline rows (event time, seq) per profile.
    pub timeline: HashMap<u64, Vec<(i64, u64)>>,
    /// New decisions per profile (0: none) in insertion order.
    pub decisions: HashMap<u64, Vec<DecisionRow>>,
    /// Profiles whose older rows (committed, and those of older layers) are superseded (a
    /// split re-derives them); readers skip those rows.
    pub dropped: HashSet<u64>,
    /// New membership change feed rows (change number, change), in number order.
    pub membership_feed: Vec<(u64, Arc<MembershipChange>)>,
    /// The same rows per profile (a split drops a profile's rows from here, not the feed).
    pub membership_history: HashMap<u64, Vec<(u64, Arc<MembershipChange>)>>,
    /// The sum of the profiles' weights ([`super::profile_cache::weight`]: one, plus one
    /// per 8 audience and computed-trait states), kept by [`Pending`]'s installs, so that
    /// the checkpoint policy's bound on entries bounds memory with many audiences too. A
    /// staged layer keeps 0: its profiles count one each.
    pub profile_weight: usize,
}

impl Layer {
    /// Entries that a checkpoint would write (a bound on memory, not bytes).
    pub fn entries(&self) -> usize {
        self.owners.len()
            + self.identities.len()
            + self.profiles.len().max(self.profile_weight)
            + self.groups.len()
            + self.membership_feed.len()
    }

    /// Inserts a profile, keeping `profile_weight`; returns the one it replaces.
    fn put_profile(&mut self, k: u64, v: Option<Arc<Profile>>) -> Option<Option<Arc<Profile>>> {
        self.profile_weight += weight(&v);
        let old = self.profiles.insert(k, v)?;
        self.profile_weight -= weight(&old);
        Some(old)
    }

    pub fn is_empty(&self) -> bool {
        self.entries() == 0
            && self.timeline.is_empty()
            && self.decisions.is_empty()
            && self.dropped.is_empty()
            && self.membership_history.is_empty()
    }
}

/// Changes the processor made since it last published them: a layer, and audience
/// membership changes (audience → profile → member or not).
#[derive(Default)]
pub(super) struct Staged {
    pub layer: Layer,
    pub members: HashMap<String, HashMap<u64, bool>>,
}

impl Staged {
    pub fn is_empty(&self) -> bool {
        self.layer.is_empty() && self.members.is_empty()
    }

    /// Empties it, keeping the maps' capacity (the processor stages the next chunk in it).
    pub fn clear(&mut self) {
        let Layer {
            owners,
            identities,
            profiles,
            groups,
            timeline,
            decisions,
            dropped,
            membership_feed,
            membership_history,
            profile_weight,
        } = &mut self.layer;
        owners.clear();
        identities.clear();
        profiles.clear();
        groups.clear();
        timeline.clear();
        decisions.clear();
        dropped.clear();
        membership_feed.clear();
        membership_history.clear();
        *profile_weight = 0;
        self.members.clear();
    }
}

/// Appends `rows` to `p`'s rows in `m`.
fn append<T: Clone>(m: &mut HashMap<u64, Vec<T>>, p: u64, rows: &[T]) {
    m.entry(p).or_default().extend_from_slice(rows);
}

/// Moves `rows` to the end of `p`'s rows in `m` (as they are if `p` has none yet).
fn append_owned<T>(m: &mut HashMap<u64, Vec<T>>, p: u64, mut rows: Vec<T>) {
    match m.entry(p) {
        Entry::Occupied(mut e) => e.get_mut().append(&mut rows),
        Entry::Vacant(e) => {
            e.insert(rows);
        }
    }
}

/// Changes not yet in the backend. Readers consult this before the backend snapshot.
#[derive(Default)]
pub(super) struct Pending {
    /// The last log seq whose changes are here (published with them).
    pub seq: u64,
    /// How many checkpoints have been cleared from here. A reader whose backend snapshot is
    /// older than this must reopen it (the cleared changes are only in newer snapshots).
    pub epoch: u64,
    /// Changes since the last checkpoint began.
    pub cur: Layer,
    /// The changes a checkpoint is committing now.
    pub frozen: Option<Arc<Layer>>,
    /// A backend snapshot opened after the checkpoint that made this `epoch` committed
    /// (`None`: none installed yet; readers open their own). Readers share it instead of
    /// each opening one: opening a snapshot waits while a checkpoint commits (redb takes
    /// its header lock), which put milliseconds on the Profile API's tail latency.
    pub snapshot: Option<Arc<dyn StateSnapshot>>,
    /// Audience → members, when a processor has loaded them (`None`: readers use the
    /// backend). Not a delta: a checkpoint does not clear it.
    pub members: Option<HashMap<String, Arc<RoaringTreemap>>>,
}

/// Looks a key up in the newest layer that has it.
fn find<'a, K, V, Q>(
    cur: &'a HashMap<K, V>,
    frozen: Option<&'a HashMap<K, V>>,
    k: &Q,
) -> Option<&'a V>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: std::hash::Hash + Eq + ?Sized,
{
    cur.get(k).or_else(|| frozen.and_then(|f| f.get(k)))
}

impl Pending {
    /// Entries the next checkpoint would write (for the checkpoint policy).
    pub fn entries(&self) -> usize {
        self.cur.entries()
    }

    /// Freezes the current layer for a checkpoint; it stays readable until
    /// [`Self::checkpointed`]. A checkpoint must not already be in flight.
    pub fn freeze(&mut self) -> Arc<Layer> {
        debug_assert!(self.frozen.is_none(), "one checkpoint at a time");
        let l = Arc::new(std::mem::take(&mut self.cur));
        self.frozen = Some(l.clone());
        l
    }

    /// Takes the frozen layer out once its checkpoint is durable; `snapshot` was opened
    /// after it committed (readers share it from now on). The caller drops the layer after
    /// releasing the lock: freeing a layer of a million entries takes a while.
    #[must_use = "drop the layer outside the lock"]
    pub fn checkpointed(&mut self, snapshot: Arc<dyn StateSnapshot>) -> Option<Arc<Layer>> {
        self.epoch += 1;
        self.snapshot = Some(snapshot);
        self.frozen.take()
    }

    /// Empties both layers (a processor starting over: what was pending is replayed).
    /// The shared snapshot goes too: the epoch moves on, and a snapshot is only ever
    /// shared with the epoch it is fresh for.
    pub fn clear(&mut self) {
        self.cur = Layer::default();
        self.frozen = None;
        self.snapshot = None;
        self.epoch += 1;
    }

    /// Adds a chunk of the processor's changes to the current layer, with the seq they
    /// reach, copying them (the first of the two copies of [`super::shared::Shared`]; the
    /// second takes them with [`Self::install_owned`]). Superseded rows go first: rows
    /// staged for a profile were added after its rows were dropped (dropping removes staged
    /// rows too).
    pub fn install(&mut self, s: &Staged, seq: u64) {
        let l = &s.layer;
        self.drop_rows(l);
        let cur = &mut self.cur;
        cur.owners
            .extend(l.owners.iter().map(|(k, v)| (k.clone(), *v)));
        cur.identities
            .extend(l.identities.iter().map(|(k, v)| (*k, v.clone())));
        cur.profiles.reserve(l.profiles.len());
        for (k, v) in &l.profiles {
            cur.put_profile(*k, v.clone());
        }
        cur.groups
            .extend(l.groups.iter().map(|(k, v)| (k.clone(), v.clone())));
        for (p, rows) in &l.timeline {
            append(&mut cur.timeline, *p, rows);
        }
        for (p, rows) in &l.decisions {
            append(&mut cur.decisions, *p, rows);
        }
        for (p, rows) in &l.membership_history {
            append(&mut cur.membership_history, *p, rows);
        }
        cur.membership_feed.extend_from_slice(&l.membership_feed);
        self.apply_members(&s.members);
        self.seq = seq;
    }

    /// [`Self::install`], taking the changes instead of copying them: keys and values move
    /// (no string copies, no reference count traffic), and a profile's rows move as they
    /// are when it has none here yet. Returns what is left of `s` (its emptied maps) for
    /// the caller to free outside the lock, and pushes the profiles it replaces onto
    /// `replaced` (the caller frees them elsewhere: see `super::dropper`).
    pub fn install_owned(
        &mut self,
        mut s: Staged,
        seq: u64,
        replaced: &mut Vec<Option<Arc<Profile>>>,
    ) -> Staged {
        let l = &mut s.layer;
        self.drop_rows(l);
        let cur = &mut self.cur;
        cur.owners.extend(l.owners.drain());
        cur.identities.extend(l.identities.drain());
        cur.profiles.reserve(l.profiles.len());
        for (k, v) in l.profiles.drain() {
            if let Some(old) = cur.put_profile(k, v) {
                replaced.push(old);
            }
        }
        cur.groups.extend(l.groups.drain());
        for (p, rows) in l.timeline.drain() {
            append_owned(&mut cur.timeline, p, rows);
        }
        for (p, rows) in l.decisions.drain() {
            append_owned(&mut cur.decisions, p, rows);
        }
        for (p, rows) in l.membership_history.drain() {
            append_owned(&mut cur.membership_history, p, rows);
        }
        cur.membership_feed.append(&mut l.membership_feed);
        self.apply_members(&s.members);
        self.seq = seq;
        s
    }

    /// Drops the rows of the profiles `l` supersedes (before `l`'s own rows are added).
    fn drop_rows(&mut self, l: &Layer) {
        let cur = &mut self.cur;
        for p in &l.dropped {
            cur.timeline.remove(p);
            cur.decisions.remove(p);
            cur.membership_history.remove(p);
            cur.dropped.insert(*p);
        }
    }

    /// Applies staged membership changes to the member bitmaps.
    fn apply_members(&mut self, members: &HashMap<String, HashMap<u64, bool>>) {
        if members.is_empty() {
            return;
        }
        let m = self.members.get_or_insert_with(HashMap::new);
        for (audience, ops) in members {
            if !m.contains_key(audience) && !ops.values().any(|member| *member) {
                continue;
            }
            // Each copy owns its bitmaps, so this copies one only while a reader or a
            // checkpoint holds it.
            let b = Arc::make_mut(m.entry(audience.clone()).or_default());
            for (p, member) in ops {
                if *member {
                    b.insert(*p);
                } else {
                    b.remove(*p);
                }
            }
        }
    }

    pub fn owner(&self, key: &str) -> Option<Option<u64>> {
        find(
            &self.cur.owners,
            self.frozen.as_ref().map(|f| &f.owners),
            key,
        )
        .copied()
    }

    pub fn identity(&self, p: u64) -> Option<Option<Arc<ProfileIdentity>>> {
        find(
            &self.cur.identities,
            self.frozen.as_ref().map(|f| &f.identities),
            &p,
        )
        .cloned()
    }

    pub fn profile(&self, p: u64) -> Option<Option<Arc<Profile>>> {
        find(
            &self.cur.profiles,
            self.frozen.as_ref().map(|f| &f.profiles),
            &p,
        )
        .cloned()
    }

    pub fn group(&self, id: &str) -> Option<Arc<Group>> {
        find(
            &self.cur.groups,
            self.frozen.as_ref().map(|f| &f.groups),
            id,
        )
        .cloned()
    }

    /// Whether the backend's rows of `p` are superseded.
    pub fn dropped(&self, p: u64) -> bool {
        self.cur.dropped.contains(&p)
            || self.frozen.as_ref().is_some_and(|f| f.dropped.contains(&p))
    }

    /// Pending rows of `pids` from both layers (the frozen layer's rows of a profile the
    /// current layer dropped are superseded).
    fn rows_of<T: Clone>(
        &self,
        pids: &[u64],
        rows: impl Fn(&Layer) -> &HashMap<u64, Vec<T>>,
        keep: impl Fn(&T) -> bool,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for p in pids {
            if let Some(f) = self
                .frozen
                .as_deref()
                .filter(|_| !self.cur.dropped.contains(p))
            {
                if let Some(r) = rows(f).get(p) {
                    out.extend(r.iter().filter(|r| keep(r)).cloned());
                }
            }
            if let Some(r) = rows(&self.cur).get(p) {
                out.extend(r.iter().filter(|r| keep(r)).cloned());
            }
        }
        out
    }

    /// Timeline rows of `pids` strictly before `before`.
    pub fn timeline_of(&self, pids: &[u64], before: Option<(i64, u64)>) -> Vec<(i64, u64)> {
        self.rows_of(pids, |l| &l.timeline, |r| before.is_none_or(|b| *r < b))
    }

    /// Decisions of `pids` as ((seq, index), decision).
    pub fn decisions_of(&self, pids: &[u64]) -> Vec<DecisionRow> {
        self.rows_of(pids, |l| &l.decisions, |_| true)
    }

    /// Membership history rows of `pids` as (change number, change).
    pub fn history_of(&self, pids: &[u64]) -> Vec<(u64, Arc<MembershipChange>)> {
        self.rows_of(pids, |l| &l.membership_history, |_| true)
    }

    /// Feed rows numbered after `after`, in number order, at most `limit`.
    pub fn feed_after(&self, after: u64, limit: usize) -> Vec<(u64, Arc<MembershipChange>)> {
        self.frozen
            .iter()
            .flat_map(|f| f.membership_feed.iter())
            .chain(self.cur.membership_feed.iter())
            .filter(|(n, _)| *n > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Every pending owner entry, newest layer winning.
    pub fn all_owners(&self) -> HashMap<&String, Option<u64>> {
        let mut m: HashMap<&String, Option<u64>> = HashMap::new();
        if let Some(f) = &self.frozen {
            m.extend(f.owners.iter().map(|(k, v)| (k, *v)));
        }
        m.extend(self.cur.owners.iter().map(|(k, v)| (k, *v)));
        m
    }

    /// Every pending profile entry, newest layer winning.
    pub fn all_profiles(&self) -> HashMap<u64, Option<&Arc<Profile>>> {
        let mut m: HashMap<u64, Option<&Arc<Profile>>> = HashMap::new();
        if let Some(f) = &self.frozen {
            m.extend(f.profiles.iter().map(|(k, v)| (*k, v.as_ref())));
        }
        m.extend(self.cur.profiles.iter().map(|(k, v)| (*k, v.as_ref())));
        m
    }
}
