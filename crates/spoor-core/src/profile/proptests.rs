//! Property tests for the guarantee the processor relies on: a profile is a function of the
//! *set* of its events. Small value pools make timestamps tie, keys collide and removals race
//! with sets, which is where an order-dependent rule would show.

use super::tests::payload;
use super::*;
use crate::identity::ProfileId;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const KINDS: [&str; 6] = ["identify", "track", "page", "screen", "group", "alias"];

#[derive(Debug, Clone)]
enum Op {
    Set(u8),
    Nested(u8),
    Null,
    Unset,
}

#[derive(Debug, Clone)]
struct Spec {
    kind: usize,
    ts: i64,
    source: u8,
    utm: Option<(u8, u8, Option<u8>, u8)>,
    ua: Option<(u8, u8)>,
    group: u8,
    ops: Vec<(u8, Op)>,
    in_context: bool,
    /// (purpose index, granted, as a trait rather than Segment's consent object)
    consent: Vec<(u8, bool, bool)>,
}

const PURPOSES: [&str; 3] = ["analytics", "advertising", "email"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..4).prop_map(Op::Set),
        1 => (0u8..3).prop_map(Op::Nested),
        1 => Just(Op::Null),
        1 => Just(Op::Unset),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        0..KINDS.len(),
        100i64..112,
        0u8..3,
        proptest::option::of((0u8..2, 0u8..2, proptest::option::of(0u8..2), 0u8..3)),
        proptest::option::of((0u8..3, 0u8..3)),
        0u8..3,
        proptest::collection::vec((0u8..5, op()), 0..4),
        any::<bool>(),
        proptest::collection::vec((0u8..3, any::<bool>(), any::<bool>()), 0..3),
    )
        .prop_map(
            |(kind, ts, source, utm, ua, group, ops, in_context, consent)| Spec {
                kind,
                ts,
                source,
                utm,
                ua,
                group,
                ops,
                in_context,
                consent,
            },
        )
}

/// The stored payload of one generated event (its seq is its index + 1).
fn render(i: usize, s: &Spec) -> Vec<u8> {
    let kind = KINDS[s.kind];
    let mut traits = Map::new();
    let mut unset = Vec::new();
    for (key, op) in &s.ops {
        let key = format!("k{key}");
        match op {
            Op::Set(v) => {
                traits.insert(key, json!(v));
            }
            Op::Nested(v) => {
                traits.insert(key, json!({"inner": v, "list": [v]}));
            }
            Op::Null => {
                traits.insert(key, Value::Null);
            }
            Op::Unset => unset.push(json!(key)),
        }
    }
    if !unset.is_empty() {
        traits.insert(UNSET_KEY.to_owned(), Value::Array(unset));
    }
    let mut prefs = Map::new();
    for (p, granted, as_trait) in &s.consent {
        let name = PURPOSES[*p as usize];
        if *as_trait {
            traits.insert(format!("consent.{name}"), json!(granted));
        } else {
            // Category ids differ in case from purposes; they match case-insensitively.
            prefs.insert(name.to_uppercase(), json!(granted));
        }
    }
    let mut msg = json!({"type": kind, "userId": "u", "event": "E", "previousId": "a",
                         "groupId": format!("g{}", s.group)});
    if s.in_context || kind != "identify" {
        msg["context"] = json!({ "traits": traits.clone() });
    }
    if !prefs.is_empty() {
        msg["context"]["consent"] = json!({ "categoryPreferences": prefs });
    }
    if !s.in_context && (kind == "identify" || kind == "group") {
        msg["traits"] = Value::Object(traits);
    }
    let mut extra = json!({ "source_id": format!("src_{}", s.source) });
    if let Some((src, med, camp, term)) = s.utm {
        let mut utm = json!({"source": format!("s{src}"), "medium": format!("m{med}"),
                             "term": format!("t{term}")});
        if let Some(c) = camp {
            utm["campaign"] = json!(format!("c{c}"));
        }
        extra["utm"] = utm;
    }
    if let Some((dev, ver)) = s.ua {
        let device_type = ["desktop", "mobile", "tablet"][dev as usize];
        extra["user_agent"] = json!({"device_type": device_type,
                                     "os": "OS", "browser_version": format!("{ver}")});
    }
    payload(kind, &format!("m{i}"), msg, extra)
}

fn apply_all<'a>(p: &mut Profile, g: &mut Group, events: impl IntoIterator<Item = &'a Ev>) {
    for (seq, ts, bytes) in events {
        let v = parse_event(*seq, *ts, bytes).expect("generated events parse");
        p.apply(&v);
        p.apply_consent(&v, &crate::consent::ConsentRules::default());
        g.apply(&v);
    }
}

type Ev = (u64, i64, Vec<u8>);

fn events(specs: &[Spec]) -> Vec<Ev> {
    specs
        .iter()
        .enumerate()
        .map(|(i, s)| (i as u64 + 1, s.ts, render(i, s)))
        .collect()
}

fn fresh(id: u64) -> (Profile, Group) {
    (Profile::new(ProfileId::from_seq(id)), Group::new("g1"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any split of a person's events into 2–3 profiles, each absorbed into another in any
    /// order (sequentially or nested), equals one profile of all the events.
    #[test]
    fn absorb_is_a_join(
        specs in proptest::collection::vec(spec(), 0..24),
        parts in 2usize..=3,
        assignment in proptest::collection::vec(0usize..3, 24),
        order in Just(vec![0usize, 1, 2]).prop_shuffle(),
        nested in any::<bool>(),
        within in any::<bool>(),
    ) {
        let evs = events(&specs);
        let (mut whole, mut whole_g) = fresh(1);
        apply_all(&mut whole, &mut whole_g, &evs);

        let mut split: Vec<(Profile, Group)> = (0..parts).map(|i| fresh(i as u64 + 1)).collect();
        for (i, e) in evs.iter().enumerate() {
            let part = &mut split[assignment[i] % parts];
            apply_all(&mut part.0, &mut part.1, [e]);
        }
        if within {
            // Also exercise apply order inside a part: reverse it.
            split = (0..parts).map(|i| fresh(i as u64 + 1)).collect();
            for (i, e) in evs.iter().enumerate().rev() {
                let part = &mut split[assignment[i] % parts];
                apply_all(&mut part.0, &mut part.1, [e]);
            }
        }
        let mut taken: Vec<Option<(Profile, Group)>> = split.into_iter().map(Some).collect();
        let mut seq: Vec<(Profile, Group)> = order
            .iter()
            .filter(|&&i| i < parts)
            .map(|&i| taken[i].take().expect("each part once"))
            .collect();
        let (mut acc, mut acc_g) = seq.remove(0);
        if nested && seq.len() == 2 {
            let (mut b, mut b_g) = seq.remove(0);
            let (c, c_g) = seq.remove(0);
            b.absorb(c);
            b_g.absorb(c_g);
            acc.absorb(b);
            acc_g.absorb(b_g);
        } else {
            for (p, g) in seq {
                acc.absorb(p);
                acc_g.absorb(g);
            }
        }
        let kept_id = acc.id;
        acc.id = whole.id;
        prop_assert_eq!(&acc, &whole);
        prop_assert_eq!(&acc_g, &whole_g);
        prop_assert!(order.contains(&(kept_id.raw() as usize - 1)));
    }

    /// Applying the same events in any order gives the same profile (traits included).
    #[test]
    fn apply_order_does_not_matter(
        specs in proptest::collection::vec(spec(), 0..24),
        perm_seed in proptest::collection::vec(any::<u32>(), 24),
    ) {
        let evs = events(&specs);
        let (mut in_order, mut g1) = fresh(1);
        apply_all(&mut in_order, &mut g1, &evs);

        let mut shuffled: Vec<&Ev> = evs.iter().collect();
        let mut keyed: Vec<(u32, &Ev)> =
            shuffled.drain(..).zip(&perm_seed).map(|(e, k)| (*k, e)).collect();
        keyed.sort_by_key(|(k, e)| (*k, e.0));
        let (mut any_order, mut g2) = fresh(1);
        apply_all(&mut any_order, &mut g2, keyed.iter().map(|(_, e)| *e));

        prop_assert_eq!(in_order.trait_values(), any_order.trait_values());
        prop_assert_eq!(in_order.event_count, evs.len() as u64);
        if let Some(first) = evs.iter().map(|e| e.1).min() {
            prop_assert_eq!(in_order.first_seen_ms, first);
        }
        prop_assert_eq!(&in_order, &any_order);
        prop_assert_eq!(&g1, &g2);
    }

    /// Absorbing an empty profile changes nothing, and serde round-trips exactly.
    #[test]
    fn empty_is_neutral_and_serde_round_trips(specs in proptest::collection::vec(spec(), 0..12)) {
        let evs = events(&specs);
        let (mut p, mut g) = fresh(1);
        apply_all(&mut p, &mut g, &evs);
        let before = p.clone();
        p.absorb(Profile::new(ProfileId::from_seq(9)));
        prop_assert_eq!(&p, &before);
        let mut e = Profile::new(ProfileId::from_seq(1));
        e.absorb(before.clone());
        prop_assert_eq!(&e, &before);
        let back: Profile = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        prop_assert_eq!(&back, &p);
    }
}
