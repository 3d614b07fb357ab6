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
use crate::audience::Activation;
use crate::consent::{Consent, ConsentRules};
use crate::event::EventType;
use crate::identity::ProfileId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

pub use super::group::Group;
pub use super::traits::TraitValue;

/// One person's profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: ProfileId,
    /// Top-level trait key → value with provenance (tombstones included).
    #[serde(default)]
    pub traits: TraitMap,
    /// Event-time bounds; both 0 while `event_count` is 0.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
    pub event_count: u64,
    /// By event type (`track`, `page`, …).
    #[serde(default)]
    pub event_counts: BTreeMap<String, u64>,
    /// By source id.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceStat>,
    /// By [`channel_key`] (`source/medium/campaign`).
    #[serde(default)]
    pub channels: BTreeMap<String, ChannelStat>,
    /// By [`device_key`] (`device_type/os/browser`).
    #[serde(default)]
    pub devices: BTreeMap<String, DeviceStat>,
    /// Group id → first time (event time) this person was seen in it.
    #[serde(default)]
    pub groups: BTreeMap<String, i64>,
    /// Consent per purpose with its history (see [`crate::consent`]).
    #[serde(default, skip_serializing_if = "Consent::is_empty")]
    pub consent: Consent,
    /// Computed traits and audiences (kept by the processor's audience engine, which also
    /// merges it; [`Profile::absorb`] leaves it alone).
    #[serde(default, skip_serializing_if = "Activation::is_empty")]
    pub activation: Activation,
}

impl Profile {
    pub fn new(id: ProfileId) -> Self {
        Self {
            id,
            traits: TraitMap::new(),
            first_seen_ms: 0,
            last_seen_ms: 0,
            event_count: 0,
            event_counts: BTreeMap::new(),
            sources: BTreeMap::new(),
            channels: BTreeMap::new(),
            devices: BTreeMap::new(),
            groups: BTreeMap::new(),
            consent: Consent::default(),
            activation: Activation::default(),
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
        bump(&mut self.event_counts, ev.kind.as_str(), 1);

        match self.sources.get_mut(ev.source_id.as_ref()) {
            Some(s) => s.add(ms),
            None => {
                self.sources
                    .insert(ev.source_id.to_string(), SourceStat::new(ms));
            }
        }
        if let Some((utm, key)) = ev.utm.as_ref().and_then(|u| Some((u, channel_key(u)?))) {
            match self.channels.get_mut(&key) {
                Some(c) => c.add(utm, ms, ev.seq),
                None => {
                    self.channels.insert(key, ChannelStat::new(utm, ms, ev.seq));
                }
            }
        }
        if let Some(ua) = &ev.user_agent {
            let key = device_key(ua);
            match self.devices.get_mut(&key) {
                Some(d) => d.add(ua, ms, ev.seq),
                None => {
                    self.devices.insert(key, DeviceStat::new(ua, ms, ev.seq));
                }
            }
        }
        if ev.kind == EventType::Group {
            if let Some(g) = &ev.group_id {
                join_group(&mut self.groups, g, ms);
            }
        }
        if let Some(traits) = &ev.traits {
            apply_traits(&mut self.traits, traits, ev);
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
        for (k, n) in other.event_counts {
            bump(&mut self.event_counts, &k, n);
        }
        for (k, s) in other.sources {
            match self.sources.get_mut(&k) {
                Some(ours) => ours.merge(s),
                None => {
                    self.sources.insert(k, s);
                }
            }
        }
        for (k, c) in other.channels {
            match self.channels.get_mut(&k) {
                Some(ours) => ours.merge(c),
                None => {
                    self.channels.insert(k, c);
                }
            }
        }
        for (k, d) in other.devices {
            match self.devices.get_mut(&k) {
                Some(ours) => ours.merge(d),
                None => {
                    self.devices.insert(k, d);
                }
            }
        }
        for (g, ms) in other.groups {
            join_group(&mut self.groups, &g, ms);
        }
        merge_traits(&mut self.traits, other.traits);
        self.consent.absorb(other.consent);
    }

    /// Records the consent statements of one event (apart from [`Profile::apply`] because
    /// it needs the configured purposes). Returns whether the event stated any.
    pub fn apply_consent(&mut self, ev: &EventView, rules: &ConsentRules) -> bool {
        let statements = rules.statements(ev);
        self.consent.apply(ev, &statements);
        !statements.is_empty()
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

fn join_group(groups: &mut BTreeMap<String, i64>, id: &str, ms: i64) {
    match groups.get_mut(id) {
        Some(first) => *first = (*first).min(ms),
        None => {
            groups.insert(id.to_owned(), ms);
        }
    }
}
