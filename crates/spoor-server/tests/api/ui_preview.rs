//! The audience preview: a uniform random sample with an honest margin, and the exact
//! count in the background, both agreeing with the audience engine.

use crate::common::{TestServer, ADMIN_PASSWORD, ADMIN_TOKEN};
use crate::ui::{create_user, Browser};
use serde_json::json;

async fn preview(s: &TestServer, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = s
        .http
        .post(format!("{}/v1/audiences/preview", s.url))
        .bearer_auth(ADMIN_TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// 300 people; the newest 100 (by id, i.e. age) are VIPs.
async fn three_hundred_people(s: &TestServer) {
    let events: Vec<serde_json::Value> = (0..300)
        .map(|i| {
            json!({"type": "identify", "userId": format!("p{i}"),
                   "traits": {"plan": if i >= 200 { "vip" } else { "member" }}})
        })
        .collect();
    s.send_processed(events).await;
}

#[tokio::test]
async fn the_preview_samples_uniformly_not_the_oldest_profiles() {
    let s = TestServer::start().await;
    three_hundred_people(&s).await;
    let rule = r#"trait plan = "vip""#;
    // Everyone is evaluated when the scan allows: exact.
    let (st, v) = preview(&s, &json!({"rule": rule, "scan": 1000})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["matched"].as_u64(), v["exact"].as_bool()),
        (Some(100), Some(true)),
        "{v}"
    );
    assert_eq!(v["margin_95"], 0, "{v}");
    // 30 of 300: the oldest 30 hold no VIP, a uniform sample holds ~10. Over 20 seeds
    // (the same seed draws the same people, so this is deterministic) ~200 in all.
    let mut hits = 0;
    let mut covered = 0;
    for seed in 1..=20u64 {
        let body = json!({"rule": rule, "scan": 30, "sample": 100, "seed": seed});
        let (_, v) = preview(&s, &body).await;
        assert_eq!(
            (v["scanned"].as_u64(), v["exact"].as_bool()),
            (Some(30), Some(false)),
            "{v}"
        );
        assert_eq!(v["sampling"], "uniform_random");
        let (est, lo, hi) = (
            v["estimated_size"].as_u64().unwrap(),
            v["interval_95"][0].as_u64().unwrap(),
            v["interval_95"][1].as_u64().unwrap(),
        );
        assert!(lo <= est && est <= hi && hi <= 300, "{v}");
        assert_eq!(
            est,
            v["matched"].as_u64().unwrap() * 10,
            "scaled by 300/30: {v}"
        );
        if (lo..=hi).contains(&100) {
            covered += 1;
        }
        hits += v["matched"].as_u64().unwrap();
        let (_, again) = preview(&s, &body).await;
        assert_eq!(again["sample"], v["sample"], "same seed, same people");
    }
    assert!((140..=260).contains(&hits), "≈ 200 VIPs drawn, got {hits}");
    assert!(
        covered >= 16,
        "the 95 % interval holds the truth for most seeds: {covered}/20"
    );
}

#[tokio::test]
async fn the_editor_shows_a_margin_and_counts_exactly_in_the_background() {
    // A zero budget: the live preview stops after its first few draws and estimates.
    let s = TestServer::start_with(|c| c.ui.preview_budget_ms = 0).await;
    three_hundred_people(&s).await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    let (_, editor) = b.get("/ui/audiences/new").await;
    assert!(
        editor.contains(r#"name="seed""#),
        "the editor keeps a sample seed"
    );
    let rule = r#"trait plan = "vip""#;
    let r = b
        .post(
            "/ui/audiences/preview",
            &[("_csrf", &csrf), ("rule", rule), ("seed", "7")],
        )
        .await;
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"<b id="preview-size">≈ "#), "{html}");
    assert!(
        html.contains("(95%)") && html.contains("random sample"),
        "{html}"
    );
    assert!(html.contains("Count exactly"), "{html}");

    // The exact count runs as a job; its page is polled until it shows the size.
    let r = b
        .post("/ui/audiences/count", &[("_csrf", &csrf), ("rule", rule)])
        .await;
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    let at = html.find("/ui/audiences/count/").expect("a job to poll");
    let job: String = html[at..].split('"').next().unwrap().to_owned();
    let mut done = String::new();
    for _ in 0..100 {
        let (st, frag) = b.get(&job).await;
        assert_eq!(st, 200, "{frag}");
        if frag.contains("count-size") {
            done = frag;
            break;
        }
        assert!(frag.contains("<progress"), "{frag}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        done.contains(r#"<b id="count-size">100</b> of 300 profiles"#),
        "{done}"
    );
    // Only its owner sees a job.
    create_user(&s, "mark", "marketer").await;
    let mut m = Browser::new(&s);
    m.logged_in("mark", "password-of-mark").await;
    assert_eq!(m.get(&job).await.0, 404);
    // A broken rule is refused in place.
    let r = b
        .post(
            "/ui/audiences/count",
            &[("_csrf", &csrf), ("rule", "trait =")],
        )
        .await;
    assert!(r.text().await.unwrap().contains("count error"));
}

#[tokio::test]
async fn the_preview_and_the_exact_count_agree_with_the_engine() {
    // People whose events interleave (seqs far apart and close together), some merged
    // across two anonymous ids, with events the rules select and events they do not.
    let s = TestServer::start().await;
    let mut events = Vec::new();
    for round in 0..3 {
        for i in 0..80 {
            let anon = format!("a{i}-{}", round % 2);
            let cat = ["shoes", "bags"][(i * 7 + round) % 2];
            events.push(
                json!({"type": "track", "event": "Product Viewed", "anonymousId": anon,
                               "properties": {"category": cat}}),
            );
            if i % 3 == 0 {
                events.push(json!({"type": "page", "name": "Home", "anonymousId": anon}));
            }
            if round == 2 && i % 4 == 0 {
                events.push(json!({"type": "identify", "anonymousId": format!("a{i}-0"),
                                   "userId": format!("u{i}"), "traits": {"plan": "vip"}}));
                events.push(json!({"type": "identify", "anonymousId": format!("a{i}-1"),
                                   "userId": format!("u{i}")}));
            }
        }
    }
    s.send_processed(events).await;
    let rules = [
        r#"performed "Product Viewed" where category = "shoes" at least 2 times"#,
        r#"performed "Product Viewed" and not performed page "Home""#,
        r#"trait plan = "vip" or performed page "Home" at least 3 times"#,
    ];
    s.define(|d| {
        for (i, r) in rules.iter().enumerate() {
            let name = format!("r{i}");
            d.audiences.insert(
                name.clone(),
                spoor_core::audience::AudienceDefinition {
                    name,
                    description: String::new(),
                    rule: spoor_core::audience::parse(r).unwrap(),
                    created_ms: 0,
                    updated_ms: 0,
                    revision: 1,
                },
            );
        }
    })
    .await;
    let mut b = Browser::new(&s);
    let csrf = b.logged_in("admin", ADMIN_PASSWORD).await;
    for (i, rule) in rules.iter().enumerate() {
        let (_, size) = s.admin_get(&format!("/v1/audiences/r{i}/size")).await;
        let engine = size["size"].as_u64().unwrap_or_else(|| panic!("{size}"));
        assert!(engine > 0, "{rule}: a rule that matches someone");
        let (_, v) = preview(&s, &json!({"rule": rule, "scan": 100_000, "seed": i})).await;
        assert_eq!(v["exact"], true, "{v}");
        assert_eq!(v["matched"].as_u64(), Some(engine), "{rule}: {v}");
        let r = b
            .post("/ui/audiences/count", &[("_csrf", &csrf), ("rule", rule)])
            .await;
        let html = r.text().await.unwrap();
        let at = html.find("/ui/audiences/count/").expect("a job");
        let job = html[at..].split('"').next().unwrap().to_owned();
        let mut counted = None;
        for _ in 0..200 {
            let (_, frag) = b.get(&job).await;
            if let Some(i) = frag.find(r#"id="count-size">"#) {
                counted = frag[i + 16..]
                    .split('<')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .ok();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(counted, Some(engine), "{rule}");
    }
}
