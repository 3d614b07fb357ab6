//! Crash safety of real-time audiences: memberships and their timers survive `kill -9`, and
//! no entry or exit is recorded twice.
//!
//! Three audiences: `recent` (a 6 s window, so time alone makes people leave), `buyers`
//! (all time) and `recent_non_buyers` (nested on both). Rounds of events for old and new
//! people, each followed by a `kill -9` at a moment picked from the seed: right after the
//! events were acknowledged (not yet processed), after they were processed but before the
//! next checkpoint, or after the checkpoint (always, for the last kill). Rounds are spaced so
//! that timers of earlier rounds come due around later kills. After every restart the
//! all-time audience is exact; after the last one, with no new event, everyone
//! must leave `recent` (their timers survived), and every person's memberships and history
//! must be exactly what the events imply: each (audience, person) history alternates
//! entered/exited starting with entered, and no change appears twice.
//!
//! The schedule comes from a seed, printed at the start; `SPOOR_CRASH_SEED=<n>` replays it
//! (the exact interleaving with the processor still varies from run to run).

mod common;

use common::{crash_seed, CrashDirs, Rng, Server, WRITE_KEY};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The `recent` window.
const WINDOW: Duration = Duration::from_secs(6);
/// Kill/restart rounds after the first batch.
const ROUNDS: u64 = 6;

/// Waits until everything processed is also checkpointed.
fn wait_durable(server: &Server, seq: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = server.admin_get_ok("/v1/admin/processor");
        if st["durable_seq"].as_u64().unwrap_or(0) >= seq {
            return;
        }
        assert!(Instant::now() < deadline, "never checkpointed: {st}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// POSTs one batch for `people` (each a Ping, and an Order Completed for those who buy);
/// every event is timestamped now.
fn send(server: &Server, rng: &mut Rng, batch_no: u64, people: &[(u64, bool)]) {
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut events = Vec::new();
    for (i, &(person, buys)) in people.iter().enumerate() {
        let mut names = vec!["Ping"];
        if buys {
            // Either order within the batch, so a buyer may enter and leave
            // `recent_non_buyers` within the same batch.
            if rng.chance(50) {
                names.push("Order Completed");
            } else {
                names.insert(0, "Order Completed");
            }
        }
        for (j, name) in names.into_iter().enumerate() {
            events.push(json!({
                "type": "track",
                "userId": format!("p{person}"),
                "event": name,
                "timestamp": ts,
                "messageId": format!("b{batch_no}-{i}-{j}"),
            }));
        }
    }
    let (s, v) = server.post("/v1/batch", &json!({ "batch": events }), WRITE_KEY);
    assert_eq!(s, 200, "batch {batch_no}: {v}");
}

fn size(server: &Server, audience: &str) -> u64 {
    server.admin_get_ok(&format!("/v1/audiences/{audience}/size"))["size"]
        .as_u64()
        .unwrap()
}

#[test]
fn kill_9_keeps_memberships_and_timers_and_records_each_change_once() {
    let started = Instant::now();
    let seed = crash_seed("audience");
    let mut rng = Rng(seed);
    let dirs = CrashDirs::new();
    let env = [
        ("SPOOR_PROCESSOR__CHECKPOINT_MS", "300"),
        ("SPOOR_LOG_LEVEL", "warn"),
    ];
    let mut server = dirs.serve("a0", &env);

    let window_s = WINDOW.as_secs();
    for (name, rule) in [
        ("recent", format!("performed \"Ping\" within {window_s}s")),
        (
            "buyers",
            "performed \"Order Completed\" at least 1 time".into(),
        ),
        (
            "recent_non_buyers",
            "in audience \"recent\" and not in audience \"buyers\"".into(),
        ),
    ] {
        server.create_audience(name, &rule);
    }
    // Their (empty) backfills are done before any event.
    server.wait_backfilled(3, Duration::from_secs(10));

    // person → bought at least once.
    let mut bought: BTreeMap<u64, bool> = BTreeMap::new();
    let mut next_person = 0u64;
    let mut kinds = [0u32; 4];
    // When each round's events were sent (their `recent` timers come due WINDOW later).
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut last_event_at = Instant::now();
    for round in 0..=ROUNDS {
        // Who: 50 new people first, then some new and some returning ones each round.
        let new = if round == 0 { 50 } else { rng.range(3, 10) };
        let mut people: Vec<u64> = (next_person..next_person + new).collect();
        next_person += new;
        if round > 0 {
            let returning = rng.range(5, 20);
            for _ in 0..returning {
                let p = rng.range(0, next_person - new - 1);
                if !people.contains(&p) {
                    people.push(p);
                }
            }
        }
        let batch: Vec<(u64, bool)> = people.iter().map(|&p| (p, rng.chance(25))).collect();
        for &(p, buys) in &batch {
            *bought.entry(p).or_default() |= buys;
        }
        send(&server, &mut rng, round, &batch);
        last_event_at = Instant::now();
        sent_at.push(last_event_at);
        let last = round == ROUNDS;

        // When to kill: right after ingest, after processing, after a checkpoint (always
        // for the last kill, so the memberships and timers the final checks rely on come
        // from the store, not from a replay), or just as an earlier round's timers come
        // due (within 3 s from now), so some have fired and are not yet checkpointed.
        // The same draws every round, whatever the timing, so a seed replays the schedule.
        let (offset, near_due, other) = (
            Duration::from_millis(rng.range(0, 400)),
            rng.chance(50),
            rng.range(0, 2) as usize,
        );
        let due = sent_at
            .iter()
            .map(|t| *t + WINDOW + offset)
            .find(|t| *t > Instant::now() && *t < Instant::now() + Duration::from_secs(3));
        let kind = if last {
            2
        } else if due.is_some() && near_due {
            3
        } else {
            other
        };
        kinds[kind] += 1;
        match kind {
            // Acknowledged, maybe not processed yet: replayed from the log.
            0 => std::thread::sleep(Duration::from_millis(rng.range(0, 40))),
            // Processed, probably not checkpointed yet (checkpoints every 300 ms).
            1 => {
                server.wait_ingested_processed();
                std::thread::sleep(Duration::from_millis(rng.range(0, 200)));
            }
            // Processed and durable.
            2 => {
                let seq = server.wait_ingested_processed();
                wait_durable(&server, seq);
                std::thread::sleep(Duration::from_millis(rng.range(0, 100)));
            }
            _ => std::thread::sleep(due.unwrap().saturating_duration_since(Instant::now())),
        }
        let in_recent = (kind == 2).then(|| size(&server, "recent"));
        server.kill9();
        server = dirs.serve(&format!("a{}", round + 1), &env);
        // Memberships survived: all-time ones are exact once the log is processed again.
        server.wait_ingested_processed();
        let buyers = bought.values().filter(|b| **b).count() as u64;
        assert_eq!(
            size(&server, "buyers"),
            buyers,
            "seed {seed}: `buyers` after restart {}",
            round + 1
        );
        if last {
            let after = size(&server, "recent");
            eprintln!(
                "seed {seed}: {} people, {} buyers; kills right after ingest / after \
                 processing / after checkpoint / as timers came due: {kinds:?}; {} in `recent` at the last kill, \
                 {after} after the restart ({:.1?} in)",
                bought.len(),
                buyers,
                in_recent.unwrap_or(0),
                started.elapsed()
            );
            // Not vacuous: people entered before the kill and are still in, with timers
            // only the store can have kept.
            assert!(
                after > 0,
                "seed {seed}: `recent` empty right after the last restart"
            );
            break;
        }
        // Time passes, so earlier rounds' timers come due around later kills.
        std::thread::sleep(Duration::from_millis(rng.range(300, 2_500)));
    }
    // No new event from here on: only timers can empty `recent` and `recent_non_buyers`.
    let deadline = last_event_at + WINDOW + Duration::from_secs(24);
    loop {
        let (r, n) = (size(&server, "recent"), size(&server, "recent_non_buyers"));
        if r == 0 && n == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "seed {seed}: timers lost: `recent` still has {r} members and `recent_non_buyers` \
             {n}, {:.1?} after the last event ({:?})",
            last_event_at.elapsed(),
            server.audience_members("recent")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let emptied_after = last_event_at.elapsed();
    // Settled: nothing re-enters later (e.g. a stale state replayed).
    server.wait_ingested_processed();

    // Per person: memberships now, and the history.
    let buyer_ids = server.audience_members("buyers");
    let mut expected_buyer_ids = BTreeSet::new();
    let mut problems: Vec<String> = Vec::new();
    let mut timer_exits = 0;
    let mut changes = 0;
    for (&person, &did_buy) in &bought {
        let v = server.admin_get_ok(&format!(
            "/v1/profiles/user_id:p{person}/audiences?limit=1000"
        ));
        let pid = v["id"].as_str().unwrap().to_owned();
        if did_buy {
            expected_buyer_ids.insert(pid.clone());
        }
        let now: BTreeSet<&str> = v["audiences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap())
            .collect();
        let want: BTreeSet<&str> = if did_buy {
            ["buyers"].into()
        } else {
            BTreeSet::new()
        };
        if now != want {
            problems.push(format!("p{person} ({pid}): in {now:?}, expected {want:?}"));
        }
        // Newest first; oldest first is (at, change number) ascending.
        let history: Vec<&Value> = v["history"].as_array().unwrap().iter().rev().collect();
        changes += history.len();
        let mut seen: HashMap<(String, String, String), usize> = HashMap::new();
        let mut per_audience: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for h in &history {
            let audience = h["audience"].as_str().unwrap().to_owned();
            let change = h["change"].as_str().unwrap().to_owned();
            let at = h["at"].as_str().unwrap().to_owned();
            let cause = h["cause"].as_str().unwrap_or("?").to_owned();
            assert_eq!(h["profile_id"].as_str(), Some(pid.as_str()), "{h}");
            if audience == "recent" && change == "exited" && cause == "timer" {
                timer_exits += 1;
            }
            *seen
                .entry((audience.clone(), at.clone(), change.clone()))
                .or_default() += 1;
            per_audience
                .entry(audience)
                .or_default()
                .push((change, at, cause));
        }
        for ((audience, at, change), n) in &seen {
            if *n > 1 {
                problems.push(format!(
                    "p{person} ({pid}): {audience} {change} at {at} recorded {n} times"
                ));
            }
        }
        for (audience, rows) in &per_audience {
            let alternates = rows
                .iter()
                .enumerate()
                .all(|(i, (c, _, _))| c == if i % 2 == 0 { "entered" } else { "exited" });
            let ends_in = rows.len() % 2 == 1; // last change was an entry
            if !alternates || ends_in != now.contains(audience.as_str()) {
                problems.push(format!(
                    "p{person} ({pid}): {audience} history does not alternate \
                     entered/exited consistently with membership {:?}: {rows:?}",
                    now.contains(audience.as_str())
                ));
            }
        }
        let count = |a: &str, c: &str| {
            per_audience
                .get(a)
                .map_or(0, |rows| rows.iter().filter(|r| r.0 == c).count())
        };
        // Everyone pinged, so entered `recent` at least once (and left it again).
        if count("recent", "entered") == 0 {
            problems.push(format!("p{person} ({pid}): never entered `recent`"));
        }
        // An all-time audience is entered exactly once and never left.
        let b = (count("buyers", "entered"), count("buyers", "exited"));
        if b != (usize::from(did_buy), 0) {
            problems.push(format!(
                "p{person} ({pid}): buyers entered/exited {b:?} times, bought: {did_buy}"
            ));
        }
        // Someone who never bought was in `recent` and not in `buyers`.
        if !did_buy && count("recent_non_buyers", "entered") == 0 {
            problems.push(format!(
                "p{person} ({pid}): never entered `recent_non_buyers`"
            ));
        }
    }
    if buyer_ids != expected_buyer_ids {
        problems.push(format!(
            "`buyers` members {:?} ≠ expected {:?}",
            buyer_ids, expected_buyer_ids
        ));
    }
    assert_eq!(size(&server, "buyers"), expected_buyer_ids.len() as u64);
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "seed {seed}: ok — {changes} changes checked, {timer_exits} timer exits from `recent`; \
         `recent` emptied {emptied_after:.1?} after the last event; {:.1?} in all",
        started.elapsed()
    );
}
