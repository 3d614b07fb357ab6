//! Crash safety of the binary: ingest under load, `kill -9` the server at random moments,
//! restart it on the same data directory and port, and check that every event that got a
//! 200 is in the log exactly once.
//!
//! Client threads POST batches of 50–200 events (each with a unique messageId) to
//! `/v1/batch` and, like a real SDK, retry a batch whose request failed (connection refused
//! or reset, 429, 5xx) with the SAME messageIds until it gets a 200. A failed attempt may or
//! may not have been stored; the server's dedupe (rebuilt from the log at start) must
//! collapse the retry. So at the end the log must hold every sent event exactly once, with
//! dense seqs 1..N, and every restart must have come up cleanly (a torn tail is cut, not
//! fatal).
//!
//! The kill schedule comes from a seed, printed at the start; `SPOOR_CRASH_SEED=<n>` replays
//! it (the exact interleaving with the clients still varies from run to run).

mod common;

use common::{basic, crash_seed, CrashDirs, Rng, Server, WRITE_KEY};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Concurrent client threads (the machine running the suite may have 2 cores).
const CLIENTS: u64 = 3;
/// A batch that cannot be delivered in this long fails the test.
const BATCH_DEADLINE: Duration = Duration::from_secs(30);

/// What one client sent.
#[derive(Default)]
struct ClientReport {
    /// messageId → the time (ms) the attempt that got the 200 started.
    acked: HashMap<String, i64>,
    /// messageId → the event as sent.
    sent: HashMap<String, Value>,
    batches: u64,
    /// Batches that needed more than one attempt.
    retried_batches: u64,
    retried_events: u64,
    failed_attempts: u64,
    /// Answers that are neither 200 nor retryable: a bug.
    unexpected: Vec<String>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn client(
    id: u64,
    seed: u64,
    url: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> ClientReport {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0xA24B_AED4_963E_E407));
    spoor_server::tls::install_crypto_provider();
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let auth = basic(WRITE_KEY);
    let mut rep = ClientReport::default();
    let mut batch_no = 0u64;
    while !stop.load(Ordering::Relaxed) {
        batch_no += 1;
        let n = rng.range(50, 200);
        let events: Vec<Value> = (0..n)
            .map(|i| {
                json!({
                    "type": "track",
                    "userId": format!("user-{id}-{}", i % 7),
                    "event": "Crash Test",
                    "messageId": format!("c{id}-b{batch_no}-e{i}"),
                    "properties": {"client": id, "batch": batch_no, "i": i,
                                   "pad": "x".repeat(rng.range(0, 300) as usize)},
                })
            })
            .collect();
        let body = json!({ "batch": events }).to_string();
        let started = Instant::now();
        let mut attempts = 0u64;
        let success_at = loop {
            attempts += 1;
            let t0 = now_ms();
            let res = http
                .post(format!("{url}/v1/batch"))
                .header("authorization", &auth)
                .header("content-type", "application/json")
                .body(body.clone())
                .send();
            match res {
                Ok(r) if r.status().as_u16() == 200 => {
                    let v: Value = r.json().unwrap_or(Value::Null);
                    if v["success"] != json!(true) || v.get("rejected").is_some() {
                        rep.unexpected
                            .push(format!("batch {batch_no}: 200 with {v}"));
                    }
                    break Some(t0);
                }
                Ok(r) if r.status().as_u16() == 429 || r.status().is_server_error() => {}
                Ok(r) => {
                    let s = r.status();
                    rep.unexpected.push(format!(
                        "batch {batch_no}: {s} {}",
                        r.text().unwrap_or_default()
                    ));
                    break None;
                }
                Err(_) => {}
            }
            rep.failed_attempts += 1;
            if started.elapsed() > BATCH_DEADLINE {
                rep.unexpected.push(format!(
                    "batch {batch_no}: no 200 within {BATCH_DEADLINE:?}"
                ));
                break None;
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        rep.batches += 1;
        if attempts > 1 {
            rep.retried_batches += 1;
            rep.retried_events += n;
        }
        for e in events {
            let mid = e["messageId"].as_str().unwrap().to_owned();
            if let Some(t) = success_at {
                rep.acked.insert(mid.clone(), t);
            }
            rep.sent.insert(mid, e);
        }
        if success_at.is_some() {
            acked.fetch_add(n, Ordering::Relaxed);
        } else {
            break;
        }
    }
    rep
}

/// Writes `junk` right after the last frame of the newest `.seg` file of the log directory,
/// as a write cut short by a power loss would leave it. The end of the frames is found by
/// walking the frame headers (4-byte little-endian payload length, 40-byte header, after
/// the 8-byte segment magic) up to the end of the file or preallocated (zero) space.
fn tear_active_segment(log_dir: &Path, junk: &[u8]) {
    use std::os::unix::fs::FileExt;
    const SEGMENT_HEADER: u64 = 8;
    const FRAME_HEADER: u64 = 40;
    let mut segs: Vec<_> = std::fs::read_dir(log_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segs.sort();
    let last = segs.last().expect("a segment file");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(last)
        .unwrap();
    let file_len = f.metadata().unwrap().len();
    let mut off = SEGMENT_HEADER;
    while off + FRAME_HEADER <= file_len {
        let mut len = [0u8; 4];
        f.read_exact_at(&mut len, off).unwrap();
        let len = u32::from_le_bytes(len) as u64;
        if len == 0 || off + FRAME_HEADER + len > file_len {
            break;
        }
        off += FRAME_HEADER + len;
    }
    let mut junk = junk.to_vec();
    junk[0] |= 1; // not mistaken for unwritten (zero) space
    f.write_all_at(&junk, off).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn kill_9_under_load_keeps_every_acknowledged_event_exactly_once() {
    let seed = crash_seed("ingest");
    let mut rng = Rng(seed);
    let dirs = CrashDirs::new();
    let mut server = dirs.serve("serve-0", &[]);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let (url, stop, acked) = (server.url.clone(), stop.clone(), acked.clone());
            std::thread::spawn(move || client(id, seed, url, stop, acked))
        })
        .collect();

    let rounds = rng.range(3, 5);
    let mut torn_tails = 0;
    for round in 1..=rounds {
        let wait = rng.range(100, 700);
        std::thread::sleep(Duration::from_millis(wait));
        let before = acked.load(Ordering::Relaxed);
        server.kill9();
        // kill -9 rarely tears a write (the page cache keeps what write() copied), so every
        // other round also simulates the torn tail of a power cut: junk after the last frame.
        let torn = if rng.next() & 1 == 0 {
            let n = rng.range(1, 200) as usize;
            let junk: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            tear_active_segment(&dirs.data.join("log"), &junk);
            format!(", {n} junk bytes written after the last frame")
        } else {
            String::new()
        };
        let t = Instant::now();
        // Must come up cleanly on what the kill left (Server::start panics otherwise).
        server = dirs.serve(&format!("serve-{round}"), &[]);
        let err = server.stderr();
        if err.contains("truncating torn tail") {
            torn_tails += 1;
        }
        for line in err.lines() {
            assert!(
                !line.contains("ERROR"),
                "restart {round} logged an error:\n{err}"
            );
        }
        eprintln!(
            "round {round}/{rounds}: kill -9 after {wait} ms ({before} events acknowledged so far){torn}; \
             restarted and ready in {} ms{}",
            t.elapsed().as_millis(),
            if err.contains("truncating torn tail") { ", torn tail truncated" } else { "" }
        );
        if !torn.is_empty() {
            assert!(
                err.contains("truncating torn tail"),
                "round {round}: the appended junk was not reported as a torn tail:\n{err}"
            );
        }
    }
    // Let the clients get their retries through after the last restart, then stop.
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let reports: Vec<ClientReport> = clients.into_iter().map(|c| c.join().unwrap()).collect();

    let unexpected: Vec<&String> = reports.iter().flat_map(|r| &r.unexpected).collect();
    assert!(unexpected.is_empty(), "unexpected answers: {unexpected:#?}");
    let mut acked_at: HashMap<String, i64> = HashMap::new();
    let mut sent: HashMap<String, Value> = HashMap::new();
    for r in &reports {
        acked_at.extend(r.acked.iter().map(|(k, v)| (k.clone(), *v)));
        sent.extend(r.sent.iter().map(|(k, v)| (k.clone(), v.clone())));
    }

    let check = |server: &Server, label: &str| -> Vec<Value> {
        let events = server.export();
        // Dense seqs 1..N.
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e["seq"].as_u64(),
                Some(i as u64 + 1),
                "{label}: seqs not dense at position {i}: {e}"
            );
        }
        // No messageId twice, nothing that was not sent.
        let mut count: HashMap<&str, u32> = HashMap::new();
        for e in &events {
            let mid = e["message_id"].as_str().expect("message_id");
            *count.entry(mid).or_default() += 1;
            let orig = sent
                .get(mid)
                .unwrap_or_else(|| panic!("{label}: stored an event nobody sent: {e}"));
            assert_eq!(&e["message"], orig, "{label}: stored message differs");
        }
        let dups: Vec<_> = count.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            dups.is_empty(),
            "{label}: messageIds stored more than once (seed {seed}): {dups:?}"
        );
        // Every acknowledged event is there.
        let missing: Vec<_> = acked_at
            .keys()
            .filter(|k| !count.contains_key(k.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "{label}: {} acknowledged events missing (seed {seed}), e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        );
        let (s, v) = server.admin_get("/v1/admin/status");
        assert_eq!(s, 200, "{v}");
        assert_eq!(
            v["log"]["last_seq"].as_u64(),
            Some(events.len() as u64),
            "{v}"
        );
        events
    };

    let events = check(&server, "after the crashes");
    // Events of retried batches that an earlier, unanswered attempt had already stored: the
    // cases where the retry had to be dropped as a duplicate.
    let stored_before_retry = events
        .iter()
        .filter(|e| {
            let mid = e["message_id"].as_str().unwrap();
            let rcv = chrono::DateTime::parse_from_rfc3339(e["received_at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis();
            acked_at.get(mid).is_some_and(|&t| rcv < t - 1)
        })
        .count();

    // One more kill -9 on a quiet server, and the log reads back the same.
    server.kill9();
    server = dirs.serve("serve-final", &[]);
    let again = check(&server, "after a final restart");
    assert_eq!(again.len(), events.len());

    let sum = |f: fn(&ClientReport) -> u64| reports.iter().map(f).sum::<u64>();
    eprintln!(
        "crash test seed {seed}: {rounds} kills ({torn_tails} with a torn tail truncated); \
         {} batches, acknowledged {} events, retried {} batches / {} events ({} failed attempts), \
         {} retried events already stored by an unanswered attempt (dropped as duplicates), \
         stored {} events",
        sum(|r| r.batches),
        acked_at.len(),
        sum(|r| r.retried_batches),
        sum(|r| r.retried_events),
        sum(|r| r.failed_attempts),
        stored_before_retry,
        events.len()
    );
    assert_eq!(events.len(), acked_at.len());
}

/// Events over a small pool of people, so identities link and merge as they arrive.
fn identity_events(rng: &mut Rng, round: u64, n: u64) -> Vec<Value> {
    (0..n)
        .map(|i| {
            let user = format!("u{}", rng.range(0, 1_500));
            let anon = format!("a{}", rng.range(0, 4_000));
            let id = format!("p{round}-{i}");
            let day = rng.range(1, 28);
            let ts = format!("2026-02-{day:02}T{:02}:00:00Z", rng.range(0, 23));
            match rng.range(0, 4) {
                0 => json!({"type": "identify", "userId": user, "anonymousId": anon, "messageId": id, "timestamp": ts,
                             "traits": {"email": format!("{user}@example.com"), "score": rng.range(0, 100)}}),
                1 => json!({"type": "alias", "userId": user, "previousId": anon, "messageId": id, "timestamp": ts}),
                2 => json!({"type": "track", "anonymousId": anon, "event": "Viewed", "messageId": id, "timestamp": ts,
                             "properties": {"email": format!("u{}@example.com", rng.range(0, 1_500))}}),
                _ => json!({"type": "page", "anonymousId": anon, "name": "Home", "messageId": id, "timestamp": ts}),
            }
        })
        .collect()
}

/// The processor crash test: `kill -9` while events are being applied, restart,
/// and the derived state must equal a clean rebuild from the log — nothing applied twice,
/// nothing skipped.
#[test]
fn kill_9_during_processing_leaves_state_equal_to_a_clean_rebuild() {
    let seed = crash_seed("processing");
    let mut rng = Rng(seed);
    let dirs = CrashDirs::new();
    // Small checkpoints, so a kill lands between commits of a partly processed batch.
    let env = [
        ("SPOOR_PROCESSOR__CHECKPOINT_EVENTS", "300"),
        ("SPOOR_LOG_LEVEL", "warn"),
    ];
    let mut server = dirs.serve("p0", &env);
    let mut killed_mid_processing = 0;
    for round in 0..4u64 {
        for chunk in identity_events(&mut rng, round, 6_000).chunks(500) {
            let (s, v) = server.post("/v1/batch", &json!({ "batch": chunk }), WRITE_KEY);
            assert_eq!(s, 200, "{v}");
        }
        std::thread::sleep(Duration::from_millis(rng.range(5, 120)));
        let (_, st) = server.admin_get("/v1/admin/processor");
        if st["lag"].as_u64().unwrap_or(0) > 0 {
            killed_mid_processing += 1;
        }
        server.kill9();
        server = dirs.serve(&format!("p{}", round + 1), &env);
    }
    let (_, st) = server.admin_get("/v1/admin/processor");
    let last = st["ingested_seq"].as_u64().unwrap();
    assert_eq!(last, 24_000);
    let st = server.wait_processed(last);
    assert_eq!(st["processed_seq"].as_u64(), Some(last), "{st}");
    assert!(st["healthy"] == true, "{st}");
    // Applied changes become durable at the next checkpoint (at most checkpoint_ms later
    // when idle); compare the durable state once it has everything.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, st) = server.admin_get("/v1/admin/processor");
        if st["durable_seq"].as_u64() == Some(last) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never checkpointed: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server.kill9();
    eprintln!(
        "killed while events were still being processed in {killed_mid_processing} of 4 rounds"
    );

    let incremental = spoor_store::state::StateStore::open(&dirs.data.join("state"))
        .unwrap()
        .durable_reader()
        .unwrap()
        .dump()
        .unwrap();
    let out = common::run(
        {
            let mut c = common::spoor_cmd();
            c.args(["rebuild", "--data-dir"]).arg(&dirs.data);
            c
        },
        Duration::from_secs(120),
    );
    out.assert_ok();
    let rebuilt = spoor_store::state::StateStore::open(&dirs.data.join("state"))
        .unwrap()
        .durable_reader()
        .unwrap()
        .dump()
        .unwrap();
    let diff: Vec<(&String, &String)> = incremental
        .iter()
        .zip(&rebuilt)
        .filter(|(a, b)| a != b)
        .take(3)
        .collect();
    assert!(
        diff.is_empty() && incremental.len() == rebuilt.len(),
        "seed {seed}: state after crashes differs from a rebuild: {diff:#?}"
    );
    assert!(
        incremental.iter().any(|l| l.contains("\"merged\"")),
        "the stream should have merged profiles"
    );
}
