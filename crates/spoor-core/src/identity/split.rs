//! Undoing links: an admin splits a merge or detaches an identifier.
//!
//! A split is not an edit of the graph but a new *rule* ([`SplitRule`]) plus a re-derivation:
//! the affected part of the graph is deleted and its events are replayed through [`resolve`]
//! with the rule active. The graph then is exactly what a full replay of the log would give,
//! so the "incremental == replay" guarantee survives splits.
//!
//! Exactness needs the right set of events. Resolution of an event reads only the profiles
//! owning its identifiers, so the graph decomposes into *components* of the event–identifier
//! graph (events connected through shared identifiers, including refused-by-limit ones).
//! Replaying a whole component reproduces what a full replay gives for it; replaying just the
//! events that touched the split cluster does not (an event may also carry an identifier held
//! elsewhere). [`component_events`] computes the component from the caller's event index.

use super::config::IdentityRules;
use super::model::{
    Identifier, IdentityInput, ProfileId, ProfileIdentity, ProfileStatus, Resolution, SplitOrigin,
    SplitRule, SplitRuleId,
};
use super::resolve::resolve;
use super::store::{resolve_profile, IdentityStore};
use super::IdentityError;
use std::collections::{BTreeMap, BTreeSet};

/// A split ready to apply: the rule to persist and the identifiers whose component must be
/// re-derived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitPlan {
    pub rule: SplitRule,
    /// Start of the component search: every identifier of the cluster being split.
    pub seed: Vec<Identifier>,
}

/// Plans undoing the merge that made `merged_away` part of another profile (the `from` of a
/// recorded `Merged` decision). Side A: what `merged_away` brought; side B: what the profile
/// it merged into held *at that moment*. Identifiers either side gained later are on neither
/// side: the replay puts them wherever their own events lead (taking "everything else" as B
/// would wrongly pin, say, a device linked later through A's e-mail to the B side).
pub fn plan_undo_merge<S: IdentityStore + ?Sized>(
    store: &mut S,
    merged_away: ProfileId,
    rule_id: SplitRuleId,
    at_ms: i64,
) -> Result<SplitPlan, IdentityError> {
    let record = store
        .identity(merged_away)
        .ok_or(IdentityError::UnknownProfile(merged_away))?;
    let (ProfileStatus::MergedInto(into), Some(m)) = (record.status, record.merged_seq) else {
        return Err(IdentityError::NotMerged(merged_away));
    };
    let into_rec = store
        .identity(into)
        .ok_or(IdentityError::UnknownProfile(into))?;
    let mut later = BTreeSet::new();
    for a in &into_rec.absorbed {
        if let Some(r) = store.identity(*a) {
            if r.merged_seq > Some(m) && r.status == ProfileStatus::MergedInto(into) {
                later.extend(r.identifiers.into_iter().map(|l| l.identifier));
            }
        }
    }
    let side_a = sorted(record.identifiers.iter().map(|l| l.identifier.clone()));
    let side_b = sorted(
        into_rec
            .identifiers
            .iter()
            .filter(|l| l.since_seq < m)
            .map(|l| l.identifier.clone())
            .filter(|i| side_a.binary_search(i).is_err() && !later.contains(i)),
    );
    let origin = SplitOrigin::UndoMerge {
        from: merged_away,
        into,
    };
    let mut plan = plan(rule_id, side_a, side_b, at_ms, origin)?;
    // Search from the whole current cluster (the same component, but no need to rely on it).
    if let Some(live) = resolve_profile(store, into).and_then(|p| store.identity(p)) {
        let current = live.identifiers.into_iter().map(|l| l.identifier);
        plan.seed = sorted(plan.seed.into_iter().chain(current));
    }
    Ok(plan)
}

/// Plans detaching `identifier` from its profile: it may never again be in one profile with
/// the profile's other current identifiers.
pub fn plan_detach<S: IdentityStore + ?Sized>(
    store: &mut S,
    identifier: &Identifier,
    rule_id: SplitRuleId,
    at_ms: i64,
) -> Result<SplitPlan, IdentityError> {
    let owner = store
        .profile_of(identifier)
        .ok_or_else(|| IdentityError::UnownedIdentifier(identifier.clone()))?;
    let record = store
        .identity(owner)
        .ok_or(IdentityError::UnknownProfile(owner))?;
    let side_b = sorted(
        record
            .identifiers
            .iter()
            .map(|l| l.identifier.clone())
            .filter(|i| i != identifier),
    );
    let origin = SplitOrigin::Detach {
        identifier: identifier.clone(),
    };
    plan(rule_id, vec![identifier.clone()], side_b, at_ms, origin)
}

fn sorted(ids: impl Iterator<Item = Identifier>) -> Vec<Identifier> {
    let set: BTreeSet<Identifier> = ids.collect();
    set.into_iter().collect()
}

fn plan(
    id: SplitRuleId,
    side_a: Vec<Identifier>,
    side_b: Vec<Identifier>,
    created_ms: i64,
    origin: SplitOrigin,
) -> Result<SplitPlan, IdentityError> {
    if side_a.is_empty() || side_b.is_empty() {
        return Err(IdentityError::NothingToSplit);
    }
    let seed = sorted(side_a.iter().chain(&side_b).cloned());
    Ok(SplitPlan {
        rule: SplitRule {
            id,
            side_a,
            side_b,
            created_ms,
            origin,
        },
        seed,
    })
}

/// All events of the component containing `seed`, in `seq` order. `events_with` is the
/// caller's index: the events carrying an identifier (keyed by [`IdentityRules::normalize`]).
/// Fails rather than grow past `max_events` (a hub identifier the blocked list missed).
pub fn component_events<F>(
    rules: &IdentityRules,
    seed: &[Identifier],
    max_events: usize,
    mut events_with: F,
) -> Result<Vec<IdentityInput>, IdentityError>
where
    F: FnMut(&Identifier) -> Vec<IdentityInput>,
{
    let mut seen: BTreeSet<Identifier> = seed.iter().cloned().collect();
    let mut queue: Vec<Identifier> = seen.iter().cloned().collect();
    let mut events: BTreeMap<u64, IdentityInput> = BTreeMap::new();
    while let Some(id) = queue.pop() {
        for e in events_with(&id) {
            if events.contains_key(&e.seq) {
                continue;
            }
            for (kind, raw) in &e.identifiers {
                if let Ok(other) = rules.normalize(kind, raw) {
                    if seen.insert(other.clone()) {
                        queue.push(other);
                    }
                }
            }
            events.insert(e.seq, e);
            if events.len() > max_events {
                return Err(IdentityError::ComponentTooLarge(max_events));
            }
        }
    }
    Ok(events.into_values().collect())
}

/// What a re-derivation changed. The processor must replace the stored decisions and the
/// profile assignment of every replayed event with `resolutions`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rederived {
    /// `(seq, resolution)` per replayed event, in `seq` order.
    pub resolutions: Vec<(u64, Resolution)>,
    /// Old profile ids that were not re-created, and where they now point (`None`: dissolved).
    pub redirected: Vec<(ProfileId, Option<ProfileId>)>,
}

/// Re-derives the part of the graph `events` cover: deletes every profile (live or merged
/// away) holding one of their identifiers, replays them in `seq` order with the store's split
/// rules active, and points old ids that did not come back at the profile now holding their
/// highest-priority identifier, so stored references keep resolving.
pub fn rederive<S: IdentityStore + ?Sized>(
    store: &mut S,
    rules: &IdentityRules,
    events: &[IdentityInput],
) -> Rederived {
    let mut ordered: Vec<&IdentityInput> = events.iter().collect();
    ordered.sort_by_key(|e| e.seq);
    ordered.dedup_by_key(|e| e.seq);

    // 1. The old world: live owners of the events' identifiers, all they absorbed, and any
    //    profile the events themselves created.
    let mut roots: BTreeSet<ProfileId> = BTreeSet::new();
    for e in &ordered {
        roots.insert(ProfileId::from_seq(e.seq));
        for (kind, raw) in &e.identifiers {
            if let Some(p) = rules
                .normalize(kind, raw)
                .ok()
                .and_then(|id| store.profile_of(&id))
            {
                roots.insert(p);
            }
        }
    }
    let mut old: BTreeMap<ProfileId, ProfileIdentity> = BTreeMap::new();
    let mut stack: Vec<ProfileId> = roots.into_iter().collect();
    while let Some(p) = stack.pop() {
        if old.contains_key(&p) {
            continue;
        }
        if let Some(r) = store.identity(p) {
            stack.extend(r.absorbed.iter().copied());
            old.insert(p, r);
        }
    }

    // 2. Delete it.
    for (p, r) in &old {
        if r.is_live() {
            for l in &r.identifiers {
                if store.profile_of(&l.identifier) == Some(*p) {
                    store.set_owner(&l.identifier, None);
                }
            }
        }
        store.remove_identity(*p);
    }

    // 3. Replay.
    let resolutions = ordered
        .iter()
        .map(|e| (e.seq, resolve(store, rules, e)))
        .collect();

    // 4. Keep old ids resolving.
    let mut redirected = Vec::new();
    for (p, mut r) in old {
        if store.identity(p).is_some() {
            continue;
        }
        let mut ids: Vec<&Identifier> = r.identifiers.iter().map(|l| &l.identifier).collect();
        ids.sort_by_key(|i| (rules.rank(i.kind.as_str()).unwrap_or(usize::MAX), *i));
        let target = ids.into_iter().find_map(|i| store.profile_of(i));
        r.status = match target {
            Some(t) => ProfileStatus::MergedInto(t),
            None => ProfileStatus::Dissolved,
        };
        r.absorbed.clear();
        r.merged_seq = None; // a redirect, not a merge an admin could undo
        if let Some(t) = target {
            if let Some(mut tr) = store.identity(t) {
                tr.absorbed.push(p);
                store.put_identity(t, tr);
            }
        }
        store.put_identity(p, r);
        redirected.push((p, target));
    }
    Rederived {
        resolutions,
        redirected,
    }
}

/// Plan + component + rule + re-derivation in one call, in the safe order: the fallible
/// component search happens before anything is written.
pub fn split_and_rederive<S, F>(
    store: &mut S,
    rules: &IdentityRules,
    plan: SplitPlan,
    max_events: usize,
    events_with: F,
) -> Result<Rederived, IdentityError>
where
    S: IdentityStore + ?Sized,
    F: FnMut(&Identifier) -> Vec<IdentityInput>,
{
    let events = component_events(rules, &plan.seed, max_events, events_with)?;
    store.add_split_rule(plan.rule);
    Ok(rederive(store, rules, &events))
}
