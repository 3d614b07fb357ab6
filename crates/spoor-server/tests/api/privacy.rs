//! Privacy end to end: consent enforced at delivery against a real webhook receiver (nothing
//! about a person without consent; an exit when they withdraw it), the Consent API and its
//! durability through a rebuild, `consented to` audiences, and PII controls checked on the
//! bytes of the stored log.

use crate::common::{TestServer, ADMIN_TOKEN};
use crate::receiver::Receiver;
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use std::time::Duration;

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
    })
    .await
}

async fn call(srv: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let url = format!("{}{path}", srv.url);
    let mut req = match method {
        "POST" => srv.http.post(url),
        "PUT" => srv.http.put(url),
        _ => srv.http.get(url),
    }
    .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}

fn audience(name: &str, rule: &str) -> AudienceDefinition {
    AudienceDefinition {
        name: name.into(),
        description: String::new(),
        rule: parse(rule).unwrap(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    }
}

fn bought(user: &str, n: u64, ads: Option<bool>) -> Value {
    let mut e = json!({"type": "track", "userId": user, "event": "Bought",
                       "messageId": format!("{user}-b{n}")});
    if let Some(a) = ads {
        e["context"] = json!({"consent": {"categoryPreferences": {"Advertising": a}}});
    }
    e
}

fn about(items: &[Value], user: &str, pid: &str) -> Vec<Value> {
    items
        .iter()
        .filter(|i| i["event"]["message"]["userId"] == user || i["profile_id"] == pid)
        .cloned()
        .collect()
}

async fn pid_of(srv: &TestServer, user: &str) -> String {
    let (s, v) = call(srv, "GET", &format!("/v1/profiles/user_id:{user}"), None).await;
    assert_eq!(s, 200, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertising_destination_gets_nothing_without_consent_and_an_exit_on_withdrawal() {
    let srv = start().await;
    let rx = Receiver::start().await;
    let subs = json!({"events": [{"name": "Bought"}], "audiences": [{"audience": "buyers"}]});
    for (name, purposes) in [("ads", json!(["advertising"])), ("all", json!([]))] {
        let (s, v) = call(
            &srv,
            "POST",
            "/v1/destinations",
            Some(
                json!({"name": name, "type": "webhook", "purposes": purposes,
                        "subscriptions": subs, "webhook": {"url": format!("{}/{name}", rx.url)}}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    srv.define(|d| {
        d.audiences
            .insert("buyers".into(), audience("buyers", r#"performed "Bought""#));
    })
    .await;

    // u1 never consents; u2 consents to advertising through Segment's consent object.
    srv.send_processed(vec![bought("u1", 1, None)]).await;
    srv.send_processed(vec![bought("u2", 1, Some(true))]).await;
    let (u1, u2) = (pid_of(&srv, "u1").await, pid_of(&srv, "u2").await);
    // The ungated destination gets both people's event and entry...
    let all = rx.wait_for("/all", 4).await;
    assert_eq!(about(&all, "u1", &u1).len(), 2, "{all:?}");
    // ...the advertising one only u2's, and (delivery is in log order) nothing of u1.
    let ads = rx.wait_for("/ads", 2).await;
    assert_eq!(about(&ads, "u2", &u2).len(), 2, "{ads:?}");
    assert!(about(&ads, "u1", &u1).is_empty(), "{ads:?}");

    // u2 withdraws through the Consent API: the destination gets the exit, once.
    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/profiles/user_id:u2/consent",
        Some(json!({"purposes": {"advertising": "denied"}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["applied"], true, "{v}");
    assert_eq!(v["consent"]["advertising"]["value"], "denied", "{v}");
    assert_eq!(v["consent"]["advertising"]["via"], "api", "{v}");
    let ads = rx.wait_for("/ads", 3).await;
    let exit = &ads[2];
    assert_eq!(exit["kind"], "audience", "{ads:?}");
    assert_eq!(exit["action"], "exited");
    assert_eq!(exit["audience"], "buyers");
    assert_eq!(exit["profile_id"], u2.as_str());
    assert_eq!(exit["cause"], "consent_withdrawn");

    // After the withdrawal u2's events stop; u3 (consenting) shows delivery went on past them.
    srv.send_processed(vec![bought("u2", 2, None), bought("u2", 3, Some(false))])
        .await;
    srv.send_processed(vec![bought("u3", 1, Some(true))]).await;
    let ads = rx.wait_for("/ads", 5).await;
    let u3 = pid_of(&srv, "u3").await;
    assert_eq!(about(&ads, "u3", &u3).len(), 2, "{ads:?}");
    assert_eq!(
        about(&ads, "u2", &u2).len(),
        3,
        "only the first event, entry and exit: {ads:?}"
    );
    // A repeated denial (u2's third event) sends no second exit.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.delivered("/ads").len(), 5);

    // History: the event's grant, the API's denial, the event's repeated denial.
    let (s, v) = call(&srv, "GET", "/v1/profiles/user_id:u2/consent/history", None).await;
    assert_eq!(s, 200, "{v}");
    let vias: Vec<_> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["value"].as_str().unwrap(), h["via"].as_str().unwrap()))
        .collect();
    assert_eq!(
        vias,
        vec![("denied", "event"), ("denied", "api"), ("granted", "event")]
    );
    let (_, p) = call(&srv, "GET", "/v1/profiles/user_id:u1", None).await;
    assert_eq!(
        p["consent"]["advertising"],
        json!({"value": "denied", "default": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_can_require_consent_and_api_consent_survives_a_rebuild() {
    let srv = start().await;
    srv.define(|d| {
        d.audiences.insert(
            "retarget".into(),
            audience(
                "retarget",
                r#"consented to advertising and performed "Bought""#,
            ),
        );
    })
    .await;
    srv.send_processed(vec![
        bought("a", 1, None),
        json!({"type": "identify", "userId": "b", "traits": {"consent": {"advertising": true}},
               "messageId": "b-i"}),
        bought("b", 1, None),
    ])
    .await;
    let members = |v: &Value| -> Vec<String> {
        v["audiences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, a) = call(&srv, "GET", "/v1/profiles/user_id:a", None).await;
    let (_, b) = call(&srv, "GET", "/v1/profiles/user_id:b", None).await;
    assert!(members(&a).is_empty(), "{a}");
    assert_eq!(members(&b), vec!["retarget"], "{b}");
    assert_eq!(b["consent"]["advertising"]["via"], "trait", "{b}");

    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/profiles/user_id:b/consent",
        Some(json!({"purposes": {"advertising": false}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, b) = call(&srv, "GET", "/v1/profiles/user_id:b", None).await;
    assert!(members(&b).is_empty(), "withdrawn consent takes b out: {b}");

    // Bad input names its cause.
    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/profiles/user_id:b/consent",
        Some(json!({"purposes": {"telepathy": "granted"}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("telepathy"), "{v}");
    let (s, v) = call(
        &srv,
        "PUT",
        "/v1/profiles/user_id:b/consent",
        Some(json!({"purposes": {"email": "perhaps"}})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("perhaps"), "{v}");

    // The API's choice is an event in the log: a rebuild re-derives it.
    let cfg = srv.app.cfg.clone();
    let dir = srv.stop().await;
    spoor_server::processor::rebuild(&cfg, |_, _| {}).unwrap();
    let srv = TestServer::start_in(dir, |c| c.processor.checkpoint_ms = 100).await;
    let (s, v) = call(&srv, "GET", "/v1/profiles/user_id:b/consent", None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["consent"]["advertising"]["value"], "denied", "{v}");
    assert_eq!(v["consent"]["advertising"]["via"], "api", "{v}");
    let (_, b) = call(&srv, "GET", "/v1/profiles/user_id:b", None).await;
    assert!(members(&b).is_empty(), "{b}");
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ips_are_truncated_and_redacted_fields_never_reach_the_log() {
    use spoor_server::privacy::pii::{RedactAction, RedactRule};
    let srv = TestServer::start_with(|c| {
        c.privacy.anonymize_ip = vec!["*".into()];
        c.privacy.redact = vec![
            RedactRule {
                path: "properties.card_number".into(),
                action: RedactAction::Drop,
                sources: vec![],
            },
            RedactRule {
                path: "traits.ssn".into(),
                action: RedactAction::Hash,
                sources: vec![],
            },
        ];
    })
    .await;
    srv.send_processed(vec![
        json!({"type": "track", "userId": "p1", "event": "Paid", "messageId": "p1-1",
               "properties": {"card_number": "4111-1111-1111-1111", "total": 12},
               "context": {"ip": "198.51.100.213"}}),
        json!({"type": "identify", "userId": "p1", "messageId": "p1-2",
               "traits": {"ssn": "078-05-1120", "name": "Pat"},
               "context": {"ip": "2001:db8:abcd:12:3456::77"}}),
    ])
    .await;
    let events = srv.events().await;
    assert_eq!(events.len(), 2);
    let log = all_bytes(&srv.dir.path().join("log"));
    for raw in [
        "4111-1111-1111-1111",
        "078-05-1120",
        "198.51.100.213",
        "3456::77",
    ] {
        assert!(!contains(&log, raw), "{raw} is in the stored log");
    }
    assert!(contains(&log, "198.51.100.0"));
    assert!(contains(&log, "\"total\":12"));
    let (_, p) = call(&srv, "GET", "/v1/profiles/user_id:p1", None).await;
    assert_eq!(p["traits"]["name"], "Pat");
    assert_eq!(p["traits"]["ssn"].as_str().unwrap().len(), 64, "{p}");
}
