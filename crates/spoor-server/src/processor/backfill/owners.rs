//! Who each event belongs to, for a backfill's scan (see `scan`): the profile the
//! processor applied each event to ([`Mapping`], from the committed timeline), and the
//! live profile each profile id is now ([`Liveness`], from the status table).

use super::scan::join;
use spoor_core::identity::ProfileStatus;
use spoor_store::state::StateStore;
use spoor_store::StoreError;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

/// seq → id of the profile the processor applied the event to (0: none — not applied,
/// or its profile's rows were dropped by a split), for seqs `..= last`, from the committed
/// timeline (the caller checkpointed). Filled by [`Mapping::fill`], which may run while
/// the scan reads the log ([`scan`] holds back what it parsed until it is complete).
pub struct Mapping {
    owner: Vec<AtomicU64>,
    /// Set when filled: `Err` names why it failed (the error is reported by each waiter).
    done: Mutex<Option<Result<(), String>>>,
    filled: Condvar,
    created: Instant,
    took_ms: AtomicU64,
    /// While set, [`Self::fill`] waits before reading ([`Self::gated`]).
    gate: Mutex<bool>,
    opened: Condvar,
}

impl Mapping {
    /// An empty mapping of seqs `..= last` (8 bytes each).
    pub fn new(last: u64) -> Mapping {
        Mapping {
            owner: (0..=last).map(|_| AtomicU64::new(0)).collect(),
            done: Mutex::new(None),
            filled: Condvar::new(),
            created: Instant::now(),
            took_ms: AtomicU64::new(0),
            gate: Mutex::new(false),
            opened: Condvar::new(),
        }
    }

    /// A mapping that [`Self::fill`] fills only once [`Self::open`] is called: the scan
    /// calls it when it has read the whole log (or has to wait for the mapping), so every
    /// event it parses is held back first. For tests of that path, which otherwise runs
    /// only as far as timing makes it.
    pub fn gated(last: u64) -> Mapping {
        let m = Mapping::new(last);
        *m.gate.lock().unwrap_or_else(|e| e.into_inner()) = true;
        m
    }

    /// Lets [`Self::fill`] go on (a no-op unless [`Self::gated`]).
    pub(super) fn open(&self) {
        *self.gate.lock().unwrap_or_else(|e| e.into_inner()) = false;
        self.opened.notify_all();
    }

    /// Reads the committed timeline into the mapping, split by id range over `workers`
    /// threads, and marks it complete (or failed).
    pub fn fill(&self, store: &StateStore, workers: usize) {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        while *gate {
            gate = self.opened.wait(gate).unwrap_or_else(|e| e.into_inner());
        }
        drop(gate);
        // A panic must still complete the mapping, or the scan would wait for it forever.
        let r =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.read(store, workers)))
                .unwrap_or_else(|_| Err(StoreError::Meta("a mapping thread panicked".into())))
                .map_err(|e| e.to_string());
        let took = self.created.elapsed().as_millis() as u64;
        self.took_ms.store(took, Ordering::Relaxed);
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        self.filled.notify_all();
    }

    fn read(&self, store: &StateStore, workers: usize) -> Result<(), StoreError> {
        let Some((lo, hi)) = store.durable_reader()?.committed_timeline_span()? else {
            return Ok(());
        };
        let width = (hi - lo) / workers as u64 + 1;
        let owner_ref = &self.owner;
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..workers as u64)
                .map(|k| {
                    let from = lo.saturating_add(k * width);
                    let to = from.saturating_add(width).min(hi.saturating_add(1));
                    s.spawn(move || {
                        let r = store.durable_reader()?;
                        r.committed_timeline_rows(from..to, &mut |pid, seq| {
                            if let Some(slot) = owner_ref.get(seq as usize) {
                                slot.store(pid, Ordering::Relaxed);
                            }
                        })
                    })
                })
                .collect();
            hs.into_iter().try_for_each(join)
        })
    }

    /// How long filling took, from creation (ms; 0 until filled).
    pub fn took_ms(&self) -> u64 {
        self.took_ms.load(Ordering::Relaxed)
    }

    /// The complete mapping, if [`Self::fill`] has finished (its error, if it failed).
    pub(super) fn ready(&self) -> Result<Option<&[AtomicU64]>, StoreError> {
        match &*self.done.lock().unwrap_or_else(|e| e.into_inner()) {
            None => Ok(None),
            Some(Ok(())) => Ok(Some(&self.owner)),
            Some(Err(e)) => Err(failed(e)),
        }
    }

    /// Waits for [`Self::fill`] to finish.
    pub fn wait(&self) -> Result<&[AtomicU64], StoreError> {
        let mut g = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while g.is_none() {
            g = self.filled.wait(g).unwrap_or_else(|e| e.into_inner());
        }
        match &*g {
            Some(Err(e)) => Err(failed(e)),
            _ => Ok(&self.owner),
        }
    }
}

fn failed(e: &str) -> StoreError {
    StoreError::Meta(format!("mapping events to people failed: {e}"))
}

/// Which live profile each profile id belongs to now, from one sequential read of every
/// profile's status (`StateReader::committed_profile_statuses`), held in memory: 8 bytes
/// per live profile, a map entry per merged-away one.
///
/// The scan resolves the id every event that passes the raw-byte filter was applied to.
/// Reading and decoding that profile's identity record instead (once per id, with a
/// cache) was most of the scan's thread time — 12.3 s of a 10 M-event backfill, random
/// reads — and listing the live ids from the profiles table read every profile's pages.
#[derive(Default)]
pub struct Liveness {
    /// Live profile ids, ascending.
    pub live: Vec<u64>,
    /// Merged-away id → the id it was merged into (which may have been merged away since).
    merged: HashMap<u64, u64>,
}

impl Liveness {
    /// Reads the statuses of the last checkpoint (the caller checkpointed), in `threads`
    /// ranges of ids at once: a cold read of the status table waits on the disk page by
    /// page, and several in flight overlap.
    pub fn read(store: &StateStore, threads: usize) -> Result<Liveness, StoreError> {
        // Cut points over the ids with timeline rows (almost every profile); the first
        // range starts at 0 and the last ends at the top, so every id is covered.
        let (lo, hi) = store
            .durable_reader()?
            .committed_timeline_span()?
            .unwrap_or((0, 0));
        let width = (hi - lo) / threads as u64 + 1;
        let parts = std::thread::scope(|s| {
            let hs: Vec<_> = (0..threads as u64)
                .map(|k| {
                    let from = if k == 0 { 0 } else { lo + k * width };
                    let to = if k + 1 == threads as u64 {
                        u64::MAX
                    } else {
                        lo + (k + 1) * width
                    };
                    s.spawn(move || {
                        let mut l = Liveness::default();
                        store.durable_reader()?.committed_profile_statuses(
                            from..to,
                            &mut |pid, status| match status {
                                ProfileStatus::Live => l.live.push(pid),
                                ProfileStatus::MergedInto(into) => {
                                    l.merged.insert(pid, into.raw());
                                }
                                ProfileStatus::Dissolved => {}
                            },
                        )?;
                        Ok(l)
                    })
                })
                .collect();
            hs.into_iter().map(join).collect::<Result<Vec<_>, _>>()
        })?;
        let mut all = Liveness::default();
        for p in parts {
            all.live.extend(p.live);
            all.merged.extend(p.merged);
        }
        Ok(all)
    }

    /// Estimated memory of the merged-away ids (bytes): per slot the map can hold, its two
    /// ids and a control byte (17 B), over the table's 7/8 load factor (≈ 20 B).
    pub fn merged_bytes(&self) -> u64 {
        self.merged.capacity() as u64 * 20
    }

    /// The live profile `pid` is or was merged into; 0 when there is none (dissolved, or
    /// no such profile).
    pub fn live(&self, pid: u64) -> u64 {
        let mut cur = pid;
        // Merges form chains, never cycles; the bound only guards against a corrupt store.
        for _ in 0..4096 {
            if self.live.binary_search(&cur).is_ok() {
                return cur;
            }
            match self.merged.get(&cur) {
                Some(next) => cur = *next,
                None => return 0,
            }
        }
        0
    }
}

/// The live id of the person event `seq` was applied to, if they are in `people`.
pub(super) fn owner_of(
    owner: &[AtomicU64],
    liveness: &Liveness,
    people: &RangeInclusive<u64>,
    seq: u64,
) -> Option<u64> {
    live_in(liveness, people, applied_to(owner, seq))
}

/// The id event `seq` was applied to (0: none).
pub(super) fn applied_to(owner: &[AtomicU64], seq: u64) -> u64 {
    owner
        .get(seq as usize)
        .map_or(0, |o| o.load(Ordering::Relaxed))
}

/// The live id profile `pid` (0: none) is now, if it is in `people`.
pub(super) fn live_in(liveness: &Liveness, people: &RangeInclusive<u64>, pid: u64) -> Option<u64> {
    if pid == 0 {
        return None;
    }
    let live = liveness.live(pid);
    (live != 0 && people.contains(&live)).then_some(live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_follows_merges_to_the_live_profile() {
        let l = Liveness {
            live: vec![2, 5, 8],
            // 3 → 4 → 5 (merged twice); 6 → 9, which is dissolved or unknown.
            merged: HashMap::from([(3, 4), (4, 5), (6, 9)]),
        };
        assert_eq!(l.live(2), 2);
        assert_eq!(l.live(8), 8);
        assert_eq!(l.live(4), 5);
        assert_eq!(l.live(3), 5, "a chain of merges");
        assert_eq!(l.live(6), 0, "merged into one that is gone");
        assert_eq!(l.live(7), 0, "no such profile");
        assert_eq!(l.live(0), 0);
        // A corrupt store with a cycle ends, answering none.
        let cyclic = Liveness {
            live: vec![],
            merged: HashMap::from([(1, 2), (2, 1)]),
        };
        assert_eq!(cyclic.live(1), 0);
    }

    /// The merged-away ids count in a backfill's memory: at least their two ids and a
    /// control byte each, so that many merges make the passes smaller rather than overrun
    /// the budget.
    #[test]
    fn merged_ids_are_counted_in_memory() {
        assert_eq!(Liveness::default().merged_bytes(), 0);
        let l = Liveness {
            live: vec![],
            merged: (0..1000).map(|i| (i, i + 1)).collect(),
        };
        assert!(l.merged_bytes() >= 17 * 1000, "{}", l.merged_bytes());
    }
}
