//! The syncer thread of the log writer: it fdatasyncs what the writer thread wrote, then
//! publishes it to readers and answers the submitters. Writing group N+1 overlaps with
//! syncing group N; an answer is only ever sent after an fdatasync that started after its
//! group was written.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::event_log::{self, Unsynced};
use super::reader::Shared;
use super::writer::{AppendOutcome, BeforeSync, FsyncHook, Status};
use crate::error::{StoreError, StoreResult};

pub(super) type ReplyTo = (oneshot::Sender<StoreResult<AppendOutcome>>, AppendOutcome);

/// Work for the syncer.
pub(super) enum Job {
    /// Make `write` durable (nothing to sync if `None`: a group of duplicates only, which is
    /// answered once every earlier job is durable), publish it, then send the replies.
    Group {
        write: Option<Unsynced>,
        replies: Vec<ReplyTo>,
    },
    /// Answered (true = all earlier jobs durable and published) once every earlier job is
    /// done; the writer waits on it before rolling a segment.
    Barrier(mpsc::SyncSender<bool>),
}

/// Called by [`EventLog::write_refs`] before it closes a segment: has the syncer make
/// the segment's tail (this group's part, if any, and every earlier job) durable and
/// published, and waits for that.
pub(super) fn sync_before_roll(
    jobs: Option<&SyncSender<Job>>,
    tail: Option<Unsynced>,
) -> StoreResult<()> {
    let Some(jobs) = jobs else {
        return Err(StoreError::Closed);
    };
    if let Some(u) = tail {
        let job = Job::Group {
            write: Some(u),
            replies: Vec::new(),
        };
        if jobs.send(job).is_err() {
            return Err(StoreError::Closed);
        }
    }
    let (done_tx, done) = mpsc::sync_channel(1);
    if jobs.send(Job::Barrier(done_tx)).is_err() {
        return Err(StoreError::Closed);
    }
    match done.recv() {
        Ok(true) => Ok(()),
        // The syncer failed (and logged why): the log is stopped.
        _ => Err(StoreError::LogFailed),
    }
}

/// The syncer thread: fdatasyncs what the writer wrote, publishes it, answers submitters.
pub(super) struct Syncer {
    pub(super) shared: Arc<Shared>,
    pub(super) durable: watch::Sender<u64>,
    pub(super) status: Arc<Status>,
    pub(super) on_fsync: Option<FsyncHook>,
    pub(super) before_sync: Option<BeforeSync>,
    /// Set by the first failed fdatasync: every later job fails with it.
    pub(super) failure: Option<Arc<StoreError>>,
}

/// Most jobs merged into one fdatasync.
const MAX_JOBS_PER_SYNC: usize = 64;

impl Syncer {
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let mut batch = Vec::new();
        while let Ok(job) = rx.recv() {
            batch.push(job);
            while batch.len() < MAX_JOBS_PER_SYNC {
                match rx.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            let mut groups = Vec::new();
            for job in batch.drain(..) {
                match job {
                    Job::Group { write, replies } => groups.push((write, replies)),
                    Job::Barrier(done) => {
                        self.complete(&mut groups);
                        let _ = done.send(self.failure.is_none());
                    }
                }
            }
            self.complete(&mut groups);
        }
    }

    /// One fdatasync for all of `groups` (written to the same segment: rolls are behind a
    /// barrier), then publish and answer them; or fail them all.
    fn complete(&mut self, groups: &mut Vec<(Option<Unsynced>, Vec<ReplyTo>)>) {
        if groups.is_empty() {
            return;
        }
        let mut merged: Option<Unsynced> = None;
        let mut answers = Vec::new();
        for (write, replies) in groups.drain(..) {
            if let Some(w) = write {
                match &mut merged {
                    Some(m) => m.absorb(w),
                    None => merged = Some(w),
                }
            }
            answers.extend(replies);
        }
        if self.failure.is_none() {
            if let Some(m) = merged {
                if let Err(e) = self.sync_and_publish(m) {
                    tracing::error!(error = %e, "event log fdatasync failed; refusing appends until restart");
                    self.status.failed.store(true, Ordering::Release);
                    self.failure = Some(Arc::new(e));
                }
            }
        }
        match &self.failure {
            None => {
                for (reply, outcome) in answers {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Some(e) => {
                for (reply, _) in answers {
                    let _ = reply.send(Err(StoreError::AppendFailed(e.clone())));
                }
            }
        }
    }

    fn sync_and_publish(&mut self, m: Unsynced) -> StoreResult<()> {
        if let Some(hook) = &self.before_sync {
            hook().map_err(|e| StoreError::io(&m.path, e))?;
        }
        let took = event_log::sync(&m)?;
        if let Some(hook) = &self.on_fsync {
            hook(took);
        }
        let (last_seq, size) = (m.last_seq, m.size_bytes);
        event_log::publish(&self.shared, m);
        self.status.size_bytes.store(size, Ordering::Relaxed);
        self.durable.send_replace(last_seq);
        Ok(())
    }
}
