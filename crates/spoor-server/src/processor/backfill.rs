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

use super::activate::{record, Engine};
use crate::defs::{Backfill, DefsHandle};
use spoor_core::audience::{Activation, AudienceState, EventFact};
use spoor_core::identity::ProfileId;
use spoor_core::profile::parse_event;
use spoor_store::log::LogReader;
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
        let page = snap.list_profiles(after, 1_000)?;
        let Some(tail) = page.last() else { break };
        after = Some(tail.id);
        for p in page {
            live.push(p.id);
            let cluster = snap.cluster(p.id)?;
            for row in snap.timeline(&cluster, None, usize::MAX)? {
                if let Some(slot) = owner.get_mut(row.seq as usize) {
                    *slot = p.id.raw();
                }
            }
        }
    }

    // 3. One pass over the log.
    let mut fresh: HashMap<u64, Activation> = HashMap::new();
    if !engine.idle {
        let mut seq = 1;
        while seq <= last {
            let batch = reader.read_from(seq, 5_000)?;
            let Some(end) = batch.last().map(|e| e.seq) else {
                break;
            };
            for e in &batch {
                if e.seq > last {
                    break;
                }
                let pid = owner.get(e.seq as usize).copied().unwrap_or(0);
                if pid == 0 {
                    continue;
                }
                let Ok(view) = parse_event(e.seq, e.timestamp_ms, &e.payload) else {
                    continue;
                };
                let fact = EventFact::from_view(&view);
                let act = fresh.entry(pid).or_default();
                engine.computed.apply(&mut act.computed, &fact);
                for name in engine.audiences.order() {
                    if let Some(rule) = engine.audiences.get(name) {
                        if rule.deps.event_matters(&fact) {
                            act.audiences
                                .entry(name.clone())
                                .or_insert_with(|| AudienceState::new(rule))
                                .apply(rule, &fact);
                        }
                    }
                }
            }
            seq = end + 1;
            report(&engine.defs, engine, end.min(last), last, false);
        }
    }

    // 4. Every live person gets the fresh states and is re-evaluated now.
    let now = (engine.now)();
    for pid in live {
        let act = fresh.remove(&pid.raw()).unwrap_or_default();
        let out = state.with_profile(pid, |p| {
            p.activation.computed = act.computed;
            p.activation.audiences = act.audiences;
            engine.on_time(p, now)
        })?;
        record(state, pid, out, now, 0, ChangeCause::Backfill);
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
