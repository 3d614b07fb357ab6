//! Identity resolution and profiles through the API: the scenarios of the issue, and the
//! differential test (state built incrementally == state rebuilt from the log).

use crate::common::{TestServer, ADMIN_TOKEN};
use serde_json::{json, Value};

/// Posts a batch and waits until the processor has applied it.
async fn send(srv: &TestServer, events: Vec<Value>) {
    let (s, v) = srv.post("/v1/batch", &json!({"batch": events})).await;
    assert_eq!(s, 200, "{v}");
    assert!(v.get("rejected").is_none(), "{v}");
    settle(srv).await;
}

async fn settle(srv: &TestServer) {
    let last = srv.app.reader.last_seq();
    let (s, v) = srv
        .admin_get(&format!(
            "/v1/admin/processor?wait_for={last}&timeout_ms=20000"
        ))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["processed_seq"], last, "processor did not catch up: {v}");
}

async fn profile(srv: &TestServer, r: &str) -> (u16, Value) {
    srv.admin_get(&format!("/v1/profiles/{r}")).await
}

fn at(s: &str) -> Value {
    json!(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_browsing_then_login_on_another_device_then_email_click_is_one_person() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        // Phone, anonymous, arriving from a newsletter.
        json!({"type": "page", "anonymousId": "phone-1", "name": "Shoes", "messageId": "e1", "timestamp": at("2026-01-01T10:00:00Z"),
               "context": {"campaign": {"source": "newsletter", "medium": "email", "name": "spring"},
                           "userAgent": "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"}}),
        json!({"type": "track", "anonymousId": "phone-1", "event": "Product Viewed", "properties": {"sku": "s1"}, "messageId": "e2", "timestamp": at("2026-01-01T10:01:00Z")}),
        // Laptop: logs in.
        json!({"type": "identify", "anonymousId": "laptop-1", "userId": "u-42", "traits": {"email": "Ann@Example.com", "name": "Ann"}, "messageId": "e3", "timestamp": at("2026-01-02T09:00:00Z"),
               "context": {"userAgent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"}}),
        json!({"type": "track", "userId": "u-42", "event": "Order Completed", "properties": {"revenue": 80}, "messageId": "e4", "timestamp": at("2026-01-02T09:05:00Z")}),
        // Back on the phone: clicks a link in an e-mail, which carries the address.
        json!({"type": "track", "anonymousId": "phone-1", "event": "Email Link Clicked", "properties": {"email": "ann@example.com"}, "messageId": "e5", "timestamp": at("2026-01-03T08:00:00Z")}),
    ]).await;

    let (s, by_email) = profile(&srv, "email:ANN@example.com").await;
    assert_eq!(s, 200, "{by_email}");
    let (_, by_anon) = profile(&srv, "anonymous_id:phone-1").await;
    let (_, by_user) = profile(&srv, "user_id:u-42").await;
    assert_eq!(by_email["id"], by_anon["id"]);
    assert_eq!(by_email["id"], by_user["id"]);
    let p = by_email;
    assert_eq!(p["event_count"], 5);
    assert_eq!(p["traits"]["name"], "Ann");
    assert_eq!(p["first_seen"], "2026-01-01T10:00:00.000Z");
    assert_eq!(p["last_seen"], "2026-01-03T08:00:00.000Z");
    let ids: Vec<String> = p["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["type"].as_str().unwrap(),
                i["value"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "anonymous_id:phone-1",
        "anonymous_id:laptop-1",
        "user_id:u-42",
        "email:ann@example.com",
    ] {
        assert!(
            ids.contains(&want.to_string()),
            "{want} missing from {ids:?}"
        );
    }
    assert_eq!(p["merged_ids"].as_array().unwrap().len(), 1);
    assert!(p["channels"].to_string().contains("newsletter"));
    assert!(
        p["devices"].to_string().contains("mobile") && p["devices"].to_string().contains("desktop"),
        "{}",
        p["devices"]
    );

    // The whole history follows the merge, newest first, paged.
    let id = p["id"].as_str().unwrap();
    let (_, page1) = srv
        .admin_get(&format!("/v1/profiles/{id}/events?limit=3"))
        .await;
    let ids1: Vec<&str> = page1["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids1, vec!["e5", "e4", "e3"]);
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = srv
        .admin_get(&format!("/v1/profiles/{id}/events?limit=3&cursor={cursor}"))
        .await;
    let ids2: Vec<&str> = page2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids2, vec!["e2", "e1"]);
    assert!(page2["next_cursor"].is_null());

    // The merged-away id still answers, with the survivor.
    let gone = p["merged_ids"][0].as_str().unwrap();
    let (s, survivor) = profile(&srv, gone).await;
    assert_eq!(s, 200);
    assert_eq!(survivor["id"], p["id"]);

    // Why are these one person: the merge names the event and the identifier.
    let (_, ident) = srv.admin_get(&format!("/v1/profiles/{id}/identity")).await;
    let merges: Vec<&Value> = ident["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"] == "merged")
        .collect();
    assert_eq!(merges.len(), 1, "{ident}");
    assert_eq!(merges[0]["message_id"], "e5");
    assert_eq!(merges[0]["via"]["type"], "email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_computer_two_users_stay_two_people_and_the_refusal_is_explained() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        json!({"type": "identify", "anonymousId": "family-pc", "userId": "dad", "traits": {"name": "Dad"}, "messageId": "s1"}),
        json!({"type": "identify", "anonymousId": "family-pc", "userId": "kid", "traits": {"name": "Kid"}, "messageId": "s2"}),
    ]).await;
    let (_, dad) = profile(&srv, "user_id:dad").await;
    let (_, kid) = profile(&srv, "user_id:kid").await;
    assert_ne!(dad["id"], kid["id"]);
    assert_eq!(dad["traits"]["name"], "Dad");
    assert_eq!(kid["traits"]["name"], "Kid");
    let kid_id = kid["id"].as_str().unwrap();
    let (_, ident) = srv
        .admin_get(&format!("/v1/profiles/{kid_id}/identity"))
        .await;
    let refused: Vec<&Value> = ident["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["decision"] == "refused")
        .collect();
    assert!(!refused.is_empty(), "{ident}");
    assert_eq!(refused[0]["message_id"], "s2");
    assert!(
        refused[0]["rule"].to_string().contains("limit"),
        "{}",
        refused[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_placeholder_values_never_merge_people() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        json!({"type": "identify", "userId": "a", "anonymousId": "undefined", "messageId": "b1"}),
        json!({"type": "identify", "userId": "b", "anonymousId": "undefined", "messageId": "b2"}),
        json!({"type": "identify", "userId": "c", "anonymousId": "00000000-0000-0000-0000-000000000000", "messageId": "b3"}),
        json!({"type": "identify", "userId": "d", "anonymousId": "00000000-0000-0000-0000-000000000000", "traits": {"email": "null"}, "messageId": "b4"}),
    ]).await;
    let mut seen = std::collections::HashSet::new();
    for u in ["a", "b", "c", "d"] {
        let (s, p) = profile(&srv, &format!("user_id:{u}")).await;
        assert_eq!(s, 200);
        assert!(
            seen.insert(p["id"].as_str().unwrap().to_string()),
            "{u} merged with another"
        );
    }
    // A placeholder is not an identifier at all: the lookup says so.
    let (s, v) = profile(&srv, "anonymous_id:undefined").await;
    assert_eq!(s, 400);
    assert!(v["message"].as_str().unwrap().contains("Blocked"), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_old_events_do_not_overwrite_newer_traits_and_unset_removes() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        json!({"type": "identify", "userId": "u", "traits": {"plan": "pro", "city": "Utrecht", "prefs": {"news": true}}, "timestamp": at("2026-02-01T00:00:00Z"), "messageId": "t1"}),
        // An event from January arrives late (offline app, replayed import).
        json!({"type": "identify", "userId": "u", "traits": {"plan": "free", "age": 40}, "timestamp": at("2026-01-01T00:00:00Z"), "messageId": "t2"}),
        json!({"type": "identify", "userId": "u", "traits": {"city": null}, "timestamp": at("2026-03-01T00:00:00Z"), "messageId": "t3"}),
    ]).await;
    let (_, p) = profile(&srv, "user_id:u").await;
    assert_eq!(p["traits"]["plan"], "pro", "{p}");
    assert_eq!(p["traits"]["age"], 40);
    assert_eq!(p["traits"]["prefs"], json!({"news": true}));
    assert!(p["traits"].get("city").is_none(), "{p}");
    assert_eq!(p["trait_provenance"]["plan"]["message_id"], "t1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refs_search_groups_and_errors() {
    let srv = TestServer::start().await;
    let mut batch = Vec::new();
    for i in 0..30 {
        batch.push(json!({"type": "identify", "userId": format!("user-{i:02}"), "traits": {"email": format!("person{i:02}@example.com"), "plan": if i % 3 == 0 { "pro" } else { "free" }}}));
    }
    batch.push(json!({"type": "group", "userId": "user-01", "groupId": "acme", "traits": {"name": "Acme", "industry": "automotive"}}));
    send(&srv, batch).await;

    let (_, hits) = srv
        .admin_get("/v1/profiles?type=email&prefix=PERSON1&limit=5")
        .await;
    let m = hits["matches"].as_array().unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m[0]["value"], "person10@example.com");
    let c = hits["next_cursor"].as_str().unwrap();
    let (_, more) = srv
        .admin_get(&format!(
            "/v1/profiles?type=email&prefix=person1&limit=5&cursor={c}"
        ))
        .await;
    assert_eq!(more["matches"].as_array().unwrap().len(), 5);
    assert_eq!(more["matches"][0]["value"], "person15@example.com");
    assert!(more["next_cursor"].is_null());

    let (_, pros) = srv
        .admin_get("/v1/profiles?trait=plan&value=pro&limit=100")
        .await;
    assert_eq!(pros["profiles"].as_array().unwrap().len(), 10);

    let (_, p) = profile(&srv, "user_id:user-01").await;
    assert_eq!(p["groups"][0]["id"], "acme");
    assert_eq!(p["groups"][0]["traits"]["industry"], "automotive");

    assert_eq!(profile(&srv, "user_id:nobody").await.0, 404);
    assert_eq!(profile(&srv, "prof_0000000000000").await.0, 404);
    assert_eq!(profile(&srv, "garbage").await.0, 400);
    let resp = srv
        .http
        .get(format!("{}/v1/profiles/user_id:user-01", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let _ = ADMIN_TOKEN;
}

/// A pseudo-random event stream with small id pools, so merges, refusals and late events happen.
fn random_events(seed: u64, n: usize) -> Vec<Value> {
    let mut x = seed.max(1);
    let mut next = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    (0..n)
        .map(|i| {
            let ts = format!("2026-01-{:02}T{:02}:00:00Z", 1 + next(28), next(24));
            let anon = format!("a{}", next(40));
            let user = format!("u{}", next(15));
            match next(6) {
                0 => json!({"type": "identify", "userId": user, "anonymousId": anon, "traits": {"email": format!("{user}@x.com"), "n": next(5)}, "timestamp": ts, "messageId": format!("r{i}")}),
                1 => json!({"type": "track", "anonymousId": anon, "event": "Viewed", "properties": {"email": format!("u{}@x.com", next(15))}, "timestamp": ts, "messageId": format!("r{i}")}),
                2 => json!({"type": "alias", "userId": user, "previousId": anon, "timestamp": ts, "messageId": format!("r{i}")}),
                3 => json!({"type": "group", "userId": user, "groupId": format!("g{}", next(3)), "traits": {"size": next(100)}, "timestamp": ts, "messageId": format!("r{i}")}),
                // Consent statements (Segment's consent object), which merges must join.
                5 => json!({"type": "track", "anonymousId": anon, "event": "Consent", "context": {"consent": {"categoryPreferences": {"Advertising": next(2) == 0, "analytics": next(2) == 0}}}, "timestamp": ts, "messageId": format!("r{i}")}),
                _ => json!({"type": "page", "anonymousId": anon, "name": "P", "context": {"campaign": {"source": format!("s{}", next(3))}}, "timestamp": ts, "messageId": format!("r{i}")}),
            }
        })
        .collect()
}

/// Every fact in the state store of a stopped server's data directory.
fn durable_dump(dir: &tempfile::TempDir) -> Vec<String> {
    spoor_store::state::StateStore::open(&dir.path().join("state"))
        .unwrap()
        .durable_reader()
        .unwrap()
        .dump()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_state_equals_a_rebuild_from_the_log_across_restarts() {
    for seed in [1u64, 7, 42] {
        let events = random_events(seed, 600);
        // Tiny checkpoints, and two restarts in the middle, to exercise the cache and commits.
        let tweak = |c: &mut spoor_server::config::Config| {
            c.processor.checkpoint_events = 37;
            c.processor.cache_entries = 1024;
        };
        let srv = TestServer::start_with(tweak).await;
        for chunk in events[..200].chunks(50) {
            send(&srv, chunk.to_vec()).await;
        }
        let dir = srv.stop().await;
        let srv = TestServer::start_in(dir, tweak).await;
        for chunk in events[200..450].chunks(25) {
            send(&srv, chunk.to_vec()).await;
        }
        let dir = srv.stop().await;
        let srv = TestServer::start_in(dir, tweak).await;
        send(&srv, events[450..].to_vec()).await;
        let cfg = srv.app.cfg.clone();
        // Stopping makes every applied change durable; compare what is on disk.
        let dir = srv.stop().await;
        let incremental = durable_dump(&dir);

        spoor_server::processor::rebuild(&cfg, |_, _| {}).unwrap();
        let rebuilt = durable_dump(&dir);
        assert_eq!(incremental.len(), rebuilt.len(), "seed {seed}");
        for (a, b) in incremental.iter().zip(&rebuilt) {
            assert_eq!(a, b, "seed {seed}: incremental vs rebuilt state differ");
        }
        assert!(
            incremental.iter().any(|l| l.contains("\"merged\"")),
            "seed {seed}: the stream should contain merges"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undoing_a_merge_restores_two_people_with_their_own_events_and_traits() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        json!({"type": "identify", "anonymousId": "kiosk", "traits": {"fav": "red"}, "messageId": "k1", "timestamp": at("2026-01-01T00:00:00Z")}),
        json!({"type": "track", "anonymousId": "kiosk", "event": "Viewed", "messageId": "k2", "timestamp": at("2026-01-01T00:01:00Z")}),
        json!({"type": "identify", "userId": "bob", "traits": {"name": "Bob"}, "messageId": "b1", "timestamp": at("2026-01-02T00:00:00Z")}),
        // A wrong alias: the kiosk's anonymous id is linked to Bob.
        json!({"type": "alias", "previousId": "kiosk", "userId": "bob", "messageId": "x1", "timestamp": at("2026-01-03T00:00:00Z")}),
    ]).await;
    let (_, merged) = profile(&srv, "user_id:bob").await;
    assert_eq!(merged["traits"]["fav"], "red");
    assert_eq!(merged["event_count"], 4);
    let gone = merged["merged_ids"][0].as_str().unwrap().to_string();
    let id = merged["id"].as_str().unwrap().to_string();

    // Viewers cannot split; an unrelated id is refused with a reason.
    let (s, v) = srv.admin_get("/v1/admin/status").await;
    assert_eq!(s, 200, "{v}");
    let resp = srv
        .http
        .post(format!("{}/v1/profiles/{id}/split", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"undo_merge": "prof_0000000000000"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    let resp = srv
        .http
        .post(format!("{}/v1/profiles/{id}/split", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"undo_merge": gone}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let out: Value = resp.json().await.unwrap();
    assert_eq!(out["profiles"].as_array().unwrap().len(), 2, "{out}");

    let (_, bob) = profile(&srv, "user_id:bob").await;
    let (_, kiosk) = profile(&srv, "anonymous_id:kiosk").await;
    assert_ne!(bob["id"], kiosk["id"]);
    assert_eq!(bob["traits"]["name"], "Bob");
    assert!(bob["traits"].get("fav").is_none(), "{bob}");
    assert_eq!(kiosk["traits"]["fav"], "red");
    assert!(kiosk["traits"].get("name").is_none());
    let events_of = |p: &Value| {
        let id = p["id"].as_str().unwrap().to_string();
        let srv = &srv;
        async move {
            let (_, e) = srv.admin_get(&format!("/v1/profiles/{id}/events")).await;
            e["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["message_id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(events_of(&kiosk).await, vec!["k2", "k1"]);
    assert_eq!(events_of(&bob).await, vec!["x1", "b1"]);

    // The rule holds for new events: the same link is refused, and explained.
    send(&srv, vec![json!({"type": "identify", "userId": "bob", "anonymousId": "kiosk", "messageId": "x2", "timestamp": at("2026-01-04T00:00:00Z")})]).await;
    let (_, bob2) = profile(&srv, "user_id:bob").await;
    let (_, kiosk2) = profile(&srv, "anonymous_id:kiosk").await;
    assert_ne!(bob2["id"], kiosk2["id"]);
    let bob_id = bob2["id"].as_str().unwrap();
    let (_, ident) = srv
        .admin_get(&format!("/v1/profiles/{bob_id}/identity"))
        .await;
    assert!(
        ident["decisions"].to_string().contains("split_rule"),
        "{ident}"
    );

    // And a rebuild from the log (carrying the rule) yields exactly this state.
    let cfg = srv.app.cfg.clone();
    let dir = srv.stop().await;
    let incremental = durable_dump(&dir);
    spoor_server::processor::rebuild(&cfg, |_, _| {}).unwrap();
    let rebuilt = durable_dump(&dir);
    let diff: Vec<(&String, &String)> = incremental
        .iter()
        .zip(&rebuilt)
        .filter(|(a, b)| a != b)
        .take(5)
        .collect();
    assert!(
        diff.is_empty() && incremental.len() == rebuilt.len(),
        "{diff:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_from_two_sources_about_one_person_make_one_profile() {
    let srv = TestServer::start().await;
    let resp = srv
        .http
        .post(format!("{}/v1/admin/sources", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "app", "write_key": "app-key"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let web = TestServer::basic(crate::common::WRITE_KEY);
    let app = TestServer::basic("app-key");
    let mut tasks = Vec::new();
    for t in 0..8 {
        let (http, url) = (srv.http.clone(), srv.url.clone());
        let auth = if t % 2 == 0 { web.clone() } else { app.clone() };
        tasks.push(tokio::spawn(async move {
            for b in 0..10 {
                let batch: Vec<Value> = (0..20)
                    .map(|i| json!({"type": "identify", "userId": "same-person", "anonymousId": format!("dev-{t}"),
                                    "traits": {"last_batch": format!("{t}-{b}-{i}")}, "messageId": format!("c{t}-{b}-{i}")}))
                    .collect();
                let r = http.post(format!("{url}/v1/batch")).header("authorization", &auth)
                    .body(json!({"batch": batch}).to_string()).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    settle(&srv).await;
    let (_, p) = profile(&srv, "user_id:same-person").await;
    assert_eq!(p["event_count"], 1600);
    assert_eq!(p["identities"].as_array().unwrap().len(), 9, "{p}");
    assert_eq!(p["sources"].as_object().unwrap().len(), 2);
    let (_, st) = srv.admin_get("/v1/admin/processor").await;
    assert_eq!(st["live_profiles"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detaching_an_identifier_moves_its_events_to_a_profile_of_its_own() {
    let srv = TestServer::start().await;
    send(&srv, vec![
        json!({"type": "identify", "userId": "carol", "anonymousId": "tablet", "traits": {"name": "Carol"}, "messageId": "d1"}),
        json!({"type": "page", "anonymousId": "tablet", "name": "Toys", "messageId": "d2"}),
        json!({"type": "page", "userId": "carol", "name": "Home", "messageId": "d3"}),
    ]).await;
    let (_, carol) = profile(&srv, "user_id:carol").await;
    let id = carol["id"].as_str().unwrap().to_string();
    let resp = srv
        .http
        .post(format!("{}/v1/profiles/{id}/split", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"detach": "anonymous_id:tablet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let (_, carol) = profile(&srv, "user_id:carol").await;
    let (_, tablet) = profile(&srv, "anonymous_id:tablet").await;
    assert_ne!(carol["id"], tablet["id"]);
    assert_eq!(carol["identities"].as_array().unwrap().len(), 1, "{carol}");
    assert_eq!(carol["traits"]["name"], "Carol");
    assert_eq!(tablet["event_count"], 1, "{tablet}");
    // Both must be given; an identifier of someone else is refused.
    let resp = srv
        .http
        .post(format!("{}/v1/profiles/user_id:carol/split", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"detach": "anonymous_id:tablet"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = srv
        .http
        .post(format!("{}/v1/profiles/user_id:carol/split", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
}
