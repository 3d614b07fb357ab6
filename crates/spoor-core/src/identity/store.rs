//! State access for the engine.
//!
//! The engine never holds the graph itself: at 10M profiles it does not fit in RAM, so the
//! processor backs this trait with a cache over storage that coalesces writes per checkpoint.
//! The trait speaks only in model types (no engine internals) and has a batch look-up, so a
//! backend can fetch all of an event's identifiers in one round trip.

use super::model::{
    Identifier, ProfileId, ProfileIdentity, ProfileStatus, SplitRule, SplitRuleId, SplitSide,
};
use std::collections::BTreeMap;

/// The identity graph's state: identifier → owner, profile → identity record, split rules.
///
/// Invariant the engine maintains: an identifier's owner is always a *live* profile whose
/// record lists it.
pub trait IdentityStore {
    /// The live profile owning `id`.
    fn profile_of(&mut self, id: &Identifier) -> Option<ProfileId>;

    /// [`Self::profile_of`] for several identifiers at once (override for one round trip).
    fn profiles_of(&mut self, ids: &[Identifier]) -> Vec<Option<ProfileId>> {
        ids.iter().map(|i| self.profile_of(i)).collect()
    }

    fn set_owner(&mut self, id: &Identifier, owner: Option<ProfileId>);

    fn identity(&mut self, p: ProfileId) -> Option<ProfileIdentity>;

    fn put_identity(&mut self, p: ProfileId, v: ProfileIdentity);

    /// Used by re-derivation after a split only.
    fn remove_identity(&mut self, p: ProfileId);

    /// All split rules. Admin decisions, so few; kept in memory by every backend.
    fn split_rules(&self) -> &[SplitRule];

    /// Persists a rule. Call [`super::rederive`] for the affected cluster right after.
    fn add_split_rule(&mut self, rule: SplitRule);

    /// The rules `id` takes part in, and on which side. Called for every identifier that is
    /// about to join a profile, so a backend with many rules should index them.
    fn split_memberships(&mut self, id: &Identifier) -> Vec<(SplitRuleId, SplitSide)> {
        self.split_rules()
            .iter()
            .filter_map(|r| r.side_of(id).map(|s| (r.id, s)))
            .collect()
    }
}

/// Follows `MergedInto` links to the live profile `p` now belongs to. `None` for unknown or
/// dissolved profiles. Bounded, so a corrupt cycle cannot hang the processor.
pub fn resolve_profile<S: IdentityStore + ?Sized>(
    store: &mut S,
    p: ProfileId,
) -> Option<ProfileId> {
    let mut cur = p;
    for _ in 0..4096 {
        match store.identity(cur)?.status {
            ProfileStatus::Live => return Some(cur),
            ProfileStatus::MergedInto(next) => cur = next,
            ProfileStatus::Dissolved => return None,
        }
    }
    None
}

/// An in-memory store (ordered maps, so its `Debug` and equality are deterministic) for
/// tests, tools and small deployments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemIdentityStore {
    owners: BTreeMap<Identifier, ProfileId>,
    profiles: BTreeMap<ProfileId, ProfileIdentity>,
    rules: Vec<SplitRule>,
    rule_index: BTreeMap<Identifier, Vec<(SplitRuleId, SplitSide)>>,
}

impl MemIdentityStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn owners(&self) -> &BTreeMap<Identifier, ProfileId> {
        &self.owners
    }

    /// All records, live and merged away.
    pub fn profiles(&self) -> &BTreeMap<ProfileId, ProfileIdentity> {
        &self.profiles
    }

    pub fn live_profiles(&self) -> impl Iterator<Item = (ProfileId, &ProfileIdentity)> {
        self.profiles
            .iter()
            .filter(|(_, r)| r.is_live())
            .map(|(p, r)| (*p, r))
    }
}

impl IdentityStore for MemIdentityStore {
    fn profile_of(&mut self, id: &Identifier) -> Option<ProfileId> {
        self.owners.get(id).copied()
    }

    fn set_owner(&mut self, id: &Identifier, owner: Option<ProfileId>) {
        match owner {
            Some(p) => self.owners.insert(id.clone(), p),
            None => self.owners.remove(id),
        };
    }

    fn identity(&mut self, p: ProfileId) -> Option<ProfileIdentity> {
        self.profiles.get(&p).cloned()
    }

    fn put_identity(&mut self, p: ProfileId, v: ProfileIdentity) {
        self.profiles.insert(p, v);
    }

    fn remove_identity(&mut self, p: ProfileId) {
        self.profiles.remove(&p);
    }

    fn split_rules(&self) -> &[SplitRule] {
        &self.rules
    }

    fn add_split_rule(&mut self, rule: SplitRule) {
        for (ids, side) in [(&rule.side_a, SplitSide::A), (&rule.side_b, SplitSide::B)] {
            for id in ids {
                self.rule_index
                    .entry(id.clone())
                    .or_default()
                    .push((rule.id, side));
            }
        }
        self.rules.push(rule);
    }

    fn split_memberships(&mut self, id: &Identifier) -> Vec<(SplitRuleId, SplitSide)> {
        self.rule_index.get(id).cloned().unwrap_or_default()
    }
}
