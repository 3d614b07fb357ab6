//! The meaning of a [`Comparison`] on JSON values (documented on the type), and the times at
//! which a comparison against `now ± d` can flip without any new event.

use super::ast::{Comparison, Literal, TimeRef};
use chrono::{DateTime, NaiveDate};
use serde_json::Value;
use std::cmp::Ordering;

/// Whether `cmp` holds for any of `values` (one per channel, device or group; a single
/// absent value when there are none). `!=` is `not =` over the whole set, so
/// `utm source != "google"` means "no channel has source google".
pub fn holds_any<'a>(
    values: impl IntoIterator<Item = Option<&'a Value>>,
    cmp: &Comparison,
    now_ms: i64,
) -> bool {
    // Runs per condition per evaluation: no collecting (an empty set means one absent value).
    let mut seen = false;
    match cmp {
        Comparison::Ne { value } => {
            for v in values {
                if v.is_some_and(|v| equals(v, value, now_ms)) {
                    return false;
                }
            }
            true
        }
        _ => {
            for v in values {
                seen = true;
                if holds(v, cmp, now_ms) {
                    return true;
                }
            }
            !seen && holds(None, cmp, now_ms)
        }
    }
}

thread_local! {
    /// [`holds_any_str`]'s buffer, kept per thread: one per call was an allocation per UTM
    /// or device condition evaluated, the largest single source of them in
    /// `spoor bench audiences` once the states were inline.
    static STR_BUF: std::cell::RefCell<Value> = const { std::cell::RefCell::new(Value::String(String::new())) };
}

/// [`holds_any`] over strings (one UTM or device field per channel / device): each is
/// compared as a JSON string through one reused buffer, not a `Value` allocated per
/// string per evaluation (device and UTM audiences are evaluated on most events).
pub fn holds_any_str<'a>(
    values: impl IntoIterator<Item = Option<&'a str>>,
    cmp: &Comparison,
    now_ms: i64,
) -> bool {
    STR_BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => holds_any_str_in(&mut buf, values, cmp, now_ms),
        // Not reentrant today; should it become so, a fresh buffer is still correct.
        Err(_) => holds_any_str_in(&mut Value::String(String::new()), values, cmp, now_ms),
    })
}

fn holds_any_str_in<'a>(
    buf: &mut Value,
    values: impl IntoIterator<Item = Option<&'a str>>,
    cmp: &Comparison,
    now_ms: i64,
) -> bool {
    let mut seen = false;
    for s in values {
        seen = true;
        let v = match s {
            Some(s) => {
                if let Value::String(b) = &mut *buf {
                    b.clear();
                    b.push_str(s);
                }
                Some(&*buf)
            }
            None => None,
        };
        match cmp {
            Comparison::Ne { value } => {
                if v.is_some_and(|v| equals(v, value, now_ms)) {
                    return false;
                }
            }
            _ => {
                if holds(v, cmp, now_ms) {
                    return true;
                }
            }
        }
    }
    match cmp {
        Comparison::Ne { .. } => true,
        _ => !seen && holds(None, cmp, now_ms),
    }
}

/// Whether `cmp` holds for one value (`None` = absent).
pub fn holds(v: Option<&Value>, cmp: &Comparison, now_ms: i64) -> bool {
    let v = v.filter(|v| !v.is_null());
    match cmp {
        Comparison::IsEmpty => match v {
            None => true,
            Some(Value::String(s)) => s.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            Some(Value::Object(o)) => o.is_empty(),
            Some(_) => false,
        },
        Comparison::Exists => v.is_some(),
        Comparison::Ne { value } => !v.is_some_and(|v| equals(v, value, now_ms)),
        _ => {
            let Some(v) = v else { return false };
            match cmp {
                Comparison::Eq { value } => equals(v, value, now_ms),
                Comparison::Lt { value } => order(v, value, now_ms) == Some(Ordering::Less),
                Comparison::Le { value } => {
                    matches!(
                        order(v, value, now_ms),
                        Some(Ordering::Less | Ordering::Equal)
                    )
                }
                Comparison::Gt { value } => order(v, value, now_ms) == Some(Ordering::Greater),
                Comparison::Ge { value } => matches!(
                    order(v, value, now_ms),
                    Some(Ordering::Greater | Ordering::Equal)
                ),
                Comparison::Contains { value } => match (v, value) {
                    (Value::String(s), Literal::String(needle)) => s.contains(needle.as_str()),
                    (Value::Array(items), lit) => items.iter().any(|i| equals(i, lit, now_ms)),
                    _ => false,
                },
                Comparison::StartsWith { value } => {
                    matches!(v, Value::String(s) if s.starts_with(value.as_str()))
                }
                Comparison::In { values } => values.iter().any(|l| equals(v, l, now_ms)),
                Comparison::Exists | Comparison::IsEmpty | Comparison::Ne { .. } => false,
            }
        }
    }
}

fn equals(v: &Value, lit: &Literal, now_ms: i64) -> bool {
    match (v, lit) {
        (Value::Number(n), Literal::Number(x)) => n.as_f64() == Some(*x),
        (Value::String(s), Literal::String(x)) => s == x,
        (Value::Bool(b), Literal::Bool(x)) => b == x,
        (v, Literal::Time(t)) => as_time(v) == Some(t.at(now_ms)),
        _ => false,
    }
}

fn order(v: &Value, lit: &Literal, now_ms: i64) -> Option<Ordering> {
    match (v, lit) {
        (Value::Number(n), Literal::Number(x)) => n.as_f64()?.partial_cmp(x),
        (Value::String(s), Literal::String(x)) => Some(s.as_str().cmp(x.as_str())),
        (v, Literal::Time(t)) => Some(as_time(v)?.cmp(&t.at(now_ms))),
        _ => None,
    }
}

/// Reads a value as a time: a number is ms since the epoch, a string RFC 3339 or a
/// `YYYY-MM-DD` date (midnight UTC).
pub fn as_time(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => {
            let f = n.as_f64()?;
            (f.is_finite() && f.abs() < 9.0e15).then_some(f as i64)
        }
        Value::String(s) => parse_date(s),
        _ => None,
    }
}

/// Parses an RFC 3339 time or a `YYYY-MM-DD` date into ms since the epoch.
pub fn parse_date(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.timestamp_millis());
    }
    let d = NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()?;
    Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis())
}

/// The earliest time after `now_ms` at which `cmp` may flip for these values with no other
/// change: only comparisons against `now ± d` move by themselves, and they flip where
/// `now + d` reaches a value's time (at `t - d` or one ms later, depending on the operator).
pub fn next_flip<'a>(
    values: impl IntoIterator<Item = Option<&'a Value>>,
    cmp: &Comparison,
    now_ms: i64,
) -> Option<i64> {
    let offsets: Vec<i64> = literals(cmp)
        .iter()
        .filter_map(|l| match l {
            Literal::Time(TimeRef::Now(off)) => Some(*off),
            _ => None,
        })
        .collect();
    if offsets.is_empty() {
        return None;
    }
    let mut best: Option<i64> = None;
    let mut consider = |t: i64| {
        for off in &offsets {
            let edge = t.saturating_sub(*off);
            for c in [edge, edge.saturating_add(1)] {
                if c > now_ms && best.is_none_or(|b| c < b) {
                    best = Some(c);
                }
            }
        }
    };
    for v in values.into_iter().flatten() {
        match v {
            Value::Array(items) => items.iter().filter_map(as_time).for_each(&mut consider),
            v => {
                if let Some(t) = as_time(v) {
                    consider(t)
                }
            }
        }
    }
    best
}

/// Whether a comparison's outcome can change with time alone (it compares with a time
/// relative to now). Only those need [`next_flip`]; asking first spares building the
/// compared values for every other condition on every evaluation.
pub fn depends_on_now(cmp: &Comparison) -> bool {
    literals(cmp)
        .iter()
        .any(|l| matches!(l, Literal::Time(TimeRef::Now(_))))
}

/// The literals a comparison compares with (a slice: asked per evaluation, so no boxing).
fn literals(cmp: &Comparison) -> &[Literal] {
    match cmp {
        Comparison::Eq { value }
        | Comparison::Ne { value }
        | Comparison::Lt { value }
        | Comparison::Le { value }
        | Comparison::Gt { value }
        | Comparison::Ge { value }
        | Comparison::Contains { value } => std::slice::from_ref(value),
        Comparison::In { values } => values,
        Comparison::StartsWith { .. } | Comparison::Exists | Comparison::IsEmpty => &[],
    }
}
