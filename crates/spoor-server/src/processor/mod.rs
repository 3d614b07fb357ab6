//! The processor: the single writer of derived state. It reads the event log in order and
//! applies each event — 1. identity (which profile), 2. profile (traits, stats, timeline) —
//! then commits the changes together with the log position in one transaction per
//! checkpoint. A crash loses at most the uncommitted checkpoint, which is replayed from the
//! log on restart: no event is applied twice or skipped.

pub mod activate;
mod apply;
pub mod backfill;
pub mod erase;
pub mod groups;
pub mod retention;
mod split;
pub mod timers;
pub mod touched;

pub use apply::apply_event;
pub use split::{SplitOutcome, SplitRequest, MAX_SPLIT_EVENTS};

use serde::{Deserialize, Serialize};
use spoor_core::identity::{IdentityConfig, IdentityRules};
use spoor_core::profile::IdentifierSource;
use spoor_store::log::LogReader;
use spoor_store::state::{ProcessorState, StateStore};
use spoor_store::StoreError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// `[processor]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Entries (profiles, identity records, identifiers) kept in the processor's clean cache.
    pub cache_entries: usize,
    /// Make the applied changes durable (a checkpoint) after this many events…
    pub checkpoint_events: usize,
    /// …or after this many milliseconds…
    pub checkpoint_ms: u64,
    /// …or when this many changed entries (profiles, identity records, identifiers) are
    /// pending, whichever comes first. Bounds the memory of pending changes.
    #[serde(default = "default_checkpoint_pending")]
    pub checkpoint_pending: usize,
    /// Memory a backfill may hold for the recomputed states (MiB, estimated): beyond it the
    /// people are folded in several passes over the log, one range of their ids at a time.
    #[serde(default = "default_backfill_memory_mb")]
    pub backfill_memory_mb: u64,
    /// Scheduling niceness of the processor thread (0 = normal, 19 = lowest). Ingest
    /// acknowledgements and API reads come first; processing uses the CPU left over and
    /// catches up (its lag is reported). Linux only; ignored elsewhere.
    #[serde(default = "default_nice")]
    pub nice: i32,
    /// Extra identifier types taken from paths of the message.
    #[serde(default)]
    pub identifiers: Vec<IdentifierSource>,
    /// Tests only (not configurable): a backfill maps events to people only once its scan
    /// has read the whole log, so that every event it parses takes the held-back path
    /// (`backfill::owners::Mapping::gated`), which otherwise depends on timing.
    #[serde(skip)]
    #[doc(hidden)]
    pub backfill_map_after_scan: bool,
}

fn default_nice() -> i32 {
    10
}

fn default_backfill_memory_mb() -> u64 {
    2048
}

fn default_checkpoint_pending() -> usize {
    1_000_000
}

/// Lowers the calling thread's priority (on Linux, niceness is per thread), with the
/// kernel's default scheduler slice (see [`crate::sched`]).
pub(crate) fn lower_priority(nice: i32) {
    crate::sched::default_slice();
    #[cfg(target_os = "linux")]
    if nice > 0 {
        // SAFETY: setpriority only reads its arguments; who = 0 is the calling thread.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice.min(19)) };
        if rc != 0 {
            tracing::warn!(nice, "could not lower a thread's priority");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

/// Live figures of the processor, shared with the API and metrics.
#[derive(Debug, Default)]
pub struct ProcessorStatus {
    /// Last seq applied: its effects are visible to readers.
    pub processed_seq: AtomicU64,
    /// Last seq whose effects are durable (survive a crash; replay starts after it).
    pub durable_seq: AtomicU64,
    pub live_profiles: AtomicU64,
    pub failed: AtomicBool,
    /// Every audience timer due at or before this time (ms) has fired.
    pub timers_at_ms: std::sync::atomic::AtomicI64,
    /// How late timers fired (ms after they were due), the most recent ones.
    pub timer_lateness: timers::Lateness,
    /// What the last backfill recomputed and how long it took.
    pub last_backfill: parking_lot::Mutex<Option<backfill::Stats>>,
}

/// A running processor thread.
pub struct Processor {
    pub status: Arc<ProcessorStatus>,
    stop: Arc<AtomicBool>,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    commands: std::sync::Mutex<std::sync::mpsc::Sender<Command>>,
}

/// Work only the processor may do (it is the single writer of the state).
enum Command {
    Split {
        req: SplitRequest,
        reply: tokio::sync::oneshot::Sender<Result<SplitOutcome, String>>,
    },
    /// Run an erasure job (already stored as queued); the reply, if any, gets the job
    /// as finished.
    /// Apply (or with `dry_run` count) the retention policies.
    Retention {
        dry_run: bool,
        reply: tokio::sync::oneshot::Sender<
            Result<crate::erasure::retention::RetentionReport, String>,
        >,
    },
    Erase {
        job: crate::erasure::ErasureJob,
        reply: Option<tokio::sync::oneshot::Sender<Result<crate::erasure::ErasureJob, String>>>,
    },
}

/// Everything one processing step needs besides the state.
pub struct Pipeline {
    pub rules: IdentityRules,
    /// Consent purposes and mappings (also in `engine`, which evaluates `consented to`).
    pub consent: Arc<spoor_core::consent::ConsentRules>,
    pub identifiers: Vec<IdentifierSource>,
    /// Computed traits and audiences.
    pub engine: activate::Engine,
    /// Erasure jobs and the suppression list (none in `spoor rebuild` and benches).
    pub erase: Option<erase::EraseCtx>,
    /// Seqs of events dropped because they carry a suppressed identifier, to be erased
    /// from the log after the batch.
    pub suppressed: std::sync::Mutex<Vec<u64>>,
}

/// The wall clock the audience engine evaluates windows against, in ms.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

impl Pipeline {
    pub fn new(
        identity: &IdentityConfig,
        cfg: &ProcessorConfig,
        consent: Arc<spoor_core::consent::ConsentRules>,
        defs: crate::defs::DefsHandle,
        now: NowMs,
    ) -> Result<Self, String> {
        let mut engine = activate::Engine::new(defs, now);
        engine.consent = consent.clone();
        Ok(Self {
            rules: IdentityRules::new(identity.clone())
                .map_err(|e| format!("identity config: {e}"))?,
            consent,
            identifiers: cfg.identifiers.clone(),
            engine,
            erase: None,
            suppressed: std::sync::Mutex::new(Vec::new()),
        })
    }
}

/// When the next checkpoint is due (see [`ProcessorConfig`]). Checkpoints commit in the
/// background while processing goes on; one at a time.
pub struct CheckpointClock {
    cfg: ProcessorConfig,
    last: Instant,
    events: usize,
    /// (begun at, entries) of the checkpoint in flight, for the log line.
    in_flight: Option<(Instant, usize)>,
}

impl CheckpointClock {
    pub fn new(cfg: &ProcessorConfig) -> Self {
        Self {
            cfg: cfg.clone(),
            last: Instant::now(),
            events: 0,
            in_flight: None,
        }
    }

    fn due(&self, state: &ProcessorState) -> bool {
        let cfg = &self.cfg;
        self.events >= cfg.checkpoint_events
            || state.pending_entries() >= cfg.checkpoint_pending
            || (self.last.elapsed() >= Duration::from_millis(cfg.checkpoint_ms)
                && state.has_pending())
    }

    /// Completes a background checkpoint that has committed (or waits for it) and begins
    /// the next one if due (or, with `force`, if anything is pending — and then waits for
    /// it, so everything applied is durable on return). While one commits, the next is
    /// begun (waiting for the first) only if the pending changes pass twice their bound.
    /// Returns whether the durable seq moved.
    pub fn checkpoint(
        &mut self,
        state: &mut ProcessorState,
        status: &ProcessorStatus,
        force: bool,
    ) -> Result<bool, StoreError> {
        let mut moved = self.finish(state, false)?;
        let begin = if force {
            state.has_pending()
        } else {
            self.due(state)
                && (!state.checkpoint_in_flight()
                    || state.pending_entries() >= self.cfg.checkpoint_pending.saturating_mul(2))
        };
        if begin {
            moved |= self.finish(state, true)?;
            self.in_flight = Some((Instant::now(), state.pending_entries()));
            state.begin_checkpoint()?;
            self.last = Instant::now();
            self.events = 0;
        }
        if force {
            moved |= self.finish(state, true)?;
        }
        if moved {
            publish(status, state);
        }
        Ok(moved)
    }

    fn finish(&mut self, state: &mut ProcessorState, wait: bool) -> Result<bool, StoreError> {
        if !state.finish_checkpoint(wait)? {
            return Ok(false);
        }
        if let Some((began, entries)) = self.in_flight.take() {
            let ms = began.elapsed().as_millis() as u64;
            if ms >= 10_000 {
                tracing::info!(seq = state.durable_seq(), entries, ms, "slow checkpoint");
            } else {
                tracing::debug!(seq = state.durable_seq(), entries, ms, "checkpoint");
            }
        }
        Ok(true)
    }
}

/// Events whose changes the processor publishes to readers at once (with the processed
/// seq): a reader sees an event whole, and the publication (two short write sections, see
/// `spoor_store::state`'s pending changes) is paid per chunk, not per change. Small enough
/// that readers see an event a few milliseconds after it is applied.
const PUBLISH_EVERY: usize = 256;

/// Applies the log from the state's position up to `until` (inclusive), checkpointing
/// when due. Returns the last applied seq; what is applied is visible to readers once
/// published (every [`PUBLISH_EVERY`] events, before `status` shows the seq) and durable
/// after the next checkpoint (the caller forces one when it must be durable now). Used by
/// the thread and by `spoor rebuild`.
pub fn process_range(
    reader: &LogReader,
    state: &mut ProcessorState,
    pipeline: &Pipeline,
    until: u64,
    status: &ProcessorStatus,
    clock: &mut CheckpointClock,
    on_checkpoint: impl FnMut(u64),
) -> Result<u64, StoreError> {
    state.set_batching(true);
    let r = process_batched(reader, state, pipeline, until, status, clock, on_checkpoint);
    state.set_batching(false);
    r
}

fn process_batched(
    reader: &LogReader,
    state: &mut ProcessorState,
    pipeline: &Pipeline,
    until: u64,
    status: &ProcessorStatus,
    clock: &mut CheckpointClock,
    mut on_checkpoint: impl FnMut(u64),
) -> Result<u64, StoreError> {
    while state.processed_seq() < until {
        let from = state.processed_seq() + 1;
        let want = (until - state.processed_seq()).min(2_000) as usize;
        let batch = reader.read_from(from, want)?;
        if batch.is_empty() {
            break;
        }
        for chunk in batch.chunks(PUBLISH_EVERY) {
            for e in chunk {
                apply_event(state, pipeline, e)?;
                state.set_processed(e.seq);
            }
            // Before the seq is published: whoever sees it processed finds them erased.
            erase_suppressed(reader, pipeline)?;
            publish(status, state);
        }
        clock.events += batch.len();
        publish(status, state);
        if clock.checkpoint(state, status, false)? {
            on_checkpoint(state.durable_seq());
        }
    }
    Ok(state.processed_seq())
}

/// Erases from the log the events dropped because they carry a suppressed identifier
/// (an erased person's events that arrived again).
fn erase_suppressed(reader: &LogReader, pipeline: &Pipeline) -> Result<(), StoreError> {
    let dropped = std::mem::take(
        &mut *pipeline
            .suppressed
            .lock()
            .unwrap_or_else(|e| e.into_inner()),
    );
    if !dropped.is_empty() {
        let n = reader.erase(&dropped)?;
        tracing::info!(events = n, "suppressed events erased");
    }
    Ok(())
}

/// Publishes the state's changes to readers, then its figures to `status` (so whoever
/// sees a processed seq there reads state at least that new).
fn publish(status: &ProcessorStatus, state: &mut ProcessorState) {
    state.publish();
    status
        .processed_seq
        .store(state.processed_seq(), Ordering::Release);
    status
        .durable_seq
        .store(state.durable_seq(), Ordering::Release);
    status
        .live_profiles
        .store(state.live_profiles(), Ordering::Relaxed);
}

impl Processor {
    /// Starts the processor thread, tailing `reader`.
    pub fn spawn(
        reader: LogReader,
        store: StateStore,
        mut pipeline: Pipeline,
        cfg: ProcessorConfig,
    ) -> Result<Self, StoreError> {
        let mut state = store.processor_state(cfg.cache_entries)?;
        let status = Arc::new(ProcessorStatus::default());
        publish(&status, &mut state);
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (status.clone(), stop.clone());
        let (tx, rx) = std::sync::mpsc::channel::<Command>();
        let thread = std::thread::Builder::new()
            .name("spoor-processor".into())
            .spawn(move || {
                lower_priority(cfg.nice);
                let mut clock = CheckpointClock::new(&cfg);
                let limits = backfill::Limits::new(&cfg);
                let mut resume = true;
                let resume_after = reader.last_seq();
                let retention_every = pipeline
                    .erase
                    .as_ref()
                    .map(|c| c.retention.interval_minutes)
                    .filter(|m| *m > 0)
                    .map(|m| Duration::from_secs(m * 60));
                let mut last_retention = Instant::now();
                let fail = |e: StoreError, seq: u64| {
                    tracing::error!(error = %e, seq, "processor stopped");
                    st.failed.store(true, Ordering::Relaxed);
                };
                // Definitions changed while the server was down (or a backfill was cut
                // short): recompute before going on.
                let stale = pipeline
                    .engine
                    .defs
                    .applied_revision()
                    .map(|r| r != pipeline.engine.revision);
                if !matches!(stale, Ok(false)) {
                    match backfill::run(&mut state, &store, &reader, &pipeline.engine, &limits) {
                        Ok(b) => *st.last_backfill.lock() = Some(b),
                        Err(e) => return fail(e, state.processed_seq()),
                    }
                    publish(&st, &mut state);
                }
                while !sp.load(Ordering::Relaxed) {
                    if pipeline.engine.reload() {
                        match backfill::run(&mut state, &store, &reader, &pipeline.engine, &limits)
                        {
                            Ok(b) => *st.last_backfill.lock() = Some(b),
                            Err(e) => return fail(e, state.processed_seq()),
                        }
                        publish(&st, &mut state);
                    }
                    match timers::fire_timers(&mut state, &pipeline.engine, &st.timer_lateness) {
                        Ok(Some(now)) => {
                            state.publish();
                            st.timers_at_ms.store(now, Ordering::Release)
                        }
                        Ok(None) => {}
                        Err(e) => return fail(e, state.processed_seq()),
                    }
                    if retention_every.is_some_and(|every| last_retention.elapsed() >= every) {
                        last_retention = Instant::now();
                        let _ = run_retention_now(&mut state, &store, &reader, &pipeline, false);
                        publish(&st, &mut state);
                    }
                    // Unfinished erasures resume once the log written before the restart
                    // is applied again: their person may be in it (not yet checkpointed).
                    if resume && state.processed_seq() >= resume_after {
                        resume = false;
                        resume_erasures(&mut state, &store, &reader, &pipeline);
                        publish(&st, &mut state);
                    }
                    while let Ok(cmd) = rx.try_recv() {
                        let now = chrono::Utc::now().timestamp_millis();
                        match cmd {
                            Command::Split { req, reply } => {
                                let out = split::run_split(
                                    &mut state, &store, &reader, &pipeline, req, now,
                                );
                                if let Err(e) = &out {
                                    tracing::warn!(error = %e, "split refused");
                                }
                                let _ = reply.send(out);
                            }
                            Command::Retention { dry_run, reply } => {
                                let out = run_retention_now(
                                    &mut state, &store, &reader, &pipeline, dry_run,
                                );
                                let _ = reply.send(out);
                            }
                            Command::Erase { job, reply } => {
                                let out =
                                    run_erase_job(&mut state, &store, &reader, &pipeline, &job);
                                if let Some(reply) = reply {
                                    let _ = reply.send(out);
                                }
                            }
                        }
                        publish(&st, &mut state);
                    }
                    let until = reader.last_seq();
                    if state.processed_seq() >= until {
                        // Idle: make what is pending durable once its time has come.
                        if let Err(e) = clock.checkpoint(&mut state, &st, false) {
                            return fail(e, state.processed_seq());
                        }
                        std::thread::sleep(Duration::from_millis(2));
                        continue;
                    }
                    if let Err(e) = process_range(
                        &reader,
                        &mut state,
                        &pipeline,
                        until,
                        &st,
                        &mut clock,
                        |_| {},
                    ) {
                        return fail(e, state.processed_seq() + 1);
                    }
                }
                // Stopping: everything applied becomes durable, so a clean restart replays
                // nothing.
                if let Err(e) = clock.checkpoint(&mut state, &st, true) {
                    fail(e, state.processed_seq());
                }
            })
            .map_err(|e| StoreError::Meta(format!("cannot start the processor thread: {e}")))?;
        Ok(Self {
            status,
            stop,
            thread: std::sync::Mutex::new(Some(thread)),
            commands: std::sync::Mutex::new(tx),
        })
    }

    /// Asks the processor to split (undo a merge or detach an identifier) and waits for it.
    pub async fn split(&self, req: SplitRequest) -> Result<SplitOutcome, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| "processor unavailable".to_string())?
            .send(Command::Split { req, reply })
            .map_err(|_| "the processor has stopped".to_string())?;
        rx.await
            .map_err(|_| "the processor has stopped".to_string())?
    }

    /// Asks the processor to apply (or count, `dry_run`) the retention policies now.
    pub async fn retention(
        &self,
        dry_run: bool,
    ) -> Result<crate::erasure::retention::RetentionReport, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| "processor unavailable".to_string())?
            .send(Command::Retention { dry_run, reply })
            .map_err(|_| "the processor has stopped".to_string())?;
        rx.await
            .map_err(|_| "the processor has stopped".to_string())?
    }

    /// Hands a stored (queued) erasure job to the processor; with `wait`, returns the job
    /// once it has finished.
    pub async fn erase(
        &self,
        job: crate::erasure::ErasureJob,
        wait: bool,
    ) -> Result<Option<crate::erasure::ErasureJob>, String> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.commands
            .lock()
            .map_err(|_| "processor unavailable".to_string())?
            .send(Command::Erase {
                job,
                reply: wait.then_some(reply),
            })
            .map_err(|_| "the processor has stopped".to_string())?;
        if !wait {
            return Ok(None);
        }
        rx.await
            .map_err(|_| "the processor has stopped".to_string())?
            .map(Some)
    }

    /// Stops after the current step (its checkpoint is committed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = t.join();
        }
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs the retention policies (config + API) once and records the report.
fn run_retention_now(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
    dry_run: bool,
) -> Result<crate::erasure::retention::RetentionReport, String> {
    let Some(ctx) = &p.erase else {
        return Err("retention is not available in this process".into());
    };
    let mut policies = ctx.retention.policies.clone();
    policies.extend(ctx.privacy.api_policies()?);
    let now = (p.engine.now)();
    let out = retention::run_retention(state, store, reader, p, &policies, dry_run, now);
    match &out {
        Ok(r) if !dry_run => {
            tracing::info!(
                erased = r.erased,
                profiles = r.profiles_rederived,
                "retention applied"
            );
            ctx.privacy.set_last_retention(r)?;
        }
        Ok(_) => {}
        Err(e) => tracing::error!(error = %e, "retention failed"),
    }
    out
}

/// Runs one erasure job, recording a failure in the job.
fn run_erase_job(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
    job: &crate::erasure::ErasureJob,
) -> Result<crate::erasure::ErasureJob, String> {
    let Some(ctx) = &p.erase else {
        return Err("erasure is not available in this process".into());
    };
    let now = chrono::Utc::now().timestamp_millis();
    let out = erase::run_erase(state, store, reader, p, ctx, job, now);
    match &out {
        Ok(j) => {
            tracing::info!(job = %j.id, events = j.events, profiles = j.profiles, "erasure done")
        }
        Err(e) => {
            tracing::error!(job = %job.id, error = %e, "erasure failed");
            let _ = ctx.privacy.update_job(&job.id, |j| {
                j.status = crate::erasure::JobStatus::Failed;
                j.error = Some(e.clone());
            });
        }
    }
    out
}

/// Runs the erasure jobs a crash or stop left unfinished (every step is idempotent).
fn resume_erasures(
    state: &mut ProcessorState,
    store: &StateStore,
    reader: &LogReader,
    p: &Pipeline,
) {
    let Some(ctx) = &p.erase else {
        return;
    };
    match ctx.privacy.unfinished() {
        Ok(jobs) => {
            for job in jobs {
                tracing::info!(job = %job.id, step = %job.step, "resuming an erasure");
                let _ = run_erase_job(state, store, reader, p, &job);
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read erasure jobs"),
    }
}

/// Re-derives all state from the log into a fresh store, then swaps it in: the old state is
/// kept until the new one is complete, so an interrupted rebuild loses nothing.
/// `progress(processed, total)` is called after every checkpoint. The server must not be
/// running on `data_dir`.
pub fn rebuild(cfg: &crate::config::Config, progress: impl FnMut(u64, u64)) -> Result<u64, String> {
    rebuild_with(cfg, false, progress)
}

/// [`rebuild`], publishing the changes to (absent) readers every [`PUBLISH_EVERY`] events
/// with `as_live`, as the live processor does: what `spoor bench audiences` measures as
/// processing speed. A rebuild proper does not publish (no one reads the fresh state), which
/// spares the copy-on-write of every profile it changes.
pub fn rebuild_with(
    cfg: &crate::config::Config,
    as_live: bool,
    mut progress: impl FnMut(u64, u64),
) -> Result<u64, String> {
    use spoor_store::log::{EventLog, LogOptions};
    let dir = &cfg.storage.data_dir;
    let log = EventLog::open(LogOptions {
        dir: dir.join("log"),
        segment_bytes: cfg.storage.segment_bytes,
    })
    .map_err(|e| format!("cannot open the event log: {e}"))?;
    let reader = log.reader();
    let total = reader.last_seq();
    let fresh = dir.join("state.rebuild");
    if fresh.exists() {
        std::fs::remove_dir_all(&fresh)
            .map_err(|e| format!("cannot clear {}: {e}", fresh.display()))?;
    }
    // The definitions are configuration: the rebuilt state is evaluated under them.
    let meta = std::sync::Arc::new(
        spoor_store::meta::MetaStore::open(&dir.join("meta"))
            .map_err(|e| format!("cannot open the metadata store: {e}"))?,
    );
    let defs = crate::defs::DefsHandle::open(meta).map_err(|e| e.to_string())?;
    let pipeline = Pipeline::new(
        &cfg.identity,
        &cfg.processor,
        Arc::new(cfg.privacy.rules()?),
        defs.clone(),
        Arc::new(|| chrono::Utc::now().timestamp_millis()),
    )?;
    let live = dir.join("state");
    // Split rules are admin decisions, not derived data: carry them into the new state.
    let split_rules = if live.join("state.redb").exists() {
        let current =
            StateStore::open(&live).map_err(|e| format!("cannot read the current state: {e}"))?;
        current
            .reader()
            .and_then(|r| r.split_rules())
            .map_err(|e| e.to_string())?
    } else {
        Vec::new()
    };
    {
        let store = StateStore::open(&fresh).map_err(|e| e.to_string())?;
        let mut state = store
            .processor_state(cfg.processor.cache_entries)
            .map_err(|e| e.to_string())?;
        // Nothing reads the fresh state before it is swapped in.
        if !as_live {
            state.without_readers();
        }
        for r in split_rules {
            spoor_core::identity::IdentityStore::add_split_rule(&mut state, r);
        }
        let status = ProcessorStatus::default();
        let mut clock = CheckpointClock::new(&cfg.processor);
        process_range(
            &reader,
            &mut state,
            &pipeline,
            total,
            &status,
            &mut clock,
            |done| progress(done, total),
        )
        .map_err(|e| e.to_string())?;
        clock
            .checkpoint(&mut state, &status, true)
            .map_err(|e| e.to_string())?;
        progress(total, total);
        defs.set_applied(&pipeline.engine.definitions)
            .map_err(|e| e.to_string())?;
    }

    let old = dir.join("state.old");
    if old.exists() {
        std::fs::remove_dir_all(&old)
            .map_err(|e| format!("cannot clear {}: {e}", old.display()))?;
    }
    if live.exists() {
        std::fs::rename(&live, &old)
            .map_err(|e| format!("cannot move the old state aside: {e}"))?;
    }
    std::fs::rename(&fresh, &live).map_err(|e| format!("cannot install the rebuilt state: {e}"))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).map_err(|e| format!("cannot remove the old state: {e}"))?;
    }
    Ok(total)
}
