//! The durable, append-only event log: the source of truth for every accepted event.
//!
//! An event is acknowledged (HTTP 200) only after its record is written *and* fdatasynced,
//! so it survives `kill -9` and power loss. Appends are single-writer and batched (group
//! commit: one fdatasync per group of submissions, see [`LogWriter`]); reads are concurrent
//! and only ever see durable records.
//!
//! # Write pipeline
//!
//! [`LogWriter`] runs two threads. The *writer* dedupes a group and copies it into the page
//! cache (one `pwrite`), hands the syncer "durable once synced up to offset Y / seq X, then
//! answer these submitters", and goes on with the next group. The *syncer* takes every
//! job waiting, runs one fdatasync, which started after all their writes had completed,
//! then publishes the new durable length/seq to readers and only then answers the
//! submitters, in order. So copying group N+1 overlaps the fdatasync of group N, and:
//! - no acknowledgement and no read ever precedes an fdatasync covering the record (a
//!   duplicate-only submission is answered in order too, so never before its original is
//!   durable);
//! - a segment is closed only once all of it is durable and published (the writer waits
//!   for the syncer, a barrier at each roll), and its successor is created after that.
//!
//! The syncer queue is short (one job): when the disk falls behind,
//! the writer blocks, the submission queue fills and appends get `Busy`.
//!
//! # Preallocation
//!
//! Segment files are grown ahead of the write position with `fallocate` (Linux; 64 MiB at
//! a time, not past `segment_bytes`), so writes fill already-allocated space instead of
//! extending the file. (On ext4, fdatasync still commits the extents' switch from
//! "unwritten" to "written", so the gain is modest.) The allocated space reads as zeroes
//! and is never part of the log:
//! - readers are bounded by the durable length, never the file size;
//! - a closed segment is cut back to its length and that is fsynced *before* its successor
//!   exists, so a closed segment's file size is its length (which the `.idx` check uses);
//! - a clean close cuts the active segment back too; after a crash its zero tail is an
//!   invalid frame like any torn tail and is cut at open (logged at info level if it is
//!   all zeroes, as a warning otherwise). Preallocation failing (e.g. an unsupported file
//!   system) just turns it off for that segment.
//!
//! # On-disk format (version 1)
//!
//! A log is a directory of **segment files** named `NNNNNNNNNNNNNNNNNNNN.seg`, the
//! zero-padded 20-digit seq of the first record they hold (`00000000000000000001.seg`
//! first). Seqs start at 1 and are dense: each segment starts at the previous one's last
//! seq + 1. A segment is rolled before a record would take it past
//! [`LogOptions::segment_bytes`] (a single record larger than that gets a segment alone).
//!
//! A segment starts with the 8-byte magic `SPRLOG01` (format version in the last two bytes),
//! then frames back to back. Each **frame** is a 40-byte little-endian header then the
//! payload:
//!
//! | offset | field          | type | notes                                        |
//! |-------:|----------------|------|----------------------------------------------|
//! | 0      | payload length | u32  | at most [`MAX_PAYLOAD_BYTES`]                 |
//! | 4      | crc32          | u32  | crc32 (IEEE, `crc32fast`) of bytes 8.. of the frame, payload included |
//! | 8      | seq            | u64  | must be the previous frame's seq + 1          |
//! | 16     | timestamp_ms   | i64  | event time                                    |
//! | 24     | received_ms    | i64  | server receive time; drives the dedupe window |
//! | 32     | dedupe_key     | u64  | 0 = none                                      |
//! | 40     | payload        | [u8] | opaque to the log                             |
//!
//! Closed segments have a side file `NNNN….idx`, written at roll: magic `SPRIDX01`, then
//! u64s `first_seq, last_seq, segment_len, n, offsets[n]`, then a crc32 of all that. It is
//! the **sparse index**: `offsets[k]` is the byte offset of seq `first_seq + 256·k`, so
//! finding a seq is a division plus a scan of at most 255 frames. The `.idx` is a cache: it
//! is not fsynced, and at open it is trusted only if its crc, `first_seq` and
//! `segment_len` (= the segment's file size) agree; otherwise the segment is scanned and the
//! `.idx` rewritten. This is what keeps start-up fast with many GB of log: only the last
//! (active) segment is always scanned.
//!
//! # Recovery at open
//!
//! - The **active** (last) segment is validated frame by frame. The first frame that is
//!   truncated, fails its crc or has an impossible length marks a torn tail (a crash in the
//!   middle of a group that was never acknowledged): the file is truncated there, fsynced,
//!   and a warning says how many bytes were cut. A frame with a valid crc but the wrong seq
//!   cannot come from a crash, so it is reported as corruption instead.
//! - A **closed** segment was fsynced before its successor was created, so any bad frame in
//!   it (found when its `.idx` is missing and it is scanned, or later while reading) is an
//!   error naming the file and offset ([`StoreError::Corrupt`]); so is a seq gap between
//!   segments. Nothing is repaired silently there.
//!
//! # Failure policy
//!
//! If a write or fdatasync fails, the [`EventLog`] refuses every further append
//! ([`StoreError::LogFailed`]) until it is reopened. With the pipeline, a failed fdatasync
//! fails every group not yet acknowledged (the one being synced and all written after it),
//! and the writer takes back their dedupe entries. After a failed fsync the kernel may have
//! dropped dirty pages and cleared the error, so retrying on the same file descriptor could
//! report a false success; reopening re-validates what really is on disk. Records of a
//! failed group are "not known durable": they may or may not surface after restart, which
//! is why clients retry with the same dedupe key.

mod advice;
mod dedupe;
mod erase;
mod event_log;
mod frame;
mod reader;
mod segment;
mod syncer;
mod writer;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use crate::error::StoreError;
pub use erase::is_tombstone;
pub use event_log::EventLog;
pub use frame::MAX_PAYLOAD_BYTES;
pub use reader::{LogIter, LogReader};
pub use writer::{AppendOutcome, FsyncHook, LogWriter, NowMs, WriterOptions};

/// The log's error type is the crate's.
pub type LogError = StoreError;

/// Default segment size: big enough that a segment holds ~400 k events (few files, one
/// `.idx` of ~12 KiB each), small enough that scanning the active one at start-up is quick.
pub const DEFAULT_SEGMENT_BYTES: u64 = 256 * 1024 * 1024;

/// Where the log lives and how it is cut into files.
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// Directory of segment files; created if missing.
    pub dir: PathBuf,
    /// Roll to a new segment before one would exceed this many bytes.
    pub segment_bytes: u64,
}

impl LogOptions {
    /// Options with the default segment size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogOptions {
            dir: dir.into(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
        }
    }
}

/// A record to append; the log assigns its seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIn {
    /// Event time (ms since the Unix epoch).
    pub timestamp_ms: i64,
    /// When the server received it (ms); the dedupe window is measured on this.
    pub received_ms: i64,
    /// Idempotency key (e.g. a hash of the message id); `Some(0)` is stored as "none".
    pub dedupe_key: Option<u64>,
    pub payload: Vec<u8>,
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    pub timestamp_ms: i64,
    pub received_ms: i64,
    pub dedupe_key: Option<u64>,
    pub payload: Vec<u8>,
}

/// fsyncs a directory (after a rename in it), for the other stores' file swaps.
pub fn sync_dir_pub(dir: &std::path::Path) -> Result<(), StoreError> {
    segment::sync_dir(dir)
}
