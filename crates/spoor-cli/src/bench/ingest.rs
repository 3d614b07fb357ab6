//! `spoor bench ingest`: realistic e-commerce batches posted over HTTP to a live server
//! (an in-process one on a temporary data directory, or `--url`), then the same events
//! pushed through parse + normalise + durable append in-process, as the reference.

use super::shop::Shop;
use anyhow::Context;
use base64::Engine;
use clap::Args;

use spoor_core::SourceId;
use spoor_server::config::{Config, Overrides};
use spoor_server::{AppState, InitSecrets};
use spoor_store::log::{EventLog, LogOptions, LogWriter, WriterOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct IngestBenchArgs {
    /// Events to send.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Distinct people the events are spread over.
    #[arg(long, default_value_t = 100_000)]
    pub people: u64,
    /// Benchmark a running server instead of an in-process one.
    #[arg(long)]
    pub url: Option<String>,
    /// Write key for --url.
    #[arg(long, env = "SPOOR_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,
    /// Skip the in-process reference run.
    #[arg(long)]
    pub no_reference: bool,
}

const BENCH_KEY: &str = "bench-write-key";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Posts one batch body to `/v1/batch`, retrying after a short pause while the server
/// answers 429; returns how many 429s it got. Any other failure ends the run.
pub(crate) async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    body: &[u8],
) -> anyhow::Result<u64> {
    let mut busy = 0;
    loop {
        let resp = client
            .post(format!("{url}/v1/batch"))
            .header("authorization", auth)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        let status = resp.status();
        let _ = resp.bytes().await;
        if status.as_u16() == 429 {
            busy += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        anyhow::ensure!(status.is_success(), "server answered {status}");
        return Ok(busy);
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub fn run(args: IngestBenchArgs) -> anyhow::Result<()> {
    let batch = args.batch.clamp(1, 2500);
    let n_batches = args.events.div_ceil(batch);
    eprintln!(
        "generating {} events in {n_batches} batches of {batch} over {} people…",
        n_batches * batch,
        args.people
    );
    let mut shop = Shop::new(now_ms() as u64, args.people);
    let now = now_ms();
    let bodies: Vec<Vec<u8>> = (0..n_batches)
        .map(|_| shop.batch_body(batch, now))
        .collect();
    let total_bytes: usize = bodies.iter().map(Vec::len).sum();
    let total_events = n_batches * batch;
    eprintln!(
        "average event size {} bytes",
        total_bytes / total_events.max(1)
    );
    let bodies = Arc::new(bodies);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (url, key, app) = match &args.url {
        Some(u) => (
            u.trim_end_matches('/').to_owned(),
            args.write_key.clone().context("--url needs --write-key")?,
            None,
        ),
        None => {
            let cfg = Config::load(
                None,
                &Overrides {
                    listen: Some("127.0.0.1:0".into()),
                    data_dir: Some(dir.path().join("server")),
                },
            )?;
            let init = InitSecrets {
                write_key: Some(BENCH_KEY.into()),
                admin_token: None,
                admin_password: None,
            };
            let (app, _) = AppState::open(cfg, Arc::new(spoor_core::SystemClock), init)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
            let url = format!("http://{}", listener.local_addr()?);
            let served = app.clone();
            rt.spawn(async move {
                let _ = spoor_server::serve(served, listener, std::future::pending()).await;
            });
            (url, BENCH_KEY.to_owned(), Some(app))
        }
    };

    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    );
    let next = Arc::new(AtomicUsize::new(0));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(n_batches)));
    let busy = Arc::new(AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..args.connections.max(1) {
            let (bodies, next, lat, busy, client, url, auth) = (
                bodies.clone(),
                next.clone(),
                latencies.clone(),
                busy.clone(),
                client.clone(),
                url.clone(),
                auth.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let t = Instant::now();
                    let b = post_batch(&client, &url, &auth, body).await?;
                    busy.fetch_add(b as usize, Ordering::Relaxed);
                    mine.push(t.elapsed());
                }
                if let Ok(mut l) = lat.lock() {
                    l.extend(mine);
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        anyhow::Ok(())
    })?;
    let elapsed = started.elapsed();
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort();
    println!(
        "HTTP ingest ({} connections, batches of {batch}, {}):",
        args.connections,
        if app.is_some() {
            "in-process server"
        } else {
            url.as_str()
        }
    );
    println!("  events        {total_events}");
    println!("  elapsed       {:.2} s", elapsed.as_secs_f64());
    println!(
        "  throughput    {:.0} events/s acknowledged durably",
        total_events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  bandwidth     {:.1} MB/s of JSON",
        total_bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    println!(
        "  latency       p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms per request",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    println!("  429 answers   {}", busy.load(Ordering::Relaxed));
    if let Some(app) = &app {
        let stored = app.reader.last_seq();
        println!(
            "  stored        {stored} events in the log ({} MB)",
            app.writer.size_bytes() / 1_000_000
        );
        anyhow::ensure!(
            stored as usize == total_events,
            "the log holds {stored} events, expected {total_events}"
        );
    }
    drop(app);
    drop(rt);

    if !args.no_reference {
        reference(
            &bodies,
            dir.path().join("reference"),
            total_events,
            total_bytes,
        )?;
    }
    Ok(())
}

/// Parse + normalise + durable append, in-process: 8 submitting threads (as many batches in
/// flight as the HTTP run has connections, so group commit works the same way).
fn reference(
    bodies: &Arc<Vec<Vec<u8>>>,
    dir: std::path::PathBuf,
    total_events: usize,
    total_bytes: usize,
) -> anyhow::Result<()> {
    let log = EventLog::open(LogOptions {
        dir,
        segment_bytes: 256 << 20,
    })?;
    let (writer, reader) = LogWriter::spawn(
        log,
        WriterOptions {
            queue_batches: 1024,
            dedupe_window: Duration::from_secs(86_400),
            dedupe_max_keys: 20_000_000,
            max_group_bytes: 16 << 20,
            on_fsync: None,
        },
        Arc::new(now_ms),
    )?;
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (bodies, next, writer) = (bodies.clone(), next.clone(), writer.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                let source = SourceId::parse("src_bench").context("source id")?;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else {
                        return Ok(());
                    };
                    let recs = super::batch_records(body, &source, chrono::Utc::now())?;
                    writer.append_blocking(recs)?;
                }
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("reference thread panicked"))??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        reader.last_seq() as usize == total_events,
        "reference log holds {} events",
        reader.last_seq()
    );
    println!("Reference, in-process parse + normalise + durable append (8 submitting threads, no HTTP, no processor):");
    println!(
        "  throughput    {:.0} events/s",
        total_events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  bandwidth     {:.1} MB/s of JSON",
        total_bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    Ok(())
}
