//! Every kind of bad input gets a clear answer, and nothing valid is lost.

use crate::common::{gzip, TestServer, WRITE_KEY};
use serde_json::{json, Value};

fn track(user: &str, i: usize) -> Value {
    json!({"type": "track", "event": "Product Viewed", "userId": user, "messageId": format!("{user}-{i}"), "properties": {"i": i}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_json_is_400_and_recorded() {
    let srv = TestServer::start().await;
    let auth = TestServer::basic(WRITE_KEY);
    let (s, v, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &auth)],
            b"{\"batch\": [".to_vec(),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "invalid_request");
    assert!(
        v["message"].as_str().unwrap().contains("not valid JSON"),
        "{v}"
    );
    let (s, _, _) = srv
        .post_raw(
            "/v1/track",
            &[("authorization", &auth)],
            b"not json".to_vec(),
        )
        .await;
    assert_eq!(s, 400);
    let (s, v, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &auth)],
            b"{\"events\":[]}".to_vec(),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("batch"), "{v}");
    assert!(srv.events().await.is_empty());
    let rej = srv.rejections().await;
    assert_eq!(rej.len(), 3, "{rej:?}");
    assert_eq!(rej[0]["code"], "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_write_key_is_401_and_nothing_is_stored() {
    let srv = TestServer::start().await;
    let body = json!({"batch": [track("u", 1)]}).to_string().into_bytes();
    let bad = TestServer::basic("nope");
    let (s, v, _) = srv
        .post_raw("/v1/batch", &[("authorization", &bad)], body.clone())
        .await;
    assert_eq!(s, 401);
    assert_eq!(v["code"], "unauthorized");
    let (s, _, _) = srv.post_raw("/v1/batch", &[], body.clone()).await;
    assert_eq!(s, 401);
    let (s, _, _) = srv.post_raw("/v1/batch?writeKey=nope", &[], body).await;
    assert_eq!(s, 401);
    let (s, _, _) = srv
        .post_raw(
            "/v1/t",
            &[],
            json!({"writeKey": "nope", "userId": "u", "event": "E"})
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(s, 401);
    assert!(srv.events().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_request_and_gzip_bomb_are_400_not_oom() {
    let srv = TestServer::start().await;
    let auth = TestServer::basic(WRITE_KEY);
    // 600 KB of valid events, over the 500 KB batch limit.
    let big: Vec<Value> = (0..40).map(|i| json!({"type":"track","event":"E","userId":"u","messageId":i,"p":"x".repeat(15_000)})).collect();
    let body = json!({"batch": big}).to_string().into_bytes();
    assert!(body.len() > 512_000);
    let (s, v, _) = srv
        .post_raw("/v1/batch", &[("authorization", &auth)], body.clone())
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "request_too_large");
    // The same, gzipped: small on the wire, too large once inflated.
    let (s, v, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &auth), ("content-encoding", "gzip")],
            gzip(&body),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["code"], "request_too_large");
    // A gzip bomb: 50 MB of spaces in ~50 KB.
    let bomb = gzip(&vec![b' '; 50 * 1024 * 1024]);
    assert!(bomb.len() < 100_000);
    let (s, v, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &auth), ("content-encoding", "gzip")],
            bomb,
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["code"], "request_too_large");
    // Corrupt gzip.
    let (s, v, _) = srv
        .post_raw(
            "/v1/batch",
            &[("authorization", &auth), ("content-encoding", "gzip")],
            b"\x1f\x8b garbage".to_vec(),
        )
        .await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("gzip"));
    // Too many events.
    let many: Vec<Value> = (0..2501)
        .map(|i| json!({"type":"track","event":"E","userId":"u","messageId":i}))
        .collect();
    let (s, v) = srv.post("/v1/batch", &json!({"batch": many})).await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("2501"), "{v}");
    assert!(srv.events().await.is_empty());
    // The server still works.
    let (s, _) = srv
        .post("/v1/batch", &json!({"batch": [track("u", 1)]}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(srv.events().await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_batch_keeps_every_valid_event_and_records_each_invalid_one() {
    let srv = TestServer::start().await;
    let batch = json!({"batch": [
        track("u1", 1),
        {"type": "track", "event": "No One", "messageId": "bad-1"},
        track("u2", 2),
        {"type": "track", "userId": "u3", "messageId": "bad-2"},
        {"type": "purchase", "userId": "u4", "messageId": "bad-3"},
        {"type": "track", "event": "Huge", "userId": "u5", "p": "x".repeat(40_000)},
        {"type": "identify", "userId": {"nested": true}},
        "just a string",
        {"type": "alias", "userId": "u6"},
        {"type": "group", "userId": "u7"},
        {"type": "identify", "userId": null, "anonymousId": "a8", "traits": {"email": "x@y.z"}},
    ]});
    let (s, v) = srv.post("/v1/batch", &batch).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["success"], true);
    let rejected = v["rejected"].as_array().unwrap();
    let codes: Vec<(u64, &str)> = rejected
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["code"].as_str().unwrap()))
        .collect();
    assert_eq!(
        codes,
        vec![
            (1, "missing_identity"),
            (3, "missing_field"),
            (4, "invalid_type"),
            (5, "event_too_large"),
            (6, "invalid_json"),
            (7, "invalid_json"),
            (8, "missing_identity"),
            (9, "missing_field"),
        ]
    );
    let stored = srv.events().await;
    let users: Vec<&str> = stored
        .iter()
        .map(|e| {
            e["message"]["userId"]
                .as_str()
                .or(e["message"]["anonymousId"].as_str())
                .unwrap()
        })
        .collect();
    assert_eq!(users, vec!["u1", "u2", "a8"]);
    let rec = srv.rejections().await;
    assert_eq!(rec.len(), 8);
    assert_eq!(rec[0]["code"], "missing_identity");
    assert!(rec[0]["message"]
        .as_str()
        .unwrap()
        .contains("userId or anonymousId"));
    assert!(rec[0]["raw"].as_str().unwrap().contains("No One"));
    assert_eq!(rec[3]["truncated"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_single_event_call_is_400_with_the_reason() {
    let srv = TestServer::start().await;
    let (s, v) = srv.post("/v1/track", &json!({"userId": "u"})).await;
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().contains("missing_field"),
        "{v}"
    );
    let (s, v) = srv.post("/v1/identify", &json!({"traits": {"a": 1}})).await;
    assert_eq!(s, 400);
    assert!(
        v["message"].as_str().unwrap().contains("missing_identity"),
        "{v}"
    );
    assert!(srv.events().await.is_empty());
    assert_eq!(srv.rejections().await.len(), 2);
}
