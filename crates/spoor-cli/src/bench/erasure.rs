//! `spoor bench erasure`: how long erasing one person takes among many profiles and events.
//!
//! Writes `--people` people × `--events` events each (an identify with e-mail, phone and
//! name, then tracks) straight into a new log, builds the state with the processor
//! (`spoor rebuild`, timed as the reference), defines one audience everyone is in, opens the
//! data directory as `spoor serve` does and erases `--erase` people one after the other
//! through the processor, as `POST /v1/privacy/erasures?wait=true` does. Then the server
//! is stopped and the databases are rewritten (`spoor privacy compact`). Prints the time of
//! each step; asserts only what makes the figures meaningful (each erasure removed its
//! person's events).

use anyhow::{ensure, Context};
use clap::Args;
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use spoor_core::ids::SourceId;
use spoor_server::config::{Config, Overrides};
use spoor_server::defs::DefsHandle;
use spoor_server::{AppState, InitSecrets};
use spoor_store::log::{EventLog, LogOptions, LogWriter, WriterOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct ErasureBenchArgs {
    /// Profiles in the data directory.
    #[arg(long, default_value_t = 100_000)]
    pub people: u64,
    /// Events per person (one identify, the rest tracks).
    #[arg(long, default_value_t = 10)]
    pub events: u64,
    /// People erased, one after the other.
    #[arg(long, default_value_t = 5)]
    pub erase: u64,
    /// Keep the data directory here instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

fn person_batch(from: u64, to: u64, per: u64, at: i64) -> Vec<Value> {
    let mut v = Vec::new();
    for i in from..to {
        v.push(json!({"type": "identify", "userId": format!("u{i}"), "messageId": format!("id-{i}"),
                      "timestamp": chrono::DateTime::from_timestamp_millis(at).map(|t| t.to_rfc3339()),
                      "traits": {"email": format!("Person.{i}@Example.com"), "name": format!("Name {i}"),
                                 "phone": format!("+31 6 {:08}", i % 100_000_000)}}));
        for n in 1..per {
            v.push(
                json!({"type": "track", "userId": format!("u{i}"), "event": "Clicked",
                          "messageId": format!("t-{i}-{n}"), "properties": {"n": n}}),
            );
        }
    }
    v
}

pub fn run(args: ErasureBenchArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = tempfile::tempdir()?;
    let dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let cfg = Config::load(
        None,
        &Overrides {
            listen: None,
            data_dir: Some(dir.clone()),
        },
    )?;
    let (people, per) = (args.people, args.events.max(1));
    println!(
        "spoor bench erasure: {people} profiles × {per} events = {} events, erasing {} people",
        people * per,
        args.erase
    );

    // 1. The log.
    let t = Instant::now();
    let log = EventLog::open(LogOptions {
        dir: dir.join("log"),
        segment_bytes: cfg.storage.segment_bytes,
    })?;
    let (writer, reader) = LogWriter::spawn(
        log,
        WriterOptions {
            queue_batches: 64,
            dedupe_window: Duration::from_secs(60),
            dedupe_max_keys: 1_000,
            max_group_bytes: 16 << 20,
            on_fsync: None,
        },
        Arc::new(|| chrono::Utc::now().timestamp_millis()),
    )?;
    let source = SourceId::parse("src_bench").context("source id")?;
    let per_batch = (1000 / per).max(1);
    let at = chrono::Utc::now().timestamp_millis() - 86_400_000;
    let mut i = 0;
    while i < people {
        let to = (i + per_batch).min(people);
        let body = serde_json::to_vec(&json!({ "batch": person_batch(i, to, per, at) }))?;
        let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
        writer.append_blocking(recs)?;
        i = to;
    }
    let total = reader.last_seq();
    ensure!(total == people * per, "log holds {total}");
    drop((writer, reader));
    println!(
        "  log written             {total} events in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // 2. One audience everyone is in, and the state.
    {
        let meta = Arc::new(spoor_store::meta::MetaStore::open(&dir.join("meta"))?);
        DefsHandle::open(meta)?
            .update(|d| {
                let rule = parse(r#"performed "Clicked""#).map_err(|e| e.to_string())?;
                d.audiences.insert(
                    "clickers".into(),
                    AudienceDefinition {
                        name: "clickers".into(),
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
    }
    let t = Instant::now();
    spoor_server::processor::rebuild(&cfg, |_, _| {}).map_err(|e| anyhow::anyhow!(e))?;
    let rebuild_s = t.elapsed().as_secs_f64();
    println!(
        "  state built (rebuild)   {:.1} s, {:.0} events/s",
        rebuild_s,
        total as f64 / rebuild_s
    );

    // 3. Erasures through the processor, as the API does.
    let (app, _) = AppState::open(
        cfg.clone(),
        Arc::new(spoor_core::SystemClock),
        InitSecrets::default(),
    )
    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut times = Vec::new();
    for k in 0..args.erase {
        let who = (k * 7919 + 13) % people;
        let r = app.state.reader()?;
        let pid = r
            .owner("user_id", &format!("u{who}"))?
            .context("the person exists")?;
        let job = app
            .privacy
            .create_job(pid.to_string(), true, chrono::Utc::now().timestamp_millis())
            .map_err(|e| anyhow::anyhow!(e))?;
        let t = Instant::now();
        let done = rt
            .block_on(app.processor.erase(job, true))
            .map_err(|e| anyhow::anyhow!(e))?
            .context("a finished job")?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        ensure!(
            done.events as u64 == per,
            "erased {} events, not {per}",
            done.events
        );
        println!(
            "  erase u{who:<10}        {ms:8.1} ms  ({} events, {} exits)",
            done.events, done.exits
        );
        times.push(ms);
    }
    drop(rt);
    let app_handle = app.clone();
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(30);
    while app_handle.handles() > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    app_handle.processor.stop();
    drop(app_handle);
    if !times.is_empty() {
        times.sort_by(|a, b| a.total_cmp(b));
        println!(
            "  erasure                 median {:.1} ms, max {:.1} ms per person",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }

    // 4. The rewrite of the databases.
    let t = Instant::now();
    let rewritten =
        spoor_server::erasure::compact::compact_data_dir(&dir).map_err(|e| anyhow::anyhow!(e))?;
    let s = t.elapsed().as_secs_f64();
    for r in &rewritten {
        println!(
            "  rewrite {:<32} {:>6.1} MB → {:>6.1} MB",
            r.file,
            r.bytes_before as f64 / 1e6,
            r.bytes_after as f64 / 1e6
        );
    }
    println!("  compaction (all databases, server stopped) {s:.1} s");
    Ok(())
}
