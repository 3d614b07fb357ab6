//! Example-based tests of the profile model: trait rules, statistics, groups, serde.

use super::*;
use crate::identity::ProfileId;
use serde_json::{json, Value};
use std::sync::Arc;

/// A stored-event payload as ingest writes it; `extra` adds envelope fields (utm, …).
pub(super) fn payload(kind: &str, message_id: &str, message: Value, extra: Value) -> Vec<u8> {
    let mut env = json!({
        "v": 1,
        "source_id": "src_web",
        "type": kind,
        "message_id": message_id,
        "received_at": "2026-01-01T12:00:00.000Z",
        "timestamp": "2026-01-01T11:59:59.500Z",
        "message": message,
    });
    if let (Some(e), Value::Object(x)) = (env.as_object_mut(), extra) {
        e.extend(x);
    }
    serde_json::to_vec(&env).unwrap()
}

/// An identify from `src_web` at `ts` with log position `seq`.
fn identify(seq: u64, ts: i64, traits: Value) -> (u64, i64, Vec<u8>) {
    let msg = json!({"type":"identify","userId":"u","traits":traits});
    (
        seq,
        ts,
        payload("identify", &format!("m{seq}"), msg, json!({})),
    )
}

fn profile_of(events: &[(u64, i64, Vec<u8>)]) -> Profile {
    let mut p = Profile::new(ProfileId::from_seq(1));
    for (seq, ts, bytes) in events {
        p.apply(&parse_event(*seq, *ts, bytes).unwrap());
    }
    p
}

#[test]
fn last_write_by_event_time_wins_even_when_applied_late() {
    let p = profile_of(&[
        identify(1, 200, json!({"plan":"pro"})),
        identify(2, 100, json!({"plan":"free","age":30})), // older event, applied later
    ]);
    assert_eq!(
        p.trait_values(),
        json!({"plan":"pro","age":30}).as_object().unwrap().clone()
    );
    let plan = &p.traits["plan"];
    assert_eq!(
        (plan.set_at_ms, plan.seq, plan.message_id.as_str()),
        (200, 1, "m1")
    );
    assert_eq!(plan.source_id, "src_web");
    // Equal timestamps: the later log position wins.
    let p = profile_of(&[
        identify(5, 100, json!({"plan":"b"})),
        identify(4, 100, json!({"plan":"a"})),
    ]);
    assert_eq!(p.trait_value("plan"), Some(&json!("b")));
}

#[test]
fn removal_by_null_and_unset_leaves_tombstones() {
    let p = profile_of(&[
        identify(1, 100, json!({"a":1,"b":2,"c":3})),
        identify(2, 200, json!({"a":null,"$unset":["b","never_set"]})),
        identify(3, 150, json!({"a":9,"b":9})), // older than the removal: stays removed
    ]);
    assert_eq!(
        p.trait_values(),
        json!({"c":3}).as_object().unwrap().clone()
    );
    assert!(p.traits["a"].removed && p.traits["b"].removed && p.traits["never_set"].removed);
    assert_eq!(p.traits["a"].value, Value::Null);
    assert!(!p.traits.contains_key(UNSET_KEY));

    // A newer set revives the key; $unset wins over a value in the same event.
    let p = profile_of(&[
        identify(1, 100, json!({"a":null})),
        identify(2, 300, json!({"a":"back","b":"x","$unset":["b"]})),
    ]);
    assert_eq!(
        p.trait_values(),
        json!({"a":"back"}).as_object().unwrap().clone()
    );
    // `$unset` may also be a single key.
    let p = profile_of(&[
        identify(1, 100, json!({"a":1})),
        identify(2, 300, json!({"$unset":"a"})),
    ]);
    assert!(p.trait_values().is_empty());
}

#[test]
fn nested_objects_are_one_value_per_top_level_key() {
    let p = profile_of(&[
        identify(
            1,
            100,
            json!({"address":{"city":"Utrecht","street":"Oudegracht"}}),
        ),
        identify(2, 200, json!({"address":{"city":"Leiden"}})),
    ]);
    assert_eq!(p.trait_values()["address"], json!({"city":"Leiden"}));
    assert_eq!(p.traits.len(), 1);
}

#[test]
fn sources_channels_devices_and_types_are_counted() {
    let ua = |v: &str| json!({"browser":"Chrome","browser_version":v,"os":"Mac OS X","device_type":"desktop"});
    let events = [
        (
            1,
            300,
            "src_web",
            json!({"source":"news","medium":"email","campaign":"spring","term":"late"}),
            ua("120"),
        ),
        (
            2,
            100,
            "src_web",
            json!({"source":"news","medium":"email","campaign":"spring","term":"first"}),
            ua("119"),
        ),
        (
            3,
            200,
            "src_app",
            json!({"source":"g/oo","medium":"cpc"}),
            ua("121"),
        ),
        (
            4,
            250,
            "src_app",
            json!({"term":"no channel"}),
            json!({"device_type":"mobile","os":"iOS"}),
        ),
    ];
    let mut p = Profile::new(ProfileId::from_seq(1));
    for (seq, ts, src, utm, agent) in events {
        let msg = json!({"type":"page","anonymousId":"a"});
        let mut bytes = payload("page", "m", msg, json!({"utm":utm,"user_agent":agent}));
        if src != "src_web" {
            let mut v: Value = serde_json::from_slice(&bytes).unwrap();
            v["source_id"] = json!(src);
            bytes = serde_json::to_vec(&v).unwrap();
        }
        p.apply(&parse_event(seq, ts, &bytes).unwrap());
    }
    let p2 = profile_of(&[identify(5, 50, json!({}))]);
    p.absorb(p2);

    assert_eq!(
        (p.event_count, p.first_seen_ms, p.last_seen_ms),
        (5, 50, 300)
    );
    assert_eq!(p.event_counts["page"], 4);
    assert_eq!(p.event_counts["identify"], 1);
    assert_eq!(
        p.sources["src_web"],
        SourceStat {
            count: 3,
            first_ms: 50,
            last_ms: 300
        }
    );
    assert_eq!(p.sources["src_app"].count, 2);

    assert_eq!(p.channels.len(), 2);
    let spring = &p.channels["news/email/spring"];
    assert_eq!(
        (spring.count, spring.first_ms, spring.last_ms),
        (2, 100, 300)
    );
    assert_eq!(spring.utm.term.as_deref(), Some("first"), "first touch");
    assert_eq!(p.channels["g%2Foo/cpc/"].count, 1);

    let chrome = &p.devices["desktop/Mac OS X/Chrome"];
    assert_eq!(
        (chrome.count, chrome.first_ms, chrome.last_ms),
        (3, 100, 300)
    );
    assert_eq!(
        chrome.browser_version.as_deref(),
        Some("120"),
        "latest event's version"
    );
    assert_eq!(p.devices["mobile/iOS/"].count, 1);
}

#[test]
fn groups_are_joined_and_described() {
    let g = |seq: u64, ts: i64, id: &str, traits: Value| {
        let msg = json!({"type":"group","userId":"u","groupId":id,"traits":traits});
        (
            seq,
            ts,
            payload("group", &format!("m{seq}"), msg, json!({})),
        )
    };
    let events = [
        g(1, 300, "acme", json!({"name":"Acme Inc","plan":"pro"})),
        g(2, 100, "acme", json!({"name":"Acme","employees":10})),
        g(3, 200, "other", json!({"name":"Other"})),
    ];
    let p = profile_of(&events);
    assert_eq!(p.groups.get("acme"), Some(&100));
    assert_eq!(p.groups.get("other"), Some(&200));
    assert!(p.traits.is_empty(), "group traits are not the person's");

    let mut acme = Group::new("acme");
    for (seq, ts, bytes) in &events {
        acme.apply(&parse_event(*seq, *ts, bytes).unwrap());
    }
    acme.apply(&parse_event(9, 999, &identify(9, 999, json!({"name":"x"})).2).unwrap());
    assert_eq!(
        (acme.event_count, acme.first_seen_ms, acme.last_seen_ms),
        (2, 100, 300)
    );
    assert_eq!(
        acme.trait_values(),
        json!({"name":"Acme Inc","plan":"pro","employees":10})
            .as_object()
            .unwrap()
            .clone()
    );
}

#[test]
fn profiles_round_trip_through_serde() {
    let p = profile_of(&[
        identify(1, 100, json!({"a":{"b":[1,2]},"c":null})),
        identify(2, 200, json!({"d":"x"})),
    ]);
    let text = serde_json::to_string(&p).unwrap();
    assert!(text.contains(r#""at_ms":100"#), "{text}");
    let back: Profile = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
}

/// A change to a clone of a profile (what the processor makes of a profile it has
/// published to readers) copies only the parts it touches: the original keeps its values,
/// and the parts the event did not touch stay shared.
#[test]
fn a_change_to_a_shared_profile_copies_only_what_it_touches() {
    let group = json!({"type":"group","userId":"u","groupId":"acme","traits":{}});
    let mut held = profile_of(&[
        identify(1, 100, json!({"plan":"free"})),
        (2, 150, payload("group", "m2", group, json!({}))),
    ]);
    held.activation_mut().members.insert("vip".into(), 100);
    let before = serde_json::to_string(&held).unwrap();

    let mut p = held.clone();
    let track = json!({"type":"track","userId":"u","event":"Viewed"});
    p.apply(&parse_event(3, 200, &payload("track", "m3", track, json!({}))).unwrap());
    assert_eq!(
        serde_json::to_string(&held).unwrap(),
        before,
        "held unchanged"
    );
    assert_eq!(p.event_counts["track"], 1);
    assert!(!Arc::ptr_eq(&p.event_counts, &held.event_counts));
    assert!(!Arc::ptr_eq(&p.sources, &held.sources));
    assert!(
        Arc::ptr_eq(&p.traits, &held.traits),
        "no traits in the event"
    );
    assert!(Arc::ptr_eq(&p.channels, &held.channels));
    assert!(Arc::ptr_eq(&p.devices, &held.devices));
    assert!(Arc::ptr_eq(&p.groups, &held.groups), "no group call");
    assert!(Arc::ptr_eq(&p.consent, &held.consent));
    assert!(Arc::ptr_eq(p.activation.shared(), held.activation.shared()));

    // A repeated group call of a member at a later time changes nothing: still shared.
    let again = json!({"type":"group","userId":"u","groupId":"acme","traits":{}});
    p.apply(&parse_event(4, 300, &payload("group", "m4", again, json!({}))).unwrap());
    assert!(Arc::ptr_eq(&p.groups, &held.groups));

    p.apply(&parse_event(5, 400, &identify(5, 400, json!({"plan":"pro"})).2).unwrap());
    p.activation_mut().members.remove("vip");
    let mut act = p.take_activation();
    act.revision = 7;
    p.activation = act.into();
    assert_eq!(
        serde_json::to_string(&held).unwrap(),
        before,
        "held unchanged"
    );
    assert_eq!(held.trait_value("plan"), Some(&json!("free")));
    assert_eq!(p.trait_value("plan"), Some(&json!("pro")));
    assert!(held.activation.members.contains_key("vip"));
    assert!(p.activation.members.is_empty() && p.activation.revision == 7);

    // Absorbing a profile shares its parts where ours are empty instead of copying them.
    let mut empty = Profile::new(ProfileId::from_seq(2));
    empty.absorb(held.clone());
    assert!(Arc::ptr_eq(&empty.traits, &held.traits));
    assert!(Arc::ptr_eq(&empty.groups, &held.groups));
    assert_eq!(
        serde_json::to_string(&held).unwrap(),
        before,
        "held unchanged"
    );
}
