//! Traits with provenance, merged last-writer-wins by event time.
//!
//! Each top-level trait key is one register holding the value, when it was set (the event's
//! timestamp), by which log entry, source and message. The register with the greater
//! `(set_at_ms, seq)` wins. Because that order does not depend on the order events are
//! *applied* in, an old event replayed or imported late never overwrites a newer value, and
//! two partial profiles of one person merge into exactly the profile of all their events.
//!
//! Removal (a trait set to `null`, or listed in `traits["$unset"]`) writes a tombstone rather
//! than deleting the key: otherwise an older value arriving after the removal would come back.

use super::view::EventView;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The key under which a client lists trait keys to remove: `{"$unset": ["a", "b"]}`.
pub const UNSET_KEY: &str = "$unset";

/// One trait register. A live value is never `null`; a removal has `removed = true` and a
/// `null` value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraitValue {
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub value: Value,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removed: bool,
    /// The timestamp of the event that wrote this register.
    #[serde(rename = "at_ms")]
    pub set_at_ms: i64,
    /// The log position of that event; breaks ties between events with the same timestamp.
    pub seq: u64,
    #[serde(rename = "source")]
    pub source_id: String,
    pub message_id: String,
}

impl TraitValue {
    /// The last-writer-wins order key.
    pub fn stamp(&self) -> (i64, u64) {
        (self.set_at_ms, self.seq)
    }
}

/// Trait registers by top-level key (nested objects are one value).
pub type TraitMap = BTreeMap<String, TraitValue>;

/// Applies the traits one event states. `$unset` wins over a value given for the same key in
/// the same event: the client asked explicitly for the removal.
pub(crate) fn apply_traits(into: &mut TraitMap, traits: &Map<String, Value>, ev: &EventView) {
    let unset = unset_keys(traits);
    let stamp = (ev.timestamp_ms, ev.seq);
    for (key, value) in traits {
        if key == UNSET_KEY || unset.contains(&key.as_str()) {
            continue;
        }
        write(into, key, value.clone(), stamp, ev);
    }
    for key in unset {
        write(into, key, Value::Null, stamp, ev);
    }
}

/// Writes one register if the event is newer than what is there (allocating only then).
fn write(into: &mut TraitMap, key: &str, value: Value, stamp: (i64, u64), ev: &EventView) {
    let make = || TraitValue {
        removed: value.is_null(),
        value: value.clone(),
        set_at_ms: stamp.0,
        seq: stamp.1,
        source_id: ev.source_id.to_string(),
        message_id: ev.message_id.to_string(),
    };
    match into.get_mut(key) {
        Some(old) if old.stamp() >= stamp => {}
        Some(old) => *old = make(),
        None => {
            into.insert(key.to_owned(), make());
        }
    }
}

fn unset_keys(traits: &Map<String, Value>) -> Vec<&str> {
    match traits.get(UNSET_KEY) {
        Some(Value::Array(keys)) => keys.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(key)) => vec![key.as_str()],
        _ => Vec::new(),
    }
}

/// Merges two register maps: per key the greater stamp wins (a join: commutative,
/// associative, idempotent).
pub(crate) fn merge_traits(into: &mut TraitMap, other: TraitMap) {
    for (key, theirs) in other {
        match into.get_mut(&key) {
            Some(ours) if ours.stamp() >= theirs.stamp() => {}
            Some(ours) => *ours = theirs,
            None => {
                into.insert(key, theirs);
            }
        }
    }
}

/// Live values as plain JSON, tombstones omitted.
pub fn trait_values(traits: &TraitMap) -> Map<String, Value> {
    traits
        .iter()
        .filter(|(_, t)| !t.removed)
        .map(|(k, t)| (k.clone(), t.value.clone()))
        .collect()
}
