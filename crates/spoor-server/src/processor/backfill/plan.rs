//! What a backfill must recompute: the definitions that changed since the state was built
//! (compared with the definitions recorded then), the events that can matter to them, and
//! whose states may be stale.
//!
//! # Why only the changed definitions are exact
//! A person's state for a definition is a function of that definition and of the person's
//! events alone. So the states of unchanged definitions stay right, and only new or
//! changed ones are folded from the log. Audiences reading a changed one (nesting,
//! computed-trait references) keep their states too; only their memberships can change,
//! and those of everyone re-evaluated are recomputed whole.
//!
//! Who must be re-evaluated: people with an event that matters to a new definition (they
//! get a fresh state), people with an event that mattered to an old version of a changed
//! or removed one (they hold a stale state or value), and members of changed or removed
//! audiences. Anyone else has no state for those definitions, before or after, and —
//! *if* a definition without events evaluates to nothing (no membership, no value, no
//! timer, whatever the person's other facts) — nothing of theirs changes. When that does
//! not hold (`not performed …`, a trait condition, a new `count`, which is 0 for everyone)
//! every person is re-evaluated ([`Plan::everyone`]); only the folding stays narrow.

use super::super::activate::{needs, Engine};
use spoor_core::audience::{
    property_keys, top_key, AudienceState, CompiledRule, Definitions, EventFact, EventSelector,
    ProfileFacts,
};
use spoor_core::computed::{ComputedDef, ComputedState};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Estimated bytes of a person's entry in the fresh-state maps, of an audience's state
/// (B-tree slot, `Arc`, vector, membership and timer entries) and each of its slots, and
/// of a computed trait's state and value. Calibrated on `spoor bench audiences` (50
/// audiences + 20 traits: about 20 KB per person at the peak of a full backfill, fresh
/// states and rewritten profiles together).
const PERSON_BYTES: u64 = 160;
const AUDIENCE_BYTES: u64 = 200;
const SLOT_BYTES: u64 = 96;
const COMPUTED_BYTES: u64 = 192;

/// The work of one backfill.
pub struct Plan {
    /// Nothing is known about what the state was built for: every definition is folded and
    /// every person re-evaluated (the full recompute).
    pub full: bool,
    /// New or changed audiences and computed traits, folded from the log (all when `full`).
    /// Each with its name shared, as the states' keys are (`state_mut`).
    pub audiences: Vec<(Arc<str>, CompiledRule)>,
    pub computed: Vec<(Arc<str>, ComputedDef)>,
    /// Old versions of changed or removed definitions: an event that matters to one marks
    /// a person holding a state or value to drop.
    pub stale_audiences: Vec<CompiledRule>,
    pub stale_computed: Vec<ComputedDef>,
    /// Audiences whose members are re-evaluated (changed or removed ones).
    pub members_of: Vec<String>,
    /// Every live person is re-evaluated, not only those the events and memberships name.
    pub everyone: bool,
    /// Only audiences were added — none changed or removed, no computed trait recomputed —,
    /// each reading events alone, and no other audience reads them: evaluating those
    /// alone is exact ([`Engine::on_added`]).
    pub only_added: bool,
    /// Names every event that can matter has (quoted, as they appear in raw JSON); `None`
    /// when some selector names no event, so every event must be parsed.
    pub needles: Option<Vec<Vec<u8>>>,
    /// The event properties the definitions above read.
    pub keys: BTreeSet<String>,
    /// Names progress is reported under: the recomputed definitions and the audiences
    /// reading them.
    pub report: Vec<String>,
}

impl Plan {
    /// Compares the engine's definitions with `applied`, the ones the state reflects.
    pub fn new(engine: &Engine, applied: Option<&Definitions>, now_ms: i64) -> Plan {
        let cur = &engine.definitions;
        let old = applied.and_then(|d| d.compile().ok().map(|c| (d, c)));
        let Some((old, (old_set, old_computed))) = old else {
            return Plan::full(engine);
        };
        let mut p = Plan::empty();
        for (name, a) in &cur.audiences {
            if old.audiences.get(name).map(|o| &o.rule) == Some(&a.rule) {
                continue;
            }
            if let Some(rule) = engine.audiences.get(name) {
                p.audiences.push((Arc::from(name.as_str()), rule.clone()));
            }
            if let Some(rule) = old_set.get(name) {
                p.stale_audiences.push(rule.clone());
                p.members_of.push(name.clone());
            }
        }
        for name in old.audiences.keys() {
            if !cur.audiences.contains_key(name) {
                if let Some(rule) = old_set.get(name) {
                    p.stale_audiences.push(rule.clone());
                    p.members_of.push(name.clone());
                }
            }
        }
        for (name, c) in &cur.computed {
            if old.computed.get(name).map(|o| &o.def) == Some(&c.def) {
                continue;
            }
            if let Some(def) = engine.computed.get(name) {
                p.computed.push((Arc::from(name.as_str()), def.clone()));
            }
            if let Some(def) = old_computed.get(name) {
                p.stale_computed.push(def.clone());
            }
        }
        for name in old.computed.keys() {
            if !cur.computed.contains_key(name) {
                if let Some(def) = old_computed.get(name) {
                    p.stale_computed.push(def.clone());
                }
            }
        }
        let rules = p.audiences.iter().map(|(_, r)| r).chain(&p.stale_audiences);
        let defs = p.computed.iter().map(|(_, d)| d).chain(&p.stale_computed);
        p.everyone = rules.clone().any(|r| !silent_rule(r, now_ms))
            || defs.clone().any(|d| !silent_trait(d, now_ms));
        (p.needles, p.keys) = select(rules, defs);
        // Progress: what is refolded, and the audiences reading it.
        p.report = cur.changed_since(Some(old)).into_iter().collect();
        p.only_added = !p.everyone
            && !p.audiences.is_empty()
            && p.computed.is_empty()
            && p.stale_audiences.is_empty()
            && p.stale_computed.is_empty()
            && p.members_of.is_empty()
            && p.audiences.iter().all(|(_, r)| needs(&r.deps) == 0)
            && p.report.len() == p.audiences.len();
        p
    }

    /// Everything recomputed for everyone.
    fn full(engine: &Engine) -> Plan {
        let mut p = Plan::empty();
        p.full = true;
        p.everyone = true;
        for name in engine.audiences.order() {
            if let Some(rule) = engine.audiences.get(name) {
                p.audiences.push((Arc::from(name.as_str()), rule.clone()));
            }
        }
        p.computed = (0..engine.computed.len())
            .map(|i| {
                let def = engine.computed.at(i);
                (engine.computed.name_at(i).clone(), def.clone())
            })
            .collect();
        p.members_of = p.audiences.iter().map(|(n, _)| n.to_string()).collect();
        let rules = p.audiences.iter().map(|(_, r)| r);
        let defs = p.computed.iter().map(|(_, d)| d);
        (p.needles, p.keys) = select(rules, defs);
        p.report = engine.definitions.changed_since(None).into_iter().collect();
        p
    }

    fn empty() -> Plan {
        Plan {
            full: false,
            audiences: Vec::new(),
            computed: Vec::new(),
            stale_audiences: Vec::new(),
            stale_computed: Vec::new(),
            members_of: Vec::new(),
            everyone: false,
            only_added: false,
            needles: Some(Vec::new()),
            keys: BTreeSet::new(),
            report: Vec::new(),
        }
    }

    /// Nothing to fold and no one to re-evaluate (only descriptions changed, say).
    pub fn is_noop(&self) -> bool {
        !self.full
            && !self.everyone
            && self.audiences.is_empty()
            && self.computed.is_empty()
            && self.stale_audiences.is_empty()
            && self.stale_computed.is_empty()
    }

    /// Estimated memory of one person's fresh states (bytes): the map entry, and per
    /// recomputed definition its shared name's B-tree slot and its state. States that
    /// keep events (windows, sequences) hold more, bounded by their rule, so this is an
    /// average, not a ceiling.
    pub fn person_bytes(&self) -> u64 {
        let audiences: u64 = self
            .audiences
            .iter()
            .map(|(_, r)| AUDIENCE_BYTES + SLOT_BYTES * r.leaves.len() as u64)
            .sum();
        PERSON_BYTES + audiences + COMPUTED_BYTES * self.computed.len() as u64
    }

    /// Whether any event can matter (else the log is not read).
    pub fn reads_events(&self) -> bool {
        !(self.audiences.is_empty()
            && self.computed.is_empty()
            && self.stale_audiences.is_empty()
            && self.stale_computed.is_empty())
    }

    /// Whether this raw payload can be an event any definition here reads: it holds one
    /// of the names, or a backslash (an escaped name would not be found as is).
    pub fn may_matter(&self, payload: &[u8]) -> bool {
        match &self.needles {
            None => true,
            Some(n) if n.is_empty() => false,
            Some(n) => {
                memchr::memchr(b'\\', payload).is_some()
                    || n.iter().any(|x| memchr::memmem::find(payload, x).is_some())
            }
        }
    }

    /// Whether an old version of a changed or removed definition read this event.
    pub fn stale_match(&self, ev: &EventFact) -> bool {
        self.stale_audiences
            .iter()
            .any(|r| r.deps.event_matters(ev))
            || self.stale_computed.iter().any(|d| d.matters(ev))
    }
}

/// The event names (`None`: some selector names no event) and properties the given
/// definitions read.
fn select<'a>(
    rules: impl Iterator<Item = &'a CompiledRule>,
    defs: impl Iterator<Item = &'a ComputedDef>,
) -> (Option<Vec<Vec<u8>>>, BTreeSet<String>) {
    let mut keys = BTreeSet::new();
    let mut sels: Vec<&EventSelector> = Vec::new();
    for r in rules {
        sels.extend(&r.deps.events);
    }
    for d in defs {
        sels.push(&d.event);
        if let Some(p) = &d.property {
            keys.insert(top_key(p).to_owned());
        }
    }
    let mut names = Some(BTreeSet::new());
    for s in sels {
        property_keys(s, &mut keys);
        match (&s.name, &mut names) {
            (Some(n), Some(names)) => {
                names.insert(n.clone());
            }
            _ => names = None,
        }
    }
    // The JSON text of each name: a payload holding the name without escapes holds exactly
    // these bytes (callers parse every payload holding a backslash).
    let needles = names.map(|names| {
        names
            .into_iter()
            .filter_map(|n| serde_json::to_vec(&n).ok())
            .collect()
    });
    (needles, keys)
}

/// Whether a rule without events is never met and never needs a timer, whoever the person
/// is: it reads no profile facts (traits, computed traits, other audiences…) and its empty
/// state neither holds nor changes with time.
fn silent_rule(rule: &CompiledRule, now_ms: i64) -> bool {
    let f = ProfileFacts::default();
    let empty = AudienceState::new(rule);
    needs(&rule.deps) == 0
        && rule.deps.group_traits.is_empty()
        && !empty.evaluate(rule, &f, now_ms)
        && empty.next_change(rule, &f, now_ms).is_none()
}

/// The same for a computed trait: no value and no timer without events (`count` is 0).
fn silent_trait(def: &ComputedDef, now_ms: i64) -> bool {
    let empty = ComputedState::new(def);
    empty.value(def, now_ms).is_none() && empty.next_change(def, now_ms).is_none()
}
