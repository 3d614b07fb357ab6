//! Example-based tests of consent statements and state (the join properties are checked by
//! the profile property tests, which carry consent).

use super::*;
use crate::profile::parse_event;
use serde_json::json;

fn rules() -> ConsentRules {
    let mut cats = BTreeMap::new();
    cats.insert(
        "Marketing".to_owned(),
        vec!["email".into(), "advertising".into()],
    );
    let mut defaults = BTreeMap::new();
    defaults.insert("analytics".to_owned(), ConsentValue::Granted);
    ConsentRules::new(
        ["analytics", "personalization", "email", "advertising"]
            .map(String::from)
            .to_vec(),
        defaults,
        cats,
        "consent".into(),
    )
    .unwrap()
}

fn payload(source: &str, msg: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "v": 1, "source_id": source, "type": msg["type"], "message_id": "m1",
        "received_at": "2026-01-01T12:00:00.000Z", "timestamp": "2026-01-01T12:00:00.000Z",
        "message": msg,
    }))
    .unwrap()
}

fn stated(source: &str, msg: serde_json::Value) -> Vec<(String, ConsentValue, ConsentVia)> {
    let bytes = payload(source, msg);
    let v = parse_event(1, 100, &bytes).unwrap();
    rules()
        .statements(&v)
        .into_iter()
        .map(|s| (s.purpose, s.value, s.via))
        .collect()
}

#[test]
fn segment_categories_map_by_config_then_by_name() {
    let got = stated(
        "src_web",
        json!({"type": "track", "event": "x", "userId": "u", "context": {"consent": {
            "categoryPreferences": {"Marketing": false, "ANALYTICS": true, "DataSharing": true}}}}),
    );
    assert_eq!(
        got,
        vec![
            (
                "advertising".into(),
                ConsentValue::Denied,
                ConsentVia::Event
            ),
            ("analytics".into(), ConsentValue::Granted, ConsentVia::Event),
            ("email".into(), ConsentValue::Denied, ConsentVia::Event),
        ]
    );
    // No consent object, or an empty one, states nothing.
    assert!(stated(
        "src_web",
        json!({"type": "track", "event": "x", "userId": "u"})
    )
    .is_empty());
    assert!(stated(
        "src_web",
        json!({"type": "track", "event": "x", "userId": "u",
               "context": {"consent": {"categoryPreferences": {}}}})
    )
    .is_empty());
}

#[test]
fn traits_nested_and_flat_and_api_purposes_take_precedence() {
    let got = stated(
        "src_web",
        json!({"type": "identify", "userId": "u", "traits": {
            "consent": {"email": "granted", "unknown": true, "advertising": "maybe"},
            "consent.personalization": false}}),
    );
    assert_eq!(
        got,
        vec![
            ("email".into(), ConsentValue::Granted, ConsentVia::Trait),
            (
                "personalization".into(),
                ConsentValue::Denied,
                ConsentVia::Trait
            ),
        ]
    );
    let got = stated(
        CONSENT_API_SOURCE,
        json!({"type": "track", "event": CONSENT_EVENT, "userId": "u",
               "traits": {"consent": {"email": true}},
               "context": {"traits": {"consent": {"email": true}},
                           "consent": {"purposes": {"email": "denied"}}}}),
    );
    assert_eq!(
        got,
        vec![("email".into(), ConsentValue::Denied, ConsentVia::Api)]
    );
}

#[test]
fn bad_configuration_is_refused_with_the_cause() {
    let e = ConsentRules::new(
        vec!["a.b".into()],
        BTreeMap::new(),
        BTreeMap::new(),
        "c".into(),
    )
    .unwrap_err();
    assert!(e.contains("a.b"), "{e}");
    let mut d = BTreeMap::new();
    d.insert("nope".to_owned(), ConsentValue::Granted);
    let e = ConsentRules::new(vec!["a".into()], d, BTreeMap::new(), "c".into()).unwrap_err();
    assert!(e.contains("nope"), "{e}");
    let mut c = BTreeMap::new();
    c.insert("Cat".to_owned(), vec!["zz".to_owned()]);
    let e = ConsentRules::new(vec!["a".into()], BTreeMap::new(), c, "c".into()).unwrap_err();
    assert!(e.contains("zz"), "{e}");
}

fn record(purpose: &str, value: ConsentValue, at_ms: i64, seq: u64) -> ConsentRecord {
    ConsentRecord {
        purpose: purpose.into(),
        value,
        at_ms,
        seq,
        via: ConsentVia::Api,
        source_id: "src_x".into(),
        message_id: format!("m{seq}"),
    }
}

fn consent_of(records: &[ConsentRecord]) -> Consent {
    let mut c = Consent::default();
    for r in records {
        let mut one = Consent::default();
        one.current.insert(r.purpose.clone(), r.clone());
        one.history.push(r.clone());
        c.absorb(one);
    }
    c
}

#[test]
fn defaults_current_value_last_write_by_event_time_and_changes() {
    use ConsentValue::*;
    let r = rules();
    let empty = Consent::default();
    assert_eq!(r.value(&empty, "analytics"), Granted);
    assert_eq!(r.value(&empty, "advertising"), Denied);
    // A late, older denial does not override a newer grant.
    let c = consent_of(&[
        record("advertising", Granted, 200, 1),
        record("advertising", Denied, 100, 2),
    ]);
    assert_eq!(r.value(&c, "advertising"), Granted);
    assert!(r.allows(&c, &["advertising".into(), "analytics".into()]));
    assert!(!r.allows(&c, &["email".into()]));
    // seq 2 (time 100) repeats the default (no change); seq 1 (time 200) grants.
    assert!(r.changes_at(&c, 2).is_empty());
    assert_eq!(r.changes_at(&c, 1), vec![("advertising".into(), Granted)]);
    // Repeating the current value is not a change.
    let c = consent_of(&[
        record("advertising", Granted, 50, 3),
        record("advertising", Denied, 100, 1),
        record("advertising", Denied, 200, 2),
    ]);
    assert_eq!(r.changes_at(&c, 1), vec![("advertising".into(), Denied)]);
    assert!(r.changes_at(&c, 2).is_empty());
}

#[test]
fn history_keeps_the_latest_per_purpose_whatever_the_merge_order() {
    use ConsentValue::*;
    let n = HISTORY_PER_PURPOSE as u64 + 5;
    let recs: Vec<_> = (1..=n)
        .map(|i| {
            record(
                "email",
                if i % 2 == 0 { Granted } else { Denied },
                i as i64,
                i,
            )
        })
        .chain([record("advertising", Granted, 1, 100)])
        .collect();
    let forward = consent_of(&recs);
    let mut rev = recs.clone();
    rev.reverse();
    let backward = consent_of(&rev);
    assert_eq!(forward, backward);
    assert_eq!(forward.history_of("email").count(), HISTORY_PER_PURPOSE);
    assert_eq!(forward.history_of("email").next().unwrap().seq, 6);
    assert_eq!(forward.history_of("advertising").count(), 1);
    assert_eq!(forward.current["email"].seq, n);
}

#[test]
fn applying_many_events_in_any_order_keeps_the_same_history() {
    let r = rules();
    let events: Vec<(u64, Vec<u8>)> = (1..=HISTORY_PER_PURPOSE as u64 + 7)
        .map(|i| {
            let msg = json!({"type": "track", "event": "x", "userId": "u", "context": {"consent": {
                "categoryPreferences": {"Marketing": i % 3 == 0, "analytics": true}}}});
            (i, payload("src_web", msg))
        })
        .collect();
    let fold = |order: &mut dyn Iterator<Item = &(u64, Vec<u8>)>| {
        let mut c = Consent::default();
        for (seq, bytes) in order {
            // Time runs opposite to seq for half of them, so late events hit the slow path.
            let ts = if seq % 2 == 0 {
                *seq as i64
            } else {
                1000 - *seq as i64
            };
            let v = parse_event(*seq, ts, bytes).unwrap();
            c.apply(&v, &r.statements(&v));
        }
        c
    };
    let forward = fold(&mut events.iter());
    let backward = fold(&mut events.iter().rev());
    assert_eq!(forward, backward);
    assert_eq!(forward.history_of("email").count(), HISTORY_PER_PURPOSE);
    assert_eq!(forward.history_of("analytics").count(), HISTORY_PER_PURPOSE);
}
