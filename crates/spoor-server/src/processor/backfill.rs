//! Backfill: when audience or computed-trait definitions change, every person's states
//! are recomputed from the whole event log under the new definitions, and memberships are
//! re-evaluated — so a new audience is exact over history, not only for new events.
//!
//! It runs on the processor thread (the single writer), between batches:
//! 1. checkpoint, so every event's profile assignment (the timeline) is in the store;
//! 2. map each event to the live profile it belongs to now (merges followed);
//! 3. read the log in order once and fold each event into fresh per-person states;
//! 4. give every live profile its fresh states and re-evaluate it (changes are recorded
//!    with cause `backfill`), then checkpoint.
//!
//! Progress is visible through [`DefsHandle::backfills`] (the audiences API shows it).

use super::activate::{record, Engine, Outcome};
use crate::defs::{Backfill, DefsHandle};
use spoor_core::audience::Activation;
use spoor_core::identity::ProfileId;
use spoor_core::profile::{parse_event, Profile};
use spoor_store::log::{LogEntry, LogReader};
use spoor_store::state::{ChangeCause, ProcessorState, StateStore};
use spoor_store::StoreError;
use std::collections::HashMap;

/// Reports progress under every definition name being backfilled.
fn report(defs: &DefsHandle, engine: &Engine, done: u64, total: u64, finished: bool) {
    let d = defs.current();
    let names = d.audiences.keys().chain(d.computed.keys());
    for n in names {
        defs.set_backfill(
            n,
            (!finished).then_some(Backfill {
                done,
                total,
                revision: engine.revision,
            }),
        );
    }
}

/// Log entries read (and folded in parallel) at a time.
const BATCH: usize = 20_000;
/// Most threads a backfill folds on.
const MAX_WORKERS: usize = 8;

/// Folds the events of `batch` that belong to worker `k`'s people into their states.
fn fold_part(
    engine: &Engine,
    owner: &[u64],
    batch: &[LogEntry],
    last: u64,
    k: usize,
    workers: usize,
    part: &mut HashMap<u64, Activation>,
) {
    for e in batch {
        if e.seq > last {
            break;
        }
        let pid = owner.get(e.seq as usize).copied().unwrap_or(0);
        if pid == 0 || pid % workers as u64 != k as u64 || e.is_erased() {
            continue;
        }
        let Ok(view) = parse_event(e.seq, e.timestamp_ms, &e.payload) else {
            continue;
        };
        let fact = engine.fact(&view);
        engine.fold(part.entry(pid).or_default(), &fact, &mut []);
    }
}

/// People re-evaluated per round of step 4.
const EVAL_CHUNK: usize = 2_000;

/// Gives worker `k`'s people in `chunk` their fresh states and re-evaluates them at `now`.
fn evaluate_part(
    store: &StateStore,
    engine: &Engine,
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
        let act = part.remove(&pid.raw()).unwrap_or_default();
        p.activation.computed = act.computed;
        p.activation.audiences = act.audiences;
        let mut groups = Vec::new();
        if engine.reads_groups() {
            for g in p.groups.keys() {
                if let Some(g) = r.group(g)? {
                    groups.push(g.trait_values());
                }
            }
        }
        let o = engine.on_time(&mut p, now, &groups);
        out.push((p, o));
    }
    Ok(out)
}

/// Recomputes all activation state from the log. Returns the events read.
pub fn run(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    engine: &Engine,
) -> Result<u64, StoreError> {
    let started = std::time::Instant::now();
    state.checkpoint()?;
    let last = state.processed_seq();
    report(&engine.defs, engine, 0, last, false);

    // 2. seq → live profile, from every live profile's cluster timeline.
    let snap = store.reader()?;
    let mut owner: Vec<u64> = vec![0; last as usize + 1];
    let mut live: Vec<ProfileId> = Vec::new();
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

    // 3. One pass over the log, parsed and folded on every core: worker `k` takes the
    //    events of the people with `pid % workers == k`, so each person's states live in
    //    one worker's map and no locking is needed (states are order-independent, so
    //    splitting the stream by person changes nothing).
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    let mut fresh: Vec<HashMap<u64, Activation>> = vec![HashMap::new(); workers];
    if !engine.idle {
        let mut seq = 1;
        while seq <= last {
            let batch = reader.read_from(seq, BATCH)?;
            let Some(end) = batch.last().map(|e| e.seq) else {
                break;
            };
            let owner = &owner;
            let batch = &batch;
            std::thread::scope(|s| {
                for (k, part) in fresh.iter_mut().enumerate() {
                    s.spawn(move || fold_part(engine, owner, batch, last, k, workers, part));
                }
            });
            seq = end + 1;
            report(&engine.defs, engine, end.min(last), last, false);
        }
    }
    // 4. Every live person gets the fresh states and is re-evaluated now, on every core
    //    too: worker `k` reads its people's profiles from the checkpoint taken in 1 (nothing
    //    else writes while a backfill runs), so decoding and evaluating are parallel; this
    //    thread puts the results in and records the changes, in id order.
    let now = (engine.now)();
    for chunk in live.chunks(EVAL_CHUNK) {
        let parts: Vec<Result<Vec<(Profile, Outcome)>, StoreError>> = std::thread::scope(|s| {
            let handles: Vec<_> = fresh
                .iter_mut()
                .enumerate()
                .map(|(k, part)| {
                    s.spawn(move || evaluate_part(store, engine, chunk, k, workers, part, now))
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
    engine.defs.set_applied_revision(engine.revision)?;
    report(&engine.defs, engine, last, last, true);
    tracing::info!(
        events = last,
        revision = engine.revision,
        ms = started.elapsed().as_millis() as u64,
        "audiences and computed traits backfilled"
    );
    Ok(last)
}
