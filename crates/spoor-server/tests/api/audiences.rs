//! The definitions API: audiences (`/v1/audiences`, validate, preview) and computed traits
//! (`/v1/computed-traits`).

use crate::common::{TestServer, ADMIN_TOKEN};
use reqwest::Method as M;
use serde_json::{json, Value};

async fn call(
    srv: &TestServer,
    method: M,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = srv.http.request(method, format!("{}{path}", srv.url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

async fn admin(srv: &TestServer, method: M, path: &str, body: Option<Value>) -> (u16, Value) {
    call(srv, method, path, Some(ADMIN_TOKEN), body).await
}

async fn create(srv: &TestServer, body: Value) -> Value {
    let (s, v) = admin(srv, M::POST, "/v1/audiences", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

/// A definition without its backfill progress (which the processor moves on its own).
fn settled(v: &Value) -> Value {
    let mut v = v.clone();
    v.as_object_mut().unwrap().remove("backfill");
    v
}

/// Posts a batch and waits until the processor has applied it.
async fn send(srv: &TestServer, events: Vec<Value>) {
    let (s, v) = srv.post("/v1/batch", &json!({"batch": events})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("rejected").is_none(), "{v}");
    let last = srv.app.reader.last_seq();
    let (s, v) = srv
        .admin_get(&format!(
            "/v1/admin/processor?wait_for={last}&timeout_ms=20000"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["processed_seq"], last, "processor did not catch up: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_crud_round_trip() {
    let srv = TestServer::start().await;
    let (s, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v, json!({"audiences": []}));

    let a = create(
        &srv,
        json!({"name": "buyers", "description": "bought this week",
               "rule": "performed   \"Order Completed\"  within 7d"}),
    )
    .await;
    assert_eq!(a["name"], "buyers");
    assert_eq!(a["description"], "bought this week");
    assert_eq!(
        a["rule"], "performed \"Order Completed\" within 7d",
        "stored canonical"
    );
    assert_eq!(a["rule_json"]["type"], "performed");
    assert_eq!(a["revision"], 1);
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'), "{a}");
    assert_eq!(a["created_at"], a["updated_at"]);
    assert!(a.get("backfill").is_some(), "{a}");

    // Taken name, bad names, reserved names.
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "buyers", "rule": "trait x exists"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
    for bad in ["", "has space", "dot.ted", &"x".repeat(65), "validate"] {
        let (s, v) = admin(
            &srv,
            M::POST,
            "/v1/audiences",
            Some(json!({"name": bad, "rule": "trait x exists"})),
        )
        .await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad:?}: {v}"
        );
    }
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "x", "rule": "trait x exists", "extra": 1})),
    )
    .await;
    assert_eq!(s, 400, "unknown fields are refused: {v}");
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "x", "rule": "trait x exists", "rule_json": {"type": "trait"}})),
    )
    .await;
    assert_eq!(s, 400, "text and JSON together are refused: {v}");
    let (s, v) = admin(&srv, M::POST, "/v1/audiences", Some(json!({"name": "x"}))).await;
    assert_eq!(s, 400, "a rule is required: {v}");
    let big = format!("trait x in [{}1]", "1, ".repeat(30_000));
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "big", "rule": big})),
    )
    .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (400, Some("request_too_large")),
        "{v}"
    );

    // Show, replace, list.
    let (s, v) = admin(&srv, M::GET, "/v1/audiences/buyers", None).await;
    assert_eq!(s, 200);
    assert_eq!(settled(&v), settled(&a));
    let (s, v) = admin(&srv, M::GET, "/v1/audiences/nobody", None).await;
    assert_eq!((s, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (s, b) = admin(
        &srv,
        M::PUT,
        "/v1/audiences/buyers",
        Some(json!({"rule": "performed \"Order Completed\" at least 2 times within 30d"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["revision"], 2);
    assert_eq!(b["description"], "bought this week", "kept when not given");
    assert_eq!(
        b["rule"],
        "performed \"Order Completed\" at least 2 times within 30d"
    );
    assert_eq!(b["created_at"], a["created_at"]);
    let (s, c) = admin(
        &srv,
        M::PUT,
        "/v1/audiences/buyers",
        Some(json!({"rule": b["rule"], "description": "repeat buyers"})),
    )
    .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["revision"], 2, "same rule: no new revision (no backfill)");
    assert_eq!(c["description"], "repeat buyers");
    let (s, v) = admin(
        &srv,
        M::PUT,
        "/v1/audiences/nobody",
        Some(json!({"rule": "trait x exists"})),
    )
    .await;
    assert_eq!(s, 404, "{v}");
    let (s, v) = admin(
        &srv,
        M::PUT,
        "/v1/audiences/buyers",
        Some(json!({"name": "buyers", "rule": "trait x exists"})),
    )
    .await;
    assert_eq!(s, 400, "the name is the path's: {v}");
    create(
        &srv,
        json!({"name": "all-pros", "rule": "trait plan = \"pro\""}),
    )
    .await;
    let (_, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    let names: Vec<&str> = v["audiences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all-pros", "buyers"]);

    // The definitions survive a restart.
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |_| {}).await;
    let (s, v) = admin(&srv, M::GET, "/v1/audiences/buyers", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["description"], "repeat buyers");
    assert_eq!(v["revision"], 2);

    // Delete.
    let (s, v) = admin(&srv, M::DELETE, "/v1/audiences/buyers", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["deleted"], true);
    let (s, _) = admin(&srv, M::GET, "/v1/audiences/buyers", None).await;
    assert_eq!(s, 404);
    let (s, _) = admin(&srv, M::DELETE, "/v1/audiences/buyers", None).await;
    assert_eq!(s, 404);
    let (_, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    assert_eq!(v["audiences"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_json_inputs_store_the_same_rule() {
    let srv = TestServer::start().await;
    let text = "performed \"Product Viewed\" where product.category = \"shoes\" at least 3 times within 30d\n  and not performed \"Order Completed\" within 30d  # browsing, not buying\n  and (trait plan in [\"pro\", \"team\"] or utm source = \"newsletter\")";
    let a = create(&srv, json!({"name": "a", "rule": text})).await;
    let b = create(&srv, json!({"name": "b", "rule_json": a["rule_json"]})).await;
    assert_eq!(a["rule"], b["rule"]);
    assert_eq!(a["rule_json"], b["rule_json"]);
    assert_eq!(
        a["rule"],
        "performed \"Product Viewed\" where product.category = \"shoes\" at least 3 times within 30d and not performed \"Order Completed\" within 30d and (trait plan in [\"pro\", \"team\"] or utm source = \"newsletter\")"
    );
    // The canonical text, sent back as text, is the same rule again.
    let c = create(&srv, json!({"name": "c", "rule": a["rule"]})).await;
    assert_eq!(c["rule_json"], a["rule_json"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parse_error_says_where_and_what_was_expected() {
    let srv = TestServer::start().await;
    let rule = "trait plan = \"pro\"\n  and trait x in [1 2]";
    for path in ["/v1/audiences", "/v1/audiences/validate"] {
        let (s, v) = admin(
            &srv,
            M::POST,
            path,
            Some(json!({"name": "n", "rule": rule})).map(|mut b| {
                if path.ends_with("validate") {
                    b.as_object_mut().unwrap().remove("name");
                }
                b
            }),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert_eq!(v["code"], "invalid_rule", "{v}");
        assert_eq!(v["line"], 2, "{v}");
        assert_eq!(v["column"], 21, "{v}");
        assert_eq!(v["offset"], 39, "{v}");
        assert_eq!(v["expected"], "`,` or `]`", "{v}");
        assert_eq!(v["found"], "`2`", "{v}");
        assert!(
            v["message"].as_str().unwrap().contains("line 2, column 21"),
            "{v}"
        );
    }
    let (_, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    assert_eq!(v["audiences"], json!([]), "nothing stored");

    // A JSON rule that is not a rule.
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "n", "rule_json": {"type": "trait", "path": "x"}})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    assert!(
        v.get("line").is_none(),
        "no position for a JSON schema error: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_references_and_cycles_are_refused() {
    let srv = TestServer::start().await;
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "a", "rule": "trait x exists and in audience \"nope\""})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    assert_eq!(v["found"], "unknown audience \"nope\"", "{v}");
    assert_eq!(v["column"], 32, "{v}");
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "a", "rule": "computed ltv > 100"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    assert_eq!(v["found"], "unknown computed trait \"ltv\"", "{v}");
    assert_eq!(
        v["expected"], "a known computed trait (none are defined)",
        "{v}"
    );

    // An audience naming itself is a cycle.
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences",
        Some(json!({"name": "a", "rule": "not in audience a"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("cycle"), "{v}");
    assert_eq!(
        (v["line"].as_u64(), v["column"].as_u64()),
        (Some(1), Some(17)),
        "{v}"
    );
    assert_eq!(v["expected"], "an audience other than \"a\"", "{v}");

    // a → b is fine; then b → a closes a cycle and is refused, b unchanged.
    create(&srv, json!({"name": "b", "rule": "trait plan = \"pro\""})).await;
    create(&srv, json!({"name": "a", "rule": "in audience b"})).await;
    let (s, v) = admin(
        &srv,
        M::PUT,
        "/v1/audiences/b",
        Some(json!({"rule": "in audience a or trait vip = true"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("cycle") && msg.contains('a') && msg.contains('b'),
        "{v}"
    );
    let (_, v) = admin(&srv, M::GET, "/v1/audiences/b", None).await;
    assert_eq!(v["rule"], "trait plan = \"pro\"");
    assert_eq!(v["revision"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_refused_while_referenced() {
    let srv = TestServer::start().await;
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/computed-traits",
        Some(json!({"name": "orders_30d", "aggregation": "count",
                    "event": {"kind": "track", "name": "Order Completed"}, "window": "30d"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    create(
        &srv,
        json!({"name": "base", "rule": "computed orders_30d >= 1"}),
    )
    .await;
    create(
        &srv,
        json!({"name": "top", "rule": "in audience base and trait vip = true"}),
    )
    .await;
    create(
        &srv,
        json!({"name": "other", "rule": "not in audience base"}),
    )
    .await;

    let (s, v) = admin(&srv, M::DELETE, "/v1/audiences/base", None).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("\"top\"") && msg.contains("\"other\""), "{v}");
    let (s, v) = admin(&srv, M::DELETE, "/v1/computed-traits/orders_30d", None).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");
    assert!(v["message"].as_str().unwrap().contains("\"base\""), "{v}");

    for name in ["top", "other"] {
        let (s, v) = admin(&srv, M::DELETE, &format!("/v1/audiences/{name}"), None).await;
        assert_eq!(s, 200, "{v}");
    }
    let (s, v) = admin(&srv, M::DELETE, "/v1/audiences/base", None).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = admin(&srv, M::DELETE, "/v1/computed-traits/orders_30d", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["computed_trait"]["name"], "orders_30d");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_converts_text_and_json() {
    let srv = TestServer::start().await;
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences/validate",
        Some(json!({"rule": "performed   \"Order Completed\" within 7d"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["valid"], true);
    assert_eq!(v["text"], "performed \"Order Completed\" within 7d");
    assert_eq!(
        v["rule_json"],
        json!({"type": "performed", "event": {"kind": "track", "name": "Order Completed"},
               "count": {"at_least": 1}, "within": "7d"})
    );
    assert_eq!(v["dependencies"]["time"], true, "{v}");
    assert_eq!(
        v["dependencies"]["events"],
        json!([{"kind": "track", "name": "Order Completed"}]),
        "{v}"
    );

    // JSON → text.
    let (s, w) = admin(
        &srv,
        M::POST,
        "/v1/audiences/validate",
        Some(json!({"rule_json": {"type": "and", "all": [
            {"type": "trait", "path": "plan", "cmp": {"op": "=", "value": "pro"}},
            {"type": "not", "rule": v["rule_json"]}
        ]}})),
    )
    .await;
    assert_eq!(s, 200, "{w}");
    assert_eq!(
        w["text"],
        "trait plan = \"pro\" and not performed \"Order Completed\" within 7d"
    );
    assert_eq!(w["dependencies"]["traits"], json!(["plan"]));

    // JSON the text cannot say (an `and` of one rule) is refused.
    let (s, x) = admin(
        &srv,
        M::POST,
        "/v1/audiences/validate",
        Some(json!({"rule_json": {"type": "and", "all": [v["rule_json"]]}})),
    )
    .await;
    assert_eq!((s, x["code"].as_str()), (400, Some("invalid_rule")), "{x}");
    let (s, _) = admin(&srv, M::POST, "/v1/audiences/validate", Some(json!({}))).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_evaluates_over_real_events() {
    let srv = TestServer::start().await;
    let mut events = Vec::new();
    let mut n = 0;
    let mut track = |events: &mut Vec<Value>, user: &str, name: &str| {
        n += 1;
        events.push(json!({"type": "track", "userId": user, "event": name,
                           "messageId": format!("m{n}"), "timestamp": "2026-01-02T10:00:00Z"}));
    };
    for (user, plan, orders) in [
        ("u1", "pro", 3),
        ("u2", "pro", 1),
        ("u3", "free", 2),
        ("u4", "pro", 0),
    ] {
        events.push(
            json!({"type": "identify", "userId": user, "traits": {"plan": plan},
                           "messageId": format!("id-{user}"), "timestamp": "2026-01-01T10:00:00Z"}),
        );
        for _ in 0..orders {
            track(&mut events, user, "Order Completed");
        }
        track(&mut events, user, "Page Viewed");
    }
    send(&srv, events).await;

    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences/preview",
        Some(json!({"rule": "performed \"Order Completed\" at least 2 times"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["matched"], 2, "{v}");
    assert_eq!(v["scanned"], 4, "{v}");
    assert_eq!(v["total_profiles"], 4, "{v}");
    assert_eq!(v["estimated_size"], 2, "{v}");
    assert_eq!(v["exact"], true, "{v}");
    assert_eq!(v["truncated"], false, "{v}");
    assert!(v["took_ms"].is_u64(), "{v}");
    let sample = v["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 2, "{v}");
    let mut plans: Vec<&str> = sample
        .iter()
        .map(|m| m["traits"]["plan"].as_str().unwrap())
        .collect();
    plans.sort();
    assert_eq!(plans, ["free", "pro"], "u1 and u3: {v}");
    for m in sample {
        assert!(m["id"].as_str().unwrap().starts_with("prof_"), "{v}");
    }

    // Traits and events together; JSON input; a smaller sample and scan.
    let (_, j) = admin(
        &srv,
        M::POST,
        "/v1/audiences/validate",
        Some(json!({"rule": "trait plan = \"pro\" and performed \"Order Completed\""})),
    )
    .await;
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences/preview",
        Some(json!({"rule_json": j["rule_json"], "sample": 1})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["matched"], 2, "u1 and u2: {v}");
    assert_eq!(v["sample"].as_array().unwrap().len(), 1, "{v}");
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences/preview",
        Some(json!({"rule": "not performed \"Order Completed\"", "scan": 2})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["scanned"], 2, "{v}");
    assert_eq!(v["exact"], false, "{v}");

    // Errors answer like everywhere else; the preview stores nothing.
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/audiences/preview",
        Some(json!({"rule": "performed \"Order Completed\" at least two times"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (400, Some("invalid_rule")), "{v}");
    assert_eq!(v["column"], 38, "{v}");
    assert_eq!(v["expected"], "a whole number of times, e.g. `3`", "{v}");
    let (_, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    assert_eq!(v["audiences"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes() {
    let srv = TestServer::start().await;
    let rule = json!({"name": "a", "rule": "trait x exists"});
    for (m, path, body) in [
        (M::GET, "/v1/audiences", None),
        (M::POST, "/v1/audiences", Some(rule.clone())),
        (M::GET, "/v1/audiences/a", None),
        (
            M::POST,
            "/v1/audiences/validate",
            Some(json!({"rule": "trait x exists"})),
        ),
        (
            M::POST,
            "/v1/audiences/preview",
            Some(json!({"rule": "trait x exists"})),
        ),
        (M::GET, "/v1/computed-traits", None),
        (M::DELETE, "/v1/computed-traits/c", None),
    ] {
        let (s, v) = call(&srv, m.clone(), path, None, body.clone()).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("unauthorized")),
            "{m} {path}: {v}"
        );
    }
    create(&srv, rule.clone()).await;

    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/admin/tokens",
        Some(json!({"name": "ro", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ro = v["secret"].as_str().unwrap().to_string();
    let ro = Some(ro.as_str());
    // Reads are allowed…
    for (m, path, body) in [
        (M::GET, "/v1/audiences", None),
        (M::GET, "/v1/audiences/a", None),
        (
            M::POST,
            "/v1/audiences/validate",
            Some(json!({"rule": "trait x exists"})),
        ),
        (
            M::POST,
            "/v1/audiences/preview",
            Some(json!({"rule": "trait x exists"})),
        ),
        (M::GET, "/v1/computed-traits", None),
    ] {
        let (s, v) = call(&srv, m.clone(), path, ro, body).await;
        assert_eq!(s, 200, "{m} {path}: {v}");
    }
    // …changes are not.
    let count = json!({"name": "c", "aggregation": "count"});
    for (m, path, body) in [
        (
            M::POST,
            "/v1/audiences",
            Some(json!({"name": "b", "rule": "trait x exists"})),
        ),
        (
            M::PUT,
            "/v1/audiences/a",
            Some(json!({"rule": "trait y exists"})),
        ),
        (M::DELETE, "/v1/audiences/a", None),
        (M::POST, "/v1/computed-traits", Some(count)),
    ] {
        let (s, v) = call(&srv, m.clone(), path, ro, body).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (403, Some("forbidden")),
            "{m} {path}: {v}"
        );
    }
    let (_, v) = admin(&srv, M::GET, "/v1/audiences", None).await;
    assert_eq!(v["audiences"].as_array().unwrap().len(), 1);
    assert_eq!(v["audiences"][0]["rule"], "trait x exists");
    let (_, v) = admin(&srv, M::GET, "/v1/computed-traits", None).await;
    assert_eq!(v["computed_traits"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_trait_crud_and_validation() {
    let srv = TestServer::start().await;
    let def = json!({"name": "ltv", "description": "lifetime revenue", "aggregation": "sum",
                     "property": "revenue", "event": {"kind": "track", "name": "Order Completed"}});
    let (s, c) = admin(&srv, M::POST, "/v1/computed-traits", Some(def.clone())).await;
    assert_eq!(s, 201, "{c}");
    assert_eq!(c["name"], "ltv");
    assert_eq!(c["aggregation"], "sum");
    assert_eq!(c["property"], "revenue");
    assert_eq!(
        c["event"],
        json!({"kind": "track", "name": "Order Completed"})
    );
    assert_eq!(c["description"], "lifetime revenue");
    assert_eq!(c["revision"], 1);
    let (s, v) = admin(&srv, M::POST, "/v1/computed-traits", Some(def.clone())).await;
    assert_eq!((s, v["code"].as_str()), (409, Some("conflict")), "{v}");

    for (bad, why) in [
        (
            json!({"name": "n", "aggregation": "sum"}),
            "expected a property to aggregate",
        ),
        (
            json!({"name": "n", "aggregation": "count", "property": "x"}),
            "`count` takes no property",
        ),
        (
            json!({"name": "n", "aggregation": {"most_frequent": {"top": 0}}, "property": "x"}),
            "expected a list size from 1 to 100",
        ),
        (
            json!({"name": "n", "aggregation": "median", "property": "x"}),
            "unknown variant",
        ),
        (
            json!({"name": "n", "aggregation": "count", "colour": "red"}),
            "unknown field",
        ),
        (
            json!({"name": "n", "aggregation": "count", "window": "7y"}),
            "invalid computed trait",
        ),
        (
            json!({"name": "bad name", "aggregation": "count"}),
            "is not valid",
        ),
        (
            json!({"name": "n", "aggregation": "count", "description": 3}),
            "must be a string",
        ),
    ] {
        let (s, v) = admin(&srv, M::POST, "/v1/computed-traits", Some(bad.clone())).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (400, Some("invalid_request")),
            "{bad}: {v}"
        );
        assert!(v["message"].as_str().unwrap().contains(why), "{bad}: {v}");
    }

    let (s, v) = admin(&srv, M::GET, "/v1/computed-traits/ltv", None).await;
    assert_eq!(s, 200);
    assert_eq!(settled(&v), settled(&c));
    let (s, v) = admin(
        &srv,
        M::PUT,
        "/v1/computed-traits/ltv",
        Some(
            json!({"aggregation": "sum", "property": "revenue", "window": "365d",
                    "event": {"kind": "track", "name": "Order Completed"}}),
        ),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["revision"], 2);
    assert_eq!(v["window"], "365d");
    assert_eq!(v["description"], "lifetime revenue");
    let (s, v) = admin(
        &srv,
        M::PUT,
        "/v1/computed-traits/ltv",
        Some(json!({"name": "other", "aggregation": "count"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = admin(
        &srv,
        M::PUT,
        "/v1/computed-traits/none",
        Some(json!({"aggregation": "count"})),
    )
    .await;
    assert_eq!(s, 404);

    // An audience may now refer to it.
    create(&srv, json!({"name": "big", "rule": "computed ltv > 1000"})).await;
    let (_, v) = admin(&srv, M::GET, "/v1/computed-traits", None).await;
    assert_eq!(v["computed_traits"].as_array().unwrap().len(), 1);
}

/// Preview reads what the processor keeps: computed trait values, current memberships of
/// nested audiences, and the traits of the person's groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_reads_computed_values_memberships_and_groups() {
    let srv = TestServer::start().await;
    let (s, v) = admin(
        &srv,
        M::POST,
        "/v1/computed-traits",
        Some(json!({"name": "orders", "aggregation": "count",
                    "event": {"kind": "track", "name": "Order Completed"}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    create(
        &srv,
        json!({"name": "buyers", "rule": "computed orders >= 1"}),
    )
    .await;
    let mut events = vec![
        json!({"type": "group", "userId": "u1", "groupId": "acme", "traits": {"tier": "gold"},
               "messageId": "g1", "timestamp": "2026-01-01T09:00:00Z"}),
        json!({"type": "identify", "userId": "u3", "traits": {"plan": "free"},
               "messageId": "i3", "timestamp": "2026-01-01T09:00:00Z"}),
    ];
    for (i, user) in ["u1", "u1", "u2"].iter().enumerate() {
        events.push(
            json!({"type": "track", "userId": user, "event": "Order Completed",
                           "messageId": format!("o{i}"), "timestamp": "2026-01-02T10:00:00Z"}),
        );
    }
    send(&srv, events).await;
    // The processor evaluates computed traits and audiences as it applies events.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    for (user, orders) in [("u1", 2), ("u2", 1)] {
        loop {
            let (_, p) = srv.admin_get(&format!("/v1/profiles/user_id:{user}")).await;
            if p["computed_traits"]["orders"] == orders && p["audiences"][0]["name"] == "buyers" {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "not evaluated: {p}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let preview = |rule: &'static str| {
        let srv = &srv;
        async move {
            let (s, v) = admin(
                srv,
                M::POST,
                "/v1/audiences/preview",
                Some(json!({"rule": rule})),
            )
            .await;
            assert_eq!(s, 200, "{rule}: {v}");
            (v["matched"].as_u64().unwrap(), v)
        }
    };
    assert_eq!(preview("computed orders >= 2").await.0, 1);
    assert_eq!(preview("computed orders >= 1").await.0, 2);
    let (n, v) = preview("not in audience buyers").await;
    assert_eq!(n, 1, "only u3: {v}");
    assert_eq!(v["sample"][0]["traits"]["plan"], "free", "{v}");
    assert_eq!(preview("group trait tier = \"gold\"").await.0, 1);
    assert_eq!(
        preview("in audience buyers and group trait tier = \"gold\"")
            .await
            .0,
        1
    );
}

/// Whoever waits for a backfill to end reads its result: from the creation of an audience
/// on, its `backfill` is shown (waiting, then running) until the memberships served are
/// final, never `null` while the size still reads an older state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_is_shown_until_its_memberships_are_final() {
    let srv = TestServer::start().await;
    let mut events = Vec::new();
    let mut expected = 0;
    for person in 0..3_000 {
        let orders = person % 3;
        expected += usize::from(orders >= 1);
        for i in 0..orders {
            events.push(json!({"type": "track", "userId": format!("u{person}"),
                "event": "Order Completed", "messageId": format!("o{person}-{i}")}));
        }
    }
    for chunk in events.chunks(1_000) {
        send(&srv, chunk.to_vec()).await;
    }
    for round in 0..3 {
        let name = format!("buyers{round}");
        create(
            &srv,
            json!({"name": name, "rule": "performed \"Order Completed\" at least 1 time"}),
        )
        .await;
        let mut polls = 0;
        // A deadline, not a number of polls: on a busy machine a poll takes less time
        // than the backfill's threads get.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            polls += 1;
            let (s, a) = admin(&srv, M::GET, &format!("/v1/audiences/{name}"), None).await;
            assert_eq!(s, 200, "{a}");
            let (s, size) = admin(&srv, M::GET, &format!("/v1/audiences/{name}/size"), None).await;
            assert_eq!(s, 200, "{size}");
            if a["backfill"].is_null() {
                assert_eq!(
                    size["size"], expected,
                    "{name}: shown done after {polls} polls"
                );
                break;
            }
            assert!(a["backfill"]["started"].is_boolean(), "{a}");
            assert!(
                std::time::Instant::now() < deadline,
                "backfill of {name} not ended after {polls} polls: {a}"
            );
        }
    }
}
