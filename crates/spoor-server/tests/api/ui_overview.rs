//! The overview's incremental per-minute counts against a brute-force recount of the log:
//! time moves on in random steps between batches (minutes leave the hour), and after every
//! batch the counts the page would show equal those recounted from every logged event.

use crate::common::TestServer;
use serde_json::{json, Value};
use spoor_core::{Clock, FixedClock};
use std::collections::HashMap;
use std::sync::Arc;

const MINUTE_MS: i64 = 60_000;

struct Recount {
    per_minute: Vec<u64>,
    by_type: HashMap<String, u64>,
    utm_source: HashMap<String, u64>,
    events: u64,
}

/// Every logged event received in the 60 minutes up to `now_ms`, counted from scratch.
fn recount(srv: &TestServer, now_ms: i64) -> Recount {
    let oldest = now_ms.div_euclid(MINUTE_MS) - 59;
    let mut r = Recount {
        per_minute: vec![0; 60],
        by_type: HashMap::new(),
        utm_source: HashMap::new(),
        events: 0,
    };
    for e in srv.app.reader.read_from(1, 1_000_000).unwrap() {
        let minute = e.received_ms.div_euclid(MINUTE_MS);
        if minute < oldest {
            continue;
        }
        r.per_minute[(minute - oldest) as usize] += 1;
        r.events += 1;
        let v: Value = serde_json::from_slice(&e.payload).unwrap();
        *r.by_type
            .entry(v["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
        if let Some(s) = v["utm"]["source"].as_str() {
            *r.utm_source.entry(s.to_owned()).or_default() += 1;
        }
    }
    r
}

#[tokio::test]
async fn the_overview_counts_equal_a_recount_of_the_log_as_time_moves() {
    let clock = Arc::new(FixedClock::new(chrono::Utc::now()));
    let srv = TestServer::start_clocked(tempfile::tempdir().unwrap(), |_| {}, clock.clone()).await;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let mut msg = 0;
    let mut utm_seen = false;
    for round in 0..12 {
        // Steps of 0–24 minutes: some batches share a minute, some push others out of the hour.
        clock.advance(chrono::Duration::seconds((next(25 * 60)) as i64));
        let mut batch = Vec::new();
        for _ in 0..(1 + next(40)) {
            msg += 1;
            let kind = ["track", "page", "identify"][next(3) as usize];
            let mut e = json!({"type": kind, "userId": format!("u{}", next(20)),
                               "messageId": format!("m{msg}"), "event": "Viewed"});
            if next(2) == 0 {
                let src = ["newsletter", "google", "meta"][next(3) as usize];
                e["context"] = json!({"campaign": {"source": src, "medium": "email"}});
            }
            batch.push(e);
        }
        let (s, v) = srv.post("/v1/batch", &json!({ "batch": batch })).await;
        assert_eq!(s, 200, "{v}");
        // Some rounds are not looked at: the next view folds in several batches at once.
        if round % 3 == 1 {
            continue;
        }
        let now = clock.now().timestamp_millis();
        let got = srv.app.overview.hour(&srv.app, now).unwrap();
        let want = recount(&srv, now);
        assert_eq!(got.per_minute, want.per_minute, "round {round}");
        assert_eq!(got.total.events, want.events, "round {round}");
        assert_eq!(got.total.parsed, want.events, "round {round}");
        assert_eq!(got.total.by_type, want.by_type, "round {round}");
        assert_eq!(got.total.utm_source, want.utm_source, "round {round}");
        assert_eq!(got.counted_since_ms, None);
        utm_seen |= !want.utm_source.is_empty();
    }
    assert!(
        utm_seen,
        "no UTM source was ever counted: the check above proved nothing"
    );
}
