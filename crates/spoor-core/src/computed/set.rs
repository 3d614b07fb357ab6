//! All computed traits of a workspace, per person: the glue between the per-trait states and
//! the audience facts (`ProfileFacts::computed`), so the processor handles them as one.

use super::{ComputedDef, ComputedError, ComputedState};
use crate::audience::EventFact;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Validated definitions, in name order, with an index by event name.
///
/// Each event used to be checked against every definition's selector; most definitions
/// name one event (`Order Completed`), so an event can only matter to the few naming it
/// and to those naming none — the index makes the per-event cost depend on those alone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputedSet {
    /// Sorted by name (names are unique): positions are stable indexes for callers.
    defs: Vec<ComputedDef>,
    /// The definitions' names, shared: the key of every new state (an `Arc` increment, not
    /// a copy of the name).
    names: Vec<Arc<str>>,
    /// Event name → positions of the definitions whose selector names it (ascending).
    by_event: HashMap<String, Vec<usize>>,
    /// Positions of the definitions whose selector names no event (ascending).
    any_name: Vec<usize>,
}

/// One person's states, by trait name (what the store persists per person).
///
/// Each state is behind its own `Arc`: a profile published to readers shares its states
/// with the processor's copy, and the next event of the person copies only the states it
/// changes (copying the whole activation on every event was 14 % of `spoor rebuild`'s
/// samples with 20 computed traits and 50 audiences defined).
pub type ComputedStates = crate::audience::NameMap<Arc<ComputedState>>;

impl ComputedSet {
    /// Validates every definition; names must be unique.
    pub fn new(defs: impl IntoIterator<Item = ComputedDef>) -> Result<ComputedSet, ComputedError> {
        let mut out = BTreeMap::new();
        for d in defs {
            d.validate()?;
            if out.contains_key(&d.name) {
                return Err(ComputedError::Invalid {
                    name: d.name,
                    reason: "defined twice".to_owned(),
                });
            }
            out.insert(d.name.clone(), d);
        }
        let defs: Vec<ComputedDef> = out.into_values().collect();
        let mut by_event: HashMap<String, Vec<usize>> = HashMap::new();
        let mut any_name = Vec::new();
        for (i, d) in defs.iter().enumerate() {
            match &d.event.name {
                Some(n) => by_event.entry(n.clone()).or_default().push(i),
                None => any_name.push(i),
            }
        }
        Ok(ComputedSet {
            names: defs.iter().map(|d| Arc::from(d.name.as_str())).collect(),
            defs,
            by_event,
            any_name,
        })
    }

    pub fn get(&self, name: &str) -> Option<&ComputedDef> {
        self.index_of(name).map(|i| &self.defs[i])
    }

    /// The position of a definition (what [`ComputedSet::apply_at`] returns).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.defs
            .binary_search_by(|d| d.name.as_str().cmp(name))
            .ok()
    }

    /// The definition at a position.
    pub fn at(&self, i: usize) -> &ComputedDef {
        &self.defs[i]
    }

    /// The shared name of the definition at a position (the key of its states).
    pub fn name_at(&self, i: usize) -> &Arc<str> {
        &self.names[i]
    }

    pub fn len(&self) -> usize {
        self.defs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.defs.is_empty()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.iter().map(|d| d.name.as_str())
    }

    /// Applies one event to the person's states (creating missing ones); returns the names
    /// of the traits the event touched, whose values — and the audiences reading them — the
    /// caller re-evaluates.
    pub fn apply(&self, states: &mut ComputedStates, ev: &EventFact) -> Vec<&str> {
        self.apply_at(states, ev)
            .into_iter()
            .map(|i| self.defs[i].name.as_str())
            .collect()
    }

    /// Whether some definition may select `ev` (one naming its name, or one naming none):
    /// when not, [`Self::apply_at`] changes nothing.
    pub fn may_select(&self, ev: &EventFact) -> bool {
        !self.any_name.is_empty()
            || ev
                .name
                .as_deref()
                .is_some_and(|n| self.by_event.contains_key(n))
    }

    /// [`ComputedSet::apply`] returning the positions of the traits touched, ascending.
    /// Only the definitions naming the event (or none) are looked at: a selector with a
    /// name matches only events of that name (`selector_matches`).
    pub fn apply_at(&self, states: &mut ComputedStates, ev: &EventFact) -> Vec<usize> {
        let named = ev.name.as_deref().and_then(|n| self.by_event.get(n));
        let mut touched = Vec::new();
        for &i in named.into_iter().flatten().chain(&self.any_name) {
            let def = &self.defs[i];
            // The input once (it is cloned out of the event).
            let Some(v) = def.input(ev) else { continue };
            crate::audience::state_mut(states, &self.names[i], || ComputedState::new(def))
                .add_input(def, ev, v);
            touched.push(i);
        }
        if named.is_some() && !self.any_name.is_empty() {
            touched.sort_unstable();
        }
        touched
    }

    /// Absorbs another profile's states (identity merge).
    pub fn merge(&self, states: &mut ComputedStates, other: ComputedStates) {
        for (name, o) in other {
            let Some(def) = self.get(&name) else {
                continue;
            };
            match states.get_mut(&name) {
                Some(mine) => Arc::make_mut(mine).merge(def, Arc::unwrap_or_clone(o)),
                None => {
                    states.insert(name, o);
                }
            }
        }
    }

    /// Drops expired window entries (`now_ms` must not decrease between calls).
    pub fn prune(&self, states: &mut ComputedStates, now_ms: i64) {
        for (def, s) in paired(&self.defs, states.iter_mut()) {
            ComputedState::prune_shared(s, def, now_ms);
        }
    }

    /// Every value at `now_ms` (`None` values left out): the Profile API's `computed_traits`
    /// and the audiences' `ProfileFacts::computed`.
    pub fn values(&self, states: &ComputedStates, now_ms: i64) -> Map<String, Value> {
        self.defs
            .iter()
            .filter_map(|def| {
                let v = match states.get(def.name.as_str()) {
                    Some(s) => s.value(def, now_ms),
                    None => ComputedState::new(def).value(def, now_ms),
                }?;
                Some((def.name.clone(), v))
            })
            .collect()
    }

    /// The earliest time any value may change with no new event (one timer per person).
    pub fn next_change(&self, states: &ComputedStates, now_ms: i64) -> Option<i64> {
        paired(&self.defs, states.iter())
            .filter_map(|(def, s)| s.next_change(def, now_ms))
            .min()
    }
}

/// Each state with its definition, found by walking both in name order (a person's states
/// are keyed by name, the definitions sorted by name): this runs on every event that
/// touches a computed trait, and a binary search by name per state was a string compare
/// after another. States of definitions that no longer exist are left out.
fn paired<K: AsRef<str>, V>(
    defs: &[ComputedDef],
    states: impl Iterator<Item = (K, V)>,
) -> impl Iterator<Item = (&ComputedDef, V)> {
    let mut j = 0;
    states.filter_map(move |(name, v)| {
        let name = name.as_ref();
        while defs.get(j).is_some_and(|d| d.name.as_str() < name) {
            j += 1;
        }
        let def = defs.get(j).filter(|d| d.name == name)?;
        Some((def, v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walking states and definitions together finds exactly the states whose definition
    /// exists, each with its own definition, whatever is missing on either side.
    #[test]
    fn paired_finds_each_states_definition() {
        let defs: Vec<ComputedDef> = ["a", "c", "e", "g"]
            .iter()
            .map(|n| {
                ComputedDef::from_json(&format!(
                    r#"{{"name":"{n}","aggregation":"count","event":{{"name":"X"}}}}"#
                ))
                .unwrap_or_else(|e| panic!("{e}"))
            })
            .collect();
        let states: BTreeMap<&str, usize> = ["b", "c", "d", "e", "f", "h"]
            .iter()
            .enumerate()
            .map(|(i, n)| (*n, i))
            .collect();
        let got: Vec<(&str, usize)> = paired(&defs, states.iter().map(|(k, v)| (*k, *v)))
            .map(|(d, v)| (d.name.as_str(), v))
            .collect();
        assert_eq!(got, vec![("c", 1), ("e", 3)]);
        assert_eq!(paired(&defs, std::iter::empty::<(&str, ())>()).count(), 0);
        assert_eq!(paired(&[], states.iter()).count(), 0);
    }
}
