//! Unit tests for computed traits: every aggregation, windows, merges, validation.

use super::*;
use crate::event::EventType;
use serde_json::{json, Map};

const H: i64 = 3_600_000;
const T0: i64 = 1_700_000_000_000;

fn ev(seq: u64, ts: i64, props: Value) -> EventFact {
    EventFact {
        seq,
        ts_ms: ts,
        kind: EventType::Track,
        name: Some("Order Completed".into()),
        properties: match props {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

fn def(json: Value) -> ComputedDef {
    ComputedDef::from_json(&json.to_string()).unwrap_or_else(|e| panic!("{e}"))
}

fn events() -> Vec<EventFact> {
    vec![
        ev(1, T0, json!({"total": 10, "cat": "shoes"})),
        ev(2, T0 + 2 * H, json!({"total": 2.5, "cat": "hats"})),
        ev(3, T0 + H, json!({"total": 7, "cat": "shoes"})),
        ev(4, T0 + 3 * H, json!({"total": "n/a", "cat": null})),
        ev(5, T0 + 4 * H, json!({"cat": "socks"})),
    ]
}

/// Incremental (split in two, applied in reverse, merged) must equal brute force.
fn value(d: &ComputedDef, evs: &[EventFact], now: i64) -> Option<Value> {
    let brute = brute_force(d, evs, now);
    let (a, b) = evs.split_at(evs.len() / 2);
    let mut s1 = ComputedState::new(d);
    let mut s2 = ComputedState::new(d);
    a.iter().rev().for_each(|e| s1.apply(d, e));
    b.iter().rev().for_each(|e| s2.apply(d, e));
    s2.merge(d, s1);
    assert_eq!(s2.value(d, now), brute, "{d:?}");
    brute
}

#[test]
fn all_time_aggregations() {
    let evs = events();
    let now = T0 + 10 * H;
    let agg = |a: Value, p: Option<&str>| {
        let mut j = json!({"name": "t", "aggregation": a});
        if let Some(p) = p {
            j["property"] = json!(p);
        }
        value(&def(j), &evs, now)
    };
    assert_eq!(agg(json!("count"), None), Some(json!(5)));
    assert_eq!(agg(json!("sum"), Some("total")), Some(json!(19.5)));
    assert_eq!(agg(json!("avg"), Some("total")), Some(json!(6.5)));
    assert_eq!(agg(json!("min"), Some("total")), Some(json!(2.5)));
    assert_eq!(agg(json!("max"), Some("total")), Some(json!(10)));
    assert_eq!(agg(json!("first"), Some("cat")), Some(json!("shoes")));
    assert_eq!(agg(json!("last"), Some("cat")), Some(json!("socks")));
    assert_eq!(agg(json!("last"), Some("total")), Some(json!("n/a")));
    assert_eq!(
        agg(json!({"most_frequent": {"top": 2}}), Some("cat")),
        Some(json!(["shoes", "hats"]))
    );
    assert_eq!(agg(json!("distinct_count"), Some("cat")), Some(json!(3)));
    assert_eq!(
        agg(json!({"distinct_list": {"limit": 2}}), Some("cat")),
        Some(json!(["socks", "hats"]))
    );
    assert_eq!(agg(json!("avg"), Some("nope")), None);
    assert_eq!(agg(json!("sum"), Some("nope")), Some(json!(0)));
    assert_eq!(agg(json!("max"), Some("nope")), None);
}

#[test]
fn windowed_aggregations_expire() {
    let evs = events();
    let now = T0 + 4 * H + 1;
    let agg = |a: &str, p: Option<&str>| {
        let mut j = json!({"name": "t", "aggregation": a, "window": "3h"});
        if let Some(p) = p {
            j["property"] = json!(p);
        }
        def(j)
    };
    // In the window at now: events 2 (2h), 4 (3h), 5 (4h).
    assert_eq!(value(&agg("count", None), &evs, now), Some(json!(3)));
    assert_eq!(
        value(&agg("sum", Some("total")), &evs, now),
        Some(json!(2.5))
    );
    assert_eq!(
        value(&agg("max", Some("total")), &evs, now),
        Some(json!(2.5))
    );
    assert_eq!(
        value(&agg("first", Some("cat")), &evs, now),
        Some(json!("hats"))
    );
    assert_eq!(
        value(&agg("distinct_count", Some("cat")), &evs, now),
        Some(json!(2))
    );
    let d = agg("max", Some("total"));
    let mut s = ComputedState::new(&d);
    evs.iter().for_each(|e| s.apply(&d, e));
    assert_eq!(s.next_change(&d, now), Some(T0 + 5 * H));
    assert_eq!(s.value(&d, T0 + 5 * H), None);
    s.prune(&d, T0 + 5 * H);
    assert_eq!(s, ComputedState::Staircase { points: vec![] });
    assert_eq!(s.next_change(&d, T0 + 5 * H), None);
    // The last order leaves at 4h + 3h.
    let d = agg("last", Some("cat"));
    let mut s = ComputedState::new(&d);
    evs.iter().for_each(|e| s.apply(&d, e));
    assert_eq!(s.next_change(&d, now), Some(T0 + 7 * H));
    assert_eq!(s.value(&d, T0 + 7 * H - 1), Some(json!("socks")));
    assert_eq!(s.value(&d, T0 + 7 * H), None);
}

#[test]
fn staircase_keeps_only_candidates() {
    let d = def(json!({"name": "t", "aggregation": "max", "property": "total", "window": "1d"}));
    let mut s = ComputedState::new(&d);
    for (i, (t, v)) in [(0, 5), (1, 3), (2, 4), (3, 1), (1, 9)].iter().enumerate() {
        s.apply(&d, &ev(i as u64, T0 + t * H, json!({ "total": v })));
    }
    assert_eq!(
        s,
        ComputedState::Staircase {
            points: vec![(T0 + 2 * H, 4.0), (T0 + 3 * H, 1.0), (T0 + H, 9.0)]
        }
    );
}

#[test]
fn filter_and_json() {
    let d = def(
        json!({"name": "shoe_spend", "aggregation": "sum", "property": "total",
        "event": {"kind": "track", "name": "Order Completed", "where": {"type": "property",
        "path": "cat", "cmp": {"op": "=", "value": "shoes"}}}, "window": "30d"}),
    );
    assert_eq!(value(&d, &events(), T0 + 10 * H), Some(json!(17)));
    let back = ComputedDef::from_json(&serde_json::to_string(&d).unwrap_or_default());
    assert_eq!(back, Ok(d));
    let st = ComputedState::new(&def(json!({"name": "c", "aggregation": "count"})));
    let json = serde_json::to_string(&st).unwrap_or_default();
    assert_eq!(json, r#"{"state":"count","n":0}"#);
}

#[test]
fn validation_errors() {
    let err = |j: Value| match ComputedDef::from_json(&j.to_string()) {
        Ok(d) => panic!("accepted {d:?}"),
        Err(e) => e.to_string(),
    };
    assert_eq!(
        err(json!({"name": "t", "aggregation": "count", "property": "x"})),
        "computed trait \"t\": `count` takes no property"
    );
    assert_eq!(
        err(json!({"name": "t", "aggregation": "sum"})),
        "computed trait \"t\": expected a property to aggregate"
    );
    assert_eq!(
        err(json!({"name": "t", "aggregation": "sum", "property": "a..b"})),
        "computed trait \"t\": expected a property path like `product.price`"
    );
    assert_eq!(
        err(json!({"name": " ", "aggregation": "count"})),
        "computed trait \" \": expected a name"
    );
    assert_eq!(
        err(json!({"name": "t", "aggregation": {"most_frequent": {"top": 0}}, "property": "x"})),
        "computed trait \"t\": expected a list size from 1 to 100"
    );
    assert_eq!(
        err(
            json!({"name": "t", "aggregation": {"distinct_list": {"limit": 101}}, "property": "x"})
        ),
        "computed trait \"t\": expected a list size from 1 to 100"
    );
    assert_eq!(
        err(json!({"name": "t", "aggregation": "count", "window": "0d"})),
        "computed trait \"t\": expected a window longer than 0"
    );
    assert_eq!(
        err(
            json!({"name": "t", "aggregation": "count", "event": {"where": {"type": "property",
            "path": "ts", "cmp": {"op": ">", "value": {"now": -1000}}}}})
        ),
        "computed trait \"t\": a where clause cannot use `now` (use the window for recency)"
    );
    assert!(err(json!({"name": "t", "aggregation": "median"}))
        .starts_with("invalid computed trait JSON: unknown variant `median`"));
    assert!(
        err(json!({"name": "t", "aggregation": "count", "extra": 1}))
            .contains("unknown field `extra`")
    );
    assert!(
        err(json!({"name": "t", "aggregation": "count", "window": "7y"}))
            .contains("invalid duration `7y`")
    );
}

#[test]
fn computed_set_glue() {
    let set = ComputedSet::new([
        def(json!({"name": "orders_7d", "aggregation": "count", "window": "7d"})),
        def(json!({"name": "spend", "aggregation": "sum", "property": "total"})),
        def(
            json!({"name": "fav", "aggregation": "first", "property": "cat",
            "event": {"kind": "page"}}),
        ),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        set.names().collect::<Vec<_>>(),
        ["fav", "orders_7d", "spend"]
    );
    let (mut a, mut b) = (ComputedStates::new(), ComputedStates::new());
    let evs = events();
    assert_eq!(set.apply(&mut a, &evs[0]), ["orders_7d", "spend"]);
    for e in &evs[1..] {
        set.apply(&mut b, e);
    }
    set.merge(&mut a, b);
    let now = T0 + 5 * H;
    set.prune(&mut a, now);
    let v = set.values(&a, now);
    assert_eq!(Value::Object(v), json!({"orders_7d": 5, "spend": 19.5}));
    assert_eq!(set.next_change(&a, now), Some(T0 + 7 * 24 * H));
    let dup = ComputedSet::new([
        def(json!({"name": "x", "aggregation": "count"})),
        def(json!({"name": "x", "aggregation": "count"})),
    ]);
    assert_eq!(
        dup.map_err(|e| e.to_string()),
        Err("computed trait \"x\": defined twice".to_owned())
    );
}

/// A window keeps its entries in event order whatever order the events arrive in, and a
/// state stored before it did (entries in arrival order) still gives the same values.
#[test]
fn a_window_reads_its_entries_in_event_order_however_stored() {
    let evs = events();
    for agg in ["sum", "avg", "first", "count"] {
        let mut j = json!({"name": "w", "aggregation": agg,
                           "event": {"name": "Order Completed"}, "window": "1d"});
        if agg != "count" {
            j["property"] = json!("total");
        }
        let d = def(j);
        let mut s = ComputedState::new(&d);
        for e in evs.iter().rev() {
            s.apply(&d, e);
        }
        let ComputedState::Window { entries } = &s else {
            panic!("{agg}: a windowed {agg} keeps a window")
        };
        assert!(entries.is_sorted_by_key(|e| e.0), "{agg}: {entries:?}");
        let mut shuffled = entries.clone();
        shuffled.swap(0, 2);
        shuffled.reverse();
        let stored = ComputedState::Window { entries: shuffled };
        let now = T0 + 5 * H;
        assert_eq!(stored.value(&d, now), s.value(&d, now), "{agg}");
        assert_eq!(s.value(&d, now), brute_force(&d, &evs, now), "{agg}");
    }
}
