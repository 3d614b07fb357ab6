//! A workspace's definitions of audiences and computed traits, as stored and served by the
//! admin API, and what the audience engine keeps per person (`Activation`).
//!
//! Definitions are configuration, not derived data: the API changes them, the processor
//! compiles them ([`Definitions::compile`]) and backfills whatever changed from the log.

use super::{AudienceSet, AudienceState, Catalog, NameMap, Rule};
use crate::computed::{ComputedDef, ComputedSet, ComputedStates};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// One audience as an admin defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudienceDefinition {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// The rule (its serde form is the JSON language; `Display` gives the text).
    pub rule: Rule,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// Bumped on every change of the rule; a changed revision is backfilled.
    pub revision: u64,
}

/// One computed trait as an admin defined it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputedDefinition {
    pub def: ComputedDef,
    #[serde(default)]
    pub description: String,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub revision: u64,
}

/// Every definition of a workspace. `revision` changes with any of them, so the processor
/// notices a change with one comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Definitions {
    pub revision: u64,
    #[serde(default)]
    pub audiences: BTreeMap<String, AudienceDefinition>,
    #[serde(default)]
    pub computed: BTreeMap<String, ComputedDefinition>,
}

/// Why a set of definitions cannot be used together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefinitionError {
    #[error("{0}")]
    Computed(String),
    #[error("audience \"{name}\": {reason}")]
    Audience { name: String, reason: String },
    #[error("{0}")]
    Order(String),
}

impl Definitions {
    /// What rules may refer to: the computed traits and audiences defined here.
    pub fn catalog(&self) -> Catalog {
        Catalog {
            computed: self.computed.keys().cloned().collect(),
            audiences: self.audiences.keys().cloned().collect(),
        }
    }

    /// Compiles everything; refuses unknown references and cycles between audiences.
    pub fn compile(&self) -> Result<(AudienceSet, ComputedSet), DefinitionError> {
        let computed = ComputedSet::new(self.computed.values().map(|c| c.def.clone()))
            .map_err(|e| DefinitionError::Computed(e.to_string()))?;
        let catalog = self.catalog();
        for a in self.audiences.values() {
            super::parse_checked(&a.rule.to_string(), &catalog).map_err(|e| {
                DefinitionError::Audience {
                    name: a.name.clone(),
                    reason: e.to_string(),
                }
            })?;
        }
        let rules: BTreeMap<String, Rule> = self
            .audiences
            .iter()
            .map(|(n, a)| (n.clone(), a.rule.clone()))
            .collect();
        let set = AudienceSet::new(rules).map_err(|e| DefinitionError::Order(e.to_string()))?;
        Ok((set, computed))
    }

    /// The names whose states or memberships a backfill from `old` (the definitions the
    /// derived state reflects) to these recomputes: new or changed audiences and computed
    /// traits, and the audiences reading any of them, nested or through a trait. Every
    /// name when `old` is unknown or does not compile (a full recompute). Removed names
    /// are not listed: there is nothing left to show them on.
    pub fn changed_since(&self, old: Option<&Definitions>) -> BTreeSet<String> {
        let every = || {
            (self.audiences.keys())
                .chain(self.computed.keys())
                .cloned()
                .collect()
        };
        let Some(old) = old.filter(|o| o.compile().is_ok()) else {
            return every();
        };
        let Ok((set, _)) = self.compile() else {
            return every();
        };
        let computed: BTreeSet<&String> = (self.computed.iter())
            .filter(|(n, c)| old.computed.get(*n).map(|o| &o.def) != Some(&c.def))
            .map(|(n, _)| n)
            .collect();
        let mut out: BTreeSet<String> = (self.audiences.iter())
            .filter(|(n, a)| old.audiences.get(*n).map(|o| &o.rule) != Some(&a.rule))
            .map(|(n, _)| n.clone())
            .collect();
        // In dependency order, so an audience reading a reader is found too.
        for name in set.order() {
            if let Some(rule) = set.get(name) {
                let reads = rule.deps.audiences.iter().any(|a| out.contains(a))
                    || rule.deps.computed.iter().any(|c| computed.contains(c));
                if reads {
                    out.insert(name.clone());
                }
            }
        }
        out.extend(computed.into_iter().cloned());
        out
    }
}

/// What the audience engine keeps for one person: incremental states of every computed
/// trait and audience, the audiences they are in (with the time they entered) and when
/// time alone may next change something. Derived data, rebuilt by replay; merged by the
/// processor with the definitions at hand (not by `Profile::absorb`).
///
/// Names are shared (`Arc<str>`, the engine's own) and every state and the values are
/// behind their own `Arc`: a profile published to readers shares all of it with the
/// processor's copy, and the person's next event copies only what it changes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Activation {
    #[serde(default, skip_serializing_if = "NameMap::is_empty")]
    pub computed: ComputedStates,
    #[serde(default, skip_serializing_if = "NameMap::is_empty")]
    pub audiences: NameMap<Arc<AudienceState>>,
    /// Audience name → event time (ms) of the change that made the person a member.
    #[serde(default, skip_serializing_if = "NameMap::is_empty")]
    pub members: NameMap<i64>,
    /// Computed trait values as of the last evaluation (what the Profile API shows).
    #[serde(default, skip_serializing_if = "map_is_empty")]
    pub values: Arc<serde_json::Map<String, serde_json::Value>>,
    /// When memberships or values may next change with no new event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_timer_ms: Option<i64>,
    /// Per audience, when its membership may next change with no new event (audiences not
    /// re-evaluated by an event keep theirs; the timer is the minimum of these).
    #[serde(default, skip_serializing_if = "NameMap::is_empty")]
    pub next: NameMap<i64>,
    /// The same for the computed traits together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_next: Option<i64>,
    /// The definitions revision of the last full evaluation (0: never): an event of a
    /// person not fully evaluated under the current definitions evaluates everything.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
}

impl Activation {
    /// The earliest next change of any audience or of the computed traits: what
    /// `next_timer_ms` holds after every evaluation.
    pub fn earliest_next(&self) -> Option<i64> {
        self.next.values().copied().chain(self.computed_next).min()
    }
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The state under `name` in one of an [`Activation`]'s maps of states, created by `new`
/// when missing, and copied first when shared with a published profile. `name` is the
/// definition's shared name (one search; a new entry costs a reference count, not a copy
/// of the name): every path that folds events into states goes through here.
pub fn state_mut<'m, V: Clone>(
    m: &'m mut NameMap<Arc<V>>,
    name: &Arc<str>,
    new: impl FnOnce() -> V,
) -> &'m mut V {
    Arc::make_mut(m.get_or_insert_with(name, || Arc::new(new())))
}

fn map_is_empty(v: &Arc<serde_json::Map<String, serde_json::Value>>) -> bool {
    v.is_empty()
}

impl Activation {
    pub fn is_empty(&self) -> bool {
        self.computed.is_empty()
            && self.audiences.is_empty()
            && self.members.is_empty()
            && self.values.is_empty()
            && self.next_timer_ms.is_none()
            && self.next.is_empty()
            && self.computed_next.is_none()
            && self.revision == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(audiences: &[(&str, &str)], computed: &[(&str, &str)]) -> Definitions {
        let mut d = Definitions::default();
        for (name, rule) in audiences {
            let a = AudienceDefinition {
                name: (*name).into(),
                description: String::new(),
                rule: super::super::parse(rule).unwrap(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            };
            d.audiences.insert((*name).into(), a);
        }
        for (name, extra) in computed {
            let json = format!(r#"{{"name": "{name}", "aggregation": "count"{extra}}}"#);
            let c = ComputedDefinition {
                def: ComputedDef::from_json(&json).unwrap(),
                description: String::new(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            };
            d.computed.insert((*name).into(), c);
        }
        d
    }

    fn names(s: BTreeSet<String>) -> Vec<String> {
        s.into_iter().collect()
    }

    /// What a backfill recomputes: changed definitions and, transitively, their readers;
    /// unchanged ones and descriptions alone are not; an unknown past is everything.
    #[test]
    fn changed_since_lists_changes_and_their_readers() {
        let a = [
            ("buyers", "performed \"Order\""),
            ("big", "computed spend > 100"),
            ("big_buyers", "in audience big and in audience buyers"),
            ("fans", "performed \"Like\""),
        ];
        let old = with(&a, &[("spend", "")]);
        assert!(old.changed_since(Some(&old)).is_empty());
        let mut described = old.clone();
        described.audiences.get_mut("fans").unwrap().description = "likes".into();
        assert!(described.changed_since(Some(&old)).is_empty());

        let traits_changed = with(&a, &[("spend", r#", "window": "30d""#)]);
        assert_eq!(
            names(traits_changed.changed_since(Some(&old))),
            ["big", "big_buyers", "spend"]
        );
        let mut b = a;
        b[3].1 = "performed \"Like\" at least 2 times";
        let fans_changed = with(&b, &[("spend", "")]);
        assert_eq!(names(fans_changed.changed_since(Some(&old))), ["fans"]);
        assert_eq!(names(old.changed_since(None)).len(), 5);
    }
}
