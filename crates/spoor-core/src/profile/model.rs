//! The profile of one person: traits with provenance and activity statistics.
//!
//! A profile is a function of the *set* of events applied to it, not of their order:
//! [`Profile::apply`] is order-independent and [`Profile::absorb`] is a join. That is what
//! lets the processor merge two profiles when the identity engine links them, and still
//! promise that a rebuild from the log (one profile, all events) equals the incremental
//! result (two profiles, merged later).

use super::stats::{channel_key, device_key, ChannelStat, DeviceStat, SourceStat};
use super::traits::{apply_traits, merge_traits, trait_values, TraitMap};
use super::view::EventView;
use crate::audience::{Activation, LazyActivation};
use crate::consent::{Consent, ConsentRules};
use crate::event::EventType;
use crate::identity::ProfileId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub use super::group::Group;
pub use super::traits::TraitValue;

/// One person's profile.
///
/// Made of shared parts: each map (and the consent and activation) is behind its own
/// `Arc`, so cloning a profile copies a few pointers, and a change to a clone copies only
/// the part it touches (`Arc::make_mut` at the mutation sites, or the `*_mut` accessors).
/// Why: the processor publishes its changes to readers every chunk of events, after which
/// each profile it changes is shared with them; copying the whole profile there (its
/// activation above all) cost more than the change itself. The parts serialize as the
/// values they hold: the JSON and binary forms are those of plain fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: ProfileId,
    /// Top-level trait key → value with provenance (tombstones included).
    #[serde(default, with = "shared")]
    pub traits: Arc<TraitMap>,
    /// Event-time bounds; both 0 while `event_count` is 0.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub event_count: u64,
    /// By event type (`track`, `page`, …).
    #[serde(default, with = "shared")]
    pub event_counts: Arc<BTreeMap<String, u64>>,
    /// By source id.
    #[serde(default, with = "shared")]
    pub sources: Arc<BTreeMap<String, SourceStat>>,
    /// By [`channel_key`] (`source/medium/campaign`).
    #[serde(default, with = "shared")]
    pub channels: Arc<BTreeMap<String, ChannelStat>>,
    /// By [`device_key`] (`device_type/os/browser`).
    #[serde(default, with = "shared")]
    pub devices: Arc<BTreeMap<String, DeviceStat>>,
    /// Group id → first time (event time) this person was seen in it.
    #[serde(default, with = "shared")]
    pub groups: Arc<BTreeMap<String, i64>>,
    /// Consent per purpose with its history (see [`crate::consent`]).
    #[serde(default, with = "shared", skip_serializing_if = "is_empty_consent")]
    pub consent: Arc<Consent>,
    /// Computed traits and audiences (kept by the processor's audience engine, which also
    /// merges it; [`Profile::absorb`] leaves it alone).
    /// Kept encoded, as read, by a profile read for a rewrite of a few of its states (a
    /// backfill; see [`LazyActivation`]); decoded when used.
    #[serde(default, skip_serializing_if = "is_empty_activation")]
    pub activation: LazyActivation,
}

fn is_empty_consent(c: &Arc<Consent>) -> bool {
    c.is_empty()
}

fn is_empty_activation(a: &LazyActivation) -> bool {
    a.is_empty()
}

/// (De)serializes an `Arc<T>` as the `T` it holds (serde's own impls need its `rc`
/// feature, which would rebuild every crate depending on serde).
mod shared {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::sync::Arc;

    pub fn serialize<T: Serialize, S: Serializer>(v: &Arc<T>, s: S) -> Result<S::Ok, S::Error> {
        T::serialize(v, s)
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<T>, D::Error> {
        T::deserialize(d).map(Arc::new)
    }
}

impl Profile {
    pub fn new(id: ProfileId) -> Self {
        Self {
            id,
            traits: Arc::default(),
            first_seen_ms: 0,
            last_seen_ms: 0,
            event_count: 0,
            event_counts: Arc::default(),
            sources: Arc::default(),
            channels: Arc::default(),
            devices: Arc::default(),
            groups: Arc::default(),
            consent: Arc::default(),
            activation: LazyActivation::default(),
        }
    }

    /// Applies one event of this person.
    ///
    /// Traits: last write by *event timestamp* wins (ties by seq), so an old event replayed
    /// late never overwrites a newer value; a trait set to `null` or listed in
    /// `traits["$unset"]` is removed via a tombstone that follows the same rule. Every event
    /// counts once — the caller applies each event to exactly one profile.
    pub fn apply(&mut self, ev: &EventView) {
        let ms = ev.timestamp_ms;
        self.see(ms, ms);
        self.event_count += 1;
        bump(Arc::make_mut(&mut self.event_counts), ev.kind.as_str(), 1);

        let sources = Arc::make_mut(&mut self.sources);
        match sources.get_mut(ev.source_id.as_ref()) {
            Some(s) => s.add(ms),
            None => {
                sources.insert(ev.source_id.to_string(), SourceStat::new(ms));
            }
        }
        if let Some((utm, key)) = ev.utm.as_ref().and_then(|u| Some((u, channel_key(u)?))) {
            let channels = Arc::make_mut(&mut self.channels);
            match channels.get_mut(&key) {
                Some(c) => c.add(utm, ms, ev.seq),
                None => {
                    channels.insert(key, ChannelStat::new(utm, ms, ev.seq));
                }
            }
        }
        if let Some(ua) = &ev.user_agent {
            let key = device_key(ua);
            let devices = Arc::make_mut(&mut self.devices);
            match devices.get_mut(&key) {
                Some(d) => d.add(ua, ms, ev.seq),
                None => {
                    devices.insert(key, DeviceStat::new(ua, ms, ev.seq));
                }
            }
        }
        if ev.kind == EventType::Group {
            if let Some(g) = &ev.group_id {
                join_group(&mut self.groups, g, ms);
            }
        }
        if let Some(traits) = &ev.traits {
            apply_traits(Arc::make_mut(&mut self.traits), traits, ev);
        }
    }

    /// Merges another profile of the same person into this one (identity merge).
    ///
    /// A join over the set of events applied: for any split of a set of events into
    /// profiles, absorbing them in any order equals applying all events to one profile —
    /// except `id`, which stays `self`'s. Counters add, first/last take min/max, traits and
    /// "first"/"latest" details are chosen by `(timestamp, seq)`.
    pub fn absorb(&mut self, other: Profile) {
        if other.event_count > 0 {
            self.see(other.first_seen_ms, other.last_seen_ms);
        }
        self.event_count += other.event_count;
        join_maps(&mut self.event_counts, other.event_counts, |ours, n| {
            *ours += n
        });
        join_maps(&mut self.sources, other.sources, SourceStat::merge);
        join_maps(&mut self.channels, other.channels, ChannelStat::merge);
        join_maps(&mut self.devices, other.devices, DeviceStat::merge);
        join_maps(&mut self.groups, other.groups, |ours, ms| {
            *ours = (*ours).min(ms)
        });
        if self.traits.is_empty() {
            // Merging into nothing is the other's traits as they are: share them.
            self.traits = other.traits;
        } else if !other.traits.is_empty() {
            merge_traits(Arc::make_mut(&mut self.traits), unshare(other.traits));
        }
        if !other.consent.is_empty() {
            Arc::make_mut(&mut self.consent).absorb(unshare(other.consent));
        }
    }

    /// Records the consent statements of one event (apart from [`Profile::apply`] because
    /// it needs the configured purposes). Returns whether the event stated any.
    pub fn apply_consent(&mut self, ev: &EventView, rules: &ConsentRules) -> bool {
        let statements = rules.statements(ev);
        if statements.is_empty() {
            return false;
        }
        Arc::make_mut(&mut self.consent).apply(ev, &statements);
        true
    }

    /// The traits to change (copied first if shared, e.g. with readers).
    pub fn traits_mut(&mut self) -> &mut TraitMap {
        Arc::make_mut(&mut self.traits)
    }

    /// The group memberships to change (copied first if shared).
    pub fn groups_mut(&mut self) -> &mut BTreeMap<String, i64> {
        Arc::make_mut(&mut self.groups)
    }

    /// The activation to change (copied first if shared).
    pub fn activation_mut(&mut self) -> &mut Activation {
        self.activation.make_mut()
    }

    /// Takes the activation out (leaving an empty one) to change it and put it back with
    /// `p.activation = act.into()`; moved if this profile was its only holder, else copied.
    pub fn take_activation(&mut self) -> Activation {
        unshare(self.activation.take())
    }

    /// Traits as plain JSON (tombstones omitted) — what the API shows under `traits`.
    pub fn trait_values(&self) -> Map<String, Value> {
        trait_values(&self.traits)
    }

    /// One live trait value, if set.
    pub fn trait_value(&self, key: &str) -> Option<&Value> {
        self.traits
            .get(key)
            .filter(|t| !t.removed)
            .map(|t| &t.value)
    }

    /// Widens the seen interval; the first events of an empty profile set it.
    fn see(&mut self, first: i64, last: i64) {
        if self.event_count == 0 {
            self.first_seen_ms = first;
            self.last_seen_ms = last;
        } else {
            self.first_seen_ms = self.first_seen_ms.min(first);
            self.last_seen_ms = self.last_seen_ms.max(last);
        }
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str, n: u64) {
    match map.get_mut(key) {
        Some(c) => *c += n,
        None => {
            map.insert(key.to_owned(), n);
        }
    }
}

/// Records that the person was in group `id` at `ms`; copies a shared map only when that
/// changes it (repeated `group` calls of a member usually do not).
fn join_group(groups: &mut Arc<BTreeMap<String, i64>>, id: &str, ms: i64) {
    match groups.get(id) {
        Some(first) if *first <= ms => {}
        Some(_) => {
            if let Some(first) = Arc::make_mut(groups).get_mut(id) {
                *first = ms;
            }
        }
        None => {
            Arc::make_mut(groups).insert(id.to_owned(), ms);
        }
    }
}

/// Joins `other`'s map into `ours` entry by entry (`join` for keys in both). An empty side
/// costs nothing: an empty `ours` takes `other`'s map as it is, shared or not.
fn join_maps<V: Clone>(
    ours: &mut Arc<BTreeMap<String, V>>,
    other: Arc<BTreeMap<String, V>>,
    join: impl Fn(&mut V, V),
) {
    if other.is_empty() {
        return;
    }
    if ours.is_empty() {
        *ours = other;
        return;
    }
    let ours = Arc::make_mut(ours);
    for (k, v) in unshare(other) {
        match ours.get_mut(&k) {
            Some(o) => join(o, v),
            None => {
                ours.insert(k, v);
            }
        }
    }
}

/// The value of a part, moved out if this was its last holder, else copied.
fn unshare<T: Clone>(part: Arc<T>) -> T {
    Arc::try_unwrap(part).unwrap_or_else(|a| (*a).clone())
}
