//! `spoor bench e2e`: the whole pipeline on one machine — HTTP ingest, the processor
//! (identity + profile update) and Profile API lookups at the same time — against an
//! in-process server on a temporary data directory.
//!
//! 1. Preload: one `identify` per person (userId, anonymousId, email, a few traits).
//! 2. Steady state: realistic shop traffic ([`Shop`]) over the same people, while
//! 3. a second client looks profiles up at a fixed, open-loop rate.
//! 4. The processor alone on the same log (`spoor rebuild`), as the reference.

use super::shop::{Rng, Shop};
use base64::Engine;
use clap::Args;
use spoor_server::config::{Config, Overrides};
use spoor_server::{AppState, InitSecrets};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct E2eArgs {
    /// Distinct people (preloaded with one identify each).
    #[arg(long, default_value_t = 1_000_000)]
    pub people: u64,
    /// Shop events sent in the steady-state phase.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Profile API lookups per second (open loop) during the steady state and the reference.
    #[arg(long, default_value_t = 5_000)]
    pub lookup_rate: u64,
    /// Seconds of lookups with no ingest running (the latency reference).
    #[arg(long, default_value_t = 5)]
    pub lookup_secs: u64,
    /// Tasks pacing the lookups (each sends every n-th scheduled request).
    #[arg(long, default_value_t = 8)]
    pub lookup_tasks: usize,
    /// Concurrent HTTP connections posting batches.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Events per batch request.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Cap the steady-state ingest at this many events/s (0: as fast as the server takes them).
    #[arg(long, default_value_t = 0)]
    pub ingest_rate: u64,
    /// Skip the preload (the shop traffic then creates its people itself).
    #[arg(long)]
    pub skip_preload: bool,
    /// Skip the processor-alone reference (rebuild).
    #[arg(long)]
    pub skip_rebuild: bool,
    /// A TOML config file for the in-process server (e.g. `[processor]` settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep the data directory here instead of a temporary one (must not exist or be empty).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

const WRITE_KEY: &str = "bench-write-key";
const ADMIN_TOKEN: &str = "bench-admin-token-e2e-0000";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The anonymous id [`Shop`] gives person `i`.
fn anon_of(person: u64) -> String {
    format!("anon-{:016x}", person.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// `/v1/batch` bodies of one identify per person in `0..people`.
fn preload_bodies(people: u64, batch: usize, now: i64, run: i64) -> Vec<Vec<u8>> {
    const CITIES: &[&str] = &["Utrecht", "Amsterdam", "Berlin", "Paris", "Lisbon", "Oslo"];
    const PLANS: &[&str] = &["free", "member", "gold"];
    let sent = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ts = sent.clone();
    let mut rng = Rng::new(run as u64 ^ 0x5eed);
    let mut out = Vec::new();
    let mut person = 0u64;
    while person < people {
        let mut body = String::with_capacity(batch * 320);
        body.push_str("{\"batch\":[");
        let end = (person + batch as u64).min(people);
        for i in person..end {
            if i > person {
                body.push(',');
            }
            let city = rng.pick(CITIES);
            let plan = rng.pick(PLANS);
            body.push_str(&format!(
                "{{\"type\":\"identify\",\"userId\":\"user-{i}\",\"anonymousId\":\"{}\",\
                 \"traits\":{{\"email\":\"user-{i}@example.com\",\"first_name\":\"Sam\",\
                 \"plan\":\"{plan}\",\"city\":\"{city}\",\"signup_rank\":{i}}},\
                 \"context\":{{\"library\":{{\"name\":\"analytics-node\",\"version\":\"2.1.0\"}}}},\
                 \"messageId\":\"pre-{run}-{i}\",\"timestamp\":\"{ts}\"}}",
                anon_of(i)
            ));
        }
        body.push_str(&format!("],\"sentAt\":\"{sent}\"}}"));
        out.push(body.into_bytes());
        person = end;
    }
    out
}

/// Posts every body over `connections` connections (optionally paced to `rate` events/s);
/// returns when all are acknowledged.
async fn post_all(
    client: reqwest::Client,
    url: String,
    bodies: Arc<Vec<Vec<u8>>>,
    events_per_body: usize,
    connections: usize,
    rate: u64,
) -> anyhow::Result<u64> {
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{WRITE_KEY}:"))
    );
    let next = Arc::new(AtomicUsize::new(0));
    let busy = Arc::new(AtomicU64::new(0));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (client, url, auth, bodies, next, busy) = (
            client.clone(),
            url.clone(),
            auth.clone(),
            bodies.clone(),
            next.clone(),
            busy.clone(),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(body) = bodies.get(i) else { break };
                if rate > 0 {
                    let at = Duration::from_secs_f64((i * events_per_body) as f64 / rate as f64);
                    tokio::time::sleep_until(start + at).await;
                }
                let b = super::ingest::post_batch(&client, &url, &auth, body).await?;
                busy.fetch_add(b, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(busy.load(Ordering::Relaxed))
}

/// What one lookup run measured.
#[derive(Default)]
struct LookupStats {
    /// From sending the request to the complete response.
    latency: Vec<Duration>,
    /// How late each request was sent relative to its schedule (client pacing check).
    lateness: Vec<Duration>,
    ok: u64,
    not_found: u64,
    errors: u64,
    elapsed: Duration,
    /// The server's own timing of the same lookups (`/metrics`), when it could be read.
    server: Option<ServerTimes>,
}

/// The route every lookup of this bench takes, as `/metrics` labels it.
const LOOKUP_ROUTE: &str = "/v1/profiles/{pref}";

/// The server's histogram of lookup durations (`spoor_http_request_duration_seconds` for
/// [`LOOKUP_ROUTE`]): cumulative counts per bucket upper bound in seconds, `+Inf` last.
#[derive(Debug, Clone, Default)]
struct ServerTimes {
    buckets: Vec<(f64, u64)>,
}

impl ServerTimes {
    /// Reads the histogram from the server's `/metrics`.
    async fn read(client: &reqwest::Client, url: &str) -> anyhow::Result<Self> {
        let text = client
            .get(format!("{url}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        Ok(Self::parse(&text))
    }

    fn parse(text: &str) -> Self {
        let route = format!("route=\"{LOOKUP_ROUTE}\"");
        let buckets = text
            .lines()
            .filter(|l| {
                l.starts_with("spoor_http_request_duration_seconds_bucket{") && l.contains(&route)
            })
            .filter_map(|l| {
                let le = l.split("le=\"").nth(1)?.split('"').next()?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                let n = l.rsplit(' ').next()?.parse().ok()?;
                Some((le, n))
            })
            .collect();
        Self { buckets }
    }

    /// The counts observed between `before` and `self`.
    fn since(&self, before: &ServerTimes) -> ServerTimes {
        let buckets = self
            .buckets
            .iter()
            .map(|&(le, n)| {
                let was = before.buckets.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
                (le, n.saturating_sub(was))
            })
            .collect();
        ServerTimes { buckets }
    }

    /// The upper bound (s) of the bucket holding the `p` quantile.
    fn quantile(&self, p: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total == 0 {
            return None;
        }
        let want = (p * total as f64).ceil() as u64;
        self.buckets.iter().find(|b| b.1 >= want).map(|b| b.0)
    }

    fn count(&self) -> u64 {
        self.buckets.last().map_or(0, |b| b.1)
    }
}

impl LookupStats {
    fn print(&mut self, title: &str) {
        self.latency.sort_unstable();
        self.lateness.sort_unstable();
        let n = self.latency.len();
        println!("{title}");
        println!(
            "  lookups       {n} ({} found, {} not found, {} errors) in {:.1} s = {:.0}/s achieved",
            self.ok,
            self.not_found,
            self.errors,
            self.elapsed.as_secs_f64(),
            n as f64 / self.elapsed.as_secs_f64().max(1e-9)
        );
        println!(
            "  latency       p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(percentile(&self.latency, 0.50)),
            ms(percentile(&self.latency, 0.99)),
            ms(percentile(&self.latency, 0.999)),
            ms(self.latency.last().copied().unwrap_or_default()),
        );
        println!(
            "  send delay    p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms (sent vs scheduled: tokio timers tick at 1 ms; at most {MAX_INFLIGHT} in flight)",
            ms(percentile(&self.lateness, 0.50)),
            ms(percentile(&self.lateness, 0.99)),
            ms(self.lateness.last().copied().unwrap_or_default()),
        );
        if let Some(srv) = &self.server {
            let q = |p: f64| match srv.quantile(p) {
                Some(s) if s.is_finite() => format!("<= {:.3} ms", s * 1e3),
                Some(_) => "above the largest bucket".to_owned(),
                None => "-".to_owned(),
            };
            println!(
                "  server side   p50 {}  p99 {}  p99.9 {} ({} lookups; from /metrics: routing to response head, audit record included — the rest of the latency is queueing for a thread, the network and the client)",
                q(0.50),
                q(0.99),
                q(0.999),
                srv.count()
            );
        }
    }
}

/// Lookups in flight at most (beyond that the server is not keeping up and the client would
/// only exhaust file descriptors); a request waiting for a slot shows as send delay.
const MAX_INFLIGHT: usize = 512;

/// Open-loop lookups: request k is scheduled at `k / rate` seconds and sent then, whether or
/// not earlier ones were answered (each is its own task). Runs until `stop` is set or
/// `max` has passed.
async fn lookups(
    url: String,
    people: u64,
    rate: u64,
    pacers: usize,
    stop: Arc<AtomicBool>,
    max: Option<Duration>,
) -> anyhow::Result<LookupStats> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let stats = Arc::new(Mutex::new(LookupStats::default()));
    let server_before = ServerTimes::read(&client, &url).await.ok();
    let start = tokio::time::Instant::now();
    let rate = rate.max(1);
    let pacers = pacers.max(1);
    let mut tasks = Vec::new();
    for j in 0..pacers {
        let (client, url, stats, stop) = (client.clone(), url.clone(), stats.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(0x1234_5678 + j as u64);
            let mut inflight = Vec::new();
            let mut k = j as u64;
            let per_pacer = Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT / pacers + 1));
            loop {
                let at = Duration::from_secs_f64(k as f64 / rate as f64);
                if stop.load(Ordering::Relaxed) || max.is_some_and(|m| at >= m) {
                    break;
                }
                let due = start + at;
                tokio::time::sleep_until(due).await;
                let person = rng.below(people.max(1));
                let Ok(permit) = per_pacer.clone().acquire_owned().await else {
                    break;
                };
                let (client, url, stats) = (client.clone(), url.clone(), stats.clone());
                inflight.push(tokio::spawn(async move {
                    let _permit = permit;
                    let sent = tokio::time::Instant::now();
                    let late = sent.saturating_duration_since(due);
                    let r = client
                        .get(format!("{url}/v1/profiles/user_id:user-{person}"))
                        .header("authorization", format!("Bearer {ADMIN_TOKEN}"))
                        .send()
                        .await;
                    let status = match r {
                        Ok(resp) => {
                            let s = resp.status().as_u16();
                            match resp.bytes().await {
                                Ok(_) => s,
                                Err(_) => 0,
                            }
                        }
                        Err(_) => 0,
                    };
                    let took = sent.elapsed();
                    if let Ok(mut st) = stats.lock() {
                        st.latency.push(took);
                        st.lateness.push(late);
                        match status {
                            200 => st.ok += 1,
                            404 => st.not_found += 1,
                            _ => st.errors += 1,
                        }
                    }
                }));
                if inflight.len() >= 1024 {
                    inflight.retain(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
                }
                k += pacers as u64;
            }
            for t in inflight {
                let _ = t.await;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let mut out = std::mem::take(&mut *stats.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    out.elapsed = start.elapsed();
    if let (Some(before), Ok(after)) = (server_before, ServerTimes::read(&client, &url).await) {
        out.server = Some(after.since(&before));
    }
    Ok(out)
}

/// One progress line: events since `base` ingested and processed, and the lag.
fn progress_line(app: &AppState, base: u64, started: Instant) {
    let ingested = app.reader.last_seq();
    let processed = app.processor.status.processed_seq.load(Ordering::Acquire);
    println!(
        "  {:>5.1} s  ingested {:>9}  processed {:>9}  lag {:>8}",
        started.elapsed().as_secs_f64(),
        ingested.saturating_sub(base),
        processed.saturating_sub(base),
        ingested.saturating_sub(processed)
    );
}

/// Waits until the processor has committed `seq`; with `lines`, prints a progress line
/// each time that instant passes (then moves it on by a second).
fn wait_processed(
    app: &AppState,
    seq: u64,
    base: u64,
    started: Instant,
    mut lines: Option<&mut Instant>,
) -> anyhow::Result<Instant> {
    let status = &app.processor.status;
    loop {
        anyhow::ensure!(
            !status.failed.load(Ordering::Relaxed),
            "the processor stopped (see the log)"
        );
        if status.processed_seq.load(Ordering::Acquire) >= seq {
            return Ok(Instant::now());
        }
        if let Some(next) = lines.as_deref_mut() {
            if Instant::now() >= *next {
                progress_line(app, base, started);
                *next += Duration::from_secs(1);
            }
        }
        // 10 ms: a fine enough end for runs of seconds, and few wake-ups beside the lookups.
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run(args: E2eArgs) -> anyhow::Result<()> {
    // The server's warnings and errors (e.g. why the processor stopped) go to stderr.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let batch = args.batch.clamp(1, 2500);
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("server"));
    let cfg = Config::load(
        args.config.as_deref(),
        &Overrides {
            listen: Some("127.0.0.1:0".into()),
            data_dir: Some(data_dir.clone()),
        },
    )?;
    let run_id = now_ms();
    let now = now_ms();

    eprintln!("generating events…");
    let gen_started = Instant::now();
    let preload = if args.skip_preload {
        Vec::new()
    } else {
        preload_bodies(args.people, batch, now - 60_000, run_id)
    };
    let preload_events = if args.skip_preload {
        0
    } else {
        args.people as usize
    };
    let mut shop = Shop::new(run_id as u64, args.people);
    let n_batches = args.events.div_ceil(batch);
    let shop_bodies: Vec<Vec<u8>> = (0..n_batches)
        .map(|i| shop.batch_body(batch.min(args.events - i * batch), now))
        .collect();
    let shop_events = args.events;
    let shop_bytes: usize = shop_bodies.iter().map(Vec::len).sum();
    eprintln!(
        "generated {preload_events} identify + {shop_events} shop events (avg {} B) in {:.1} s",
        shop_bytes / shop_events.max(1),
        gen_started.elapsed().as_secs_f64()
    );
    let preload = Arc::new(preload);
    let shop_bodies = Arc::new(shop_bodies);

    // The server's threads ask for the slice `spoor serve` gives them; so does the lookup
    // client, which stands for a client on another machine (its wake-ups are part of the
    // latency it measures).
    let slice = cfg.server.thread_slice_us;
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || spoor_server::sched::request_slice(slice))
        .thread_name("bench-server")
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .thread_name("bench-ingest")
        .build()?;
    let lookup_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(move || spoor_server::sched::request_slice(slice))
        .thread_name("bench-lookup")
        .build()?;
    let init = InitSecrets {
        write_key: Some(WRITE_KEY.into()),
        admin_token: Some(ADMIN_TOKEN.into()),
        admin_password: None,
    };
    let (app, _) = AppState::open(cfg.clone(), Arc::new(spoor_core::SystemClock), init)
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let listener = server_rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
    let served = app.clone();
    let server = server_rt.spawn(async move {
        let _ = spoor_server::serve(served, listener, async {
            let _ = shutdown_rx.await;
        })
        .await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections.max(1))
        .build()?;
    println!(
        "in-process server, {} connections posting batches of {batch}; processor: checkpoint every {} events / {} ms, cache {} entries",
        args.connections,
        cfg.processor.checkpoint_events,
        cfg.processor.checkpoint_ms,
        cfg.processor.cache_entries
    );

    // 1. Preload.
    if !args.skip_preload {
        println!();
        println!(
            "1. Preload: {} people, one identify each (userId, anonymousId, email, 4 traits).",
            args.people
        );
        println!("   Method: batches posted over HTTP; ingest = until the last 200; processed = until processed_seq == last seq.");
        let started = Instant::now();
        let busy = client_rt.block_on(post_all(
            client.clone(),
            url.clone(),
            preload.clone(),
            batch,
            args.connections,
            0,
        ))?;
        let ingested_at = Instant::now();
        let last = app.reader.last_seq();
        let processed_then = app.processor.status.processed_seq.load(Ordering::Acquire);
        let done = wait_processed(&app, last, 0, started, None)?;
        let ingest_s = ingested_at.duration_since(started).as_secs_f64();
        let e2e_s = done.duration_since(started).as_secs_f64();
        let tail_s = done.duration_since(ingested_at).as_secs_f64();
        let n = preload_events as f64;
        println!("  events        {preload_events} (log holds {last}; {busy} answers were 429)");
        println!(
            "  ingest        {:.0} events/s ({ingest_s:.2} s to acknowledge all durably)",
            n / ingest_s
        );
        println!(
            "  processing    {:.0} events/s over the whole run; {} of {preload_events} were processed when ingest finished, the rest drained at {:.0} events/s",
            n / e2e_s,
            processed_then,
            (last - processed_then) as f64 / tail_s.max(1e-9)
        );
        println!(
            "  end-to-end    {:.0} events/s ({e2e_s:.2} s from the first request until all processed)",
            n / e2e_s
        );
        println!(
            "  profiles      {} live",
            app.processor.status.live_profiles.load(Ordering::Relaxed)
        );
    }

    // 3a. Lookups with nothing else running: the reference.
    println!();
    println!(
        "3a. Profile API with no ingest running: GET /v1/profiles/user_id:user-<random> at {}/s for {} s.",
        args.lookup_rate, args.lookup_secs
    );
    println!("   Method: open loop (request k sent at k/rate s by {} pacing tasks, each request its own task, never waiting for answers); latency = send to full body.", args.lookup_tasks);
    let mut reference = lookup_rt.block_on(lookups(
        url.clone(),
        args.people,
        args.lookup_rate,
        args.lookup_tasks,
        Arc::new(AtomicBool::new(false)),
        Some(Duration::from_secs(args.lookup_secs)),
    ))?;
    reference.print("  (no ingest)");

    // 2 + 3b. Steady state with lookups.
    println!();
    println!(
        "2. Steady state: {shop_events} shop events (page, product viewed/added, identify, order; avg {} B) over {} people{}.",
        shop_bytes / shop_events.max(1),
        args.people,
        if args.ingest_rate > 0 {
            format!(", paced at {} events/s", args.ingest_rate)
        } else {
            ", as fast as the server takes them".to_owned()
        }
    );
    println!("   Method: end-to-end = events / time from the first request until processed_seq == last seq; a line per second below.");
    let base = app.reader.last_seq();
    let stop = Arc::new(AtomicBool::new(false));
    let lookup_task = lookup_rt.spawn(lookups(
        url.clone(),
        args.people,
        args.lookup_rate,
        args.lookup_tasks,
        stop.clone(),
        None,
    ));
    let started = Instant::now();
    let mut ingest_task = client_rt.spawn(post_all(
        client.clone(),
        url.clone(),
        shop_bodies.clone(),
        batch,
        args.connections,
        args.ingest_rate,
    ));
    // A line per second while the events come in, then until they are processed.
    let target = base + shop_events as u64;
    let mut next_line = started + Duration::from_secs(1);
    // Waits on the task itself rather than polling: this thread shares the 2 cores with
    // the server, and a wake-up every few ms was one more thread for lookups to wait behind.
    let busy = loop {
        let wait = next_line.saturating_duration_since(Instant::now());
        let done =
            client_rt.block_on(async { tokio::time::timeout(wait, &mut ingest_task).await.ok() });
        if let Some(r) = done {
            break r??;
        }
        progress_line(&app, base, started);
        next_line += Duration::from_secs(1);
    };
    let ingested_at = Instant::now();
    let last = app.reader.last_seq();
    anyhow::ensure!(
        last == target,
        "the log holds {last} events, expected {target}"
    );
    let done = wait_processed(&app, target, base, started, Some(&mut next_line))?;
    stop.store(true, Ordering::Relaxed);
    let mut during = lookup_rt.block_on(lookup_task)??;
    let ingest_s = ingested_at.duration_since(started).as_secs_f64();
    let e2e_s = done.duration_since(started).as_secs_f64();
    let n = shop_events as f64;
    println!("  events        {shop_events} ({busy} answers were 429)");
    println!(
        "  ingest        {:.0} events/s ({ingest_s:.2} s to acknowledge all durably)",
        n / ingest_s.max(1e-9)
    );
    println!(
        "  end-to-end    {:.0} events/s ({e2e_s:.2} s from the first request until all processed)",
        n / e2e_s
    );
    println!(
        "  profiles      {} live",
        app.processor.status.live_profiles.load(Ordering::Relaxed)
    );
    println!();
    println!("3b. Profile API while ingest and processing run (same method as 3a, during step 2):");
    during.print("  (with ingest)");

    // Stop the server so the processor-alone reference can own the data directory.
    let _ = shutdown_tx.send(());
    let _ = server_rt.block_on(server);
    drop(client);
    drop(app);
    drop(client_rt);
    drop(lookup_rt);
    drop(server_rt);

    // 4. The processor alone.
    if !args.skip_rebuild {
        println!();
        println!("4. Processor alone: `spoor rebuild` on the same log (server stopped): identity + profile update from the first event, no HTTP.");
        let started = Instant::now();
        let total = spoor_server::processor::rebuild(&cfg, |_, _| {})
            .map_err(|e| anyhow::anyhow!("rebuild failed: {e}"))?;
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  processing    {:.0} events/s ({total} events in {secs:.2} s)",
            total as f64 / secs.max(1e-9)
        );
    }
    drop(tmp);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the lookup route's buckets from the exposition text, ignores other routes and
    /// metrics, and takes quantiles of the difference between two readings.
    #[test]
    fn server_times_from_metrics_text() {
        let text = |a: u64, b: u64, inf: u64| {
            format!(
                "# TYPE spoor_http_request_duration_seconds histogram\n\
                 spoor_http_request_duration_seconds_bucket{{le=\"0.0001\",route=\"/v1/batch\"}} 99\n\
                 spoor_http_request_duration_seconds_bucket{{le=\"0.0001\",route=\"{LOOKUP_ROUTE}\"}} {a}\n\
                 spoor_http_request_duration_seconds_bucket{{le=\"0.0002\",route=\"{LOOKUP_ROUTE}\"}} {b}\n\
                 spoor_http_request_duration_seconds_bucket{{le=\"+Inf\",route=\"{LOOKUP_ROUTE}\"}} {inf}\n\
                 spoor_http_request_duration_seconds_count{{route=\"{LOOKUP_ROUTE}\"}} {inf}\n"
            )
        };
        let before = ServerTimes::parse(&text(10, 10, 10));
        let after = ServerTimes::parse(&text(10 + 90, 10 + 99, 10 + 100));
        let d = after.since(&before);
        assert_eq!(d.count(), 100);
        assert_eq!(d.quantile(0.5), Some(0.0001));
        assert_eq!(d.quantile(0.99), Some(0.0002));
        assert_eq!(d.quantile(0.999), Some(f64::INFINITY));
        assert_eq!(ServerTimes::default().quantile(0.5), None);
    }
}
