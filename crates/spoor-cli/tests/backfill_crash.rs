//! Crash safety of a backfill: `kill -9` the server while it backfills a new audience over
//! history, restart, and the backfill runs again from the start and finishes exact, with
//! each entry recorded once.
//!
//! A backfill checkpoints while it re-evaluates people (here after every round of them:
//! `checkpoint_pending` is tiny), so a kill in the middle leaves some people rewritten and
//! their entries recorded, and the definitions not yet recorded as applied. The restart
//! must backfill again, find those people unchanged (no second entry) and the others not
//! yet done. Each round adds one audience and kills at a moment picked from the seed; the
//! seed is printed, `SPOOR_CRASH_SEED=<n>` replays the schedule.

mod common;

use common::{crash_seed, CrashDirs, Rng, WRITE_KEY};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// People in the history (a backfill re-evaluates them in rounds of 2,000).
const PEOPLE: u64 = 5_000;
const ROUNDS: u64 = 3;

#[test]
fn kill_9_during_a_backfill_then_it_finishes_exact_with_each_entry_once() {
    let started = Instant::now();
    let seed = crash_seed("backfill");
    let mut rng = Rng(seed);
    let dirs = CrashDirs::new();
    let env = [
        ("SPOOR_PROCESSOR__CHECKPOINT_PENDING", "50"),
        ("SPOOR_LOG_LEVEL", "warn"),
    ];
    let mut server = dirs.serve("b0", &env);

    // History: every person orders 0-3 times, at most one of them a big order.
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut orders: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
    let mut events = Vec::new();
    for person in 0..PEOPLE {
        let n = rng.range(0, 4);
        let big = n > 0 && rng.chance(30);
        orders.insert(person, (n, big));
        for i in 0..n {
            let revenue = if big && i == 0 { 500 } else { 20 };
            events.push(json!({
                "type": "track", "userId": format!("p{person}"), "event": "Order Completed",
                "properties": {"revenue": revenue}, "timestamp": ts,
                "messageId": format!("o{person}-{i}"),
            }));
        }
    }
    for chunk in events.chunks(1_000) {
        let (s, v) = server.post("/v1/batch", &json!({ "batch": chunk }), WRITE_KEY);
        assert_eq!(s, 200, "{v}");
    }
    server.wait_ingested_processed();

    let rules = [
        ("ordered", "performed \"Order Completed\" at least 1 time"),
        ("regulars", "performed \"Order Completed\" at least 2 times"),
        (
            "big_spenders",
            "performed \"Order Completed\" where revenue >= 100",
        ),
    ];
    let mut mid_backfill = 0;
    for (round, (name, rule)) in rules.iter().enumerate().take(ROUNDS as usize) {
        server.create_audience(name, rule);
        // Kill while the log is being scanned, once it is scanned (the people being
        // re-evaluated and checkpointed), or a moment after that.
        let kind = rng.range(0, 2);
        let deadline = Instant::now() + Duration::from_secs(30);
        let running = loop {
            let v = server.admin_get_ok(&format!("/v1/audiences/{name}"));
            let b = &v["backfill"];
            let at = match (kind, b["done"].as_u64(), b["total"].as_u64()) {
                (0, Some(d), _) => d > 0,
                (_, Some(d), Some(t)) => d >= t,
                _ => false,
            };
            if at || Instant::now() > deadline {
                break b.is_object();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if kind == 2 {
            std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        }
        mid_backfill += usize::from(running);
        server.kill9();
        eprintln!("round {round}: kill {kind}, backfill of {name} seen running: {running}");
        server = dirs.serve(&format!("b{}", round + 1), &env);
        server.wait_backfilled(round + 1, Duration::from_secs(120));
        server.wait_ingested_processed();

        // Exact for every audience so far, and each member entered exactly once.
        for (name, _) in &rules[..=round] {
            let want = |&(n, big): &(u64, bool)| match *name {
                "ordered" => n >= 1,
                "regulars" => n >= 2,
                _ => big,
            };
            let expected = orders.values().filter(|o| want(o)).count();
            let got = server.audience_members(name);
            assert_eq!(got.len(), expected, "seed {seed}: members of {name}");
        }
    }
    // Each person's history: every audience entered at most once, never exited.
    let mut problems = Vec::new();
    for (person, &(n, big)) in orders.iter().step_by(7) {
        if n == 0 {
            continue;
        }
        let v = server.admin_get_ok(&format!(
            "/v1/profiles/user_id:p{person}/audiences?limit=100"
        ));
        let mut entered: BTreeMap<String, usize> = BTreeMap::new();
        for h in v["history"].as_array().unwrap() {
            let audience = h["audience"].as_str().unwrap().to_owned();
            match h["change"].as_str() {
                Some("entered") => *entered.entry(audience).or_default() += 1,
                other => problems.push(format!("p{person}: {audience} {other:?}")),
            }
        }
        let want = [
            ("ordered", true),
            ("regulars", n >= 2),
            ("big_spenders", big),
        ];
        for (audience, member) in want {
            let times = entered.get(audience).copied().unwrap_or(0);
            if times != usize::from(member) {
                problems.push(format!("p{person}: entered {audience} {times} times"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "seed {seed}: {} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "seed {seed}: ok — {mid_backfill} of {ROUNDS} kills came during a backfill; {:.1?}",
        started.elapsed()
    );
}
