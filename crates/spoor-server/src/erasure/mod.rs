//! Right to erasure (GDPR art. 17) and the suppression list: the bookkeeping around the
//! processor's erase step (`processor/erase.rs`).
//!
//! - **Jobs** are kept in the metadata store (`erasure.jobs`) and hold no personal data:
//!   the profile id, counts and the step reached — never the reference the admin typed
//!   (`email:…`), which would itself be the data being erased. A job still `queued` or
//!   `running` at start-up is run again: every step is idempotent.
//! - **Suppression**: SHA-256 of `type:normalised value` of each erased identifier
//!   (`erasure.suppressions`). The processor drops (and erases from the log) any new event
//!   carrying one, so the person is not re-created by a tracking call still in flight or a
//!   re-import. A hash of a low-entropy value (a phone number) can be brute-forced by whoever
//!   holds the data directory; that is the accepted cost of recognising the person again,
//!   and why suppression is optional per erasure and removable by admins.
//! - **Compaction pending** (`erasure.compact_pending`): redb never zeroes freed pages, so
//!   after an erasure the state, metadata and delivery databases are rewritten into fresh
//!   files (`spoor privacy compact`, or automatically when `spoor serve` starts) before the
//!   erasure is complete on disk. See ARCHITECTURE ("Erasure").

pub mod compact;
pub mod retention;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use spoor_core::identity::Identifier;
use spoor_store::meta::MetaStore;
use spoor_store::StoreError;
use std::collections::HashSet;
use std::sync::Arc;

const JOBS: &str = "erasure.jobs";
const SUPPRESSIONS: &str = "erasure.suppressions";
const COMPACT_PENDING: &str = "erasure.compact_pending";
const RETENTION_POLICIES: &str = "retention.policies";
const RETENTION_LAST: &str = "retention.last_run";
/// Finished jobs kept for their status (older ones are dropped).
const KEEP_JOBS: usize = 10_000;

/// `[erasure]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureConfig {
    /// Keep hashed identifiers of erased people so new events carrying them are dropped
    /// (the default for an erasure that does not say).
    pub suppress_by_default: bool,
    /// Rewrite the databases (removing stale pages) when `spoor serve` starts after an
    /// erasure or retention run. Off: run `spoor privacy compact` yourself.
    pub compact_on_start: bool,
}

impl Default for ErasureConfig {
    fn default() -> Self {
        Self {
            suppress_by_default: true,
            compact_on_start: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Done,
    Failed,
}

/// One erasure: what was asked (a profile id) and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErasureJob {
    pub id: String,
    /// The live profile the reference resolved to when the job was created.
    pub profile: String,
    pub suppress: bool,
    pub status: JobStatus,
    /// The step running or reached (plan, suppress, rejected, deliveries, log, state, done).
    pub step: String,
    pub created_ms: i64,
    #[serde(default)]
    pub finished_ms: Option<i64>,
    /// Profiles of the merged cluster removed.
    #[serde(default)]
    pub profiles: usize,
    #[serde(default)]
    pub events: usize,
    #[serde(default)]
    pub rejected_events: usize,
    #[serde(default)]
    pub delivery_rows: usize,
    #[serde(default)]
    pub suppressed_identifiers: usize,
    /// Audience exits recorded.
    #[serde(default)]
    pub exits: usize,
    /// Whether the databases have been rewritten since (no stale page left).
    #[serde(default)]
    pub compacted: bool,
    #[serde(default)]
    pub error: Option<String>,
}

/// A suppressed identifier, as listed to admins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    /// Lowercase hex SHA-256 of `type:normalised value`.
    pub hash: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub erasure: String,
    pub added_ms: i64,
}

/// SHA-256 of `type:value` of a normalised identifier.
pub fn identifier_hash(kind: &str, value: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(kind.as_bytes());
    h.update(b":");
    h.update(value.as_bytes());
    h.finalize().into()
}

/// The erasure bookkeeping shared by the API and the processor.
pub struct Privacy {
    meta: Arc<MetaStore>,
    /// The suppression list in memory, for the processor's per-event check.
    suppressed: parking_lot::RwLock<HashSet<[u8; 32]>>,
    lock: parking_lot::Mutex<()>,
}

fn err(e: StoreError) -> String {
    e.to_string()
}

impl Privacy {
    pub fn open(meta: Arc<MetaStore>) -> Result<Self, StoreError> {
        let list: Vec<Suppression> = meta.get_json(SUPPRESSIONS)?.unwrap_or_default();
        let set = list
            .iter()
            .filter_map(|s| hex::decode(&s.hash).ok()?.try_into().ok())
            .collect();
        Ok(Self {
            meta,
            suppressed: parking_lot::RwLock::new(set),
            lock: parking_lot::Mutex::new(()),
        })
    }

    pub fn jobs(&self) -> Result<Vec<ErasureJob>, String> {
        Ok(self.meta.get_json(JOBS).map_err(err)?.unwrap_or_default())
    }

    pub fn job(&self, id: &str) -> Result<Option<ErasureJob>, String> {
        Ok(self.jobs()?.into_iter().find(|j| j.id == id))
    }

    /// Records a new queued job for `profile` and returns it.
    pub fn create_job(
        &self,
        profile: String,
        suppress: bool,
        now_ms: i64,
    ) -> Result<ErasureJob, String> {
        let _g = self.lock.lock();
        let mut jobs = self.jobs()?;
        let n = jobs
            .iter()
            .filter_map(|j| j.id.strip_prefix("era_")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let job = ErasureJob {
            id: format!("era_{n:06}"),
            profile,
            suppress,
            status: JobStatus::Queued,
            step: "queued".into(),
            created_ms: now_ms,
            finished_ms: None,
            profiles: 0,
            events: 0,
            rejected_events: 0,
            delivery_rows: 0,
            suppressed_identifiers: 0,
            exits: 0,
            compacted: false,
            error: None,
        };
        jobs.push(job.clone());
        if jobs.len() > KEEP_JOBS {
            let drop = jobs.len() - KEEP_JOBS;
            jobs.drain(..drop);
        }
        self.meta.put_json(JOBS, &jobs).map_err(err)?;
        Ok(job)
    }

    /// Changes a job (by id) and stores it.
    pub fn update_job(&self, id: &str, f: impl FnOnce(&mut ErasureJob)) -> Result<(), String> {
        let _g = self.lock.lock();
        let mut jobs = self.jobs()?;
        if let Some(j) = jobs.iter_mut().find(|j| j.id == id) {
            f(j);
        }
        self.meta.put_json(JOBS, &jobs).map_err(err)
    }

    /// Jobs a crash or stop left unfinished, oldest first.
    pub fn unfinished(&self) -> Result<Vec<ErasureJob>, String> {
        Ok(self
            .jobs()?
            .into_iter()
            .filter(|j| matches!(j.status, JobStatus::Queued | JobStatus::Running))
            .collect())
    }

    pub fn suppressions(&self) -> Result<Vec<Suppression>, String> {
        Ok(self
            .meta
            .get_json(SUPPRESSIONS)
            .map_err(err)?
            .unwrap_or_default())
    }

    /// Adds these identifiers to the suppression list; returns how many were new.
    pub fn suppress(
        &self,
        ids: &[Identifier],
        erasure: &str,
        now_ms: i64,
    ) -> Result<usize, String> {
        let _g = self.lock.lock();
        let mut list = self.suppressions()?;
        let mut set = self.suppressed.write();
        let mut added = 0;
        for id in ids {
            let h = identifier_hash(id.kind.as_str(), &id.value);
            if set.insert(h) {
                added += 1;
                list.push(Suppression {
                    hash: hex::encode(h),
                    kind: id.kind.as_str().to_owned(),
                    erasure: erasure.to_owned(),
                    added_ms: now_ms,
                });
            }
        }
        self.meta.put_json(SUPPRESSIONS, &list).map_err(err)?;
        Ok(added)
    }

    /// Removes a suppression by its hash; false if there was none.
    pub fn unsuppress(&self, hash: &str) -> Result<bool, String> {
        let _g = self.lock.lock();
        let mut list = self.suppressions()?;
        let before = list.len();
        list.retain(|s| !s.hash.eq_ignore_ascii_case(hash));
        if list.len() == before {
            return Ok(false);
        }
        if let Some(h) = hex::decode(hash.to_ascii_lowercase())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
        {
            self.suppressed.write().remove(&h);
        }
        self.meta.put_json(SUPPRESSIONS, &list).map_err(err)?;
        Ok(true)
    }

    /// Whether the suppression list has any entry (the processor skips the check if not).
    pub fn has_suppressions(&self) -> bool {
        !self.suppressed.read().is_empty()
    }

    /// Whether any of these (normalised) identifiers is suppressed. Free when the list is
    /// empty, one SHA-256 per identifier otherwise.
    pub fn is_suppressed<'a>(&self, ids: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
        let set = self.suppressed.read();
        if set.is_empty() {
            return false;
        }
        ids.into_iter()
            .any(|(kind, value)| set.contains(&identifier_hash(kind, value)))
    }

    /// Retention policies set through the API (the config's come on top).
    pub fn api_policies(&self) -> Result<Vec<retention::RetentionPolicy>, String> {
        Ok(self
            .meta
            .get_json(RETENTION_POLICIES)
            .map_err(err)?
            .unwrap_or_default())
    }

    /// Replaces the API's retention policies (each validated first; nothing is stored if
    /// one is bad).
    pub fn set_api_policies(&self, p: &[retention::RetentionPolicy]) -> Result<(), String> {
        for pol in p {
            pol.validate()?;
        }
        self.meta.put_json(RETENTION_POLICIES, &p).map_err(err)
    }

    pub fn last_retention(&self) -> Result<Option<retention::RetentionReport>, String> {
        self.meta.get_json(RETENTION_LAST).map_err(err)
    }

    pub fn set_last_retention(&self, r: &retention::RetentionReport) -> Result<(), String> {
        self.meta.put_json(RETENTION_LAST, r).map_err(err)
    }

    /// Marks that stale pages may hold erased data until the databases are rewritten.
    pub fn set_compact_pending(&self, pending: bool) -> Result<(), String> {
        self.meta.put_json(COMPACT_PENDING, &pending).map_err(err)
    }

    pub fn compact_pending(&self) -> Result<bool, String> {
        Ok(self
            .meta
            .get_json(COMPACT_PENDING)
            .map_err(err)?
            .unwrap_or(false))
    }
}
