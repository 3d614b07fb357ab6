//! Privacy end to end: consent enforced at delivery against a real webhook receiver (nothing
//! about a person without consent; an exit when they withdraw it), the Consent API and its
//! durability through a rebuild, `consented to` audiences, and PII controls checked on the
//! bytes of the stored log.

use crate::common::{call, TestServer, ADMIN_TOKEN};
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
    // Previews evaluate consent like the engine.
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/audiences/preview",
        Some(json!({"rule": "consented to advertising"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["matched"], 1, "only b: {v}");

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
    // A rejected event of such a source keeps no raw text either.
    let (s, _) = srv
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "userId": "p1", "messageId": "p1-3",
                               "properties": {"card_number": "5500-0000-0000-0004"}}]}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(srv.rejections().await.len(), 1);
    let events = srv.events().await;
    assert_eq!(events.len(), 2);
    assert!(!contains(
        &all_bytes(&srv.dir.path().join("rejected")),
        "5500-0000"
    ));
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_export_holds_everything_and_every_access_is_audited() {
    let srv = start().await;
    srv.define(|d| {
        d.audiences
            .insert("buyers".into(), audience("buyers", r#"performed "Bought""#));
    })
    .await;
    // More events than one page of the streamed export (500), across a merge.
    let mut events = vec![
        json!({"type": "identify", "anonymousId": "anon-7", "traits": {"email": "Erin@Example.com"}, "messageId": "e-0"}),
        json!({"type": "identify", "userId": "erin", "anonymousId": "anon-7", "messageId": "e-1"}),
    ];
    events.extend((0..600).map(|i| bought("erin", i, Some(i % 2 == 0))));
    for chunk in events.chunks(200) {
        srv.send_processed(chunk.to_vec()).await;
    }
    let (s, _) = call(
        &srv,
        "PUT",
        "/v1/profiles/email:erin@example.com/consent",
        Some(json!({"purposes": {"email": "granted"}})),
    )
    .await;
    assert_eq!(s, 200);

    let resp = srv
        .http
        .get(format!(
            "{}/v1/profiles/email:erin@example.com/privacy-export",
            srv.url
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    assert_eq!(doc["format"], "spoor-privacy-export/1");
    let pid = doc["profile_id"].as_str().unwrap().to_owned();
    assert_eq!(doc["profile"]["traits"]["email"], "Erin@Example.com");
    let ids = doc["identity"]["identifiers"].to_string();
    for v in ["erin@example.com", "anon-7", "\"erin\""] {
        assert!(ids.contains(v), "{v} missing from {ids}");
    }
    assert!(!doc["identity"]["decisions"].as_array().unwrap().is_empty());
    // 602 ingested + the Consent API's event, all of them, each once.
    let evs = doc["events"].as_array().unwrap();
    assert_eq!(evs.len(), 603);
    let mut ids: Vec<&str> = evs
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 603);
    assert_eq!(doc["consent"]["current"]["email"]["value"], "granted");
    assert_eq!(doc["consent"]["current"]["advertising"]["value"], "denied");
    assert!(doc["consent"]["history"].as_array().unwrap().len() >= 2);
    assert_eq!(doc["audiences"]["current"][0]["name"], "buyers");
    assert_eq!(doc["audiences"]["history"][0]["change"], "entered");
    assert!(doc["deliveries"].is_array());

    // The audit log: the consent change and the export, by this token, pseudonymised.
    let (s, v) = call(&srv, "GET", "/v1/admin/audit?limit=1000", None).await;
    assert_eq!(s, 200, "{v}");
    let recs = v["records"].as_array().unwrap();
    let find = |method: &str, route: &str| {
        recs.iter()
            .find(|r| r["method"] == method && r["route"] == route)
            .unwrap_or_else(|| panic!("no {method} {route} in {recs:?}"))
            .clone()
    };
    let put = find("PUT", "/v1/profiles/{pref}/consent");
    assert_eq!(put["action"], "change");
    assert_eq!(put["status"], 200);
    assert!(put["who"].as_str().unwrap().starts_with("tok_"), "{put}");
    let exp = find("GET", "/v1/profiles/{pref}/privacy-export");
    assert_eq!(exp["action"], "export");
    assert!(
        exp["target"][0]
            .as_str()
            .unwrap()
            .starts_with("email:sha256:"),
        "{exp}"
    );
    // A profile read is audited too, and a refused call names no token.
    let _ = call(&srv, "GET", &format!("/v1/profiles/{pid}"), None).await;
    let bad = srv
        .http
        .put(format!("{}/v1/profiles/{pid}/consent", srv.url))
        .bearer_auth("not-a-token")
        .json(&json!({"purposes": {"email": "denied"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let (_, v) = call(&srv, "GET", "/v1/admin/audit?limit=1000", None).await;
    let recs = v["records"].as_array().unwrap();
    assert!(recs
        .iter()
        .any(|r| r["route"] == "/v1/profiles/{pref}" && r["target"][0] == pid.as_str()));
    assert!(recs
        .iter()
        .any(|r| r["status"] == 401 && r["who"].is_null()));
    // Paging with the cursor gives the same records (reading the audit log is not audited).
    let (_, p1) = call(&srv, "GET", "/v1/admin/audit?limit=2", None).await;
    let next = p1["next_cursor"].as_u64().unwrap();
    let (_, p2) = call(
        &srv,
        "GET",
        &format!("/v1/admin/audit?limit=1000&cursor={next}"),
        None,
    )
    .await;
    assert_eq!(
        p1["records"].as_array().unwrap().len() + p2["records"].as_array().unwrap().len(),
        recs.len()
    );
    let audit = std::fs::read(srv.dir.path().join("audit/audit.ndjson")).unwrap();
    assert!(!contains(&audit, "erin@example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audience_files_for_a_purpose_leave_out_people_without_consent() {
    let srv = start().await;
    srv.define(|d| {
        d.audiences
            .insert("buyers".into(), audience("buyers", r#"performed "Bought""#));
    })
    .await;
    srv.send_processed(vec![
        json!({"type": "identify", "userId": "x1", "traits": {"email": "x1@example.com"}, "messageId": "x1-i"}),
        json!({"type": "identify", "userId": "x2", "traits": {"email": "x2@example.com"}, "messageId": "x2-i"}),
        bought("x1", 1, Some(true)),
        bought("x2", 1, Some(false)),
    ])
    .await;
    let get = |q: &'static str| {
        let srv = &srv;
        async move {
            let resp = srv
                .http
                .get(format!(
                    "{}/v1/audiences/buyers/export?format=ndjson&hashed=false{q}",
                    srv.url
                ))
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            let s = resp.status().as_u16();
            (s, resp.text().await.unwrap())
        }
    };
    let (s, all) = get("").await;
    assert_eq!(s, 200, "{all}");
    assert_eq!(all.lines().count(), 2, "{all}");
    let (s, ads) = get("&purpose=advertising").await;
    assert_eq!(s, 200, "{ads}");
    assert_eq!(ads.lines().count(), 1, "{ads}");
    assert!(
        ads.contains("x1@example.com") && !ads.contains("x2@"),
        "{ads}"
    );
    let (s, bad) = get("&purpose=ads").await;
    assert_eq!(s, 400, "{bad}");
    assert!(bad.contains("ads"), "{bad}");
}
