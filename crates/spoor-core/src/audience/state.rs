//! Incremental audience evaluation: per (person, audience) the little each event condition
//! needs, updated per event, merged on identity merges, and evaluated at any time.
//!
//! Every slot is a function of the *set* of events applied (never of their arrival order),
//! and `merge` is the union of two such sets, which is why a state built from a split stream
//! and merged equals one built from the whole stream, and why out-of-order events are exact.

use super::ast::*;
use super::eval::{
    count_ok, facts_next_flip, in_window, selector_matches, time_order_ok, walk_eval,
};
use super::fact::{EventFact, ProfileFacts};
use super::CompiledRule;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

type Key = (i64, u64);

/// The latest timestamps of a windowed count: inline up to three (most rules count "at
/// least" one to three), so the common state has no buffer of its own.
pub type Stamps = SmallVec<[i64; 3]>;

/// Event keys of a sequence's slot: inline when there is one (as large as a `Vec`).
pub type Keys = SmallVec<[Key; 1]>;

/// A state's slots: inline when the rule has one event condition, as most have.
///
/// Why inline: a person's state is shared with the copy of the profile published to
/// readers, so every event that changes it copies it first. With a `Vec` here (and in the
/// slots) a copy was two or three allocations, and `spoor bench audiences` made some twenty
/// such copies per product view; inline, it is the one allocation of the state's `Arc`.
pub type Slots = SmallVec<[SlotState; 1]>;

/// What one event condition of a rule remembers.
///
/// Memory per slot:
/// - `performed … [at least|at most|exactly N times]` over all time: one counter;
/// - the same `within W`: the N (at least) or N + 1 (at most, exactly) latest matching
///   timestamps — the count inside any window ending now is exact up to that bound, and that
///   is all the comparison needs;
/// - `first|last performed`: one timestamp;
/// - `A then B within T`: every A and B until the first completed pair, then nothing (a flag);
/// - `A and not followed by B within T`: the latest A and the B's after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "slot", rename_all = "snake_case")]
pub enum SlotState {
    Count {
        n: u64,
    },
    Latest {
        ts: Stamps,
    },
    Extreme {
        ts: Option<i64>,
    },
    Then {
        done: bool,
        firsts: Keys,
        thens: Keys,
    },
    NotFollowed {
        latest: Option<Key>,
        thens: Keys,
    },
}

impl SlotState {
    fn new(leaf: &Rule) -> SlotState {
        match leaf {
            Rule::Performed { within: None, .. } => SlotState::Count { n: 0 },
            Rule::Performed { .. } => SlotState::Latest { ts: Stamps::new() },
            Rule::FirstLast { .. } => SlotState::Extreme { ts: None },
            Rule::Then { .. } => SlotState::Then {
                done: false,
                firsts: Keys::new(),
                thens: Keys::new(),
            },
            _ => SlotState::NotFollowed {
                latest: None,
                thens: Keys::new(),
            },
        }
    }

    fn apply(&mut self, leaf: &Rule, ev: &EventFact) {
        match (self, leaf) {
            (SlotState::Count { n }, Rule::Performed { event, .. })
                if selector_matches(event, ev) =>
            {
                *n += 1;
            }
            (SlotState::Latest { ts }, Rule::Performed { event, count, .. })
                if selector_matches(event, ev) =>
            {
                add_latest(ts, ev.ts_ms, keep(*count));
            }
            (SlotState::Extreme { ts }, Rule::FirstLast { which, event, .. })
                if selector_matches(event, ev) =>
            {
                add_extreme(ts, *which, ev.ts_ms);
            }
            (
                SlotState::Then {
                    done,
                    firsts,
                    thens,
                },
                Rule::Then {
                    first,
                    then,
                    within,
                },
            ) => {
                if selector_matches(first, ev) {
                    add_then_first(done, firsts, thens, ev.key(), *within);
                }
                if selector_matches(then, ev) {
                    add_then_then(done, firsts, thens, ev.key(), *within);
                }
            }
            (SlotState::NotFollowed { latest, thens }, Rule::NotFollowed { first, then, .. }) => {
                if selector_matches(then, ev) {
                    add_nf_then(latest, thens, ev.key());
                }
                if selector_matches(first, ev) {
                    add_nf_first(latest, thens, ev.key());
                }
            }
            _ => {}
        }
    }

    fn merge(&mut self, leaf: &Rule, other: SlotState) {
        match (self, other, leaf) {
            (SlotState::Count { n }, SlotState::Count { n: m }, _) => *n += m,
            (
                SlotState::Latest { ts },
                SlotState::Latest { ts: more },
                Rule::Performed { count, .. },
            ) => {
                for t in more {
                    add_latest(ts, t, keep(*count));
                }
            }
            (
                SlotState::Extreme { ts },
                SlotState::Extreme { ts: Some(t) },
                Rule::FirstLast { which, .. },
            ) => add_extreme(ts, *which, t),
            (
                SlotState::Then {
                    done,
                    firsts,
                    thens,
                },
                SlotState::Then {
                    done: other_done,
                    firsts: of,
                    thens: ot,
                },
                Rule::Then { within, .. },
            ) => {
                if other_done {
                    finish(done, firsts, thens);
                }
                for k in of {
                    add_then_first(done, firsts, thens, k, *within);
                }
                for k in ot {
                    add_then_then(done, firsts, thens, k, *within);
                }
            }
            (
                SlotState::NotFollowed { latest, thens },
                SlotState::NotFollowed {
                    latest: ol,
                    thens: ot,
                },
                _,
            ) => {
                for k in ot {
                    add_nf_then(latest, thens, k);
                }
                if let Some(k) = ol {
                    add_nf_first(latest, thens, k);
                }
            }
            _ => {}
        }
    }

    fn holds(&self, leaf: &Rule, now_ms: i64) -> bool {
        match (self, leaf) {
            (SlotState::Count { n }, Rule::Performed { count, .. }) => count_ok(*count, *n),
            (
                SlotState::Latest { ts },
                Rule::Performed {
                    count,
                    within: Some(w),
                    ..
                },
            ) => {
                let n = ts.iter().filter(|t| in_window(**t, *w, now_ms)).count();
                count_ok(*count, n as u64)
            }
            (SlotState::Extreme { ts }, Rule::FirstLast { order, time, .. }) => {
                ts.is_some_and(|t| time_order_ok(t, *order, *time, now_ms))
            }
            (SlotState::Then { done, .. }, _) => *done,
            (SlotState::NotFollowed { latest, thens }, Rule::NotFollowed { within, .. }) => {
                nf_deadline(latest, thens, *within).is_some_and(|d| now_ms > d)
            }
            _ => false,
        }
    }

    fn next_change(&self, leaf: &Rule, now_ms: i64) -> Option<i64> {
        match (self, leaf) {
            (
                SlotState::Latest { ts },
                Rule::Performed {
                    within: Some(w), ..
                },
            ) => ts
                .iter()
                .map(|t| t.saturating_add(w.ms()))
                .filter(|exit| *exit > now_ms)
                .min(),
            (
                SlotState::Extreme { ts: Some(t) },
                Rule::FirstLast {
                    time: TimeRef::Now(off),
                    ..
                },
            ) => {
                let edge = t.saturating_sub(*off);
                [edge, edge.saturating_add(1)]
                    .into_iter()
                    .find(|c| *c > now_ms)
            }
            (SlotState::NotFollowed { latest, thens }, Rule::NotFollowed { within, .. }) => {
                nf_deadline(latest, thens, *within)
                    .map(|d| d.saturating_add(1))
                    .filter(|t| *t > now_ms)
            }
            _ => None,
        }
    }
}

/// How many latest timestamps a windowed count must keep to decide its comparison.
fn keep(count: CountOp) -> usize {
    match count {
        CountOp::AtLeast(n) => n as usize,
        CountOp::AtMost(n) | CountOp::Exactly(n) => n as usize + 1,
    }
}

/// Inserts into a descending list, keeping the `k` largest.
fn add_latest(ts: &mut Stamps, t: i64, k: usize) {
    let at = ts.partition_point(|x| *x >= t);
    if at < k {
        ts.insert(at, t);
        ts.truncate(k);
    }
}

fn add_extreme(ts: &mut Option<i64>, which: Which, t: i64) {
    *ts = Some(match (*ts, which) {
        (None, _) => t,
        (Some(x), Which::First) => x.min(t),
        (Some(x), Which::Last) => x.max(t),
    });
}

fn finish(done: &mut bool, firsts: &mut Keys, thens: &mut Keys) {
    *done = true;
    *firsts = Keys::new();
    *thens = Keys::new();
}

fn add_then_first(done: &mut bool, firsts: &mut Keys, thens: &mut Keys, a: Key, w: Duration) {
    if *done {
        return;
    }
    if thens
        .iter()
        .any(|b| *b > a && b.0.saturating_sub(a.0) <= w.ms())
    {
        finish(done, firsts, thens);
    } else {
        firsts.push(a);
    }
}

fn add_then_then(done: &mut bool, firsts: &mut Keys, thens: &mut Keys, b: Key, w: Duration) {
    if *done {
        return;
    }
    if firsts
        .iter()
        .any(|a| b > *a && b.0.saturating_sub(a.0) <= w.ms())
    {
        finish(done, firsts, thens);
    } else {
        thens.push(b);
    }
}

fn add_nf_then(latest: &mut Option<Key>, thens: &mut Keys, b: Key) {
    if latest.is_none_or(|a| b > a) {
        let at = thens.partition_point(|x| *x < b);
        thens.insert(at, b);
    }
}

fn add_nf_first(latest: &mut Option<Key>, thens: &mut Keys, a: Key) {
    if latest.is_none_or(|l| a > l) {
        *latest = Some(a);
        thens.retain(|b| *b > a);
    }
}

/// The deadline (`ts_A + T`) of the latest A when no B followed it in time; `None` when there
/// is no A or it was followed.
fn nf_deadline(latest: &Option<Key>, thens: &[Key], within: Duration) -> Option<i64> {
    let a = (*latest)?;
    let deadline = a.0.saturating_add(within.ms());
    // `thens` holds only B's after the latest A, in order: the first one decides.
    let followed = thens.first().is_some_and(|b| b.0 <= deadline);
    (!followed).then_some(deadline)
}

/// The incremental state of one person for one audience: one [`SlotState`] per event
/// condition of the rule, in the order [`Rule::walk`] meets them.
///
/// The rule itself is not stored (the store persists one copy per audience); every method
/// takes the [`CompiledRule`] the state was created for. A state of another rule gives
/// meaningless answers (slots are matched by position), so recreate states when a rule
/// changes — a backfill does that.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AudienceState {
    pub slots: Slots,
}

impl AudienceState {
    /// The empty state (no events yet) for a rule.
    pub fn new(rule: &CompiledRule) -> AudienceState {
        AudienceState {
            slots: rule.leaves.iter().map(SlotState::new).collect(),
        }
    }

    /// Applies one event of this person, in any order relative to the others. Each event
    /// must be applied once to exactly one state of the person (like `Profile::apply`).
    pub fn apply(&mut self, rule: &CompiledRule, ev: &EventFact) {
        for (slot, leaf) in self.slots.iter_mut().zip(&rule.leaves) {
            slot.apply(leaf, ev);
        }
    }

    /// Absorbs the state of another profile of the same person (identity merge): the result
    /// equals the state built from both event sets.
    pub fn merge(&mut self, rule: &CompiledRule, other: AudienceState) {
        for ((slot, leaf), o) in self.slots.iter_mut().zip(&rule.leaves).zip(other.slots) {
            slot.merge(leaf, o);
        }
    }

    /// Membership at `now_ms`, given the person's other facts.
    pub fn evaluate(&self, rule: &CompiledRule, facts: &ProfileFacts, now_ms: i64) -> bool {
        walk_eval(&rule.rule, facts, now_ms, &mut 0, &mut |leaf, i| {
            self.slots.get(i).is_some_and(|s| s.holds(leaf, now_ms))
        })
    }

    /// The earliest time after `now_ms` at which membership may change with no new event and
    /// no change of `facts` (a window expiring, a funnel deadline passing, `now - 30d` passing
    /// a trait's date). The processor keeps a durable timer for it; at that time it
    /// re-evaluates (and asks again). It may be earlier than an actual change, never later.
    /// Changes of computed traits and of other audiences by time are their own timers.
    pub fn next_change(
        &self,
        rule: &CompiledRule,
        facts: &ProfileFacts,
        now_ms: i64,
    ) -> Option<i64> {
        let events = self
            .slots
            .iter()
            .zip(&rule.leaves)
            .filter_map(|(s, leaf)| s.next_change(leaf, now_ms))
            .min();
        let facts = if rule.facts_by_time {
            facts_next_flip(&rule.rule, facts, now_ms)
        } else {
            None
        };
        match (events, facts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
