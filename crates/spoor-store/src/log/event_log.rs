//! [`EventLog`]: opening (with recovery), appending with one write + one fdatasync per
//! segment touched, and rolling segments.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::frame::{
    self, FrameError, FRAME_HEADER, MAX_PAYLOAD_BYTES, SEGMENT_HEADER, SEGMENT_MAGIC,
};
use super::reader::{LogReader, Shared};
use super::segment::{self, seg_path, SegMeta, INDEX_EVERY};
use super::{LogOptions, RecordIn};
use crate::error::{StoreError, StoreResult};

/// Owns the segment files. Appending is single-writer (`&mut self`); any number of
/// [`LogReader`]s, each opening its own file descriptors, read concurrently and see only
/// records that have been fdatasynced.
pub struct EventLog {
    opts: LogOptions,
    shared: Arc<Shared>,
    /// The active (last) segment, opened for writing.
    file: File,
    active_path: PathBuf,
    active_first: u64,
    /// Durable length of the active segment; the next write goes here.
    active_len: u64,
    next_seq: u64,
    closed_bytes: u64,
    /// Encoding buffer reused across appends, so a group costs no allocation.
    buf: Vec<u8>,
    /// Set by a failed write/fsync; see the failure policy in the module docs.
    failed: bool,
    last_sync: Duration,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.opts.dir)
            .field("last_seq", &self.last_seq())
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl EventLog {
    /// Opens (or creates) the log in `opts.dir`, recovering a torn tail of the active
    /// segment and checking that closed segments chain without seq gaps.
    pub fn open(opts: LogOptions) -> StoreResult<Self> {
        if opts.segment_bytes < SEGMENT_HEADER + FRAME_HEADER as u64 {
            return Err(StoreError::InvalidOptions(format!(
                "segment_bytes must be at least {}",
                SEGMENT_HEADER + FRAME_HEADER as u64
            )));
        }
        let dir = opts.dir.clone();
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let firsts = segment::list_segments(&dir)?;
        let mut segs: Vec<SegMeta> = Vec::with_capacity(firsts.len() + 1);
        let (file, active) = match firsts.split_last() {
            None => {
                let file = create_segment(&dir, 1)?;
                (file, empty_meta(&dir, 1))
            }
            Some((&last, closed)) => {
                for &first in closed {
                    let meta = segment::load_closed(&dir, first)?;
                    check_chain(segs.last(), &meta)?;
                    segs.push(meta);
                }
                let (file, meta) = recover_active(&dir, last)?;
                check_chain(segs.last(), &meta)?;
                (file, meta)
            }
        };
        let closed_bytes = segs.iter().map(|s| s.len).sum();
        let (active_first, active_len, last_seq) = (active.first_seq, active.len, active.last_seq);
        let active_path = active.path.clone();
        segs.push(active);
        let shared = Arc::new(Shared {
            segs: RwLock::new(segs),
            last_seq: AtomicU64::new(last_seq),
        });
        Ok(EventLog {
            opts,
            shared,
            file,
            active_path,
            active_first,
            active_len,
            next_seq: last_seq + 1,
            closed_bytes,
            buf: Vec::new(),
            failed: false,
            last_sync: Duration::ZERO,
        })
    }

    /// Writes all records, fdatasyncs, then makes them visible to readers. Returns the seq
    /// of the first one (for an empty slice: the seq the next record will get).
    ///
    /// Records are validated first (nothing is written if one is too large). On an I/O
    /// error the log stops accepting appends; see the module docs.
    pub fn append(&mut self, recs: &[RecordIn]) -> StoreResult<u64> {
        let refs: Vec<&RecordIn> = recs.iter().collect();
        self.append_refs(&refs)
    }

    /// [`append`](Self::append) over borrowed records, so the group-commit writer can
    /// append the records of many submissions without moving them.
    pub(crate) fn append_refs(&mut self, recs: &[&RecordIn]) -> StoreResult<u64> {
        if self.failed {
            return Err(StoreError::LogFailed);
        }
        if let Some(r) = recs.iter().find(|r| r.payload.len() > MAX_PAYLOAD_BYTES) {
            return Err(StoreError::RecordTooLarge {
                len: r.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let first = self.next_seq;
        self.last_sync = Duration::ZERO;
        if let Err(e) = self.write_group(recs) {
            self.failed = true;
            tracing::error!(error = %e, "event log append failed; refusing further appends");
            return Err(e);
        }
        Ok(first)
    }

    fn write_group(&mut self, recs: &[&RecordIn]) -> StoreResult<()> {
        self.buf.clear();
        let mut new_offsets = Vec::new();
        let mut seq = self.next_seq;
        for rec in recs {
            let pending_end = self.active_len + self.buf.len() as u64;
            let frame_len = (FRAME_HEADER + rec.payload.len()) as u64;
            if pending_end > SEGMENT_HEADER && pending_end + frame_len > self.opts.segment_bytes {
                self.flush(seq - 1, &mut new_offsets)?;
                self.roll(seq)?;
            }
            if (seq - self.active_first) % INDEX_EVERY == 0 {
                new_offsets.push(self.active_len + self.buf.len() as u64);
            }
            frame::encode(&mut self.buf, seq, rec);
            seq += 1;
        }
        self.flush(seq - 1, &mut new_offsets)
    }

    /// Writes the buffered frames (ending with `last_seq`) to the active segment in one
    /// call, fdatasyncs, and publishes them to readers.
    fn flush(&mut self, last_seq: u64, new_offsets: &mut Vec<u64>) -> StoreResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let io = |e| StoreError::io(&self.active_path, e);
        (&self.file)
            .seek(SeekFrom::Start(self.active_len))
            .map_err(io)?;
        (&self.file).write_all(&self.buf).map_err(io)?;
        let started = Instant::now();
        self.file.sync_data().map_err(io)?;
        self.last_sync += started.elapsed();
        self.active_len += self.buf.len() as u64;
        self.buf.clear();
        self.next_seq = last_seq + 1;
        {
            let mut segs = self.shared.write_segs();
            if let Some(m) = segs.last_mut() {
                m.offsets.append(new_offsets);
                m.last_seq = last_seq;
                m.len = self.active_len;
            }
        }
        self.shared.last_seq.store(last_seq, Ordering::Release);
        Ok(())
    }

    /// Closes the active segment (writing its `.idx`) and starts one at `first_seq`.
    fn roll(&mut self, first_seq: u64) -> StoreResult<()> {
        let closed = self.shared.read_segs().last().cloned();
        if let Some(meta) = closed {
            if let Err(e) = segment::write_idx(&self.opts.dir, &meta) {
                // The index is a cache; open rebuilds it by scanning.
                tracing::warn!(error = %e, "could not write segment index");
            }
        }
        let file = create_segment(&self.opts.dir, first_seq)?;
        self.closed_bytes += self.active_len;
        self.file = file;
        self.active_path = seg_path(&self.opts.dir, first_seq);
        self.active_first = first_seq;
        self.active_len = SEGMENT_HEADER;
        self.shared
            .write_segs()
            .push(empty_meta(&self.opts.dir, first_seq));
        Ok(())
    }

    /// Seq of the last durable record; 0 when the log is empty.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A handle for concurrent reads; cheap to clone.
    pub fn reader(&self) -> LogReader {
        LogReader::new(self.shared.clone())
    }

    /// Bytes on disk in segment files (headers included, `.idx` files not).
    pub fn size_bytes(&self) -> u64 {
        self.closed_bytes + self.active_len
    }

    /// The directory of the log.
    pub fn dir(&self) -> &Path {
        &self.opts.dir
    }

    /// Time spent in fdatasync by the last append (for the writer's metrics hook).
    pub(crate) fn last_sync_duration(&self) -> Duration {
        self.last_sync
    }
}

fn empty_meta(dir: &Path, first_seq: u64) -> SegMeta {
    SegMeta {
        first_seq,
        path: seg_path(dir, first_seq),
        last_seq: first_seq - 1,
        len: SEGMENT_HEADER,
        offsets: Vec::new(),
    }
}

/// Creates a segment holding only its header, durable (file and directory entry) before
/// any record acknowledged from it can depend on it.
fn create_segment(dir: &Path, first_seq: u64) -> StoreResult<File> {
    let path = seg_path(dir, first_seq);
    let io = |e| StoreError::io(&path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(SEGMENT_MAGIC).map_err(io)?;
    file.sync_data().map_err(io)?;
    segment::sync_dir(dir)?;
    Ok(file)
}

/// Opens the last segment for writing, validates every frame and truncates a torn tail.
fn recover_active(dir: &Path, first_seq: u64) -> StoreResult<(File, SegMeta)> {
    let path = seg_path(dir, first_seq);
    let io = |e| StoreError::io(&path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    if !segment::check_magic(&file, &path, file_len)? {
        // Crash while the segment was being created: nothing in it was ever acknowledged.
        tracing::warn!(path = %path.display(), bytes = file_len, "rewriting header of new segment");
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(SEGMENT_MAGIC).map_err(io)?;
        file.sync_all().map_err(io)?;
        return Ok((file, empty_meta(dir, first_seq)));
    }
    let scan = segment::scan(&file, &path, first_seq, file_len)?;
    match scan.bad {
        None => {}
        Some((offset, err @ FrameError::SeqMismatch { .. })) => {
            return Err(StoreError::corrupt(&path, offset, err.describe()));
        }
        Some((offset, err)) => {
            tracing::warn!(
                path = %path.display(),
                offset,
                bytes_cut = file_len - offset,
                reason = %err.describe(),
                "truncating torn tail of event log"
            );
            file.set_len(offset).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
    }
    Ok((file, scan.meta))
}

/// Segments must chain: each starts right after the previous one's last seq.
fn check_chain(prev: Option<&SegMeta>, next: &SegMeta) -> StoreResult<()> {
    match prev {
        Some(p) if p.last_seq + 1 != next.first_seq => Err(StoreError::corrupt(
            &next.path,
            0,
            format!(
                "seq gap: previous segment ends at seq {}, this one starts at {}",
                p.last_seq, next.first_seq
            ),
        )),
        _ => Ok(()),
    }
}
