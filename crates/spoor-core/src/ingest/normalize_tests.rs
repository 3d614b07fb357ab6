use super::*;
use serde_json::json;

fn at(s: &str) -> DateTime<Utc> {
    parse_time(s).unwrap()
}

fn run(raw: &str, f: impl FnOnce(&mut IngestContext)) -> Result<(Normalized, Value), Rejection> {
    let source = SourceId::parse("src_test").unwrap();
    let limits = Limits::default();
    let gen = || "gen-1".to_string();
    let mut ctx = IngestContext {
        source_id: &source,
        received_at: at("2026-01-01T12:00:00Z"),
        peer_ip: Some("10.1.2.3".parse().unwrap()),
        path_type: None,
        batch_sent_at: None,
        batch_context: None,
        batch_integrations: None,
        limits: &limits,
        new_message_id: &gen,
    };
    f(&mut ctx);
    let raw: Box<RawValue> = serde_json::from_str(raw).unwrap();
    let n = normalize(&raw, &ctx)?;
    let v: Value = serde_json::from_slice(&n.bytes).unwrap();
    Ok((n, v))
}

#[test]
fn clock_skew_is_corrected_from_sent_at() {
    // The client clock is 1 hour fast: it says it sent at 13:00:05 an event from 13:00:00.
    let (n, v) = run(
        r#"{"type":"track","event":"E","userId":"u","timestamp":"2026-01-01T13:00:00.000+00:00","sentAt":"2026-01-01T13:00:05Z"}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["timestamp"], "2026-01-01T11:59:55.000Z");
    assert_eq!(v["original_timestamp"], "2026-01-01T13:00:00.000+00:00");
    assert_eq!(v["received_at"], "2026-01-01T12:00:00.000Z");
    assert_eq!(
        n.timestamp_ms,
        at("2026-01-01T11:59:55Z").timestamp_millis()
    );
}

#[test]
fn batch_sent_at_and_original_timestamp_field_are_used() {
    let (_, v) = run(
        r#"{"type":"track","event":"E","userId":"u","originalTimestamp":"2026-01-01T13:00:00.123456Z"}"#,
        |c| c.batch_sent_at = Some("2026-01-01T13:00:01.123456Z"),
    )
    .unwrap();
    assert_eq!(v["timestamp"], "2026-01-01T11:59:59.000Z");
}

#[test]
fn without_sent_at_the_timestamp_is_trusted_and_without_either_received_at_is_used() {
    let (_, v) = run(
        r#"{"type":"page","userId":"u","timestamp":"2025-06-01T00:00:00Z"}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["timestamp"], "2025-06-01T00:00:00.000Z");
    let (_, v) = run(r#"{"type":"page","userId":"u"}"#, |_| {}).unwrap();
    assert_eq!(v["timestamp"], "2026-01-01T12:00:00.000Z");
}

#[test]
fn bad_timestamp_is_tolerated_with_a_warning() {
    let (_, v) = run(
        r#"{"type":"page","userId":"u","timestamp":"yesterday"}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["timestamp"], "2026-01-01T12:00:00.000Z");
    assert!(v["warnings"][0].as_str().unwrap().contains("yesterday"));
}

#[test]
fn missing_message_id_is_generated_and_not_deduped() {
    let (n, v) = run(r#"{"type":"identify","anonymousId":"a"}"#, |_| {}).unwrap();
    assert_eq!(v["message_id"], "gen-1");
    assert_eq!(v["message_id_generated"], true);
    assert_eq!(n.dedupe_key, None);
    let (n, _) = run(
        r#"{"type":"identify","anonymousId":"a","messageId":7}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(n.message_id, "7");
    assert!(n.dedupe_key.is_some());
}

#[test]
fn ip_from_context_wins_over_peer() {
    let (_, v) = run(r#"{"type":"identify","userId":"u"}"#, |_| {}).unwrap();
    assert_eq!(v["ip"], "10.1.2.3");
    let (_, v) = run(
        r#"{"type":"identify","userId":"u","context":{"ip":"1.2.3.4"}}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["ip"], "1.2.3.4");
}

#[test]
fn utm_from_campaign_then_page_url_then_properties() {
    let (_, v) = run(
        r#"{"type":"page","userId":"u","context":{"campaign":{"source":"news","medium":"email","name":"spring"},"page":{"url":"https://x/?utm_source=other"}}}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        v["utm"],
        json!({"source":"news","medium":"email","campaign":"spring"})
    );
    let (_, v) = run(
        r#"{"type":"page","userId":"u","context":{"page":{"url":"https://x/?utm_source=g&utm_term=t"}}}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["utm"], json!({"source":"g","term":"t"}));
    let (_, v) = run(
        r#"{"type":"page","userId":"u","properties":{"url":"https://x/?utm_medium=cpc"}}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["utm"], json!({"medium":"cpc"}));
    let (_, v) = run(r#"{"type":"page","userId":"u"}"#, |_| {}).unwrap();
    assert!(v.get("utm").is_none());
}

#[test]
fn user_agent_is_parsed() {
    let (_, v) = run(
        r#"{"type":"page","userId":"u","context":{"userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}}"#,
        |_| {},
    )
    .unwrap();
    assert_eq!(v["user_agent"]["device_type"], "mobile");
    assert_eq!(v["user_agent"]["os"], "iPhone");
}

#[test]
fn the_message_is_kept_byte_for_byte_with_unknown_fields() {
    let raw = r#"{"type":"track","event":"E","userId":"u","weird":{"nested":[1,2,{"x":null}]},"messageId":"m1"}"#;
    let (n, _) = run(raw, |_| {}).unwrap();
    let text = String::from_utf8(n.bytes).unwrap();
    assert!(text.contains(raw), "{text}");
}

#[test]
fn batch_context_is_merged_with_the_event_winning() {
    let shared: Box<RawValue> =
        serde_json::from_str(r#"{"library":{"name":"batch"},"locale":"nl-NL"}"#).unwrap();
    let (_, v) = run(
        r#"{"type":"track","event":"E","userId":"u","context":{"library":{"name":"own"}}}"#,
        |c| {
            c.batch_context = Some(Box::leak(shared));
        },
    )
    .unwrap();
    assert_eq!(v["message"]["context"]["library"]["name"], "own");
    assert_eq!(v["message"]["context"]["locale"], "nl-NL");
}

#[test]
fn path_type_overrides_and_fills_in_the_type() {
    let (n, v) = run(r#"{"userId":"u","event":"E"}"#, |c| {
        c.path_type = Some(EventType::Track)
    })
    .unwrap();
    assert_eq!(n.kind, EventType::Track);
    assert_eq!(v["type"], "track");
}

#[test]
fn rejections_name_their_reason() {
    let code = |raw: &str| run(raw, |_| {}).unwrap_err().code;
    assert_eq!(
        code(r#"{"type":"track","event":"E"}"#),
        RejectCode::MissingIdentity
    );
    assert_eq!(
        code(r#"{"type":"track","userId":null,"anonymousId":" ","event":"E"}"#),
        RejectCode::MissingIdentity
    );
    assert_eq!(
        code(r#"{"type":"track","userId":"u"}"#),
        RejectCode::MissingField
    );
    assert_eq!(
        code(r#"{"type":"group","userId":"u"}"#),
        RejectCode::MissingField
    );
    assert_eq!(
        code(r#"{"type":"alias","userId":"u"}"#),
        RejectCode::MissingIdentity
    );
    assert_eq!(
        code(r#"{"type":"purchase","userId":"u"}"#),
        RejectCode::InvalidType
    );
    assert_eq!(code(r#"{"userId":"u"}"#), RejectCode::InvalidType);
    assert_eq!(
        code(r#"{"type":"track","event":"E","userId":{"id":1}}"#),
        RejectCode::InvalidJson
    );
    assert_eq!(code(r#"[1,2]"#), RejectCode::InvalidJson);
    let big = format!(
        r#"{{"type":"track","event":"E","userId":"u","p":"{}"}}"#,
        "x".repeat(33 * 1024)
    );
    assert_eq!(code(&big), RejectCode::EventTooLarge);
}

#[test]
fn time_formats() {
    for s in [
        "2026-01-01T12:00:00Z",
        "2026-01-01T12:00:00.000Z",
        "2026-01-01T12:00:00.000000+00:00",
        "2026-01-01T14:00:00+02:00",
        "2026-01-01T12:00:00",
        "1767268800",
        "1767268800000",
    ] {
        assert_eq!(parse_time(s), Some(at("2026-01-01T12:00:00Z")), "{s}");
    }
    assert_eq!(parse_time("nope"), None);
    assert_eq!(parse_time("-5"), None);
}

#[test]
fn write_key_is_not_stored_but_everything_else_is() {
    let (_, v) = run(
        r#"{"type":"track","event":"E","userId":"u","writeKey":"SECRET","_metadata":{"a":1}}"#,
        |_| {},
    )
    .unwrap();
    assert!(v["message"].get("writeKey").is_none());
    assert_eq!(v["message"]["_metadata"]["a"], 1);
    assert!(!v.to_string().contains("SECRET"));
}

#[test]
fn batch_context_feeds_enrichment_too() {
    let shared: Box<RawValue> = serde_json::from_str(
        r#"{"ip":"1.2.3.4","campaign":{"source":"newsletter"},"userAgent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}"#,
    )
    .unwrap();
    let (_, v) = run(r#"{"type":"page","userId":"u"}"#, |c| {
        c.batch_context = Some(Box::leak(shared));
    })
    .unwrap();
    assert_eq!(v["ip"], "1.2.3.4");
    assert_eq!(v["utm"]["source"], "newsletter");
    assert_eq!(v["user_agent"]["device_type"], "mobile");
}
