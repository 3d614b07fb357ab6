//! The live definitions of audiences and computed traits, shared by the admin API (which
//! changes them) and the processor (which compiles them, evaluates them per event and
//! backfills what changed). Persisted in the metadata store, so they survive restarts;
//! they are configuration, so `spoor rebuild` keeps them.

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use spoor_core::audience::{DefinitionError, Definitions};
use spoor_store::meta::MetaStore;
use spoor_store::StoreError;
use std::collections::BTreeMap;
use std::sync::Arc;

const KEY: &str = "definitions";
/// The definitions revision the derived state (activation) was last backfilled for.
const APPLIED: &str = "definitions_applied_revision";

/// How far the backfill of one audience or computed trait has come.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Backfill {
    /// Events of the log read so far, out of `total`.
    pub done: u64,
    pub total: u64,
    /// The definition revision being backfilled.
    pub revision: u64,
}

/// Cheap to clone; every clone sees the same definitions.
#[derive(Clone)]
pub struct DefsHandle {
    meta: Arc<MetaStore>,
    current: Arc<RwLock<Arc<Definitions>>>,
    backfill: Arc<Mutex<BTreeMap<String, Backfill>>>,
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum DefsError {
    #[error(transparent)]
    Invalid(#[from] DefinitionError),
    #[error("{0}")]
    Rejected(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl DefsHandle {
    /// Loads the stored definitions (none on a new data directory).
    pub fn open(meta: Arc<MetaStore>) -> Result<Self, StoreError> {
        let defs: Definitions = meta.get_json(KEY)?.unwrap_or_default();
        Ok(Self {
            meta,
            current: Arc::new(RwLock::new(Arc::new(defs))),
            backfill: Arc::default(),
        })
    }

    /// A handle over fixed definitions that are not persisted (rebuilds, tests).
    pub fn fixed(meta: Arc<MetaStore>, defs: Definitions) -> Self {
        Self {
            meta,
            current: Arc::new(RwLock::new(Arc::new(defs))),
            backfill: Arc::default(),
        }
    }

    pub fn current(&self) -> Arc<Definitions> {
        self.current.read().clone()
    }

    /// Applies `f` to a copy of the definitions; if the result compiles (no unknown
    /// references, no cycles) it is stored with a new revision and becomes current.
    /// Concurrent updates are serialised.
    pub fn update(
        &self,
        f: impl FnOnce(&mut Definitions) -> Result<(), String>,
    ) -> Result<Arc<Definitions>, DefsError> {
        let mut cur = self.current.write();
        let mut next = (**cur).clone();
        f(&mut next).map_err(DefsError::Rejected)?;
        next.compile()?;
        next.revision = cur.revision + 1;
        self.meta.put_json(KEY, &next)?;
        let next = Arc::new(next);
        *cur = next.clone();
        Ok(next)
    }

    /// The revision the derived state reflects (0 before any backfill).
    pub fn applied_revision(&self) -> Result<u64, StoreError> {
        Ok(self.meta.get_json(APPLIED)?.unwrap_or(0))
    }

    /// Records that the derived state now reflects `revision` (after a backfill).
    pub fn set_applied_revision(&self, revision: u64) -> Result<(), StoreError> {
        self.meta.put_json(APPLIED, &revision)
    }

    /// Backfills in progress, by audience or computed-trait name.
    pub fn backfills(&self) -> BTreeMap<String, Backfill> {
        self.backfill.lock().clone()
    }

    /// Reports progress (the processor calls this); `None` ends it.
    pub fn set_backfill(&self, name: &str, b: Option<Backfill>) {
        let mut m = self.backfill.lock();
        match b {
            Some(b) => m.insert(name.to_owned(), b),
            None => m.remove(name),
        };
    }
}
