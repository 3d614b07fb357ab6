//! A person's consent: the current value per purpose and the recent history of statements.

use super::{ConsentValue, ConsentVia, Statement};
use crate::profile::EventView;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Statements kept per purpose: the latest ones by `(time, seq)`. Consent platforms repeat
/// the whole consent object on every event, so an unbounded history would grow a profile
/// with every page view. The current value is kept apart and never dropped.
pub const HISTORY_PER_PURPOSE: usize = 20;

/// One statement, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub purpose: String,
    pub value: ConsentValue,
    /// Event time of the statement.
    pub at_ms: i64,
    /// Log position of the event; breaks time ties.
    pub seq: u64,
    pub via: ConsentVia,
    #[serde(rename = "source")]
    pub source_id: String,
    pub message_id: String,
}

impl ConsentRecord {
    fn stamp(&self) -> (i64, u64) {
        (self.at_ms, self.seq)
    }
    fn order(&self) -> (i64, u64, &str) {
        (self.at_ms, self.seq, &self.purpose)
    }
}

/// A person's consent. A join: [`Consent::absorb`] is commutative, associative and
/// idempotent, and applying statements is order-independent, so the state depends only on
/// the set of events — the property the processor's rebuild guarantee needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Purpose → the winning statement (greatest `(at_ms, seq)`).
    #[serde(default)]
    pub current: BTreeMap<String, ConsentRecord>,
    /// Statements ordered by `(at_ms, seq, purpose)`, the latest [`HISTORY_PER_PURPOSE`] per
    /// purpose.
    #[serde(default)]
    pub history: Vec<ConsentRecord>,
}

impl Consent {
    pub fn is_empty(&self) -> bool {
        self.current.is_empty() && self.history.is_empty()
    }

    /// Records what one event stated.
    pub fn apply(&mut self, ev: &EventView, statements: &[Statement]) {
        if statements.is_empty() {
            return;
        }
        let records = statements.iter().map(|s| ConsentRecord {
            purpose: s.purpose.clone(),
            value: s.value,
            at_ms: ev.timestamp_ms,
            seq: ev.seq,
            via: s.via,
            source_id: ev.source_id.to_string(),
            message_id: ev.message_id.to_string(),
        });
        // The common case — the event is newer than everything kept — appends in order and
        // drops at most the oldest statement per purpose, which is what `absorb` computes.
        let (first_at, first_seq) = (ev.timestamp_ms, ev.seq);
        let newest = self
            .history
            .last()
            .is_none_or(|l| (l.at_ms, l.seq) < (first_at, first_seq));
        if !newest {
            self.absorb(Consent::from_records(records));
            return;
        }
        for r in records {
            keep_newer(&mut self.current, &r);
            let kept = self.history_of(&r.purpose).count();
            if kept >= HISTORY_PER_PURPOSE {
                if let Some(i) = self.history.iter().position(|x| x.purpose == r.purpose) {
                    self.history.remove(i);
                }
            }
            self.history.push(r);
        }
    }

    fn from_records(records: impl Iterator<Item = ConsentRecord>) -> Consent {
        let mut c = Consent::default();
        for r in records {
            keep_newer(&mut c.current, &r);
            c.history.push(r);
        }
        c.history.sort_by(|a, b| a.order().cmp(&b.order()));
        c
    }

    /// Joins another person's consent into this one (identity merge).
    pub fn absorb(&mut self, other: Consent) {
        for r in other.current.values() {
            keep_newer(&mut self.current, r);
        }
        if other.history.is_empty() {
            return;
        }
        let mut all = std::mem::take(&mut self.history);
        all.extend(other.history);
        all.sort_by(|a, b| a.order().cmp(&b.order()));
        // The same statement in both (an event applied to each side) is kept once.
        all.dedup_by(|a, b| a.order() == b.order());
        // Keep the latest HISTORY_PER_PURPOSE per purpose: count from the end.
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let mut keep = vec![false; all.len()];
        for (i, r) in all.iter().enumerate().rev() {
            let n = seen.entry(r.purpose.clone()).or_insert(0);
            *n += 1;
            keep[i] = *n <= HISTORY_PER_PURPOSE;
        }
        let mut k = keep.into_iter();
        all.retain(|_| k.next().unwrap_or(false));
        self.history = all;
    }

    /// The history of one purpose, oldest first.
    pub fn history_of<'a>(&'a self, purpose: &'a str) -> impl Iterator<Item = &'a ConsentRecord> {
        self.history.iter().filter(move |r| r.purpose == purpose)
    }
}

fn keep_newer(current: &mut BTreeMap<String, ConsentRecord>, r: &ConsentRecord) {
    match current.get_mut(&r.purpose) {
        Some(old) if old.stamp() >= r.stamp() => {}
        Some(old) => *old = r.clone(),
        None => {
            current.insert(r.purpose.clone(), r.clone());
        }
    }
}
