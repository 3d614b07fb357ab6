//! Destinations against a real webhook receiver (`receiver.rs`, an axum server that fails,
//! delays and answers 429/500 on purpose): signed deliveries of events and audience
//! changes, retries with the same idempotency key, dead letters and replay, a failing
//! destination beside a healthy one, pausing and resuming, positions kept across a
//! restart, and the per-profile delivery log.

use crate::common::{call, TestServer};
use crate::receiver::{Receiver, Reply};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
    })
    .await
}

fn fast_retry() -> Value {
    json!({"max_attempts": 6, "initial_backoff_ms": 20, "max_backoff_ms": 200, "pause_after_secs": 3600})
}

async fn create(srv: &TestServer, body: Value) -> Value {
    let (s, v) = call(srv, "POST", "/v1/destinations", Some(body)).await;
    assert_eq!(s, 201, "{v}");
    v
}

fn track(user: &str, event: &str, n: u64) -> Value {
    json!({"type": "track", "userId": user, "event": event, "messageId": format!("{user}-{event}-{n}"),
           "properties": {"n": n, "total": n * 10}})
}

async fn send(srv: &TestServer, events: Vec<Value>) {
    let (s, v) = srv.post("/v1/batch", &json!({ "batch": events })).await;
    assert_eq!(s, 200, "{v}");
}

async fn status(srv: &TestServer, name: &str) -> Value {
    let (s, v) = call(srv, "GET", &format!("/v1/destinations/{name}"), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

async fn wait_status(srv: &TestServer, name: &str, f: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..1200 {
        let v = status(srv, name).await;
        if f(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "{name}: condition not met in 30 s: {}",
        status(srv, name).await
    );
}

/// Checks the Standard Webhooks signatures with the `standardwebhooks` Python package, an
/// implementation independent of Spoor's. Skips (saying why) when it is not installed,
/// unless `SPOOR_REQUIRE_SDKS=1` (CI).
fn verify_with_python(secret: &str, got: &[crate::receiver::Got]) {
    let python = std::env::var("SPOOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/destinations/verify_standardwebhooks.py"
    );
    let required = std::env::var("SPOOR_REQUIRE_SDKS").is_ok_and(|v| v == "1");
    let probe = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            !required,
            "SPOOR_REQUIRE_SDKS=1 but {python:?} cannot import standardwebhooks"
        );
        eprintln!("SKIPPED signature check with standardwebhooks: {python:?} cannot import it (pip install standardwebhooks; set SPOOR_PYTHON)");
        return;
    }
    let requests: Vec<Value> = got
        .iter()
        .map(|g| {
            json!({"body": String::from_utf8(g.body.to_vec()).unwrap(), "headers": {
                "webhook-id": g.header("webhook-id"),
                "webhook-timestamp": g.header("webhook-timestamp"),
                "webhook-signature": g.header("webhook-signature"),
            }})
        })
        .collect();
    let input = json!({"secret": secret, "requests": requests}).to_string();
    let mut child = std::process::Command::new(&python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks rejected a request: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert_eq!(n, got.len());
}

#[tokio::test]
async fn events_are_filtered_mapped_signed_and_delivered_once() {
    // The destination serves `analytics`, which this workspace grants by default (opt-out):
    // consent is enforced (see privacy.rs), and nobody here withdrew it.
    let srv = TestServer::start_with(|c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
        c.privacy.default_consent.insert(
            "analytics".into(),
            spoor_core::consent::ConsentValue::Granted,
        );
    })
    .await;
    let rx = Receiver::start().await;
    let d = create(
        &srv,
        json!({
            "name": "orders", "type": "webhook", "purposes": ["analytics"],
            "subscriptions": {"events": [{"type": "track", "name": "Order Completed",
                                          "where": ".event.message.properties.total >= 20"}]},
            "webhook": {"url": format!("{}/orders", rx.url),
                        "headers": {"x-api-key": "k1"}, "auth": {"bearer": "tok"},
                        "mapping": "{id, user: .event.message.userId, total: .event.message.properties.total}"},
            "retry": fast_retry(),
        }),
    )
    .await;
    let secret = d["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{d}");
    assert_eq!(d["purposes"], json!(["analytics"]));
    send(
        &srv,
        vec![
            track("u1", "Order Completed", 1), // total 10: filtered out
            track("u1", "Order Completed", 2),
            track("u2", "Viewed", 3),
            track("u2", "Order Completed", 4),
        ],
    )
    .await;
    let got = rx.wait_for("/orders", 2).await;
    assert_eq!(
        got.iter().map(|v| v["total"].clone()).collect::<Vec<_>>(),
        vec![json!(20), json!(40)]
    );
    assert_eq!(got[0]["user"], "u1");
    let reqs = rx.got("/orders");
    for r in &reqs {
        assert_eq!(r.header("x-api-key"), "k1");
        assert_eq!(r.header("authorization"), "Bearer tok");
        assert_eq!(r.header("webhook-id"), r.json()["id"].as_str().unwrap());
        assert_eq!(r.header("idempotency-key"), r.header("webhook-id"));
    }
    verify_with_python(&secret, &reqs);
    let v = wait_status(&srv, "orders", |v| v["stats"]["delivered"] == 2).await;
    assert_eq!(v["status"], "active");
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.delivered("/orders").len(), 2);
    let (s, list) = call(&srv, "GET", "/v1/destinations", None).await;
    assert_eq!(s, 200);
    assert!(list["destinations"][0].get("secret").is_none(), "{list}");
    let metrics = srv
        .http
        .get(format!("{}/metrics", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"spoor_destination{destination="orders",what="delivered"} 2"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn retries_keep_the_key_honour_retry_after_and_4xx_goes_to_dead_letters() {
    let srv = start().await;
    let rx = Receiver::start().await;
    rx.script(
        "/flaky",
        vec![Reply::Status(500), Reply::TooMany(1), Reply::Status(408)],
    );
    rx.always("/broken", Some(Reply::Status(400)));
    for (name, path) in [("flaky", "/flaky"), ("broken", "/broken")] {
        create(
            &srv,
            json!({"name": name, "type": "webhook", "subscriptions": {"events": [{}]},
                   "webhook": {"url": format!("{}{path}", rx.url)}, "retry": fast_retry()}),
        )
        .await;
    }
    send(&srv, vec![track("u1", "A", 1), track("u1", "B", 2)]).await;
    let got = rx.wait_for("/flaky", 2).await;
    let all = rx.got("/flaky");
    assert_eq!(all.len(), 5, "three failures, then two deliveries");
    let first_key = all[0].header("webhook-id");
    assert!(all[..4].iter().all(|r| r.header("webhook-id") == first_key));
    assert_eq!(got[0]["event"]["message"]["event"], "A");
    assert_eq!(got[1]["event"]["message"]["event"], "B");
    let v = wait_status(&srv, "flaky", |v| v["stats"]["delivered"] == 2).await;
    assert_eq!(v["stats"]["retries"], 3, "{v}");

    // 400 is permanent: each item is tried once, then dead-lettered.
    let v = wait_status(&srv, "broken", |v| v["stats"]["dead_letters"] == 2).await;
    assert!(
        v["stats"]["last_error"].as_str().unwrap().contains("400"),
        "{v}"
    );
    assert_eq!(rx.got("/broken").len(), 2);
    let (s, dl) = call(&srv, "GET", "/v1/destinations/broken/dead-letters", None).await;
    assert_eq!(s, 200, "{dl}");
    let dead = dl["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0]["status"], 400);
    let dead_key = dead[0]["key"].as_str().unwrap().to_owned();

    // Replay once the receiver is fixed: same keys, and the dead-letter list empties.
    rx.always("/broken", None);
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations/broken/replay",
        Some(json!({})),
    )
    .await;
    assert_eq!((s, v["replaying"].clone()), (200, json!(2)), "{v}");
    let got = rx.wait_for("/broken", 2).await;
    assert_eq!(got[0]["id"], dead_key);
    let (_, dl) = call(&srv, "GET", "/v1/destinations/broken/dead-letters", None).await;
    assert_eq!(dl["dead_letters"], json!([]));

    // The delivery log of the person shows both destinations.
    let (s, log) = call(&srv, "GET", "/v1/profiles/user_id:u1/deliveries", None).await;
    assert_eq!(s, 200, "{log}");
    let outcomes: HashSet<(String, String)> = log["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["destination"].as_str().unwrap().to_owned(),
                r["outcome"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("flaky", "delivered"),
        ("broken", "dead_letter"),
        ("broken", "replayed"),
    ] {
        assert!(
            outcomes.contains(&(want.0.into(), want.1.into())),
            "{want:?} missing from {log}"
        );
    }
}

#[tokio::test]
async fn a_failing_destination_does_not_hold_up_a_healthy_one() {
    let srv = start().await;
    let rx = Receiver::start().await;
    rx.always("/down", Some(Reply::Status(503)));
    rx.always("/slow", Some(Reply::Slow(Duration::from_millis(300))));
    for (name, path) in [
        ("down", "/down"),
        ("slow", "/slow"),
        ("healthy", "/healthy"),
    ] {
        create(
            &srv,
            json!({"name": name, "type": "webhook", "subscriptions": {"events": [{}]},
                   "webhook": {"url": format!("{}{path}", rx.url)},
                   "retry": {"max_attempts": 1000, "initial_backoff_ms": 50, "max_backoff_ms": 100, "pause_after_secs": 3600}}),
        )
        .await;
    }
    let events: Vec<Value> = (0..50).map(|n| track("u1", "E", n)).collect();
    send(&srv, events).await;
    let got = rx.wait_for("/healthy", 50).await;
    let ns: Vec<u64> = got
        .iter()
        .map(|v| v["event"]["message"]["properties"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, (0..50).collect::<Vec<_>>(), "in order");
    // The failing one is still on its first item, retrying it.
    let v = status(&srv, "down").await;
    assert_eq!(v["stats"]["delivered"], 0);
    assert_eq!(v["status"], "retrying", "{v}");
    let keys: HashSet<String> = rx
        .got("/down")
        .iter()
        .map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(keys.len(), 1, "only the head of its queue was tried");
}

#[tokio::test]
async fn batches_arrive_in_order_per_profile_once_per_key_despite_failures() {
    let srv = start().await;
    let rx = Receiver::start().await;
    let mut script = Vec::new();
    for i in 0..40 {
        script.push(if i % 3 == 0 {
            Reply::Status(500)
        } else {
            Reply::Status(200)
        });
    }
    rx.script("/batch", script);
    create(
        &srv,
        json!({"name": "batch", "type": "webhook", "subscriptions": {"events": [{}]},
               "webhook": {"url": format!("{}/batch", rx.url), "batch_size": 7}, "retry": fast_retry()}),
    )
    .await;
    let mut events = Vec::new();
    for n in 0..60 {
        events.push(track(&format!("u{}", n % 4), "E", n));
    }
    for chunk in events.chunks(13) {
        send(&srv, chunk.to_vec()).await;
    }
    let got = rx.wait_for("/batch", 60).await;
    assert_eq!(got.len(), 60);
    let mut per_user: HashMap<String, Vec<u64>> = HashMap::new();
    let mut keys = HashSet::new();
    for v in &got {
        assert!(
            keys.insert(v["id"].as_str().unwrap().to_owned()),
            "{v} twice"
        );
        per_user
            .entry(v["event"]["message"]["userId"].as_str().unwrap().into())
            .or_default()
            .push(v["event"]["message"]["properties"]["n"].as_u64().unwrap());
    }
    for (u, ns) in per_user {
        let mut sorted = ns.clone();
        sorted.sort_unstable();
        assert_eq!(ns, sorted, "{u} out of order");
    }
    assert!(rx.got("/batch").iter().all(|r| r.json().is_array()));
}

#[tokio::test]
async fn audience_entries_and_exits_are_delivered() {
    let srv = start().await;
    let rx = Receiver::start().await;
    create(
        &srv,
        json!({"name": "aud", "type": "webhook",
               "subscriptions": {"events": [{"name": "Bought"}], "audiences": [{"audience": "buyers"}]},
               "webhook": {"url": format!("{}/aud", rx.url)}, "retry": fast_retry()}),
    )
    .await;
    let def = AudienceDefinition {
        name: "buyers".into(),
        description: String::new(),
        rule: parse(r#"performed "Bought""#).unwrap(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    srv.app
        .defs
        .update(|d| {
            d.audiences.insert("buyers".into(), def);
            Ok(())
        })
        .unwrap();
    send(&srv, vec![track("u9", "Bought", 1)]).await;
    let got = rx.wait_for("/aud", 2).await;
    assert_eq!(got[0]["kind"], "event", "{got:?}");
    assert_eq!(got[1]["kind"], "audience");
    assert_eq!(got[1]["audience"], "buyers");
    assert_eq!(got[1]["action"], "entered");
}

#[tokio::test]
async fn paused_after_the_grace_period_and_resumed() {
    let srv = start().await;
    let rx = Receiver::start().await;
    rx.always("/p", Some(Reply::Status(502)));
    create(
        &srv,
        json!({"name": "p", "type": "webhook", "subscriptions": {"events": [{}]},
               "webhook": {"url": format!("{}/p", rx.url)},
               "retry": {"max_attempts": 100, "initial_backoff_ms": 10, "max_backoff_ms": 20, "pause_after_secs": 0}}),
    )
    .await;
    send(&srv, vec![track("u1", "E", 1)]).await;
    let v = wait_status(&srv, "p", |v| v["status"] == "paused").await;
    assert!(
        v["stats"]["paused"].as_str().unwrap().contains("502"),
        "{v}"
    );
    rx.always("/p", None);
    let (s, _) = call(&srv, "POST", "/v1/destinations/p/resume", None).await;
    assert_eq!(s, 200);
    let got = rx.wait_for("/p", 1).await;
    assert_eq!(got[0]["event"]["message"]["properties"]["n"], 1);
}

#[tokio::test]
async fn positions_survive_a_restart_and_test_shows_the_answer() {
    let srv = start().await;
    let rx = Receiver::start().await;
    create(
        &srv,
        json!({"name": "r", "type": "webhook", "subscriptions": {"events": [{}]},
               "webhook": {"url": format!("{}/r", rx.url)}, "retry": fast_retry()}),
    )
    .await;
    send(&srv, vec![track("u1", "E", 1), track("u1", "E", 2)]).await;
    rx.wait_for("/r", 2).await;
    let dir = srv.stop().await;
    let srv = TestServer::start_in(dir, |c| c.destinations.poll_ms = 10).await;
    send(&srv, vec![track("u1", "E", 3)]).await;
    let got = rx.wait_for("/r", 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.delivered("/r").len(), 3, "{got:?}");

    let (s, v) = call(&srv, "POST", "/v1/destinations/r/test", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["result"]["ok"], true, "{v}");
    assert_eq!(v["result"]["status"], 200);
    assert_eq!(v["sent"]["test"], true);

    // Bad definitions are refused with the field named; unknown ones are 404.
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "bad", "type": "webhook", "webhook": {"url": "http://x", "mapping": "{a: "}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("webhook.mapping"),
        "{v}"
    );
    let (s, _) = call(&srv, "GET", "/v1/destinations/nope", None).await;
    assert_eq!(s, 404);
    let (s, _) = call(&srv, "DELETE", "/v1/destinations/r", None).await;
    assert_eq!(s, 200);
    let (s, _) = call(&srv, "GET", "/v1/destinations/r", None).await;
    assert_eq!(s, 404);
}

#[tokio::test]
async fn profile_changes_are_delivered_as_the_current_profile() {
    let srv = start().await;
    let rx = Receiver::start().await;
    create(
        &srv,
        json!({"name": "pc", "type": "webhook",
               "subscriptions": {"events": [{"name": "Bought"}], "profiles": {"traits": ["plan"]}},
               "webhook": {"url": format!("{}/pc", rx.url)}, "retry": fast_retry()}),
    )
    .await;
    let identify = |traits: Value, n: u64| json!({"type": "identify", "userId": "u1", "messageId": format!("id-{n}"), "traits": traits});
    srv.send_processed(vec![identify(json!({"plan": "pro", "name": "Ann"}), 1)])
        .await;
    let got = rx.wait_for("/pc", 1).await;
    assert_eq!(got[0]["kind"], "profile", "{got:?}");
    assert_eq!(got[0]["changed"], json!(["name", "plan"]));
    assert_eq!(got[0]["profile"]["traits"]["plan"], "pro");
    // An event it subscribes to, then a trait it does not watch (no item).
    srv.send_processed(vec![
        track("u1", "Bought", 1),
        identify(json!({"name": "Ann B"}), 2),
    ])
    .await;
    srv.send_processed(vec![identify(json!({"plan": "free"}), 3)])
        .await;
    let got = rx.wait_for("/pc", 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.delivered("/pc").len(), 3, "{got:?}");
    assert_eq!(got[1]["kind"], "event", "{got:?}");
    assert_eq!(got[2]["kind"], "profile");
    assert_eq!(got[2]["changed"], json!(["plan"]));
    // Delivered as the profile is now.
    assert_eq!(got[2]["profile"]["traits"]["plan"], "free");
    assert_eq!(got[2]["profile"]["traits"]["name"], "Ann B");
    assert_eq!(got[0]["profile_id"], got[2]["profile_id"]);
    assert_ne!(got[0]["id"], got[2]["id"]);
}
