//! The proof of exactness: a differential test of incremental membership against brute
//! force over all events so far, with out-of-order events, identity merges at random
//! points, time passing without events and jumps to `next_change`; and text ⇄ JSON
//! round trips of random rules.

use super::gen::{self, DURATIONS, OFFSETS};
use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Every time at which a brute-force evaluation can change by time alone, given the events:
/// windows end at `ts + W`, `now ± d` comparisons flip at `t − d` (or 1 ms later), deadlines
/// pass at `ts + T + 1`. Between two of these, membership is constant.
fn change_points(events: &[EventFact], after: i64, before: i64) -> Vec<i64> {
    let mut times: Vec<i64> = events.iter().map(|e| e.ts_ms).collect();
    times.extend(gen::fact_times());
    times.extend([
        gen::T0 + gen::D,
        gen::T0 - 3 * gen::D,
        gen::T0 + 1500,
        gen::T0,
    ]);
    let mut out = Vec::new();
    for t in times {
        for d in DURATIONS {
            out.extend([t + d, t + d + 1]);
        }
        for o in OFFSETS {
            out.extend([t - o, t - o + 1]);
        }
    }
    out.retain(|c| *c > after && *c < before);
    out.sort_unstable();
    out.dedup();
    out
}

/// Checks one state against brute force at `now`, and that its `next_change` is never later
/// than a real change.
fn check(
    c: &CompiledRule,
    st: &AudienceState,
    events: &[EventFact],
    now: i64,
    deep: bool,
) -> Result<(), TestCaseError> {
    let facts = gen::facts();
    let brute = evaluate(&c.rule, &facts, events, now);
    prop_assert_eq!(
        st.evaluate(c, &facts, now),
        brute,
        "at {} rule {}",
        now,
        c.rule
    );
    let next = st.next_change(c, &facts, now);
    if let Some(t) = next {
        prop_assert!(t > now);
    }
    if deep {
        let until = next.unwrap_or(now + 3650 * gen::D);
        for p in change_points(events, now, until) {
            prop_assert_eq!(
                evaluate(&c.rule, &facts, events, p),
                brute,
                "membership changed at {} before next_change {:?} (now {}) rule {}",
                p,
                next,
                now,
                c.rule
            );
        }
    }
    Ok(())
}

fn differential(
    rule: Rule,
    events: Vec<EventFact>,
    split: Vec<bool>,
    merge_at: usize,
    steps: Vec<(u8, i64)>,
) -> Result<(), TestCaseError> {
    let c = compile(rule);
    let mut a = AudienceState::new(&c);
    let mut b = AudienceState::new(&c);
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    let mut merged = false;
    let mut now = gen::T0;
    for (i, e) in events.iter().enumerate() {
        if i == merge_at {
            a.merge(&c, std::mem::take(&mut b));
            ev_a.append(&mut ev_b);
            merged = true;
        }
        if merged || split[i] {
            a.apply(&c, e);
            ev_a.push(e.clone());
        } else {
            b.apply(&c, e);
            ev_b.push(e.clone());
        }
        now = now.max(e.ts_ms);
        let (kind, gap) = steps[i];
        match kind {
            0 => continue,
            1 => now += gap,
            2 => {
                if let Some(t) = a.next_change(&c, &gen::facts(), now) {
                    now = t;
                }
            }
            _ => {}
        }
        let deep = kind >= 3;
        check(&c, &a, &ev_a, now, deep)?;
        if !merged {
            check(&c, &b, &ev_b, now, deep)?;
        }
    }
    if !merged {
        a.merge(&c, b);
        ev_a.append(&mut ev_b);
    }
    // Time passing with no events: follow the timers to the end.
    for _ in 0..8 {
        check(&c, &a, &ev_a, now, true)?;
        match a.next_change(&c, &gen::facts(), now) {
            Some(t) => now = t,
            None => break,
        }
    }
    Ok(())
}

/// Nested audiences: a set of three random rules (referring to each other where that makes
/// no cycle) evaluated in order from incremental states equals brute force, and the set's
/// single timer is never late.
fn nested_differential(
    defs: BTreeMap<String, Rule>,
    events: Vec<EventFact>,
    split: Vec<bool>,
    merge_at: usize,
    steps: Vec<(u8, i64)>,
) -> Result<(), TestCaseError> {
    let Ok(set) = AudienceSet::new(defs) else {
        return Ok(());
    };
    let facts = gen::facts();
    let new_states = || -> BTreeMap<String, AudienceState> {
        set.order()
            .iter()
            .filter_map(|n| Some((n.clone(), AudienceState::new(set.get(n)?))))
            .collect()
    };
    let (mut a, mut b) = (new_states(), new_states());
    let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
    let mut merged = false;
    let mut now = gen::T0;
    let check = |states: &BTreeMap<String, AudienceState>,
                 evs: &[EventFact],
                 now: i64|
     -> Result<(), TestCaseError> {
        let brute = set.evaluate_all_brute(&facts, evs, now);
        prop_assert_eq!(set.evaluate_all(states, &facts, now), brute.clone());
        let next = set.next_change_all(states, &facts, now);
        let until = next.unwrap_or(now + 3650 * gen::D);
        for p in change_points(evs, now, until) {
            prop_assert_eq!(
                set.evaluate_all_brute(&facts, evs, p),
                brute.clone(),
                "at {}",
                p
            );
        }
        Ok(())
    };
    for (i, e) in events.iter().enumerate() {
        if i == merge_at {
            for (n, s) in std::mem::take(&mut b) {
                if let (Some(mine), Some(rule)) = (a.get_mut(&n), set.get(&n)) {
                    mine.merge(rule, s);
                }
            }
            ev_a.append(&mut ev_b);
            merged = true;
        }
        let (states, evs) = if merged || split[i] {
            (&mut a, &mut ev_a)
        } else {
            (&mut b, &mut ev_b)
        };
        for (n, s) in states.iter_mut() {
            if let Some(rule) = set.get(n) {
                s.apply(rule, e);
            }
        }
        evs.push(e.clone());
        now = now.max(e.ts_ms);
        let (kind, gap) = steps[i];
        match kind {
            0 => continue,
            1 => now += gap,
            2 => {
                if let Some(t) = set.next_change_all(&a, &facts, now) {
                    now = t;
                }
            }
            _ => {}
        }
        check(&a, &ev_a, now)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_membership_equals_brute_force(
        rule in gen::rule(),
        events in gen::events(36),
        split in prop::collection::vec(any::<bool>(), 36),
        merge_at in 0usize..40,
        steps in prop::collection::vec((0u8..5, 0i64..2 * gen::D), 36),
    ) {
        differential(rule, events, split, merge_at, steps)?;
    }

    /// The same over event conditions only, where merges and late events matter most.
    #[test]
    fn incremental_event_conditions_equal_brute_force(
        rule in gen::event_rule(),
        events in gen::events(24),
        split in prop::collection::vec(any::<bool>(), 24),
        merge_at in 0usize..24,
        steps in prop::collection::vec((0u8..5, 0i64..2 * gen::D), 24),
    ) {
        differential(rule, events, split, merge_at, steps)?;
    }

    #[test]
    fn nested_audiences_equal_brute_force(
        rules in prop::collection::vec(gen::rule(), 3),
        events in gen::events(24),
        split in prop::collection::vec(any::<bool>(), 24),
        merge_at in 0usize..24,
        steps in prop::collection::vec((0u8..5, 0i64..2 * gen::D), 24),
    ) {
        let defs: BTreeMap<String, Rule> = ["buyers", "vip", "top"]
            .iter()
            .map(|n| (*n).to_owned())
            .zip(rules)
            .collect();
        nested_differential(defs, events, split, merge_at, steps)?;
    }

    /// Any text gives a rule or a positioned error, never a panic; errors point inside it.
    #[test]
    fn parser_never_panics(words in prop::collection::vec(prop::sample::select(vec![
        "trait", "computed", "group", "utm", "device", "in", "audience", "performed", "first",
        "last", "then", "and", "or", "not", "followed", "by", "within", "at", "least", "most",
        "exactly", "times", "where", "before", "after", "now", "date", "any", "event", "page",
        "source", "type", "x", "=", "!=", "<=", "(", ")", "[", "]", ",", "-", "+", "7d", "3",
        "\"A\"", "\"2024-01-01\"", "exists", "is", "empty", "contains", "starts", "with",
        "\"", "é", "#",
    ]), 0..16), raw in ".{0,40}") {
        for text in [words.join(" "), raw] {
            match parse(&text) {
                Ok(r) => prop_assert_eq!(parse(&r.to_string()), Ok(r)),
                Err(e) => prop_assert!(e.offset <= text.len() && e.line >= 1 && e.column >= 1),
            }
        }
    }

    #[test]
    fn text_and_json_round_trip(rule in gen::rule()) {
        let text = rule.to_string();
        let parsed = parse(&text);
        prop_assert_eq!(parsed.as_ref(), Ok(&rule), "text: {}", text);
        let json = to_json(&rule);
        prop_assert_eq!(from_json(&json, None), Ok(rule.clone()), "json: {}", json);
        let state = AudienceState::new(&compile(rule));
        let back: Result<AudienceState, _> =
            serde_json::from_str(&serde_json::to_string(&state).unwrap_or_default());
        prop_assert_eq!(back.ok(), Some(state));
    }
}
