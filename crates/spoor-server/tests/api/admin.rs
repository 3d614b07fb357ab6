//! The admin API: tokens and scopes, sources and revocation, listing/filtering/paging,
//! export, status, health and metrics.

use crate::common::{TestServer, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};

async fn call(
    srv: &TestServer,
    method: reqwest::Method,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_source_revocation() {
    let srv = TestServer::start().await;
    use reqwest::Method as M;
    assert_eq!(
        call(&srv, M::GET, "/v1/admin/sources", None, None).await.0,
        401
    );
    assert_eq!(
        call(
            &srv,
            M::GET,
            "/v1/admin/sources",
            Some("wrong-token-xxxxxxxx"),
            None
        )
        .await
        .0,
        401
    );

    let (s, v) = call(
        &srv,
        M::POST,
        "/v1/admin/tokens",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "ro", "scopes": ["read"]})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let ro = v["secret"].as_str().unwrap().to_string();
    assert!(!v.to_string().contains("secret_hash"));
    // Read-only: can list sources and events, cannot create sources or manage tokens.
    assert_eq!(
        call(&srv, M::GET, "/v1/admin/sources", Some(&ro), None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(&srv, M::GET, "/v1/admin/events", Some(&ro), None)
            .await
            .0,
        200
    );
    let (s, v) = call(
        &srv,
        M::POST,
        "/v1/admin/sources",
        Some(&ro),
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!((s, v["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(
        call(&srv, M::GET, "/v1/admin/tokens", Some(&ro), None)
            .await
            .0,
        403
    );
    let (s, v) = call(
        &srv,
        M::POST,
        "/v1/admin/tokens",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "bad", "scopes": ["root"]})),
    )
    .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("root"));

    // A new source gets a working key; revoking it makes the key fail.
    let (s, v) = call(
        &srv,
        M::POST,
        "/v1/admin/sources",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "ios-app"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let key = v["write_key"].as_str().unwrap().to_string();
    let id = v["source"]["id"].as_str().unwrap().to_string();
    let (s, _) = call(
        &srv,
        M::POST,
        "/v1/admin/sources",
        Some(ADMIN_TOKEN),
        Some(json!({"name": "ios-app"})),
    )
    .await;
    assert_eq!(s, 409);
    let auth = TestServer::basic(&key);
    let ev = json!({"batch": [{"type": "track", "userId": "u", "event": "E"}]})
        .to_string()
        .into_bytes();
    assert_eq!(
        srv.post_raw("/v1/batch", &[("authorization", &auth)], ev.clone())
            .await
            .0,
        200
    );
    let (_, list) = call(&srv, M::GET, "/v1/admin/sources", Some(ADMIN_TOKEN), None).await;
    assert_eq!(list["sources"].as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&key), "listings never show keys");
    assert_eq!(
        call(
            &srv,
            M::DELETE,
            &format!("/v1/admin/sources/{id}"),
            Some(ADMIN_TOKEN),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        srv.post_raw("/v1/batch", &[("authorization", &auth)], ev)
            .await
            .0,
        401
    );

    // Revoked tokens stop working.
    let (_, tokens) = call(&srv, M::GET, "/v1/admin/tokens", Some(ADMIN_TOKEN), None).await;
    let ro_id = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ro")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        call(
            &srv,
            M::DELETE,
            &format!("/v1/admin/tokens/{ro_id}"),
            Some(ADMIN_TOKEN),
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&srv, M::GET, "/v1/admin/events", Some(&ro), None)
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_filter_page_and_export() {
    let srv = TestServer::start().await;
    let mut batch = Vec::new();
    for i in 0..250 {
        let (t, name) = match i % 3 {
            0 => ("track", "Order Completed"),
            1 => ("track", "Product Viewed"),
            _ => ("page", "Home"),
        };
        let mut e = json!({"type": t, "userId": format!("u{i}"), "messageId": format!("m{i}"),
                           "timestamp": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60)});
        if t == "track" {
            e["event"] = json!(name)
        } else {
            e["name"] = json!(name)
        }
        batch.push(e);
    }
    assert_eq!(srv.post("/v1/batch", &json!({"batch": batch})).await.0, 200);

    // Newest first by default, paged by cursor.
    let (_, p1) = srv.admin_get("/v1/admin/events?limit=100").await;
    assert_eq!(p1["events"][0]["seq"], 250);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = srv
        .admin_get(&format!("/v1/admin/events?limit=100&cursor={c}"))
        .await;
    assert_eq!(p2["events"][0]["seq"], 150);
    let c = p2["next_cursor"].as_str().unwrap();
    let (_, p3) = srv
        .admin_get(&format!("/v1/admin/events?limit=100&cursor={c}"))
        .await;
    assert_eq!(p3["events"].as_array().unwrap().len(), 50);
    assert!(p3["next_cursor"].is_null());

    let (_, orders) = srv
        .admin_get("/v1/admin/events?limit=1000&event=Order%20Completed")
        .await;
    assert_eq!(orders["events"].as_array().unwrap().len(), 84);
    let (_, pages) = srv
        .admin_get("/v1/admin/events?limit=1000&type=page&order=asc")
        .await;
    assert_eq!(pages["events"].as_array().unwrap().len(), 83);
    assert_eq!(pages["events"][0]["message_id"], "m2");
    let (_, src) = srv
        .admin_get("/v1/admin/events?limit=1000&source=default")
        .await;
    assert_eq!(src["events"].as_array().unwrap().len(), 250);
    let (_, early) = srv
        .admin_get("/v1/admin/events?limit=1000&until=2026-01-01T00:01:00Z")
        .await;
    assert_eq!(early["events"].as_array().unwrap().len(), 60);
    let (s, bad) = srv.admin_get("/v1/admin/events?since=yesterday").await;
    assert_eq!(s, 400, "{bad}");
    let (s, _) = srv.admin_get("/v1/admin/events?colour=red").await;
    assert_eq!(s, 400, "unknown query parameters are refused");

    // Export: NDJSON, every event, original fields intact.
    let resp = srv
        .http
        .get(format!("{}/v1/admin/events/export?from=201", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 50);
    assert_eq!(lines[0]["seq"], 201);
    assert_eq!(lines[0]["message"]["messageId"], "m200");

    let (_, status) = srv.admin_get("/v1/admin/status").await;
    assert_eq!(status["log"]["last_seq"], 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let srv = TestServer::start().await;
    assert_eq!(
        srv.http
            .get(format!("{}/healthz", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        srv.http
            .get(format!("{}/readyz", srv.url))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    srv.post(
        "/v1/batch",
        &json!({"batch": [{"type": "track", "userId": "u", "event": "E"}, {"type": "track"}]}),
    )
    .await;
    let auth = TestServer::basic(WRITE_KEY);
    srv.post_raw("/v1/batch", &[("authorization", &auth)], b"{".to_vec())
        .await;
    let m = srv
        .http
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "spoor_events_accepted_total{type=\"track\"} 1",
        "spoor_events_rejected_total{reason=\"missing_identity\"} 1",
        "spoor_events_rejected_total{reason=\"invalid_request\"} 1",
        "spoor_log_last_seq 1",
        "spoor_log_fsync_duration_seconds_count",
        "spoor_http_requests_total{route=\"/v1/batch\",status=\"200\"} 1",
        // Both batch requests were timed, the one refused included.
        "spoor_http_request_duration_seconds_count{route=\"/v1/batch\"} 2",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}
