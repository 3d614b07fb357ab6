//! Applying retention policies, in the processor (the single writer): expired events are
//! erased from the log (tombstoned in place, like an erasure) and everything derived from
//! them is re-derived the way a split does it — per identity component touched, the old
//! profiles are deleted and the component's remaining events are replayed, so traits,
//! computed traits, stats, timelines and audience memberships are what a rebuild of the
//! remaining log would give.
//!
//! Why per component and not a rebuild: the server keeps running (a rebuild needs it
//! stopped and costs the whole log), and a periodic run typically expires a thin slice of
//! old events touching a small share of profiles. A component larger than
//! [`super::MAX_SPLIT_EVENTS`] (a hub identifier) is skipped and reported; `spoor rebuild`
//! then brings it in line (its events are already gone from the log).
//!
//! Destinations see the change as an exit (cause `deleted`) from each audience the old
//! profile was in, then an entry for each audience the re-derived profile is in.

use super::apply::{apply_resolution, forget};
use super::split::{component_inputs, read_one};
use super::Pipeline;
use crate::erasure::retention::{governing, PolicyCount, RetentionPolicy, RetentionReport};
use spoor_core::identity::{rederive, Identifier, IdentityStore, ProfileId};
use spoor_core::profile::{identity_input, parse_event};
use spoor_store::log::LogReader;
use spoor_store::state::{ChangeCause, MembershipChange, ProcessorState, StateStore};
use std::collections::BTreeSet;

const DAY_MS: i64 = 86_400_000;

/// Runs the policies once; with `dry_run` only counts.
pub fn run_retention(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
    policies: &[RetentionPolicy],
    dry_run: bool,
    now_ms: i64,
) -> Result<RetentionReport, String> {
    state.checkpoint().map_err(|e| e.to_string())?;
    let mut report = RetentionReport {
        dry_run,
        at_ms: now_ms,
        policies: policies
            .iter()
            .map(|pol| PolicyCount {
                policy: pol.label(),
                keep_days: pol.keep_days,
                events: 0,
            })
            .collect(),
        ..RetentionReport::default()
    };
    if policies.is_empty() {
        return Ok(report);
    }
    // 1. Find the expired events (only those already applied: the rest are applied later
    //    and expire in the next run).
    let until = state.processed_seq();
    let mut expired: Vec<u64> = Vec::new();
    let mut seeds: BTreeSet<Identifier> = BTreeSet::new();
    for e in reader.iter_from(1) {
        let e = e.map_err(|e| e.to_string())?;
        if e.seq > until {
            break;
        }
        if e.is_erased() {
            continue;
        }
        let Ok(view) = parse_event(e.seq, e.timestamp_ms, &e.payload) else {
            continue;
        };
        let name = view.event.as_deref().or(view.name.as_deref());
        let Some(i) = governing(policies, name, &view.source_id) else {
            continue;
        };
        let cutoff = now_ms.saturating_sub(i64::from(policies[i].keep_days) * DAY_MS);
        if view.timestamp_ms >= cutoff {
            continue;
        }
        report.policies[i].events += 1;
        if !dry_run {
            expired.push(e.seq);
            for (kind, raw) in identity_input(&view, &p.identifiers).identifiers {
                if let Ok(id) = p.rules.normalize(&kind, &raw) {
                    seeds.insert(id);
                }
            }
        }
    }
    if dry_run || expired.is_empty() {
        return Ok(report);
    }

    // 2. Out of the log.
    report.erased = reader.erase(&expired).map_err(|e| e.to_string())?;

    // 3. Re-derive every component the expired events touched.
    let snap = store.reader().map_err(|e| e.to_string())?;
    let mut covered: BTreeSet<Identifier> = BTreeSet::new();
    for seed in &seeds {
        if covered.contains(seed) {
            continue;
        }
        let events = component_inputs(&snap, reader, p, std::slice::from_ref(seed))?;
        let Ok(events) = events else {
            tracing::warn!(
                "retention: an identity component is too large to re-derive online; \
                 run `spoor rebuild`"
            );
            covered.insert(seed.clone());
            report.components_skipped += 1;
            continue;
        };
        let mut ids: BTreeSet<Identifier> = BTreeSet::new();
        ids.insert(seed.clone());
        for e in &events {
            for (kind, raw) in &e.identifiers {
                if let Ok(id) = p.rules.normalize(kind, raw) {
                    ids.insert(id);
                }
            }
        }
        covered.extend(ids.iter().cloned());
        report.profiles_rederived += remove_profiles(state, &ids, now_ms);
        for id in &ids {
            state.drop_ident_events(id.kind.as_str(), &id.value);
        }
        for e in &events {
            for (kind, raw) in &e.identifiers {
                if let Ok(id) = p.rules.normalize(kind, raw) {
                    state.add_ident_event(id.kind.as_str(), &id.value, e.seq);
                }
            }
        }
        let rd = rederive(state, &p.rules, &events);
        for (seq, res) in &rd.resolutions {
            let Some(entry) = read_one(reader, *seq)? else {
                continue;
            };
            let view = parse_event(entry.seq, entry.timestamp_ms, &entry.payload)
                .map_err(|e| e.to_string())?;
            apply_resolution(state, &p.engine, &view, res, false).map_err(|e| e.to_string())?;
        }
        if let Some(e) = state.take_error() {
            return Err(e.to_string());
        }
    }
    state.checkpoint().map_err(|e| e.to_string())?;
    if let Some(ctx) = &p.erase {
        ctx.privacy.set_compact_pending(true)?;
    }
    Ok(report)
}

/// Deletes every profile (live or merged away) owning one of `ids`, with its identity
/// record, rows and memberships (recording exits). Returns how many.
fn remove_profiles(state: &mut ProcessorState, ids: &BTreeSet<Identifier>, now_ms: i64) -> usize {
    let mut old: BTreeSet<ProfileId> = ids.iter().filter_map(|i| state.profile_of(i)).collect();
    let mut stack: Vec<ProfileId> = old.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        if let Some(r) = state.identity(pid) {
            for a in r.absorbed {
                if old.insert(a) {
                    stack.push(a);
                }
            }
        }
    }
    let mut live = 0i64;
    for pid in &old {
        if let Ok(Some(gone)) = state.take_profile(*pid) {
            for audience in gone.activation.members.keys() {
                if state.is_member(audience, *pid) {
                    state.record_membership(MembershipChange {
                        audience: audience.to_string(),
                        profile: *pid,
                        entered: false,
                        at_ms: now_ms,
                        // Ordered after everything applied so far (destinations
                        // deliver a change after the event at its seq).
                        seq: state.processed_seq(),
                        cause: ChangeCause::Deleted,
                    });
                }
            }
            forget(state, *pid, &gone.activation);
        }
        state.drop_rows(*pid);
        if let Some(r) = state.identity(*pid) {
            if r.is_live() {
                live += 1;
            }
            for l in &r.identifiers {
                if state.profile_of(&l.identifier) == Some(*pid) {
                    state.set_owner(&l.identifier, None);
                }
            }
            state.remove_identity(*pid);
        }
    }
    state.adjust_live_profiles(-live);
    old.len()
}
