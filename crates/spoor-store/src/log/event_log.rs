//! [`EventLog`]: opening (with recovery), writing groups of frames, making them durable
//! (fdatasync, then publishing to readers), preallocating and rolling segments.
//!
//! Writing and syncing are separate steps ([`EventLog::write_refs`] returns an [`Unsynced`]
//! that [`make_durable`] completes) so that the group-commit writer can copy group N+1 into
//! the page cache while group N is being fdatasynced on another thread.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
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

/// Space reserved ahead of the write position at a time (capped by the segment size).
const PREALLOC_CHUNK: u64 = 64 * 1024 * 1024;

/// Owns the segment files. Appending is single-writer (`&mut self`); any number of
/// [`LogReader`]s, each opening its own file descriptors, read concurrently and see only
/// records that have been fdatasynced.
pub struct EventLog {
    opts: LogOptions,
    shared: Arc<Shared>,
    /// The active (last) segment, opened for writing; shared with the writer's syncer.
    file: Arc<File>,
    active_path: PathBuf,
    active_first: u64,
    /// Written length of the active segment (durable once the last [`Unsynced`] returned
    /// is); the next write goes here.
    active_len: u64,
    /// Size of the active segment file: `active_len` plus preallocated (zero) space.
    file_len: u64,
    /// False once preallocation failed on this segment (e.g. unsupported file system).
    prealloc: bool,
    next_seq: u64,
    closed_bytes: u64,
    /// Encoding buffer reused across appends, so a group costs no allocation.
    buf: Vec<u8>,
    /// Set by a failed write/fsync; see the failure policy in the module docs.
    failed: bool,
}

/// Frames written to the active segment (in the page cache) but not yet fdatasynced nor
/// visible to readers. [`make_durable`] (or the writer's syncer) completes them.
pub(crate) struct Unsynced {
    pub file: Arc<File>,
    pub path: PathBuf,
    /// First seq of the segment written to.
    pub seg_first: u64,
    /// Length of the segment once these frames are durable.
    pub end_len: u64,
    /// Seq of the last frame written.
    pub last_seq: u64,
    /// Sparse-index entries of the new frames.
    pub offsets: Vec<u64>,
    /// Bytes of log (all segments) once these frames are durable.
    pub size_bytes: u64,
}

impl Unsynced {
    /// Merges a later write to the same segment into this one.
    pub(crate) fn absorb(&mut self, later: Unsynced) {
        debug_assert_eq!(self.seg_first, later.seg_first);
        let Unsynced {
            file,
            end_len,
            last_seq,
            mut offsets,
            size_bytes,
            ..
        } = later;
        self.file = file;
        self.end_len = end_len;
        self.last_seq = last_seq;
        self.offsets.append(&mut offsets);
        self.size_bytes = size_bytes;
    }
}

/// Makes the readers see `u` (whose frames must already be durable).
pub(crate) fn publish(shared: &Shared, u: Unsynced) {
    {
        let mut segs = shared.write_segs();
        if let Some(m) = segs.last_mut() {
            debug_assert_eq!(
                m.first_seq, u.seg_first,
                "publish to the active segment only"
            );
            let mut offsets = u.offsets;
            m.offsets.append(&mut offsets);
            m.last_seq = u.last_seq;
            m.len = u.end_len;
        }
    }
    shared.last_seq.store(u.last_seq, Ordering::Release);
}

/// fdatasyncs the file of `u`; returns the time it took.
pub(crate) fn sync(u: &Unsynced) -> StoreResult<Duration> {
    let started = Instant::now();
    u.file.sync_data().map_err(|e| StoreError::io(&u.path, e))?;
    Ok(started.elapsed())
}

/// fdatasyncs `u` and publishes it (the synchronous path of [`EventLog::append`]).
pub(crate) fn make_durable(shared: &Shared, u: Unsynced) -> StoreResult<Duration> {
    let took = sync(&u)?;
    publish(shared, u);
    Ok(took)
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
        // An erasure a crash interrupted is completed before any frame is validated.
        super::erase::redo_journal(&dir)?;
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
        // After recovery the file ends exactly at the last valid frame.
        let file_len = active.len;
        let closed_bytes = segs.iter().map(|s| s.len).sum();
        let (active_first, active_len, last_seq) = (active.first_seq, active.len, active.last_seq);
        let active_path = active.path.clone();
        segs.push(active);
        let shared = Arc::new(Shared {
            segs: RwLock::new(segs),
            last_seq: AtomicU64::new(last_seq),
            dir: dir.clone(),
            erase: RwLock::new(()),
        });
        Ok(EventLog {
            opts,
            shared,
            file: Arc::new(file),
            active_path,
            active_first,
            active_len,
            file_len,
            prealloc: true,
            next_seq: last_seq + 1,
            closed_bytes,
            buf: Vec::new(),
            failed: false,
        })
    }

    /// Writes all records, fdatasyncs, then makes them visible to readers. Returns the seq
    /// of the first one (for an empty slice: the seq the next record will get).
    ///
    /// Records are validated first (nothing is written if one is too large). On an I/O
    /// error the log stops accepting appends; see the module docs.
    pub fn append(&mut self, recs: &[RecordIn]) -> StoreResult<u64> {
        let refs: Vec<&RecordIn> = recs.iter().collect();
        let first = self.next_seq;
        let shared = self.shared.clone();
        // `write_refs` fails the log itself on an I/O error (not on a rejected record).
        let written = self.write_refs(&refs, &mut |u| {
            if let Some(u) = u {
                make_durable(&shared, u)?;
            }
            Ok(())
        })?;
        if let Err(e) = written.map_or(Ok(Duration::ZERO), |u| make_durable(&shared, u)) {
            self.fail(&e);
            return Err(e);
        }
        Ok(first)
    }

    /// Encodes `recs` and writes them after the last written frame, in one `pwrite` per
    /// segment touched, WITHOUT syncing: the returned [`Unsynced`] (`None` if `recs` is
    /// empty) must be made durable, then published, before anyone is told.
    ///
    /// When the records do not fit in the active segment, `sync_before_roll` is called with
    /// what this call wrote to it (if anything); it must return only once EVERY write to
    /// the segment (earlier calls' too) is durable and published. Then the segment is
    /// closed and its successor created (so a closed segment never has an unsynced tail,
    /// and readers see the closed segment complete before the new one appears).
    ///
    /// Any error leaves the log failed (see the module docs).
    pub(crate) fn write_refs(
        &mut self,
        recs: &[&RecordIn],
        sync_before_roll: &mut dyn FnMut(Option<Unsynced>) -> StoreResult<()>,
    ) -> StoreResult<Option<Unsynced>> {
        if self.failed {
            return Err(StoreError::LogFailed);
        }
        if let Some(r) = recs.iter().find(|r| r.payload.len() > MAX_PAYLOAD_BYTES) {
            return Err(StoreError::RecordTooLarge {
                len: r.payload.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        match self.write_group(recs, sync_before_roll) {
            Ok(u) => Ok(u),
            Err(e) => {
                self.fail(&e);
                Err(e)
            }
        }
    }

    fn fail(&mut self, e: &StoreError) {
        if !self.failed {
            tracing::error!(error = %e, "event log append failed; refusing further appends");
        }
        self.failed = true;
    }

    /// Marks the log failed (the writer's syncer saw an fdatasync error): no more appends.
    pub(crate) fn mark_failed(&mut self) {
        self.failed = true;
    }

    fn write_group(
        &mut self,
        recs: &[&RecordIn],
        sync_before_roll: &mut dyn FnMut(Option<Unsynced>) -> StoreResult<()>,
    ) -> StoreResult<Option<Unsynced>> {
        self.buf.clear();
        let mut new_offsets = Vec::new();
        let mut seq = self.next_seq;
        for rec in recs {
            let pending_end = self.active_len + self.buf.len() as u64;
            let frame_len = (FRAME_HEADER + rec.payload.len()) as u64;
            if pending_end > SEGMENT_HEADER && pending_end + frame_len > self.opts.segment_bytes {
                let tail = self.write_buf(seq - 1, &mut new_offsets)?;
                sync_before_roll(tail)?;
                self.roll(seq)?;
            }
            if (seq - self.active_first) % INDEX_EVERY == 0 {
                new_offsets.push(self.active_len + self.buf.len() as u64);
            }
            frame::encode(&mut self.buf, seq, rec);
            seq += 1;
        }
        self.write_buf(seq - 1, &mut new_offsets)
    }

    /// Writes the buffered frames (ending with `last_seq`) to the active segment in one
    /// call, preallocating ahead first. Nothing is synced or published.
    fn write_buf(
        &mut self,
        last_seq: u64,
        new_offsets: &mut Vec<u64>,
    ) -> StoreResult<Option<Unsynced>> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let end = self.active_len + self.buf.len() as u64;
        self.preallocate(end);
        write_all_at(&self.file, &self.buf, self.active_len)
            .map_err(|e| StoreError::io(&self.active_path, e))?;
        self.active_len = end;
        self.file_len = self.file_len.max(end);
        self.buf.clear();
        self.next_seq = last_seq + 1;
        Ok(Some(Unsynced {
            file: self.file.clone(),
            path: self.active_path.clone(),
            seg_first: self.active_first,
            end_len: end,
            last_seq,
            offsets: std::mem::take(new_offsets),
            size_bytes: self.closed_bytes + end,
        }))
    }

    /// Makes sure the file is allocated up to at least `end`, reserving up to
    /// [`PREALLOC_CHUNK`] ahead (not past the segment size), so that most fdatasyncs commit
    /// data only, not a new file size and block allocation. Best effort: on failure the
    /// writes simply extend the file.
    fn preallocate(&mut self, end: u64) {
        if !self.prealloc || end <= self.file_len {
            return;
        }
        let target = (self.file_len + PREALLOC_CHUNK)
            .min(self.opts.segment_bytes)
            .max(end);
        match allocate(&self.file, self.file_len, target - self.file_len) {
            Ok(true) => self.file_len = target,
            Ok(false) => self.prealloc = false,
            Err(e) => {
                tracing::warn!(path = %self.active_path.display(), error = %e,
                    "could not preallocate log segment; continuing without");
                self.prealloc = false;
            }
        }
    }

    /// Closes the active segment (all of it durable and published) and starts one at
    /// `first_seq`: the preallocated tail is cut off and that made durable before the
    /// successor exists, then the `.idx` is written.
    fn roll(&mut self, first_seq: u64) -> StoreResult<()> {
        self.trim_and_sync()?;
        let closed = self.shared.read_segs().last().cloned();
        if let Some(meta) = closed {
            debug_assert_eq!(
                meta.len, self.active_len,
                "roll of a segment not all durable"
            );
            if let Err(e) = segment::write_idx(&self.opts.dir, &meta) {
                // The index is a cache; open rebuilds it by scanning.
                tracing::warn!(error = %e, "could not write segment index");
            }
        }
        let file = create_segment(&self.opts.dir, first_seq)?;
        self.closed_bytes += self.active_len;
        self.file = Arc::new(file);
        self.active_path = seg_path(&self.opts.dir, first_seq);
        self.active_first = first_seq;
        self.active_len = SEGMENT_HEADER;
        self.file_len = SEGMENT_HEADER;
        self.prealloc = true;
        self.shared
            .write_segs()
            .push(empty_meta(&self.opts.dir, first_seq));
        Ok(())
    }

    /// Cuts the active segment back to its written length (dropping preallocated space)
    /// and syncs that, so a closed segment's file size is its length (the `.idx` relies
    /// on it).
    fn trim_and_sync(&mut self) -> StoreResult<()> {
        if self.file_len == self.active_len {
            return Ok(());
        }
        let io = |e| StoreError::io(&self.active_path, e);
        self.file.set_len(self.active_len).map_err(io)?;
        self.file.sync_all().map_err(io)?;
        self.file_len = self.active_len;
        Ok(())
    }

    /// Seq of the last durable record; 0 when the log is empty. (Inside the writer, where
    /// writes and syncs are pipelined: the last written one.)
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

    /// The state shared with readers (the writer's syncer publishes through it).
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl Drop for EventLog {
    /// A clean close leaves no preallocated tail behind (best effort, not synced: recovery
    /// drops a zero tail anyway). Only when every written frame is durable and published,
    /// which is the case unless an append failed.
    fn drop(&mut self) {
        let durable = self.shared.last_seq.load(Ordering::Acquire) + 1 == self.next_seq;
        if !self.failed && durable && self.file_len > self.active_len {
            if let Err(e) = self.file.set_len(self.active_len) {
                tracing::warn!(path = %self.active_path.display(), error = %e,
                    "could not trim preallocated log segment");
            }
        }
    }
}

/// Positional write of all of `buf` at `off`.
#[cfg(unix)]
fn write_all_at(file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buf, off)
}

#[cfg(not(unix))]
fn write_all_at(mut file: &File, buf: &[u8], off: u64) -> io::Result<()> {
    file.seek(SeekFrom::Start(off))?;
    file.write_all(buf)
}

/// Allocates `[off, off + len)` of `file` (zero-filled, extending its size) without
/// writing it. `Ok(false)` when the platform or file system cannot.
#[cfg(target_os = "linux")]
fn allocate(file: &File, off: u64, len: u64) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return Ok(false);
    };
    loop {
        // SAFETY: plain syscall on a file descriptor we own for the duration of the call.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, off, len) };
        if r == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => return Ok(false),
            _ => return Err(e),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _off: u64, _len: u64) -> io::Result<bool> {
    Ok(false)
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
            if zeroes_from(&file, offset, file_len).map_err(io)? {
                // Preallocated space never written (the log was not closed cleanly), or a
                // last group none of whose pages reached the disk: nothing acknowledged.
                tracing::info!(
                    path = %path.display(),
                    offset,
                    bytes_cut = file_len - offset,
                    "dropping unwritten (zero) tail of event log"
                );
            } else {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes_cut = file_len - offset,
                    reason = %err.describe(),
                    "truncating torn tail of event log"
                );
            }
            file.set_len(offset).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
    }
    Ok((file, scan.meta))
}

/// Whether the file holds only zero bytes from `off` on, judging by (at most) the first
/// 64 KiB: used to tell an unwritten preallocated tail from a torn write in log messages.
fn zeroes_from(file: &File, off: u64, file_len: u64) -> io::Result<bool> {
    let n = (file_len - off).min(64 * 1024) as usize;
    let mut buf = vec![0u8; n];
    frame::read_exact_at(file, &mut buf, off)?;
    Ok(buf.iter().all(|&b| b == 0))
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
