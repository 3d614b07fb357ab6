//! The derived state: identity graph, profiles, groups, per-profile timelines and identity
//! decisions, with the log position they reflect. Kept in one embedded redb file,
//! `state/state.redb`.
//!
//! Everything here is a function of the event log (and admin split rules): it can be deleted
//! and rebuilt by replay (`spoor rebuild`). The processor writes it through [`ProcessorState`],
//! which coalesces changes in memory and commits them, together with the log position, in
//! one transaction per checkpoint — so a crash never applies an event twice or skips one,
//! and a profile touched 100 times in a checkpoint is written once. Readers (the Profile
//! API) use [`StateReader`] snapshots and never block the processor.

mod cache;
mod read;
mod tables;

pub use cache::{CacheStats, ProcessorState};
pub use read::{StateReader, TimelineCursor};
pub use tables::ident_key;

use crate::error::StoreError;
use redb::Database;
use std::path::Path;
use std::sync::Arc;

/// Handle to `state.redb`; cheap to clone.
#[derive(Clone)]
pub struct StateStore {
    db: Arc<Database>,
}

pub(crate) fn engine_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(format!("state store: {e}"))
}

impl StateStore {
    /// Opens (or creates) the state store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let path = dir.join("state.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Meta(format!("{}: {e}", path.display())))?;
        tables::create_all(&db)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// A consistent read snapshot.
    pub fn reader(&self) -> Result<StateReader, StoreError> {
        StateReader::new(&self.db)
    }

    /// The processor's write side. Only one may exist per store.
    pub fn processor_state(&self, cache_profiles: usize) -> Result<ProcessorState, StoreError> {
        ProcessorState::new(self.db.clone(), cache_profiles)
    }
}
