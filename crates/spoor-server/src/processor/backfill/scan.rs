//! Steps 2 and 3 of a backfill, on every core: map each event to the person it belongs to,
//! and fold the events that can matter into fresh per-person states.
//!
//! # Mapping
//! The timeline table is keyed by (profile id at processing time, time, seq), and no
//! seq → profile index exists (one would cost a write per event while processing). So the
//! table is read once, sequentially, split into id ranges over the workers, into a
//! seq → id-at-processing-time array (8 bytes per event). Ids are resolved to the live
//! profile only for the events that pass the raw-byte filter, in memory ([`Liveness`]:
//! every profile's status, read once, merges followed like a profile's cluster does in the
//! other direction).
//!
//! # Scan
//! The log is read in rounds of `workers × BATCH` events; in a round worker `k` reads,
//! filters and parses the `k`-th slice on its own (reads are `pread`s on its own
//! descriptors), then each worker folds the parsed events of its people (`pid % workers
//! == k`) from every slice, in seq order. States do not depend on the order of events, and
//! each person's states live in one worker's map, so no locking is needed. Memory: the
//! array, one round of entries and parsed events, and the fresh states of the people
//! concerned — of those in one range of ids: when the states of everyone would not fit
//! the backfill's memory limit, the log is scanned once per range (`super::passes`).

use super::super::activate::Engine;
use super::plan::Plan;
use spoor_core::audience::{state_mut, Activation, AudienceState, EventFact};
use spoor_core::computed::ComputedState;
use spoor_core::identity::ProfileStatus;
use spoor_core::profile::{parse_event, parse_event_lean};
use spoor_store::log::LogReader;
use spoor_store::state::StateStore;
use spoor_store::StoreError;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most log entries a worker reads, filters and parses per round (with 8 workers, a
/// round holds about 90 MB of entries of the benchmark's size).
const BATCH: usize = 10_000;

/// Entries per worker and round: `BATCH`, or less for a small log so that it still takes
/// a few rounds on every worker (progress moves, and the tests run the same code paths as
/// a large log does).
fn slice_len(last: u64, workers: usize) -> u64 {
    last.div_ceil(workers as u64 * 4).clamp(1, BATCH as u64)
}

/// Where the scan's thread time went (ns, summed over the workers).
#[derive(Debug, Default, Clone, Copy)]
pub struct ScanTimes {
    pub parsed: u64,
    pub read_ns: u64,
    pub filter_ns: u64,
    pub resolve_ns: u64,
    pub parse_ns: u64,
    pub fold_ns: u64,
}

impl ScanTimes {
    fn add(&mut self, t: ScanTimes) {
        self.parsed += t.parsed;
        self.read_ns += t.read_ns;
        self.filter_ns += t.filter_ns;
        self.resolve_ns += t.resolve_ns;
        self.parse_ns += t.parse_ns;
        self.fold_ns += t.fold_ns;
    }
}

fn ns(since: Instant) -> u64 {
    since.elapsed().as_nanos() as u64
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T, StoreError>>) -> Result<T, StoreError> {
    h.join()
        .unwrap_or_else(|_| Err(StoreError::Meta("a backfill worker panicked".into())))
}

/// seq → id of the profile the processor applied the event to (0: none — not applied,
/// or its profile's rows were dropped by a split), for seqs `..= last`, from the committed
/// timeline (the caller checkpointed).
pub fn owners_at_time(
    store: &StateStore,
    last: u64,
    workers: usize,
) -> Result<Vec<AtomicU64>, StoreError> {
    let owner: Vec<AtomicU64> = (0..=last).map(|_| AtomicU64::new(0)).collect();
    let Some((lo, hi)) = store.durable_reader()?.committed_timeline_span()? else {
        return Ok(owner);
    };
    let width = (hi - lo) / workers as u64 + 1;
    let owner_ref = &owner;
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
    })?;
    Ok(owner)
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

/// Reads, filters and parses the entries with seqs in `from..to`: the parsed events that
/// can matter to the plan, each with its person's live id, for the people in `people`.
fn slice(
    reader: &LogReader,
    plan: &Plan,
    owner: &[AtomicU64],
    liveness: &Liveness,
    people: &RangeInclusive<u64>,
    from: u64,
    to: u64,
) -> Result<(Vec<(u64, EventFact)>, ScanTimes), StoreError> {
    let mut t = ScanTimes::default();
    let mut out = Vec::new();
    if from >= to {
        return Ok((out, t));
    }
    let at = Instant::now();
    // Read once: the log's pages are not kept cached (they would evict the state's,
    // which the evaluation reads next).
    let entries = reader.read_once(from, (to - from) as usize)?;
    t.read_ns = ns(at);
    let started = Instant::now();
    for e in &entries {
        if e.seq >= to {
            break;
        }
        let pid = owner
            .get(e.seq as usize)
            .map_or(0, |o| o.load(Ordering::Relaxed));
        if pid == 0 || e.is_erased() || !plan.may_matter(&e.payload) {
            continue;
        }
        let at = Instant::now();
        let live = liveness.live(pid);
        let parsing = Instant::now();
        t.resolve_ns += (parsing - at).as_nanos() as u64;
        if live == 0 || !people.contains(&live) {
            continue;
        }
        // The processor applied this event (it has a timeline row), so the full parse
        // accepted it; the lean one reads a subset of the same fields alike.
        let fact = match parse_event_lean(e.seq, &e.payload) {
            Ok(v) => Some(EventFact::from_lean(e.seq, e.timestamp_ms, &v, &plan.keys)),
            Err(_) => parse_event(e.seq, e.timestamp_ms, &e.payload)
                .ok()
                .map(|v| EventFact::from_view_keys(&v, &plan.keys)),
        };
        t.parse_ns += ns(parsing);
        if let Some(f) = fact {
            t.parsed += 1;
            out.push((live, f));
        }
    }
    t.filter_ns = ns(started).saturating_sub(t.resolve_ns + t.parse_ns);
    Ok((out, t))
}

/// Folds the events of worker `k`'s people, from every slice in order, into `part`.
fn fold_slices(
    engine: &Engine,
    plan: &Plan,
    slices: &[Vec<(u64, EventFact)>],
    k: usize,
    workers: usize,
    part: &mut HashMap<u64, Activation>,
) -> Result<u64, StoreError> {
    let at = Instant::now();
    for (pid, fact) in slices.iter().flatten() {
        if *pid % workers as u64 != k as u64 {
            continue;
        }
        if plan.full {
            engine.fold(part.entry(*pid).or_default(), fact, &mut []);
        } else {
            fold_planned(plan, part, *pid, fact);
        }
    }
    Ok(ns(at))
}

/// Applies one event to the plan's definitions only (an entry is made for every person an
/// event of the plan names, even when only an old version read it: they are re-evaluated).
fn fold_planned(plan: &Plan, part: &mut HashMap<u64, Activation>, pid: u64, ev: &EventFact) {
    for (name, d) in &plan.computed {
        if d.matters(ev) {
            let states = &mut part.entry(pid).or_default().computed;
            state_mut(states, name, || ComputedState::new(d)).apply(d, ev);
        }
    }
    for (name, rule) in &plan.audiences {
        if rule.deps.event_matters(ev) {
            let states = &mut part.entry(pid).or_default().audiences;
            state_mut(states, name, || AudienceState::new(rule)).apply(rule, ev);
        }
    }
    if plan.stale_match(ev) {
        part.entry(pid).or_default();
    }
}

/// Reads the log up to `last` once and folds what can matter to the people in `people`
/// (live ids) into `fresh` (one map per worker); `progress(done)` after each round.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    engine: &Engine,
    plan: &Plan,
    reader: &LogReader,
    owner: &[AtomicU64],
    last: u64,
    people: &RangeInclusive<u64>,
    liveness: &Liveness,
    fresh: &mut [HashMap<u64, Activation>],
    mut progress: impl FnMut(u64),
) -> Result<ScanTimes, StoreError> {
    let workers = fresh.len();
    let mut times = ScanTimes::default();
    let len = slice_len(last, workers);
    let mut seq = 1;
    while seq <= last {
        let end = seq.saturating_add(len * workers as u64).min(last + 1);
        let bounds: Vec<(u64, u64)> = (0..workers as u64)
            .map(|k| {
                let from = (seq + k * len).min(end);
                (from, (from + len).min(end))
            })
            .collect();
        let parts = std::thread::scope(|s| {
            let hs: Vec<_> = bounds
                .iter()
                .map(|&(from, to)| {
                    s.spawn(move || slice(reader, plan, owner, liveness, people, from, to))
                })
                .collect();
            hs.into_iter().map(join).collect::<Result<Vec<_>, _>>()
        })?;
        let mut slices = Vec::with_capacity(workers);
        for (v, t) in parts {
            times.add(t);
            slices.push(v);
        }
        let slices = &slices;
        std::thread::scope(|s| {
            let hs: Vec<_> = fresh
                .iter_mut()
                .enumerate()
                .map(|(k, part)| {
                    s.spawn(move || fold_slices(engine, plan, slices, k, workers, part))
                })
                .collect();
            for h in hs {
                times.fold_ns += join(h)?;
            }
            Ok::<(), StoreError>(())
        })?;
        seq = end;
        progress(end - 1);
    }
    Ok(times)
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
