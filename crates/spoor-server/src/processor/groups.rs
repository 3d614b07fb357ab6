//! Group (account) traits in real-time audiences.
//!
//! A `group trait` condition holds when any of the person's groups has the trait. Two
//! things change its result: the person joins a group (their own `group` call, evaluated
//! with the event like any other), or a group they belong to changes its traits through
//! *another* member's `group` call. For the second, the processor keeps a group→members
//! index (`ProcessorState::group_members`, a row per profile joining a group) and, when a
//! `group` call changes a trait some audience reads, re-evaluates the group-trait audiences
//! of every other member, at once — the same exactness as for the person's own events.
//! Nothing is loaded or re-evaluated when no audience reads group traits.

use super::activate::{record, Engine};
use serde_json::{Map, Value};
use spoor_core::identity::{resolve_profile, ProfileId};
use spoor_store::state::{ChangeCause, ProcessorState};
use spoor_store::StoreError;
use std::collections::HashSet;

/// The traits of the person's groups, as audiences read them (empty when no audience has a
/// group-trait condition: then nothing is read).
pub fn facts_of(
    state: &mut ProcessorState,
    engine: &Engine,
    pid: ProfileId,
) -> Result<Vec<Map<String, Value>>, StoreError> {
    if !engine.reads_groups() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = state.with_profile(pid, |p| p.groups.keys().cloned().collect())?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        if let Some(g) = state.group(&id)? {
            out.push(g.trait_values());
        }
    }
    Ok(out)
}

/// After a `group` call of `except` changed group `gid`'s traits (ones audiences read),
/// re-evaluates the group-trait audiences of the group's other members. Changes are
/// recorded at `now_ms` with the event's `seq` and cause [`ChangeCause::Group`].
pub fn reevaluate_members(
    state: &mut ProcessorState,
    engine: &Engine,
    gid: &str,
    except: ProfileId,
    seq: u64,
    now_ms: i64,
) -> Result<(), StoreError> {
    let mut seen = HashSet::new();
    for raw in state.group_members(gid)? {
        // Rows keep the id a person joined with: follow merges; skip the gone.
        let Some(live) = resolve_profile(state, ProfileId::from_raw(raw)) else {
            continue;
        };
        if live == except || !seen.insert(live) {
            continue;
        }
        let groups = facts_of(state, engine, live)?;
        let out = state.with_profile(live, |p| engine.on_group(p, now_ms, &groups))?;
        record(state, live, out, now_ms, seq, ChangeCause::Group);
    }
    Ok(())
}
