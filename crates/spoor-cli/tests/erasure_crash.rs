//! Crash safety of erasure: `kill -9` the server at a random moment while it erases a person
//! with thousands of events, restart it on the same data directory, and check that the
//! erasure was resumed and finished (the job says `done`), that nothing of the person is
//! left in the logs, that `spoor privacy compact` then leaves no byte of them anywhere, and
//! that everyone else is intact. The kill delays come from a seed, printed at the start;
//! `SPOOR_CRASH_SEED=<n>` replays it.

mod common;

use common::{
    admin, crash_seed, free_port, run, spoor_admin, spoor_cmd, Init, Rng, Server, ADMIN_TOKEN,
    WRITE_KEY,
};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

const EMAIL: &str = "Crash.Victim-5521@Example.NET";
const USER: &str = "victim-5521";
const VICTIM_EVENTS: usize = 4000;
const OTHERS: usize = 10;
const OTHER_EVENTS: usize = 20;

fn batches() -> Vec<Vec<Value>> {
    let mut all = vec![
        json!({"type": "identify", "userId": USER, "messageId": "v-id",
                              "traits": {"email": EMAIL, "name": "Crash Victim"}}),
    ];
    for n in 0..VICTIM_EVENTS {
        all.push(json!({"type": "track", "userId": USER, "event": "Clicked", "messageId": format!("v-{n}"),
                        "properties": {"n": n}, "context": {"traits": {"email": EMAIL}}}));
    }
    for o in 0..OTHERS {
        for n in 0..OTHER_EVENTS {
            all.push(
                json!({"type": "track", "userId": format!("other-{o}"), "event": "Clicked",
                            "messageId": format!("o{o}-{n}"), "properties": {"n": n}}),
            );
        }
    }
    all.chunks(400).map(|c| c.to_vec()).collect()
}

/// Files under `dir` (recursively) whose lowercased bytes contain `needle`.
fn files_with(dir: &Path, needle: &str) -> Vec<String> {
    let needle = needle.to_ascii_lowercase().into_bytes();
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap().to_ascii_lowercase();
                if b.windows(needle.len()).any(|w| w == needle.as_slice()) {
                    out.push(p.display().to_string());
                }
            }
        }
    }
    out
}

fn wait_done(server: &Server) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, v) = admin(server, reqwest::Method::GET, "/v1/privacy/erasures", None);
        assert_eq!(s, 200, "{v}");
        let jobs = v["erasures"].as_array().cloned().unwrap_or_default();
        if !jobs.is_empty() && jobs.iter().all(|j| j["status"] == "done") {
            return jobs[0].clone();
        }
        assert!(
            jobs.iter().all(|j| j["status"] != "failed"),
            "an erasure failed: {v}\n{}",
            server.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "erasure not finished in 60 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kill_9_during_erasure_leaves_a_consistent_resumable_data_dir() {
    let seed = crash_seed("erasure");
    let mut rng = Rng(seed);
    let total = 1 + VICTIM_EVENTS + OTHERS * OTHER_EVENTS;
    for round in 0..3 {
        let root = tempfile::tempdir().unwrap();
        let mut server = Server::start_fresh(root.path());
        for b in batches() {
            let (s, v) = server.post("/v1/batch", &json!({ "batch": b }), WRITE_KEY);
            assert_eq!(s, 200, "{v}");
        }
        let v = server.wait_processed(total as u64);
        assert_eq!(v["processed_seq"], total, "{v}");

        let (s, v) = admin(
            &server,
            reqwest::Method::POST,
            "/v1/privacy/erasures",
            Some(json!({"ref": format!("email:{EMAIL}")})),
        );
        assert_eq!(s, 202, "{v}");
        let delay = match round {
            0 => 0,
            _ => rng.range(1, 400),
        };
        std::thread::sleep(Duration::from_millis(delay));
        server.kill9();
        eprintln!("round {round}: killed {delay} ms after the erasure was accepted");

        let logs = root.path().join("logs");
        let data = root.path().join("data");
        let server = Server::start(
            &data,
            free_port(),
            Init::Given(WRITE_KEY, ADMIN_TOKEN),
            &logs,
            "again",
        );
        let job = wait_done(&server);
        assert!(job["profiles"].as_u64().unwrap() <= 1, "{job}");
        let (s, _) = admin(
            &server,
            reqwest::Method::GET,
            &format!("/v1/profiles/user_id:{USER}"),
            None,
        );
        assert_eq!(s, 404, "round {round}: the person is back");
        let events = server.export();
        assert_eq!(
            events.len(),
            OTHERS * OTHER_EVENTS,
            "round {round}: the others' events"
        );
        for dir in ["log", "rejected"] {
            let left = files_with(&data.join(dir), EMAIL);
            assert!(left.is_empty(), "round {round}: {left:?}");
        }
        for o in 0..OTHERS {
            let (s, v) = admin(
                &server,
                reqwest::Method::GET,
                &format!("/v1/profiles/user_id:other-{o}"),
                None,
            );
            assert_eq!(s, 200, "{v}");
            assert_eq!(v["event_count"], OTHER_EVENTS, "{v}");
        }
        // The CLI shows the job and the suppressed identifiers (hashes, no values).
        let out = spoor_admin(&server, Some(ADMIN_TOKEN), &["privacy", "erasures"]);
        out.assert_ok();
        assert!(
            out.stdout.contains("done") && out.stdout.contains("compaction pending"),
            "{out}"
        );
        let out = spoor_admin(&server, Some(ADMIN_TOKEN), &["privacy", "suppression"]);
        out.assert_ok();
        assert!(
            out.stdout.contains("email") && !out.stdout.to_lowercase().contains("victim"),
            "{out}"
        );
        let out = spoor_admin(
            &server,
            Some(ADMIN_TOKEN),
            &["privacy", "erase", "email:nobody@example.com"],
        );
        out.assert_failed();
        assert!(out.stderr.contains("404"), "{out}");
        drop(server);

        // Offline compaction (a kill -9 leaves it pending): afterwards no file holds them.
        let mut cmd = spoor_cmd();
        cmd.args(["privacy", "compact", "--data-dir"]).arg(&data);
        run(cmd, Duration::from_secs(60)).assert_ok();
        for needle in [EMAIL, USER, "Crash Victim"] {
            let left = files_with(&data, needle);
            assert!(left.is_empty(), "round {round}: {needle:?} in {left:?}");
        }
        let server = Server::start(
            &data,
            free_port(),
            Init::Given(WRITE_KEY, ADMIN_TOKEN),
            &logs,
            "compacted",
        );
        let (s, v) = admin(
            &server,
            reqwest::Method::GET,
            "/v1/profiles/user_id:other-3",
            None,
        );
        assert_eq!(s, 200, "{v}");
        let (_, v) = admin(&server, reqwest::Method::GET, "/v1/privacy/erasures", None);
        assert_eq!(v["compaction_pending"], false, "{v}");
        assert_eq!(v["erasures"][0]["compacted"], true, "{v}");
    }
}
