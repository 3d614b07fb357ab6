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
/// The definitions themselves at that revision: the next backfill compares against them
/// to recompute only what changed. Absent (older data directories): a full recompute.
const APPLIED_DEFS: &str = "definitions_applied";

/// How far the backfill of one audience or computed trait has come.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Backfill {
    /// Log entries read so far, out of `total` (the log's length times the passes over it,
    /// see `processor.backfill_memory_mb`).
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

    /// The definitions the derived state reflects, when known.
    pub fn applied_definitions(&self) -> Result<Option<Definitions>, StoreError> {
        Ok(self
            .meta
            .get_json::<Option<Definitions>>(APPLIED_DEFS)?
            .flatten())
    }

    /// Records that the derived state now reflects `defs` (after a backfill or rebuild).
    /// The definitions are written before the revision: a crash in between leaves the old
    /// revision, so the next start backfills again from the new definitions — recomputing
    /// nothing, as nothing differs — instead of trusting a revision whose definitions were
    /// never recorded.
    pub fn set_applied(&self, defs: &Definitions) -> Result<(), StoreError> {
        self.meta.put_json(APPLIED_DEFS, defs)?;
        self.meta.put_json(APPLIED, &defs.revision)
    }

    /// Forgets which definitions the state reflects (the next backfill recomputes
    /// everything; `spoor bench audiences` measures that case).
    pub fn forget_applied(&self) -> Result<(), StoreError> {
        self.meta
            .put_json(APPLIED_DEFS, &Option::<Definitions>::None)?;
        self.meta.put_json(APPLIED, &0u64)
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
