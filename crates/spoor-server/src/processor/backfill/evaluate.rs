//! Step 4 of a backfill: the people concerned get their fresh states and are re-evaluated
//! now, on every core. Worker `k` reads its people's profiles from the last checkpoint
//! (nothing but the backfill writes while it runs, and it writes each person once), so
//! decoding and evaluating are parallel; the processor thread puts the changed ones back
//! and records the changes, in id order.
//!
//! Rewritten profiles are pending changes until a checkpoint: one is started after a
//! round whenever none is committing, and (waiting for the one in flight) whenever as many
//! are pending as the processor's own bound (`checkpoint_pending`), as hold the states of
//! half the memory limit, or [`OVERLAP_ENTRIES`]; once written they are not kept as clean
//! cache, so a backfill that rewrites millions of people holds only a bounded number of
//! them, and commits while it evaluates.
//! A crash in between loses nothing: the definitions are recorded as applied only at the
//! end, so the backfill runs again, and people already rewritten are found unchanged.

use super::super::activate::{record, Engine, Outcome};
use super::{plan::Plan, Limits, Stats};
use spoor_core::audience::{Activation, LazyActivation};
use spoor_core::codec::ActivationView;
use spoor_core::identity::ProfileId;
use spoor_core::profile::Profile;
use spoor_store::state::{ChangeCause, ProcessorState, StateStore};
use spoor_store::StoreError;
use std::collections::HashMap;

/// Most entries pending before a checkpoint starts: it commits in the background while
/// the next people are evaluated, so only the last part's commit is waited for.
pub const OVERLAP_ENTRIES: usize = 25_000;

/// People re-evaluated per round. A round waits for its slowest worker, so fewer, larger
/// rounds waste less; on the 10 M-event backfill the difference from 2,000 stayed within
/// the run-to-run noise (evaluation 10.8–11.2 s at 2,000, 9.8–12.4 s at 4,000).
pub const EVAL_CHUNK: usize = 4_000;

/// Re-evaluates `people` (ascending ids) at `now` with the fresh states in `fresh` (one
/// map per worker, person `p` in map `p % workers`), consuming them.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    state: &mut ProcessorState,
    store: &StateStore,
    engine: &Engine,
    plan: &Plan,
    people: &[ProfileId],
    fresh: &mut [HashMap<u64, Activation>],
    now: i64,
    limits: &Limits,
    stats: &mut Stats,
) -> Result<(), StoreError> {
    let workers = fresh.len();
    for chunk in people.chunks(EVAL_CHUNK) {
        let parts: Vec<Result<Part, StoreError>> = std::thread::scope(|s| {
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
            let part = part?;
            done.extend(part.changed);
            stats.spliced += part.spliced;
        }
        stats.evaluated += chunk.len() as u64;
        stats.written += done.len() as u64;
        done.sort_unstable_by_key(|(p, _)| p.id.raw());
        for (p, out) in done {
            let pid = p.id;
            state.put_profile(p);
            record(state, pid, out, now, 0, ChangeCause::Backfill);
        }
        if let Some(e) = state.take_error() {
            return Err(e);
        }
        // One checkpoint commits in the background while the next people are evaluated:
        // a new one starts as soon as the last has committed (or, waiting for it, when the
        // pending entries reach the bound), so the final one holds only what came since.
        // Counting entries alone let a rewrite that keeps activations encoded (light in
        // entries) pile 25,000 people into the final checkpoint, waited for at the end.
        let due = state.pending_entries() >= limits.checkpoint_pending;
        if !due {
            state.finish_checkpoint(false)?;
        }
        if due || (state.has_pending() && !state.checkpoint_in_flight()) {
            // Completes the previous checkpoint first (the wait is counted).
            let t = std::time::Instant::now();
            state.begin_checkpoint()?;
            stats.checkpoints += 1;
            stats.checkpoint_wait_ms += t.elapsed().as_millis() as u64;
        }
        // Profiles a completed checkpoint wrote would be kept as clean cache: they are
        // dropped (each is rewritten once, none read again).
        state.drop_clean_profiles();
    }
    Ok(())
}

/// What a worker re-evaluated in one round.
struct Part {
    /// The people whose activation changed, with what changed.
    changed: Vec<(Profile, Outcome)>,
    /// Of those, the ones whose encoded activation was spliced ([`splice_added`]).
    spliced: u64,
}

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
) -> Result<Part, StoreError> {
    let r = store.durable_reader()?;
    let mut out = Vec::new();
    let mut spliced = 0;
    for pid in chunk
        .iter()
        .filter(|p| p.raw() % workers as u64 == k as u64)
    {
        let read = if plan.only_added {
            r.profile_lazy(*pid)?
        } else {
            r.profile(*pid)?
        };
        let Some(mut p) = read else {
            continue;
        };
        let mut fresh = part.remove(&pid.raw()).unwrap_or_default();
        // Kept encoded as read (a record of state format 3): spliced.
        if let Some(bytes) = p.activation.encoded_bytes().filter(|_| plan.only_added) {
            if let Some((b, o)) = splice_added(engine, plan, p.id, bytes, fresh, now)? {
                p.activation = LazyActivation::encoded(b.into());
                out.push((p, o));
                spliced += 1;
            }
            continue;
        }
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
        let o = if plan.only_added {
            engine.on_added(&mut p, now, |name| {
                plan.audiences.iter().any(|(n, _)| &**n == name)
            })
        } else {
            let mut groups = Vec::new();
            if engine.reads_groups() {
                for g in p.groups.keys() {
                    if let Some(g) = r.group(g)? {
                        groups.push(g.trait_values());
                    }
                }
            }
            engine.on_time(&mut p, now, &groups)
        };
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
    Ok(Part {
        changed: out,
        spliced,
    })
}

/// [`Engine::on_added`] for a person whose activation is still encoded (`bytes`, read
/// with `profile_lazy`): the added audiences are evaluated on their own, and their entries
/// spliced into the encoded activation, every other state copied as bytes. Decoding,
/// re-encoding and freeing the states of every other definition was most of the cost of
/// this step with many definitions. Returns the new bytes and the outcome when the
/// activation changed.
fn splice_added(
    engine: &Engine,
    plan: &Plan,
    pid: ProfileId,
    bytes: &[u8],
    fresh: Activation,
    now: i64,
) -> Result<Option<(Vec<u8>, Outcome)>, StoreError> {
    let view = ActivationView::parse(bytes)
        .map_err(|e| StoreError::Meta(format!("unreadable profile record {pid}: {e}")))?;
    let names: Vec<&str> = plan.audiences.iter().map(|(n, _)| &**n).collect();
    // What the added audiences have: their fresh states, and what an earlier, interrupted
    // run of this backfill may have left.
    let mut act = Activation {
        audiences: fresh.audiences,
        revision: view.revision,
        next_timer_ms: view.next_timer_ms,
        ..Activation::default()
    };
    for (name, _) in &plan.audiences {
        if let Some(e) = view.entry(name) {
            if let Some(t) = e.member {
                act.members.insert(name.clone(), t);
            }
            if let Some(t) = e.next {
                act.next.insert(name.clone(), t);
            }
        }
    }
    let mut o = engine.on_added_alone(&mut act, now, |name| names.contains(&name));
    let (spliced, timer) = view.splice(&names, &act);
    o.old_timer = view.next_timer_ms;
    o.new_timer = timer;
    Ok((spliced != bytes).then_some((spliced, o)))
}
