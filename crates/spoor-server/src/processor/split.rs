//! Splits: an admin undoes a merge or detaches one identifier. The processor (the only
//! writer) records a split rule, re-derives the identity of the affected part of the graph
//! by replaying its events from the log with the rule active, and rebuilds the profiles of
//! that part from the same events — so traits, stats, timelines and decisions of both sides
//! are exactly what they would be had the merge never happened (a full rebuild agrees).

use super::apply::apply_resolution;
use super::Pipeline;
use serde::Serialize;
use spoor_core::identity::{
    component_events, plan_detach, plan_undo_merge, rederive, resolve_profile, Identifier,
    IdentityError, IdentityInput, IdentityStore, ProfileId, SplitRule, SplitRuleId,
};
use spoor_core::profile::{identity_input, parse_event};
use spoor_store::log::{LogEntry, LogReader};
use spoor_store::state::{ProcessorState, StateReader, StateStore};
use std::collections::{BTreeMap, BTreeSet};

/// Most events a split may replay; larger components are refused (a hub identifier).
pub const MAX_SPLIT_EVENTS: usize = 200_000;

/// What an admin asks for.
#[derive(Debug, Clone)]
pub enum SplitRequest {
    /// Undo the merge that folded this (merged-away) profile into another.
    UndoMerge(ProfileId),
    /// Detach this identifier from its profile.
    Detach(Identifier),
}

/// What a split did.
#[derive(Debug, Clone, Serialize)]
pub struct SplitOutcome {
    pub rule: SplitRule,
    /// Live profiles of the re-derived part, after the split.
    pub profiles: Vec<ProfileId>,
    pub events_replayed: usize,
}

/// One stored event; an erased one reads as absent.
pub(super) fn read_one(reader: &LogReader, seq: u64) -> Result<Option<LogEntry>, String> {
    Ok(reader
        .read_from(seq, 1)
        .map_err(|e| e.to_string())?
        .into_iter()
        .next()
        .filter(|e| e.seq == seq && !e.is_erased()))
}

/// The events of the identity component around `seed`, found through the committed
/// identifier→events index and read from the log (splits and retention re-derive from
/// them). The outer error is a failed read; the inner one a component over
/// [`MAX_SPLIT_EVENTS`].
pub(super) fn component_inputs(
    snap: &StateReader,
    reader: &LogReader,
    p: &Pipeline,
    seed: &[Identifier],
) -> Result<Result<Vec<IdentityInput>, IdentityError>, String> {
    let mut failure = None;
    let events = component_events(&p.rules, seed, MAX_SPLIT_EVENTS, |id| {
        let seqs = match snap.events_with(id.kind.as_str(), &id.value, MAX_SPLIT_EVENTS + 1) {
            Ok(s) => s,
            Err(e) => {
                failure.get_or_insert(e.to_string());
                return Vec::new();
            }
        };
        seqs.into_iter()
            .filter_map(|seq| match read_one(reader, seq) {
                Ok(Some(e)) => parse_event(e.seq, e.timestamp_ms, &e.payload)
                    .ok()
                    .map(|v| identity_input(&v, &p.identifiers))
                    // The index is by hash: keep only events that really carry `id`.
                    .filter(|input| {
                        input.identifiers.iter().any(|(kind, raw)| {
                            p.rules.normalize(kind, raw).ok().as_ref() == Some(id)
                        })
                    }),
                Ok(None) => None,
                Err(err) => {
                    failure.get_or_insert(err);
                    None
                }
            })
            .collect()
    });
    match failure {
        Some(f) => Err(f),
        None => Ok(events),
    }
}

/// Runs a split against the processor's state. Commits before and after.
pub fn run_split(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
    req: SplitRequest,
    now_ms: i64,
) -> Result<SplitOutcome, String> {
    // The identifier→events index must be committed to be searchable.
    state.checkpoint().map_err(|e| e.to_string())?;
    let rule_id = SplitRuleId(state.split_rules().len() as u64 + 1);
    let plan = match req {
        SplitRequest::UndoMerge(pid) => plan_undo_merge(state, pid, rule_id, now_ms),
        SplitRequest::Detach(id) => plan_detach(state, &id, rule_id, now_ms),
    }
    .map_err(|e| e.to_string())?;

    let snap = store.reader().map_err(|e| e.to_string())?;
    let events = component_inputs(&snap, reader, p, &plan.seed)?.map_err(|e| e.to_string())?;

    // The old profiles of this part of the graph (what rederive will delete): their profile
    // records and rows are rebuilt from the events below.
    let mut old: BTreeSet<ProfileId> = BTreeSet::new();
    for e in &events {
        old.insert(ProfileId::from_seq(e.seq));
        for (kind, raw) in &e.identifiers {
            if let Some(owner) = p
                .rules
                .normalize(kind, raw)
                .ok()
                .and_then(|id| state.profile_of(&id))
            {
                old.insert(owner);
            }
        }
    }
    let mut stack: Vec<ProfileId> = old.iter().copied().collect();
    let mut old_live = 0i64;
    while let Some(pid) = stack.pop() {
        if let Some(r) = state.identity(pid) {
            if r.is_live() {
                old_live += 1;
            }
            for a in r.absorbed {
                if old.insert(a) {
                    stack.push(a);
                }
            }
        }
    }
    for pid in &old {
        if let Some(gone) = state.take_profile(*pid).map_err(|e| e.to_string())? {
            super::apply::forget(state, *pid, &gone.activation);
        }
        state.drop_rows(*pid);
    }
    state.adjust_live_profiles(-old_live);

    state.add_split_rule(plan.rule.clone());
    let rd = rederive(state, &p.rules, &events);
    let mut live = BTreeMap::new();
    for (seq, res) in &rd.resolutions {
        let Some(entry) = read_one(reader, *seq)? else {
            continue;
        };
        let view = parse_event(entry.seq, entry.timestamp_ms, &entry.payload)
            .map_err(|e| e.to_string())?;
        apply_resolution(state, &p.engine, &view, res, false).map_err(|e| e.to_string())?;
        if let Some(pid) = res.profile {
            live.insert(pid, ());
        }
    }
    let mut profiles = BTreeSet::new();
    for pid in live.keys() {
        if let Some(l) = resolve_profile(state, *pid) {
            profiles.insert(l);
        }
    }
    if let Some(e) = state.take_error() {
        return Err(e.to_string());
    }
    state.checkpoint().map_err(|e| e.to_string())?;
    Ok(SplitOutcome {
        rule: plan.rule,
        profiles: profiles.into_iter().collect(),
        events_replayed: rd.resolutions.len(),
    })
}
