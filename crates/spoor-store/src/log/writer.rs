//! The group-commit writer: one OS thread owns the [`EventLog`]; async handlers submit
//! batches through a bounded queue and await a reply that comes only after fdatasync.
//!
//! Why a thread and not a task: fdatasync blocks for milliseconds, and the whole point is
//! that while one group is being synced the next one accumulates in the queue. The thread
//! blocks for the first submission, drains whatever else is queued (up to
//! `max_group_bytes`), drops duplicates, appends everything with one write and one
//! fdatasync, publishes the new durable seq, and only then answers every submitter.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::dedupe::Dedupe;
use super::frame::{FRAME_HEADER, MAX_PAYLOAD_BYTES};
use super::{EventLog, LogReader, RecordIn};
use crate::error::{StoreError, StoreResult};

/// Injected clock: milliseconds since the Unix epoch.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;
/// Called with the time each group spent in fdatasync (for metrics).
pub type FsyncHook = Arc<dyn Fn(Duration) + Send + Sync>;

/// Tuning of the writer.
#[derive(Clone)]
pub struct WriterOptions {
    /// Capacity of the submission queue, in submissions. When full, [`LogWriter::append`]
    /// fails fast with [`StoreError::Busy`] (the server answers 429): memory stays bounded.
    pub queue_batches: usize,
    /// Records whose dedupe key was seen less than this long ago (by `received_ms`) are
    /// skipped. Zero disables dedupe.
    pub dedupe_window: Duration,
    /// Bound on the dedupe index (about 50 bytes per key); the oldest keys go first.
    pub dedupe_max_keys: usize,
    /// Stop draining the queue into a group past this many bytes of frames.
    pub max_group_bytes: usize,
    pub on_fsync: Option<FsyncHook>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            queue_batches: 1024,
            dedupe_window: Duration::from_secs(24 * 3600),
            dedupe_max_keys: 2_000_000,
            max_group_bytes: 8 * 1024 * 1024,
            on_fsync: None,
        }
    }
}

impl std::fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterOptions")
            .field("queue_batches", &self.queue_batches)
            .field("dedupe_window", &self.dedupe_window)
            .field("dedupe_max_keys", &self.dedupe_max_keys)
            .field("max_group_bytes", &self.max_group_bytes)
            .field("on_fsync", &self.on_fsync.is_some())
            .finish()
    }
}

/// What happened to one submission. Its appended records have consecutive seqs
/// `first_seq .. first_seq + appended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// `None` when nothing was appended (empty, or all duplicates).
    pub first_seq: Option<u64>,
    pub appended: usize,
    /// Records skipped because their dedupe key was already in the window (or earlier in
    /// the same submission). They count as accepted.
    pub duplicates: usize,
}

enum Msg {
    Append {
        recs: Vec<RecordIn>,
        bytes: usize,
        reply: oneshot::Sender<StoreResult<AppendOutcome>>,
    },
    Shutdown,
}

struct Inner {
    tx: SyncSender<Msg>,
    durable: watch::Receiver<u64>,
    handle: Mutex<Option<JoinHandle<()>>>,
    status: Arc<Status>,
}

/// What the writer thread publishes for health checks and metrics.
#[derive(Default)]
struct Status {
    /// Set when a write or fsync failed; the log refuses appends until reopened.
    failed: std::sync::atomic::AtomicBool,
    size_bytes: std::sync::atomic::AtomicU64,
}

impl Inner {
    /// Asks the thread to finish what is queued and stop, then waits for it.
    fn stop(&self) {
        let _ = self.tx.send(Msg::Shutdown);
        let handle = self.handle.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.join().is_err() {
                tracing::error!("event log writer thread panicked");
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Handle to the writer thread; cheap to clone. When the last clone is dropped (or on
/// [`shutdown`](Self::shutdown)) queued submissions are written and the thread is joined.
#[derive(Clone)]
pub struct LogWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("durable_seq", &*self.inner.durable.borrow())
            .finish()
    }
}

impl LogWriter {
    /// Starts the writer thread. The dedupe index is first rebuilt from the tail of the log
    /// (records whose `received_ms` is within the window), so a request retried across a
    /// restart is still recognised.
    pub fn spawn(
        log: EventLog,
        opts: WriterOptions,
        now_ms: NowMs,
    ) -> StoreResult<(LogWriter, LogReader)> {
        let reader = log.reader();
        let window_ms = i64::try_from(opts.dedupe_window.as_millis()).unwrap_or(i64::MAX);
        let mut dedupe = Dedupe::new(window_ms, opts.dedupe_max_keys);
        if dedupe.enabled() {
            rebuild_dedupe(
                &reader,
                &mut dedupe,
                now_ms(),
                window_ms,
                opts.dedupe_max_keys,
            )?;
        }
        let (tx, rx) = mpsc::sync_channel(opts.queue_batches.max(1));
        let (durable_tx, durable) = watch::channel(log.last_seq());
        let dir = log.dir().to_path_buf();
        let status = Arc::new(Status::default());
        status.size_bytes.store(log.size_bytes(), Ordering::Relaxed);
        let worker_status = status.clone();
        let handle = std::thread::Builder::new()
            .name("spoor-log-writer".into())
            .spawn(move || {
                let mut w = Worker {
                    log,
                    dedupe,
                    durable: durable_tx,
                    opts,
                    now_ms,
                    status: worker_status,
                };
                w.run(rx)
            })
            .map_err(|e| StoreError::io(dir, e))?;
        let inner = Inner {
            tx,
            durable,
            handle: Mutex::new(Some(handle)),
            status,
        };
        Ok((
            LogWriter {
                inner: Arc::new(inner),
            },
            reader,
        ))
    }

    /// Appends a batch; resolves once it is durable. Fails fast with [`StoreError::Busy`]
    /// when the queue is full. If the future is dropped after submission, the batch is
    /// still written (the answer is just not heard).
    pub async fn append(&self, recs: Vec<RecordIn>) -> StoreResult<AppendOutcome> {
        let Some((msg, reply)) = prepare(recs)? else {
            return Ok(EMPTY);
        };
        match self.inner.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(StoreError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        reply.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`append`](Self::append) for synchronous callers (bulk import): waits for room
    /// in the queue instead of failing with `Busy`. Must not be called on an async runtime
    /// thread.
    pub fn append_blocking(&self, recs: Vec<RecordIn>) -> StoreResult<AppendOutcome> {
        let Some((msg, reply)) = prepare(recs)? else {
            return Ok(EMPTY);
        };
        self.inner.tx.send(msg).map_err(|_| StoreError::Closed)?;
        reply.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// The last durable seq, updated after every group; tailing readers (the processor)
    /// wait on it instead of polling the log.
    pub fn durable_seq(&self) -> watch::Receiver<u64> {
        self.inner.durable.clone()
    }

    /// False once a write or fsync has failed: the log takes no more appends until Spoor is
    /// restarted (readiness probes report it).
    pub fn is_healthy(&self) -> bool {
        !self.inner.status.failed.load(Ordering::Relaxed)
    }

    /// Bytes of log on disk, as of the last group commit.
    pub fn size_bytes(&self) -> u64 {
        self.inner.status.size_bytes.load(Ordering::Relaxed)
    }

    /// Writes what is queued, stops the thread and waits for it. Appends through other
    /// clones fail with [`StoreError::Closed`] afterwards.
    pub fn shutdown(self) {
        self.inner.stop();
    }
}

const EMPTY: AppendOutcome = AppendOutcome {
    first_seq: None,
    appended: 0,
    duplicates: 0,
};

type Reply = oneshot::Receiver<StoreResult<AppendOutcome>>;

/// Validates a submission up front: a bad record must fail its own request, not poison a
/// whole group.
fn prepare(recs: Vec<RecordIn>) -> StoreResult<Option<(Msg, Reply)>> {
    if recs.is_empty() {
        return Ok(None);
    }
    let mut bytes = 0;
    for r in &recs {
        if r.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(StoreError::RecordTooLarge {
                len: r.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        bytes += FRAME_HEADER + r.payload.len();
    }
    let (reply, rx) = oneshot::channel();
    Ok(Some((Msg::Append { recs, bytes, reply }, rx)))
}

/// Loads the keys of records received within the window, reading backwards from the end
/// until a whole batch is older than the window (received_ms is nearly monotonic in seq).
fn rebuild_dedupe(
    reader: &LogReader,
    dedupe: &mut Dedupe,
    now: i64,
    window_ms: i64,
    max_keys: usize,
) -> StoreResult<()> {
    let cutoff = now.saturating_sub(window_ms);
    let mut keys = Vec::new();
    let mut before = u64::MAX;
    loop {
        let batch = reader.read_back(before, 4096)?;
        let Some(oldest) = batch.last() else { break };
        before = oldest.seq;
        let mut recent = false;
        for e in batch.iter().filter(|e| e.received_ms >= cutoff) {
            recent = true;
            if let Some(k) = e.dedupe_key {
                keys.push((k, e.received_ms));
            }
        }
        if !recent || keys.len() >= max_keys {
            break;
        }
    }
    let n = keys.len();
    for (k, t) in keys.into_iter().rev() {
        let _ = dedupe.insert(k, t);
    }
    dedupe.prune(now);
    tracing::info!(keys = n, "rebuilt dedupe index from log tail");
    Ok(())
}

struct Worker {
    log: EventLog,
    dedupe: Dedupe,
    durable: watch::Sender<u64>,
    opts: WriterOptions,
    now_ms: NowMs,
    status: Arc<Status>,
}

struct Submission {
    recs: Vec<RecordIn>,
    reply: oneshot::Sender<StoreResult<AppendOutcome>>,
}

impl Worker {
    fn run(&mut self, rx: Receiver<Msg>) {
        let mut group = Vec::new();
        loop {
            let (recs, mut bytes, reply) = match rx.recv() {
                Ok(Msg::Append { recs, bytes, reply }) => (recs, bytes, reply),
                Ok(Msg::Shutdown) | Err(_) => return,
            };
            group.push(Submission { recs, reply });
            let mut stop = false;
            while bytes < self.opts.max_group_bytes {
                match rx.try_recv() {
                    Ok(Msg::Append {
                        recs,
                        bytes: b,
                        reply,
                    }) => {
                        bytes += b;
                        group.push(Submission { recs, reply });
                    }
                    Ok(Msg::Shutdown) => {
                        stop = true;
                        break;
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut group);
            if stop {
                return;
            }
        }
    }

    /// Dedupes, appends and syncs one group, then answers every submitter of it.
    fn commit(&mut self, group: &mut Vec<Submission>) {
        let dedupe_on = self.dedupe.enabled();
        if dedupe_on {
            self.dedupe.prune((self.now_ms)());
        }
        let mut undo = Vec::new();
        // Per submission: (index of its first record in the group, appended, duplicates).
        let mut counts = Vec::with_capacity(group.len());
        let mut refs: Vec<&RecordIn> = Vec::new();
        for sub in group.iter() {
            let (start, mut dups) = (refs.len(), 0);
            for r in &sub.recs {
                if let Some(k) = r.dedupe_key.filter(|&k| k != 0 && dedupe_on) {
                    match self.dedupe.insert(k, r.received_ms) {
                        Ok(prev) => undo.push((k, prev)),
                        Err(()) => {
                            dups += 1;
                            continue;
                        }
                    }
                }
                refs.push(r);
            }
            counts.push((start, refs.len() - start, dups));
        }
        let result = if refs.is_empty() {
            Ok(self.log.last_seq() + 1)
        } else {
            self.log.append_refs(&refs)
        };
        let wrote = !refs.is_empty();
        drop(refs);
        match result {
            Ok(first) => {
                if let (true, Some(hook)) = (wrote, &self.opts.on_fsync) {
                    hook(self.log.last_sync_duration());
                }
                self.durable.send_replace(self.log.last_seq());
                self.status
                    .size_bytes
                    .store(self.log.size_bytes(), Ordering::Relaxed);
                for (sub, (start, appended, duplicates)) in group.drain(..).zip(counts) {
                    let first_seq = (appended > 0).then_some(first + start as u64);
                    let _ = sub.reply.send(Ok(AppendOutcome {
                        first_seq,
                        appended,
                        duplicates,
                    }));
                }
            }
            Err(e) => {
                for (k, prev) in undo.into_iter().rev() {
                    self.dedupe.undo(k, prev);
                }
                self.status.failed.store(true, Ordering::Relaxed);
                tracing::error!(error = %e, "event log append failed; refusing appends until restart");
                let e = Arc::new(e);
                for sub in group.drain(..) {
                    let _ = sub.reply.send(Err(StoreError::AppendFailed(e.clone())));
                }
            }
        }
    }
}
