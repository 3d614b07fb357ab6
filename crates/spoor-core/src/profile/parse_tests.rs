//! Example-based tests of parsing and identifier extraction.

use super::tests::payload;
use super::*;
use crate::event::EventType;
use serde_json::{json, Value};

fn ev(kind: &str, message: Value) -> Vec<u8> {
    payload(kind, "m1", message, json!({}))
}

fn ids(p: &[u8]) -> Vec<(String, String)> {
    extract_identifiers(&parse_event(1, 0, p).unwrap(), &[])
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn every_type_parses() {
    let p = ev(
        "track",
        json!({"type":"track","event":"Order Completed","userId":"u1","anonymousId":"a1",
               "properties":{"total":10,"email":"X@Y.com"},"context":{"device":{"id":"d1"}}}),
    );
    let v = parse_event(7, 1234, &p).unwrap();
    assert_eq!((v.seq, v.timestamp_ms, v.kind), (7, 1234, EventType::Track));
    assert_eq!(v.source_id, "src_web");
    assert_eq!(v.message_id, "m1");
    assert_eq!(v.event.as_deref(), Some("Order Completed"));
    assert_eq!(v.user_id.as_deref(), Some("u1"));
    assert_eq!(v.anonymous_id.as_deref(), Some("a1"));
    assert_eq!(v.device_id.as_deref(), Some("d1"));
    assert_eq!(
        value_at_path(v.properties.unwrap(), "email").as_deref(),
        Some("X@Y.com")
    );
    assert!(v.traits.is_none());

    for kind in ["page", "screen"] {
        let p = ev(kind, json!({"type":kind,"name":"Home","anonymousId":"a1"}));
        let v = parse_event(1, 0, &p).unwrap();
        assert_eq!(v.kind.as_str(), kind);
        assert_eq!(v.name.as_deref(), Some("Home"));
    }

    let p = ev(
        "alias",
        json!({"type":"alias","userId":"u1","previousId":"a1"}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    assert_eq!(v.kind, EventType::Alias);
    assert_eq!(v.previous_id.as_deref(), Some("a1"));

    let p = ev(
        "identify",
        json!({"type":"identify","userId":"u1","traits":{"plan":"pro","email":"e@x"}}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    assert_eq!(v.traits.unwrap()["plan"], "pro");
}

#[test]
fn identify_traits_come_from_context_and_top_level_wins() {
    let only_ctx = ev(
        "identify",
        json!({"type":"identify","userId":"u","context":{"traits":{"name":"Ann"}}}),
    );
    let v = parse_event(1, 0, &only_ctx).unwrap();
    assert_eq!(v.traits.unwrap()["name"], "Ann");

    let both = ev(
        "identify",
        json!({"type":"identify","userId":"u","traits":{"name":"Bea"},
               "context":{"traits":{"name":"Ann","age":3}}}),
    );
    let t = parse_event(1, 0, &both).unwrap().traits.unwrap();
    assert_eq!((&t["name"], &t["age"]), (&json!("Bea"), &json!(3)));

    // Track: context.traits are the user's; there are no top-level traits to read.
    let track = ev(
        "track",
        json!({"type":"track","event":"E","userId":"u","traits":{"x":1},"context":{"traits":{"y":2}}}),
    );
    let t = parse_event(1, 0, &track).unwrap().traits.unwrap();
    assert_eq!(t.get("x"), None);
    assert_eq!(t["y"], 2);
}

#[test]
fn numeric_null_and_blank_ids() {
    let p = ev(
        "identify",
        json!({"type":"identify","userId":42,"anonymousId":null,"groupId":"  ",
               "context":{"device":{"id":7.5}}}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    assert_eq!(v.user_id.as_deref(), Some("42"));
    assert_eq!(v.anonymous_id, None);
    assert_eq!(v.group_id, None);
    assert_eq!(v.device_id.as_deref(), Some("7.5"));
}

#[test]
fn group_traits_are_the_groups_not_the_persons() {
    let p = ev(
        "group",
        json!({"type":"group","userId":"u","groupId":"g1","traits":{"name":"Acme","email":"info@acme"},
               "context":{"traits":{"email":"ann@acme"}}}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    assert_eq!(v.group_id.as_deref(), Some("g1"));
    assert_eq!(v.group_traits.as_ref().unwrap()["name"], "Acme");
    assert_eq!(v.traits.as_ref().unwrap()["email"], "ann@acme");
    assert_eq!(
        extract_identifiers(&v, &[]),
        pairs(&[("user_id", "u"), ("email", "ann@acme")])
    );
}

#[test]
fn envelope_enrichment_is_read() {
    let p = payload(
        "page",
        "m\"q",
        json!({"type":"page","anonymousId":"a"}),
        json!({"ip":"1.2.3.4","utm":{"source":"news","medium":"email"},
               "user_agent":{"browser":"Safari","os":"iOS","device_type":"mobile"}}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    assert_eq!(v.message_id, "m\"q");
    assert_eq!(v.ip.as_deref(), Some("1.2.3.4"));
    assert_eq!(v.utm.unwrap().medium.as_deref(), Some("email"));
    assert_eq!(v.user_agent.unwrap().device_type, "mobile");
    let v = parse_event_envelope_time(1, &p).unwrap();
    assert_eq!(v.timestamp_ms, 1_767_268_799_500);
}

#[test]
fn corrupt_entries_are_errors() {
    assert!(matches!(
        parse_event(3, 0, b"{nope"),
        Err(ProfileError::Envelope { seq: 3, .. })
    ));
    let bad_type = ev("purchase", json!({}));
    assert!(matches!(
        parse_event(3, 0, &bad_type),
        Err(ProfileError::Envelope { .. })
    ));
    let bad_id = ev("track", json!({"type":"track","userId":{"a":1}}));
    assert!(matches!(
        parse_event(3, 0, &bad_id),
        Err(ProfileError::Message { seq: 3, .. })
    ));
    // Wrongly typed traits cost the traits, not the event.
    let odd = ev(
        "identify",
        json!({"type":"identify","userId":"u","traits":"x"}),
    );
    assert!(parse_event(3, 0, &odd).unwrap().traits.is_none());
}

#[test]
fn paths_read_strings_and_numbers_only() {
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(
        r#"{"traits":{"loyalty_id":"L-1","n":12,"f":1.5,"b":true,"o":{"x":1},"e":"","z":null},
            "context":{"device":{"advertisingId":"ad"}},"list":[{"k":"v0"},{"k":"v1"}],
            "we\"ird":{"k":"esc"},"traits2":1}"#,
    )
    .unwrap();
    let at = |p: &str| value_at_path(&raw, p);
    assert_eq!(at("traits.loyalty_id").as_deref(), Some("L-1"));
    assert_eq!(at("traits.n").as_deref(), Some("12"));
    assert_eq!(at("traits.f").as_deref(), Some("1.5"));
    assert_eq!(at("context.device.advertisingId").as_deref(), Some("ad"));
    assert_eq!(at("list.1.k").as_deref(), Some("v1"));
    assert_eq!(at("we\"ird.k").as_deref(), Some("esc"));
    for none in [
        "traits.b",
        "traits.o",
        "traits.e",
        "traits.z",
        "traits.missing",
        "traits",
        "list.2.k",
        "list.x",
        "traits.n.deeper",
        "",
        "traits..n",
        "nothing.at.all",
    ] {
        assert_eq!(at(none), None, "{none}");
    }
}

#[test]
fn identifiers_of_each_type_raw_and_deduplicated() {
    let p = ev(
        "track",
        json!({"type":"track","event":"Signed Up","userId":"U1","anonymousId":"a1",
               "properties":{"email":" Ann@X.com "},
               "context":{"traits":{"email":"ann@x.com","phone":31612345678_i64},"device":{"id":"d1"}}}),
    );
    assert_eq!(
        ids(&p),
        pairs(&[
            ("user_id", "U1"),
            ("anonymous_id", "a1"),
            ("email", "ann@x.com"),
            ("email", " Ann@X.com "),
            ("phone", "31612345678"),
            ("device_id", "d1"),
        ])
    );
    // properties.email counts on track only; duplicates are dropped.
    let page = ev(
        "page",
        json!({"type":"page","anonymousId":"a","properties":{"email":"p@x"},
               "context":{"traits":{"email":"a@x"}}}),
    );
    assert_eq!(
        ids(&page),
        pairs(&[("anonymous_id", "a"), ("email", "a@x")])
    );
    let dup = ev(
        "track",
        json!({"type":"track","event":"E","userId":"u","properties":{"email":"a@x"},
               "context":{"traits":{"email":"a@x"}}}),
    );
    assert_eq!(ids(&dup), pairs(&[("user_id", "u"), ("email", "a@x")]));
}

#[test]
fn alias_links_previous_id_as_anonymous_id() {
    let p = ev(
        "alias",
        json!({"type":"alias","userId":"u1","previousId":"anon-9"}),
    );
    assert_eq!(
        ids(&p),
        pairs(&[("user_id", "u1"), ("anonymous_id", "anon-9")])
    );
}

#[test]
fn custom_identifier_paths() {
    let custom = [
        IdentifierSource {
            id_type: "loyalty_id".into(),
            path: "traits.loyalty_id".into(),
        },
        IdentifierSource {
            id_type: "idfa".into(),
            path: "context.device.advertisingId".into(),
        },
    ];
    let p = ev(
        "identify",
        json!({"type":"identify","userId":"u","traits":{"loyalty_id":991},
               "context":{"device":{"advertisingId":"AD-1"}}}),
    );
    let v = parse_event(1, 0, &p).unwrap();
    let got = extract_identifiers(&v, &custom);
    assert_eq!(
        got,
        pairs(&[("user_id", "u"), ("loyalty_id", "991"), ("idfa", "AD-1")])
    );
    let input = identity_input(&v, &custom);
    assert_eq!((input.seq, input.identifiers), (1, got));

    // On group calls `traits.*` is the group's.
    let g = ev(
        "group",
        json!({"type":"group","userId":"u","groupId":"g","traits":{"loyalty_id":"G"}}),
    );
    let v = parse_event(1, 0, &g).unwrap();
    assert_eq!(extract_identifiers(&v, &custom), pairs(&[("user_id", "u")]));

    let cfg: Result<IdentifierSource, _> =
        serde_json::from_str(r#"{"id_type":"x","path":"y","extra":1}"#);
    assert!(cfg.is_err());
}

#[test]
fn reads_what_ingest_writes() {
    use crate::ingest::{normalize, IngestContext, Limits};
    use crate::SourceId;
    let source = SourceId::parse("src_test").unwrap();
    let limits = Limits::default();
    let gen = || "gen-1".to_string();
    let ctx = IngestContext {
        source_id: &source,
        received_at: chrono::DateTime::from_timestamp_millis(1_767_268_800_000).unwrap(),
        peer_ip: Some("10.1.2.3".parse().unwrap()),
        path_type: None,
        batch_sent_at: None,
        batch_context: None,
        batch_integrations: None,
        limits: &limits,
        new_message_id: &gen,
    };
    let raw: Box<serde_json::value::RawValue> = serde_json::from_str(
        r#"{"type":"identify","userId":"u\"1","traits":{"email":"A@x"},
            "context":{"page":{"url":"https://x/?utm_source=s&utm_medium=m"},
                       "userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"}}"#,
    )
    .unwrap();
    let n = normalize(&raw, &ctx).unwrap();
    let v = parse_event_envelope_time(1, &n.bytes).unwrap();
    assert_eq!(v.timestamp_ms, n.timestamp_ms);
    assert_eq!(v.source_id, "src_test");
    assert_eq!(v.message_id, "gen-1");
    assert_eq!(v.user_id.as_deref(), Some("u\"1"));
    assert_eq!(v.ip.as_deref(), Some("10.1.2.3"));
    assert_eq!(v.utm.as_ref().unwrap().source.as_deref(), Some("s"));
    assert_eq!(v.user_agent.as_ref().unwrap().device_type, "desktop");
    assert_eq!(
        extract_identifiers(&v, &[]),
        pairs(&[("user_id", "u\"1"), ("email", "A@x")])
    );
}
