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
//! 2. map each event to the live profile it belongs to now (merges followed);
//! 3. read the log in order once; an event whose raw bytes cannot hold a name the
//!    recomputed definitions select is skipped unparsed, the others are parsed leanly
//!    (type, name, the properties read) and folded into fresh states;
//! 4. give the people concerned their fresh states and re-evaluate them (changes are
//!    recorded with cause `backfill`; people whose activation did not change are not
//!    rewritten), then checkpoint and record the definitions as applied.
//!
//! Progress is visible through [`DefsHandle::backfills`] (the audiences API shows it).

pub mod plan;

use super::activate::{record, Engine, Outcome};
use crate::defs::{Backfill, DefsHandle};
use plan::Plan;
use spoor_core::audience::{Activation, AudienceState, EventFact};
use spoor_core::computed::ComputedState;
use spoor_core::identity::ProfileId;
use spoor_core::profile::{parse_event, parse_event_lean, Profile};
use spoor_store::log::{LogEntry, LogReader};
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
    /// Time spent mapping events to people, reading the log, re-evaluating (ms).
    pub map_ms: u64,
    pub scan_ms: u64,
    pub eval_ms: u64,
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

/// Log entries read (and folded in parallel) at a time.
const BATCH: usize = 20_000;
/// Most threads a backfill folds on.
const MAX_WORKERS: usize = 8;

/// Folds the events of `batch` that belong to worker `k`'s people into their fresh states
/// (an entry is made for every person an event of the plan names, even when only an old
/// version read it). Returns the events parsed.
#[allow(clippy::too_many_arguments)]
fn fold_part(
    engine: &Engine,
    plan: &Plan,
    owner: &[u64],
    batch: &[LogEntry],
    last: u64,
    k: usize,
    workers: usize,
    part: &mut HashMap<u64, Activation>,
) -> u64 {
    let mut parsed = 0;
    for e in batch {
        if e.seq > last {
            break;
        }
        let pid = owner.get(e.seq as usize).copied().unwrap_or(0);
        if pid == 0 || pid % workers as u64 != k as u64 || e.is_erased() {
            continue;
        }
        if !plan.may_matter(&e.payload) {
            continue;
        }
        parsed += 1;
        // The processor applied this event (it has a timeline row), so the full parse
        // accepted it; the lean one reads a subset of the same fields alike.
        let fact = match parse_event_lean(e.seq, &e.payload) {
            Ok(v) => EventFact::from_lean(e.seq, e.timestamp_ms, &v, &plan.keys),
            Err(_) => match parse_event(e.seq, e.timestamp_ms, &e.payload) {
                Ok(v) => EventFact::from_view_keys(&v, &plan.keys),
                Err(_) => continue,
            },
        };
        if plan.full {
            engine.fold(part.entry(pid).or_default(), &fact, &mut []);
            continue;
        }
        fold_planned(plan, part, pid, &fact);
    }
    parsed
}

/// Applies one event to the plan's definitions only.
fn fold_planned(plan: &Plan, part: &mut HashMap<u64, Activation>, pid: u64, ev: &EventFact) {
    for d in &plan.computed {
        if d.matters(ev) {
            part.entry(pid)
                .or_default()
                .computed
                .entry(d.name.clone())
                .or_insert_with(|| ComputedState::new(d))
                .apply(d, ev);
        }
    }
    for (name, rule) in &plan.audiences {
        if rule.deps.event_matters(ev) {
            part.entry(pid)
                .or_default()
                .audiences
                .entry(name.clone())
                .or_insert_with(|| AudienceState::new(rule))
                .apply(rule, ev);
        }
    }
    if plan.stale_match(ev) {
        part.entry(pid).or_default();
    }
}

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
            for d in &plan.computed {
                match fresh.computed.remove(&d.name) {
                    Some(s) => act.computed.insert(d.name.clone(), s),
                    None => act.computed.remove(&d.name),
                };
            }
            for (name, _) in &plan.audiences {
                match fresh.audiences.remove(name) {
                    Some(s) => act.audiences.insert(name.clone(), s),
                    None => act.audiences.remove(name),
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
    let mut stats = Stats {
        revision: engine.revision,
        events: last,
        full: plan.full,
        ..Stats::default()
    };
    let rev = engine.revision;
    report(&engine.defs, &plan.report, rev, 0, last, false);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let mut fresh: Vec<HashMap<u64, Activation>> = vec![HashMap::new(); workers];
    let mut live: Vec<ProfileId> = Vec::new();
    if !plan.is_noop() {
        // 2. seq → live profile, from every live profile's cluster timeline.
        let t = Instant::now();
        let snap = store.reader()?;
        let mut owner: Vec<u64> = vec![0; last as usize + 1];
        let mut after = None;
        loop {
            let page = snap.list_profile_ids(after, 1_000)?;
            let Some(tail) = page.last() else { break };
            after = Some(*tail);
            for id in page {
                live.push(id);
                let cluster = snap.cluster(id)?;
                for row in snap.timeline(&cluster, None, usize::MAX)? {
                    if let Some(slot) = owner.get_mut(row.seq as usize) {
                        *slot = id.raw();
                    }
                }
            }
        }
        stats.map_ms = t.elapsed().as_millis() as u64;

        // 3. One pass over the log, parsed and folded on every core: worker `k` takes the
        //    events of the people with `pid % workers == k`, so each person's states live
        //    in one worker's map and no locking is needed (states are order-independent,
        //    so splitting the stream by person changes nothing).
        let t = Instant::now();
        let mut seq = if plan.reads_events() { 1 } else { last + 1 };
        while seq <= last {
            let batch = reader.read_from(seq, BATCH)?;
            let Some(end) = batch.last().map(|e| e.seq) else {
                break;
            };
            let (owner, batch, plan) = (&owner, &batch, &plan);
            stats.parsed += std::thread::scope(|s| {
                let hs: Vec<_> = fresh
                    .iter_mut()
                    .enumerate()
                    .map(|(k, part)| {
                        s.spawn(move || {
                            fold_part(engine, plan, owner, batch, last, k, workers, part)
                        })
                    })
                    .collect();
                hs.into_iter().map(|h| h.join().unwrap_or(0)).sum::<u64>()
            });
            seq = end + 1;
            report(&engine.defs, &plan.report, rev, end.min(last), last, false);
        }
        stats.scan_ms = t.elapsed().as_millis() as u64;
        if !plan.everyone {
            // Only the people an event named, and the members of changed audiences.
            let mut who: Vec<u64> = fresh.iter().flat_map(|m| m.keys().copied()).collect();
            for name in &plan.members_of {
                who.extend(snap.audience_snapshot(name)?.iter());
            }
            who.sort_unstable();
            who.dedup();
            live = who.into_iter().map(ProfileId::from_raw).collect();
        }
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
    state.checkpoint()?;
    stats.eval_ms = t.elapsed().as_millis() as u64;
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
        revision = engine.revision,
        ms = started.elapsed().as_millis() as u64,
        "audiences and computed traits backfilled"
    );
    Ok(stats)
}
