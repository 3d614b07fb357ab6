//! The processor's view of the state: reads go through an in-memory cache, writes are
//! coalesced in memory and committed together with the log position at a checkpoint.
//!
//! Memory is bounded: the clean cache is dropped wholesale when it exceeds its capacity
//! (cheap, and the working set refills it), dirty entries live only until the next
//! checkpoint.

use super::engine_err;
use super::tables::*;
use crate::error::StoreError;
use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase};
use spoor_core::identity::{
    Decision, Identifier, IdentityStore, ProfileId, ProfileIdentity, SplitRule, SplitRuleId,
    SplitSide,
};
use spoor_core::profile::{Group, Profile};
use std::collections::HashMap;
use std::sync::Arc;

/// What a checkpoint wrote.
#[derive(Debug, Default, Clone, Copy)]
pub struct CacheStats {
    pub profiles_written: usize,
    pub identifiers_written: usize,
    pub timeline_rows: usize,
}

/// The tables the processor reads on cache misses, opened once per snapshot (opening a
/// table costs more than a point lookup).
struct SnapTables {
    ident: ReadOnlyTable<&'static str, u64>,
    pident: ReadOnlyTable<u64, &'static [u8]>,
    profiles: ReadOnlyTable<u64, &'static [u8]>,
    groups: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl SnapTables {
    fn open(snap: &ReadTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            ident: snap.open_table(IDENT).map_err(engine_err)?,
            pident: snap.open_table(PIDENT).map_err(engine_err)?,
            profiles: snap.open_table(PROFILES).map_err(engine_err)?,
            groups: snap.open_table(GROUPS).map_err(engine_err)?,
        })
    }
}

/// The write side of the state, owned by the single processor.
pub struct ProcessorState {
    db: Arc<Database>,
    snap: SnapTables,
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
    d_decisions: Vec<((u64, u64, u32), Vec<u8>)>,
    /// Profiles whose timeline and decision rows are deleted (before this checkpoint's inserts).
    d_drop_rows: Vec<u64>,
    c_ident: HashMap<String, Option<u64>>,
    c_pident: HashMap<u64, Option<ProfileIdentity>>,
    c_profiles: HashMap<u64, Option<Profile>>,
    c_groups: HashMap<String, Group>,
    error: Option<StoreError>,
}

/// A map's entries in key order.
fn sorted<K: Ord, V>(m: &HashMap<K, V>) -> Vec<(&K, &V)> {
    let mut v: Vec<(&K, &V)> = m.iter().collect();
    v.sort_unstable_by(|a, b| a.0.cmp(b.0));
    v
}

fn read_u64(snap: &ReadTransaction, key: &str) -> Result<Option<u64>, StoreError> {
    let t = snap.open_table(META).map_err(engine_err)?;
    let v = t.get(key).map_err(engine_err)?;
    Ok(v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

impl ProcessorState {
    pub(super) fn new(db: Arc<Database>, cap: usize) -> Result<Self, StoreError> {
        let snap = db.begin_read().map_err(engine_err)?;
        let processed_seq = read_u64(&snap, K_PROCESSED)?.unwrap_or(0);
        let live_profiles = read_u64(&snap, K_LIVE_PROFILES)?.unwrap_or(0) as i64;
        let rules: Vec<SplitRule> = {
            let t = snap.open_table(META).map_err(engine_err)?;
            match t.get(K_SPLIT_RULES).map_err(engine_err)? {
                Some(v) => from_json(v.value())?,
                None => Vec::new(),
            }
        };
        let snap = SnapTables::open(&snap)?;
        let mut s = Self {
            db,
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
        match self.snap.profiles.get(pid).map_err(engine_err)? {
            Some(v) => Ok(Some(from_json(v.value())?)),
            None => Ok(None),
        }
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
                None => {
                    let found = self
                        .snap
                        .groups
                        .get(id)
                        .map_err(engine_err)?
                        .map(|v| v.value().to_vec());
                    match found {
                        Some(b) => from_json(&b)?,
                        None => Group::new(id),
                    }
                }
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
            .push(((pid.map_or(0, |p| p.raw()), seq, idx), json(d)?));
        Ok(())
    }

    /// Deletes a profile's timeline and decision rows at the next checkpoint, before that
    /// checkpoint's new rows are written (a split re-derives them).
    pub fn drop_rows(&mut self, pid: ProfileId) {
        self.d_drop_rows.push(pid.raw());
    }

    /// Entries waiting for the next checkpoint (a checkpoint trigger).
    pub fn pending(&self) -> usize {
        self.d_timeline.len() + self.d_profiles.len()
    }

    /// Commits every pending change and the processed seq in one transaction.
    pub fn checkpoint(&mut self) -> Result<CacheStats, StoreError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let stats = CacheStats {
            profiles_written: self.d_profiles.len(),
            identifiers_written: self.d_ident.len(),
            timeline_rows: self.d_timeline.len(),
        };
        let tx = self.db.begin_write().map_err(engine_err)?;
        {
            // In key order: a B-tree takes sorted inserts several times faster than random
            // ones (the path to the leaf is hot and each leaf is written once).
            let mut t = tx.open_table(IDENT).map_err(engine_err)?;
            for (k, v) in sorted(&self.d_ident) {
                match v {
                    Some(p) => t.insert(k.as_str(), *p).map_err(engine_err)?,
                    None => t.remove(k.as_str()).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(PIDENT).map_err(engine_err)?;
            for (k, v) in sorted(&self.d_pident) {
                match v {
                    Some(p) => t.insert(*k, json(p)?.as_slice()).map_err(engine_err)?,
                    None => t.remove(*k).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(PROFILES).map_err(engine_err)?;
            for (k, v) in sorted(&self.d_profiles) {
                match v {
                    Some(p) => t.insert(*k, json(p)?.as_slice()).map_err(engine_err)?,
                    None => t.remove(*k).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(GROUPS).map_err(engine_err)?;
            for (k, g) in sorted(&self.d_groups) {
                t.insert(k.as_str(), json(g)?.as_slice())
                    .map_err(engine_err)?;
            }
            let mut t = tx.open_table(TIMELINE).map_err(engine_err)?;
            for p in &self.d_drop_rows {
                t.retain_in((*p, i64::MIN, 0)..=(*p, i64::MAX, u64::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            self.d_timeline.sort_unstable();
            for k in &self.d_timeline {
                t.insert(*k, ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
            self.d_ident_events.sort_unstable();
            for (k, seq) in &self.d_ident_events {
                t.insert((k.as_str(), *seq), ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(DECISIONS).map_err(engine_err)?;
            for p in &self.d_drop_rows {
                t.retain_in((*p, 0, 0)..=(*p, u64::MAX, u32::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            self.d_decisions.sort_by_key(|(k, _)| *k); // stable: a re-derived row replaces
            for (k, v) in &self.d_decisions {
                t.insert(*k, v.as_slice()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(META).map_err(engine_err)?;
            t.insert(K_PROCESSED, self.processed_seq.to_le_bytes().as_slice())
                .map_err(engine_err)?;
            t.insert(
                K_LIVE_PROFILES,
                self.live_profiles().to_le_bytes().as_slice(),
            )
            .map_err(engine_err)?;
            if self.rules_dirty {
                t.insert(K_SPLIT_RULES, json(&self.rules)?.as_slice())
                    .map_err(engine_err)?;
            }
        }
        tx.commit().map_err(engine_err)?;
        self.rules_dirty = false;
        self.d_timeline.clear();
        self.d_ident_events.clear();
        self.d_decisions.clear();
        self.d_drop_rows.clear();
        // What was written is now the freshest copy: keep it as clean cache.
        let incoming = self.d_ident.len() + self.d_pident.len() + self.d_profiles.len();
        if self.c_ident.len() + self.c_pident.len() + self.c_profiles.len() + incoming > self.cap {
            self.c_ident.clear();
            self.c_pident.clear();
            self.c_profiles.clear();
            self.c_groups.clear();
        }
        self.c_ident.extend(self.d_ident.drain());
        self.c_pident.extend(self.d_pident.drain());
        self.c_profiles.extend(self.d_profiles.drain());
        self.c_groups.extend(self.d_groups.drain());
        self.snap = SnapTables::open(&self.db.begin_read().map_err(engine_err)?)?;
        Ok(stats)
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
        let v = self
            .snap
            .ident
            .get(key)
            .map_err(engine_err)?
            .map(|v| v.value());
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
        let v: Option<ProfileIdentity> = match self.snap.pident.get(p).map_err(engine_err)? {
            Some(v) => Some(from_json(v.value())?),
            None => None,
        };
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
