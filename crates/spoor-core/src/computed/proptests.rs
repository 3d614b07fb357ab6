//! Differential test: incremental computed-trait values equal brute force over all events so
//! far — with late events, identity merges at random points, pruning, time passing with no
//! events and jumps to `next_change`, which must never be later than a real change.

use super::*;
use crate::audience::gen;
use proptest::prelude::*;

/// Where a windowed value can change by time alone: an event leaving the window.
fn change_points(def: &ComputedDef, events: &[EventFact], after: i64, before: i64) -> Vec<i64> {
    let Some(w) = def.window else {
        return Vec::new();
    };
    let mut out: Vec<i64> = events
        .iter()
        .map(|e| e.ts_ms + w.ms())
        .filter(|c| *c > after && *c < before)
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn check(
    def: &ComputedDef,
    st: &mut ComputedState,
    events: &[EventFact],
    now: i64,
    deep: bool,
) -> Result<(), TestCaseError> {
    st.prune(def, now);
    let brute = brute_force(def, events, now);
    prop_assert_eq!(
        st.value(def, now),
        brute.clone(),
        "at {} def {:?}",
        now,
        def
    );
    let next = st.next_change(def, now);
    if let Some(t) = next {
        prop_assert!(t > now);
    }
    if deep {
        let until = next.unwrap_or(now + 3650 * gen::D);
        for p in change_points(def, events, now, until) {
            prop_assert_eq!(
                brute_force(def, events, p),
                brute.clone(),
                "value changed at {} before next_change {:?} (now {})",
                p,
                next,
                now
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn incremental_value_equals_brute_force(
        def in gen::computed_def(),
        events in gen::events(36),
        split in prop::collection::vec(any::<bool>(), 36),
        merge_at in 0usize..40,
        steps in prop::collection::vec((0u8..5, 0i64..2 * gen::D), 36),
    ) {
        prop_assert!(def.validate().is_ok());
        let mut a = ComputedState::new(&def);
        let mut b = ComputedState::new(&def);
        let (mut ev_a, mut ev_b) = (Vec::new(), Vec::new());
        let mut merged = false;
        let mut now = gen::T0;
        for (i, e) in events.iter().enumerate() {
            if i == merge_at {
                let other = std::mem::replace(&mut b, ComputedState::new(&def));
                a.merge(&def, other);
                ev_a.append(&mut ev_b);
                merged = true;
            }
            if merged || split[i] {
                a.apply(&def, e);
                ev_a.push(e.clone());
            } else {
                b.apply(&def, e);
                ev_b.push(e.clone());
            }
            now = now.max(e.ts_ms);
            let (kind, gap) = steps[i];
            match kind {
                0 => continue,
                1 => now += gap,
                2 => {
                    if let Some(t) = a.next_change(&def, now) {
                        now = t;
                    }
                }
                _ => {}
            }
            check(&def, &mut a, &ev_a, now, kind >= 3)?;
            if !merged {
                check(&def, &mut b, &ev_b, now, kind >= 3)?;
            }
        }
        if !merged {
            a.merge(&def, b);
            ev_a.append(&mut ev_b);
        }
        for _ in 0..8 {
            check(&def, &mut a, &ev_a, now, true)?;
            match a.next_change(&def, now) {
                Some(t) => now = t,
                None => break,
            }
        }
        // The state survives persistence.
        let back: Result<ComputedState, _> =
            serde_json::from_str(&serde_json::to_string(&a).unwrap_or_default());
        prop_assert_eq!(back.ok(), Some(a));
    }

    #[test]
    fn definitions_round_trip_json(def in gen::computed_def()) {
        let json = serde_json::to_string(&def).unwrap_or_default();
        prop_assert_eq!(ComputedDef::from_json(&json), Ok(def));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// `ComputedSet` looks only at the definitions naming the event (or none): it must
    /// touch exactly the definitions whose selector matches, and build the same states as
    /// applying every definition to every event.
    #[test]
    fn the_event_name_index_misses_no_definition(
        defs in prop::collection::vec(gen::computed_def(), 1..9),
        events in gen::events(24),
    ) {
        // Names in index order (`t0` … `t8` sort as their numbers).
        let defs: Vec<ComputedDef> = defs
            .into_iter()
            .enumerate()
            .map(|(i, d)| ComputedDef { name: format!("t{i}"), ..d })
            .collect();
        let set = ComputedSet::new(defs.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut states = ComputedStates::new();
        let mut each = ComputedStates::new();
        for e in &events {
            let want: Vec<usize> = (0..defs.len()).filter(|i| defs[*i].matters(e)).collect();
            prop_assert_eq!(set.apply_at(&mut states, e), want);
            for d in &defs {
                if d.matters(e) {
                    crate::audience::state_mut(&mut each, &d.name.as_str().into(), || {
                        ComputedState::new(d)
                    })
                        .apply(d, e);
                }
            }
        }
        prop_assert_eq!(states, each);
    }
}
