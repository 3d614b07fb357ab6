//! Brute-force evaluation over a person's whole event list: the reference the incremental
//! [`super::AudienceState`] is tested against, and the way to preview or backfill a rule.

use super::ast::*;
use super::compare::{depends_on_now, holds, holds_any, holds_any_str, next_flip};
use super::fact::{lookup, EventFact, ProfileFacts};
use serde_json::Value;
use std::borrow::Cow;

/// Whether an event is one the selector looks at. Where-clauses never mention `now` (the
/// parser refuses it), so a match is decided once, when the event arrives.
pub fn selector_matches(sel: &EventSelector, ev: &EventFact) -> bool {
    sel.kind.is_none_or(|k| k == ev.kind)
        && sel
            .name
            .as_ref()
            .is_none_or(|n| ev.name.as_deref() == Some(n.as_str()))
        && sel.filter.as_ref().is_none_or(|c| prop_holds(c, ev))
}

fn prop_holds(c: &PropCond, ev: &EventFact) -> bool {
    match c {
        PropCond::And { all } => all.iter().all(|c| prop_holds(c, ev)),
        PropCond::Or { any } => any.iter().any(|c| prop_holds(c, ev)),
        PropCond::Not { cond } => !prop_holds(cond, ev),
        // `now` cannot occur here; 0 is never read.
        PropCond::Property { path, cmp } => holds(ev.property(path), cmp, 0),
    }
}

/// Whether the count of matching events satisfies the count operator.
pub(crate) fn count_ok(count: CountOp, n: u64) -> bool {
    match count {
        CountOp::AtLeast(k) => n >= u64::from(k),
        CountOp::AtMost(k) => n <= u64::from(k),
        CountOp::Exactly(k) => n == u64::from(k),
    }
}

/// Whether an event time is inside a window ending at `now_ms`: `ts > now − W`. Events in the
/// future (clock skew) count; an event leaves the window at exactly `ts + W`.
pub(crate) fn in_window(ts: i64, w: Duration, now_ms: i64) -> bool {
    ts > now_ms.saturating_sub(w.ms())
}

/// Evaluates a rule from scratch over all of a person's events (any order).
pub fn evaluate(rule: &Rule, facts: &ProfileFacts, events: &[EventFact], now_ms: i64) -> bool {
    walk_eval(rule, facts, now_ms, &mut 0, &mut |leaf, _| {
        event_leaf(leaf, events, now_ms)
    })
}

fn matching<'a>(
    sel: &'a EventSelector,
    events: &'a [EventFact],
) -> impl Iterator<Item = &'a EventFact> + Clone + 'a {
    events.iter().filter(move |e| selector_matches(sel, e))
}

fn event_leaf(leaf: &Rule, events: &[EventFact], now_ms: i64) -> bool {
    match leaf {
        Rule::Performed {
            event,
            count,
            within,
        } => {
            let n = matching(event, events)
                .filter(|e| within.is_none_or(|w| in_window(e.ts_ms, w, now_ms)))
                .count();
            count_ok(*count, n as u64)
        }
        Rule::FirstLast {
            which,
            event,
            order,
            time,
        } => {
            let ts = matching(event, events).map(|e| e.ts_ms);
            let t = match which {
                Which::First => ts.min(),
                Which::Last => ts.max(),
            };
            t.is_some_and(|t| time_order_ok(t, *order, *time, now_ms))
        }
        Rule::Then {
            first,
            then,
            within,
        } => matching(first, events).any(|a| {
            matching(then, events)
                .any(|b| b.key() > a.key() && b.ts_ms.saturating_sub(a.ts_ms) <= within.ms())
        }),
        Rule::NotFollowed {
            first,
            then,
            within,
        } => {
            let Some(a) = matching(first, events).max_by_key(|e| e.key()) else {
                return false;
            };
            let deadline = a.ts_ms.saturating_add(within.ms());
            let followed = matching(then, events).any(|b| b.key() > a.key() && b.ts_ms <= deadline);
            !followed && now_ms > deadline
        }
        _ => false,
    }
}

pub(crate) fn time_order_ok(t: i64, order: Order, time: TimeRef, now_ms: i64) -> bool {
    match order {
        Order::Before => t < time.at(now_ms),
        Order::After => t > time.at(now_ms),
    }
}

/// Walks the rule, evaluating non-event conditions from `facts` and event conditions through
/// `leaf(rule, slot)`, where `slot` numbers the event conditions in pre-order. Every child is
/// visited (no short-circuit) so slot numbers do not depend on values.
pub(crate) fn walk_eval(
    rule: &Rule,
    facts: &ProfileFacts,
    now_ms: i64,
    slot: &mut usize,
    leaf: &mut impl FnMut(&Rule, usize) -> bool,
) -> bool {
    match rule {
        Rule::And { all } => all
            .iter()
            .map(|r| walk_eval(r, facts, now_ms, slot, leaf))
            .fold(true, |a, b| a & b),
        Rule::Or { any } => any
            .iter()
            .map(|r| walk_eval(r, facts, now_ms, slot, leaf))
            .fold(false, |a, b| a | b),
        Rule::Not { rule } => !walk_eval(rule, facts, now_ms, slot, leaf),
        Rule::InAudience { name } => facts.audiences.contains(name),
        Rule::Consented { purpose } => facts.consents.contains(purpose),
        r if r.is_event_condition() => {
            let i = *slot;
            *slot += 1;
            leaf(r, i)
        }
        Rule::Utm { field, cmp } => holds_any_str(
            facts.channels.iter().map(|c| {
                match field {
                    UtmField::Source => &c.source,
                    UtmField::Medium => &c.medium,
                    UtmField::Campaign => &c.campaign,
                    UtmField::Content => &c.content,
                    UtmField::Term => &c.term,
                }
                .as_deref()
            }),
            cmp,
            now_ms,
        ),
        Rule::Device { field, cmp } => holds_any_str(
            facts.devices.iter().map(|d| match field {
                DeviceField::Type => Some(d.device_type.as_str()),
                DeviceField::Os => d.os.as_deref(),
                DeviceField::Browser => d.browser.as_deref(),
            }),
            cmp,
            now_ms,
        ),
        r => {
            let (values, cmp) = fact_values(r, facts);
            cmp.is_some_and(|cmp| holds_any(values.iter(), cmp, now_ms))
        }
    }
}

/// The earliest time after `now_ms` at which a non-event condition may flip by time alone,
/// over the whole rule.
pub(crate) fn facts_next_flip(rule: &Rule, facts: &ProfileFacts, now_ms: i64) -> Option<i64> {
    let mut best: Option<i64> = None;
    rule.walk(&mut |r| {
        let (Rule::Trait { cmp, .. }
        | Rule::Computed { cmp, .. }
        | Rule::GroupTrait { cmp, .. }
        | Rule::Utm { cmp, .. }
        | Rule::Device { cmp, .. }) = r
        else {
            return;
        };
        if !depends_on_now(cmp) {
            return;
        }
        let (values, cmp) = fact_values(r, facts);
        if let Some(cmp) = cmp {
            if let Some(t) = next_flip(values.iter(), cmp, now_ms) {
                best = Some(best.map_or(t, |b| b.min(t)));
            }
        }
    });
    best
}

/// The value(s) one non-event condition compares: a trait or computed value is borrowed
/// as is (no allocation — these are most conditions, evaluated per event per affected
/// audience); channels, devices and groups give one value each.
enum Values<'f> {
    One(Option<&'f Value>),
    Many(Vec<Option<Cow<'f, Value>>>),
}

impl Values<'_> {
    fn iter(&self) -> impl Iterator<Item = Option<&Value>> {
        let (one, many) = match self {
            Values::One(v) => (Some(*v), &[][..]),
            Values::Many(vs) => (None, vs.as_slice()),
        };
        one.into_iter().chain(many.iter().map(|v| v.as_deref()))
    }
}

/// The value(s) a non-event condition compares, and its comparison. Borrowed where the
/// facts hold JSON already (evaluation runs per event per affected audience).
fn fact_values<'r, 'f>(
    r: &'r Rule,
    facts: &'f ProfileFacts,
) -> (Values<'f>, Option<&'r Comparison>) {
    let s = |v: &Option<String>| v.clone().map(|s| Cow::Owned(Value::String(s)));
    match r {
        Rule::Trait { path, cmp } => (Values::One(lookup(&facts.traits, path)), Some(cmp)),
        Rule::Computed { name, cmp } => (Values::One(facts.computed.get(name)), Some(cmp)),
        Rule::GroupTrait { path, cmp } => (
            Values::Many(
                facts
                    .groups
                    .iter()
                    .map(|g| lookup(g, path).map(Cow::Borrowed))
                    .collect(),
            ),
            Some(cmp),
        ),
        Rule::Utm { field, cmp } => (
            Values::Many(
                facts
                    .channels
                    .iter()
                    .map(|c| match field {
                        UtmField::Source => s(&c.source),
                        UtmField::Medium => s(&c.medium),
                        UtmField::Campaign => s(&c.campaign),
                        UtmField::Content => s(&c.content),
                        UtmField::Term => s(&c.term),
                    })
                    .collect(),
            ),
            Some(cmp),
        ),
        Rule::Device { field, cmp } => (
            Values::Many(
                facts
                    .devices
                    .iter()
                    .map(|d| match field {
                        DeviceField::Type => Some(Cow::Owned(Value::String(d.device_type.clone()))),
                        DeviceField::Os => s(&d.os),
                        DeviceField::Browser => s(&d.browser),
                    })
                    .collect(),
            ),
            Some(cmp),
        ),
        _ => (Values::One(None), None),
    }
}
