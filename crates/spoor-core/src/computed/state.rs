//! Incremental computed-trait state. Like audience state, each variant is a function of the
//! *set* of events applied, so arrival order and identity merges do not change the value.

use super::{key_of, number, recent_values, top_values, Aggregation, ComputedDef, Sum};
use crate::audience::EventFact;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

type Key = (i64, u64);

/// The state of one computed trait for one person.
///
/// Memory, by aggregation:
/// - all time: `count`, `sum`, `avg`, `min`, `max`, `first`, `last` are O(1);
///   `most_frequent` and `distinct_count` keep one counter per distinct value (exactness
///   needs them); `distinct_list` keeps `limit` values.
/// - windowed: `last` is O(1) and `distinct_list` O(`limit`); `min` / `max` keep only the
///   events that can still become the extreme (none that is both older and no better than
///   another); the others keep the events inside the window. Call [`ComputedState::prune`]
///   (with a non-decreasing `now`) to drop events that have left it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ComputedState {
    Count { n: u64 },
    Sum { sum: Sum },
    Extreme { v: Option<f64> },
    Pick { at: Option<Key>, v: Value },
    Frequency { counts: BTreeMap<String, u64> },
    Recent { latest: BTreeMap<String, Key> },
    Staircase { points: Vec<(i64, f64)> },
    Window { entries: Vec<(Key, Value)> },
}

impl ComputedState {
    /// The state of a person with no events.
    pub fn new(def: &ComputedDef) -> ComputedState {
        use Aggregation as A;
        match (def.aggregation, def.window.is_some()) {
            (A::Count, false) => ComputedState::Count { n: 0 },
            (A::Sum | A::Avg, false) => ComputedState::Sum {
                sum: Sum::default(),
            },
            (A::Min | A::Max, false) => ComputedState::Extreme { v: None },
            (A::First, false) | (A::Last, _) => ComputedState::Pick {
                at: None,
                v: Value::Null,
            },
            (A::MostFrequent { .. } | A::DistinctCount, false) => ComputedState::Frequency {
                counts: BTreeMap::new(),
            },
            (A::DistinctList { .. }, _) => ComputedState::Recent {
                latest: BTreeMap::new(),
            },
            (A::Min | A::Max, true) => ComputedState::Staircase { points: Vec::new() },
            _ => ComputedState::Window {
                entries: Vec::new(),
            },
        }
    }

    /// Applies one event (any order; each event once, to one state of the person).
    pub fn apply(&mut self, def: &ComputedDef, ev: &EventFact) {
        if let Some(v) = def.input(ev) {
            self.add(def, ev.key(), v);
        }
    }

    /// Applies an event's input, already taken with `def.input(ev)`.
    pub(crate) fn add_input(&mut self, def: &ComputedDef, ev: &EventFact, v: Value) {
        self.add(def, ev.key(), v);
    }

    fn add(&mut self, def: &ComputedDef, k: Key, v: Value) {
        let agg = def.aggregation;
        match self {
            ComputedState::Count { n } => *n += 1,
            ComputedState::Sum { sum } => sum.add(&v),
            ComputedState::Extreme { v: best } => {
                if let Some(x) = v.as_f64() {
                    *best = Some(match *best {
                        None => x,
                        Some(b) if agg == Aggregation::Min => b.min(x),
                        Some(b) => b.max(x),
                    });
                }
            }
            ComputedState::Pick { at, v: cur } => {
                let better = match *at {
                    None => true,
                    Some(a) if agg == Aggregation::First => k < a,
                    Some(a) => k > a,
                };
                if better {
                    *at = Some(k);
                    *cur = v;
                }
            }
            ComputedState::Frequency { counts } => *counts.entry(key_of(&v)).or_default() += 1,
            ComputedState::Recent { latest } => {
                let e = latest.entry(key_of(&v)).or_insert(k);
                *e = (*e).max(k);
                if let Aggregation::DistinctList { limit } = agg {
                    trim_recent(latest, limit);
                }
            }
            ComputedState::Staircase { points } => {
                if let Some(x) = v.as_f64() {
                    // `a` dominates `b` when it is no older and no worse: `b` can never be
                    // the window's extreme while `a` is in the window.
                    let better = |a: f64, b: f64| {
                        if agg == Aggregation::Min {
                            a <= b
                        } else {
                            a >= b
                        }
                    };
                    if !points.iter().any(|(t, y)| *t >= k.0 && better(*y, x)) {
                        points.retain(|(t, y)| !(k.0 >= *t && better(x, *y)));
                        points.push((k.0, x));
                    }
                }
            }
            // Kept in event order (see `window_value`); events mostly arrive in order, so
            // this is a push.
            ComputedState::Window { entries } => {
                let at = entries.partition_point(|e| e.0 <= k);
                entries.insert(at, (k, v));
            }
        }
    }

    /// Absorbs another profile's state of the same trait (identity merge).
    pub fn merge(&mut self, def: &ComputedDef, other: ComputedState) {
        match (self, other) {
            (ComputedState::Count { n }, ComputedState::Count { n: m }) => *n += m,
            (ComputedState::Sum { sum }, ComputedState::Sum { sum: o }) => sum.merge(o),
            (me @ ComputedState::Extreme { .. }, ComputedState::Extreme { v: Some(x) }) => {
                me.add(def, (0, 0), number(x))
            }
            (me @ ComputedState::Pick { .. }, ComputedState::Pick { at: Some(k), v }) => {
                me.add(def, k, v)
            }
            (ComputedState::Frequency { counts }, ComputedState::Frequency { counts: o }) => {
                for (k, n) in o {
                    *counts.entry(k).or_default() += n;
                }
            }
            (ComputedState::Recent { latest }, ComputedState::Recent { latest: o }) => {
                for (v, k) in o {
                    let e = latest.entry(v).or_insert(k);
                    *e = (*e).max(k);
                }
                if let Aggregation::DistinctList { limit } = def.aggregation {
                    trim_recent(latest, limit);
                }
            }
            (me @ ComputedState::Staircase { .. }, ComputedState::Staircase { points }) => {
                for (t, x) in points {
                    me.add(def, (t, 0), number(x));
                }
            }
            (ComputedState::Window { entries }, ComputedState::Window { entries: o }) => {
                entries.extend(o);
                entries.sort_by_key(|e| e.0);
            }
            _ => {}
        }
    }

    /// [`ComputedState::prune`] of a state a published profile may share: copied only when
    /// something in it expired (most prunes drop nothing).
    pub fn prune_shared(s: &mut std::sync::Arc<ComputedState>, def: &ComputedDef, now_ms: i64) {
        let stale = def.window.is_some() && s.any_time(|t| !def.in_window(t, now_ms));
        if stale {
            std::sync::Arc::make_mut(s).prune(def, now_ms);
        }
    }

    /// Whether `f` holds for an event time the state keeps for its window (the times that
    /// expire: what [`ComputedState::prune`] drops and [`ComputedState::next_change`]
    /// looks ahead to). No allocation: it runs per event per windowed trait.
    fn any_time(&self, mut f: impl FnMut(i64) -> bool) -> bool {
        match self {
            ComputedState::Pick { at, .. } => at.is_some_and(|k| f(k.0)),
            ComputedState::Recent { latest } => latest.values().any(|k| f(k.0)),
            ComputedState::Staircase { points } => points.iter().any(|(t, _)| f(*t)),
            ComputedState::Window { entries } => entries.iter().any(|(k, _)| f(k.0)),
            _ => false,
        }
    }

    /// Drops what can no longer count at `now_ms` or later. Only valid if later calls (to
    /// any method) use a `now` at least this large — the processor's clock.
    pub fn prune(&mut self, def: &ComputedDef, now_ms: i64) {
        if def.window.is_none() {
            return;
        }
        let live = |ts: i64| def.in_window(ts, now_ms);
        match self {
            ComputedState::Pick { at, v } if at.is_some_and(|k| !live(k.0)) => {
                *at = None;
                *v = Value::Null;
            }
            ComputedState::Recent { latest } => latest.retain(|_, k| live(k.0)),
            ComputedState::Staircase { points } => points.retain(|(t, _)| live(*t)),
            ComputedState::Window { entries } => entries.retain(|(k, _)| live(k.0)),
            _ => {}
        }
    }

    /// The value at `now_ms` (see the module documentation for each aggregation).
    pub fn value(&self, def: &ComputedDef, now_ms: i64) -> Option<Value> {
        let live = |ts: i64| def.in_window(ts, now_ms);
        match self {
            ComputedState::Count { n } => Some(Value::from(*n)),
            ComputedState::Sum { sum } => match def.aggregation {
                Aggregation::Avg => (sum.n > 0).then(|| number(sum.total() / sum.n as f64)),
                _ => Some(number(sum.total())),
            },
            ComputedState::Extreme { v } => v.map(number),
            ComputedState::Pick { at, v } => at.filter(|k| live(k.0)).map(|_| v.clone()),
            ComputedState::Frequency { counts } => match def.aggregation {
                Aggregation::MostFrequent { top } => Some(top_values(counts, top)),
                _ => Some(Value::from(counts.len())),
            },
            ComputedState::Recent { latest } => {
                let limit = match def.aggregation {
                    Aggregation::DistinctList { limit } => limit,
                    _ => usize::MAX,
                };
                // Filtered as read: a copy of the map per value was a copy per event.
                Some(recent_values(
                    latest.iter().filter(|(_, k)| live(k.0)),
                    limit,
                ))
            }
            ComputedState::Staircase { points } => {
                let vals = points.iter().filter(|(t, _)| live(*t)).map(|(_, x)| *x);
                let best = if def.aggregation == Aggregation::Min {
                    vals.reduce(f64::min)
                } else {
                    vals.reduce(f64::max)
                };
                best.map(number)
            }
            ComputedState::Window { entries } => window_value(def, entries, now_ms),
        }
    }

    /// The earliest time after `now_ms` at which the value may change with no new event (an
    /// event leaving the window); `None` for all-time traits. Never later than a real change.
    pub fn next_change(&self, def: &ComputedDef, now_ms: i64) -> Option<i64> {
        let w = def.window?.ms();
        let mut first_exit: Option<i64> = None;
        self.any_time(|t| {
            let exit = t.saturating_add(w);
            if exit > now_ms && first_exit.is_none_or(|f| exit < f) {
                first_exit = Some(exit);
            }
            false
        });
        first_exit
    }
}

/// Keeps the `limit` values seen most recently. Exact under merges: a value among the
/// overall `limit` most recent is among them in the state holding its latest event.
fn trim_recent(latest: &mut BTreeMap<String, Key>, limit: usize) {
    if latest.len() <= limit {
        return;
    }
    let mut by_time: Vec<(Key, String)> = latest.iter().map(|(v, k)| (*k, v.clone())).collect();
    by_time.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, v) in by_time.into_iter().skip(limit) {
        latest.remove(&v);
    }
}

/// The value over the window's entries (count, sum, avg, first, most frequent, distinct
/// count).
///
/// The entries are read in event order (a sum's floating-point part must add up the same
/// whatever order the events arrived in). States keep them in that order since 2026-12-08,
/// so this reads them where they are: a sorted copy per value was an allocation per
/// windowed trait per event. A state stored before is sorted on the fly.
fn window_value(def: &ComputedDef, entries: &[(Key, Value)], now_ms: i64) -> Option<Value> {
    let live = |e: &&(Key, Value)| def.in_window(e.0 .0, now_ms);
    if entries.is_sorted_by_key(|e| e.0) {
        aggregate_window(def, entries.iter().filter(live))
    } else {
        let mut sorted: Vec<&(Key, Value)> = entries.iter().filter(live).collect();
        sorted.sort_by_key(|e| e.0);
        aggregate_window(def, sorted.into_iter())
    }
}

/// [`window_value`] over the live entries, in event order.
fn aggregate_window<'a>(
    def: &ComputedDef,
    mut live: impl Iterator<Item = &'a (Key, Value)>,
) -> Option<Value> {
    match def.aggregation {
        Aggregation::Count => Some(Value::from(live.count())),
        Aggregation::Sum => Some(number(Sum::of(live.map(|e| &e.1)).total())),
        Aggregation::Avg => {
            let s = Sum::of(live.map(|e| &e.1));
            (s.n > 0).then(|| number(s.total() / s.n as f64))
        }
        Aggregation::First => live.next().map(|e| e.1.clone()),
        Aggregation::MostFrequent { top } => {
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            for e in live {
                *counts.entry(key_of(&e.1)).or_default() += 1;
            }
            Some(top_values(&counts, top))
        }
        Aggregation::DistinctCount => {
            let mut keys: Vec<String> = live.map(|e| key_of(&e.1)).collect();
            keys.sort();
            keys.dedup();
            Some(Value::from(keys.len()))
        }
        // Served by other variants.
        Aggregation::Min
        | Aggregation::Max
        | Aggregation::Last
        | Aggregation::DistinctList { .. } => None,
    }
}
