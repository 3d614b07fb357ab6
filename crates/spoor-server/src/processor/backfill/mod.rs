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
//!    of the timeline table ([`scan::owners_at_time`]);
//! 3. read the log once, on every core; an event whose raw bytes cannot hold a name the
//!    recomputed definitions select is skipped unparsed, the others get their live profile
//!    (merges followed), are parsed leanly (type, name, the properties read) and folded
//!    into fresh states ([`scan::scan`]);
//! 4. give the people concerned their fresh states and re-evaluate them (changes are
//!    recorded with cause `backfill`; people whose activation did not change are not
//!    rewritten), then checkpoint and record the definitions as applied.
//!
//! Progress is visible through [`DefsHandle::backfills`] (the audiences API shows it).

pub mod plan;
pub mod scan;

use super::activate::{record, Engine, Outcome};
use crate::defs::{Backfill, DefsHandle};
use plan::Plan;
use spoor_core::audience::Activation;
use spoor_core::identity::ProfileId;
use spoor_core::profile::Profile;
use spoor_store::log::LogReader;
use spoor_store::state::{ChangeCause, ProcessorState, StateStore};
use spoor_store::StoreError;
use std::collections::HashMap;
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
    /// Everything was recomputed (no record of the definitions the state reflected).
    pub full: bool,
    /// People re-evaluated, and of those rewritten (their activation changed).
    pub evaluated: u64,
    pub written: u64,
    /// Wall time spent mapping events to people, reading the log, re-evaluating, and in
    /// the final checkpoint (ms).
    pub map_ms: u64,
    pub scan_ms: u64,
    pub eval_ms: u64,
    pub checkpoint_ms: u64,
    /// Threads the scan and the evaluation ran on.
    pub workers: u64,
    /// Of the scan, thread time summed over the workers (ms): reading log entries, the
    /// raw-byte filter, parsing, folding.
    pub read_ms: u64,
    pub filter_ms: u64,
    /// Resolving the ids of the events that passed the filter to live profiles.
    pub resolve_ms: u64,
    pub parse_ms: u64,
    pub fold_ms: u64,
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
            }),
        );
    }
}

/// Most threads a backfill folds on.
const MAX_WORKERS: usize = 8;

/// People re-evaluated per round of step 4.
const EVAL_CHUNK: usize = 2_000;

/// Gives worker `k`'s people in `chunk` their fresh states and re-evaluates them at `now`;
/// returns those whose activation changed.
#[allow(clippy::too_many_arguments)]
fn evaluate_part(
    store: &StateStore,
    engine: &Engine,
    plan: &Plan,
    chunk: &[ProfileId],
    k: usize,
    workers: usize,
    part: &mut HashMap<u64, Activation>,
    now: i64,
) -> Result<Vec<(Profile, Outcome)>, StoreError> {
    let r = store.durable_reader()?;
    let mut out = Vec::new();
    for pid in chunk
        .iter()
        .filter(|p| p.raw() % workers as u64 == k as u64)
    {
        let Some(mut p) = r.profile(*pid)? else {
            continue;
        };
        let mut fresh = part.remove(&pid.raw()).unwrap_or_default();
        let before = Activation::clone(&p.activation);
        let act = p.activation_mut();
        if plan.full {
            act.computed = fresh.computed;
            act.audiences = fresh.audiences;
        } else {
            for (name, _) in &plan.computed {
                match fresh.computed.remove_entry(&**name) {
                    Some((k, s)) => act.computed.insert(k, s),
                    None => act.computed.remove(&**name),
                };
            }
            for (name, _) in &plan.audiences {
                match fresh.audiences.remove_entry(&**name) {
                    Some((k, s)) => act.audiences.insert(k, s),
                    None => act.audiences.remove(&**name),
                };
            }
            // States of removed definitions are dropped by the evaluation.
        }
        let mut groups = Vec::new();
        if engine.reads_groups() {
            for g in p.groups.keys() {
                if let Some(g) = r.group(g)? {
                    groups.push(g.trait_values());
                }
            }
        }
        let o = engine.on_time(&mut p, now, &groups);
        // Nothing changed but the revision stamp: not rewritten (its next event evaluates
        // everything, as for any person not evaluated under the current revision).
        let same = o.entered.is_empty()
            && o.exited.is_empty()
            && o.old_timer == o.new_timer
            && Activation {
                revision: p.activation.revision,
                ..before
            } == *p.activation;
        if !same {
            out.push((p, o));
        }
    }
    Ok(out)
}

/// Recomputes what changed in the definitions since the state was built, from the log.
pub fn run(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    engine: &Engine,
) -> Result<Stats, StoreError> {
    let started = Instant::now();
    state.checkpoint()?;
    let last = state.processed_seq();
    let now = (engine.now)();
    let applied = engine.defs.applied_definitions()?;
    let plan = Plan::new(engine, applied.as_ref(), now);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let mut stats = Stats {
        revision: engine.revision,
        events: last,
        full: plan.full,
        workers: workers as u64,
        ..Stats::default()
    };
    let rev = engine.revision;
    report(&engine.defs, &plan.report, rev, 0, last, false);
    let mut fresh: Vec<HashMap<u64, Activation>> = vec![HashMap::new(); workers];
    let mut live: Vec<ProfileId> = Vec::new();
    if plan.everyone {
        // Every live person, listed by id (no profile decoded).
        let snap = store.reader()?;
        let mut after = None;
        loop {
            let page = snap.list_profile_ids(after, 10_000)?;
            let Some(tail) = page.last() else { break };
            after = Some(*tail);
            live.extend(page);
        }
    }
    if plan.reads_events() {
        // 2. seq → profile at processing time, from the committed timeline.
        let t = Instant::now();
        let owner = scan::owners_at_time(store, last, workers)?;
        stats.map_ms = t.elapsed().as_millis() as u64;

        // 3. One pass over the log on every core (see `scan`).
        let t = Instant::now();
        let times = scan::scan(
            engine,
            &plan,
            store,
            reader,
            &owner,
            last,
            &mut fresh,
            |done| report(&engine.defs, &plan.report, rev, done, last, false),
        )?;
        drop(owner);
        stats.scan_ms = t.elapsed().as_millis() as u64;
        stats.parsed = times.parsed;
        stats.read_ms = times.read_ns / 1_000_000;
        stats.filter_ms = times.filter_ns / 1_000_000;
        stats.resolve_ms = times.resolve_ns / 1_000_000;
        stats.parse_ms = times.parse_ns / 1_000_000;
        stats.fold_ms = times.fold_ns / 1_000_000;
    }
    if !plan.everyone {
        // Only the people an event named, and the members of changed audiences.
        let mut who: Vec<u64> = fresh.iter().flat_map(|m| m.keys().copied()).collect();
        let snap = store.reader()?;
        for name in &plan.members_of {
            who.extend(snap.audience_snapshot(name)?.iter());
        }
        who.sort_unstable();
        who.dedup();
        live = who.into_iter().map(ProfileId::from_raw).collect();
    }
    // 4. The people concerned get their fresh states and are re-evaluated now, on every
    //    core too: worker `k` reads its people's profiles from the checkpoint taken in 1
    //    (nothing else writes while a backfill runs), so decoding and evaluating are
    //    parallel; this thread puts the changed ones back and records the changes, in id
    //    order.
    let t = Instant::now();
    let plan = &plan;
    for chunk in live.chunks(EVAL_CHUNK) {
        let parts: Vec<Result<Vec<(Profile, Outcome)>, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = fresh
                .iter_mut()
                .enumerate()
                .map(|(k, part)| {
                    s.spawn(move || {
                        evaluate_part(store, engine, plan, chunk, k, workers, part, now)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(StoreError::Meta("a backfill worker panicked".into()))
                    })
                })
                .collect()
        });
        let mut done = Vec::with_capacity(chunk.len());
        for part in parts {
            done.extend(part?);
        }
        stats.evaluated += chunk.len() as u64;
        stats.written += done.len() as u64;
        done.sort_unstable_by_key(|(p, _)| p.id.raw());
        for (p, out) in done {
            let pid = p.id;
            state.put_profile(p);
            record(state, pid, out, now, 0, ChangeCause::Backfill);
        }
    }
    if let Some(e) = state.take_error() {
        return Err(e);
    }
    stats.eval_ms = t.elapsed().as_millis() as u64;
    let t = Instant::now();
    state.checkpoint()?;
    stats.checkpoint_ms = t.elapsed().as_millis() as u64;
    engine.defs.set_applied(&engine.definitions)?;
    report(&engine.defs, &plan.report, rev, last, last, true);
    tracing::info!(
        events = last,
        parsed = stats.parsed,
        full = stats.full,
        evaluated = stats.evaluated,
        written = stats.written,
        map_ms = stats.map_ms,
        scan_ms = stats.scan_ms,
        eval_ms = stats.eval_ms,
        checkpoint_ms = stats.checkpoint_ms,
        revision = engine.revision,
        ms = started.elapsed().as_millis() as u64,
        "audiences and computed traits backfilled"
    );
    Ok(stats)
}
