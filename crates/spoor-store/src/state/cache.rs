//! The processor's view of the state: reads go through an in-memory cache, writes are
//! coalesced in memory and committed together with the log position at a checkpoint.
//!
//! Memory is bounded: the clean cache is dropped wholesale when it exceeds its capacity
//! (cheap, and the working set refills it), dirty entries live only until the next
//! checkpoint.

use super::backend::{ChangeSet, StateBackend, StateSnapshot};
use super::tables::ident_key;
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
    /// The last committed checkpoint, for cache misses.
    snap: Box<dyn StateSnapshot>,
    cap: usize,
    processed_seq: u64,
    live_profiles: i64,
    rules: Vec<SplitRule>,
    rule_index: HashMap<Identifier, Vec<(SplitRuleId, SplitSide)>>,
    rules_dirty: bool,
    d_ident: HashMap<String, Option<u64>>,
    d_pident: HashMap<u64, Option<ProfileIdentity>>,
    d_profiles: HashMap<u64, Option<Profile>>,
    d_groups: HashMap<String, Group>,
    d_timeline: Vec<(u64, i64, u64)>,
    d_ident_events: Vec<(String, u64)>,
    d_decisions: Vec<((u64, u64, u32), Decision)>,
    /// Profiles whose timeline and decision rows are deleted (before this checkpoint's inserts).
    d_drop_rows: Vec<u64>,
    c_ident: HashMap<String, Option<u64>>,
    c_pident: HashMap<u64, Option<ProfileIdentity>>,
    c_profiles: HashMap<u64, Option<Profile>>,
    c_groups: HashMap<String, Group>,
    error: Option<StoreError>,
}

impl ProcessorState {
    pub(super) fn new(backend: Arc<dyn StateBackend>, cap: usize) -> Result<Self, StoreError> {
        let snap = backend.snapshot()?;
        let processed_seq = snap.processed_seq()?;
        let live_profiles = snap.live_profiles()? as i64;
        let rules = snap.split_rules()?;
        let mut s = Self {
            backend,
            snap,
            cap: cap.max(1024),
            processed_seq,
            live_profiles,
            rules: Vec::new(),
            rule_index: HashMap::new(),
            rules_dirty: false,
            d_ident: HashMap::new(),
            d_pident: HashMap::new(),
            d_profiles: HashMap::new(),
            d_groups: HashMap::new(),
            d_timeline: Vec::new(),
            d_ident_events: Vec::new(),
            d_decisions: Vec::new(),
            d_drop_rows: Vec::new(),
            c_ident: HashMap::new(),
            c_pident: HashMap::new(),
            c_profiles: HashMap::new(),
            c_groups: HashMap::new(),
            error: None,
        };
        for r in rules {
            s.index_rule(&r);
            s.rules.push(r);
        }
        Ok(s)
    }

    /// The last log seq whose effects are committed (or pending in this checkpoint).
    pub fn processed_seq(&self) -> u64 {
        self.processed_seq
    }

    pub fn set_processed(&mut self, seq: u64) {
        self.processed_seq = seq;
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

    /// The committed copy of a profile (no cache).
    fn read_profile(&self, pid: u64) -> Result<Option<Profile>, StoreError> {
        Ok(self.snap.profiles(&[pid])?.pop().flatten())
    }

    /// The profile to change; created empty if it does not exist yet.
    pub fn profile_mut(&mut self, pid: ProfileId) -> Result<&mut Profile, StoreError> {
        let raw = pid.raw();
        if !matches!(self.d_profiles.get(&raw), Some(Some(_))) {
            // Move it out of the clean cache (no copy); otherwise read it.
            let p = match self.c_profiles.remove(&raw) {
                Some(p) => p,
                None if self.d_profiles.contains_key(&raw) => None,
                None => self.read_profile(raw)?,
            };
            self.d_profiles
                .insert(raw, Some(p.unwrap_or_else(|| Profile::new(pid))));
        }
        match self.d_profiles.get_mut(&raw) {
            Some(Some(p)) => Ok(p),
            _ => Err(StoreError::Meta("profile vanished from the cache".into())),
        }
    }

    /// Removes a profile (merged away) and returns what it held.
    pub fn take_profile(&mut self, pid: ProfileId) -> Result<Option<Profile>, StoreError> {
        let raw = pid.raw();
        let p = match self.d_profiles.remove(&raw) {
            Some(p) => p,
            None => match self.c_profiles.remove(&raw) {
                Some(p) => p,
                None => self.read_profile(raw)?,
            },
        };
        self.d_profiles.insert(raw, None);
        Ok(p)
    }

    pub fn group_mut(&mut self, id: &str) -> Result<&mut Group, StoreError> {
        if !self.d_groups.contains_key(id) {
            let g = match self.c_groups.remove(id) {
                Some(g) => g,
                None => match self.snap.groups(&[id])?.pop().flatten() {
                    Some(g) => g,
                    None => Group::new(id),
                },
            };
            self.d_groups.insert(id.to_owned(), g);
        }
        self.d_groups
            .get_mut(id)
            .ok_or_else(|| StoreError::Meta("group vanished from the cache".into()))
    }

    pub fn add_timeline(&mut self, pid: ProfileId, ts_ms: i64, seq: u64) {
        self.d_timeline.push((pid.raw(), ts_ms, seq));
    }

    pub fn add_ident_event(&mut self, kind: &str, value: &str, seq: u64) {
        self.d_ident_events.push((ident_key(kind, value), seq));
    }

    pub fn add_decision(
        &mut self,
        pid: Option<ProfileId>,
        seq: u64,
        idx: u32,
        d: &Decision,
    ) -> Result<(), StoreError> {
        self.d_decisions
            .push(((pid.map_or(0, |p| p.raw()), seq, idx), d.clone()));
        Ok(())
    }

    /// Deletes a profile's timeline and decision rows at the next checkpoint, before that
    /// checkpoint's new rows are written (a split re-derives them).
    pub fn drop_rows(&mut self, pid: ProfileId) {
        self.d_drop_rows.push(pid.raw());
    }

    /// Commits every pending change and the processed seq in one transaction.
    pub fn checkpoint(&mut self) -> Result<(), StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let mut changes = ChangeSet {
            processed_seq: self.processed_seq,
            live_profiles: self.live_profiles(),
            split_rules: self.rules_dirty.then(|| self.rules.clone()),
            owners: self.d_ident.drain().collect(),
            identities: self.d_pident.drain().collect(),
            profiles: self.d_profiles.drain().collect(),
            groups: self.d_groups.drain().collect(),
            drop_rows: std::mem::take(&mut self.d_drop_rows),
            timeline: std::mem::take(&mut self.d_timeline),
            ident_events: std::mem::take(&mut self.d_ident_events),
            decisions: std::mem::take(&mut self.d_decisions),
        };
        if let Err(e) = self.backend.commit(&mut changes) {
            // Nothing was applied: the processor stops, and a restart replays from the
            // last committed seq. The cache is dropped so nothing uncommitted is believed.
            self.c_ident.clear();
            self.c_pident.clear();
            self.c_profiles.clear();
            self.c_groups.clear();
            return Err(e);
        }
        self.rules_dirty = false;
        // What was written is now the freshest copy: keep it as clean cache.
        let incoming = changes.owners.len() + changes.identities.len() + changes.profiles.len();
        if self.c_ident.len() + self.c_pident.len() + self.c_profiles.len() + incoming > self.cap {
            self.c_ident.clear();
            self.c_pident.clear();
            self.c_profiles.clear();
            self.c_groups.clear();
        }
        self.c_ident.extend(changes.owners);
        self.c_pident.extend(changes.identities);
        self.c_profiles.extend(changes.profiles);
        self.c_groups.extend(changes.groups);
        self.snap = self.backend.snapshot()?;
        Ok(())
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
        if let Some(v) = self.d_ident.get(key) {
            return Ok(*v);
        }
        if let Some(v) = self.c_ident.get(key) {
            return Ok(*v);
        }
        let v = self.snap.owners(&[key])?.pop().flatten();
        self.c_ident.insert(key.to_owned(), v);
        Ok(v)
    }

    fn get_pident(&mut self, p: u64) -> Result<Option<ProfileIdentity>, StoreError> {
        if let Some(v) = self.d_pident.get(&p) {
            return Ok(v.clone());
        }
        if let Some(v) = self.c_pident.get(&p) {
            return Ok(v.clone());
        }
        let v = self.snap.identities(&[p])?.pop().flatten();
        self.c_pident.insert(p, v.clone());
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
        self.d_ident.insert(key, owner.map(|p| p.raw()));
    }

    fn identity(&mut self, p: ProfileId) -> Option<ProfileIdentity> {
        let r = self.get_pident(p.raw());
        self.note(r).flatten()
    }

    fn put_identity(&mut self, p: ProfileId, v: ProfileIdentity) {
        self.c_pident.remove(&p.raw());
        self.d_pident.insert(p.raw(), Some(v));
    }

    fn remove_identity(&mut self, p: ProfileId) {
        self.c_pident.remove(&p.raw());
        self.d_pident.insert(p.raw(), None);
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
