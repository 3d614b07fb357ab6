//! All computed traits of a workspace, per person: the glue between the per-trait states and
//! the audience facts (`ProfileFacts::computed`), so the processor handles them as one.

use super::{ComputedDef, ComputedError, ComputedState};
use crate::audience::EventFact;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Validated definitions by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ComputedSet {
    defs: BTreeMap<String, ComputedDef>,
}

/// One person's states, by trait name (what the store persists per person).
pub type ComputedStates = BTreeMap<String, ComputedState>;

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
        Ok(ComputedSet { defs: out })
    }

    pub fn get(&self, name: &str) -> Option<&ComputedDef> {
        self.defs.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.defs.keys().map(String::as_str)
    }

    /// Applies one event to the person's states (creating missing ones); returns the names
    /// of the traits the event touched, whose values — and the audiences reading them — the
    /// caller re-evaluates.
    pub fn apply(&self, states: &mut ComputedStates, ev: &EventFact) -> Vec<&str> {
        let mut touched = Vec::new();
        for (name, def) in &self.defs {
            // The input once (it is cloned out of the event), and the name cloned only for
            // a state the person does not have yet.
            let Some(v) = def.input(ev) else { continue };
            match states.get_mut(name) {
                Some(s) => s.add_input(def, ev, v),
                None => {
                    let mut s = ComputedState::new(def);
                    s.add_input(def, ev, v);
                    states.insert(name.clone(), s);
                }
            }
            touched.push(name.as_str());
        }
        touched
    }

    /// Absorbs another profile's states (identity merge).
    pub fn merge(&self, states: &mut ComputedStates, other: ComputedStates) {
        for (name, o) in other {
            let Some(def) = self.defs.get(&name) else {
                continue;
            };
            match states.get_mut(&name) {
                Some(mine) => mine.merge(def, o),
                None => {
                    states.insert(name, o);
                }
            }
        }
    }

    /// Drops expired window entries (`now_ms` must not decrease between calls).
    pub fn prune(&self, states: &mut ComputedStates, now_ms: i64) {
        for (name, s) in states.iter_mut() {
            if let Some(def) = self.defs.get(name) {
                s.prune(def, now_ms);
            }
        }
    }

    /// Every value at `now_ms` (`None` values left out): the Profile API's `computed_traits`
    /// and the audiences' `ProfileFacts::computed`.
    pub fn values(&self, states: &ComputedStates, now_ms: i64) -> Map<String, Value> {
        self.defs
            .iter()
            .filter_map(|(name, def)| {
                let v = match states.get(name) {
                    Some(s) => s.value(def, now_ms),
                    None => ComputedState::new(def).value(def, now_ms),
                }?;
                Some((name.clone(), v))
            })
            .collect()
    }

    /// The earliest time any value may change with no new event (one timer per person).
    pub fn next_change(&self, states: &ComputedStates, now_ms: i64) -> Option<i64> {
        states
            .iter()
            .filter_map(|(name, s)| s.next_change(self.defs.get(name)?, now_ms))
            .min()
    }
}
