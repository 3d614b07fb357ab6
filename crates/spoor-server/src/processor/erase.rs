//! The erase step (right to erasure), run by the processor — the single writer — like a
//! split. It removes a person's whole merged cluster: profiles, identity records and
//! identifier ownership, decisions, timeline and membership history rows, audience
//! memberships (an exit is recorded for each, carrying only the profile id, so destinations
//! learn of it), delivery rows and dead letters, and the events themselves from the log and
//! the rejected log (tombstoned in place, see `spoor_store::log` erase).
//!
//! Order, chosen so that a crash at any point leaves a job that can simply be run again:
//! everything that needs the person's identifiers (to find events, rejected events and
//! dead letters) is done while the state still holds them, and the state is deleted last.
//! Re-running an erased step finds nothing left to do (erasing a tombstone is a no-op).

use super::Pipeline;
use crate::destinations::store::DeliveryStore;
use crate::erasure::{ErasureJob, JobStatus, Privacy};
use spoor_core::identity::{Identifier, IdentityStore, ProfileId};
use spoor_core::profile::{identity_input, parse_event};
use spoor_store::log::LogReader;
use spoor_store::state::{ChangeCause, MembershipChange, ProcessorState, StateStore};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Most events one erasure reads through the identifier index (a hub identifier shared by
/// very many people is refused rather than erasing them all).
pub const MAX_ERASE_EVENTS: usize = 1_000_000;

/// Values shorter than this are not searched for in rejected events and dead letters (a
/// userId `42` would match unrelated text); their events are still found by the index.
const MIN_NEEDLE: usize = 5;

/// What the erase step reaches besides the state.
#[derive(Clone)]
pub struct EraseCtx {
    pub privacy: Arc<Privacy>,
    /// `[retention]`: the config's policies and the interval of periodic runs.
    pub retention: crate::erasure::retention::RetentionConfig,
    pub rejects: LogReader,
    pub deliveries: Arc<DeliveryStore>,
}

/// Runs (or resumes) one erasure job to its end, updating the job as it goes.
pub fn run_erase(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
    ctx: &EraseCtx,
    job: &ErasureJob,
    now_ms: i64,
) -> Result<ErasureJob, String> {
    let id = job.id.clone();
    let step = |name: &str| {
        ctx.privacy.update_job(&id, |j| {
            j.status = JobStatus::Running;
            j.step = name.to_owned();
        })
    };
    step("plan")?;
    // Everything applied so far must be in the committed index and rows.
    state.checkpoint().map_err(|e| e.to_string())?;
    let pid = ProfileId::parse(&job.profile)
        .ok_or_else(|| format!("job {} names no profile id", job.id))?;

    // 1. The cluster: the profile and everything merged into it.
    let snap = store.reader().map_err(|e| e.to_string())?;
    let live = snap.resolve(pid).map_err(|e| e.to_string())?.unwrap_or(pid);
    let cluster = snap.cluster(live).map_err(|e| e.to_string())?;
    let mut identifiers: BTreeSet<Identifier> = BTreeSet::new();
    let mut live_count = 0i64;
    for c in &cluster {
        if let Some(r) = state.identity(*c) {
            if r.is_live() {
                live_count += 1;
            }
            identifiers.extend(r.identifiers.into_iter().map(|l| l.identifier));
        }
    }

    // 2. Its events: those filed under the cluster, and every event carrying one of its
    //    identifiers (refused links included).
    let mut seqs: BTreeSet<u64> = BTreeSet::new();
    let mut cursor = None;
    loop {
        let rows = snap
            .timeline(&cluster, cursor, 10_000)
            .map_err(|e| e.to_string())?;
        let Some(last) = rows.last().copied() else {
            break;
        };
        seqs.extend(rows.iter().map(|r| r.seq));
        cursor = Some(last);
    }
    for i in &identifiers {
        let found = snap
            .events_with(i.kind.as_str(), &i.value, MAX_ERASE_EVENTS + 1)
            .map_err(|e| e.to_string())?;
        seqs.extend(found);
        if seqs.len() > MAX_ERASE_EVENTS {
            return Err(format!(
                "more than {MAX_ERASE_EVENTS} events carry this person's identifiers; \
                 refusing (a shared identifier?)"
            ));
        }
    }
    // What to search for where there is no index: the identifiers as normalised and as
    // sent (read from the events while they still exist). The index is by hash, so each
    // event is re-checked to really carry one of the identifiers or be in the timeline.
    let mut needles: BTreeSet<String> =
        identifiers.iter().map(|i| i.value.to_lowercase()).collect();
    let mut keys: BTreeSet<String> = cluster.iter().map(|c| c.to_string()).collect();
    for chunk in seqs.iter().copied().collect::<Vec<_>>().chunks(256) {
        for seq in chunk {
            let Some(e) = reader
                .read_from(*seq, 1)
                .map_err(|e| e.to_string())?
                .into_iter()
                .next()
                .filter(|e| e.seq == *seq)
            else {
                continue;
            };
            let Ok(view) = parse_event(e.seq, e.timestamp_ms, &e.payload) else {
                continue;
            };
            for (kind, raw) in identity_input(&view, &p.identifiers).identifiers {
                if let Ok(n) = p.rules.normalize(&kind, &raw) {
                    if identifiers.contains(&n) {
                        needles.insert(raw.to_lowercase());
                        if kind == "user_id" || kind == "anonymous_id" {
                            keys.insert(format!("{kind}:{raw}"));
                        }
                    }
                }
            }
        }
    }
    for i in &identifiers {
        let k = i.kind.as_str();
        if k == "user_id" || k == "anonymous_id" {
            keys.insert(format!("{k}:{}", i.value));
        }
    }
    let needles: Vec<String> = needles
        .into_iter()
        .filter(|n| n.chars().count() >= MIN_NEEDLE)
        .collect();

    // 3. Suppression, before anything is deleted: an event for the person arriving from
    //    now on is dropped.
    let ids: Vec<Identifier> = identifiers.iter().cloned().collect();
    let suppressed = if job.suppress {
        step("suppress")?;
        ctx.privacy.suppress(&ids, &job.id, now_ms)?
    } else {
        0
    };

    // 4. The rejected log (no index: a scan for the values).
    step("rejected")?;
    let rejected = ctx
        .rejects
        .erase_where(|e| {
            let text = String::from_utf8_lossy(&e.payload).to_lowercase();
            needles.iter().any(|n| text.contains(n.as_str()))
        })
        .map_err(|e| e.to_string())?;

    // 5. Delivery log rows, dead letters and replays.
    step("deliveries")?;
    let keys: Vec<String> = keys.into_iter().collect();
    let delivery_rows = ctx
        .deliveries
        .erase_person(&keys, &needles)
        .map_err(|e| e.to_string())?;

    // 6. The events.
    step("log")?;
    let seqs: Vec<u64> = seqs.into_iter().collect();
    let erased = reader.erase(&seqs).map_err(|e| e.to_string())?;

    // 7. The derived state, last (it is what finds everything above on a re-run).
    step("state")?;
    let mut exits = 0;
    for c in &cluster {
        if let Some(gone) = state.take_profile(*c).map_err(|e| e.to_string())? {
            for audience in gone.activation.members.keys() {
                if state.is_member(audience, *c) {
                    state.record_membership(MembershipChange {
                        audience: audience.to_string(),
                        profile: *c,
                        entered: false,
                        at_ms: now_ms,
                        // Ordered after everything applied so far (destinations
                        // deliver a change after the event at its seq).
                        seq: state.processed_seq(),
                        cause: ChangeCause::Deleted,
                    });
                    exits += 1;
                }
            }
            super::apply::forget(state, *c, &gone.activation);
        }
        state.drop_rows(*c);
        if let Some(r) = state.identity(*c) {
            for l in &r.identifiers {
                if state.profile_of(&l.identifier) == Some(*c) {
                    state.set_owner(&l.identifier, None);
                }
            }
            state.remove_identity(*c);
        }
    }
    for i in &identifiers {
        state.drop_ident_events(i.kind.as_str(), &i.value);
    }
    state.adjust_live_profiles(-live_count);
    if let Some(e) = state.take_error() {
        return Err(e.to_string());
    }
    state.checkpoint().map_err(|e| e.to_string())?;
    ctx.privacy.set_compact_pending(true)?;

    let mut done = job.clone();
    ctx.privacy.update_job(&job.id, |j| {
        j.status = JobStatus::Done;
        j.step = "done".into();
        j.finished_ms = Some(now_ms);
        // A resumed job keeps what its first run counted.
        j.profiles = j.profiles.max(cluster.len());
        j.events += erased;
        j.rejected_events += rejected;
        j.delivery_rows += delivery_rows;
        j.suppressed_identifiers += suppressed;
        j.exits += exits;
        j.compacted = false;
        j.error = None;
        done = j.clone();
    })?;
    Ok(done)
}
