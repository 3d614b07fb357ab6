//! Signals: one incremental state per distinct event condition, shared by every audience
//! that has the condition.
//!
//! A workspace repeats its conditions: "performed Order Completed within 7d", "… within
//! 30d" and "not performed Order Completed within 30d" are three audiences over one
//! stream of orders. A [`SlotState`] depends on less than its condition says: a windowed
//! count keeps the latest N timestamps whatever the window, `first|last performed` keeps
//! one time whatever it is compared with, an abandonment keeps the latest A and the B's
//! after it whatever the deadline. So a condition's *signal* is the condition with those
//! parts left out ([`Signal::of`]); every audience whose condition has the same signal
//! reads one state, folded once per event, stored once per person. The per-person cost of
//! audiences then grows with the distinct signals, not with the audiences.
//!
//! # Keys
//! A signal's state is stored under its key: `~` and 16 hex digits of the SHA-256 of the
//! signal's canonical text (audience names cannot hold `~`, so a key never meets a name).
//! The key must not change between versions for the same signal, so the text hashed is
//! prefixed with [`VERSION`]: a change of the printer or of what a signal leaves out must
//! bump it, together with the keys under which the processor records the definitions a
//! state reflects (`spoor-server`, `defs.rs`), so that older data directories are
//! recomputed from the log on their first start.

use super::ast::{CountOp, Duration, Order, Rule, TimeRef};
use super::eval::selector_matches;
use super::fact::EventFact;
use super::state::{AudienceState, SlotState};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::sync::Arc;

/// Hashed with every signal's text; see the module docs.
pub const VERSION: &str = "signal/1";

/// The state-bearing part of one event condition, and where its state is stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    /// `~` + 16 hex digits (shared: a person's map entry costs a reference count).
    pub key: Arc<str>,
    /// The condition with what its state does not depend on set to fixed values: what
    /// events are folded with (it selects the same events and keeps the same state).
    pub leaf: Rule,
    /// The state before any event.
    empty: SlotState,
}

impl Signal {
    /// The signal of an event condition (a leaf of a compiled rule).
    pub fn of(leaf: &Rule) -> Signal {
        let leaf = normalize(leaf);
        let mut h = Sha256::new();
        h.update(VERSION.as_bytes());
        h.update(b" ");
        h.update(leaf.to_string().as_bytes());
        let mut key = String::with_capacity(17);
        key.push('~');
        for b in &h.finalize()[..8] {
            let _ = write!(key, "{b:02x}");
        }
        Signal {
            key: Arc::from(key),
            empty: SlotState::new(&leaf),
            leaf,
        }
    }

    /// A fresh state (one slot) for a person with no event of this signal yet.
    pub fn new_state(&self) -> AudienceState {
        AudienceState {
            slots: vec![self.empty.clone()],
        }
    }

    /// The state of a person with no event of this signal.
    pub fn empty(&self) -> &SlotState {
        &self.empty
    }

    /// Whether the event changes this signal's state (one of its selectors matches).
    pub fn selects(&self, ev: &EventFact) -> bool {
        match &self.leaf {
            Rule::Performed { event, .. } | Rule::FirstLast { event, .. } => {
                selector_matches(event, ev)
            }
            Rule::Then { first, then, .. } | Rule::NotFollowed { first, then, .. } => {
                selector_matches(first, ev) || selector_matches(then, ev)
            }
            _ => false,
        }
    }

    /// Folds one event into a state made by [`Signal::new_state`].
    pub fn apply(&self, state: &mut AudienceState, ev: &EventFact) {
        if let Some(s) = state.slots.first_mut() {
            s.apply(&self.leaf, ev);
        }
    }

    /// Absorbs another person's state of this signal (identity merge).
    pub fn merge(&self, state: &mut AudienceState, other: AudienceState) {
        if let (Some(s), Some(o)) = (state.slots.first_mut(), other.slots.into_iter().next()) {
            s.merge(&self.leaf, o);
        }
    }

    /// The slot of a stored state (`None`: the person has none, i.e. [`Signal::empty`]).
    pub fn slot<'s>(&'s self, state: Option<&'s AudienceState>) -> &'s SlotState {
        state.and_then(|s| s.slots.first()).unwrap_or(&self.empty)
    }
}

/// What [`SlotState`] keeps for a condition, as a condition: the window of a count (it
/// keeps the latest N timestamps for any window), the comparison of a first/last time,
/// and the deadline of an abandonment are fixed; a count over all time is one counter
/// whatever it is compared with.
fn normalize(leaf: &Rule) -> Rule {
    match leaf {
        Rule::Performed {
            event,
            within: None,
            ..
        } => Rule::Performed {
            event: event.clone(),
            count: CountOp::AtLeast(1),
            within: None,
        },
        Rule::Performed {
            event,
            count,
            within: Some(_),
        } => Rule::Performed {
            event: event.clone(),
            count: CountOp::AtLeast(super::state::keep(*count) as u32),
            within: Some(Duration(1)),
        },
        Rule::FirstLast { which, event, .. } => Rule::FirstLast {
            which: *which,
            event: event.clone(),
            order: Order::Before,
            time: TimeRef::Date(0),
        },
        Rule::NotFollowed { first, then, .. } => Rule::NotFollowed {
            first: first.clone(),
            then: then.clone(),
            within: Duration(1),
        },
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{compile, parse};
    use super::*;

    fn key(text: &str) -> Arc<str> {
        let rule = compile(parse(text).unwrap());
        assert_eq!(rule.leaves.len(), 1, "{text}");
        Signal::of(&rule.leaves[0]).key
    }

    /// Conditions that keep the same state share a key; any difference in what is kept
    /// (the events selected, how many timestamps, first or last, a funnel's window) does not.
    #[test]
    fn conditions_keeping_the_same_state_share_a_signal() {
        let orders = key(r#"performed "Order Completed" within 7d"#);
        assert_eq!(orders, key(r#"performed "Order Completed" within 30d"#));
        assert_eq!(orders, key(r#"not performed "Order Completed" within 2h"#));
        assert_eq!(
            orders,
            key(r#"performed "Order Completed" at most 0 times within 1d"#)
        );
        assert_ne!(
            orders,
            key(r#"performed "Order Completed" at least 2 times within 7d"#)
        );
        assert_ne!(orders, key(r#"performed "Order Completed""#));
        assert_ne!(orders, key(r#"performed "Product Added" within 7d"#));
        let all_time = key(r#"performed "Order Completed" at least 3 times"#);
        assert_eq!(
            all_time,
            key(r#"performed "Order Completed" exactly 1 time"#)
        );
        assert_eq!(
            key(r#"first performed "Login" before now - 30d"#),
            key(r#"first performed "Login" after date "2024-01-01""#)
        );
        assert_ne!(
            key(r#"first performed "Login" before now - 30d"#),
            key(r#"last performed "Login" before now - 30d"#)
        );
        let cart = r#"performed "Product Added" and not followed by "Order Completed" within"#;
        assert_eq!(key(&format!("{cart} 2h")), key(&format!("{cart} 1d")));
        let funnel = r#"performed "Product Viewed" then "Product Added" within"#;
        assert_ne!(key(&format!("{funnel} 2h")), key(&format!("{funnel} 1d")));
        assert_ne!(
            key(r#"performed "Product Viewed" where category = "shoes" within 7d"#),
            key(r#"performed "Product Viewed" where category = "bags" within 7d"#)
        );
        assert!(orders.starts_with('~') && orders.len() == 17, "{orders}");
    }

    /// The keys are stored in every person's record: they must not change between builds.
    #[test]
    fn keys_are_stable() {
        assert_eq!(
            &*key(r#"performed "Order Completed" within 7d"#),
            &*Signal::of(
                &parse(r#"performed "Order Completed" at least 1 time within 1ms"#).unwrap()
            )
            .key
        );
        let k = key(r#"performed "Order Completed" within 7d"#);
        assert_eq!(&*k, STABLE_ORDERS_KEY, "a signal key changed: bump VERSION");
    }

    const STABLE_ORDERS_KEY: &str = "~644044b0edf51c5b";
}
