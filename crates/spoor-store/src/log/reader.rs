//! The read side: [`LogReader`] handles and the streaming [`LogIter`].
//!
//! Readers share the segment list with the writer behind an `RwLock` held only for a lookup
//! (microseconds), then read with their own file descriptors and `pread`, bounded by the
//! durable length published after each fdatasync; so they never see a record that is not
//! durable, and never block the writer for the duration of I/O.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::advice;
use super::frame::{ChunkReader, FRAME_HEADER, SMALL_CHUNK};
use super::segment::{SegMeta, INDEX_EVERY};
use super::LogEntry;
use crate::error::{StoreError, StoreResult};

/// State shared by the [`EventLog`](super::EventLog) and its readers.
pub(crate) struct Shared {
    pub segs: RwLock<Vec<SegMeta>>,
    /// Last durable seq, for a lock-free `last_seq()`.
    pub last_seq: AtomicU64,
    /// The log's directory (the eraser's journal lives there).
    pub dir: PathBuf,
    /// Readers hold it (shared) while they read frames; the eraser (exclusive) while it
    /// overwrites some, so no read sees a half-erased frame. See `erase.rs`.
    pub erase: RwLock<()>,
}

impl Shared {
    /// Lock poisoning cannot leave the segment list half-updated (every update is a few
    /// plain assignments), so a poisoned lock is simply entered.
    pub(crate) fn read_segs(&self) -> RwLockReadGuard<'_, Vec<SegMeta>> {
        self.segs.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_segs(&self) -> RwLockWriteGuard<'_, Vec<SegMeta>> {
        self.segs.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the frame of `seq` starts; lets a streaming read continue without a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    seg_first: u64,
    offset: u64,
    seq: u64,
}

/// A segment region to read: frames from `start_seq` at `start_off` up to `seg_last`.
struct Located {
    path: PathBuf,
    first_seq: u64,
    start_off: u64,
    start_seq: u64,
    seg_last: u64,
    durable_len: u64,
    /// The newest segment (the one being appended to, which live reads keep hot).
    is_last: bool,
}

/// A cheap, cloneable handle for concurrent reads of durable records.
#[derive(Clone)]
pub struct LogReader {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

/// Entries per batch and payload bytes per batch fetched by [`LogIter`]: bounds its memory.
const ITER_BATCH: usize = 1024;
const ITER_BATCH_BYTES: usize = 1 << 20;

impl LogReader {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        LogReader { shared }
    }

    /// Seq of the last durable record; 0 when the log is empty.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    /// Up to `max` entries with `seq >= from`, ascending.
    pub fn read_from(&self, from: u64, max: usize) -> StoreResult<Vec<LogEntry>> {
        let mut out = Vec::new();
        self.read_into(from.max(1), max, usize::MAX, None, false, &mut out)?;
        Ok(out)
    }

    /// [`Self::read_from`] for a scan of the whole log (a backfill): the pages read are
    /// dropped from the OS page cache afterwards, except in the newest segment. A scan of
    /// gigabytes of log would otherwise evict what is read again soon — the state store's
    /// pages, which the backfill reads next and the processor after it — much as a
    /// database reads a sequential scan through a small ring of buffers. Linux only (a
    /// no-op elsewhere).
    pub fn read_once(&self, from: u64, max: usize) -> StoreResult<Vec<LogEntry>> {
        let mut out = Vec::new();
        self.read_into(from.max(1), max, usize::MAX, None, true, &mut out)?;
        Ok(out)
    }

    /// Up to `max` entries with `seq < before`, descending (newest first);
    /// `before = u64::MAX` reads from the end.
    pub fn read_back(&self, before: u64, max: usize) -> StoreResult<Vec<LogEntry>> {
        let end = before.min(self.last_seq().saturating_add(1));
        if end <= 1 || max == 0 {
            return Ok(Vec::new());
        }
        let lo = end.saturating_sub(max as u64).max(1);
        let mut out = Vec::with_capacity((end - lo) as usize);
        self.read_into(lo, (end - lo) as usize, usize::MAX, None, false, &mut out)?;
        out.reverse();
        Ok(out)
    }

    /// Streams entries with `seq >= from` in bounded batches, for export and replay of
    /// millions of events. It follows the log as it grows and ends when a fetch finds no
    /// newer durable record. After an error it yields nothing more.
    pub fn iter_from(&self, from: u64) -> LogIter {
        LogIter {
            reader: self.clone(),
            next: from.max(1),
            hint: None,
            buf: Vec::new().into_iter(),
            pending_err: None,
            done: false,
        }
    }

    /// Appends to `out` up to `max` entries (and about `max_bytes` of payload) with
    /// `seq >= from`; returns where the next frame starts, for the next call. `once`: see
    /// [`Self::read_once`].
    fn read_into(
        &self,
        from: u64,
        max: usize,
        max_bytes: usize,
        mut hint: Option<Pos>,
        once: bool,
        out: &mut Vec<LogEntry>,
    ) -> StoreResult<Option<Pos>> {
        let (mut next, mut bytes, limit) = (from, 0usize, out.len() + max);
        let _erasing = self.shared.erase.read().unwrap_or_else(|e| e.into_inner());
        while out.len() < limit && bytes < max_bytes {
            let Some(loc) = self.locate(next, hint) else {
                break;
            };
            let file = File::open(&loc.path).map_err(|e| StoreError::io(&loc.path, e))?;
            // A read of a few entries fetches small chunks (see `SMALL_CHUNK`).
            let mut chunks = if max <= 64 {
                ChunkReader::with_chunk(&file, loc.durable_len, SMALL_CHUNK)
            } else {
                ChunkReader::new(&file, loc.durable_len)
            };
            let (mut off, mut seq) = (loc.start_off, loc.start_seq);
            while seq <= loc.seg_last && out.len() < limit && bytes < max_bytes {
                let (h, payload) = chunks
                    .frame(off, seq)
                    .map_err(|e| StoreError::io(&loc.path, e))?
                    .map_err(|e| StoreError::corrupt(&loc.path, off, e.describe()))?;
                if seq >= next {
                    bytes += payload.len();
                    out.push(LogEntry {
                        seq,
                        timestamp_ms: h.timestamp_ms,
                        received_ms: h.received_ms,
                        dedupe_key: (h.dedupe_key != 0).then_some(h.dedupe_key),
                        payload: payload.to_vec(),
                    });
                }
                off += (FRAME_HEADER + h.len as usize) as u64;
                seq += 1;
            }
            if once && !loc.is_last {
                advice::drop_cached(&file, loc.start_off, off);
            }
            next = seq;
            hint = Some(Pos {
                seg_first: loc.first_seq,
                offset: off,
                seq,
            });
        }
        Ok(hint)
    }

    /// Finds the segment holding `seq` (or the first segment, if `seq` is before it) and
    /// the indexed frame at or before it. `None` when `seq` is not durable yet.
    fn locate(&self, seq: u64, hint: Option<Pos>) -> Option<Located> {
        let segs = self.shared.read_segs();
        let i = segs.partition_point(|s| s.first_seq <= seq).max(1);
        let s = segs.get(i - 1)?;
        let seq = seq.max(s.first_seq);
        if seq > s.last_seq {
            return None;
        }
        let (start_off, start_seq) = match hint {
            Some(h) if h.seg_first == s.first_seq && h.seq == seq => (h.offset, h.seq),
            _ => {
                let k = ((seq - s.first_seq) / INDEX_EVERY) as usize;
                let k = k.min(s.offsets.len().checked_sub(1)?);
                (s.offsets[k], s.first_seq + k as u64 * INDEX_EVERY)
            }
        };
        Some(Located {
            is_last: i == segs.len(),
            path: s.path.clone(),
            first_seq: s.first_seq,
            start_off,
            start_seq,
            seg_last: s.last_seq,
            durable_len: s.len,
        })
    }
}

/// Streaming iterator returned by [`LogReader::iter_from`]; holds at most one batch
/// (~1 MiB of payload) in memory.
pub struct LogIter {
    reader: LogReader,
    next: u64,
    hint: Option<Pos>,
    buf: std::vec::IntoIter<LogEntry>,
    /// An error met after some good entries of the batch; yielded once those are out.
    pending_err: Option<StoreError>,
    done: bool,
}

impl Iterator for LogIter {
    type Item = StoreResult<LogEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.buf.next() {
            return Some(Ok(e));
        }
        if let Some(e) = self.pending_err.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        let res = self.reader.read_into(
            self.next,
            ITER_BATCH,
            ITER_BATCH_BYTES,
            self.hint,
            false,
            &mut out,
        );
        match res {
            Ok(hint) => self.hint = hint,
            Err(e) if out.is_empty() => {
                self.done = true;
                return Some(Err(e));
            }
            Err(e) => self.pending_err = Some(e),
        }
        self.next = out.last()?.seq + 1;
        self.buf = out.into_iter();
        self.buf.next().map(Ok)
    }
}
