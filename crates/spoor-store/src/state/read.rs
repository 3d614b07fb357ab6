//! Read snapshots of the state, for the Profile API and tools. A snapshot sees one
//! committed checkpoint and never blocks (or is blocked by) the processor.

use super::engine_err;
use super::tables::*;
use crate::error::StoreError;
use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use spoor_core::identity::{Decision, Identifier, ProfileId, ProfileIdentity, ProfileStatus};
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
    tx: ReadTransaction,
}

impl StateReader {
    pub(super) fn new(db: &Database) -> Result<Self, StoreError> {
        Ok(Self {
            tx: db.begin_read().map_err(engine_err)?,
        })
    }

    fn meta_u64(&self, key: &str) -> Result<u64, StoreError> {
        let t = self.tx.open_table(META).map_err(engine_err)?;
        let v = t.get(key).map_err(engine_err)?;
        Ok(
            v.and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
                .unwrap_or(0),
        )
    }

    /// The last log seq whose effects this snapshot contains.
    pub fn processed_seq(&self) -> Result<u64, StoreError> {
        self.meta_u64(K_PROCESSED)
    }

    pub fn live_profiles(&self) -> Result<u64, StoreError> {
        self.meta_u64(K_LIVE_PROFILES)
    }

    /// The profile that owns an identifier (already normalised).
    pub fn owner(&self, kind: &str, value: &str) -> Result<Option<ProfileId>, StoreError> {
        let t = self.tx.open_table(IDENT).map_err(engine_err)?;
        let v = t.get(ident_key(kind, value).as_str()).map_err(engine_err)?;
        Ok(v.map(|v| ProfileId::from_raw(v.value())))
    }

    pub fn identity(&self, p: ProfileId) -> Result<Option<ProfileIdentity>, StoreError> {
        let t = self.tx.open_table(PIDENT).map_err(engine_err)?;
        let v = t.get(p.raw()).map_err(engine_err)?;
        v.map(|v| from_json(v.value())).transpose()
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
        let t = self.tx.open_table(PROFILES).map_err(engine_err)?;
        let v = t.get(p.raw()).map_err(engine_err)?;
        v.map(|v| from_json(v.value())).transpose()
    }

    pub fn group(&self, id: &str) -> Result<Option<Group>, StoreError> {
        let t = self.tx.open_table(GROUPS).map_err(engine_err)?;
        let v = t.get(id).map_err(engine_err)?;
        v.map(|v| from_json(v.value())).transpose()
    }

    /// The profile and every profile merged into it, transitively.
    pub fn cluster(&self, p: ProfileId) -> Result<Vec<ProfileId>, StoreError> {
        let mut out = vec![p];
        let mut i = 0;
        while i < out.len() && out.len() < 100_000 {
            if let Some(id) = self.identity(out[i])? {
                out.extend(
                    id.absorbed
                        .iter()
                        .copied()
                        .filter(|a| !out.contains(a))
                        .collect::<Vec<_>>(),
                );
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
        let t = self.tx.open_table(TIMELINE).map_err(engine_err)?;
        let mut all = Vec::new();
        for p in cluster {
            let hi = match before {
                Some(c) => (p.raw(), c.ts_ms, c.seq),
                None => (p.raw(), i64::MAX, u64::MAX),
            };
            let range = t.range((p.raw(), i64::MIN, 0)..hi).map_err(engine_err)?;
            for row in range.rev().take(limit) {
                let (k, _) = row.map_err(engine_err)?;
                let (_, ts_ms, seq) = k.value();
                all.push(TimelineCursor { ts_ms, seq });
            }
        }
        all.sort_unstable_by(|a, b| b.cmp(a));
        all.truncate(limit);
        Ok(all)
    }

    /// Every identity decision recorded for the cluster, oldest first.
    pub fn decisions(&self, cluster: &[ProfileId]) -> Result<Vec<Decision>, StoreError> {
        let t = self.tx.open_table(DECISIONS).map_err(engine_err)?;
        let mut out: Vec<((u64, u32), Decision)> = Vec::new();
        for p in cluster {
            for row in t
                .range((p.raw(), 0, 0)..=(p.raw(), u64::MAX, u32::MAX))
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

    /// Identifiers of a type whose value starts with `prefix`, in key order after `after`.
    pub fn search_identifiers(
        &self,
        kind: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Identifier, ProfileId)>, StoreError> {
        let t = self.tx.open_table(IDENT).map_err(engine_err)?;
        let start = ident_key(kind, after.unwrap_or(prefix));
        let want = ident_key(kind, prefix);
        let mut out = Vec::new();
        for row in t.range(start.as_str()..).map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            let key = k.value();
            if !key.starts_with(&want) {
                break;
            }
            if after.is_some_and(|a| split_ident_key(key).1 == a) {
                continue;
            }
            let (kind, value) = split_ident_key(key);
            out.push((Identifier::new(kind, value), ProfileId::from_raw(v.value())));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The admin split rules (configuration, not derived state: a rebuild carries them over).
    pub fn split_rules(&self) -> Result<Vec<spoor_core::identity::SplitRule>, StoreError> {
        let t = self.tx.open_table(META).map_err(engine_err)?;
        let v = t.get(K_SPLIT_RULES).map_err(engine_err)?;
        Ok(match v {
            Some(v) => from_json(v.value())?,
            None => Vec::new(),
        })
    }

    /// Live profiles in id order after `after`.
    pub fn list_profiles(
        &self,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<Profile>, StoreError> {
        let t = self.tx.open_table(PROFILES).map_err(engine_err)?;
        let start = after.map_or(0, |p| p.raw().saturating_add(1));
        let mut out = Vec::new();
        for row in t.range(start..).map_err(engine_err)?.take(limit) {
            let (_, v) = row.map_err(engine_err)?;
            out.push(from_json(v.value())?);
        }
        Ok(out)
    }

    /// Seqs of the events that carried an identifier (for splits).
    pub fn events_with(
        &self,
        kind: &str,
        value: &str,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let t = self.tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
        let key = ident_key(kind, value);
        let mut out = Vec::new();
        for row in t
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .map_err(engine_err)?
            .take(limit)
        {
            let (k, _) = row.map_err(engine_err)?;
            out.push(k.value().1);
        }
        Ok(out)
    }

    /// Every row of every table as text, in key order: a canonical form of the state, so
    /// two states (incremental vs rebuilt) can be compared line by line.
    pub fn dump(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let t = self.tx.open_table(IDENT).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!("ident {:?} {}", k.value(), v.value()));
        }
        let t = self.tx.open_table(PIDENT).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "identity {} {}",
                k.value(),
                String::from_utf8_lossy(v.value())
            ));
        }
        let t = self.tx.open_table(PROFILES).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!(
                "profile {} {}",
                k.value(),
                String::from_utf8_lossy(v.value())
            ));
        }
        let t = self.tx.open_table(GROUPS).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
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
        let t = self.tx.open_table(META).map_err(engine_err)?;
        for row in t.iter().map_err(engine_err)? {
            let (k, v) = row.map_err(engine_err)?;
            out.push(format!("meta {:?} {:?}", k.value(), v.value()));
        }
        Ok(out)
    }
}
