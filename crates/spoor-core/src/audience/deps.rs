//! What can change a rule's result (so the processor re-evaluates only what an event or a
//! trait change can affect), catalog checks, and the evaluation order of nested audiences.

use super::ast::*;
use super::error::{OrderError, ParseError};
use super::eval::selector_matches;
use super::fact::{EventFact, FactFields};
use super::parse::{RefKind, Reference};
use crate::event::EventType;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The inputs of one rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Dependencies {
    /// Events matching any of these can change an event condition's state.
    pub events: Vec<EventSelector>,
    /// Top-level trait keys read (`address` for `trait address.city`).
    pub traits: BTreeSet<String>,
    pub computed: BTreeSet<String>,
    /// Top-level group trait keys read.
    pub group_traits: BTreeSet<String>,
    /// Reads the person's channels (UTM) / devices.
    pub channels: bool,
    pub devices: bool,
    /// Which of their fields (the only ones the processor copies into the facts).
    #[serde(skip)]
    pub fields: FactFields,
    /// Reads the person's consent (`consented to …`).
    #[serde(default)]
    pub consent: bool,
    /// Other audiences whose membership is read.
    pub audiences: BTreeSet<String>,
    /// Membership can change with time alone (windows, deadlines, `now` in comparisons):
    /// the processor must keep a timer from [`super::AudienceState::next_change`].
    pub time: bool,
}

impl Dependencies {
    pub fn of(rule: &Rule) -> Dependencies {
        let mut d = Dependencies::default();
        let top = |p: &str| p.split('.').next().unwrap_or(p).to_owned();
        rule.walk(&mut |r| match r {
            Rule::Trait { path, cmp } => {
                d.traits.insert(top(path));
                d.time |= uses_now(cmp);
            }
            Rule::Computed { name, cmp } => {
                d.computed.insert(name.clone());
                d.time |= uses_now(cmp);
            }
            Rule::GroupTrait { path, cmp } => {
                d.group_traits.insert(top(path));
                d.time |= uses_now(cmp);
            }
            Rule::Utm { field, cmp } => {
                d.channels = true;
                d.fields.add_utm(*field);
                d.time |= uses_now(cmp);
            }
            Rule::Device { field, cmp } => {
                d.devices = true;
                d.fields.add_device(*field);
                d.time |= uses_now(cmp);
            }
            Rule::InAudience { name } => {
                d.audiences.insert(name.clone());
            }
            Rule::Consented { .. } => d.consent = true,
            Rule::Performed { event, within, .. } => {
                d.events.push(event.clone());
                d.time |= within.is_some();
            }
            Rule::FirstLast { event, time, .. } => {
                d.events.push(event.clone());
                d.time |= matches!(time, TimeRef::Now(_));
            }
            Rule::Then { first, then, .. } => {
                d.events.push(first.clone());
                d.events.push(then.clone());
            }
            Rule::NotFollowed { first, then, .. } => {
                d.events.push(first.clone());
                d.events.push(then.clone());
                d.time = true;
            }
            Rule::And { .. } | Rule::Or { .. } | Rule::Not { .. } => {}
        });
        d
    }

    /// Keys for an index from events to rules: an event of type `k` named `n` can matter only
    /// to rules holding one of `(k, n)`, `(k, None)`, `(None, n)`, `(None, None)` — four
    /// lookups per event instead of a scan over every rule. (Where-clauses are checked after.)
    /// The type is given as its name (`"track"`), as `EventType` has no order.
    pub fn index_keys(&self) -> BTreeSet<(Option<&'static str>, Option<String>)> {
        self.events
            .iter()
            .map(|s| (s.kind.map(EventType::as_str), s.name.clone()))
            .collect()
    }

    /// Whether applying this event can change the rule's event state. Other events may be
    /// skipped entirely (they still change traits, channels… which the processor tracks).
    pub fn event_matters(&self, ev: &EventFact) -> bool {
        self.events.iter().any(|s| selector_matches(s, ev))
    }
}

fn uses_now(cmp: &Comparison) -> bool {
    let is_now = |l: &Literal| matches!(l, Literal::Time(TimeRef::Now(_)));
    match cmp {
        Comparison::Eq { value }
        | Comparison::Ne { value }
        | Comparison::Lt { value }
        | Comparison::Le { value }
        | Comparison::Gt { value }
        | Comparison::Ge { value }
        | Comparison::Contains { value } => is_now(value),
        Comparison::In { values } => values.iter().any(is_now),
        _ => false,
    }
}

/// The names a rule may refer to. A reference to anything else is an error.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    pub computed: BTreeSet<String>,
    pub audiences: BTreeSet<String>,
}

/// Checks references (from [`super::parse_with_refs`]) against a catalog; the error points
/// at the first unknown name.
pub fn check_refs(src: &str, refs: &[Reference], catalog: &Catalog) -> Result<(), ParseError> {
    for r in refs {
        let (known, what) = match r.kind {
            RefKind::Computed => (&catalog.computed, "computed trait"),
            RefKind::Audience => (&catalog.audiences, "audience"),
        };
        if !known.contains(&r.name) {
            let names: Vec<String> = known.iter().take(10).map(|n| format!("\"{n}\"")).collect();
            let expected = if names.is_empty() {
                format!("a known {what} (none are defined)")
            } else {
                let more = if known.len() > 10 { ", …" } else { "" };
                format!("a known {what} ({}{more})", names.join(", "))
            };
            return Err(ParseError::at(
                src,
                r.offset,
                &expected,
                &format!("unknown {what} \"{}\"", r.name),
            ));
        }
    }
    Ok(())
}

/// Orders audience definitions so that every audience comes after the audiences it refers to
/// (evaluate in this order and `in audience` reads a fresh membership). Ties are broken by
/// name, so the order is deterministic. Refuses cycles (naming one) and unknown references.
pub fn audience_order(defs: &BTreeMap<String, Rule>) -> Result<Vec<String>, OrderError> {
    let deps: BTreeMap<&str, BTreeSet<String>> = defs
        .iter()
        .map(|(n, r)| (n.as_str(), Dependencies::of(r).audiences))
        .collect();
    for (n, ds) in &deps {
        if let Some(u) = ds.iter().find(|d| !defs.contains_key(*d)) {
            return Err(OrderError::Unknown((*n).to_owned(), u.clone()));
        }
    }
    // Depth-first with colours; the grey path is the cycle when we meet a grey node again.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    let mut colour: BTreeMap<&str, Colour> = deps.keys().map(|k| (*k, Colour::White)).collect();
    let mut order = Vec::new();
    for start in deps.keys() {
        if colour[start] != Colour::White {
            continue;
        }
        // Explicit stack of (node, its dependencies still to visit).
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, children(&deps, start))];
        colour.insert(start, Colour::Grey);
        while let Some((node, rest)) = stack.last_mut() {
            let node = *node;
            match rest.pop() {
                Some(next) => match colour[next] {
                    Colour::White => {
                        colour.insert(next, Colour::Grey);
                        stack.push((next, children(&deps, next)));
                    }
                    Colour::Grey => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<String> =
                            stack[from..].iter().map(|(n, _)| (*n).to_owned()).collect();
                        cycle.push(next.to_owned());
                        return Err(OrderError::Cycle(cycle));
                    }
                    Colour::Black => {}
                },
                None => {
                    colour.insert(node, Colour::Black);
                    order.push(node.to_owned());
                    stack.pop();
                }
            }
        }
    }
    Ok(order)
}

/// Dependencies in reverse name order (popped from the end, so visited by name).
fn children<'a>(deps: &'a BTreeMap<&str, BTreeSet<String>>, n: &str) -> Vec<&'a str> {
    deps.get(n)
        .map(|ds| ds.iter().rev().map(String::as_str).collect())
        .unwrap_or_default()
}
