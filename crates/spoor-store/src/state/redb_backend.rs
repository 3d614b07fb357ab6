//! The embedded backend of derived state: one redb file. Profiles are binary records
//! (see [`super::tables`]), other values JSON; keys are fixed-width where they are ranged.

use super::backend::{ChangeSet, StateBackend, StateSnapshot};
use super::engine_err;
use super::memberships::{decode_members, read_change, write_change, MembershipChange};
use super::tables::*;
use crate::error::StoreError;
use redb::{Database, ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable};
use spoor_core::identity::{Decision, ProfileIdentity, ProfileStatus, SplitRule};
use spoor_core::profile::{Group, Profile};
use std::ops::Bound;
use std::path::Path;

/// `state.redb` in a directory.
pub struct RedbBackend {
    db: Database,
}

impl RedbBackend {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Meta(format!("{}: {e}", path.display())))?;
        let (index_groups, index_statuses) = {
            use redb::TableHandle;
            let tx = db.begin_read().map_err(engine_err)?;
            let names: Vec<String> = tx
                .list_tables()
                .map_err(engine_err)?
                .map(|t| t.name().to_owned())
                .collect();
            let has = |t: &str| names.iter().any(|n| n == t);
            (
                has(PROFILES.name()) && !has(GROUP_MEMBERS.name()),
                has(PIDENT.name()) && !has(PSTATUS.name()),
            )
        };
        create_all(&db)?;
        check_format(&db)?;
        if index_groups {
            index_group_members(&db)?;
        }
        if index_statuses {
            index_profile_statuses(&db)?;
        }
        Ok(Self { db })
    }
}

/// Fills the group→members index of a state written before it existed, from the profiles'
/// groups (once, when the table is first created on a state that has profiles).
fn index_group_members(db: &Database) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(engine_err)?;
    {
        let profiles = tx.open_table(PROFILES).map_err(engine_err)?;
        let mut t = tx.open_table(GROUP_MEMBERS).map_err(engine_err)?;
        for row in profiles.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            let p = read_profile(v.value())?;
            for g in p.groups.keys() {
                t.insert((g.as_str(), k.value()), ()).map_err(engine_err)?;
            }
        }
    }
    tx.commit().map_err(engine_err)
}

/// Fills the status table of a state written before it existed, from the identity
/// records (once, when the table is first created on a state that has them).
fn index_profile_statuses(db: &Database) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(engine_err)?;
    {
        let pident = tx.open_table(PIDENT).map_err(engine_err)?;
        let mut t = tx.open_table(PSTATUS).map_err(engine_err)?;
        for row in pident.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            let id: ProfileIdentity = from_json(v.value())?;
            t.insert(k.value(), status_code(id.status))
                .map_err(engine_err)?;
        }
    }
    tx.commit().map_err(engine_err)
}

impl RedbBackend {
    /// Rewrites `dir/state.redb` into a fresh file (no stale pages; see
    /// [`crate::rewrite`]). The store must not be open.
    pub fn rewrite(dir: &Path) -> Result<Option<(u64, u64)>, StoreError> {
        crate::rewrite::rewrite_redb(&dir.join("state.redb"), |r, w| {
            use crate::rewrite::copy_table;
            copy_table(r, w, IDENT)?;
            copy_table(r, w, PIDENT)?;
            copy_table(r, w, PSTATUS)?;
            copy_table(r, w, PROFILES)?;
            copy_table(r, w, GROUPS)?;
            copy_table(r, w, GROUP_MEMBERS)?;
            copy_table(r, w, TIMELINE)?;
            copy_table(r, w, IDENT_EVENTS)?;
            copy_table(r, w, DECISIONS)?;
            copy_table(r, w, META)?;
            copy_table(r, w, AUDIENCE_MEMBERS)?;
            copy_table(r, w, TIMERS)?;
            copy_table(r, w, MEMBERSHIP_HISTORY)?;
            copy_table(r, w, MEMBERSHIP_FEED)?;
            Ok(())
        })
    }
}

impl StateBackend for RedbBackend {
    fn commit(&self, c: &mut ChangeSet) -> Result<(), StoreError> {
        // In key order: a B-tree takes sorted inserts several times faster than random ones
        // (the path to the leaf stays hot and each leaf is written once).
        c.owners.sort_by(|a, b| a.0.cmp(&b.0));
        c.identities.sort_by_key(|(k, _)| *k);
        c.profiles.sort_by_key(|(k, _)| *k);
        c.groups.sort_by(|a, b| a.0.cmp(&b.0));
        c.timeline.sort_unstable();
        c.group_members.sort_unstable();
        c.ident_events.sort_unstable();
        c.decisions.sort_by_key(|(k, _)| *k); // stable: a later row with the same key wins
        c.audiences.sort_by(|a, b| a.0.cmp(&b.0));
        c.timers_add.sort_unstable();
        c.timers_remove.sort_unstable();
        c.membership_feed.sort_by_key(|(n, _)| *n);
        c.membership_history
            .sort_by_key(|(n, m)| (m.profile.raw(), m.at_ms, *n));
        let tx = self.db.begin_write().map_err(engine_err)?;
        {
            let mut t = tx.open_table(IDENT).map_err(engine_err)?;
            for (k, v) in &c.owners {
                match v {
                    Some(p) => t.insert(k.as_str(), *p).map_err(engine_err)?,
                    None => t.remove(k.as_str()).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(PIDENT).map_err(engine_err)?;
            let mut st = tx.open_table(PSTATUS).map_err(engine_err)?;
            for (k, v) in &c.identities {
                match v {
                    Some(p) => {
                        t.insert(*k, json(&**p)?.as_slice()).map_err(engine_err)?;
                        st.insert(*k, status_code(p.status)).map_err(engine_err)?
                    }
                    None => {
                        t.remove(*k).map_err(engine_err)?;
                        st.remove(*k).map_err(engine_err)?
                    }
                };
            }
            drop(st);
            let mut t = tx.open_table(PROFILES).map_err(engine_err)?;
            let mut buf = Vec::with_capacity(4096);
            for (k, v) in &c.profiles {
                match v {
                    Some(p) => {
                        write_profile(&mut buf, p);
                        t.insert(*k, buf.as_slice()).map_err(engine_err)?
                    }
                    None => t.remove(*k).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(GROUPS).map_err(engine_err)?;
            for (k, g) in &c.groups {
                t.insert(k.as_str(), json(&**g)?.as_slice())
                    .map_err(engine_err)?;
            }
            let mut t = tx.open_table(GROUP_MEMBERS).map_err(engine_err)?;
            for (g, p) in &c.group_members {
                t.insert((g.as_str(), *p), ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(TIMELINE).map_err(engine_err)?;
            for p in &c.drop_rows {
                t.retain_in((*p, i64::MIN, 0)..=(*p, i64::MAX, u64::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            for k in &c.timeline {
                t.insert(*k, ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
            for h in &c.drop_ident_events {
                t.retain_in((*h, 0)..=(*h, u64::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            for (k, seq) in &c.ident_events {
                t.insert((*k, *seq), ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(DECISIONS).map_err(engine_err)?;
            for p in &c.drop_rows {
                t.retain_in((*p, 0, 0)..=(*p, u64::MAX, u32::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            for (k, d) in &c.decisions {
                t.insert(*k, json(&**d)?.as_slice()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(AUDIENCE_MEMBERS).map_err(engine_err)?;
            for (name, bytes) in &c.audiences {
                match bytes {
                    Some(b) => t.insert(name.as_str(), b.as_slice()).map_err(engine_err)?,
                    None => t.remove(name.as_str()).map_err(engine_err)?,
                };
            }
            let mut t = tx.open_table(TIMERS).map_err(engine_err)?;
            for k in &c.timers_remove {
                t.remove(*k).map_err(engine_err)?;
            }
            for k in &c.timers_add {
                t.insert(*k, ()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(MEMBERSHIP_HISTORY).map_err(engine_err)?;
            for p in &c.drop_rows {
                t.retain_in((*p, i64::MIN, 0)..=(*p, i64::MAX, u64::MAX), |_, _| false)
                    .map_err(engine_err)?;
            }
            for (n, m) in &c.membership_history {
                write_change(&mut buf, m);
                t.insert((m.profile.raw(), m.at_ms, *n), buf.as_slice())
                    .map_err(engine_err)?;
            }
            let mut t = tx.open_table(MEMBERSHIP_FEED).map_err(engine_err)?;
            for (n, m) in &c.membership_feed {
                write_change(&mut buf, m);
                t.insert(*n, buf.as_slice()).map_err(engine_err)?;
            }
            let mut t = tx.open_table(META).map_err(engine_err)?;
            if let Some(n) = c.next_change_no {
                t.insert(K_NEXT_CHANGE, n.to_le_bytes().as_slice())
                    .map_err(engine_err)?;
            }
            t.insert(K_PROCESSED, c.processed_seq.to_le_bytes().as_slice())
                .map_err(engine_err)?;
            t.insert(K_LIVE_PROFILES, c.live_profiles.to_le_bytes().as_slice())
                .map_err(engine_err)?;
            if let Some(rules) = &c.split_rules {
                t.insert(K_SPLIT_RULES, json(rules)?.as_slice())
                    .map_err(engine_err)?;
            }
        }
        tx.commit().map_err(engine_err)
    }

    fn snapshot(&self) -> Result<Box<dyn StateSnapshot>, StoreError> {
        let tx = self.db.begin_read().map_err(engine_err)?;
        Ok(Box::new(RedbSnapshot {
            ident: tx.open_table(IDENT).map_err(engine_err)?,
            pident: tx.open_table(PIDENT).map_err(engine_err)?,
            profiles: tx.open_table(PROFILES).map_err(engine_err)?,
            groups: tx.open_table(GROUPS).map_err(engine_err)?,
            tx,
        }))
    }
}

/// A read transaction with the point-read tables opened once (opening a table costs more
/// than a lookup).
struct RedbSnapshot {
    tx: ReadTransaction,
    ident: ReadOnlyTable<&'static str, u64>,
    pident: ReadOnlyTable<u64, &'static [u8]>,
    profiles: ReadOnlyTable<u64, &'static [u8]>,
    groups: ReadOnlyTable<&'static str, &'static [u8]>,
}

impl RedbSnapshot {
    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let t = self.tx.open_table(META).map_err(engine_err)?;
        let v = t.get(key).map_err(engine_err)?;
        Ok(
            v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
                .unwrap_or(0),
        )
    }

    fn read_profiles(
        &self,
        pids: &[u64],
        read: fn(&[u8]) -> Result<Profile, StoreError>,
    ) -> Result<Vec<Option<Profile>>, StoreError> {
        pids.iter()
            .map(|p| {
                self.profiles
                    .get(*p)
                    .map_err(engine_err)?
                    .map(|v| read(v.value()))
                    .transpose()
            })
            .collect()
    }
}

impl StateSnapshot for RedbSnapshot {
    fn processed_seq(&self) -> Result<u64, StoreError> {
        self.meta_u64(K_PROCESSED)
    }

    fn live_profiles(&self) -> Result<u64, StoreError> {
        self.meta_u64(K_LIVE_PROFILES)
    }

    fn split_rules(&self) -> Result<Vec<SplitRule>, StoreError> {
        let t = self.tx.open_table(META).map_err(engine_err)?;
        let v = t.get(K_SPLIT_RULES).map_err(engine_err)?;
        v.map_or(Ok(Vec::new()), |v| from_json(v.value()))
    }

    fn owners(&self, keys: &[&str]) -> Result<Vec<Option<u64>>, StoreError> {
        keys.iter()
            .map(|k| Ok(self.ident.get(*k).map_err(engine_err)?.map(|v| v.value())))
            .collect()
    }

    fn identities(&self, pids: &[u64]) -> Result<Vec<Option<ProfileIdentity>>, StoreError> {
        pids.iter()
            .map(|p| {
                self.pident
                    .get(*p)
                    .map_err(engine_err)?
                    .map(|v| from_json(v.value()))
                    .transpose()
            })
            .collect()
    }

    fn profiles(&self, pids: &[u64]) -> Result<Vec<Option<Profile>>, StoreError> {
        self.read_profiles(pids, read_profile)
    }

    fn profiles_lazy(&self, pids: &[u64]) -> Result<Vec<Option<Profile>>, StoreError> {
        self.read_profiles(pids, read_profile_lazy)
    }

    fn groups(&self, ids: &[&str]) -> Result<Vec<Option<Group>>, StoreError> {
        ids.iter()
            .map(|g| {
                self.groups
                    .get(*g)
                    .map_err(engine_err)?
                    .map(|v| from_json(v.value()))
                    .transpose()
            })
            .collect()
    }

    fn group_members(&self, group: &str) -> Result<Vec<u64>, StoreError> {
        let t = self.tx.open_table(GROUP_MEMBERS).map_err(engine_err)?;
        let rows = t
            .range((group, 0)..=(group, u64::MAX))
            .map_err(engine_err)?;
        rows.map(|r| r.map(|(k, _)| k.value().1).map_err(engine_err))
            .collect()
    }

    fn timeline(
        &self,
        pids: &[u64],
        before: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let t = self.tx.open_table(TIMELINE).map_err(engine_err)?;
        let mut all = Vec::new();
        for p in pids {
            let hi = before.map_or((*p, i64::MAX, u64::MAX), |(ts, seq)| (*p, ts, seq));
            let range = t.range((*p, i64::MIN, 0)..hi).map_err(engine_err)?;
            for row in range.rev().take(limit) {
                let (k, _) = row.map_err(engine_err)?;
                let (_, ts, seq) = k.value();
                all.push((ts, seq));
            }
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.truncate(limit);
        Ok(all)
    }

    fn timeline_rows(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, u64),
    ) -> Result<(), StoreError> {
        if pids.is_empty() {
            return Ok(());
        }
        let t = self.tx.open_table(TIMELINE).map_err(engine_err)?;
        let range = t
            .range((pids.start, i64::MIN, 0)..(pids.end, i64::MIN, 0))
            .map_err(engine_err)?;
        for row in range {
            let (k, _) = row.map_err(engine_err)?;
            let (p, _, seq) = k.value();
            visit(p, seq);
        }
        Ok(())
    }

    fn timeline_span(&self) -> Result<Option<(u64, u64)>, StoreError> {
        let t = self.tx.open_table(TIMELINE).map_err(engine_err)?;
        let first = t.first().map_err(engine_err)?.map(|(k, _)| k.value().0);
        let last = t.last().map_err(engine_err)?.map(|(k, _)| k.value().0);
        Ok(first.zip(last))
    }

    fn profile_statuses(
        &self,
        pids: std::ops::Range<u64>,
        visit: &mut dyn FnMut(u64, ProfileStatus),
    ) -> Result<(), StoreError> {
        if pids.is_empty() {
            return Ok(());
        }
        let t = self.tx.open_table(PSTATUS).map_err(engine_err)?;
        for row in t.range(pids).map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            visit(k.value(), status_of(v.value()));
        }
        Ok(())
    }

    fn decisions(&self, pids: &[u64]) -> Result<Vec<Decision>, StoreError> {
        let t = self.tx.open_table(DECISIONS).map_err(engine_err)?;
        let mut out: Vec<((u64, u32), Decision)> = Vec::new();
        for p in pids {
            for row in t
                .range((*p, 0, 0)..=(*p, u64::MAX, u32::MAX))
                .map_err(engine_err)?
            {
                let (k, v) = row.map_err(engine_err)?;
                let (_, seq, idx) = k.value();
                out.push(((seq, idx), from_json(v.value())?));
            }
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    fn search_identifiers(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, String, u64)>, StoreError> {
        let want = ident_key(kind, prefix);
        let start = ident_key(kind, after.unwrap_or(prefix));
        let mut out = Vec::new();
        for row in self.ident.range(start.as_str()..).map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            let key = k.value();
            if !key.starts_with(&want) {
                break;
            }
            let (kind, value) = split_ident_key(key);
            if after == Some(value) {
                continue;
            }
            out.push((kind.to_owned(), value.to_owned(), v.value()));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    fn list_profiles(&self, after: Option<u64>, limit: usize) -> Result<Vec<Profile>, StoreError> {
        let start = after.map_or(0, |p| p.saturating_add(1));
        let mut out = Vec::new();
        for row in self
            .profiles
            .range(start..)
            .map_err(engine_err)?
            .take(limit)
        {
            let (_, v) = row.map_err(engine_err)?;
            out.push(read_profile(v.value())?);
        }
        Ok(out)
    }

    fn list_profile_ids(&self, after: Option<u64>, limit: usize) -> Result<Vec<u64>, StoreError> {
        let start = after.map_or(0, |p| p.saturating_add(1));
        let mut out = Vec::new();
        for row in self
            .profiles
            .range(start..)
            .map_err(engine_err)?
            .take(limit)
        {
            let (k, _) = row.map_err(engine_err)?;
            out.push(k.value());
        }
        Ok(out)
    }

    fn events_with(&self, key: &str, limit: usize) -> Result<Vec<u64>, StoreError> {
        let t = self.tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
        let h = ident_hash(key);
        let mut out = Vec::new();
        for row in t
            .range((h, 0)..=(h, u64::MAX))
            .map_err(engine_err)?
            .take(limit)
        {
            let (k, _) = row.map_err(engine_err)?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    fn audience_names(&self) -> Result<Vec<String>, StoreError> {
        let t = self.tx.open_table(AUDIENCE_MEMBERS).map_err(engine_err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(engine_err)? {
            let (k, _) = row.map_err(engine_err)?;
            out.push(k.value().to_owned());
        }
        Ok(out)
    }

    fn audience_bitmaps(&self, names: &[&str]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let t = self.tx.open_table(AUDIENCE_MEMBERS).map_err(engine_err)?;
        names
            .iter()
            .map(|n| Ok(t.get(*n).map_err(engine_err)?.map(|v| v.value().to_vec())))
            .collect()
    }

    fn timers(
        &self,
        after: Option<(i64, u64)>,
        limit: usize,
    ) -> Result<Vec<(i64, u64)>, StoreError> {
        let t = self.tx.open_table(TIMERS).map_err(engine_err)?;
        let range = match after {
            Some(a) => t.range((Bound::Excluded(a), Bound::Unbounded)),
            None => t.range::<(i64, u64)>(..),
        }
        .map_err(engine_err)?;
        let mut out = Vec::new();
        for row in range.take(limit) {
            let (k, _) = row.map_err(engine_err)?;
            out.push(k.value());
        }
        Ok(out)
    }

    fn membership_history(
        &self,
        pids: &[u64],
        limit: usize,
    ) -> Result<Vec<(u64, MembershipChange)>, StoreError> {
        let t = self.tx.open_table(MEMBERSHIP_HISTORY).map_err(engine_err)?;
        let mut all = Vec::new();
        for p in pids {
            let range = t
                .range((*p, i64::MIN, 0)..=(*p, i64::MAX, u64::MAX))
                .map_err(engine_err)?;
            for row in range.rev().take(limit) {
                let (k, v) = row.map_err(engine_err)?;
                let (_, at, n) = k.value();
                all.push(((at, n), read_change(v.value())?));
            }
        }
        all.sort_by_key(|r| std::cmp::Reverse(r.0));
        all.truncate(limit);
        Ok(all.into_iter().map(|((_, n), c)| (n, c)).collect())
    }

    fn membership_feed(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MembershipChange)>, StoreError> {
        let Some(start) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let t = self.tx.open_table(MEMBERSHIP_FEED).map_err(engine_err)?;
        let mut out = Vec::new();
        for row in t.range(start..).map_err(engine_err)?.take(limit) {
            let (k, v) = row.map_err(engine_err)?;
            out.push((k.value(), read_change(v.value())?));
        }
        Ok(out)
    }

    fn next_change_no(&self) -> Result<u64, StoreError> {
        self.meta_u64(K_NEXT_CHANGE)
    }

    fn dump(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        for row in self.ident.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!("ident {:?} {}", k.value(), v.value()));
        }
        for row in self.pident.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "identity {} {}",
                k.value(),
                String::from_utf8_lossy(v.value())
            ));
        }
        // Profiles decoded and printed as JSON: the same text whichever format holds them.
        for row in self.profiles.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "profile {} {}",
                k.value(),
                String::from_utf8_lossy(&json(&read_profile(v.value())?)?)
            ));
        }
        for row in self.groups.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "group {:?} {}",
                k.value(),
                String::from_utf8_lossy(v.value())
            ));
        }
        let t = self.tx.open_table(TIMELINE).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, _) = row.map_err(engine_err)?;
            out.push(format!("timeline {:?}", k.value()));
        }
        let t = self.tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, _) = row.map_err(engine_err)?;
            out.push(format!("ident_event {:?}", k.value()));
        }
        let t = self.tx.open_table(DECISIONS).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "decision {:?} {}",
                k.value(),
                String::from_utf8_lossy(v.value())
            ));
        }
        // Members as id lists: the serialized form depends on how a bitmap was built.
        for name in self.audience_names()? {
            if let Some(b) = self.audience_bitmaps(&[name.as_str()])?.pop().flatten() {
                let ids: Vec<String> = decode_members(&b)?.iter().map(|p| p.to_string()).collect();
                out.push(format!("audience {name:?} {}", ids.join(",")));
            }
        }
        let t = self.tx.open_table(TIMERS).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, _) = row.map_err(engine_err)?;
            out.push(format!("timer {:?}", k.value()));
        }
        let t = self.tx.open_table(MEMBERSHIP_HISTORY).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "membership_history {:?} {}",
                k.value(),
                String::from_utf8_lossy(&json(&read_change(v.value())?)?)
            ));
        }
        let t = self.tx.open_table(MEMBERSHIP_FEED).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "membership_feed {} {}",
                k.value(),
                String::from_utf8_lossy(&json(&read_change(v.value())?)?)
            ));
        }
        out.push(format!("meta next_change_no {}", self.next_change_no()?));
        out.push(format!("meta processed_seq {}", self.processed_seq()?));
        out.push(format!("meta live_profiles {}", self.live_profiles()?));
        out.push(format!(
            "meta split_rules {}",
            String::from_utf8_lossy(&json(&self.split_rules()?)?)
        ));
        Ok(out)
    }
}

#[cfg(test)]
#[path = "redb_backend_tests.rs"]
mod tests;
