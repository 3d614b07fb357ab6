//! `spoor bench export`: how fast an audience leaves Spoor as a file.
//!
//! A live server in this process (loopback only) with `--people` profiles, each with a
//! user id, an e-mail, a phone and a few traits, all in one audience. Then, through HTTP
//! exactly as a client would: a full CSV export (hashed, with traits), a full NDJSON one,
//! and after a tenth of the people leave, a delta from the full export's cursor. Prints rows
//! per second and bytes; it asserts nothing beyond the row counts that make the figures
//! meaningful. Traits cost a profile read per member, so exports with and without them are
//! measured apart.

use anyhow::{ensure, Context};
use clap::Args;
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use spoor_core::ids::SourceId;

use spoor_server::AppState;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ExportBenchArgs {
    /// Members of the exported audience.
    #[arg(long, default_value_t = 200_000)]
    pub people: u64,
}

const TOKEN: &str = "bench-export-admin-token-0123456789";

pub fn run(args: ExportBenchArgs) -> anyhow::Result<()> {
    let (_tmp, app) = super::open_app(TOKEN)?;
    app.defs
        .update(|d| {
            let rule = parse(r#"trait plan = "pro""#).map_err(|e| e.to_string())?;
            d.audiences.insert(
                "pros".into(),
                AudienceDefinition {
                    name: "pros".into(),
                    description: String::new(),
                    rule,
                    created_ms: 0,
                    updated_ms: 0,
                    revision: 1,
                },
            );
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let n = args.people;
    println!("spoor bench export: an audience of {n} profiles (user id, e-mail, phone, traits), exported over HTTP on loopback");

    let started = Instant::now();
    append(&app, 0..n, "pro")?;
    wait_size(&app, n)?;
    println!(
        "  setup                   {n} identifies ingested and processed in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = super::Served::start(&rt, &app)?;
    let url = served.url.clone();

    let http = reqwest::Client::new();
    let path = format!("{url}/v1/audiences/pros/export");
    let full = rt.block_on(fetch(&http, &path, "?traits=first_name,country"))?;
    ensure!(
        full.lines == n + 1,
        "CSV: {} lines for {n} members",
        full.lines
    );
    full.print("full CSV (hashed, 2 traits)", n);
    let nd = rt.block_on(fetch(
        &http,
        &path,
        "?format=ndjson&traits=first_name,country",
    ))?;
    ensure!(nd.lines == n, "NDJSON: {} lines for {n} members", nd.lines);
    nd.print("full NDJSON", n);
    // Without traits no profile is read: identifiers and hashing alone.
    let bare = rt.block_on(fetch(&http, &path, ""))?;
    bare.print("full CSV (hashed, no traits)", n);
    let plain = rt.block_on(fetch(&http, &path, "?hashed=false"))?;
    plain.print("full CSV (plain, no traits)", n);

    let leaving = n / 10;
    append(&app, 0..leaving, "free")?;
    wait_size(&app, n - leaving)?;
    let delta = rt.block_on(fetch(
        &http,
        &path,
        &format!("?since={}", full.cursor.context("no cursor")?),
    ))?;
    ensure!(delta.lines == leaving + 1, "delta: {} lines", delta.lines);
    delta.print("delta CSV (a tenth left)", leaving);

    served.stop(&rt);
    app.processor.stop();
    Ok(())
}

struct Fetched {
    lines: u64,
    bytes: u64,
    secs: f64,
    cursor: Option<u64>,
}

impl Fetched {
    fn print(&self, what: &str, rows: u64) {
        println!(
            "  {what:<30} {rows} rows in {:.2} s = {:.0} rows/s, {:.1} MB ({:.1} MB/s)",
            self.secs,
            rows as f64 / self.secs,
            self.bytes as f64 / 1e6,
            self.bytes as f64 / 1e6 / self.secs
        );
    }
}

/// Streams one export to nowhere, counting.
async fn fetch(http: &reqwest::Client, path: &str, query: &str) -> anyhow::Result<Fetched> {
    let started = Instant::now();
    let mut resp = http
        .get(format!("{path}{query}"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    ensure!(resp.status().is_success(), "{}", resp.status());
    let cursor = resp
        .headers()
        .get("spoor-next-cursor")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = resp.chunk().await? {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    Ok(Fetched {
        lines,
        bytes,
        secs: started.elapsed().as_secs_f64(),
        cursor,
    })
}

/// Appends an identify for each person in `people` with the given plan.
fn append(app: &AppState, people: std::ops::Range<u64>, plan: &str) -> anyhow::Result<()> {
    let source = SourceId::parse("src_bench").context("source id")?;
    let ids: Vec<u64> = people.collect();
    for chunk in ids.chunks(500) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("{plan}-{i}"),
                   "traits": {"plan": plan, "email": format!("Person.{i}@Example.com"),
                              "phone": format!("+31 6 {:08}", i % 100_000_000),
                              "first_name": format!("Name {i}"), "country": "NL"}})
            })
            .collect();
        let body = serde_json::to_vec(&json!({ "batch": batch }))?;
        let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
        app.writer.append_blocking(recs)?;
    }
    Ok(())
}

/// Waits (10 min at most) until the audience has `n` members.
fn wait_size(app: &AppState, n: u64) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let r = app.state.reader()?;
    while r.audience_size("pros")? != n {
        ensure!(
            Instant::now() < deadline,
            "the audience never reached {n} members"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}
