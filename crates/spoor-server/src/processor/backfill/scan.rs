//! Steps 2 and 3 of a backfill, on every core: map each event to the person it belongs to,
//! and fold the events that can matter into fresh per-person states.
//!
//! # Mapping
//! The timeline table is keyed by (profile id at processing time, time, seq), and no
//! seq → profile index exists (one would cost a write per event while processing). So the
//! table is read once, sequentially, split into id ranges over the workers, into a
//! seq → id-at-processing-time array (8 bytes per event, [`Mapping`]), on threads of its
//! own while the first pass reads the log: mapping reads the state (mostly cached, CPU),
//! the scan reads the log (mostly the disk), and the two overlap. Until the mapping is
//! complete the scan parses every event that passes the raw-byte filter and holds it back
//! (at most [`DEFERRED_MAX`]), then resolves and folds those. Ids are resolved to the live
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
use super::owners::{applied_to, live_in, owner_of, Liveness, Mapping};
use super::plan::Plan;
use spoor_core::audience::{state_mut, Activation, AudienceState, EventFact};
use spoor_core::computed::ComputedState;
use spoor_core::profile::{parse_event, parse_event_lean};
use spoor_store::log::LogReader;
use spoor_store::StoreError;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::atomic::AtomicU64;
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
    /// Of those, parsed before the mapping was complete (held back, then resolved).
    pub held: u64,
    pub read_ns: u64,
    pub filter_ns: u64,
    pub resolve_ns: u64,
    pub parse_ns: u64,
    pub fold_ns: u64,
}

impl ScanTimes {
    fn add(&mut self, t: ScanTimes) {
        self.parsed += t.parsed;
        self.held += t.held;
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

pub(super) fn join<T>(
    h: std::thread::ScopedJoinHandle<'_, Result<T, StoreError>>,
) -> Result<T, StoreError> {
    h.join()
        .unwrap_or_else(|_| Err(StoreError::Meta("a backfill worker panicked".into())))
}

/// Reads, filters and parses the entries with seqs in `from..to`: the parsed events that
/// can matter to the plan, each with its person's live id, for the people in `people`.
/// Without `owner` (the mapping is not complete yet) every event that passes the filter
/// is parsed and returned with id 0, to be resolved later ([`owner_of`]).
fn slice(
    reader: &LogReader,
    plan: &Plan,
    owner: Option<&[AtomicU64]>,
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
        // The profile it was applied to, when the mapping is complete.
        let pid = owner.map(|o| applied_to(o, e.seq));
        if pid == Some(0) || e.is_erased() || !plan.may_matter(&e.payload) {
            continue;
        }
        let at = Instant::now();
        let live = pid.map(|pid| live_in(liveness, people, pid));
        let parsing = Instant::now();
        t.resolve_ns += (parsing - at).as_nanos() as u64;
        let live = match live {
            Some(Some(live)) => live,
            Some(None) => continue,
            None => 0,
        };
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

/// Most parsed events held back while the mapping is being filled (≈ 150 MB at a few
/// hundred bytes each); beyond, the scan waits for it.
const DEFERRED_MAX: usize = 500_000;

/// Reads the log up to `last` once and folds what can matter to the people in `people`
/// (live ids) into `fresh` (one map per worker); `progress(done)` after each round.
///
/// `mapping` may still be being filled (by [`Mapping::fill`] on other threads: reading
/// the timeline is CPU work on mostly cached pages, reading the log is disk work, and the
/// two overlap). Until it is complete, the events that pass the raw-byte filter are parsed
/// and held back; once it is (or when [`DEFERRED_MAX`] are held), they are resolved to
/// their people and folded. States do not depend on the order of events.
#[allow(clippy::too_many_arguments)]
pub fn scan(
    engine: &Engine,
    plan: &Plan,
    reader: &LogReader,
    mapping: &Mapping,
    last: u64,
    people: &RangeInclusive<u64>,
    liveness: &Liveness,
    fresh: &mut [HashMap<u64, Activation>],
    mut progress: impl FnMut(u64),
) -> Result<ScanTimes, StoreError> {
    let workers = fresh.len();
    let mut times = ScanTimes::default();
    let len = slice_len(last, workers);
    let mut held: Vec<EventFact> = Vec::new();
    let mut seq = 1;
    while seq <= last {
        let owner = mapping.ready()?;
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
        match owner {
            Some(_) => fold_round(engine, plan, &slices, fresh, &mut times)?,
            None => {
                let before = held.len();
                held.extend(slices.into_iter().flatten().map(|(_, f)| f));
                times.held += (held.len() - before) as u64;
            }
        }
        if !held.is_empty() && (held.len() >= DEFERRED_MAX || mapping.ready()?.is_some()) {
            fold_held(
                engine, plan, mapping, liveness, people, &mut held, fresh, &mut times,
            )?;
        }
        seq = end;
        progress(end - 1);
    }
    mapping.open();
    fold_held(
        engine, plan, mapping, liveness, people, &mut held, fresh, &mut times,
    )?;
    Ok(times)
}

/// Folds one round's parsed events (by live id) on the workers, each its own people.
fn fold_round(
    engine: &Engine,
    plan: &Plan,
    slices: &[Vec<(u64, EventFact)>],
    fresh: &mut [HashMap<u64, Activation>],
    times: &mut ScanTimes,
) -> Result<(), StoreError> {
    let workers = fresh.len();
    std::thread::scope(|s| {
        let hs: Vec<_> = fresh
            .iter_mut()
            .enumerate()
            .map(|(k, part)| s.spawn(move || fold_slices(engine, plan, slices, k, workers, part)))
            .collect();
        for h in hs {
            times.fold_ns += join(h)?;
        }
        Ok(())
    })
}

/// Resolves the events held back to their people (waiting for the mapping) and folds them.
#[allow(clippy::too_many_arguments)]
fn fold_held(
    engine: &Engine,
    plan: &Plan,
    mapping: &Mapping,
    liveness: &Liveness,
    people: &RangeInclusive<u64>,
    held: &mut Vec<EventFact>,
    fresh: &mut [HashMap<u64, Activation>],
    times: &mut ScanTimes,
) -> Result<(), StoreError> {
    if held.is_empty() {
        return Ok(());
    }
    // A gated mapping (tests) is filled from here on.
    mapping.open();
    let owner = mapping.wait()?;
    let at = Instant::now();
    let resolved: Vec<(u64, EventFact)> = held
        .drain(..)
        .filter_map(|f| owner_of(owner, liveness, people, f.seq).map(|live| (live, f)))
        .collect();
    times.resolve_ns += ns(at);
    fold_round(engine, plan, &[resolved], fresh, times)
}
