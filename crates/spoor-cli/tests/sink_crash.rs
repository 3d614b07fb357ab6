//! PostgreSQL and NATS destinations survive crashes: `spoor serve` killed with `kill -9`
//! while it syncs and publishes, restarted on the same data directory — and in the end the
//! PostgreSQL tables equal what the Profile API says (every profile, its traits and event
//! count, every audience membership), and the JetStream stream holds every event and entry
//! exactly once (re-publishes after a crash are dropped by their `Nats-Msg-Id`), each
//! person's in the order they happened.
//!
//! Needs SPOOR_TEST_POSTGRES_URL and SPOOR_TEST_NATS_URL (skips, saying so, without them;
//! fails under CI). The schedule comes from a seed; `SPOOR_CRASH_SEED=<n>` replays it.

mod common;

use common::{
    admin, crash_seed, free_port, send_until_acked, CrashDirs, Init, Rng, Server, ADMIN_TOKEN,
    WRITE_KEY,
};
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 6;
const USERS: u64 = 10;

fn service_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(v),
        _ => {
            assert!(std::env::var_os("CI").is_none(), "{var} is not set in CI");
            eprintln!("skipping: {var} is not set");
            None
        }
    }
}

/// profile id → (traits, event_count) and the (audience, profile id) rows.
type Tables = (BTreeMap<String, (Value, i64)>, BTreeSet<(String, String)>);

async fn tables(c: &tokio_postgres::Client, schema: &str) -> Tables {
    let rows = c
        .query(
            &format!("SELECT id, traits::text, event_count FROM \"{schema}\".profiles"),
            &[],
        )
        .await
        .unwrap();
    let profiles = rows
        .iter()
        .map(|r| {
            let t: String = r.get(1);
            (r.get(0), (serde_json::from_str(&t).unwrap(), r.get(2)))
        })
        .collect();
    let rows = c
        .query(
            &format!("SELECT audience, profile_id FROM \"{schema}\".audience_memberships"),
            &[],
        )
        .await
        .unwrap();
    (
        profiles,
        rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
    )
}

#[test]
fn postgres_and_nats_survive_kill9() {
    let (Some(pg), Some(nats)) = (
        service_url("SPOOR_TEST_POSTGRES_URL"),
        service_url("SPOOR_TEST_NATS_URL"),
    ) else {
        return;
    };
    let seed = crash_seed("sink");
    let mut rng = Rng(seed);
    let tag = format!("{:x}", chrono::Utc::now().timestamp_micros());
    let (schema, stream, prefix) = (
        format!("crash_{tag}"),
        format!("CRASH_{tag}"),
        format!("crash{tag}"),
    );
    let dirs = CrashDirs::new();
    let init = Init::Given(WRITE_KEY, ADMIN_TOKEN);
    let env = [
        ("SPOOR_PROCESSOR__CHECKPOINT_MS", "200"),
        ("SPOOR_DESTINATIONS__POLL_MS", "10"),
    ];
    let mut server = Server::start_env(&dirs.data, free_port(), init, &dirs.logs, "s0", &env);
    let post = reqwest::Method::POST;
    server.create_audience("buyers", "performed \"Bought\"");
    let retry = json!({"max_attempts": 100000, "initial_backoff_ms": 20,
                       "max_backoff_ms": 300, "pause_after_secs": 86400});
    let (s, v) = admin(
        &server,
        post.clone(),
        "/v1/destinations",
        Some(json!({"name": "db", "type": "postgres", "retry": retry,
                "postgres": {"url": pg, "schema": schema, "batch_size": 7}})),
    );
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin(
        &server,
        post,
        "/v1/destinations",
        Some(json!({"name": "bus", "type": "nats", "retry": retry,
                "subscriptions": {"events": [{}], "audiences": [{"audience": "buyers"}]},
                "nats": {"url": nats, "stream": stream, "subject_prefix": prefix,
                         "create_stream": true, "batch_size": 5}})),
    );
    assert_eq!(s, 201, "{v}");

    let mut next_n: HashMap<String, u64> = HashMap::new();
    let mut sent = 0usize;
    let mut buyers = BTreeSet::new();
    for round in 0..ROUNDS {
        let mut batch = Vec::new();
        for _ in 0..rng.range(20, 80) {
            let user = format!("u{}", rng.range(0, USERS - 1));
            let n = next_n.entry(user.clone()).or_insert(0);
            *n += 1;
            let mid = format!("r{round}-{user}-{n}");
            batch.push(match rng.range(0, 9) {
                0 => {
                    buyers.insert(user.clone());
                    json!({"type": "track", "userId": user, "event": "Bought",
                           "messageId": mid, "properties": {"n": *n}})
                }
                1 | 2 => json!({"type": "identify", "userId": user, "messageId": mid,
                                "traits": {"last_n": *n, "round": round}}),
                _ => json!({"type": "track", "userId": user, "event": "Viewed",
                            "messageId": mid, "properties": {"n": *n}}),
            });
            sent += 1;
        }
        send_until_acked(&server, &json!({ "batch": batch }));
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
        server.kill9();
        std::thread::sleep(Duration::from_millis(rng.range(0, 200)));
        // A fresh port: another test may have been handed the freed one.
        let tag = format!("s{}", round + 1);
        server = Server::start_env(&dirs.data, free_port(), init, &dirs.logs, &tag, &env);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What the Profile API says now is what the tables must hold.
    let mut want_profiles = BTreeMap::new();
    let mut want_members = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    for user in next_n.keys() {
        let v = loop {
            let (s, v) = server.admin_get(&format!("/v1/profiles/user_id:{user}"));
            let events = v["event_count"].as_u64().unwrap_or(0);
            if s == 200 && events == next_n[user] {
                break v;
            }
            assert!(Instant::now() < deadline, "{user} not processed: {v}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let id = v["id"].as_str().unwrap().to_owned();
        if buyers.contains(user) {
            want_members.insert(("buyers".to_owned(), id.clone()));
        }
        want_profiles.insert(id, (v["traits"].clone(), next_n[user] as i64));
    }
    let pid: HashMap<String, String> = next_n
        .keys()
        .map(|u| {
            let (_, v) = server.admin_get(&format!("/v1/profiles/user_id:{u}"));
            (v["id"].as_str().unwrap().to_owned(), u.clone())
        })
        .collect();

    rt.block_on(async {
        let (c, conn) = tokio_postgres::connect(&pg, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (profiles, members) = tables(&c, &schema).await;
            if profiles == want_profiles && members == want_members {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "PostgreSQL not in sync in 90 s:\n got {profiles:?} {members:?}\nwant {want_profiles:?} {want_members:?}\n{}",
                server.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        common::drop_schema::drop_schema(&c, &schema).await;

        // Every event and entry once, in order per person.
        let expected = sent + buyers.len();
        let js = async_nats::jetstream::new(async_nats::connect(nats.as_str()).await.unwrap());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let mut st = js.get_stream(&stream).await.unwrap();
            let n = st.info().await.unwrap().state.messages as usize;
            if n >= expected {
                break;
            }
            assert!(Instant::now() < deadline, "{n} of {expected} messages in 90 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Give a late duplicate the chance to show up before counting.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let st = js.get_stream(&stream).await.unwrap();
        let consumer = st
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut msgs = consumer.messages().await.unwrap();
        let mut ids = BTreeSet::new();
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut entered = BTreeSet::new();
        for _ in 0..expected {
            let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let v: Value = serde_json::from_slice(&m.payload).unwrap();
            assert!(ids.insert(v["id"].as_str().unwrap().to_owned()), "twice: {v}");
            if v["kind"] == "audience" {
                entered.insert(pid[v["profile_id"].as_str().unwrap()].clone());
            } else if let Some(n) = v["event"]["message"]["properties"]["n"].as_u64() {
                let user = v["event"]["message"]["userId"].as_str().unwrap().to_owned();
                let prev = last.insert(user.clone(), n).unwrap_or(0);
                assert!(n > prev, "{user}: {n} after {prev}");
            }
            m.ack().await.unwrap();
        }
        assert_eq!(entered, buyers.iter().cloned().collect());
        let mut st = js.get_stream(&stream).await.unwrap();
        assert_eq!(st.info().await.unwrap().state.messages as usize, expected);
        js.delete_stream(&stream).await.unwrap();
        eprintln!(
            "{} profiles and {} memberships in sync; {expected} messages, none twice",
            want_profiles.len(),
            want_members.len()
        );
    });
}
