//! One event's effect on the state: identity resolution, then the profile.

use super::activate::{record, Engine};
use super::groups;
use super::Pipeline;
use spoor_core::audience::Activation;
use spoor_core::identity::ProfileId;
use spoor_core::identity::{resolve_visiting, DecisionKind, IdentityInput, Resolution};
use spoor_core::profile::{extract_identifiers, parse_event, EventView};
use spoor_core::EventType;
use spoor_store::log::LogEntry;
use spoor_store::state::ChangeCause;
use spoor_store::state::ProcessorState;
use spoor_store::StoreError;

/// Applies one logged event. An event that cannot be read (it passed validation at the
/// door, so this means a bug or a hand-edited log) is skipped with an error log rather than
/// stopping every downstream stage.
pub fn apply_event(
    state: &mut ProcessorState,
    p: &Pipeline,
    e: &LogEntry,
) -> Result<(), StoreError> {
    if e.is_erased() {
        return Ok(()); // erased (privacy or retention): nothing to apply
    }
    let view = match parse_event(e.seq, e.timestamp_ms, &e.payload) {
        Ok(v) => v,
        Err(err) => {
            tracing::error!(seq = e.seq, error = %err, "unreadable event skipped by the processor");
            return Ok(());
        }
    };
    let identifiers = extract_identifiers(&view, &p.identifiers);
    if let Some(ctx) = p.erase.as_ref().filter(|c| c.privacy.has_suppressions()) {
        let normalised: Vec<_> = identifiers
            .iter()
            .filter_map(|(kind, raw)| p.rules.normalize(kind, raw).ok())
            .collect();
        if ctx.privacy.is_suppressed(
            normalised
                .iter()
                .map(|i| (i.kind.as_str(), i.value.as_str())),
        ) {
            // An erased person with suppression on: drop it, and erase it after the batch.
            p.suppressed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(e.seq);
            return Ok(());
        }
    }
    let input = IdentityInput {
        seq: e.seq,
        message_id: view.message_id.to_string(),
        timestamp_ms: view.timestamp_ms,
        identifiers,
    };
    // Which events carried an identifier (for splits): every usable one, normalised once
    // by the resolution itself.
    let mut carried = Vec::with_capacity(input.identifiers.len());
    let res = resolve_visiting(state, &p.rules, &input, |id| carried.push(id.clone()));
    for id in &carried {
        state.add_ident_event(id.kind.as_str(), &id.value, e.seq);
    }
    if let Some(err) = state.take_error() {
        return Err(err);
    }
    apply_resolution(state, &p.engine, &view, &res, true)
}

/// Records an event's identity decisions and applies it to the profile it resolved to.
/// `with_group` is false when re-deriving after a split: group traits are not per person
/// and were already applied.
pub fn apply_resolution(
    state: &mut ProcessorState,
    engine: &Engine,
    view: &EventView,
    res: &Resolution,
    with_group: bool,
) -> Result<(), StoreError> {
    for (i, d) in res.decisions.iter().enumerate() {
        if matches!(d.kind, DecisionKind::Created { .. }) {
            state.adjust_live_profiles(1);
        }
        state.add_decision(res.profile, view.seq, i as u32, d)?;
    }
    let Some(pid) = res.profile else {
        return Ok(());
    };
    for gone in &res.merged {
        state.adjust_live_profiles(-1);
        if let Some(mut other) = state.take_profile(*gone)? {
            let act = other.take_activation();
            // The merged-away id leaves its audiences; the survivor is evaluated below.
            forget(state, *gone, &act);
            state.with_profile(pid, |p| {
                p.absorb(other);
                engine.merge(p.activation_mut(), act);
            })?;
        }
    }
    let gid = view
        .group_id
        .as_deref()
        .filter(|_| view.kind == EventType::Group);
    let (touched, joined) = state.with_profile(pid, |p| {
        let joined = gid.is_some_and(|g| !p.groups.contains_key(g));
        // Only the audience engine reads what changed.
        let before = (!engine.idle).then(|| engine.traits_before(view, p));
        p.apply(view);
        let stated = p.apply_consent(view, &engine.consent);
        (before.map(|b| engine.touched(view, p, stated, b)), joined)
    })?;
    state.add_timeline(pid, view.timestamp_ms, view.seq);
    if let (Some(g), true) = (gid, joined) {
        state.add_group_member(g, pid);
    }
    // The group first: the person's own evaluation reads its new traits.
    let mut group_changed = false;
    if let Some(g) = gid.filter(|_| with_group) {
        if engine.reads_groups() {
            let before = group_traits(state, g)?;
            state.with_group(g, |grp| grp.apply(view))?;
            group_changed = engine.group_traits_changed(&before, &group_traits(state, g)?);
        } else {
            state.with_group(g, |grp| grp.apply(view))?;
        }
    }
    if let Some(touched) = touched {
        let fact = engine.fact(view);
        let now = (engine.now)();
        // After a merge two people's states became one: everything is re-evaluated.
        let full = !res.merged.is_empty();
        let groups = groups::facts_of(state, engine, pid)?;
        let out = state.with_profile(pid, |p| {
            engine.on_event(p, &fact, touched, now, full, &groups)
        })?;
        record(state, pid, out, now, view.seq, ChangeCause::Event);
        if let Some(g) = gid.filter(|_| group_changed) {
            groups::reevaluate_members(state, engine, g, pid, view.seq, now)?;
        }
    }
    Ok(())
}

fn group_traits(
    state: &mut ProcessorState,
    gid: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, StoreError> {
    Ok(state
        .group(gid)?
        .map(|g| g.trait_values())
        .unwrap_or_default())
}

/// Takes a profile that no longer exists (merged away, or re-derived by a split) out of
/// its audiences' bitmaps and the timers; its history stays with the person's cluster.
pub fn forget(state: &mut ProcessorState, pid: ProfileId, act: &Activation) {
    for audience in act.members.keys() {
        state.set_member(audience, pid, false);
    }
    if act.next_timer_ms.is_some() {
        state.set_timer(pid, act.next_timer_ms, None);
    }
}
