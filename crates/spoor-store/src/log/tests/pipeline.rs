//! The pipelined writer (write of group N+1 overlapping the fdatasync of group N) and
//! segment preallocation.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use super::*;
use crate::error::StoreError;
use crate::log::frame;
use crate::log::writer::BeforeSync;
use crate::log::{LogWriter, WriterOptions};

fn keyed(key: Option<u64>, body: &str) -> RecordIn {
    RecordIn {
        timestamp_ms: 1,
        received_ms: 1_000,
        dedupe_key: key,
        payload: body.as_bytes().to_vec(),
    }
}

/// A syncer hook that parks each fdatasync until the test releases it: `entered` gets a
/// message per parked sync; each message on `release` lets one through with that result.
struct Gate {
    entered: mpsc::Receiver<()>,
    release: mpsc::Sender<std::io::Result<()>>,
}

fn gate() -> (BeforeSync, Gate) {
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<std::io::Result<()>>();
    let inner = Mutex::new((entered_tx, release_rx));
    let hook: BeforeSync = Arc::new(move || {
        let g = inner.lock().unwrap();
        let _ = g.0.send(());
        // Once the test drops its sender every sync goes through.
        g.1.recv().unwrap_or(Ok(()))
    });
    (hook, Gate { entered, release })
}

impl Gate {
    fn wait_entered(&self) {
        self.entered
            .recv_timeout(Duration::from_secs(10))
            .expect("syncer reached fdatasync");
    }
}

async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

/// Waits (up to 10 s) until the active segment file contains `needle`.
fn wait_written(dir: &Path, needle: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seg = segments(dir).pop().unwrap();
        let bytes = std::fs::read(seg).unwrap();
        if bytes.windows(needle.len()).any(|w| w == needle) {
            return;
        }
        assert!(Instant::now() < deadline, "writer never wrote {needle:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn spawn(dir: &Path, segment_bytes: u64, hook: BeforeSync) -> (LogWriter, LogReader) {
    let opts = WriterOptions {
        dedupe_window: Duration::from_secs(3600),
        ..WriterOptions::default()
    };
    LogWriter::spawn_with(
        open(dir, segment_bytes),
        opts,
        Arc::new(|| 1_000),
        Some(hook),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_and_visibility_wait_for_the_sync_of_pipelined_groups() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = gate();
    let (w, reader) = spawn(dir.path(), 1 << 20, hook);
    let durable = w.durable_seq();

    let mut a = Box::pin(w.append(vec![keyed(Some(1), "first-group")]));
    assert!(poll_once(&mut a).await.is_pending());
    gate.wait_entered(); // the syncer holds group A before its fdatasync

    // B is written to the file while A is being synced (the pipeline)...
    let mut b = Box::pin(w.append(vec![keyed(Some(2), "second-group")]));
    assert!(poll_once(&mut b).await.is_pending());
    wait_written(dir.path(), b"second-group");
    // ...and a submission that is only a duplicate of A (not yet durable) waits too.
    let mut dup = Box::pin(w.append(vec![keyed(Some(1), "first-group again")]));

    tokio::time::sleep(Duration::from_millis(50)).await;
    for f in [&mut a, &mut b, &mut dup] {
        assert!(
            poll_once(f).await.is_pending(),
            "acknowledged before fdatasync"
        );
    }
    assert_eq!(reader.last_seq(), 0);
    assert!(read_all(&reader).is_empty());
    assert_eq!(*durable.borrow(), 0);
    assert_eq!(w.size_bytes(), 8);

    gate.release.send(Ok(())).unwrap(); // A's sync
    assert_eq!(a.await.unwrap().first_seq, Some(1));
    // B (and the duplicate, queued behind it) need a sync that started after B's write.
    gate.wait_entered();
    assert!(poll_once(&mut b).await.is_pending());
    assert_eq!(reader.last_seq(), 1);
    gate.release.send(Ok(())).unwrap();
    assert_eq!(b.await.unwrap().first_seq, Some(2));
    let d = dup.await.unwrap();
    assert_eq!((d.appended, d.duplicates), (0, 1));
    assert_eq!(read_all(&reader).len(), 2);
    assert_eq!(*durable.borrow(), 2);
    drop(gate);
    w.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sync_fails_every_pending_group_and_undoes_dedupe() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = gate();
    let (w, reader) = spawn(dir.path(), 1 << 20, hook);

    let mut a = Box::pin(w.append(vec![keyed(Some(1), "a")]));
    assert!(poll_once(&mut a).await.is_pending());
    gate.wait_entered();
    let mut b = Box::pin(w.append(vec![keyed(Some(2), "bbbbbbbb")]));
    assert!(poll_once(&mut b).await.is_pending());
    wait_written(dir.path(), b"bbbbbbbb");
    let mut dup = Box::pin(w.append(vec![keyed(Some(1), "a, retried")]));
    assert!(poll_once(&mut dup).await.is_pending());

    gate.release
        .send(Err(std::io::Error::other("injected EIO")))
        .unwrap();
    for f in [a, b, dup] {
        let r = f.await;
        assert!(matches!(r, Err(StoreError::AppendFailed(_))), "{r:?}");
    }
    assert!(!w.is_healthy());
    assert_eq!(reader.last_seq(), 0);
    // A retry must not be taken for a duplicate of the failed record: it fails too.
    let r = w.append(vec![keyed(Some(1), "a, retried later")]).await;
    assert!(matches!(r, Err(StoreError::AppendFailed(_))), "{r:?}");
    let r = w.append(vec![keyed(None, "anything")]).await;
    assert!(matches!(r, Err(StoreError::AppendFailed(_))), "{r:?}");
    drop(gate);
    w.shutdown();

    // Reopening re-validates what is on disk; the log works again.
    let (w, _) = LogWriter::spawn(
        open(dir.path(), 1 << 20),
        WriterOptions::default(),
        Arc::new(|| 1_000),
    )
    .unwrap();
    let out = w
        .append(vec![keyed(Some(7), "after reopen")])
        .await
        .unwrap();
    assert_eq!(out.appended, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segment_rolls_under_pipelining() {
    let dir = tempfile::tempdir().unwrap();
    // Slow fsyncs make groups pile up behind the syncer, so most rolls happen while a
    // sync is in flight.
    let syncs = Arc::new(AtomicUsize::new(0));
    let s2 = syncs.clone();
    let hook: BeforeSync = Arc::new(move || {
        s2.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(2));
        Ok(())
    });
    let (w, reader) = spawn(dir.path(), 2048, hook);
    let mut durable = w.durable_seq();
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let w = w.clone();
        let reader = reader.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..30u64 {
                let recs: Vec<RecordIn> = (0..(i % 4 + 1))
                    .map(|j| {
                        keyed(
                            Some(t * 1_000_000 + i * 10 + j + 1),
                            &format!("{t}/{i}/{j}"),
                        )
                    })
                    .collect();
                let out = w.append(recs.clone()).await.unwrap();
                let first = out.first_seq.unwrap();
                // Acknowledged means durable and visible.
                assert!(reader.last_seq() >= first + recs.len() as u64 - 1);
                let got = reader.read_from(first, recs.len()).unwrap();
                assert_eq!(
                    got.iter().map(|e| &e.payload).collect::<Vec<_>>(),
                    recs.iter().map(|r| &r.payload).collect::<Vec<_>>()
                );
                mine.push((first, recs));
            }
            mine
        }));
    }
    let mut expected = std::collections::BTreeMap::new();
    for t in tasks {
        for (first, recs) in t.await.unwrap() {
            for (k, r) in recs.into_iter().enumerate() {
                assert!(expected.insert(first + k as u64, r.payload).is_none());
            }
        }
    }
    let total = expected.len() as u64;
    durable.wait_for(|&s| s == total).await.unwrap();
    let segs = segments(dir.path());
    assert!(segs.len() > 10, "only {} segments", segs.len());
    assert!(syncs.load(Ordering::Relaxed) > 0);
    let size = w.size_bytes();
    w.shutdown();

    // Closed segments hold no preallocated tail: their size is what their .idx says, and
    // even scanned from scratch (no .idx) they are clean.
    let on_disk: u64 = segs
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, size);
    for p in &segs {
        let _ = std::fs::remove_file(p.with_extension("idx"));
    }
    let log = open(dir.path(), 2048);
    let got = read_all(&log.reader());
    assert_eq!(got.len() as u64, total);
    for (e, (seq, payload)) in got.iter().zip(&expected) {
        assert_eq!((&e.seq, &e.payload), (seq, payload));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_spanning_a_roll_is_acked_only_after_both_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let (hook, gate) = gate();
    // 90-byte frames: 22 fit in a 2 KiB segment.
    let (w, reader) = spawn(dir.path(), 2048, hook);
    let recs: Vec<RecordIn> = (0..30).map(|i| keyed(None, &format!("{i:050}"))).collect();
    let mut f = Box::pin(w.append(recs));
    assert!(poll_once(&mut f).await.is_pending());
    gate.wait_entered(); // the first segment's part, before the roll
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "successor created before the sync"
    );
    assert_eq!(reader.last_seq(), 0);
    gate.release.send(Ok(())).unwrap();
    gate.wait_entered(); // the second segment's part
    assert_eq!(segments(dir.path()).len(), 2);
    assert_eq!(reader.last_seq(), 22); // the closed segment is durable and published
    assert!(poll_once(&mut f).await.is_pending());
    gate.release.send(Ok(())).unwrap();
    assert_eq!(f.await.unwrap().appended, 30);
    assert_eq!(reader.last_seq(), 30);
    drop(gate);
    w.shutdown();
}

#[test]
fn preallocated_zero_tail_is_dropped_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    let recs: Vec<RecordIn> = (0..20).map(|t| rec(t, 50)).collect();
    log.append(&recs).unwrap();
    let seg = segments(dir.path()).pop().unwrap();
    let logical = log.size_bytes();
    let physical = std::fs::metadata(&seg).unwrap().len();
    if cfg!(target_os = "linux") {
        // (Unless the file system cannot preallocate.)
        assert!(physical >= logical);
    }
    // A crash: the log is never closed, so the preallocated tail stays.
    std::mem::forget(log);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.resize(logical as usize + 256 * 1024, 0); // make sure there is a zero tail
    std::fs::write(&seg, &bytes).unwrap();

    let mut log = open(dir.path(), 1 << 20);
    let model: Vec<LogEntry> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| entry(i as u64 + 1, r))
        .collect();
    assert_eq!(read_all(&log.reader()), model);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), logical);
    assert_eq!(log.append(&[rec(99, 7)]).unwrap(), 21);
    drop(log); // a clean close trims the preallocated space
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        logical + (frame::FRAME_HEADER + 7) as u64
    );
    let log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_seq(), 21);
}

#[test]
fn torn_frame_before_a_zero_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    log.append(&[rec(1, 50), rec(2, 50)]).unwrap();
    let logical = log.size_bytes();
    std::mem::forget(log);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes.truncate(logical as usize);
    let mut f = Vec::new();
    frame::encode(&mut f, 3, &rec(3, 300));
    bytes.extend_from_slice(&f[..200]); // half a frame, then the preallocated zeroes
    bytes.resize(bytes.len() + 100_000, 0);
    std::fs::write(&seg, &bytes).unwrap();
    let mut log = open(dir.path(), 1 << 20);
    assert_eq!(log.last_seq(), 2);
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), logical);
    assert_eq!(log.append(&[rec(3, 300)]).unwrap(), 3);
}

#[test]
fn preallocation_never_leaks_into_reads_or_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    let reader = log.reader();
    for i in 0..100u64 {
        log.append(&[rec(i, 100)]).unwrap();
        // Readers see exactly the durable records, never the zeroes after them.
        assert_eq!(reader.last_seq(), i + 1);
        assert_eq!(reader.read_back(u64::MAX, 1).unwrap()[0].seq, i + 1);
    }
    let segs = segments(dir.path());
    assert!(segs.len() > 3);
    let total: u64 = segs
        .iter()
        .take(segs.len() - 1)
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    drop(log);
    let active = std::fs::metadata(segs.last().unwrap()).unwrap().len();
    let log = open(dir.path(), 4096);
    assert_eq!(total + active, log.size_bytes());
    assert_eq!(read_all(&log.reader()).len(), 100);
}
