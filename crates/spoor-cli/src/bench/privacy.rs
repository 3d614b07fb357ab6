//! `spoor bench privacy`: what privacy costs.
//!
//! A server in this process (loopback only). Measures: the processor with and without a
//! consent object on every event (the worst case: a consent platform repeating it), the
//! PII rewrite at ingest per event, the Consent API's PUT (append + wait until applied), and
//! an access export of one person with `--events` events, streamed over HTTP. Prints; the
//! only checks are the counts that make the figures meaningful.

use anyhow::{ensure, Context};
use clap::Args;
use serde_json::{json, Value};
use spoor_core::ids::SourceId;
use spoor_server::privacy::pii::{Pii, RedactAction, RedactRule};
use spoor_server::privacy::PrivacyConfig;
use spoor_server::AppState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct PrivacyBenchArgs {
    /// Events per processor run, and of the exported person.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
}

const TOKEN: &str = "bench-privacy-admin-token-0123456789";

fn batch(user: impl Fn(u64) -> String, range: std::ops::Range<u64>, consent: bool) -> Vec<Value> {
    range
        .map(|i| {
            let mut e = json!({"type": "track", "userId": user(i), "event": "Viewed",
                               "messageId": format!("{}-{i}", user(i)),
                               "properties": {"n": i, "card_number": "4111-1111-1111-1111"},
                               "context": {"ip": "198.51.100.23"}});
            if consent {
                e["context"]["consent"] = json!({"categoryPreferences":
                    {"Advertising": i % 7 != 0, "Analytics": true, "Functional": true}});
            }
            e
        })
        .collect()
}

/// Appends events straight to the log (as ingest would) and waits until all are processed.
fn process(app: &AppState, events: Vec<Value>) -> anyhow::Result<f64> {
    let source = SourceId::parse("src_bench").context("source id")?;
    let started = Instant::now();
    for chunk in events.chunks(1000) {
        let body = serde_json::to_vec(&json!({ "batch": chunk }))?;
        let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
        app.writer.append_blocking(recs)?;
    }
    let last = app.reader.last_seq();
    let deadline = Instant::now() + Duration::from_secs(600);
    while app.processor.status.processed_seq.load(Ordering::Acquire) < last {
        ensure!(Instant::now() < deadline, "not processed in 10 min");
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(started.elapsed().as_secs_f64())
}

pub fn run(args: PrivacyBenchArgs) -> anyhow::Result<()> {
    let (_tmp, app) = super::open_app(TOKEN)?;
    let n = args.events;
    println!("spoor bench privacy: {n} events per run");

    // 1. The processor, 1,000 people, with and without a consent object on every event.
    let people = |i: u64| format!("p{}", i % 1000);
    let plain = process(&app, batch(people, 0..n, false))?;
    let people2 = |i: u64| format!("q{}", i % 1000);
    let with = process(&app, batch(people2, 0..n, true))?;
    println!(
        "  processor (log → state)  without consent objects {:.0} events/s, with one on every event {:.0} events/s",
        n as f64 / plain,
        n as f64 / with
    );

    // 2. PII rewrite of stored envelopes (IP truncation + one drop + one hash rule).
    let source = SourceId::parse("src_bench").context("source id")?;
    let body =
        serde_json::to_vec(&json!({ "batch": batch(|i| format!("r{i}"), 0..10_000, true) }))?;
    let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
    let pii = Pii::new(&PrivacyConfig {
        anonymize_ip: vec!["*".into()],
        redact: vec![
            RedactRule {
                path: "properties.card_number".into(),
                action: RedactAction::Drop,
                sources: vec![],
            },
            RedactRule {
                path: "properties.n".into(),
                action: RedactAction::Hash,
                sources: vec![],
            },
        ],
        ..PrivacyConfig::default()
    });
    let started = Instant::now();
    let mut bytes = 0;
    for r in &recs {
        bytes += pii
            .apply("src_bench", r.payload.clone())
            .map_err(|e| anyhow::anyhow!(e))?
            .len();
    }
    let per = started.elapsed().as_secs_f64() / recs.len() as f64;
    println!(
        "  PII rewrite at ingest    {:.1} µs per event ({:.0} events/s on one core; {} bytes avg)",
        per * 1e6,
        1.0 / per,
        bytes / recs.len()
    );

    // 3. Over HTTP: the Consent API and an access export.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = super::Served::start(&rt, &app)?;
    let url = served.url.clone();
    let http = reqwest::Client::new();
    let mut lat = Vec::new();
    for i in 0..200 {
        let value = if i % 2 == 0 { "denied" } else { "granted" };
        let started = Instant::now();
        let v: Value = rt.block_on(async {
            http.put(format!("{url}/v1/profiles/user_id:p{i}/consent"))
                .bearer_auth(TOKEN)
                .json(&json!({"purposes": {"advertising": value}}))
                .send()
                .await?
                .json()
                .await
        })?;
        ensure!(v["applied"] == true, "consent not applied: {v}");
        lat.push(started.elapsed());
    }
    lat.sort();
    println!(
        "  Consent API PUT          p50 {:.1} ms, p99 {:.1} ms (append, fsync, applied by the processor)",
        lat[lat.len() / 2].as_secs_f64() * 1e3,
        lat[lat.len() * 99 / 100].as_secs_f64() * 1e3
    );

    process(&app, batch(|_| "subject".into(), 0..n, true))?;
    let started = Instant::now();
    let (bytes, events) = rt.block_on(async {
        let mut resp = http
            .get(format!("{url}/v1/profiles/user_id:subject/privacy-export"))
            .bearer_auth(TOKEN)
            .send()
            .await?;
        let mut body = Vec::new();
        while let Some(c) = resp.chunk().await? {
            body.extend_from_slice(&c);
        }
        let doc: Value = serde_json::from_slice(&body)?;
        anyhow::Ok((body.len(), doc["events"].as_array().map_or(0, Vec::len)))
    })?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(
        events as u64 == n,
        "the export holds {events} of {n} events"
    );
    println!(
        "  access export            {events} events, {:.1} MB in {secs:.2} s ({:.0} events/s)",
        bytes as f64 / 1e6,
        events as f64 / secs
    );
    served.stop(&rt);
    app.processor.stop();
    Ok(())
}
