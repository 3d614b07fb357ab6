//! Prints how many records/s the event log appends: directly (`EventLog::append` with groups
//! of `GROUP` records, one fdatasync each) and through the group-commit `LogWriter` fed by
//! concurrent tokio tasks. A figure to look at, not a test.
//!
//! `cargo run --release -p spoor-store --example append_rate -- [records] [payload] [group] [dir]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use spoor_store::log::{EventLog, LogOptions, LogWriter, RecordIn, WriterOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (n, size, group) = (arg(0, 1_000_000), arg(1, 700), arg(2, 1_000));
    let base = match args.get(3) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::current_dir()?.join("target/append_rate"),
    };
    let _ = std::fs::remove_dir_all(&base);
    let records = move |tag: usize| -> Vec<RecordIn> {
        (0..group)
            .map(|i| RecordIn {
                timestamp_ms: 1_700_000_000_000,
                received_ms: 1_700_000_000_000,
                dedupe_key: Some((tag * group + i) as u64 + 1),
                payload: vec![b'x'; size],
            })
            .collect()
    };

    // 1. Direct appends.
    let mut log = EventLog::open(LogOptions::new(base.join("direct")))?;
    let batch = records(0);
    let t = Instant::now();
    for _ in 0..n / group {
        log.append(&batch)?;
    }
    let secs = t.elapsed().as_secs_f64();
    let total = (n / group * group) as f64;
    println!(
        "direct: {} records of {size} B in groups of {group}: {:.0} records/s, {:.0} MB/s",
        total,
        total / secs,
        log.size_bytes() as f64 / secs / 1e6
    );
    drop(log);

    // 2. Through the writer: 8 tasks submitting batches of `group` records concurrently.
    let log = EventLog::open(LogOptions::new(base.join("writer")))?;
    let syncs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let s2 = syncs.clone();
    let opts = WriterOptions {
        on_fsync: Some(Arc::new(move |_: Duration| {
            s2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })),
        ..WriterOptions::default()
    };
    let (writer, _reader) = LogWriter::spawn(log, opts, Arc::new(|| 1_700_000_000_000))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()?;
    let tasks = 8;
    let per_task = n / group / tasks;
    let t = Instant::now();
    rt.block_on(async {
        let mut handles = Vec::new();
        for k in 0..tasks {
            let w = writer.clone();
            handles.push(tokio::spawn(async move {
                // Built on the fly, as handlers would: allocation is part of the cost.
                for i in 0..per_task {
                    w.append(records(k * per_task + i)).await.expect("append");
                }
            }));
        }
        for h in handles {
            h.await.expect("task");
        }
    });
    let secs = t.elapsed().as_secs_f64();
    let total = (tasks * per_task * group) as f64;
    println!(
        "writer: {} records via {tasks} tasks: {:.0} records/s, {} fdatasyncs",
        total,
        total / secs,
        syncs.load(std::sync::atomic::Ordering::Relaxed)
    );
    writer.shutdown();
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
