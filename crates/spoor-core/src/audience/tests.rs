//! Unit tests: every construct, every error message, text ⇄ JSON round trips.

use super::*;
use crate::event::EventType;
use serde_json::{json, Map, Value};

const H: i64 = 3_600_000;
const D: i64 = 24 * H;
const T0: i64 = 1_700_000_000_000;

fn ev(seq: u64, ts: i64, name: &str, props: Value) -> EventFact {
    EventFact {
        seq,
        ts_ms: ts,
        kind: EventType::Track,
        name: Some(name.to_owned()),
        properties: match props {
            Value::Object(m) => m,
            _ => Map::new(),
        },
    }
}

fn facts() -> ProfileFacts {
    ProfileFacts {
        traits: json!({"plan": "pro", "age": 42, "vip": true, "tags": ["a", "b"],
            "email": "ann@example.com", "address": {"city": "Oslo"}, "empty": "",
            "signup_at": "2023-11-01T00:00:00Z"})
        .as_object()
        .cloned()
        .unwrap_or_default(),
        computed: json!({"ltv": 250.5})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        groups: vec![json!({"plan": "enterprise"})
            .as_object()
            .cloned()
            .unwrap_or_default()],
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

/// Brute force and incremental (events applied in reverse) must agree; returns the result.
fn check(text: &str, events: &[EventFact], now: i64) -> bool {
    let rule = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
    let brute = evaluate(&rule, &facts(), events, now);
    let c = compile(rule);
    let mut st = AudienceState::new(&c);
    for e in events.iter().rev() {
        st.apply(&c, e);
    }
    assert_eq!(st.evaluate(&c, &facts(), now), brute, "{text}");
    brute
}

#[test]
fn trait_conditions() {
    let cases = [
        ("trait plan = \"pro\"", true),
        ("trait plan != \"pro\"", false),
        ("trait missing != \"pro\"", true),
        ("trait age > 40", true),
        ("trait age >= 42", true),
        ("trait age < 42", false),
        ("trait age <= 42.0", true),
        ("trait age = \"42\"", false),
        ("trait vip = true", true),
        ("trait email contains \"@example\"", true),
        ("trait tags contains \"b\"", true),
        ("trait email starts with \"ann\"", true),
        ("trait plan in [\"free\", \"pro\"]", true),
        ("trait plan in []", false),
        ("trait plan exists", true),
        ("trait nope exists", false),
        ("trait empty is empty", true),
        ("trait nope is empty", true),
        ("trait plan is empty", false),
        ("trait address.city = \"Oslo\"", true),
        ("trait \"address\" exists", true),
        ("trait signup_at > now - 30d", true),
        ("trait signup_at < date \"2023-12-01\"", true),
        ("computed ltv > 100", true),
        ("group trait plan = \"enterprise\"", true),
        ("utm source = \"google\"", true),
        ("utm source != \"google\"", false),
        ("utm campaign is empty", true),
        ("device type = \"mobile\"", true),
        ("device browser exists", false),
        ("in audience \"buyers\"", true),
        ("not in audience \"buyers\"", false),
        ("consented to email", true),
        ("consented to advertising", false),
        ("not consented to \"advertising\"", true),
        (
            "trait plan = \"pro\" and (trait age < 10 or trait vip = true)",
            true,
        ),
        ("not (trait plan = \"pro\" or trait age > 1)", false),
    ];
    for (text, want) in cases {
        assert_eq!(check(text, &[], T0 + D), want, "{text}");
    }
}

#[test]
fn performed_counts_and_windows() {
    let evs = [
        ev(1, T0, "Order Completed", json!({"total": 10})),
        ev(2, T0 + D, "Order Completed", json!({"total": 99})),
        ev(
            3,
            T0 + 2 * D,
            "Product Viewed",
            json!({"product": {"category": "shoes"}}),
        ),
    ];
    let now = T0 + 3 * D;
    assert!(check("performed \"Order Completed\"", &evs, now));
    assert!(check(
        "performed \"Order Completed\" exactly 2 times",
        &evs,
        now
    ));
    assert!(!check(
        "performed \"Order Completed\" at least 3 times",
        &evs,
        now
    ));
    assert!(check(
        "performed \"Order Completed\" at most 2 times",
        &evs,
        now
    ));
    assert!(check("performed \"Order Completed\" within 3d", &evs, now));
    assert!(check(
        "performed \"Order Completed\" exactly 1 time within 3d",
        &evs,
        now
    ));
    assert!(!check("performed \"Order Completed\" within 2d", &evs, now));
    assert!(check(
        "not performed \"Order Completed\" within 2d",
        &evs,
        now
    ));
    assert!(check(
        "performed \"Order Completed\" where total > 50",
        &evs,
        now
    ));
    assert!(!check(
        "performed \"Order Completed\" where (total > 50 and total < 60)",
        &evs,
        now
    ));
    assert!(check(
        "performed any event where product.category = \"shoes\"",
        &evs,
        now
    ));
    assert!(check("performed track at least 3 times", &evs, now));
    assert!(!check("performed page", &evs, now));
    // Time alone: the last order leaves the 3d window at exactly ts + 3d.
    let rule =
        compile(parse("performed \"Order Completed\" within 3d").unwrap_or_else(|e| panic!("{e}")));
    let mut st = AudienceState::new(&rule);
    evs.iter().for_each(|e| st.apply(&rule, e));
    assert_eq!(st.next_change(&rule, &facts(), now), Some(T0 + 4 * D));
    assert!(st.evaluate(&rule, &facts(), T0 + 4 * D - 1));
    assert!(!st.evaluate(&rule, &facts(), T0 + 4 * D));
}

#[test]
fn first_last_then_not_followed() {
    let evs = [
        ev(1, T0, "Product Added", json!({})),
        ev(2, T0 + H, "Order Completed", json!({})),
        ev(3, T0 + 5 * H, "Product Added", json!({})),
    ];
    let now = T0 + 10 * H;
    assert!(check(
        "first performed \"Product Added\" before now - 9h",
        &evs,
        now
    ));
    assert!(!check(
        "last performed \"Product Added\" before now - 9h",
        &evs,
        now
    ));
    assert!(check(
        "last performed \"Product Added\" after now - 6h",
        &evs,
        now
    ));
    assert!(check(
        "first performed \"Product Added\" after date \"2023-01-01\"",
        &evs,
        now
    ));
    assert!(!check(
        "first performed page after date \"2023-01-01\"",
        &evs,
        now
    ));
    assert!(check(
        "performed \"Product Added\" then \"Order Completed\" within 1h",
        &evs,
        now
    ));
    assert!(!check(
        "performed \"Product Added\" then \"Order Completed\" within 59m",
        &evs,
        now
    ));
    assert!(!check(
        "performed \"Order Completed\" then \"Order Completed\" within 1d",
        &evs,
        now
    ));
    // The latest add (5h) was not followed within 2h and its deadline (7h) passed.
    let nf = "performed \"Product Added\" and not followed by \"Order Completed\" within 2h";
    assert!(check(nf, &evs, now));
    assert!(!check(nf, &evs, T0 + 7 * H));
    assert!(check(nf, &evs, T0 + 7 * H + 1));
    assert!(!check(nf, &evs[..2], now));
    let rule = compile(parse(nf).unwrap_or_else(|e| panic!("{e}")));
    let mut st = AudienceState::new(&rule);
    evs.iter().for_each(|e| st.apply(&rule, e));
    assert_eq!(
        st.next_change(&rule, &facts(), T0 + 6 * H),
        Some(T0 + 7 * H + 1)
    );
    // A late checkout inside the window takes the person out again.
    st.apply(&rule, &ev(9, T0 + 6 * H, "Order Completed", json!({})));
    assert!(!st.evaluate(&rule, &facts(), now));
}

#[test]
fn text_json_round_trips() {
    let texts = [
        "trait plan = \"pro\"",
        "trait \"First Name\" starts with \"A\" or computed \"lifetime value\" >= -1.5",
        "(trait a = 1 and trait b = 2) and trait c = 3",
        "(trait a = 1 or trait b = 2) or trait c = 3",
        "not (trait a = 1 and trait b = 2)",
        "not not in audience \"x\"",
        "group trait plan in [\"a\", 2, true, now - 1d, date \"2024-01-01\"]",
        "utm term is empty and device os exists and device browser contains \"Fire\"",
        "performed page \"Pricing\" at least 3 times within 30d",
        "performed any event \"Home\" where (a = 1 or not b exists) at most 0 times within 90s",
        "performed screen exactly 1 time",
        "first performed identify before date \"2024-01-01T12:30:00.250Z\"",
        "last performed \"X\" where x.y < 3 after now + 1h",
        "performed \"A\" then \"B\" where c != \"d\" within 2h",
        "performed \"A\" and not followed by \"B\" within 15m and trait x = 1",
        "trait t > now - 1500ms",
    ];
    for t in texts {
        let rule = parse(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(rule.to_string(), t, "canonical text");
        let json = to_json(&rule);
        let back = from_json(&json, None).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert_eq!(back, rule);
        assert_eq!(back.to_string(), t);
    }
    // Non-canonical text becomes canonical.
    let r = parse("performed  \"A\" at least 1 times within 24h # comment\n and ( trait x=1 )")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.to_string(), "performed \"A\" within 1d and trait x = 1");
    // The JSON is readable.
    let v: Value = serde_json::from_str(&to_json(
        &parse("performed \"A\" within 7d").unwrap_or_else(|e| panic!("{e}")),
    ))
    .unwrap_or_default();
    assert_eq!(
        v,
        json!({"type": "performed", "event": {"kind": "track", "name": "A"},
               "count": {"at_least": 1}, "within": "7d"})
    );
}

#[test]
fn json_errors() {
    let e = from_json(
        r#"{"type": "and", "all": [{"type": "in_audience", "name": "x"}]}"#,
        None,
    );
    assert!(matches!(e, Err(RuleError::Json(m)) if m.contains("no text form")));
    let e = from_json(r#"{"type": "bogus"}"#, None);
    assert!(matches!(e, Err(RuleError::Json(m)) if m.contains("unknown variant")));
    let e = from_json(
        r#"{"type":"performed","event":{},"count":{"at_least":1},"within":"7x"}"#,
        None,
    );
    assert!(matches!(e, Err(RuleError::Json(m)) if m.contains("invalid duration `7x`")));
    let e = from_json(
        r#"{"type": "trait", "path": "", "cmp": {"op": "exists"}}"#,
        None,
    );
    assert!(matches!(e, Err(RuleError::Invalid(p)) if p.expected == "a trait name"));
    let cat = Catalog::default();
    let e = from_json(r#"{"type": "in_audience", "name": "x"}"#, Some(&cat));
    assert!(
        matches!(e, Err(RuleError::Invalid(p)) if p.offset == 12 && p.found == "unknown audience \"x\"")
    );
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(r) => panic!("{text} parsed as {r}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parse_error_messages() {
    let cases = [
        ("", "line 1, column 1 (byte 0): expected a condition (trait, computed, group trait, utm, device, in audience, consented to, performed, first performed, last performed), `not` or `(`, found the end of the rule"),
        ("trait", "line 1, column 6 (byte 5): expected a trait name, found the end of the rule"),
        ("trait x", "line 1, column 8 (byte 7): expected a comparison (=, !=, <, <=, >, >=, contains, starts with, in [...], exists, is empty), found the end of the rule"),
        ("trait x = ", "line 1, column 11 (byte 10): expected a value (a number, a \"string\", true, false, now, now - 7d, date \"2024-01-01\"), found the end of the rule"),
        ("trait x = 1 trait", "line 1, column 13 (byte 12): expected `and`, `or` or the end of the rule, found `trait`"),
        ("(trait x = 1", "line 1, column 13 (byte 12): expected `)`, `and` or `or`, found the end of the rule"),
        ("trait x ! 1", "line 1, column 9 (byte 8): expected `!=`, found `!`"),
        ("trait x = \"abc", "line 1, column 15 (byte 14): expected a closing `\"`, found the end of the line"),
        ("trait x = \"\\q\"", "line 1, column 11 (byte 10): expected a string with valid escapes (\\\" \\\\ \\n \\t \\uXXXX), found `\"\\q\"`"),
        ("trait x = 1.2.3", "line 1, column 11 (byte 10): expected a number, found `1.2.3`"),
        ("trait x = @", "line 1, column 11 (byte 10): expected a word, a string, a number, an operator or a parenthesis, found `@`"),
        ("trait x = -a", "line 1, column 12 (byte 11): expected a number, found `a`"),
        ("trait x starts \"a\"", "line 1, column 16 (byte 15): expected `with`, found `\"a\"`"),
        ("trait x starts with 1", "line 1, column 21 (byte 20): expected a \"string\", found `1`"),
        ("trait x in 1", "line 1, column 12 (byte 11): expected `[`, found `1`"),
        ("trait x in [1 2]", "line 1, column 15 (byte 14): expected `,` or `]`, found `2`"),
        ("trait x is full", "line 1, column 12 (byte 11): expected `empty`, found `full`"),
        ("trait x > now - 7", "line 1, column 17 (byte 16): expected a duration, e.g. `30m`, `2h` or `7d`, found `7`"),
        ("trait x > now - 7y", "line 1, column 17 (byte 16): expected a duration: a whole number and a unit (ms, s, m, h, d, w), e.g. `7d`, found `7y`"),
        ("trait x > date \"yesterday\"", "line 1, column 16 (byte 15): expected a date in quotes, \"2024-01-01\" or RFC 3339, found `\"yesterday\"`"),
        ("group trait = 1", "line 1, column 13 (byte 12): expected a group trait name, found `=`"),
        ("performed \"A\" where (x = 1", "line 1, column 27 (byte 26): expected `)`, `and` or `or`, found the end of the rule"),
        ("group plan = 1", "line 1, column 7 (byte 6): expected `trait`, found `plan`"),
        ("utm src = 1", "line 1, column 5 (byte 4): expected a UTM field (source, medium, campaign, content, term), found `src`"),
        ("device model = 1", "line 1, column 8 (byte 7): expected a device field (type, os, browser), found `model`"),
        ("in \"x\"", "line 1, column 4 (byte 3): expected `audience`, found `\"x\"`"),
        ("in audience", "line 1, column 12 (byte 11): expected an audience name, found the end of the rule"),
        ("computed = 1", "line 1, column 10 (byte 9): expected a computed trait name, found `=`"),
        ("performed 1", "line 1, column 11 (byte 10): expected an event (\"Event Name\", page, screen, track, identify, group, alias, or any event), found `1`"),
        ("performed any \"x\"", "line 1, column 15 (byte 14): expected `event`, found `\"x\"`"),
        ("performed \"A\" at 3 times", "line 1, column 18 (byte 17): expected `least` or `most`, found `3`"),
        ("performed \"A\" exactly 1.5 times", "line 1, column 23 (byte 22): expected a whole number of times, e.g. `3`, found `1.5`"),
        ("performed \"A\" exactly 2", "line 1, column 24 (byte 23): expected `times`, found the end of the rule"),
        ("performed \"A\" then \"B\"", "line 1, column 23 (byte 22): expected `within`, found the end of the rule"),
        ("performed \"A\" and not followed \"B\" within 1h", "line 1, column 32 (byte 31): expected `by`, found `\"B\"`"),
        ("performed \"A\" where 1 = 1", "line 1, column 21 (byte 20): expected a property path (e.g. `product.category`) or `(`, found `1`"),
        ("performed \"A\" where t > now", "line 1, column 25 (byte 24): expected a value without `now` (a where clause is matched when the event arrives; use `within` for recency), found `now`"),
        ("first \"A\" before now", "line 1, column 7 (byte 6): expected `performed`, found `\"A\"`"),
        ("last performed \"A\" since now", "line 1, column 20 (byte 19): expected `before` or `after`, found `since`"),
        ("last performed \"A\" before 5", "line 1, column 27 (byte 26): expected a time (now, now - 7d, now + 1h, date \"2024-01-01\"), found `5`"),
        ("trait a = 1 and\n  bogus", "line 2, column 3 (byte 18): expected a condition (trait, computed, group trait, utm, device, in audience, consented to, performed, first performed, last performed), `not` or `(`, found `bogus`"),
    ];
    for (text, want) in cases {
        assert_eq!(err(text), want, "{text}");
    }
    let deep = format!("{}trait a = 1{}", "(".repeat(70), ")".repeat(70));
    assert!(err(&deep).contains("expected at most 64 levels of nesting"));
}

#[test]
fn catalog_errors() {
    let cat = Catalog {
        computed: ["ltv".to_owned()].into_iter().collect(),
        audiences: ["buyers".to_owned(), "vip".to_owned()]
            .into_iter()
            .collect(),
    };
    assert!(parse_checked("computed ltv > 1 and in audience \"vip\"", &cat).is_ok());
    let e = parse_checked("computed ltv > 1 and\n  computed orders > 1", &cat);
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("line 2, column 12 (byte 32): expected a known computed trait (\"ltv\"), found unknown computed trait \"orders\"".to_owned())
    );
    let e = parse_checked("in audience \"nope\"", &cat);
    assert_eq!(
        e.map_err(|e| e.to_string()),
        Err("line 1, column 13 (byte 12): expected a known audience (\"buyers\", \"vip\"), found unknown audience \"nope\"".to_owned())
    );
    let many = Catalog {
        computed: (0..12).map(|i| format!("c{i:02}")).collect(),
        audiences: Default::default(),
    };
    assert_eq!(
        parse_checked("computed x exists", &many).map_err(|e| e.expected),
        Err("a known computed trait (\"c00\", \"c01\", \"c02\", \"c03\", \"c04\", \"c05\", \"c06\", \"c07\", \"c08\", \"c09\", …)".to_owned())
    );
    let e = parse_checked("computed x exists", &Catalog::default());
    assert_eq!(
        e.map_err(|e| e.expected),
        Err("a known computed trait (none are defined)".to_owned())
    );
}

#[test]
fn nested_audiences_order_and_cycles() {
    let p = |t: &str| parse(t).unwrap_or_else(|e| panic!("{e}"));
    let mut defs = std::collections::BTreeMap::new();
    defs.insert(
        "a".to_owned(),
        p("in audience \"b\" and not in audience \"c\""),
    );
    defs.insert("b".to_owned(), p("in audience \"c\""));
    defs.insert("c".to_owned(), p("trait x exists"));
    assert_eq!(
        audience_order(&defs),
        Ok(vec!["c".into(), "b".into(), "a".into()])
    );
    defs.insert("c".to_owned(), p("in audience \"a\""));
    let e = audience_order(&defs).map_err(|e| e.to_string());
    assert_eq!(
        e,
        Err("audiences refer to each other in a cycle: a → b → c → a".to_owned())
    );
    defs.insert("c".to_owned(), p("in audience \"zz\""));
    assert_eq!(
        audience_order(&defs).map_err(|e| e.to_string()),
        Err("audience \"c\" refers to unknown audience \"zz\"".to_owned())
    );
    defs.insert("c".to_owned(), p("in audience \"c\""));
    assert_eq!(
        audience_order(&defs),
        Err(OrderError::Cycle(vec!["c".into(), "c".into()]))
    );
    // Exclusion: members of "buyers" are not in "prospects".
    let f = facts();
    let prospects = p("trait plan exists and not in audience \"buyers\"");
    assert!(!evaluate(&prospects, &f, &[], T0));
    let mut f2 = f.clone();
    f2.audiences.clear();
    assert!(evaluate(&prospects, &f2, &[], T0));
}

#[test]
fn dependencies() {
    let r = parse(
        "trait address.city = \"x\" and computed ltv > 1 and group trait plan exists and \
         utm source exists and device type exists and in audience \"b\" and \
         performed page \"Home\" within 1d",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let d = Dependencies::of(&r);
    assert_eq!(d.traits.iter().collect::<Vec<_>>(), ["address"]);
    assert_eq!(d.computed.iter().collect::<Vec<_>>(), ["ltv"]);
    assert_eq!(d.group_traits.iter().collect::<Vec<_>>(), ["plan"]);
    assert_eq!(d.audiences.iter().collect::<Vec<_>>(), ["b"]);
    assert!(d.channels && d.devices && d.time);
    let mut page = ev(1, T0, "Home", json!({}));
    assert!(!d.event_matters(&page));
    page.kind = EventType::Page;
    assert!(d.event_matters(&page));
    assert!(!Dependencies::of(&parse("performed \"A\"").unwrap_or_else(|e| panic!("{e}"))).time);
}

#[test]
fn facts_from_parsed_events_and_profiles() {
    use crate::identity::ProfileId;
    use crate::profile::{parse_event, Profile};
    let env = json!({
        "v": 1, "source_id": "src_web", "type": "track", "message_id": "m1",
        "received_at": "2026-01-01T12:00:00.000Z", "timestamp": "2026-01-01T11:59:59.500Z",
        "utm": {"source": "google", "medium": "cpc"},
        "user_agent": {"device_type": "mobile", "os": "iOS"},
        "message": {"type": "track", "event": "Order Completed", "userId": "u1",
            "properties": {"total": 10, "product": {"category": "shoes"}, "items": [{"sku": "a"}]}},
    });
    let bytes = serde_json::to_vec(&env).unwrap_or_default();
    let view = parse_event(7, T0, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let fact = EventFact::from_view(&view);
    assert_eq!((fact.seq, fact.ts_ms, fact.kind), (7, T0, EventType::Track));
    assert_eq!(fact.name.as_deref(), Some("Order Completed"));
    assert_eq!(fact.property("product.category"), Some(&json!("shoes")));
    assert_eq!(fact.property("items.0.sku"), Some(&json!("a")));
    assert_eq!(fact.property("items.x"), None);
    let mut p = Profile::new(ProfileId::from_seq(1));
    p.apply(&view);
    let f = ProfileFacts::from_profile(&p);
    let rule =
        parse("utm source = \"google\" and device os = \"iOS\" and device type = \"mobile\"")
            .unwrap_or_else(|e| panic!("{e}"));
    assert!(evaluate(&rule, &f, std::slice::from_ref(&fact), T0));
    // A page's name is its `name`; properties that are not an object are ignored.
    let mut env = env;
    env["type"] = json!("page");
    env["message"] = json!({"type": "page", "name": "Pricing", "userId": "u1", "properties": 5});
    let bytes = serde_json::to_vec(&env).unwrap_or_default();
    let view = parse_event(8, T0, &bytes).unwrap_or_else(|e| panic!("{e}"));
    let fact = EventFact::from_view(&view);
    assert_eq!(
        (fact.kind, fact.name.as_deref()),
        (EventType::Page, Some("Pricing"))
    );
    assert!(fact.properties.is_empty());
    assert!(check("performed page \"Pricing\"", &[fact], T0));
}

#[test]
fn facts_with_only_the_properties_definitions_read() {
    use crate::profile::parse_event;
    let env = |props: Value| {
        let e = json!({
            "v": 1, "source_id": "src_web", "type": "track", "message_id": "m1",
            "received_at": "2026-01-01T12:00:00.000Z", "timestamp": "2026-01-01T11:59:59.500Z",
            "message": {"type": "track", "event": "Order Completed", "userId": "u1", "properties": props},
        });
        serde_json::to_vec(&e).unwrap_or_default()
    };
    // The keys the rules read: `product` (nested path), `total`, and an escaped name.
    let rule = parse(
        r#"performed "Order Completed" where (product.category = "shoes" and total > 5 or "a\"b" exists)"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut keys = std::collections::BTreeSet::new();
    rule.walk(&mut |r| {
        if let Rule::Performed { event, .. } = r {
            property_keys(event, &mut keys);
        }
    });
    let want: Vec<&str> = vec!["a\"b", "product", "total"];
    assert_eq!(keys.iter().map(String::as_str).collect::<Vec<_>>(), want);
    for props in [
        json!({"total": 10, "product": {"category": "shoes"}, "items": [{"sku": "a"}], "a\"b": 1, "x": null}),
        json!({"items": [1, 2, {"total": 3}], "note": "total"}),
        json!({"total": 1, "total": 7}),
        json!([1, 2]),
        json!(5),
        json!({}),
    ] {
        let bytes = env(props);
        let view = parse_event(9, T0, &bytes).unwrap_or_else(|e| panic!("{e}"));
        let full = EventFact::from_view(&view);
        let lean = EventFact::from_view_keys(&view, &keys);
        let mut expect = full.clone();
        expect.properties.retain(|k, _| keys.contains(k));
        assert_eq!(lean, expect);
        // A backfill's lean parse gives the same fact.
        let lv = crate::profile::parse_event_lean(9, &bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(EventFact::from_lean(9, T0, &lv, &keys), lean);
        // Rules see the same event either way.
        assert_eq!(
            evaluate(&rule, &facts(), std::slice::from_ref(&full), T0),
            evaluate(&rule, &facts(), std::slice::from_ref(&lean), T0)
        );
    }
    // No key read: no property kept.
    let bytes = env(json!({"total": 1}));
    let view = parse_event(9, T0, &bytes).unwrap_or_else(|e| panic!("{e}"));
    assert!(EventFact::from_view_keys(&view, &Default::default())
        .properties
        .is_empty());
}

#[test]
fn audience_set_nesting_exclusion_and_time() {
    let p = |t: &str| parse(t).unwrap_or_else(|e| panic!("{e}"));
    let defs: std::collections::BTreeMap<String, Rule> = [
        (
            "recent_buyers",
            p("performed \"Order Completed\" within 7d"),
        ),
        (
            "prospects",
            p("performed \"Product Viewed\" and not in audience \"recent_buyers\""),
        ),
        (
            "retarget",
            p("in audience \"prospects\" and device type = \"mobile\""),
        ),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_owned(), r))
    .collect();
    let set = AudienceSet::new(defs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.order(), ["recent_buyers", "prospects", "retarget"]);
    assert_eq!(set.dependents("recent_buyers"), ["prospects", "retarget"]);
    assert_eq!(set.dependents("retarget"), Vec::<String>::new());
    let mut states = std::collections::BTreeMap::new();
    for e in [
        ev(1, T0, "Product Viewed", json!({})),
        ev(2, T0 + H, "Order Completed", json!({})),
    ] {
        for name in set.order() {
            let rule = set.get(name).unwrap_or_else(|| panic!("{name}"));
            let st = states
                .entry(name.clone())
                .or_insert_with(|| AudienceState::new(rule));
            if rule.deps.event_matters(&e) {
                st.apply(rule, &e);
            }
        }
    }
    let f = facts();
    let names = |s: std::collections::BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(set.evaluate_all(&states, &f, T0 + 2 * H)),
        ["recent_buyers"]
    );
    // Seven days after the order the person leaves "recent_buyers" — and so enters the
    // audiences that exclude it — with no new event.
    let t = set.next_change_all(&states, &f, T0 + 2 * H);
    assert_eq!(t, Some(T0 + H + 7 * D));
    assert_eq!(
        names(set.evaluate_all(&states, &f, T0 + H + 7 * D)),
        ["prospects", "retarget"]
    );
    assert_eq!(
        set.evaluate_all(&states, &f, T0 + H + 7 * D),
        set.evaluate_all_brute(
            &f,
            &[
                ev(1, T0, "Product Viewed", json!({})),
                ev(2, T0 + H, "Order Completed", json!({}))
            ],
            T0 + H + 7 * D
        )
    );
    let keys = set.get("prospects").map(|r| r.deps.index_keys());
    assert_eq!(
        keys.map(|k| k.into_iter().collect::<Vec<_>>()),
        Some(vec![(Some("track"), Some("Product Viewed".to_owned()))])
    );
}

#[test]
fn lean_parse_reads_kind_name_and_properties_like_the_full_parse() {
    use crate::profile::{parse_event, parse_event_lean};
    let keys: std::collections::BTreeSet<String> =
        ["price", "a\"b"].iter().map(|k| (*k).to_owned()).collect();
    let messages = [
        json!({"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"price": 3, "x": 1}}),
        json!({"type": "track", "event": "Say \"hi\" \\ \n", "userId": "u1"}),
        json!({"type": "track", "event": 42, "name": "ignored", "anonymousId": "a"}),
        json!({"type": "track", "event": null, "userId": "u1", "properties": null}),
        json!({"type": "track", "event": "", "userId": "u1", "properties": [1]}),
        json!({"type": "page", "name": "Pricing", "event": "not this", "userId": "u1", "properties": {"a\"b": true}}),
        json!({"type": "screen", "name": {"x": 1}, "userId": "u1"}),
        json!({"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}),
        json!({"type": "group", "userId": "u1", "groupId": "g", "properties": {"price": "1"}}),
    ];
    for (i, m) in messages.into_iter().enumerate() {
        let kind = m["type"].clone();
        let e = json!({
            "v": 1, "source_id": "src_web", "type": kind, "message_id": format!("m{i}"),
            "received_at": "2026-01-01T12:00:00.000Z", "timestamp": "2026-01-01T11:59:59.500Z",
            "message": m,
        });
        let bytes = serde_json::to_vec(&e).unwrap_or_default();
        let full = parse_event(5, T0, &bytes).unwrap_or_else(|e| panic!("{i}: {e}"));
        let lean = parse_event_lean(5, &bytes).unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(
            EventFact::from_lean(5, T0, &lean, &keys),
            EventFact::from_view_keys(&full, &keys),
            "message {i}"
        );
    }
    // Not JSON, or no type: refused.
    assert!(parse_event_lean(1, b"{").is_err());
    assert!(parse_event_lean(1, br#"{"message": {}}"#).is_err());
}

/// UTM and device conditions compare strings through a reused buffer: the same answers as
/// the `Value` path, for every comparison, on no value, absent values and several values.
#[test]
fn string_comparisons_equal_the_value_path() {
    use super::compare::{holds_any, holds_any_str};
    let s = |v: &str| Literal::String(v.to_owned());
    let cmps = [
        Comparison::Eq { value: s("google") },
        Comparison::Ne { value: s("google") },
        Comparison::Lt { value: s("m") },
        Comparison::Ge { value: s("g") },
        Comparison::Contains { value: s("oo") },
        Comparison::StartsWith {
            value: "go".to_owned(),
        },
        Comparison::In {
            values: vec![s("bing"), s("google")],
        },
        Comparison::Eq {
            value: Literal::Number(1.0),
        },
        Comparison::Exists,
        Comparison::IsEmpty,
    ];
    let sets: [&[Option<&str>]; 6] = [
        &[],
        &[None],
        &[Some("google")],
        &[Some("bing"), None],
        &[Some(""), Some("google")],
        &[Some("yahoo"), Some("bing")],
    ];
    for cmp in &cmps {
        for set in sets {
            let values: Vec<Option<Value>> = set.iter().map(|v| v.map(|s| json!(s))).collect();
            assert_eq!(
                holds_any_str(set.iter().copied(), cmp, T0),
                holds_any(values.iter().map(Option::as_ref), cmp, T0),
                "{cmp:?} over {set:?}"
            );
        }
    }
}
