use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use super::*;
use crate::error::StoreError;
use crate::log::{AppendOutcome, LogWriter, NowMs, WriterOptions};

fn clock(at: &Arc<AtomicI64>) -> NowMs {
    let at = at.clone();
    Arc::new(move || at.load(Ordering::SeqCst))
}

fn keyed(key: Option<u64>, received_ms: i64, body: &str) -> RecordIn {
    RecordIn {
        timestamp_ms: 1,
        received_ms,
        dedupe_key: key,
        payload: body.as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submitters_each_record_once_in_seq_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path(), 64 * 1024);
    let opts = WriterOptions {
        queue_batches: 10_000,
        ..WriterOptions::default()
    };
    let (writer, reader) = LogWriter::spawn(log, opts, Arc::new(|| 0)).unwrap();
    let mut durable = writer.durable_seq();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let w = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut subs = Vec::new();
            for i in 0..40u64 {
                let recs: Vec<RecordIn> = (0..(i % 7 + 1))
                    .map(|j| keyed(None, 0, &format!("{task}/{i}/{j}")))
                    .collect();
                let out = w.append(recs.clone()).await.unwrap();
                assert_eq!((out.appended, out.duplicates), (recs.len(), 0));
                subs.push((out.first_seq.unwrap(), recs));
            }
            subs
        }));
    }
    let mut expected = std::collections::BTreeMap::new();
    for t in tasks {
        for (first, recs) in t.await.unwrap() {
            for (k, r) in recs.into_iter().enumerate() {
                assert!(
                    expected.insert(first + k as u64, r.payload).is_none(),
                    "seq given twice"
                );
            }
        }
    }
    let total = expected.len() as u64;
    durable.wait_for(|&s| s == total).await.unwrap();
    let got = read_all(&reader);
    assert_eq!(got.len() as u64, total);
    for (e, (seq, payload)) in got.iter().zip(&expected) {
        assert_eq!((&e.seq, &e.payload), (seq, payload));
    }
    writer.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedupe_within_window_and_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let now = Arc::new(AtomicI64::new(100_000));
    let opts = WriterOptions {
        dedupe_window: Duration::from_secs(10),
        ..WriterOptions::default()
    };
    let (w, _) = LogWriter::spawn(open(dir.path(), 4096), opts.clone(), clock(&now)).unwrap();
    let out = w
        .append(vec![
            keyed(Some(1), 100_000, "a"),
            keyed(Some(2), 100_000, "b"),
            keyed(Some(2), 100_000, "b again, same batch"),
            keyed(None, 100_000, "no key"),
        ])
        .await
        .unwrap();
    let want = AppendOutcome {
        first_seq: Some(1),
        appended: 3,
        duplicates: 1,
    };
    assert_eq!(out, want);
    let out = w
        .append(vec![keyed(Some(1), 105_000, "a retried")])
        .await
        .unwrap();
    assert_eq!((out.first_seq, out.appended, out.duplicates), (None, 0, 1));

    now.store(111_000, Ordering::SeqCst); // key 1 and 2 (received 100_000) expired
    let out = w
        .append(vec![keyed(Some(1), 111_000, "a, much later")])
        .await
        .unwrap();
    assert_eq!((out.first_seq, out.duplicates), (Some(4), 0));
    w.shutdown();

    // After a restart the index is rebuilt from the log tail: key 1 (received 111_000) is
    // still in the window, key 2 is not.
    now.store(115_000, Ordering::SeqCst);
    let (w, reader) = LogWriter::spawn(open(dir.path(), 4096), opts, clock(&now)).unwrap();
    let out = w
        .append(vec![
            keyed(Some(1), 115_000, "a"),
            keyed(Some(2), 115_000, "b"),
        ])
        .await
        .unwrap();
    assert_eq!(
        (out.first_seq, out.appended, out.duplicates),
        (Some(5), 1, 1)
    );
    assert_eq!(reader.read_from(5, 10).unwrap()[0].payload, b"b");
    assert_eq!(reader.last_seq(), 5);
}

/// Polls a future exactly once.
async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(std::pin::Pin::new(&mut *f).poll(cx))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_busy() {
    let dir = tempfile::tempdir().unwrap();
    // The fsync hook parks the syncer until the test releases it.
    let (entered_tx, entered_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let gate = Mutex::new((entered_tx, release_rx));
    let opts = WriterOptions {
        queue_batches: 1,
        dedupe_window: Duration::ZERO,
        on_fsync: Some(Arc::new(move |_| {
            let g = gate.lock().unwrap();
            let _ = g.0.send(());
            let _ = g.1.recv();
        })),
        ..WriterOptions::default()
    };
    let (w, _) = LogWriter::spawn(open(dir.path(), 4096), opts, Arc::new(|| 0)).unwrap();
    // Declared after `w` so that, should an assertion fail, it is dropped first and the
    // syncer is not left parked while `w` joins the threads.
    let release = release_tx;
    let w1 = w.clone();
    let first = tokio::spawn(async move { w1.append(vec![keyed(None, 0, "1")]).await });
    tokio::task::spawn_blocking(move || entered_rx.recv())
        .await
        .unwrap()
        .unwrap();

    // The syncer is parked inside the sync of "1". The pipeline still takes a bounded
    // number of submissions (one waiting for the syncer, one written and held by the
    // writer, one in the queue slot); then appends are refused at once.
    let mut accepted = Vec::new();
    let mut busy = false;
    for i in 2..=8 {
        let mut f = Box::pin(w.append(vec![keyed(None, 0, &i.to_string())]));
        match poll_once(&mut f).await {
            Poll::Pending => accepted.push(f),
            Poll::Ready(r) => {
                assert!(matches!(r, Err(StoreError::Busy)), "{r:?}");
                busy = true;
                break;
            }
        }
        // Let the writer take what it can.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(busy, "never answered Busy");
    assert!(accepted.len() <= 3, "{} accepted", accepted.len());

    drop(release); // every later hook call returns at once
    assert_eq!(first.await.unwrap().unwrap().first_seq, Some(1));
    let n = accepted.len() as u64;
    for (i, f) in accepted.into_iter().enumerate() {
        assert_eq!(f.await.unwrap().first_seq, Some(i as u64 + 2));
    }
    let out = w.append(vec![keyed(None, 0, "last")]).await.unwrap();
    assert_eq!(out.first_seq, Some(n + 2));
}

#[test]
fn shutdown_writes_what_is_queued_and_later_appends_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (w, reader) = LogWriter::spawn(
        open(dir.path(), 4096),
        WriterOptions::default(),
        Arc::new(|| 0),
    )
    .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let w = w.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    w.append_blocking(vec![keyed(None, 0, &format!("{t}/{i}"))])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let other = w.clone();
    w.shutdown();
    assert!(matches!(
        other.append_blocking(vec![keyed(None, 0, "x")]),
        Err(StoreError::Closed)
    ));
    assert_eq!(reader.last_seq(), 100);
    drop(other);
    let log = open(dir.path(), 4096);
    assert_eq!(log.last_seq(), 100);
}

#[tokio::test]
async fn oversized_record_fails_its_own_request_only() {
    let dir = tempfile::tempdir().unwrap();
    let (w, _) = LogWriter::spawn(
        open(dir.path(), 4096),
        WriterOptions::default(),
        Arc::new(|| 0),
    )
    .unwrap();
    let mut big = keyed(None, 0, "");
    big.payload = vec![0; crate::log::MAX_PAYLOAD_BYTES + 1];
    assert!(matches!(
        w.append(vec![big]).await,
        Err(StoreError::RecordTooLarge { .. })
    ));
    assert_eq!(
        w.append(vec![keyed(None, 0, "ok")])
            .await
            .unwrap()
            .first_seq,
        Some(1)
    );
    assert!(w.append(vec![]).await.unwrap().first_seq.is_none());
}
