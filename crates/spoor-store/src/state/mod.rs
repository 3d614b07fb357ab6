//! The derived state: identity graph, profiles, groups, per-profile timelines and identity
//! decisions, audience memberships (bitmaps, timers, history and change feed), with the log
//! position they reflect. Kept in one embedded redb file,
//! `state/state.redb`.
//!
//! Everything here is a function of the event log (and admin split rules): it can be deleted
//! and rebuilt by replay (`spoor rebuild`). The processor writes it through [`ProcessorState`],
//! which coalesces changes in memory and commits them, together with the log position, in
//! one transaction per checkpoint — so a crash never applies an event twice or skips one,
//! and a profile touched 100 times in a checkpoint is written once. Readers (the Profile
//! API) use [`StateReader`] snapshots and never block the processor.

mod backend;
mod cache;
pub mod conformance;
mod dropper;
mod memberships;
mod pending;
mod profile_cache;
mod read;
mod redb_backend;
mod shared;
mod tables;

pub use backend::{ChangeSet, StateBackend, StateSnapshot};
pub use cache::ProcessorState;
pub use memberships::{decode_members, encode_members, ChangeCause, MembershipChange};
pub use read::{StateReader, TimelineCursor};
pub use redb_backend::RedbBackend;
pub use tables::{ident_hash, ident_key, STATE_FORMAT};

use crate::error::StoreError;
use shared::Shared;
use std::path::Path;
use std::sync::Arc;

/// Handle to the state store; cheap to clone. Which backend holds the state is decided
/// when it is opened.
#[derive(Clone)]
pub struct StateStore {
    backend: Arc<dyn StateBackend>,
    /// The processor's changes since its last checkpoint, which readers see first.
    pending: Arc<Shared>,
}

pub(crate) fn engine_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Meta(format!("state store: {e}"))
}

impl StateStore {
    /// Opens (or creates) the embedded store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Ok(Self::with_backend(Arc::new(RedbBackend::open(dir)?)))
    }

    /// A store over any backend.
    pub fn with_backend(backend: Arc<dyn StateBackend>) -> Self {
        Self {
            backend,
            pending: Arc::default(),
        }
    }

    /// A reader of the current state: the processor's pending changes over the last
    /// checkpoint.
    pub fn reader(&self) -> Result<StateReader, StoreError> {
        StateReader::new(self.backend.clone(), Some(self.pending.clone()))
    }

    /// A reader of the last durable checkpoint only (what survives a crash); differential
    /// tests compare these.
    pub fn durable_reader(&self) -> Result<StateReader, StoreError> {
        StateReader::new(self.backend.clone(), None)
    }

    /// The processor's write side. Only one may exist per store.
    pub fn processor_state(&self, cache_profiles: usize) -> Result<ProcessorState, StoreError> {
        ProcessorState::new(self.backend.clone(), self.pending.clone(), cache_profiles)
    }
}

#[cfg(test)]
mod pending_tests;
#[cfg(test)]
mod publish_tests;
