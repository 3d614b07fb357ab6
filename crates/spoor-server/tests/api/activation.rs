//! The audience engine inside a running server: computed traits and memberships follow
//! events in real time, time alone makes people leave windowed audiences, merges combine
//! states, and a definition added later is backfilled over history.

use crate::common::TestServer;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition, ComputedDefinition, Definitions};
use spoor_core::computed::ComputedDef;
use spoor_core::FixedClock;
use std::sync::Arc;
use std::time::Duration;

const T0: &str = "2026-03-01T12:00:00Z";

fn t0() -> DateTime<Utc> {
    T0.parse().unwrap()
}

fn audience(name: &str, rule: &str) -> (String, AudienceDefinition) {
    let def = AudienceDefinition {
        name: name.into(),
        description: String::new(),
        rule: parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}")),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    (name.into(), def)
}

fn computed(json: Value) -> (String, ComputedDefinition) {
    let def = ComputedDef::from_json(&json.to_string()).unwrap();
    let c = ComputedDefinition {
        def,
        description: String::new(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    (c.def.name.clone(), c)
}

/// Installs definitions and waits until the processor has backfilled them.
async fn define(srv: &TestServer, f: impl FnOnce(&mut Definitions)) {
    let d = srv
        .app
        .defs
        .update(|d| {
            f(d);
            Ok(())
        })
        .unwrap();
    wait_until(|| srv.app.defs.applied_revision().unwrap() == d.revision).await;
}

async fn wait_until(mut ok: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 10 s");
}

async fn send(srv: &TestServer, events: Vec<Value>) {
    let (s, v) = srv.post("/v1/batch", &json!({ "batch": events })).await;
    assert_eq!(s, 200, "{v}");
    let last = srv.app.reader.last_seq();
    let (_, v) = srv
        .admin_get(&format!(
            "/v1/admin/processor?wait_for={last}&timeout_ms=20000"
        ))
        .await;
    assert_eq!(v["processed_seq"], last, "{v}");
}

/// (audiences the person is in, computed trait values), read from the state.
fn activation(srv: &TestServer, kind: &str, value: &str) -> (Vec<String>, Value) {
    let r = srv.app.state.reader().unwrap();
    let pid = r.owner(kind, value).unwrap().expect("known identifier");
    let p = r.profile(pid).unwrap().expect("live profile");
    let members = p.activation.members.keys().cloned().collect();
    (members, Value::Object(p.activation.values.clone()))
}

fn ev(kind: &str, user: &str, event: &str, props: Value, ts: &str) -> Value {
    json!({"type": kind, "userId": user, "event": event, "properties": props, "timestamp": ts})
}

async fn clocked() -> (TestServer, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::new(t0()));
    let srv = TestServer::start_clocked(tempfile::tempdir().unwrap(), |_| {}, clock.clone()).await;
    (srv, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_and_computed_traits_follow_events_and_time() {
    let (srv, clock) = clocked().await;
    define(&srv, |d| {
        d.computed.extend([
            computed(json!({"name": "orders", "aggregation": "count", "event": {"name": "Order Completed"}})),
            computed(json!({"name": "revenue_30d", "aggregation": "sum", "property": "revenue",
                            "event": {"name": "Order Completed"}, "window": "30d"})),
        ]);
        d.audiences.extend([
            audience("recent_buyers", r#"performed "Order Completed" within 7d"#),
            audience("big_spenders", "computed revenue_30d >= 100"),
            audience("not_recent", r#"trait plan = "pro" and not in audience recent_buyers"#),
        ]);
    })
    .await;

    send(&srv, vec![
        json!({"type": "identify", "userId": "ann", "traits": {"plan": "pro"}, "timestamp": "2026-03-01T11:00:00Z"}),
        ev("track", "ann", "Order Completed", json!({"revenue": 60}), "2026-03-01T11:30:00Z"),
    ])
    .await;
    let (m, v) = activation(&srv, "user_id", "ann");
    assert_eq!(m, vec!["recent_buyers"]);
    assert_eq!(v["orders"], 1);
    assert_eq!(v["revenue_30d"], 60);

    send(
        &srv,
        vec![ev(
            "track",
            "ann",
            "Order Completed",
            json!({"revenue": 50}),
            "2026-03-01T11:45:00Z",
        )],
    )
    .await;
    let (m, v) = activation(&srv, "user_id", "ann");
    assert_eq!(m, vec!["big_spenders", "recent_buyers"]);
    assert_eq!(v["revenue_30d"], 110);

    // Eight days later, with no event: out of the 7-day audience, into its exclusion.
    clock.advance(chrono::Duration::days(8));
    wait_until(|| activation(&srv, "user_id", "ann").0 == vec!["big_spenders", "not_recent"]).await;
    // Thirty-one days: the 30-day sum drops to 0, and with it big_spenders.
    clock.advance(chrono::Duration::days(23));
    wait_until(|| activation(&srv, "user_id", "ann").0 == vec!["not_recent"]).await;
    assert_eq!(activation(&srv, "user_id", "ann").1["revenue_30d"], 0);
    assert_eq!(activation(&srv, "user_id", "ann").1["orders"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_combines_the_states_of_both_profiles() {
    let (srv, _clock) = clocked().await;
    define(&srv, |d| {
        d.audiences.extend([audience(
            "browsers",
            r#"performed "Product Viewed" at least 2 times within 30d"#,
        )]);
    })
    .await;
    send(&srv, vec![
        json!({"type": "track", "anonymousId": "a-1", "event": "Product Viewed", "timestamp": "2026-03-01T10:00:00Z"}),
        ev("track", "bob", "Product Viewed", json!({}), "2026-03-01T10:05:00Z"),
    ])
    .await;
    assert!(activation(&srv, "anonymous_id", "a-1").0.is_empty());
    assert!(activation(&srv, "user_id", "bob").0.is_empty());
    // Bob logs in on the anonymous device: one person with two views.
    send(&srv, vec![json!({"type": "identify", "userId": "bob", "anonymousId": "a-1", "timestamp": "2026-03-01T10:10:00Z"})]).await;
    assert_eq!(activation(&srv, "user_id", "bob").0, vec!["browsers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_added_later_is_backfilled_over_history() {
    let (srv, _clock) = clocked().await;
    send(
        &srv,
        vec![
            ev(
                "track",
                "cy",
                "Order Completed",
                json!({"revenue": 10}),
                "2026-02-27T10:00:00Z",
            ),
            ev(
                "track",
                "cy",
                "Order Completed",
                json!({"revenue": 15}),
                "2026-02-28T10:00:00Z",
            ),
            ev(
                "track",
                "di",
                "Order Completed",
                json!({"revenue": 99}),
                "2025-12-01T10:00:00Z",
            ),
        ],
    )
    .await;
    define(&srv, |d| {
        d.computed.extend([computed(
            json!({"name": "spent", "aggregation": "sum", "property": "revenue", "event": {"name": "Order Completed"}}),
        )]);
        d.audiences.extend([audience("repeat_buyers_7d", r#"performed "Order Completed" at least 2 times within 7d"#)]);
    })
    .await;
    let (m, v) = activation(&srv, "user_id", "cy");
    assert_eq!(m, vec!["repeat_buyers_7d"]);
    assert_eq!(v["spent"], 25);
    let (m, v) = activation(&srv, "user_id", "di");
    assert!(m.is_empty());
    assert_eq!(v["spent"], 99);

    // Removing the audience takes everyone out of it.
    define(&srv, |d| {
        d.audiences.clear();
    })
    .await;
    assert!(activation(&srv, "user_id", "cy").0.is_empty());
}
