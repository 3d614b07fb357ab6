//! The profile of a group (account, company, household): the traits `group` calls state.

use super::traits::{apply_traits, merge_traits, trait_values, TraitMap};
use super::view::EventView;
use crate::event::EventType;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One group, built from the `group` calls that name it. Traits follow the same
/// last-writer-wins-by-event-time rule as a person's, so the same guarantees hold: order of
/// application does not matter and [`Group::absorb`] is a join.
///
/// There is no member count: membership is a relation between *profiles* and groups, and
/// profiles merge — counting `group` calls here would count a person twice after a merge.
/// Count members from the profiles' `groups` instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    #[serde(default)]
    pub traits: TraitMap,
    /// `group` calls naming this group.
    pub event_count: u64,
    /// Event-time bounds; both 0 while `event_count` is 0.
    pub first_seen_ms: i64,
    pub last_seen_ms: i64,
}

impl Group {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            traits: TraitMap::new(),
            event_count: 0,
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    /// Applies a `group` call for this group; any other event (another type, or another
    /// group's id) is ignored, so the caller may hand over every event.
    pub fn apply(&mut self, ev: &EventView) {
        if ev.kind != EventType::Group || ev.group_id.as_deref() != Some(self.id.as_str()) {
            return;
        }
        self.see(ev.timestamp_ms, ev.timestamp_ms);
        self.event_count += 1;
        if let Some(traits) = &ev.group_traits {
            apply_traits(&mut self.traits, traits, ev);
        }
    }

    /// Merges another partial view of the same group (e.g. from a parallel rebuild).
    pub fn absorb(&mut self, other: Group) {
        if other.event_count > 0 {
            self.see(other.first_seen_ms, other.last_seen_ms);
        }
        self.event_count += other.event_count;
        merge_traits(&mut self.traits, other.traits);
    }

    /// Traits as plain JSON (tombstones omitted).
    pub fn trait_values(&self) -> Map<String, Value> {
        trait_values(&self.traits)
    }

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
