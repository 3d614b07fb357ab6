//! `spoor bench destinations`: how fast Spoor delivers to a local webhook receiver, and
//! how much a failing destination delays a healthy one.
//!
//! 1. Throughput: events already in the log, a destination created with `start: beginning`;
//!    time from its creation until the receiver has accepted every item — one item per
//!    request, then batched.
//! 2. Isolation: events sent at a steady rate to two healthy destinations, then again with
//!    one of them answering 503 (retrying); the delay (event acknowledged → item accepted)
//!    the other one sees, as percentiles, in both runs.
//!
//! 3./4. With `--postgres-url` / `--nats-url`: rows/s into PostgreSQL and messages/s into
//!    NATS JetStream (see [`super::sinks`]).
//!
//! The server and the receiver run in this process on 127.0.0.1; the figures include HTTP
//! on loopback, signing and JSON, and share the machine's cores.

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clap::Args;
use serde_json::{json, Value};
use spoor_server::config::{Config, Overrides};
use spoor_server::{AppState, InitSecrets};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WRITE_KEY: &str = "bench-write-key";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

#[derive(Args, Debug, Clone)]
pub struct DestinationBenchArgs {
    /// Events delivered in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    pub events: usize,
    /// Items per request in the batched run.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Events per second sent in the isolation phase.
    #[arg(long, default_value_t = 200)]
    pub rate: u64,
    /// Seconds each isolation run lasts.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Also measure a PostgreSQL sync into this database (a schema of its own, dropped).
    #[arg(long, env = "SPOOR_BENCH_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Also measure NATS JetStream publishing to this server (a stream of its own, deleted).
    #[arg(long, env = "SPOOR_BENCH_NATS_URL")]
    pub nats_url: Option<String>,
    /// Sign-ups (distinct people) in the PostgreSQL / NATS phases.
    #[arg(long, default_value_t = 20_000)]
    pub sink_events: usize,
    /// Skip the webhook phases (1 and 2).
    #[arg(long)]
    pub sinks_only: bool,
}

#[derive(Default)]
struct Recv {
    /// path → (item id or messageId, arrival) in order.
    got: HashMap<String, Vec<(String, Instant)>>,
}

type Shared = (Arc<Mutex<Recv>>, Arc<AtomicBool>);

async fn accept(
    State((recv, failing)): State<Shared>,
    UrlPath(path): UrlPath<String>,
    body: Bytes,
) -> StatusCode {
    if path == "failing" && failing.load(Ordering::Relaxed) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let now = Instant::now();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let ids: Vec<String> = match &v {
        Value::Array(a) => a.iter().map(mid).collect(),
        one => vec![mid(one)],
    };
    let mut g = recv.lock().unwrap_or_else(|e| e.into_inner());
    let e = g.got.entry(path).or_default();
    e.extend(ids.into_iter().map(|i| (i, now)));
    StatusCode::OK
}

fn mid(item: &Value) -> String {
    item["event"]["message"]["messageId"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

pub(super) struct Bench {
    url: String,
    http: reqwest::Client,
    recv: Arc<Mutex<Recv>>,
    recv_url: String,
}

impl Bench {
    pub(super) async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await?;
        let s = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(s.is_success(), "{path}: {s} {v}");
        Ok(v)
    }

    pub(super) async fn ingest(&self, events: Vec<Value>) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/v1/batch", self.url))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&json!({ "batch": events }))
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "ingest: {}", r.status());
        Ok(())
    }

    fn count(&self, path: &str) -> usize {
        let g = self.recv.lock().unwrap_or_else(|e| e.into_inner());
        g.got.get(path).map_or(0, Vec::len)
    }

    async fn create(&self, name: &str, batch: usize, start: &str) -> anyhow::Result<()> {
        self.admin(
            reqwest::Method::POST,
            "/v1/destinations",
            json!({"name": name, "type": "webhook", "start": start,
                   "subscriptions": {"events": [{}]},
                   "webhook": {"url": format!("{}/{name}", self.recv_url), "batch_size": batch},
                   "retry": {"max_attempts": 1000000, "initial_backoff_ms": 100,
                             "max_backoff_ms": 1000, "pause_after_secs": 86400}}),
        )
        .await
        .map(|_| ())
    }

    async fn wait_for(&self, path: &str, n: usize, limit: Duration) -> Option<Duration> {
        let t = Instant::now();
        while self.count(path) < n {
            if t.elapsed() > limit {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Some(t.elapsed())
    }
}

fn event(tag: &str, i: usize) -> Value {
    json!({"type": "track", "userId": format!("u{}", i % 1000), "event": "Product Viewed",
           "messageId": format!("{tag}-{i}"), "properties": {"i": i, "sku": format!("sku-{}", i % 97)}})
}

pub fn run(args: DestinationBenchArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(args))
}

async fn run_async(args: DestinationBenchArgs) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::load(
        None,
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(dir.path().to_path_buf()),
        },
    )?;
    cfg.processor.checkpoint_ms = 1000;
    let init = InitSecrets {
        write_key: Some(WRITE_KEY.into()),
        admin_token: Some(ADMIN_TOKEN.into()),
        admin_password: None,
    };
    let (app, _) = AppState::open(cfg.clone(), Arc::new(spoor_core::SystemClock), init)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spoor_server::serve(app.clone(), listener, async {
        let _ = stop_rx.await;
    }));

    let recv = Arc::new(Mutex::new(Recv::default()));
    let failing = Arc::new(AtomicBool::new(false));
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let recv_url = format!("http://{}", rl.local_addr()?);
    let router = Router::new()
        .route("/{path}", post(accept))
        .with_state((recv.clone(), failing.clone()));
    tokio::spawn(async move { axum::serve(rl, router).await });
    let b = Bench {
        url,
        http: reqwest::Client::new(),
        recv,
        recv_url,
    };

    println!(
        "in-process server and webhook receiver on 127.0.0.1, poll {} ms",
        cfg.destinations.poll_ms
    );
    if !args.sinks_only {
        webhooks(&b, &args, &failing).await?;
    }
    if args.postgres_url.is_some() || args.nats_url.is_some() {
        println!();
        super::sinks::prepare(&b, args.sink_events).await?;
    }
    if let Some(u) = &args.postgres_url {
        super::sinks::postgres(&b, u, args.sink_events, 500).await?;
    }
    if let Some(u) = &args.nats_url {
        super::sinks::nats(&b, u, args.sink_events, 100).await?;
    }
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok(())
}

/// Phases 1 and 2.
async fn webhooks(
    b: &Bench,
    args: &DestinationBenchArgs,
    failing: &AtomicBool,
) -> anyhow::Result<()> {
    println!();
    println!(
        "1. Throughput: {} events in the log, delivered from the beginning.",
        args.events
    );
    let events: Vec<Value> = (0..args.events).map(|i| event("t", i)).collect();
    for chunk in events.chunks(500) {
        b.ingest(chunk.to_vec()).await?;
    }
    for (name, batch) in [("single", 1), ("batched", args.batch_size)] {
        let t = Instant::now();
        b.create(name, batch, "beginning").await?;
        match b
            .wait_for(name, args.events, Duration::from_secs(600))
            .await
        {
            Some(_) => {
                let s = t.elapsed().as_secs_f64();
                println!(
                    "   {name:<8} batch_size {batch:>4}: {:>8.0} deliveries/s ({} items in {s:.2} s, {} requests)",
                    args.events as f64 / s,
                    args.events,
                    args.events.div_ceil(batch)
                );
            }
            None => println!("   {name}: not finished in 600 s ({} items)", b.count(name)),
        }
        b.admin(
            reqwest::Method::DELETE,
            &format!("/v1/destinations/{name}"),
            json!({}),
        )
        .await?;
    }

    println!();
    println!(
        "2. Isolation: {} events/s for {} s to `healthy` and `failing`; delay = acknowledged → accepted by `healthy`.",
        args.rate, args.seconds
    );
    b.create("healthy", 1, "now").await?;
    b.create("failing", 1, "now").await?;
    for (run, fail) in [("both healthy", false), ("other failing (503)", true)] {
        failing.store(fail, Ordering::Relaxed);
        let tag = if fail { "f" } else { "h" };
        let total = (args.rate * args.seconds) as usize;
        let start = Instant::now();
        let mut sent_at: HashMap<String, Instant> = HashMap::new();
        let per_tick = (args.rate / 20).max(1) as usize;
        let mut i = 0;
        while i < total {
            let n = per_tick.min(total - i);
            let batch: Vec<Value> = (i..i + n).map(|k| event(tag, k)).collect();
            b.ingest(batch).await?;
            let now = Instant::now();
            for k in i..i + n {
                sent_at.insert(format!("{tag}-{k}"), now);
            }
            i += n;
            let due = start + Duration::from_secs_f64(i as f64 / args.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let before = {
            let g = b.recv.lock().unwrap_or_else(|e| e.into_inner());
            g.got
                .get("healthy")
                .map_or(0, |v| v.iter().filter(|(m, _)| !m.starts_with(tag)).count())
        };
        b.wait_for("healthy", before + total, Duration::from_secs(120))
            .await;
        let mut delays: Vec<f64> = {
            let g = b.recv.lock().unwrap_or_else(|e| e.into_inner());
            g.got
                .get("healthy")
                .map(|v| {
                    v.iter()
                        .filter_map(|(m, at)| {
                            sent_at
                                .get(m)
                                .map(|s| at.duration_since(*s).as_secs_f64() * 1000.0)
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        delays.sort_by(f64::total_cmp);
        let pct = |p: f64| {
            delays
                .get(((delays.len() as f64 - 1.0) * p) as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        let st = b
            .admin(
                reqwest::Method::GET,
                "/v1/destinations/failing",
                json!(null),
            )
            .await;
        let retries = st
            .as_ref()
            .map(|v| v["stats"]["retries"].clone())
            .unwrap_or_default();
        println!(
            "   {run:<20}: healthy delay p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} items; `failing` retries so far: {retries}",
            pct(0.5),
            pct(0.99),
            delays.last().copied().unwrap_or(f64::NAN),
            delays.len()
        );
    }
    Ok(())
}
