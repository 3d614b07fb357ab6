//! PostgreSQL sync and NATS JetStream destinations against the real local services (URLs
//! from SPOOR_TEST_POSTGRES_URL and SPOOR_TEST_NATS_URL). Each test uses a schema / stream
//! of its own, so they run in parallel and can be rerun. Without a URL a test says why and
//! returns; with CI set, a missing URL fails it.

use crate::common::{call, TestServer};
pub(crate) use crate::drop_schema::drop_schema;
use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{var} is not set; CI must provide the service"
            );
            eprintln!("skipping: {var} is not set (e.g. postgres://postgres@127.0.0.1:5432/test, nats://127.0.0.1:4222)");
            None
        }
    }
}

pub(crate) fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub(crate) async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
    })
    .await
}

async fn define(srv: &TestServer, name: &str, rule: &str) {
    let def = AudienceDefinition {
        name: name.into(),
        description: String::new(),
        rule: parse(rule).unwrap(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    srv.define(|d| {
        d.audiences.insert(name.into(), def);
    })
    .await;
}

pub(crate) async fn pg(url: &str) -> tokio_postgres::Client {
    let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    c
}

/// profile id → (traits, identities, merged_ids) and (audience, profile id) rows.
type Tables = (BTreeMap<String, Value>, Vec<(String, String)>);

/// The tables of `schema.prefix…`.
async fn tables(c: &tokio_postgres::Client, schema: &str) -> Tables {
    let (schema, prefix) = schema.split_once('.').unwrap_or((schema, ""));
    let rows = c
        .query(
            &format!(
                "SELECT id, json_build_object('traits', traits, 'identities', identities,
                        'merged_ids', merged_ids, 'event_count', event_count)::text
                 FROM \"{schema}\".\"{prefix}profiles\""
            ),
            &[],
        )
        .await
        .unwrap();
    let profiles = rows
        .iter()
        .map(|r| {
            let doc: String = r.get(1);
            (r.get::<_, String>(0), serde_json::from_str(&doc).unwrap())
        })
        .collect();
    let rows = c
        .query(
            &format!(
                "SELECT audience, profile_id FROM \"{schema}\".\"{prefix}audience_memberships\"
                 ORDER BY audience, profile_id"
            ),
            &[],
        )
        .await
        .unwrap();
    let members = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    (profiles, members)
}

/// Waits (30 s at most) until the tables satisfy `f`.
pub(crate) async fn wait_tables(
    c: &tokio_postgres::Client,
    schema: &str,
    what: &str,
    f: impl Fn(&Tables) -> bool,
) -> Tables {
    for _ in 0..600 {
        let t = tables(c, schema).await;
        if f(&t) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not reached in 30 s: {:?}", tables(c, schema).await);
}

async fn profile_id(srv: &TestServer, user: &str) -> String {
    let (s, v) = srv.admin_get(&format!("/v1/profiles/user_id:{user}")).await;
    assert_eq!(s, 200, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

pub(crate) fn identify(user: &str, plan: &str, n: u64) -> Value {
    json!({"type": "identify", "userId": user, "messageId": format!("{user}-id-{n}"),
           "traits": {"plan": plan, "n": n}})
}

#[tokio::test]
async fn postgres_sync_upserts_profiles_and_memberships_and_reflects_exits() {
    let Some(url) = service_url("SPOOR_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = unique("t_");
    let srv = start().await;
    define(&srv, "pros", r#"trait plan = "pro""#).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "db", "type": "postgres",
                    "postgres": {"url": url, "schema": schema, "batch_size": 50}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // No subscriptions given: a database sync takes every event and audience.
    assert_eq!(v["subscriptions"]["audiences"][0]["audience"], "*", "{v}");

    srv.send_processed(vec![
        identify("u1", "pro", 1),
        identify("u2", "free", 1),
        identify("u3", "pro", 1),
    ])
    .await;
    let (p1, p2, p3) = (
        profile_id(&srv, "u1").await,
        profile_id(&srv, "u2").await,
        profile_id(&srv, "u3").await,
    );
    let c = pg(&url).await;
    let (profiles, members) = wait_tables(&c, &schema, "3 profiles, 2 pros", |(p, m)| {
        p.len() == 3 && m.len() == 2
    })
    .await;
    assert_eq!(profiles[&p1]["traits"]["plan"], "pro");
    assert_eq!(profiles[&p2]["traits"]["plan"], "free");
    assert_eq!(
        profiles[&p1]["identities"],
        json!([{"type": "user_id", "value": "u1"}])
    );
    let mut want = vec![("pros".to_owned(), p1.clone()), ("pros".into(), p3.clone())];
    want.sort();
    assert_eq!(members, want);

    // u1 leaves the audience: its row goes; its profile row is updated in place.
    srv.send_processed(vec![identify("u1", "free", 2)]).await;
    let (profiles, members) = wait_tables(&c, &schema, "u1 exited", |(p, m)| {
        m.len() == 1 && p.get(&p1).is_some_and(|d| d["traits"]["plan"] == "free")
    })
    .await;
    assert_eq!(members, vec![("pros".into(), p3.clone())]);
    assert_eq!(profiles.len(), 3);
    assert_eq!(profiles[&p1]["traits"]["n"], 2);

    // Re-delivery of the whole history (a second destination into the same tables, from
    // the beginning) changes nothing: every write is an upsert keyed by ids.
    let before = tables(&c, &schema).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(
            json!({"name": "again", "type": "postgres", "start": "beginning",
                    "postgres": {"url": url, "schema": schema}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (_, db) = call(&srv, "GET", "/v1/destinations/db", None).await;
    let done = |v: &Value| {
        v["stats"]["event_cursor"] == db["stats"]["event_cursor"]
            && v["stats"]["change_cursor"] == db["stats"]["change_cursor"]
    };
    for _ in 0..600 {
        let (_, v) = call(&srv, "GET", "/v1/destinations/again", None).await;
        if done(&v) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, v) = call(&srv, "GET", "/v1/destinations/again", None).await;
    assert!(done(&v), "{v} {db}");
    // 4 events, 2 entries, 1 exit.
    assert_eq!(v["stats"]["delivered"], 7, "{v}");
    assert_eq!(tables(&c, &schema).await, before);

    // `test` connects and counts rows.
    let (s, v) = call(&srv, "POST", "/v1/destinations/db/test", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["ok"], true, "{v}");
    assert_eq!(
        v["result"]["tables"][format!("\"{schema}\".\"profiles\"")],
        3,
        "{v}"
    );

    // Erasing u2 (in no audience: no exit to carry it) sends the sync a deletion notice,
    // and its profile row goes.
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/privacy/erasures?wait=true",
        Some(json!({"ref": "user_id:u2"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (profiles, members) =
        wait_tables(&c, &schema, "u2 erased", |(p, _)| !p.contains_key(&p2)).await;
    assert_eq!(profiles.len(), 2, "{profiles:?}");
    assert_eq!(members, vec![("pros".into(), p3.clone())]);
    drop_schema(&c, &schema).await;
}

#[tokio::test]
async fn postgres_sync_folds_a_merge_and_keeps_its_position_across_a_restart() {
    let Some(url) = service_url("SPOOR_TEST_POSTGRES_URL") else {
        return;
    };
    let schema = unique("t_");
    let srv = start().await;
    define(&srv, "visitors", r#"performed "Visit""#).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "db", "type": "postgres",
                    "postgres": {"url": url, "schema": schema, "table_prefix": "cdp_"}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // An anonymous visitor (the older profile) and a known user, both in the audience.
    srv.send_processed(vec![
        json!({"type": "track", "anonymousId": "a1", "event": "Visit", "messageId": "m1"}),
        json!({"type": "track", "userId": "u5", "event": "Visit", "messageId": "m2"}),
    ])
    .await;
    let schema_t = format!("{schema}.cdp_");
    let c = pg(&url).await;
    let (profiles, members) = wait_tables(&c, &schema_t, "2 visitors", |(p, m)| {
        p.len() == 2 && m.len() == 2
    })
    .await;
    assert_eq!(profiles.len(), 2);
    assert_eq!(members.len(), 2);

    // One event with both identifiers merges them: one profile row and one membership
    // row remain, both the survivor's.
    srv.send_processed(vec![
        json!({"type": "track", "anonymousId": "a1", "userId": "u5",
                                   "event": "Login", "messageId": "m3"}),
    ])
    .await;
    let survivor = profile_id(&srv, "u5").await;
    let (profiles, members) = wait_tables(&c, &schema_t, "merged", |(p, m)| {
        p.len() == 1 && m.len() == 1 && p.contains_key(&survivor)
    })
    .await;
    assert_eq!(members, vec![("visitors".into(), survivor.clone())]);
    let doc = &profiles[&survivor];
    assert_eq!(doc["merged_ids"].as_array().unwrap().len(), 1, "{doc}");
    assert_eq!(doc["identities"].as_array().unwrap().len(), 2, "{doc}");
    assert_eq!(doc["event_count"], 3, "{doc}");

    // After a restart the position is where it was: nothing is applied twice, new
    // events still arrive.
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
    })
    .await;
    srv.send_processed(vec![
        json!({"type": "identify", "userId": "u6", "messageId": "m4",
                                   "traits": {"plan": "pro"}}),
    ])
    .await;
    wait_tables(&c, &schema_t, "u6 added", |(p, _)| p.len() == 2).await;
    let (_, v) = call(&srv, "GET", "/v1/destinations/db", None).await;
    // 4 events and 2 entries, each once.
    assert_eq!(v["stats"]["delivered"], 6, "{v}");
    assert_eq!(v["stats"]["dead_letters"], 0, "{v}");
    drop_schema(&c, &schema).await;
}

#[tokio::test]
async fn unreachable_or_bad_services_are_refused_with_the_reason() {
    let srv = start().await;
    let cases = [
        (
            json!({"name": "x", "type": "postgres", "postgres": {"url": "postgres://postgres@127.0.0.1:1/test"}}),
            "127.0.0.1",
        ),
        (
            json!({"name": "x", "type": "postgres", "postgres": {"url": "mysql://h/db"}}),
            "postgres.url",
        ),
        (
            json!({"name": "x", "type": "postgres", "postgres": {"url": "postgres://h/db", "schema": "Bad-Name"}}),
            "postgres.schema",
        ),
        (
            json!({"name": "x", "type": "nats", "nats": {"url": "http://127.0.0.1:4222", "stream": "S"}}),
            "nats.url",
        ),
        (
            json!({"name": "x", "type": "nats", "nats": {"url": "nats://127.0.0.1:1", "stream": "S"}}),
            "cannot connect to NATS",
        ),
        (
            json!({"name": "x", "type": "nats", "webhook": {"url": "http://x"}}),
            "nats settings are required",
        ),
    ];
    for (body, needle) in cases {
        let (s, v) = call(&srv, "POST", "/v1/destinations", Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {v}");
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    // A stream that does not exist (and is not to be created) is named.
    if let Some(url) = service_url("SPOOR_TEST_NATS_URL") {
        let stream = unique("T_");
        let (s, v) = call(
            &srv,
            "POST",
            "/v1/destinations",
            Some(json!({"name": "x", "type": "nats", "nats": {"url": url, "stream": stream}})),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert!(v["message"].as_str().unwrap().contains(&stream), "{v}");
    }
}

#[tokio::test]
async fn nats_publishes_events_and_audience_changes_on_their_subjects_once() {
    let Some(url) = service_url("SPOOR_TEST_NATS_URL") else {
        return;
    };
    let stream = unique("T_");
    let prefix = unique("t");
    let srv = start().await;
    define(&srv, "buyers", r#"performed "Bought""#).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "bus", "type": "nats",
                    "subscriptions": {"events": [{}], "audiences": [{"audience": "*"}]},
                    "nats": {"url": url, "stream": stream, "subject_prefix": prefix,
                             "create_stream": true, "batch_size": 3}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let mut events = Vec::new();
    for n in 1..=4u64 {
        for u in ["u1", "u2"] {
            events.push(json!({"type": "track", "userId": u, "event": "Bought",
                               "messageId": format!("{u}-{n}"), "properties": {"n": n}}));
        }
    }
    events.push(
        json!({"type": "track", "userId": "u3", "event": "Page Viewed.x",
                       "messageId": "u3-1"}),
    );
    events.push(json!({"type": "identify", "userId": "u3", "messageId": "u3-2"}));
    srv.send_processed(events).await;

    let client = async_nats::connect(url.as_str()).await.unwrap();
    let js = jetstream::new(client);
    let st = js.get_stream(&stream).await.unwrap();
    let consumer = st
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    // 10 events, and u1 and u2 entering "buyers".
    let mut got = Vec::new();
    while got.len() < 12 {
        let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
            .await
            .unwrap_or_else(|_| panic!("only {} messages in 30 s: {got:?}", got.len()))
            .unwrap()
            .unwrap();
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID));
        assert_eq!(id.map(|v| v.as_str()), body["id"].as_str(), "{body}");
        got.push((m.subject.to_string(), body));
        m.ack().await.unwrap();
    }
    let subjects: Vec<&str> = got.iter().map(|(s, _)| s.as_str()).collect();
    let bought = format!("{prefix}.events.track.Bought");
    assert_eq!(subjects.iter().filter(|s| **s == bought).count(), 8);
    for s in [
        format!("{prefix}.events.track.Page_Viewed_x"),
        format!("{prefix}.events.identify"),
    ] {
        assert!(subjects.contains(&s.as_str()), "{s} in {subjects:?}");
    }
    let entered = format!("{prefix}.audiences.buyers.entered");
    assert_eq!(subjects.iter().filter(|s| **s == entered).count(), 2);
    // Per profile, in the order things happened: the entry right after the first Bought.
    for u in ["u1", "u2"] {
        let pid = profile_id(&srv, u).await;
        let mine: Vec<&Value> = got
            .iter()
            .map(|(_, b)| b)
            .filter(|b| b["event"]["message"]["userId"] == u || b["profile_id"] == pid.as_str())
            .collect();
        let ns: Vec<Value> = mine
            .iter()
            .map(|b| b["event"]["message"]["properties"]["n"].clone())
            .collect();
        assert_eq!(
            ns,
            vec![json!(1), Value::Null, json!(2), json!(3), json!(4)],
            "{u}: {mine:?}"
        );
        assert_eq!(mine[1]["action"], "entered");
    }

    // The same Nats-Msg-Id again is dropped by JetStream.
    let (subject, body) = &got[0];
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", body["id"].as_str().unwrap());
    let ack = js
        .publish_with_headers(subject.clone(), h, body.to_string().into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(ack.duplicate, "{ack:?}");
    let mut st = js.get_stream(&stream).await.unwrap();
    assert_eq!(st.info().await.unwrap().state.messages, 12);

    // `test` publishes one sample and shows the ack.
    let (s, v) = call(&srv, "POST", "/v1/destinations/bus/test", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["ok"], true, "{v}");
    assert_eq!(v["result"]["stream"], stream.as_str(), "{v}");
    js.delete_stream(&stream).await.unwrap();
}
