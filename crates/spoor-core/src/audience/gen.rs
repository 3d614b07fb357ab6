//! Proptest generators shared by the audience and computed-trait property tests: event
//! streams with out-of-order arrivals, rules covering every construct, fixed profile facts.

use super::*;
use crate::computed::{Aggregation, ComputedDef};
use crate::event::EventType;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

pub const M: i64 = 60_000;
pub const H: i64 = 60 * M;
pub const D: i64 = 24 * H;
pub const T0: i64 = 1_700_000_000_000;

/// Every window / sequence duration the generators use (the change-point oracle needs them).
pub const DURATIONS: [i64; 5] = [M, H, 2 * H, D, 3 * D];
/// Every `now ± d` offset the generators use.
pub const OFFSETS: [i64; 5] = [0, -H, -D, H, -3 * D];

pub fn facts() -> ProfileFacts {
    let obj = |v: Value| v.as_object().cloned().unwrap_or_default();
    ProfileFacts {
        traits: obj(json!({"plan": "pro", "age": 30, "signup_at": T0 + D,
            "renewal": "2023-11-16T00:00:00Z", "tags": ["a", "b"], "First Name": "Ann",
            "and": 1, "vip": true})),
        computed: obj(json!({"ltv": 12.5, "last_seen": T0 + 2 * D})),
        groups: vec![
            obj(json!({"plan": "enterprise", "seats": 10})),
            obj(json!({"plan": "free"})),
        ],
        channels: vec![ChannelFact {
            source: Some("google".into()),
            medium: Some("cpc".into()),
            ..ChannelFact::default()
        }],
        devices: vec![DeviceFact {
            device_type: "mobile".into(),
            os: Some("iOS".into()),
            browser: None,
        }],
        audiences: ["buyers".to_owned()].into_iter().collect(),
        consents: ["email".to_owned()].into_iter().collect(),
    }
}

/// Times found in the facts (for the change-point oracle).
pub fn fact_times() -> Vec<i64> {
    let f = facts();
    let mut out = Vec::new();
    let maps = [&f.traits, &f.computed]
        .into_iter()
        .chain(f.groups.iter())
        .collect::<Vec<&Map<String, Value>>>();
    for m in maps {
        for v in m.values() {
            out.extend(as_time(v));
            if let Value::Array(a) = v {
                out.extend(a.iter().filter_map(as_time));
            }
        }
    }
    out
}

pub fn duration() -> impl Strategy<Value = Duration> {
    prop::sample::select(DURATIONS.to_vec()).prop_map(|d| Duration(d as u64))
}

fn plain_literal() -> impl Strategy<Value = Literal> {
    prop_oneof![
        (-2i32..40).prop_map(|n| Literal::Number(f64::from(n) / 2.0)),
        prop::sample::select(vec![
            "pro",
            "free",
            "enterprise",
            "a",
            "b",
            "google",
            "mobile",
            "iOS",
            "Ann",
            "",
            "p",
            "x y \"q\""
        ])
        .prop_map(|s| Literal::String(s.to_owned())),
        any::<bool>().prop_map(Literal::Bool),
        prop::sample::select(vec![T0, T0 + D, T0 - 3 * D, T0 + 1500])
            .prop_map(|t| Literal::Time(TimeRef::Date(t))),
    ]
}

fn literal(allow_now: bool) -> BoxedStrategy<Literal> {
    if allow_now {
        prop_oneof![
            3 => plain_literal(),
            1 => prop::sample::select(OFFSETS.to_vec()).prop_map(|o| Literal::Time(TimeRef::Now(o))),
        ]
        .boxed()
    } else {
        plain_literal().boxed()
    }
}

pub fn comparison(allow_now: bool) -> impl Strategy<Value = Comparison> {
    let l = literal(allow_now);
    prop_oneof![
        l.clone().prop_map(|value| Comparison::Eq { value }),
        l.clone().prop_map(|value| Comparison::Ne { value }),
        l.clone().prop_map(|value| Comparison::Lt { value }),
        l.clone().prop_map(|value| Comparison::Le { value }),
        l.clone().prop_map(|value| Comparison::Gt { value }),
        l.clone().prop_map(|value| Comparison::Ge { value }),
        l.clone().prop_map(|value| Comparison::Contains { value }),
        prop::sample::select(vec!["p", "A", "", "g"]).prop_map(|s| Comparison::StartsWith {
            value: s.to_owned()
        }),
        prop::collection::vec(l, 0..3).prop_map(|values| Comparison::In { values }),
        Just(Comparison::Exists),
        Just(Comparison::IsEmpty),
    ]
}

fn prop_cond() -> impl Strategy<Value = PropCond> {
    let leaf = (
        prop::sample::select(vec!["x", "cat", "n.k", "tags", "not"]),
        comparison(false),
    )
        .prop_map(|(p, cmp)| PropCond::Property {
            path: p.to_owned(),
            cmp,
        });
    leaf.prop_recursive(2, 6, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(|all| PropCond::And { all }),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|any| PropCond::Or { any }),
            inner.prop_map(|c| PropCond::Not { cond: Box::new(c) }),
        ]
    })
}

pub fn selector() -> impl Strategy<Value = EventSelector> {
    (
        prop::sample::select(vec![None, Some(EventType::Track), Some(EventType::Page)]),
        prop::sample::select(vec![None, Some("A"), Some("B"), Some("C")]),
        prop::option::weighted(0.3, prop_cond()),
    )
        .prop_map(|(kind, name, filter)| EventSelector {
            kind,
            name: name.map(str::to_owned),
            filter,
        })
}

fn count_op() -> impl Strategy<Value = CountOp> {
    prop_oneof![
        (0u32..4).prop_map(CountOp::AtLeast),
        (0u32..4).prop_map(CountOp::AtMost),
        (0u32..4).prop_map(CountOp::Exactly),
    ]
}

fn leaf() -> impl Strategy<Value = Rule> {
    let path = prop::sample::select(vec![
        "plan",
        "age",
        "signup_at",
        "renewal",
        "tags",
        "First Name",
        "and",
        "vip",
        "missing",
        "tags.0",
    ]);
    prop_oneof![
        1 => (path, comparison(true)).prop_map(|(p, cmp)| Rule::Trait { path: p.to_owned(), cmp }),
        1 => (prop::sample::select(vec!["ltv", "last_seen", "none"]), comparison(true))
            .prop_map(|(n, cmp)| Rule::Computed { name: n.to_owned(), cmp }),
        1 => (prop::sample::select(vec!["plan", "seats"]), comparison(true))
            .prop_map(|(p, cmp)| Rule::GroupTrait { path: p.to_owned(), cmp }),
        1 => (
            prop::sample::select(vec![UtmField::Source, UtmField::Medium, UtmField::Campaign,
                UtmField::Content, UtmField::Term]),
            comparison(true)
        )
            .prop_map(|(field, cmp)| Rule::Utm { field, cmp }),
        1 => (prop::sample::select(vec![DeviceField::Type, DeviceField::Os, DeviceField::Browser]),
            comparison(true))
            .prop_map(|(field, cmp)| Rule::Device { field, cmp }),
        1 => prop::sample::select(vec!["buyers", "vip"])
            .prop_map(|n| Rule::InAudience { name: n.to_owned() }),
        1 => prop::sample::select(vec!["advertising", "email"])
            .prop_map(|p| Rule::Consented { purpose: p.to_owned() }),
        4 => (selector(), count_op(), prop::option::of(duration()))
            .prop_map(|(event, count, within)| Rule::Performed { event, count, within }),
        2 => (
            prop::sample::select(vec![Which::First, Which::Last]),
            selector(),
            prop::sample::select(vec![Order::Before, Order::After]),
            prop_oneof![
                prop::sample::select(OFFSETS.to_vec()).prop_map(TimeRef::Now),
                Just(TimeRef::Date(T0 + D)),
            ],
        )
            .prop_map(|(which, event, order, time)| Rule::FirstLast { which, event, order, time }),
        2 => (selector(), selector(), duration())
            .prop_map(|(first, then, within)| Rule::Then { first, then, within }),
        2 => (selector(), selector(), duration())
            .prop_map(|(first, then, within)| Rule::NotFollowed { first, then, within }),
    ]
}

/// Simple selectors (a name, sometimes a type or a filter): many events match, so
/// sequences and counts are exercised hard.
fn simple_selector() -> impl Strategy<Value = EventSelector> {
    (
        prop::sample::select(vec!["A", "B", "C"]),
        prop::option::weighted(0.2, prop_cond()),
    )
        .prop_map(|(name, filter)| EventSelector {
            kind: None,
            name: Some(name.to_owned()),
            filter,
        })
}

/// Event conditions only, with simple selectors, optionally negated or paired.
pub fn event_rule() -> impl Strategy<Value = Rule> {
    let leaf = prop_oneof![
        1 => (simple_selector(), count_op(), prop::option::of(duration()))
            .prop_map(|(event, count, within)| Rule::Performed { event, count, within }),
        1 => (
            prop::sample::select(vec![Which::First, Which::Last]),
            simple_selector(),
            prop::sample::select(vec![Order::Before, Order::After]),
            prop::sample::select(OFFSETS.to_vec()).prop_map(TimeRef::Now),
        )
            .prop_map(|(which, event, order, time)| Rule::FirstLast { which, event, order, time }),
        2 => (simple_selector(), simple_selector(), duration())
            .prop_map(|(first, then, within)| Rule::Then { first, then, within }),
        2 => (simple_selector(), simple_selector(), duration())
            .prop_map(|(first, then, within)| Rule::NotFollowed { first, then, within }),
    ];
    leaf.prop_recursive(1, 3, 2, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..3).prop_map(|any| Rule::Or { any }),
            inner.prop_map(|r| Rule::Not { rule: Box::new(r) }),
        ]
    })
}

/// Rules over every construct, nested up to three levels.
pub fn rule() -> impl Strategy<Value = Rule> {
    leaf().prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 2..4).prop_map(|all| Rule::And { all }),
            prop::collection::vec(inner.clone(), 2..4).prop_map(|any| Rule::Or { any }),
            inner.prop_map(|r| Rule::Not { rule: Box::new(r) }),
        ]
    })
}

/// Computed trait definitions over every aggregation, windowed or not.
pub fn computed_def() -> impl Strategy<Value = ComputedDef> {
    let agg = prop_oneof![
        Just(Aggregation::Count),
        Just(Aggregation::Sum),
        Just(Aggregation::Avg),
        Just(Aggregation::Min),
        Just(Aggregation::Max),
        Just(Aggregation::First),
        Just(Aggregation::Last),
        (1usize..4).prop_map(|top| Aggregation::MostFrequent { top }),
        Just(Aggregation::DistinctCount),
        (1usize..4).prop_map(|limit| Aggregation::DistinctList { limit }),
    ];
    (
        agg,
        prop::sample::select(vec!["x", "cat", "n.k"]),
        (
            prop::sample::select(vec![None, None, Some(EventType::Track)]),
            prop::sample::select(vec![None, None, Some("A"), Some("B")]),
            prop::option::weighted(0.15, prop_cond()),
        )
            .prop_map(|(kind, name, filter)| EventSelector {
                kind,
                name: name.map(str::to_owned),
                filter,
            }),
        prop::option::weighted(0.7, duration()),
    )
        .prop_map(|(aggregation, p, event, window)| ComputedDef {
            name: "t".to_owned(),
            aggregation,
            property: (aggregation != Aggregation::Count).then(|| p.to_owned()),
            event,
            window,
        })
}

fn props() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::option::weighted(0.8, (-2i32..12).prop_map(|n| json!(f64::from(n) / 2.0))),
        prop::option::weighted(
            0.8,
            prop::sample::select(vec![
                json!("a"),
                json!("b"),
                json!("c"),
                json!(1),
                Value::Null,
            ]),
        ),
        prop::option::of(any::<bool>()),
    )
        .prop_map(|(x, cat, k)| {
            let mut m = Map::new();
            if let Some(x) = x {
                m.insert("x".into(), x);
            }
            if let Some(c) = cat {
                m.insert("cat".into(), c);
            }
            if let Some(k) = k {
                m.insert("n".into(), json!({ "k": k }));
                m.insert("tags".into(), json!(["a", if k { "b" } else { "c" }]));
            }
            m
        })
}

/// Event streams: time moves forward by random gaps (zero, small, hours, days), and about
/// one event in six arrives late (its timestamp up to two days in the past).
pub fn events(max: usize) -> impl Strategy<Value = Vec<EventFact>> {
    let one = (
        prop_oneof![Just(0i64), 1i64..1000, 0..3 * H, 0..2 * D],
        prop::option::weighted(0.17, 0..2 * D),
        prop::sample::select(vec![
            EventType::Track,
            EventType::Track,
            EventType::Page,
            EventType::Identify,
        ]),
        prop::sample::select(vec!["A", "B", "C"]),
        props(),
    );
    prop::collection::vec(one, 0..max).prop_map(|raw| {
        let mut t = T0;
        raw.into_iter()
            .enumerate()
            .map(|(i, (gap, late, kind, name, properties))| {
                t += gap;
                EventFact {
                    seq: i as u64 + 1,
                    ts_ms: t - late.unwrap_or(0),
                    kind,
                    name: (kind != EventType::Identify).then(|| name.to_owned()),
                    properties,
                }
            })
            .collect()
    })
}
