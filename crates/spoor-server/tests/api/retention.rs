//! Retention: expired events leave the log and take their effect on traits, computed traits
//! and audience memberships with them (the state equals a rebuild of what is left); a dry
//! run only counts.

use crate::common::call;
use crate::common::TestServer;
use crate::erasure::{dump, tweak};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition, ComputedDefinition};
use spoor_core::computed::ComputedDef;

fn ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days)).to_rfc3339()
}

fn view(user: &str, n: u32, days_ago: i64) -> Value {
    json!({"type": "track", "userId": user, "event": "Page Viewed", "messageId": format!("{user}-v{n}"),
           "timestamp": ago(days_ago), "properties": {"path": format!("/p/{n}")}})
}

async fn profile(srv: &TestServer, user: &str) -> (u16, Value) {
    call(srv, "GET", &format!("/v1/profiles/user_id:{user}"), None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_expired_events_and_their_effects() {
    let srv = TestServer::start_with(tweak).await;
    srv.define(|d| {
        let c = ComputedDef::from_json(
            &json!({"name": "views", "aggregation": "count", "event": {"name": "Page Viewed"}})
                .to_string(),
        )
        .unwrap();
        d.computed.insert(
            "views".into(),
            ComputedDefinition {
                def: c,
                description: String::new(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            },
        );
        d.audiences.insert(
            "frequent".into(),
            AudienceDefinition {
                name: "frequent".into(),
                description: String::new(),
                rule: parse(r#"performed "Page Viewed" at least 3 times"#).unwrap(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            },
        );
    })
    .await;
    let mut events = vec![
        json!({"type": "identify", "userId": "ann", "messageId": "ann-id",
                                 "timestamp": ago(600), "traits": {"plan": "pro"}}),
    ];
    events.extend((0..3).map(|n| view("ann", n, 500)));
    events.push(view("ann", 9, 10));
    events.push(
        json!({"type": "track", "userId": "ann", "event": "Order Completed", "messageId": "ann-o",
                       "timestamp": ago(500), "properties": {"revenue": 50}}),
    );
    events.extend((0..2).map(|n| view("bob", n, 450)));
    events.extend((0..4).map(|n| view("cy", n, 3)));
    srv.send_processed(events).await;
    let (_, ann) = profile(&srv, "ann").await;
    assert_eq!(ann["computed_traits"]["views"], 4, "{ann}");
    assert!(ann.to_string().contains("frequent"), "{ann}");
    let (_, cy_before) = profile(&srv, "cy").await;

    // Bad policies are refused with their cause; nothing is stored.
    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/privacy/retention/policies",
        Some(json!({"policies": [{"keep_days": 3}]})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/privacy/retention/policies",
        Some(json!({"policies": [{"event": "Page Viewed", "keep_days": 395}]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");

    // Dry run: counts, removes nothing.
    let (s, v) = call(&srv, "POST", "/v1/privacy/retention/run?dry_run=true", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retention"]["policies"][0]["events"], 5, "{v}");
    assert_eq!(v["retention"]["erased"], 0, "{v}");
    assert_eq!(srv.events().await.len(), 12);
    let (_, ann) = profile(&srv, "ann").await;
    assert_eq!(ann["computed_traits"]["views"], 4, "{ann}");

    // Apply.
    let (s, v) = call(&srv, "POST", "/v1/privacy/retention/run", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["retention"]["erased"], 5, "{v}");
    assert_eq!(srv.events().await.len(), 7);
    let (s, ann) = profile(&srv, "ann").await;
    assert_eq!(s, 200, "{ann}");
    assert_eq!(ann["computed_traits"]["views"], 1, "{ann}");
    assert!(!ann["audiences"].to_string().contains("frequent"), "{ann}");
    assert_eq!(
        ann["traits"]["plan"], "pro",
        "the identify is not a page view: kept"
    );
    assert_eq!(ann["event_count"], 3, "identify, recent view, order: {ann}");
    let (s, _) = profile(&srv, "bob").await;
    assert_eq!(s, 404, "every event of bob expired");
    let (_, cy) = profile(&srv, "cy").await;
    assert_eq!(cy, cy_before, "untouched");
    let (_, size) = call(&srv, "GET", "/v1/audiences/frequent/size", None).await;
    assert!(size.to_string().contains("1"), "only cy: {size}");
    let (_, r) = call(&srv, "GET", "/v1/privacy/retention", None).await;
    assert_eq!(r["last_run"]["erased"], 5, "{r}");

    // Applying again finds nothing; the state equals a rebuild of the remaining log.
    let (_, v) = call(&srv, "POST", "/v1/privacy/retention/run", None).await;
    assert_eq!(v["retention"]["erased"], 0, "{v}");
    let cfg = srv.app.cfg.clone();
    let dir = srv.stop().await;
    let incremental = dump(dir.path());
    spoor_server::processor::rebuild(&cfg, |_, _| {}).unwrap();
    assert_eq!(incremental, dump(dir.path()));
}
