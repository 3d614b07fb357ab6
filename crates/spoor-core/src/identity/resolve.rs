//! Resolving one event: which profile it belongs to, and which links and merges it causes.
//!
//! The event's usable identifiers are taken in priority order and grown into a *group*: an
//! owned identifier brings its whole profile, an unowned one brings itself. Each addition is
//! checked against the limits and split rules for the group so far; one that would break a
//! rule is left out (and the refusal recorded). The first addition is always accepted, so the
//! event lands with its highest-priority identifier. At the end the group's profiles are
//! merged into the oldest one and the new identifiers attached to it — or, if the group has no
//! profile yet, one is created.

use super::config::IdentityRules;
use super::model::{
    Decision, DecisionKind, Identifier, IdentityInput, LinkedIdentifier, ProfileId,
    ProfileIdentity, ProfileStatus, RefusalRule, Resolution, SplitRuleId, SplitSide,
};
use super::store::{resolve_profile, IdentityStore};
use std::collections::BTreeMap;

/// Resolves one event against the graph in `store`, updating it. Deterministic: the outcome
/// depends only on the store's state, `rules` and `input` (no clock, no hash order).
pub fn resolve<S: IdentityStore + ?Sized>(
    store: &mut S,
    rules: &IdentityRules,
    input: &IdentityInput,
) -> Resolution {
    resolve_visiting(store, rules, input, |_| {})
}

/// [`resolve`], also handing `visit` each usable identifier of the event once, normalised
/// (before resolution uses them). The processor indexes events by identifier with them:
/// normalising is a good part of resolving, and doing it twice per event cost ~3 k
/// instructions.
pub fn resolve_visiting<S: IdentityStore + ?Sized>(
    store: &mut S,
    rules: &IdentityRules,
    input: &IdentityInput,
    visit: impl FnMut(&Identifier),
) -> Resolution {
    let mut rec = Recorder::new(input);
    let carried = prepare(rules, input, &mut rec);
    carried.iter().map(|(_, id)| id).for_each(visit);
    if carried.is_empty() {
        return rec.finish(None, Vec::new());
    }
    let keys: Vec<Identifier> = carried.iter().map(|(_, id)| id.clone()).collect();
    let owners = store.profiles_of(&keys);

    // The common case: every identifier already belongs to the same profile and none needs a
    // last-seen update. Nothing to read or write.
    if let Some(Some(first)) = owners.first() {
        let all_same = owners.iter().all(|o| *o == Some(*first));
        let windowed = carried
            .iter()
            .any(|(rank, _)| window_of(rules, *rank).is_some());
        if all_same && !windowed {
            return rec.finish(Some(*first), Vec::new());
        }
    }

    let mut group = Group::new(rules, input, &keys);
    let mut refused: BTreeMap<ProfileId, RefusalRule> = BTreeMap::new();
    for ((rank, id), owner) in carried.iter().zip(owners) {
        if owner.is_some_and(|p| group.has(p)) {
            continue;
        }
        let outcome = match owner.and_then(|p| load_live(store, p)) {
            Some((q, _)) if group.has(q) => continue,
            Some((q, _)) if refused.contains_key(&q) => Err((refused.get(&q).cloned(), Some(q))),
            Some((q, record)) => group.try_join(store, q, record, id).map_err(|rule| {
                refused.insert(q, rule.clone());
                (Some(rule), Some(q))
            }),
            // Unowned (or owned by a record the store lost: treated as unowned).
            None => group
                .try_attach(store, *rank, id)
                .map_err(|r| (Some(r), None)),
        };
        if let Err((Some(rule), owner)) = outcome {
            rec.refuse(id.clone(), rule, owner);
        }
    }
    let (profile, merged) = group.commit(store, &mut rec);
    rec.finish(profile, merged)
}

fn window_of(rules: &IdentityRules, rank: usize) -> Option<u64> {
    rules.type_rule(rank).and_then(|t| t.cfg.limit_window_ms)
}

/// The owner's live profile and its record, following merge chains defensively.
fn load_live<S: IdentityStore + ?Sized>(
    store: &mut S,
    p: ProfileId,
) -> Option<(ProfileId, ProfileIdentity)> {
    let record = store.identity(p)?;
    if record.is_live() {
        return Some((p, record));
    }
    let q = resolve_profile(store, p)?;
    store.identity(q).map(|r| (q, r))
}

/// Normalises, drops refused values (recording why) and duplicates, and sorts by priority
/// (then by position in the event, so the first e-mail listed is the one kept).
fn prepare(
    rules: &IdentityRules,
    input: &IdentityInput,
    rec: &mut Recorder,
) -> Vec<(usize, Identifier)> {
    let mut out: Vec<(usize, usize, Identifier)> = Vec::with_capacity(input.identifiers.len());
    for (pos, (kind, raw)) in input.identifiers.iter().enumerate() {
        match rules.normalize(kind, raw) {
            Ok(id) => {
                if !out.iter().any(|(_, _, o)| *o == id) {
                    let rank = rules.rank(kind).unwrap_or(usize::MAX);
                    out.push((rank, pos, id));
                }
            }
            Err(rule) => {
                let max = rules.config().max_value_len;
                let shown = Identifier::new(truncate(kind, max), truncate(raw.trim(), max));
                rec.refuse(shown, rule, None);
            }
        }
    }
    out.sort_by_key(|(rank, pos, _)| (*rank, *pos));
    out.into_iter().map(|(rank, _, id)| (rank, id)).collect()
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Collects decisions, stamped with the event.
struct Recorder<'a> {
    input: &'a IdentityInput,
    decisions: Vec<Decision>,
}

impl<'a> Recorder<'a> {
    fn new(input: &'a IdentityInput) -> Self {
        Self {
            input,
            decisions: Vec::new(),
        }
    }

    fn push(&mut self, kind: DecisionKind) {
        self.decisions.push(Decision {
            seq: self.input.seq,
            message_id: self.input.message_id.clone(),
            timestamp_ms: self.input.timestamp_ms,
            kind,
        });
    }

    fn refuse(&mut self, identifier: Identifier, rule: RefusalRule, owner: Option<ProfileId>) {
        self.push(DecisionKind::Refused {
            identifier,
            rule,
            owner,
            profile: None,
        });
    }

    /// Refusals are recorded before the event's profile is known; fill it in.
    fn finish(mut self, profile: Option<ProfileId>, merged: Vec<ProfileId>) -> Resolution {
        for d in &mut self.decisions {
            if let DecisionKind::Refused { profile: p, .. } = &mut d.kind {
                *p = profile;
            }
        }
        Resolution {
            profile,
            merged,
            decisions: self.decisions,
        }
    }
}

struct Member {
    id: ProfileId,
    record: ProfileIdentity,
    /// The identifier of this event that brought the profile in.
    via: Identifier,
}

/// Which sides of which split rules a set of identifiers touches.
type Sides = BTreeMap<SplitRuleId, (bool, bool)>;

/// The profiles and new identifiers this event links, with running per-type counts.
struct Group<'a> {
    rules: &'a IdentityRules,
    input: &'a IdentityInput,
    carried: &'a [Identifier],
    members: Vec<Member>,
    fresh: Vec<Identifier>,
    /// Identifiers per type rank that count towards limits (within the window, if any).
    counts: Vec<u32>,
    /// Split-rule sides of the group; computed only once a candidate touches a rule.
    sides: Option<Sides>,
}

impl<'a> Group<'a> {
    fn new(rules: &'a IdentityRules, input: &'a IdentityInput, carried: &'a [Identifier]) -> Self {
        Self {
            rules,
            input,
            carried,
            members: Vec::new(),
            fresh: Vec::new(),
            counts: vec![0; rules.type_count()],
            sides: None,
        }
    }

    fn has(&self, p: ProfileId) -> bool {
        self.members.iter().any(|m| m.id == p)
    }

    fn is_empty(&self) -> bool {
        self.members.is_empty() && self.fresh.is_empty()
    }

    /// Whether a held identifier counts towards its type's limit at this event's time.
    fn counts_now(&self, l: &LinkedIdentifier, rank: usize) -> bool {
        match window_of(self.rules, rank) {
            None => true,
            Some(w) => {
                let since = self.input.timestamp_ms.saturating_sub(w as i64);
                l.last_seen_ms >= since || self.carried.contains(&l.identifier)
            }
        }
    }

    fn tally(&self, record: &ProfileIdentity) -> Vec<u32> {
        let mut add = vec![0u32; self.counts.len()];
        for l in &record.identifiers {
            if let Some(rank) = self.rules.rank(l.identifier.kind.as_str()) {
                if self.counts_now(l, rank) {
                    add[rank] = add[rank].saturating_add(1);
                }
            }
        }
        add
    }

    /// The first type (in priority order) whose limit adding `add` would break. Only types
    /// the candidate brings are checked, so a profile already over a since-lowered limit does
    /// not block unrelated links.
    fn check_limits(&self, add: &[u32]) -> Result<(), RefusalRule> {
        for (rank, (&have, &more)) in self.counts.iter().zip(add).enumerate() {
            let Some(t) = self.rules.type_rule(rank) else {
                continue;
            };
            if let Some(limit) = t.cfg.limit {
                if more > 0 && have.saturating_add(more) > limit {
                    return Err(RefusalRule::LimitExceeded {
                        id_type: t.kind.clone(),
                        limit,
                        window_ms: t.cfg.limit_window_ms,
                    });
                }
            }
        }
        Ok(())
    }

    fn sides_of<'i, S: IdentityStore + ?Sized>(
        store: &mut S,
        ids: impl Iterator<Item = &'i Identifier>,
    ) -> Sides {
        let mut sides = Sides::new();
        for id in ids {
            for (rule, side) in store.split_memberships(id) {
                let e = sides.entry(rule).or_insert((false, false));
                match side {
                    SplitSide::A => e.0 = true,
                    SplitSide::B => e.1 = true,
                }
            }
        }
        sides
    }

    /// Refuses a candidate whose identifiers sit on the other side of a split rule from the
    /// group's. On success returns the candidate's sides, to be merged in when it joins.
    fn check_splits<'i, S: IdentityStore + ?Sized>(
        &mut self,
        store: &mut S,
        ids: impl Iterator<Item = &'i Identifier>,
    ) -> Result<Sides, RefusalRule> {
        let theirs = Self::sides_of(store, ids);
        if theirs.is_empty() {
            return Ok(theirs);
        }
        if self.sides.is_none() {
            let held = self
                .members
                .iter()
                .flat_map(|m| m.record.identifiers.iter());
            let ids: Vec<&Identifier> = held
                .map(|l| &l.identifier)
                .chain(self.fresh.iter())
                .collect();
            self.sides = Some(Self::sides_of(store, ids.into_iter()));
        }
        let ours = self.sides.get_or_insert_with(Sides::new);
        for (rule, (a, b)) in &theirs {
            if let Some((ga, gb)) = ours.get(rule) {
                if (*a && *gb) || (*b && *ga) {
                    return Err(RefusalRule::SplitRule { rule: *rule });
                }
            }
        }
        Ok(theirs)
    }

    fn absorb(&mut self, add: &[u32], sides: Sides) {
        for (c, a) in self.counts.iter_mut().zip(add) {
            *c = c.saturating_add(*a);
        }
        if let Some(ours) = &mut self.sides {
            for (rule, (a, b)) in sides {
                let e = ours.entry(rule).or_insert((false, false));
                e.0 |= a;
                e.1 |= b;
            }
        }
    }

    fn try_join<S: IdentityStore + ?Sized>(
        &mut self,
        store: &mut S,
        id: ProfileId,
        record: ProfileIdentity,
        via: &Identifier,
    ) -> Result<(), RefusalRule> {
        let add = self.tally(&record);
        let sides = if self.is_empty() {
            Sides::new() // the first candidate is the anchor: always accepted
        } else {
            self.check_limits(&add)?;
            self.check_splits(store, record.identifiers.iter().map(|l| &l.identifier))?
        };
        self.absorb(&add, sides);
        self.members.push(Member {
            id,
            record,
            via: via.clone(),
        });
        Ok(())
    }

    fn try_attach<S: IdentityStore + ?Sized>(
        &mut self,
        store: &mut S,
        rank: usize,
        id: &Identifier,
    ) -> Result<(), RefusalRule> {
        let mut add = vec![0u32; self.counts.len()];
        if let Some(a) = add.get_mut(rank) {
            *a = 1;
        }
        let sides = if self.is_empty() {
            Sides::new()
        } else {
            self.check_limits(&add)?;
            self.check_splits(store, std::iter::once(id))?
        };
        self.absorb(&add, sides);
        self.fresh.push(id.clone());
        Ok(())
    }

    /// Applies the group to the store: merge into the oldest member (or create), attach new
    /// identifiers, refresh last-seen times.
    fn commit<S: IdentityStore + ?Sized>(
        mut self,
        store: &mut S,
        rec: &mut Recorder,
    ) -> (Option<ProfileId>, Vec<ProfileId>) {
        let (seq, ts) = (self.input.seq, self.input.timestamp_ms);
        let oldest = self
            .members
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| (m.record.created_seq, m.id))
            .map(|(i, _)| i);
        let (sid, mut survivor, with, mut dirty) = match oldest {
            Some(i) => {
                let m = self.members.remove(i);
                (m.id, m.record, Some(m.via), false)
            }
            None if self.fresh.is_empty() => return (None, Vec::new()),
            None => {
                let id = allocate(store, seq);
                rec.push(DecisionKind::Created { profile: id });
                (id, ProfileIdentity::new(seq, ts), None, true)
            }
        };
        let mut merged = Vec::with_capacity(self.members.len());
        for m in self.members {
            for l in &m.record.identifiers {
                store.set_owner(&l.identifier, Some(sid));
            }
            survivor
                .identifiers
                .extend(m.record.identifiers.iter().cloned());
            survivor.absorbed.push(m.id);
            let mut loser = m.record;
            loser.status = ProfileStatus::MergedInto(sid);
            loser.merged_seq = Some(seq);
            store.put_identity(m.id, loser);
            rec.push(DecisionKind::Merged {
                from: m.id,
                into: sid,
                with: with.clone().unwrap_or_else(|| m.via.clone()),
                via: m.via,
            });
            merged.push(m.id);
            dirty = true;
        }
        for id in self.fresh {
            store.set_owner(&id, Some(sid));
            rec.push(DecisionKind::Linked {
                profile: sid,
                identifier: id.clone(),
            });
            survivor.identifiers.push(LinkedIdentifier {
                identifier: id,
                first_seen_ms: ts,
                last_seen_ms: ts,
                since_seq: seq,
            });
            dirty = true;
        }
        if dirty {
            survivor
                .identifiers
                .sort_by(|a, b| a.identifier.cmp(&b.identifier));
        }
        for c in self.carried {
            let windowed = self
                .rules
                .rank(c.kind.as_str())
                .is_some_and(|r| window_of(self.rules, r).is_some());
            let found = survivor.find(c).ok();
            if let (true, Some(l)) = (
                windowed,
                found.and_then(|i| survivor.identifiers.get_mut(i)),
            ) {
                if l.last_seen_ms < ts {
                    l.last_seen_ms = ts;
                    dirty = true;
                }
            }
        }
        if dirty {
            store.put_identity(sid, survivor);
        }
        (Some(sid), merged)
    }
}

/// The new profile's id: the event's `seq`. If that id is taken (the same log entry processed
/// twice without resetting state — a caller bug, but not worth corrupting the graph over),
/// the high byte is used to find a free one, deterministically.
fn allocate<S: IdentityStore + ?Sized>(store: &mut S, seq: u64) -> ProfileId {
    let mut id = ProfileId::from_seq(seq);
    for k in 1..=255u64 {
        if store.identity(id).is_none() {
            break;
        }
        id = ProfileId::from_raw((seq & ((1 << 56) - 1)) | (k << 56));
    }
    id
}
