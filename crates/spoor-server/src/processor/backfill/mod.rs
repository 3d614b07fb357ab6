//! Backfill: when audience or computed-trait definitions change, what they derive is
//! recomputed from the event log — so a new audience is exact over history, not only for
//! new events.
//!
//! Only what changed is recomputed ([`plan`]): the definitions recorded as applied last
//! time are compared with the current ones; new and changed definitions are folded from
//! the log into fresh per-person states, the states of the others are kept, and only the
//! people those events (or the old versions' events, or memberships) name are
//! re-evaluated — everyone when a definition can hold for a person without events. With
//! no record of the applied definitions (older data directories) everything is recomputed.
//!
//! It runs on the processor thread (the single writer), between batches:
//! 1. checkpoint, so every event's profile assignment (the timeline) is in the store;
//! 2. map each event to the profile the processor applied it to, from one sequential read
//!    of the timeline table ([`owners::Mapping`], filled while step 3 reads the log), and
//!    list every profile's status (live or merged into which) from one read of the status
//!    table ([`owners::Liveness`]);
//! 3. read the log once, on every core; an event whose raw bytes cannot hold a name the
//!    recomputed definitions select is skipped unparsed, the others get their live profile
//!    (merges followed), are parsed leanly (type, name, the properties read) and folded
//!    into fresh states ([`scan::scan`]);
//! 4. give the people concerned their fresh states and re-evaluate them (changes are
//!    recorded with cause `backfill`; people whose activation did not change are not
//!    rewritten; [`evaluate`]), then checkpoint and record the definitions as applied.
//!
//! Steps 3 and 4 hold the fresh states of everyone concerned. When those would not fit
//! the memory limit ([`Limits`]; many definitions recomputed over millions of people),
//! they run once per range of live ids ([`passes`], [`id_ranges`]): each pass reads the
//! log again and folds and evaluates only its people.
//!
//! Progress is visible through [`DefsHandle::backfills`] (the audiences API shows it).

pub mod evaluate;
pub mod owners;
pub mod plan;
pub mod scan;

use super::activate::Engine;
use super::ProcessorConfig;
use crate::defs::{Backfill, DefsHandle};
use plan::Plan;
use spoor_core::audience::Activation;
use spoor_core::identity::ProfileId;
use spoor_store::log::LogReader;
use spoor_store::state::{ProcessorState, StateStore};
use spoor_store::StoreError;
use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::Instant;

/// What one backfill did (logged; `spoor bench audiences` prints it).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The definitions revision backfilled.
    pub revision: u64,
    /// Events in the log up to where the backfill ran.
    pub events: u64,
    /// Events parsed (the others were skipped on their raw bytes, or not read at all).
    pub parsed: u64,
    /// Of those, parsed while events were still being mapped to people (held back, then
    /// resolved and folded).
    pub held: u64,
    /// Everything was recomputed (no record of the definitions the state reflected).
    pub full: bool,
    /// Only added audiences that read events alone were evaluated ([`Plan::only_added`]).
    pub only_added: bool,
    /// People re-evaluated, and of those rewritten (their activation changed).
    pub evaluated: u64,
    pub written: u64,
    /// Of those rewritten, the ones whose stored activation was spliced, its other states
    /// copied as bytes, not decoded ([`Plan::only_added`] on records of state format 3).
    pub spliced: u64,
    /// Wall time spent listing the live people, mapping events to people, reading the
    /// log, re-evaluating, and in the final checkpoint (ms).
    pub list_ms: u64,
    /// (The map runs alongside the first pass's scan: the scan's time includes any wait
    /// for it.)
    pub map_ms: u64,
    pub scan_ms: u64,
    pub eval_ms: u64,
    pub checkpoint_ms: u64,
    /// Threads the scan and the evaluation ran on.
    pub workers: u64,
    /// Passes over the log (people folded in id ranges, to stay within the memory limit).
    pub passes: u64,
    /// Checkpoints started while re-evaluating (to bound the rewritten profiles pending),
    /// and the time starting them took (waiting for the previous one to commit, ms).
    pub checkpoints: u64,
    pub checkpoint_wait_ms: u64,
    /// Of the scan, thread time summed over the workers (ms): reading log entries, the
    /// raw-byte filter, parsing, folding.
    pub read_ms: u64,
    pub filter_ms: u64,
    /// Resolving the ids of the events that passed the filter to live profiles.
    pub resolve_ms: u64,
    pub parse_ms: u64,
    pub fold_ms: u64,
}

impl Stats {
    fn add_scan(&mut self, t: &scan::ScanTimes) {
        self.parsed += t.parsed;
        self.held += t.held;
        self.read_ms += t.read_ns / 1_000_000;
        self.filter_ms += t.filter_ns / 1_000_000;
        self.resolve_ms += t.resolve_ns / 1_000_000;
        self.parse_ms += t.parse_ns / 1_000_000;
        self.fold_ms += t.fold_ns / 1_000_000;
    }
}

/// Reports progress under `names`; `finished` clears it.
fn report(defs: &DefsHandle, names: &[String], revision: u64, done: u64, total: u64, end: bool) {
    for n in names {
        defs.set_backfill(
            n,
            (!end).then_some(Backfill {
                done,
                total,
                revision,
                started: true,
            }),
        );
    }
}

/// Most threads a backfill runs on.
const MAX_WORKERS: usize = 8;

/// Threads per core: the backfill's phases mostly wait on the disk (cold reads of the
/// status and timeline tables, the log and the profiles concerned), and more reads in
/// flight overlap. The 10 M-event backfill of `spoor bench audiences` on 2 cores (before
/// the evaluation of added audiences alone): 32.6 s on 2 threads, 27.7 s on 8; 16 threads
/// were no faster than 8.
const THREADS_PER_CORE: usize = 4;

/// What a backfill may hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For the fresh states of the people folded at once (bytes, estimated from the
    /// number of live people and the definitions recomputed, see [`Plan::person_bytes`]):
    /// beyond it, people are folded in passes over ranges of their ids, each pass reading
    /// the log again.
    pub memory_bytes: u64,
    /// Rewritten profiles pending before a checkpoint is started (the processor's bound).
    pub checkpoint_pending: usize,
    /// Tests only: see `ProcessorConfig::backfill_map_after_scan`.
    pub map_after_scan: bool,
}

impl Limits {
    pub fn new(cfg: &ProcessorConfig) -> Limits {
        Limits {
            memory_bytes: cfg.backfill_memory_mb.saturating_mul(1 << 20),
            checkpoint_pending: cfg.checkpoint_pending,
            map_after_scan: cfg.backfill_map_after_scan,
        }
    }
}

/// Passes over the log so that each holds at most `budget` bytes: `people` live people of
/// `per_person` bytes each, and `fixed` bytes held throughout (the seq → person array, the
/// live ids; a quarter of the budget is left to the states whatever those take).
pub fn passes(people: u64, per_person: u64, fixed: u64, budget: u64) -> u64 {
    let for_states = budget.saturating_sub(fixed).max(budget / 4).max(1);
    people
        .saturating_mul(per_person)
        .div_ceil(for_states)
        .max(1)
}

/// Splits the id space into `n` ranges holding about as many of `ids` (ascending) each;
/// together they cover every id, in order.
pub fn id_ranges(ids: &[u64], n: u64) -> Vec<RangeInclusive<u64>> {
    let per = (ids.len() as u64).div_ceil(n.max(1)).max(1) as usize;
    let mut starts: Vec<u64> = ids.iter().step_by(per).copied().collect();
    if starts.is_empty() {
        starts.push(0);
    }
    starts[0] = 0;
    let ends = starts.iter().skip(1).map(|s| s - 1).chain([u64::MAX]);
    starts.iter().zip(ends).map(|(s, e)| *s..=e).collect()
}

/// The part of `ids` (ascending) in `range`.
fn within<'a>(ids: &'a [u64], range: &RangeInclusive<u64>) -> &'a [u64] {
    let from = ids.partition_point(|p| p < range.start());
    let to = ids.partition_point(|p| p <= range.end());
    &ids[from..to]
}

/// Recomputes what changed in the definitions since the state was built, from the log.
pub fn run(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    engine: &Engine,
    limits: &Limits,
) -> Result<Stats, StoreError> {
    let started = Instant::now();
    state.checkpoint()?;
    let last = state.processed_seq();
    let now = (engine.now)();
    let applied = engine.defs.applied_definitions()?;
    let plan = Plan::new(engine, applied.as_ref(), now);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_mul(THREADS_PER_CORE)
        .clamp(1, MAX_WORKERS);
    // Fresh states move into the rewritten profiles, pending until a checkpoint: one is
    // started before they would hold half the budget, and at least every
    // `OVERLAP_ENTRIES`, so that writing one part overlaps evaluating the next.
    let per_person = plan.person_bytes();
    let limits = &Limits {
        checkpoint_pending: limits
            .checkpoint_pending
            .min(
                (limits.memory_bytes / 2 / per_person).max(2 * evaluate::EVAL_CHUNK as u64)
                    as usize,
            )
            .min(evaluate::OVERLAP_ENTRIES),
        ..*limits
    };
    // Every live person, by id, from one read of the profiles' statuses (no profile
    // decoded): those re-evaluated when the plan concerns everyone, what the id ranges of
    // several passes are cut from, and what the scan resolves event owners with. Read
    // before the passes are counted, as it is held throughout with the rest below.
    let t = Instant::now();
    let read_liveness = || owners::Liveness::read(store, workers);
    let needed = plan.everyone || plan.reads_events();
    let mut liveness = if needed {
        read_liveness()?
    } else {
        owners::Liveness::default()
    };
    // Held throughout: the seq → person array and the live ids, 8 bytes each, and the
    // merged-away ids with what they were merged into.
    let live = state.live_profiles();
    let seq_array = if plan.reads_events() { last + 1 } else { 0 };
    let fixed = |l: &owners::Liveness| (seq_array + live) * 8 + l.merged_bytes();
    let mut n = passes(live, per_person, fixed(&liveness), limits.memory_bytes);
    if n > 1 && !needed {
        // Several passes are cut from the live ids: read them now, and count again.
        liveness = read_liveness()?;
        n = passes(live, per_person, fixed(&liveness), limits.memory_bytes);
    }
    let list_ms = t.elapsed().as_millis() as u64;
    let all = &liveness.live;
    let ranges = if n > 1 {
        id_ranges(all, n)
    } else {
        vec![0..=u64::MAX]
    };
    let mut stats = Stats {
        revision: engine.revision,
        events: last,
        full: plan.full,
        only_added: plan.only_added,
        workers: workers as u64,
        passes: ranges.len() as u64,
        list_ms,
        ..Stats::default()
    };
    let rev = engine.revision;
    let total = last.saturating_mul(stats.passes);
    report(&engine.defs, &plan.report, rev, 0, total, false);
    // Members of changed audiences are re-evaluated too.
    let mut members: Vec<u64> = Vec::new();
    if !plan.everyone {
        let snap = store.reader()?;
        for name in &plan.members_of {
            members.extend(snap.audience_snapshot(name)?.iter());
        }
        members.sort_unstable();
        members.dedup();
    }
    // 2. seq → profile at processing time, from the committed timeline: filled on other
    //    threads while the first pass reads the log (`owners::Mapping`; the scan holds back
    //    what it parses until the mapping is complete).
    let mapping = plan.reads_events().then(|| {
        if limits.map_after_scan {
            owners::Mapping::gated(last)
        } else {
            owners::Mapping::new(last)
        }
    });
    let plan = &plan;
    std::thread::scope(|s| -> Result<(), StoreError> {
        if let Some(m) = &mapping {
            s.spawn(move || m.fill(store, workers));
        }
        for (i, range) in ranges.iter().enumerate() {
            let mut fresh: Vec<HashMap<u64, Activation>> = vec![HashMap::new(); workers];
            let base = last * i as u64;
            // 3. One pass over the log on every core, folding the people in `range` (see
            //    `scan`).
            if let Some(m) = &mapping {
                let t = Instant::now();
                let times = scan::scan(
                    engine,
                    plan,
                    reader,
                    m,
                    last,
                    range,
                    &liveness,
                    &mut fresh,
                    |done| report(&engine.defs, &plan.report, rev, base + done, total, false),
                );
                // A gated mapping (tests) must not wait for a scan that failed.
                m.open();
                let times = times?;
                stats.scan_ms += t.elapsed().as_millis() as u64;
                stats.map_ms = m.took_ms();
                stats.add_scan(&times);
            }
            // 4. Re-evaluate: everyone in the range, or only the people an event named and
            //    the members of changed audiences.
            let mut who: Vec<u64> = if plan.everyone {
                within(all, range).to_vec()
            } else {
                let mut who: Vec<u64> = fresh.iter().flat_map(|m| m.keys().copied()).collect();
                who.extend_from_slice(within(&members, range));
                who.sort_unstable();
                who
            };
            who.dedup();
            let people: Vec<ProfileId> = who.into_iter().map(ProfileId::from_raw).collect();
            let t = Instant::now();
            evaluate::evaluate(
                state, store, engine, plan, &people, &mut fresh, now, limits, &mut stats,
            )?;
            stats.eval_ms += t.elapsed().as_millis() as u64;
        }
        Ok(())
    })?;
    drop(mapping);
    let t = Instant::now();
    state.checkpoint()?;
    state.drop_clean_profiles();
    stats.checkpoint_ms = t.elapsed().as_millis() as u64;
    // Readers see the result before the definitions show as backfilled: whoever waits
    // for the backfill to end then reads the new memberships, not the old ones.
    state.publish();
    engine.defs.set_applied(&engine.definitions)?;
    report(&engine.defs, &plan.report, rev, total, total, true);
    tracing::info!(
        events = last,
        parsed = stats.parsed,
        full = stats.full,
        evaluated = stats.evaluated,
        written = stats.written,
        spliced = stats.spliced,
        map_ms = stats.map_ms,
        scan_ms = stats.scan_ms,
        eval_ms = stats.eval_ms,
        checkpoint_ms = stats.checkpoint_ms,
        passes = stats.passes,
        revision = engine.revision,
        ms = started.elapsed().as_millis() as u64,
        "audiences and computed traits backfilled"
    );
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_fit_the_budget() {
        assert_eq!(passes(1_000, 100, 0, 1 << 30), 1);
        assert_eq!(passes(0, 100, 0, 0), 1, "no one: one pass");
        // 1 M people of 20 KB in 2 GiB, the array of 10 M events (80 MB) aside.
        let n = passes(1_000_000, 20_000, 80_000_000, 2 << 30);
        assert_eq!(n, 10);
        // An array larger than the budget leaves a quarter of it to the states.
        assert_eq!(passes(100, 1 << 20, 1 << 40, 100 << 20), 4);
        // A budget of 0: one person per pass.
        assert_eq!(passes(7, 100, 0, 0), 700);
    }

    #[test]
    fn id_ranges_cover_every_id_in_order_and_split_the_people_evenly() {
        let ids = [3u64, 9, 10, 40, 41, 42, 100];
        for n in 1..=10 {
            let r = id_ranges(&ids, n);
            assert_eq!(*r[0].start(), 0);
            assert_eq!(*r.last().unwrap().end(), u64::MAX);
            for w in r.windows(2) {
                assert_eq!(*w[0].end() + 1, *w[1].start(), "{r:?}");
            }
            assert!(r.len() as u64 <= n.min(ids.len() as u64), "{n}: {r:?}");
            let per = ids.len().div_ceil(n as usize);
            for range in &r {
                let k = within(&ids, range).len();
                assert!(k >= 1 && k <= per, "{n}: {r:?}");
                assert!(within(&ids, range).iter().all(|p| range.contains(p)));
            }
        }
        for n in 1..=10 {
            let covered: usize = id_ranges(&ids, n)
                .iter()
                .map(|r| within(&ids, r).len())
                .sum();
            assert_eq!(covered, ids.len(), "each id in exactly one range");
        }
        assert_eq!(id_ranges(&[], 3), vec![0..=u64::MAX]);
    }
}
