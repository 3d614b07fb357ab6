//! Computed traits: values derived from a person's events (count, sum, average, min, max,
//! first, last, most frequent, distinct count / list), filtered like audience event
//! conditions, over all time or a sliding window — maintained per event by
//! [`ComputedState`] and defined from scratch by [`brute_force`] (the reference).
//!
//! # Semantics
//!
//! - The events considered match [`ComputedDef::event`] (type, name, where-clause: the
//!   audience language's [`EventSelector`]). With a `window` W, only events with
//!   `ts > now − W` count (an event leaves at exactly `ts + W`; future timestamps count).
//! - `count` counts those events. Every other aggregation reads `property` (a dotted path)
//!   and skips events where it is absent or `null`; `sum`, `avg`, `min`, `max` also skip
//!   non-numbers.
//! - `first` / `last`: the property of the earliest / latest event by `(timestamp, seq)`.
//! - `most_frequent {top}`: the `top` most frequent values, most frequent first (ties by the
//!   value's JSON text, ascending). `distinct_count`: how many different values.
//!   `distinct_list {limit}`: the `limit` values seen most recently, most recent first.
//!   Values are compared by their JSON text (`1` and `1.0` differ, `"1"` and `1` differ).
//! - With no events: `count`, `sum`, `distinct_count` are 0; `most_frequent` and
//!   `distinct_list` are `[]`; the others have no value (`None`).
//! - Sums are exact for integers (kept as a 64-bit integer while they fit); fractional parts are summed in
//!   floating point, whose rounding may depend on the order events arrived.

mod set;
mod state;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use set::{ComputedSet, ComputedStates};
pub use state::ComputedState;

use crate::audience::{selector_matches, EventFact, EventSelector, Literal, PropCond, TimeRef};
use crate::audience::{Comparison, Duration};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use std::collections::BTreeMap;

/// The largest `top` / `limit`: a trait is shown on every profile, not an export.
pub const MAX_LIST: usize = 100;

/// How the values of the selected events are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Aggregation {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    First,
    Last,
    MostFrequent { top: usize },
    DistinctCount,
    DistinctList { limit: usize },
}

/// A computed trait definition (its JSON form is the API's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputedDef {
    pub name: String,
    pub aggregation: Aggregation,
    /// The dotted property path aggregated; required except for `count`, which takes none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// Which events count; the default matches every event.
    #[serde(default)]
    pub event: EventSelector,
    /// A sliding window (`"30d"`); none means all time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Why a definition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ComputedError {
    #[error("invalid computed trait JSON: {0}")]
    Json(String),
    #[error("computed trait \"{name}\": {reason}")]
    Invalid { name: String, reason: String },
}

impl ComputedDef {
    /// Parses and validates the JSON form.
    pub fn from_json(json: &str) -> Result<ComputedDef, ComputedError> {
        let def: ComputedDef =
            serde_json::from_str(json).map_err(|e| ComputedError::Json(e.to_string()))?;
        def.validate()?;
        Ok(def)
    }

    /// Checks what serde cannot: the property rule, list bounds, a non-empty window, and no
    /// `now` in the where-clause (events are matched once, when they arrive).
    pub fn validate(&self) -> Result<(), ComputedError> {
        let bad = |reason: &str| {
            Err(ComputedError::Invalid {
                name: self.name.clone(),
                reason: reason.to_owned(),
            })
        };
        if self.name.trim().is_empty() {
            return bad("expected a name");
        }
        match (self.aggregation, &self.property) {
            (Aggregation::Count, Some(_)) => return bad("`count` takes no property"),
            (Aggregation::Count, None) => {}
            (_, None) => return bad("expected a property to aggregate"),
            (_, Some(p)) if p.is_empty() || p.split('.').any(str::is_empty) => {
                return bad("expected a property path like `product.price`")
            }
            _ => {}
        }
        if let Aggregation::MostFrequent { top: n } | Aggregation::DistinctList { limit: n } =
            self.aggregation
        {
            if n == 0 || n > MAX_LIST {
                return bad(&format!("expected a list size from 1 to {MAX_LIST}"));
            }
        }
        if self.window == Some(Duration(0)) {
            return bad("expected a window longer than 0");
        }
        if self.event.filter.as_ref().is_some_and(uses_now) {
            return bad("a where clause cannot use `now` (use the window for recency)");
        }
        Ok(())
    }

    /// Whether this event changes the trait's state (the processor skips the others).
    pub fn matters(&self, ev: &EventFact) -> bool {
        self.input(ev).is_some()
    }

    /// The value this event contributes, if it is selected: `Null` for `count`, the
    /// property otherwise (numbers only for numeric aggregations).
    pub(crate) fn input(&self, ev: &EventFact) -> Option<Value> {
        if !selector_matches(&self.event, ev) {
            return None;
        }
        let Some(path) = &self.property else {
            return Some(Value::Null);
        };
        let v = ev.property(path)?;
        match self.aggregation {
            Aggregation::Sum | Aggregation::Avg | Aggregation::Min | Aggregation::Max => {
                v.as_f64().map(|_| v.clone())
            }
            _ => Some(v.clone()),
        }
    }

    pub(crate) fn in_window(&self, ts: i64, now_ms: i64) -> bool {
        self.window
            .is_none_or(|w| ts > now_ms.saturating_sub(w.ms()))
    }
}

fn uses_now(c: &PropCond) -> bool {
    match c {
        PropCond::And { all } => all.iter().any(uses_now),
        PropCond::Or { any } => any.iter().any(uses_now),
        PropCond::Not { cond } => uses_now(cond),
        PropCond::Property { cmp, .. } => {
            let now = |l: &Literal| matches!(l, Literal::Time(TimeRef::Now(_)));
            match cmp {
                Comparison::Eq { value }
                | Comparison::Ne { value }
                | Comparison::Lt { value }
                | Comparison::Le { value }
                | Comparison::Gt { value }
                | Comparison::Ge { value }
                | Comparison::Contains { value } => now(value),
                Comparison::In { values } => values.iter().any(now),
                _ => false,
            }
        }
    }
}

/// The value from scratch: every event of the person, any order. The reference for
/// [`ComputedState`], and how a new definition is backfilled in one pass over few events.
pub fn brute_force(def: &ComputedDef, events: &[EventFact], now_ms: i64) -> Option<Value> {
    let mut inputs: Vec<((i64, u64), Value)> = events
        .iter()
        .filter(|e| def.in_window(e.ts_ms, now_ms))
        .filter_map(|e| Some((e.key(), def.input(e)?)))
        .collect();
    inputs.sort_by_key(|e| e.0);
    let nums = || inputs.iter().filter_map(|(_, v)| v.as_f64());
    match def.aggregation {
        Aggregation::Count => Some(Value::from(inputs.len())),
        Aggregation::Sum => Some(number(Sum::of(inputs.iter().map(|(_, v)| v)).total())),
        Aggregation::Avg => {
            let s = Sum::of(inputs.iter().map(|(_, v)| v));
            (s.n > 0).then(|| number(s.total() / s.n as f64))
        }
        Aggregation::Min => nums().reduce(f64::min).map(number),
        Aggregation::Max => nums().reduce(f64::max).map(number),
        Aggregation::First => inputs.first().map(|(_, v)| v.clone()),
        Aggregation::Last => inputs.last().map(|(_, v)| v.clone()),
        Aggregation::MostFrequent { top } => {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for (_, v) in &inputs {
                *counts.entry(key_of(v)).or_default() += 1;
            }
            Some(top_values(&counts, top))
        }
        Aggregation::DistinctCount => {
            let mut keys: Vec<String> = inputs.iter().map(|(_, v)| key_of(v)).collect();
            keys.sort();
            keys.dedup();
            Some(Value::from(keys.len()))
        }
        Aggregation::DistinctList { limit } => {
            let mut latest: BTreeMap<String, (i64, u64)> = BTreeMap::new();
            for (k, v) in &inputs {
                let e = latest.entry(key_of(v)).or_insert(*k);
                *e = (*e).max(*k);
            }
            Some(recent_values(&latest, limit))
        }
    }
}

/// An order-independent sum (part of [`ComputedState`]): integers exactly, the rest in
/// floating point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sum {
    pub int: i64,
    pub frac: f64,
    pub n: u64,
}

impl Sum {
    pub(crate) fn of<'a>(values: impl Iterator<Item = &'a Value>) -> Sum {
        let mut s = Sum::default();
        values.for_each(|v| s.add(v));
        s
    }
    pub(crate) fn add(&mut self, v: &Value) {
        match (v.as_i64(), v.as_f64()) {
            (Some(i), _) => self.add_int(i),
            (None, Some(f)) => self.frac += f,
            _ => return,
        }
        self.n += 1;
    }
    /// Integers add exactly; past the i64 range they spill into the float part.
    fn add_int(&mut self, i: i64) {
        match self.int.checked_add(i) {
            Some(s) => self.int = s,
            None => self.frac += i as f64,
        }
    }
    pub(crate) fn merge(&mut self, o: Sum) {
        self.add_int(o.int);
        self.frac += o.frac;
        self.n += o.n;
    }
    pub(crate) fn total(&self) -> f64 {
        self.int as f64 + self.frac
    }
}

/// A JSON number; integral values print without a fraction (`30`, not `30.0`).
pub(crate) fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        Value::from(f as i64)
    } else {
        Number::from_f64(f).map_or(Value::Null, Value::Number)
    }
}

/// The identity of a value for frequency and distinctness: its JSON text.
pub(crate) fn key_of(v: &Value) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn from_key(k: &str) -> Value {
    serde_json::from_str(k).unwrap_or(Value::Null)
}

/// The `top` most frequent, most frequent first, ties by JSON text.
pub(crate) fn top_values(counts: &BTreeMap<String, u64>, top: usize) -> Value {
    let mut v: Vec<(&String, &u64)> = counts.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Value::Array(v.into_iter().take(top).map(|(k, _)| from_key(k)).collect())
}

/// The `limit` most recently seen, most recent first.
pub(crate) fn recent_values<'a>(
    latest: impl IntoIterator<Item = (&'a String, &'a (i64, u64))>,
    limit: usize,
) -> Value {
    let mut v: Vec<(&String, &(i64, u64))> = latest.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    Value::Array(
        v.into_iter()
            .take(limit)
            .map(|(k, _)| from_key(k))
            .collect(),
    )
}
