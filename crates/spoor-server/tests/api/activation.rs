//! The audience engine inside a running server: computed traits and memberships follow
//! events in real time, time alone makes people leave windowed audiences, merges combine
//! states, and a definition added later is backfilled over history.

use crate::common::TestServer;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition, ComputedDefinition};
use spoor_core::computed::ComputedDef;
use spoor_core::{Clock, FixedClock};
use std::sync::Arc;
use std::time::Duration;

const T0: &str = "2026-03-01T12:00:00Z";

fn t0() -> DateTime<Utc> {
    T0.parse().unwrap()
}

fn audience(name: &str, rule: &str) -> (String, AudienceDefinition) {
    let def = AudienceDefinition {
        name: name.into(),
        description: String::new(),
        rule: parse(rule).unwrap_or_else(|e| panic!("{rule}: {e}")),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    (name.into(), def)
}

fn computed(json: Value) -> (String, ComputedDefinition) {
    let def = ComputedDef::from_json(&json.to_string()).unwrap();
    let c = ComputedDefinition {
        def,
        description: String::new(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    (c.def.name.clone(), c)
}

async fn wait_until(mut ok: impl FnMut() -> bool) {
    for _ in 0..400 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("condition not reached in 10 s");
}

/// Waits until the processor has fired every timer due by `target` (ms).
async fn timers_reach(srv: &TestServer, target: i64) {
    wait_until(|| {
        srv.app
            .processor
            .status
            .timers_at_ms
            .load(std::sync::atomic::Ordering::Acquire)
            >= target
    })
    .await;
}

/// (audiences the person is in, computed trait values), read from the state.
fn activation(srv: &TestServer, kind: &str, value: &str) -> (Vec<String>, Value) {
    let r = srv.app.state.reader().unwrap();
    let pid = r.owner(kind, value).unwrap().expect("known identifier");
    let p = r.profile(pid).unwrap().expect("live profile");
    let members = p.activation.members.keys().map(|a| a.to_string()).collect();
    (members, Value::Object((*p.activation.values).clone()))
}

fn ev(kind: &str, user: &str, event: &str, props: Value, ts: &str) -> Value {
    json!({"type": kind, "userId": user, "event": event, "properties": props, "timestamp": ts})
}

async fn clocked() -> (TestServer, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::new(t0()));
    let srv = TestServer::start_clocked(tempfile::tempdir().unwrap(), |_| {}, clock.clone()).await;
    (srv, clock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memberships_and_computed_traits_follow_events_and_time() {
    let (srv, clock) = clocked().await;
    srv.define(|d| {
        d.computed.extend([
            computed(json!({"name": "orders", "aggregation": "count", "event": {"name": "Order Completed"}})),
            computed(json!({"name": "revenue_30d", "aggregation": "sum", "property": "revenue",
                            "event": {"name": "Order Completed"}, "window": "30d"})),
        ]);
        d.audiences.extend([
            audience("recent_buyers", r#"performed "Order Completed" within 7d"#),
            audience("big_spenders", "computed revenue_30d >= 100"),
            audience("not_recent", r#"trait plan = "pro" and not in audience recent_buyers"#),
        ]);
    })
    .await;

    srv.send_processed(vec![
        json!({"type": "identify", "userId": "ann", "traits": {"plan": "pro"}, "timestamp": "2026-03-01T11:00:00Z"}),
        ev("track", "ann", "Order Completed", json!({"revenue": 60}), "2026-03-01T11:30:00Z"),
    ])
    .await;
    let (m, v) = activation(&srv, "user_id", "ann");
    assert_eq!(m, vec!["recent_buyers"]);
    assert_eq!(v["orders"], 1);
    assert_eq!(v["revenue_30d"], 60);

    srv.send_processed(vec![ev(
        "track",
        "ann",
        "Order Completed",
        json!({"revenue": 50}),
        "2026-03-01T11:45:00Z",
    )])
    .await;
    let (m, v) = activation(&srv, "user_id", "ann");
    assert_eq!(m, vec!["big_spenders", "recent_buyers"]);
    assert_eq!(v["revenue_30d"], 110);

    // Eight days later, with no event: out of the 7-day audience, into its exclusion.
    clock.advance(chrono::Duration::days(8));
    wait_until(|| activation(&srv, "user_id", "ann").0 == vec!["big_spenders", "not_recent"]).await;
    // Thirty-one days: the 30-day sum drops to 0, and with it big_spenders.
    clock.advance(chrono::Duration::days(23));
    wait_until(|| activation(&srv, "user_id", "ann").0 == vec!["not_recent"]).await;
    assert_eq!(activation(&srv, "user_id", "ann").1["revenue_30d"], 0);
    assert_eq!(activation(&srv, "user_id", "ann").1["orders"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_combines_the_states_of_both_profiles() {
    let (srv, _clock) = clocked().await;
    srv.define(|d| {
        d.audiences.extend([audience(
            "browsers",
            r#"performed "Product Viewed" at least 2 times within 30d"#,
        )]);
    })
    .await;
    srv.send_processed(vec![
        json!({"type": "track", "anonymousId": "a-1", "event": "Product Viewed", "timestamp": "2026-03-01T10:00:00Z"}),
        ev("track", "bob", "Product Viewed", json!({}), "2026-03-01T10:05:00Z"),
    ])
    .await;
    assert!(activation(&srv, "anonymous_id", "a-1").0.is_empty());
    assert!(activation(&srv, "user_id", "bob").0.is_empty());
    // Bob logs in on the anonymous device: one person with two views.
    srv.send_processed(vec![json!({"type": "identify", "userId": "bob", "anonymousId": "a-1", "timestamp": "2026-03-01T10:10:00Z"})]).await;
    assert_eq!(activation(&srv, "user_id", "bob").0, vec!["browsers"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_trait_change_reevaluates_every_member_of_the_group() {
    let (srv, _clock) = clocked().await;
    srv.define(|d| {
        d.audiences.extend([
            audience("enterprise", r#"group trait plan = "enterprise""#),
            audience(
                "enterprise_buyers",
                r#"in audience enterprise and performed "Bought""#,
            ),
        ]);
    })
    .await;
    let group = |user: &str, plan: &str, ts: &str| json!({"type": "group", "userId": user, "groupId": "acme", "traits": {"plan": plan}, "timestamp": ts});
    srv.send_processed(vec![
        group("ann", "free", "2026-03-01T10:00:00Z"),
        group("bo", "free", "2026-03-01T10:01:00Z"),
        ev("track", "bo", "Bought", json!({}), "2026-03-01T10:02:00Z"),
        json!({"type": "group", "userId": "cy", "groupId": "other", "traits": {"plan": "enterprise"}, "timestamp": "2026-03-01T10:03:00Z"}),
    ])
    .await;
    assert!(activation(&srv, "user_id", "ann").0.is_empty());
    assert!(activation(&srv, "user_id", "bo").0.is_empty());
    assert_eq!(activation(&srv, "user_id", "cy").0, vec!["enterprise"]);
    // Ann upgrades the account: Bo, who sent nothing, is in both audiences at once.
    srv.send_processed(vec![group("ann", "enterprise", "2026-03-01T11:00:00Z")])
        .await;
    assert_eq!(activation(&srv, "user_id", "ann").0, vec!["enterprise"]);
    assert_eq!(
        activation(&srv, "user_id", "bo").0,
        vec!["enterprise", "enterprise_buyers"]
    );
    let (_, h) = srv.admin_get("/v1/profiles/user_id:bo/audiences").await;
    let causes: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cause"].as_str().unwrap())
        .collect();
    assert_eq!(causes, ["group", "group"], "{h}");
    // An older call that loses to the newer trait value changes nothing; a group call
    // without the trait audiences read does not re-evaluate anyone either.
    srv.send_processed(vec![
        group("bo", "free", "2026-03-01T09:00:00Z"),
        json!({"type": "group", "userId": "bo", "groupId": "acme", "traits": {"size": 3}, "timestamp": "2026-03-01T12:00:00Z"}),
    ])
    .await;
    assert_eq!(activation(&srv, "user_id", "ann").0, vec!["enterprise"]);
    // Downgraded: everyone leaves, and Cy's other group is not touched.
    srv.send_processed(vec![group("bo", "free", "2026-03-01T13:00:00Z")])
        .await;
    assert!(activation(&srv, "user_id", "ann").0.is_empty());
    assert!(activation(&srv, "user_id", "bo").0.is_empty());
    assert_eq!(activation(&srv, "user_id", "cy").0, vec!["enterprise"]);
    // A merge carries the membership of the group: Dee's anonymous visit joined acme, and
    // the index row of the merged-away profile leads to the survivor.
    srv.send_processed(vec![
        json!({"type": "identify", "userId": "dee", "timestamp": "2026-03-01T13:30:00Z"}),
        json!({"type": "group", "anonymousId": "anon-d", "groupId": "acme", "timestamp": "2026-03-01T14:00:00Z"}),
        json!({"type": "identify", "userId": "dee", "anonymousId": "anon-d", "timestamp": "2026-03-01T14:01:00Z"}),
        group("ann", "enterprise", "2026-03-01T15:00:00Z"),
    ])
    .await;
    assert_eq!(activation(&srv, "user_id", "dee").0, vec!["enterprise"]);
    assert_eq!(
        activation(&srv, "user_id", "bo").0,
        vec!["enterprise", "enterprise_buyers"]
    );
}

/// The group→members index after a split: its rows keep the profile a `group` call was
/// applied to, which after a merge is the survivor. When a split moves the call to the
/// other side, that side must be re-evaluated when another member changes the group's
/// traits, and the survivor (whose stale row stays) must not become a member (checked
/// against brute force after each step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_are_right_after_a_split_undoes_a_merge() {
    let (srv, clock) = clocked().await;
    srv.define(|d| {
        d.audiences
            .extend([audience("enterprise", r#"group trait plan = "enterprise""#)]);
    })
    .await;
    let now = || clock.now().timestamp_millis();
    let group = |user: &str, plan: &str, ts: &str| json!({"type": "group", "userId": user, "groupId": "acme", "traits": {"plan": plan}, "timestamp": ts});
    // A wrong alias merges the kiosk's anonymous id into Dee; then the kiosk joins acme,
    // so the index row names Dee's profile (the one the call was applied to).
    srv.send_processed(vec![
        group("ann", "enterprise", "2026-03-01T10:00:00Z"),
        json!({"type": "identify", "userId": "dee", "timestamp": "2026-03-01T10:01:00Z"}),
        json!({"type": "identify", "anonymousId": "kiosk", "timestamp": "2026-03-01T10:01:30Z"}),
        json!({"type": "alias", "previousId": "kiosk", "userId": "dee", "timestamp": "2026-03-01T10:02:00Z"}),
        json!({"type": "group", "anonymousId": "kiosk", "groupId": "acme", "timestamp": "2026-03-01T10:03:00Z"}),
    ])
    .await;
    assert_eq!(activation(&srv, "user_id", "dee").0, vec!["enterprise"]);
    assert_equals_brute_force(&srv, now());
    let (_, merged) = srv.admin_get("/v1/profiles/user_id:dee").await;
    let id = merged["id"].as_str().unwrap().to_string();
    let gone = merged["merged_ids"][0].as_str().unwrap().to_string();
    let resp = srv
        .http
        .post(format!("{}/v1/profiles/{id}/split", srv.url))
        .bearer_auth(crate::common::ADMIN_TOKEN)
        .json(&json!({"undo_merge": gone}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Re-derived from the log: the kiosk made the group call, Dee did not.
    assert_eq!(
        activation(&srv, "anonymous_id", "kiosk").0,
        vec!["enterprise"]
    );
    assert!(activation(&srv, "user_id", "dee").0.is_empty());
    assert_equals_brute_force(&srv, now());
    // Ann downgrades, then upgrades the account: the kiosk follows each time, Dee never.
    srv.send_processed(vec![group("ann", "free", "2026-03-01T11:00:00Z")])
        .await;
    assert!(activation(&srv, "anonymous_id", "kiosk").0.is_empty());
    assert!(activation(&srv, "user_id", "dee").0.is_empty());
    assert_equals_brute_force(&srv, now());
    srv.send_processed(vec![group("ann", "enterprise", "2026-03-01T12:00:00Z")])
        .await;
    assert_eq!(
        activation(&srv, "anonymous_id", "kiosk").0,
        vec!["enterprise"]
    );
    assert!(activation(&srv, "user_id", "dee").0.is_empty());
    assert_equals_brute_force(&srv, now());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_definition_added_later_is_backfilled_over_history() {
    let (srv, _clock) = clocked().await;
    srv.send_processed(vec![
        ev(
            "track",
            "cy",
            "Order Completed",
            json!({"revenue": 10}),
            "2026-02-27T10:00:00Z",
        ),
        ev(
            "track",
            "cy",
            "Order Completed",
            json!({"revenue": 15}),
            "2026-02-28T10:00:00Z",
        ),
        ev(
            "track",
            "di",
            "Order Completed",
            json!({"revenue": 99}),
            "2025-12-01T10:00:00Z",
        ),
    ])
    .await;
    srv.define(|d| {
        d.computed.extend([computed(
            json!({"name": "spent", "aggregation": "sum", "property": "revenue", "event": {"name": "Order Completed"}}),
        )]);
        d.audiences.extend([audience("repeat_buyers_7d", r#"performed "Order Completed" at least 2 times within 7d"#)]);
    })
    .await;
    let (m, v) = activation(&srv, "user_id", "cy");
    assert_eq!(m, vec!["repeat_buyers_7d"]);
    assert_eq!(v["spent"], 25);
    let (m, v) = activation(&srv, "user_id", "di");
    assert!(m.is_empty());
    assert_eq!(v["spent"], 99);

    // Removing the audience takes everyone out of it.
    srv.define(|d| {
        d.audiences.clear();
    })
    .await;
    assert!(activation(&srv, "user_id", "cy").0.is_empty());
}

/// Random traffic of a few people across devices (merges included), like the identity
/// differential test's.
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
            let ts = format!("2026-01-{:02}T{:02}:00:00Z", 10 + next(22), next(24));
            let anon = format!("a{}", next(30));
            let user = format!("u{}", next(12));
            let id = format!("r{seed}-{i}");
            match next(9) {
                0 => json!({"type": "identify", "userId": user, "anonymousId": anon, "traits": {"n": next(6)}, "timestamp": ts, "messageId": id}),
                // A known person's traits change, with nothing else: no merge, no event an
                // audience selects, no channel (only the trait change can re-evaluate).
                8 => json!({"type": "identify", "userId": user, "traits": {"n": next(6)}, "timestamp": ts, "messageId": id}),
                1 | 2 => json!({"type": "track", "anonymousId": anon, "event": "Viewed", "properties": {"price": next(100), "cat": format!("c{}", next(3))}, "timestamp": ts, "messageId": id}),
                3 => json!({"type": "track", "userId": user, "event": "Bought", "properties": {"price": next(100)}, "timestamp": ts, "messageId": id}),
                4 => json!({"type": "alias", "userId": user, "previousId": anon, "timestamp": ts, "messageId": id}),
                5 => {
                    let tier = ["gold", "silver", "free"][next(3) as usize];
                    json!({"type": "group", "userId": user, "groupId": format!("g{}", next(3)),
                           "traits": {"tier": tier, "seats": next(50)}, "timestamp": ts, "messageId": id})
                }
                // An event only a computed trait selects (no audience names it).
                7 => json!({"type": "track", "userId": user, "event": "Rated", "properties": {"stars": next(6)}, "timestamp": ts, "messageId": id}),
                // Channels and devices with more than one field each: the engine copies only
                // the fields its rules read into the facts.
                _ => {
                    let ua = [
                        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1",
                        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
                    ][next(2) as usize];
                    json!({"type": "page", "anonymousId": anon, "name": "P",
                           "context": {"campaign": {"source": format!("s{}", next(3)), "medium": format!("m{}", next(2))}, "userAgent": ua},
                           "timestamp": ts, "messageId": id})
                }
            }
        })
        .collect()
}

/// Every live profile: incremental memberships and values vs a brute-force evaluation over
/// all of the person's events in the log, at the server's current time.
fn assert_equals_brute_force(srv: &TestServer, now_ms: i64) -> usize {
    use spoor_core::audience::{EventFact, ProfileFacts};
    let defs = srv.app.defs.current();
    let (set, computed) = defs.compile().unwrap();
    let r = srv.app.state.reader().unwrap();
    let mut checked = 0;
    for p in r.list_profiles(None, 10_000).unwrap() {
        let cluster = r.cluster(p.id).unwrap();
        let mut events = Vec::new();
        for row in r.timeline(&cluster, None, usize::MAX).unwrap() {
            let e = srv.app.reader.read_from(row.seq, 1).unwrap().remove(0);
            let view = spoor_core::profile::parse_event(e.seq, e.timestamp_ms, &e.payload).unwrap();
            events.push(EventFact::from_view(&view));
        }
        let mut facts = ProfileFacts::from_profile(&p);
        facts.groups = p
            .groups
            .keys()
            .filter_map(|g| r.group(g).unwrap())
            .map(|g| g.trait_values())
            .collect();
        for name in computed.names() {
            let def = computed.get(name).unwrap();
            if let Some(v) = spoor_core::computed::brute_force(def, &events, now_ms) {
                facts.computed.insert(name.to_owned(), v);
            }
        }
        assert_eq!(
            Value::Object((*p.activation.values).clone()),
            Value::Object(facts.computed.clone()),
            "computed traits of {}",
            p.id
        );
        let brute = set.evaluate_all_brute(&facts, &events, now_ms);
        let incremental: std::collections::BTreeSet<String> =
            p.activation.members.keys().map(|a| a.to_string()).collect();
        assert_eq!(incremental, brute, "memberships of {} at {now_ms}", p.id);
        checked += 1;
    }
    // The membership bitmaps (what size, members and overlap read) agree with the profiles.
    for name in defs.audiences.keys() {
        let mut from_profiles: Vec<u64> = r
            .list_profiles(None, 10_000)
            .unwrap()
            .iter()
            .filter(|p| p.activation.members.contains_key(name.as_str()))
            .map(|p| p.id.raw())
            .collect();
        from_profiles.sort_unstable();
        let bitmap: Vec<u64> = r
            .audience_members(name, None, 100_000)
            .unwrap()
            .iter()
            .map(|p| p.raw())
            .collect();
        assert_eq!(bitmap, from_profiles, "members of {name}");
        assert_eq!(r.audience_size(name).unwrap(), bitmap.len() as u64);
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_memberships_equal_brute_force_over_the_log_as_time_passes() {
    for seed in [3u64, 11, 29] {
        let clock = Arc::new(FixedClock::new("2026-01-25T00:00:00Z".parse().unwrap()));
        let srv =
            TestServer::start_clocked(tempfile::tempdir().unwrap(), |_| {}, clock.clone()).await;
        let events = random_events(seed, 400);
        // Half the history exists before the definitions (backfilled), half arrives after.
        srv.send_processed(events[..200].to_vec()).await;
        srv.define(|d| {
            d.computed.extend([
                computed(json!({"name": "views_7d", "aggregation": "count", "event": {"name": "Viewed"}, "window": "7d"})),
                computed(json!({"name": "max_price", "aggregation": "max", "property": "price", "event": {"name": "Viewed"}})),
                computed(json!({"name": "spent_14d", "aggregation": "sum", "property": "price", "event": {"name": "Bought"}, "window": "14d"})),
                computed(json!({"name": "cats", "aggregation": {"distinct_list": {"limit": 10}}, "property": "cat", "event": {"name": "Viewed"}})),
                // Names no event: the engine's index by event name must still apply it.
                computed(json!({"name": "pages_1d", "aggregation": "count", "event": {"kind": "page"}, "window": "1d"})),
                // Selects an event no audience names: the engine must still parse its
                // properties.
                computed(json!({"name": "best_rating", "aggregation": "max", "property": "stars", "event": {"name": "Rated"}})),
            ]);
            d.audiences.extend([
                audience("viewers", r#"performed "Viewed" at least 2 times within 7d"#),
                audience("buyers", r#"performed "Bought" within 5d"#),
                // Holds for a person none of whose events it selects (the engine answers
                // such a person without evaluating).
                audience("quiet", r#"not performed "Bought" within 3d"#),
                audience("browsing", "computed pages_1d >= 2"),
                audience("pricey", "computed max_price >= 80 and computed spent_14d < 50"),
                audience("loyal", "trait n >= 3 or utm source = \"s1\""),
                audience("phones", r#"device type = "mobile" and utm medium = "m1""#),
                audience("firefox", r#"device browser = "Firefox" or device os = "iPhone" and utm source = "s2""#),
                audience("funnel", r#"performed "Viewed" then page "P" within 2d"#),
                audience("abandoned", r#"performed "Viewed" where price > 50 and not followed by "Bought" within 1d"#),
                audience("target", "in audience viewers and not in audience buyers"),
                audience("first_old", r#"first performed "Viewed" before date "2026-01-15""#),
                audience("gold", r#"group trait tier = "gold""#),
                audience("big_viewers", "group trait seats >= 25 and in audience viewers"),
            ]);
        })
        .await;
        let now = || clock.now().timestamp_millis();
        assert!(assert_equals_brute_force(&srv, now()) > 0);
        // Checked after every chunk, before any timer fires (a timer re-evaluates everything
        // and would hide an audience the events failed to re-evaluate).
        for chunk in events[200..].chunks(20) {
            srv.send_processed(chunk.to_vec()).await;
            assert_equals_brute_force(&srv, now());
        }
        // Time passes with no events: timers fire, and the state still equals brute force.
        for days in [1, 2, 3, 5, 8, 15] {
            clock.set(
                DateTime::from_timestamp_millis(
                    "2026-01-25T00:00:00Z"
                        .parse::<DateTime<Utc>>()
                        .unwrap()
                        .timestamp_millis()
                        + days * 86_400_000,
                )
                .unwrap(),
            );
            let target = clock.now().timestamp_millis();
            timers_reach(&srv, target).await;
            assert_equals_brute_force(&srv, target);
        }
        srv.stop().await;
    }
}

/// The figures of the backfill of the current definitions (what it recomputed, how many
/// people it evaluated): the processor records them just after the definitions are marked
/// applied, so this waits for them.
async fn last_backfill(srv: &TestServer) -> spoor_server::processor::backfill::Stats {
    let rev = srv.app.defs.current().revision;
    let status = &srv.app.processor.status;
    wait_until(|| {
        status
            .last_backfill
            .lock()
            .as_ref()
            .is_some_and(|s| s.revision == rev)
    })
    .await;
    status.last_backfill.lock().clone().expect("a backfill ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilling_only_changed_definitions_equals_brute_force() {
    for seed in [5u64, 17] {
        changed_definitions_equal_brute_force(seed, Variant::Plain).await;
    }
}

/// The same with the smallest memory limit: every backfill folds one person per pass over
/// the log, and starts checkpoints while re-evaluating.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilling_in_passes_within_a_memory_limit_equals_brute_force() {
    changed_definitions_equal_brute_force(5, Variant::Tiny).await;
}

/// The same with events mapped to people only after the scan: every event a backfill
/// parses is held back, then resolved and folded (elsewhere that path runs only as far as
/// the timing of the mapping threads makes it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfilling_with_every_event_held_back_equals_brute_force() {
    changed_definitions_equal_brute_force(17, Variant::HeldBack).await;
}

#[derive(Clone, Copy, PartialEq)]
enum Variant {
    Plain,
    /// A memory limit of 0 (below what the configuration accepts; the tests set it after
    /// validation) and a checkpoint every 4 pending entries.
    Tiny,
    /// The mapping filled only once the scan has read the whole log.
    HeldBack,
}

async fn changed_definitions_equal_brute_force(seed: u64, variant: Variant) {
    let tiny = variant == Variant::Tiny;
    let tweak = move |cfg: &mut spoor_server::config::Config| {
        if tiny {
            cfg.processor.backfill_memory_mb = 0;
            cfg.processor.checkpoint_pending = 4;
        }
        cfg.processor.backfill_map_after_scan = variant == Variant::HeldBack;
    };
    {
        let clock = Arc::new(FixedClock::new("2026-01-25T00:00:00Z".parse().unwrap()));
        let srv =
            TestServer::start_clocked(tempfile::tempdir().unwrap(), tweak, clock.clone()).await;
        let now = || clock.now().timestamp_millis();
        let events = random_events(seed, 300);
        srv.send_processed(events[..150].to_vec()).await;
        // Names with a quote and a backslash: their raw JSON holds escapes, never the name.
        srv.send_processed(vec![
            ev(
                "track",
                "u1",
                "Say \"hi\"",
                json!({"price": 70}),
                "2026-01-20T10:00:00Z",
            ),
            ev(
                "track",
                "u2",
                "back\\slash",
                json!({"price": 5}),
                "2026-01-21T10:00:00Z",
            ),
        ])
        .await;
        srv.define(|d| {
            d.computed.extend([
                computed(json!({"name": "views_7d", "aggregation": "count", "event": {"name": "Viewed"}, "window": "7d"})),
                computed(json!({"name": "max_price", "aggregation": "max", "property": "price", "event": {"name": "Viewed"}})),
                computed(json!({"name": "cats", "aggregation": {"distinct_list": {"limit": 10}}, "property": "cat", "event": {"name": "Viewed"}})),
            ]);
            d.audiences.extend([
                audience("viewers", r#"performed "Viewed" at least 2 times within 7d"#),
                audience("buyers", r#"performed "Bought" within 5d"#),
                audience("pricey", "computed max_price >= 80"),
                audience("target", "in audience viewers and not in audience buyers"),
                audience("loyal", "trait n >= 3 or utm source = \"s1\""),
            ]);
        })
        .await;
        let st = last_backfill(&srv).await;
        assert!(st.full, "first backfill of a state: everything");
        if variant == Variant::HeldBack {
            assert!(st.parsed > 0 && st.held == st.parsed, "{st:?}");
        }
        let live = srv.app.state.reader().unwrap().live_profiles().unwrap();
        if tiny {
            assert_eq!(st.passes, live, "one pass per person: {st:?}");
            assert!(st.checkpoints > 0, "{st:?}");
            // Each pass parses only its people's events.
            assert!(st.parsed <= st.events, "{st:?}");
        } else {
            assert_eq!(st.passes, 1, "{st:?}");
        }
        assert_equals_brute_force(&srv, now());

        // New audiences among the others, selecting events by name (two of them with
        // escapes in the raw JSON): only their events' people are evaluated, and only for
        // them. One has a window, so its exits (timers set by that evaluation) are checked
        // when time moves on below.
        srv.define(|d| {
            d.audiences.extend([
                audience(
                    "big_buyers",
                    r#"performed "Bought" where price > 40 at least 2 times"#,
                ),
                audience(
                    "recent_big",
                    r#"performed "Bought" where price > 40 within 8d"#,
                ),
                audience(
                    "quoted",
                    r#"performed "Say \"hi\"" or performed "back\\slash""#,
                ),
            ]);
        })
        .await;
        let st = last_backfill(&srv).await;
        assert!(!st.full && st.evaluated < live, "{st:?} of {live}");
        assert!(st.parsed < 160, "events skipped unparsed: {st:?}");
        assert!(st.only_added, "only the new audiences evaluated: {st:?}");
        if variant == Variant::HeldBack {
            assert!(st.parsed > 0 && st.held == st.parsed, "{st:?}");
        }
        assert!(
            st.written > 0 && st.spliced == st.written,
            "each rewritten person's stored states spliced, not decoded: {st:?}"
        );
        assert_equals_brute_force(&srv, now());
        assert!(activation(&srv, "user_id", "u1")
            .0
            .contains(&"quoted".to_owned()));

        // A changed computed trait, read by `pricey` (a dependency through a trait).
        srv.define(|d| {
            d.computed.extend([computed(
                json!({"name": "max_price", "aggregation": "max", "property": "price", "event": {"name": "Bought"}}),
            )]);
        })
        .await;
        let st = last_backfill(&srv).await;
        assert!(!st.full && !st.only_added, "{st:?}");
        assert_equals_brute_force(&srv, now());

        // A changed audience that another one nests (`target` reads `viewers`).
        srv.define(|d| {
            d.audiences.extend([audience(
                "viewers",
                r#"performed "Viewed" where cat = "c1" at least 1 times within 7d"#,
            )]);
        })
        .await;
        assert!(!last_backfill(&srv).await.full);
        assert_equals_brute_force(&srv, now());

        // Removals: an audience, and a trait with a value for everyone (`[]`).
        srv.define(|d| {
            d.audiences.remove("big_buyers");
            d.computed.remove("cats");
        })
        .await;
        let st = last_backfill(&srv).await;
        assert!(
            !st.full && st.evaluated == live,
            "everyone had `cats`: {st:?}"
        );
        assert_equals_brute_force(&srv, now());

        // A definition that holds without events: everyone evaluated.
        srv.define(|d| {
            d.audiences
                .extend([audience("never_bought", r#"not performed "Bought""#)]);
        })
        .await;
        assert_equals_brute_force(&srv, now());
        // Only a description changed: nothing recomputed.
        srv.define(|d| {
            if let Some(a) = d.audiences.get_mut("buyers") {
                a.description = "changed".into();
            }
        })
        .await;
        let st = last_backfill(&srv).await;
        assert_eq!((st.parsed, st.evaluated), (0, 0), "{st:?}");

        // Processing and time go on from the partly rewritten state.
        for chunk in events[150..].chunks(50) {
            srv.send_processed(chunk.to_vec()).await;
        }
        assert_equals_brute_force(&srv, now());
        for days in [2, 9] {
            let target = now() + days * 86_400_000;
            clock.set(DateTime::from_timestamp_millis(target).unwrap());
            timers_reach(&srv, target).await;
            assert_equals_brute_force(&srv, target);
        }
        srv.stop().await;
    }
}
