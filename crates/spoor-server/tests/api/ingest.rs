//! The happy paths of the tracking API: every endpoint, every way to pass the key,
//! dedupe, enrichment, the settings endpoint and CORS.

use crate::common::{TestServer, WRITE_KEY};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_and_short_path_stores_its_type() {
    let srv = TestServer::start().await;
    let calls = [
        (
            "/v1/identify",
            "identify",
            json!({"userId": "u", "traits": {"a": 1}}),
        ),
        ("/v1/track", "track", json!({"userId": "u", "event": "E"})),
        (
            "/v1/page",
            "page",
            json!({"anonymousId": "a", "name": "Home"}),
        ),
        ("/v1/screen", "screen", json!({"userId": "u", "name": "S"})),
        ("/v1/group", "group", json!({"userId": "u", "groupId": "g"})),
        (
            "/v1/alias",
            "alias",
            json!({"userId": "u", "previousId": "a"}),
        ),
        ("/v1/i", "identify", json!({"userId": "u"})),
        ("/v1/t", "track", json!({"userId": "u", "event": "E"})),
        ("/v1/p", "page", json!({"userId": "u"})),
        ("/v1/s", "screen", json!({"userId": "u"})),
        ("/v1/g", "group", json!({"userId": "u", "groupId": "g"})),
        ("/v1/a", "alias", json!({"userId": "u", "previousId": "a"})),
    ];
    for (path, _, body) in &calls {
        let (s, v) = srv.post(path, body).await;
        assert_eq!((s, v), (200, json!({"success": true})), "{path}");
    }
    let (s, _) = srv.post("/v1/import", &json!({"batch": [{"type": "track", "userId": "u", "event": "Old", "timestamp": "2020-01-01T00:00:00Z"}]})).await;
    assert_eq!(s, 200);
    let (s, _) = srv
        .post(
            "/v1/b",
            &json!({"batch": [{"type": "page", "userId": "u"}]}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = srv.post("/v1/m", &json!({"series": []})).await;
    assert_eq!(s, 200);

    let stored = srv.events().await;
    let types: Vec<&str> = stored.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let mut want: Vec<&str> = calls.iter().map(|c| c.1).collect();
    want.extend(["track", "page"]);
    assert_eq!(types, want);
    // Generated message ids are unique and flagged.
    assert!(stored.iter().all(|e| e["message_id_generated"] == true));
    let seqs: Vec<u64> = stored.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=14).collect::<Vec<_>>());
    // Imported history keeps its timestamp (no sentAt, no correction).
    assert_eq!(stored[12]["timestamp"], "2020-01-01T00:00:00.000Z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_can_come_from_basic_body_or_query_and_content_type_is_ignored() {
    let srv = TestServer::start().await;
    let ev = |id: &str| json!({"type": "track", "event": "E", "userId": "u", "messageId": id});
    // Basic without the colon.
    let no_colon = format!(
        "Basic {}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, WRITE_KEY)
    );
    let (s, _, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &no_colon)],
            json!({"batch": [ev("m1")]}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 200);
    // writeKey in a batch body, labelled text/plain.
    let (s, _, _) = srv
        .post_raw(
            "/v1/batch",
            &[("content-type", "text/plain")],
            json!({"writeKey": WRITE_KEY, "batch": [ev("m2")]})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(s, 200);
    // writeKey in a single event body (analytics.js).
    let mut single = ev("m3");
    single["writeKey"] = json!(WRITE_KEY);
    let (s, _, _) = srv
        .post_raw(
            "/v1/t",
            &[("content-type", "text/plain;charset=UTF-8")],
            single.to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 200);
    // ?writeKey=, labelled as a form.
    let (s, _, _) = srv
        .post_raw(
            &format!("/v1/batch?writeKey={WRITE_KEY}"),
            &[("content-type", "application/x-www-form-urlencoded")],
            json!({"batch": [ev("m4")]}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(s, 200);
    let stored = srv.events().await;
    let ids: Vec<&str> = stored
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["m1", "m2", "m3", "m4"]);
    assert!(stored
        .iter()
        .all(|e| e["message"].get("writeKey").is_none()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_do_not_create_duplicates_even_after_a_restart() {
    let srv = TestServer::start().await;
    let batch = json!({"batch": [
        {"type": "track", "event": "E", "userId": "u", "messageId": "dup-1"},
        {"type": "track", "event": "E", "userId": "u", "messageId": "dup-2"},
        {"type": "track", "event": "E", "userId": "u", "messageId": "dup-1"},
    ]});
    for _ in 0..3 {
        let auth = TestServer::basic(WRITE_KEY);
        let (s, _, _) = srv
            .post_raw(
                "/v1/batch",
                &[("authorization", &auth), ("x-retry-count", "1")],
                batch.to_string().into_bytes(),
            )
            .await;
        assert_eq!(s, 200);
    }
    assert_eq!(srv.events().await.len(), 2);
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |_| {}).await;
    let (s, _) = srv.post("/v1/batch", &batch).await;
    assert_eq!(s, 200);
    assert_eq!(
        srv.events().await.len(),
        2,
        "dedupe index rebuilt from the log at start-up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrichment_clock_skew_utm_user_agent_ip_and_batch_context() {
    let srv = TestServer::start().await;
    let now = chrono::Utc::now();
    // The client clock is one hour ahead.
    let client_now = now + chrono::Duration::hours(1);
    let batch = json!({
        "sentAt": client_now.to_rfc3339(),
        "context": {"library": {"name": "shared-lib"}, "locale": "nl-NL"},
        "batch": [{
            "type": "page", "anonymousId": "a1", "messageId": "p1",
            "timestamp": (client_now - chrono::Duration::seconds(10)).to_rfc3339(),
            "context": {
                "page": {"url": "https://shop.test/?utm_source=google&utm_medium=cpc&utm_campaign=winter&utm_term=boots"},
                "userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "library": {"name": "own-lib"}
            }
        }]
    });
    let (s, _) = srv.post("/v1/batch", &batch).await;
    assert_eq!(s, 200);
    let e = &srv.events().await[0];
    let ts = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().unwrap()).unwrap();
    let received =
        chrono::DateTime::parse_from_rfc3339(e["received_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        (received - ts).num_seconds(),
        10,
        "corrected to 10 s before receipt"
    );
    assert_eq!(
        e["utm"],
        json!({"source": "google", "medium": "cpc", "campaign": "winter", "term": "boots"})
    );
    assert_eq!(e["user_agent"]["browser"], "Chrome");
    assert_eq!(e["user_agent"]["device_type"], "desktop");
    assert_eq!(e["ip"], "127.0.0.1");
    assert_eq!(e["message"]["context"]["library"]["name"], "own-lib");
    assert_eq!(e["message"]["context"]["locale"], "nl-NL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_endpoint_and_cors_for_browsers() {
    let srv = TestServer::start().await;
    let resp = srv
        .http
        .get(format!("{}/v1/projects/{WRITE_KEY}/settings", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    let host = srv.url.trim_start_matches("http://");
    assert_eq!(v["integrations"]["Segment.io"]["apiKey"], WRITE_KEY);
    assert_eq!(
        v["integrations"]["Segment.io"]["apiHost"],
        format!("{host}/v1")
    );
    let resp = srv
        .http
        .get(format!("{}/v1/projects/nope/settings", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let pre = srv
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/t", srv.url))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    // Basic auth from a browser needs Authorization allowed explicitly (`*` does not cover it).
    let allowed = pre.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization"), "{allowed}");
    let resp = srv
        .http
        .post(format!("{}/v1/t", srv.url))
        .header("origin", "https://shop.example")
        .body(json!({"writeKey": WRITE_KEY, "userId": "u", "event": "E"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_messageid_is_remembered_for_the_dedupe_window_and_then_forgotten() {
    let clock = std::sync::Arc::new(spoor_core::FixedClock::new(
        chrono::DateTime::parse_from_rfc3339("2026-03-01T00:00:00Z")
            .unwrap()
            .into(),
    ));
    let srv = TestServer::start_clocked(
        tempfile::tempdir().unwrap(),
        |c| c.ingest.dedupe_window_secs = 3_600,
        clock.clone(),
    )
    .await;
    let batch =
        json!({"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": "same"}]});
    assert_eq!(srv.post("/v1/batch", &batch).await.0, 200);
    clock.advance(chrono::Duration::minutes(59));
    assert_eq!(srv.post("/v1/batch", &batch).await.0, 200);
    assert_eq!(
        srv.events().await.len(),
        1,
        "a retry within the window is a duplicate"
    );
    clock.advance(chrono::Duration::minutes(2));
    assert_eq!(srv.post("/v1/batch", &batch).await.0, 200);
    let stored = srv.events().await;
    assert_eq!(stored.len(), 2, "past the window the id is new again");
    // The stored receive times are the server clock's, not the wall clock's.
    assert_eq!(stored[0]["received_at"], "2026-03-01T00:00:00.000Z");
    assert_eq!(stored[1]["received_at"], "2026-03-01T01:01:00.000Z");
}
