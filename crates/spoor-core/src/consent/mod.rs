//! Consent per purpose: which uses of a person's data they agreed to.
//!
//! # Where consent comes from
//! Three kinds of statement, all carried by events in the log (so a rebuild re-derives them):
//! - **Segment's consent object**: `context.consent.categoryPreferences` maps a consent
//!   platform's *category ids* to `true`/`false`. Categories map to purposes by
//!   configuration ([`ConsentRules::new`]); a category with no mapping that equals a purpose
//!   name (any case) is that purpose; other categories are ignored. As in Segment, an event
//!   without a consent object (or with an empty one) states nothing.
//! - **Traits**: `traits.<consent_trait>.<purpose>` (an object) or a flat key
//!   `"<consent_trait>.<purpose>"`, with `true`/`false` or `"granted"`/`"denied"`.
//! - **The Consent API**: it appends an event of the internal source [`CONSENT_API_SOURCE`]
//!   carrying `context.consent.purposes` (purpose → `"granted"`/`"denied"`), Spoor's own
//!   extension of the consent object. Any source may send that key.
//!
//! Within one event, `purposes` wins over `categoryPreferences`, which wins over traits.
//!
//! # Semantics
//! The current value of a purpose is the statement with the greatest `(event time, seq)` —
//! last write by event time, like traits — so a late old event never overrides a newer
//! choice. A purpose nobody ever stated takes its configured default. The state is a join
//! (see [`Consent::absorb`]), so profiles merged in any order equal a rebuild.

mod state;
#[cfg(test)]
mod tests;

pub use state::{Consent, ConsentRecord, HISTORY_PER_PURPOSE};

use crate::profile::EventView;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The source id of events written by the Consent API (`PUT /v1/profiles/{ref}/consent`).
/// Not a real source: no write key can send as it, and it is never listed.
pub const CONSENT_API_SOURCE: &str = "src_spoor_consent_api";

/// The `track` event name the Consent API writes; the same name as Segment's consent
/// platforms use for a changed preference, so destinations recognise it.
pub const CONSENT_EVENT: &str = "Segment Consent Preference Updated";

/// Granted or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentValue {
    Granted,
    Denied,
}

impl ConsentValue {
    pub fn is_granted(self) -> bool {
        self == ConsentValue::Granted
    }

    /// `true`/`false`, `"granted"`/`"denied"` (also `"true"`/`"false"`, `"yes"`/`"no"`).
    pub fn from_json(v: &Value) -> Option<Self> {
        match v {
            Value::Bool(true) => Some(Self::Granted),
            Value::Bool(false) => Some(Self::Denied),
            Value::String(s) => Self::parse(s),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "granted" | "true" | "yes" => Some(Self::Granted),
            "denied" | "false" | "no" => Some(Self::Denied),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Denied => "denied",
        }
    }
}

/// How a statement reached Spoor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConsentVia {
    /// `context.consent` of an event.
    Event,
    /// A consent trait.
    Trait,
    /// The Consent API.
    Api,
}

/// One purpose's value stated by one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub purpose: String,
    pub value: ConsentValue,
    pub via: ConsentVia,
}

/// The configured purposes, defaults and mappings.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentRules {
    purposes: Vec<String>,
    defaults: BTreeMap<String, ConsentValue>,
    /// Category id → purposes; also under the lowercased id for case-insensitive matching.
    categories: BTreeMap<String, Vec<String>>,
    consent_trait: String,
}

impl Default for ConsentRules {
    /// The built-in purposes, all denied until stated, no category mapping beyond names.
    fn default() -> Self {
        let purposes = ["analytics", "personalization", "email", "advertising"];
        Self::new(
            purposes.iter().map(|p| p.to_string()).collect(),
            BTreeMap::new(),
            BTreeMap::new(),
            "consent".into(),
        )
        .unwrap_or_else(|_| unreachable!("the built-in consent rules are valid"))
    }
}

impl ConsentRules {
    /// Checks the configuration: purposes are non-empty names without dots, defaults and
    /// category mappings name configured purposes only.
    pub fn new(
        purposes: Vec<String>,
        defaults: BTreeMap<String, ConsentValue>,
        categories: BTreeMap<String, Vec<String>>,
        consent_trait: String,
    ) -> Result<Self, String> {
        for p in &purposes {
            if p.is_empty() || p.contains('.') || p.contains(char::is_whitespace) {
                return Err(format!(
                    "purpose {p:?} must be a non-empty name without dots or spaces"
                ));
            }
        }
        let known = |p: &str| purposes.iter().any(|x| x == p);
        if let Some(p) = defaults.keys().find(|p| !known(p)) {
            return Err(format!(
                "default_consent names {p:?}, which is not in purposes"
            ));
        }
        let mut cats = BTreeMap::new();
        for (cat, ps) in categories {
            if let Some(p) = ps.iter().find(|p| !known(p)) {
                return Err(format!(
                    "category {cat:?} maps to {p:?}, which is not in purposes"
                ));
            }
            cats.insert(cat.to_lowercase(), ps.clone());
            cats.insert(cat, ps);
        }
        if consent_trait.is_empty() {
            return Err("consent_trait must not be empty".into());
        }
        Ok(Self {
            purposes,
            defaults,
            categories: cats,
            consent_trait,
        })
    }

    /// The trait name that states consent (`consent` by default).
    pub fn consent_trait(&self) -> &str {
        &self.consent_trait
    }

    pub fn purposes(&self) -> &[String] {
        &self.purposes
    }

    pub fn is_purpose(&self, p: &str) -> bool {
        self.purposes.iter().any(|x| x == p)
    }

    /// The value of a purpose nobody stated.
    pub fn default_of(&self, purpose: &str) -> ConsentValue {
        self.defaults
            .get(purpose)
            .copied()
            .unwrap_or(ConsentValue::Denied)
    }

    /// The current value of a purpose for a person.
    pub fn value(&self, c: &Consent, purpose: &str) -> ConsentValue {
        c.current
            .get(purpose)
            .map_or_else(|| self.default_of(purpose), |r| r.value)
    }

    /// True when the person consents to every one of `purposes` (vacuously for none).
    pub fn allows(&self, c: &Consent, purposes: &[String]) -> bool {
        purposes.iter().all(|p| self.value(c, p).is_granted())
    }

    /// The purposes a person consents to now.
    pub fn granted(&self, c: &Consent) -> Vec<String> {
        self.purposes
            .iter()
            .filter(|p| self.value(c, p).is_granted())
            .cloned()
            .collect()
    }

    /// What one event states, one statement per purpose (see the module documentation for
    /// the precedence within an event).
    pub fn statements(&self, ev: &EventView) -> Vec<Statement> {
        let mut out: BTreeMap<String, (ConsentValue, ConsentVia)> = BTreeMap::new();
        // Most events carry traits but no consent trait: one prefix scan, no allocation.
        if let Some(traits) = ev
            .traits
            .as_ref()
            .filter(|t| t.keys().any(|k| k.starts_with(self.consent_trait.as_str())))
        {
            self.trait_statements(traits, &mut out);
        }
        if let Some(Value::Object(consent)) = &ev.consent {
            if let Some(Value::Object(cats)) = consent.get("categoryPreferences") {
                for (cat, v) in cats {
                    let Some(value) = ConsentValue::from_json(v) else {
                        continue;
                    };
                    for p in self.purposes_of_category(cat) {
                        out.insert(p.clone(), (value, ConsentVia::Event));
                    }
                }
            }
            if let Some(Value::Object(ps)) = consent.get("purposes") {
                let via = if ev.source_id == CONSENT_API_SOURCE {
                    ConsentVia::Api
                } else {
                    ConsentVia::Event
                };
                for (p, v) in ps {
                    if let (true, Some(value)) = (self.is_purpose(p), ConsentValue::from_json(v)) {
                        out.insert(p.clone(), (value, via));
                    }
                }
            }
        }
        out.into_iter()
            .map(|(purpose, (value, via))| Statement {
                purpose,
                value,
                via,
            })
            .collect()
    }

    fn purposes_of_category<'s>(&'s self, cat: &str) -> Vec<&'s String> {
        if let Some(ps) = self
            .categories
            .get(cat)
            .or_else(|| self.categories.get(&cat.to_lowercase()))
        {
            return ps.iter().collect();
        }
        self.purposes
            .iter()
            .filter(|p| p.eq_ignore_ascii_case(cat))
            .collect()
    }

    fn trait_statements(
        &self,
        traits: &Map<String, Value>,
        out: &mut BTreeMap<String, (ConsentValue, ConsentVia)>,
    ) {
        if let Some(Value::Object(m)) = traits.get(&self.consent_trait) {
            for (p, v) in m {
                if let (true, Some(value)) = (self.is_purpose(p), ConsentValue::from_json(v)) {
                    out.insert(p.clone(), (value, ConsentVia::Trait));
                }
            }
        }
        for p in &self.purposes {
            let key = format!("{}.{p}", self.consent_trait);
            if let Some(value) = traits.get(&key).and_then(ConsentValue::from_json) {
                out.insert(p.clone(), (value, ConsentVia::Trait));
            }
        }
    }

    /// The purposes whose value the event at `seq` *changed* for this person: its statement
    /// differs from the one before it by `(time, seq)` (or from the default when there is
    /// none kept). Delivery uses it to send exits once, on withdrawal, not for every event
    /// that repeats a denial.
    pub fn changes_at(&self, c: &Consent, seq: u64) -> Vec<(String, ConsentValue)> {
        let mut out = Vec::new();
        for (i, r) in c.history.iter().enumerate() {
            if r.seq != seq {
                continue;
            }
            let before = c.history[..i]
                .iter()
                .rev()
                .find(|x| x.purpose == r.purpose)
                .map_or_else(|| self.default_of(&r.purpose), |x| x.value);
            if before != r.value {
                out.push((r.purpose.clone(), r.value));
            }
        }
        out
    }
}
