//! The live definitions of audiences and computed traits, shared by the admin API (which
//! changes them) and the processor (which compiles them, evaluates them per event and
//! backfills what changed). Persisted in the metadata store, so they survive restarts;
//! they are configuration, so `spoor rebuild` keeps them.

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use spoor_core::audience::{DefinitionError, Definitions};
use spoor_store::meta::MetaStore;
use spoor_store::StoreError;
use std::collections::{BTreeMap, BTreeSet};
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
    /// The processor has begun it. Until then (right after a change, or after a restart
    /// that interrupted a backfill) the definition waits with nothing read.
    pub started: bool,
}

/// Cheap to clone; every clone sees the same definitions.
#[derive(Clone)]
pub struct DefsHandle {
    meta: Arc<MetaStore>,
    current: Arc<RwLock<Arc<Definitions>>>,
    backfill: Arc<Mutex<BTreeMap<String, Backfill>>>,
    /// Names a backfill must still recompute: what changed between the definitions the
    /// derived state reflects and the current ones (see [`Definitions::changed_since`]).
    /// Kept here, not only in the processor's progress, so a definition created a moment
    /// ago or left half backfilled by a crash shows as waiting, never as done.
    waiting: Arc<Mutex<BTreeSet<String>>>,
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
        let h = Self {
            meta,
            current: Arc::new(RwLock::new(Arc::new(defs))),
            backfill: Arc::default(),
            waiting: Arc::default(),
        };
        h.rewait();
        Ok(h)
    }

    /// A handle over fixed definitions that are not persisted (rebuilds, tests).
    pub fn fixed(meta: Arc<MetaStore>, defs: Definitions) -> Self {
        Self {
            meta,
            current: Arc::new(RwLock::new(Arc::new(defs))),
            backfill: Arc::default(),
            waiting: Arc::default(),
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
        drop(cur);
        self.rewait();
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
        self.meta.put_json(APPLIED, &defs.revision)?;
        self.rewait();
        Ok(())
    }

    /// Forgets which definitions the state reflects (the next backfill recomputes
    /// everything; `spoor bench audiences` measures that case).
    pub fn forget_applied(&self) -> Result<(), StoreError> {
        self.meta
            .put_json(APPLIED_DEFS, &Option::<Definitions>::None)?;
        self.meta.put_json(APPLIED, &0u64)?;
        self.rewait();
        Ok(())
    }

    /// Recomputes the names waiting for a backfill from the current definitions and the
    /// applied ones. Called after every write of either; runs one at a time and reads
    /// both inside the lock, so the last call sees both writes. A failed read of the
    /// applied definitions (the write before it succeeded) keeps the names as they were:
    /// what is shown as waiting is then stale until the next change, nothing else.
    fn rewait(&self) {
        let mut waiting = self.waiting.lock();
        let current = self.current();
        let applied = match self.applied_revision() {
            Ok(r) if r == current.revision => Ok(None),
            Ok(_) => self.applied_definitions().map(Some),
            Err(e) => Err(e),
        };
        match applied {
            Ok(None) => waiting.clear(),
            Ok(Some(defs)) => *waiting = current.changed_since(defs.as_ref()),
            Err(e) => tracing::warn!(error = %e, "cannot read the applied definitions"),
        }
    }

    /// Backfills in progress, by audience or computed-trait name.
    /// Those running first; then those waiting for the processor to begin them.
    pub fn backfills(&self) -> BTreeMap<String, Backfill> {
        let mut out = self.backfill.lock().clone();
        let revision = self.current().revision;
        for name in self.waiting.lock().iter() {
            out.entry(name.clone()).or_insert_with(|| Backfill {
                revision,
                ..Backfill::default()
            });
        }
        out
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

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_core::audience::{parse, AudienceDefinition};

    fn add(h: &DefsHandle, name: &str, rule: &str) -> Arc<Definitions> {
        h.update(|d| {
            let a = AudienceDefinition {
                name: name.into(),
                description: String::new(),
                rule: parse(rule).map_err(|e| e.to_string())?,
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            };
            d.audiences.insert(name.into(), a);
            Ok(())
        })
        .unwrap()
    }

    fn waiting(h: &DefsHandle) -> Vec<String> {
        let b = h.backfills();
        assert!(b.values().all(|b| !b.started));
        b.into_keys().collect()
    }

    /// A definition shows as waiting from its creation until a backfill records it applied,
    /// also across a restart in between (a crash cutting the backfill short), and never
    /// as done before.
    #[test]
    fn a_changed_definition_waits_for_its_backfill_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Arc::new(MetaStore::open(dir.path()).unwrap());
        let h = DefsHandle::open(meta.clone()).unwrap();
        assert!(h.backfills().is_empty());
        let first = add(&h, "buyers", "performed \"Order\"");
        assert_eq!(waiting(&h), ["buyers"]);
        h.set_applied(&first).unwrap();
        assert!(h.backfills().is_empty());

        add(&h, "fans", "performed \"Like\"");
        add(&h, "fan_buyers", "in audience fans and in audience buyers");
        assert_eq!(waiting(&h), ["fan_buyers", "fans"]);
        drop(h);
        let h = DefsHandle::open(meta.clone()).unwrap();
        assert_eq!(waiting(&h), ["fan_buyers", "fans"]);

        // A backfill of an older revision leaves the newer change waiting.
        let before = h.current();
        add(&h, "likers", "performed \"Like\" at least 2 times");
        h.set_applied(&before).unwrap();
        assert_eq!(waiting(&h), ["likers"]);
        h.set_applied(&h.current()).unwrap();
        assert!(h.backfills().is_empty());

        // Running progress wins over waiting; forgetting what is applied waits for all.
        h.forget_applied().unwrap();
        h.set_backfill(
            "fans",
            Some(Backfill {
                done: 3,
                total: 9,
                revision: 4,
                started: true,
            }),
        );
        let b = h.backfills();
        assert_eq!(b.len(), 4);
        assert!(b["fans"].started && b["fans"].done == 3);
        assert!(!b["buyers"].started);
    }
}
