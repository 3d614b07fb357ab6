//! All audiences of a workspace compiled together: evaluation order for nesting, per-person
//! evaluation of every membership, and what to re-evaluate when one membership changes.

use super::deps::audience_order;
use super::error::OrderError;
use super::eval::evaluate;
use super::fact::{EventFact, ProfileFacts};
use super::{compile, AudienceState, CompiledRule, Rule};
use std::collections::{BTreeMap, BTreeSet};

/// A set of audience definitions, cycle-free, compiled, in dependency order.
#[derive(Debug, Clone, PartialEq)]
pub struct AudienceSet {
    order: Vec<String>,
    compiled: BTreeMap<String, CompiledRule>,
}

impl AudienceSet {
    /// Compiles the definitions; refuses cycles and references to undefined audiences.
    pub fn new(defs: BTreeMap<String, Rule>) -> Result<AudienceSet, OrderError> {
        let order = audience_order(&defs)?;
        let compiled = defs.into_iter().map(|(n, r)| (n, compile(r))).collect();
        Ok(AudienceSet { order, compiled })
    }

    /// Names, every audience after the audiences it refers to.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    pub fn get(&self, name: &str) -> Option<&CompiledRule> {
        self.compiled.get(name)
    }

    /// Every audience one person belongs to at `now_ms`, from their incremental states (a
    /// missing state is an empty one). `facts.audiences` is ignored: each audience sees the
    /// memberships computed before it in [`AudienceSet::order`].
    pub fn evaluate_all(
        &self,
        states: &BTreeMap<String, AudienceState>,
        facts: &ProfileFacts,
        now_ms: i64,
    ) -> BTreeSet<String> {
        self.in_order(facts, |name, rule, facts| match states.get(name) {
            Some(s) => s.evaluate(rule, facts, now_ms),
            None => AudienceState::new(rule).evaluate(rule, facts, now_ms),
        })
    }

    /// The same from scratch over all of the person's events (the reference; backfills).
    pub fn evaluate_all_brute(
        &self,
        facts: &ProfileFacts,
        events: &[EventFact],
        now_ms: i64,
    ) -> BTreeSet<String> {
        self.in_order(facts, |_, rule, facts| {
            evaluate(&rule.rule, facts, events, now_ms)
        })
    }

    fn in_order(
        &self,
        facts: &ProfileFacts,
        mut member: impl FnMut(&str, &CompiledRule, &ProfileFacts) -> bool,
    ) -> BTreeSet<String> {
        let mut f = facts.clone();
        f.audiences.clear();
        for name in &self.order {
            if let Some(rule) = self.compiled.get(name) {
                if member(name, rule, &f) {
                    f.audiences.insert(name.clone());
                }
            }
        }
        f.audiences
    }

    /// The earliest time after `now_ms` at which any membership of the person may change
    /// with no new event: one durable timer per person covers all audiences, nested ones
    /// included (a nested audience changes only when one of its inputs does).
    pub fn next_change_all(
        &self,
        states: &BTreeMap<String, AudienceState>,
        facts: &ProfileFacts,
        now_ms: i64,
    ) -> Option<i64> {
        let mut f = facts.clone();
        f.audiences = self.evaluate_all(states, facts, now_ms);
        self.order
            .iter()
            .filter_map(|name| {
                let rule = self.compiled.get(name)?;
                match states.get(name) {
                    Some(s) => s.next_change(rule, &f, now_ms),
                    None => AudienceState::new(rule).next_change(rule, &f, now_ms),
                }
            })
            .min()
    }

    /// The audiences to re-evaluate after `name`'s membership changed: every audience that
    /// refers to it, directly or through others, in evaluation order.
    pub fn dependents(&self, name: &str) -> Vec<String> {
        let mut hit: BTreeSet<&str> = [name].into_iter().collect();
        let mut out = Vec::new();
        for n in &self.order {
            let Some(rule) = self.compiled.get(n) else {
                continue;
            };
            if rule.deps.audiences.iter().any(|d| hit.contains(d.as_str())) {
                hit.insert(n);
                out.push(n.clone());
            }
        }
        out
    }
}
