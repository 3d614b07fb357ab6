//! The group-commit writer: two OS threads, a *writer* that owns the [`EventLog`] and a
//! *syncer*; async handlers submit batches through a bounded queue and await a reply that
//! comes only after fdatasync.
//!
//! Why threads and not tasks: fdatasync blocks for milliseconds. The writer blocks for the
//! first submission, drains whatever else is queued (up to `max_group_bytes`), drops
//! duplicates and copies the group into the page cache with one `pwrite`, then hands the
//! syncer a job: "durable once fdatasynced up to offset Y / seq X, then answer these
//! submitters". It goes straight on with the next group while the syncer fdatasyncs: copy
//! and sync overlap (a pipeline of depth 2, plus [`SYNC_QUEUE`] jobs waiting).
//!
//! The syncer takes every job waiting, runs ONE fdatasync (started after all their writes
//! completed), publishes the new durable length/seq to readers and the durable watch, and
//! only then answers those jobs' submitters, in order. So an acknowledgement, and a
//! record's visibility, always follow an fdatasync that started after its write. A job
//! whose submissions were all duplicates still goes through the syncer, so "duplicate,
//! accepted" is never said before the original record is durable.
//!
//! Failure: after a failed fdatasync the syncer fails the job(s) being synced and every
//! later one (and the log refuses appends until reopened, see the module docs). The writer
//! keeps the dedupe insertions of jobs not yet known durable and takes them all back when it
//! sees the failure, so a retry is never mistaken for a duplicate.
//!
//! Segment rolls: before closing a segment the writer hands its tail to the syncer and
//! waits until it is durable and published (a barrier; rolls are rare), then cuts the
//! preallocated space, syncs that, and only then creates the successor.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::dedupe::Dedupe;
use super::frame::{FRAME_HEADER, MAX_PAYLOAD_BYTES};
use super::reader::Shared;
use super::syncer::{sync_before_roll, Job, Syncer};
use super::{EventLog, LogReader, RecordIn};
use crate::error::{StoreError, StoreResult};

/// Injected clock: milliseconds since the Unix epoch.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;
/// Called with the time each fdatasync took (for metrics); one fdatasync makes one or more
/// groups durable.
pub type FsyncHook = Arc<dyn Fn(Duration) + Send + Sync>;

/// Jobs that may wait for the syncer while it is busy. When they are all taken, the writer
/// blocks (holding one more written group) and submissions pile up in the queue, which
/// bounds both memory and the unsynced data in the page cache.
const SYNC_QUEUE: usize = 1;

/// Called by the syncer just before each fdatasync; an error is treated as a failed
/// fdatasync. Tests use it to hold the syncer or inject a failure.
pub(crate) type BeforeSync = Arc<dyn Fn() -> std::io::Result<()> + Send + Sync>;

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
pub(super) struct Status {
    /// Set when a write or fsync failed; the log refuses appends until reopened.
    pub(super) failed: std::sync::atomic::AtomicBool,
    pub(super) size_bytes: std::sync::atomic::AtomicU64,
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
        Self::spawn_with(log, opts, now_ms, None)
    }

    /// [`spawn`](Self::spawn) with a hook run by the syncer before each fdatasync.
    pub(crate) fn spawn_with(
        log: EventLog,
        opts: WriterOptions,
        now_ms: NowMs,
        before_sync: Option<BeforeSync>,
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
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(SYNC_QUEUE);
        let syncer = Syncer {
            shared: log.shared().clone(),
            durable: durable_tx,
            status: status.clone(),
            on_fsync: opts.on_fsync.clone(),
            before_sync,
            failure: None,
        };
        let syncer = std::thread::Builder::new()
            .name("spoor-log-syncer".into())
            .spawn(move || syncer.run(jobs_rx))
            .map_err(|e| StoreError::io(&dir, e))?;
        let durable_seq = log.shared().clone();
        let mut worker = Worker {
            log,
            dedupe,
            opts,
            now_ms,
            status: status.clone(),
            jobs: Some(jobs_tx),
            syncer: Some(syncer),
            durable_seq,
            unconfirmed: std::collections::VecDeque::new(),
        };
        let handle = std::thread::Builder::new()
            .name("spoor-log-writer".into())
            .spawn(move || worker.run(rx))
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

    /// The last durable seq, updated after every fdatasync; tailing readers (the
    /// processor) wait on it instead of polling the log.
    pub fn durable_seq(&self) -> watch::Receiver<u64> {
        self.inner.durable.clone()
    }

    /// False once a write or fsync has failed: the log takes no more appends until Spoor is
    /// restarted (readiness probes report it).
    pub fn is_healthy(&self) -> bool {
        !self.inner.status.failed.load(Ordering::Relaxed)
    }

    /// Bytes of durable log (segment lengths, not preallocated space), as of the last
    /// fdatasync.
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
    opts: WriterOptions,
    now_ms: NowMs,
    status: Arc<Status>,
    /// To the syncer; `None` once closed (at the end of `run`).
    jobs: Option<SyncSender<Job>>,
    syncer: Option<JoinHandle<()>>,
    /// Where the syncer publishes the last durable seq.
    durable_seq: Arc<Shared>,
    /// Dedupe insertions of groups handed to the syncer and not yet known durable, with the
    /// last seq each group wrote: taken back if the syncer fails.
    unconfirmed: std::collections::VecDeque<(u64, Vec<Undo>)>,
}

/// A dedupe insertion to take back: the key and what it mapped to before.
type Undo = (u64, Option<i64>);

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
                Ok(Msg::Shutdown) | Err(_) => break,
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
                break;
            }
        }
        // Let the syncer finish every job, then stop it; the log is dropped (and its
        // preallocated tail trimmed) only after that.
        drop(self.jobs.take());
        if let Some(h) = self.syncer.take() {
            if h.join().is_err() {
                tracing::error!("event log syncer thread panicked");
            }
        }
    }

    /// Dedupes and writes one group, then hands it to the syncer, which answers every
    /// submitter once it is durable.
    fn commit(&mut self, group: &mut Vec<Submission>) {
        if self.status.failed.load(Ordering::Acquire) {
            // The syncer failed: no group not yet durable will ever be, and nothing more
            // is appended.
            self.log.mark_failed();
            self.undo_unconfirmed();
            for sub in group.drain(..) {
                let _ = sub.reply.send(Err(StoreError::AppendFailed(Arc::new(
                    StoreError::LogFailed,
                ))));
            }
            return;
        }
        let durable = self.durable_seq.last_seq.load(Ordering::Acquire);
        while self.unconfirmed.front().is_some_and(|(s, _)| *s <= durable) {
            self.unconfirmed.pop_front();
        }
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
        let first = self.log.last_seq() + 1;
        let result = if refs.is_empty() {
            Ok(None)
        } else {
            let jobs = &self.jobs;
            self.log
                .write_refs(&refs, &mut |u| sync_before_roll(jobs.as_ref(), u))
        };
        drop(refs);
        let write = match result {
            Ok(w) => w,
            Err(e) => {
                self.fail(undo, group, e);
                return;
            }
        };
        if let Some(w) = &write {
            if !undo.is_empty() {
                self.unconfirmed.push_back((w.last_seq, undo));
            }
        }
        // The records are in the page cache now; only the reply channels travel on.
        let replies = group
            .drain(..)
            .zip(counts)
            .map(|(sub, (start, appended, duplicates))| {
                let first_seq = (appended > 0).then_some(first + start as u64);
                let outcome = AppendOutcome {
                    first_seq,
                    appended,
                    duplicates,
                };
                (sub.reply, outcome)
            })
            .collect();
        let job = Job::Group { write, replies };
        let Some(jobs) = &self.jobs else { return };
        if let Err(mpsc::SendError(job)) = jobs.send(job) {
            // The syncer is gone (it panicked): nothing more can be made durable.
            self.status.failed.store(true, Ordering::Release);
            self.log.mark_failed();
            self.undo_unconfirmed();
            if let Job::Group { replies, .. } = job {
                for (reply, _) in replies {
                    let _ = reply.send(Err(StoreError::Closed));
                }
            }
        }
    }

    /// A write (or the sync before a roll) failed: nothing of this group is known durable.
    fn fail(&mut self, undo: Vec<Undo>, group: &mut Vec<Submission>, e: StoreError) {
        for (k, prev) in undo.into_iter().rev() {
            self.dedupe.undo(k, prev);
        }
        self.undo_unconfirmed();
        self.status.failed.store(true, Ordering::Release);
        let e = Arc::new(e);
        for sub in group.drain(..) {
            let _ = sub.reply.send(Err(StoreError::AppendFailed(e.clone())));
        }
    }

    /// Takes back the dedupe insertions of every group not known durable, newest first.
    fn undo_unconfirmed(&mut self) {
        while let Some((_, undo)) = self.unconfirmed.pop_back() {
            for (k, prev) in undo.into_iter().rev() {
                self.dedupe.undo(k, prev);
            }
        }
    }
}
