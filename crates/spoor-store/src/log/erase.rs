//! Erasing records (right to erasure, retention): a record's payload is overwritten, in
//! place, by zeroes of the same length and its crc recomputed — a **tombstone**.
//!
//! Why in place and the same length: every offset stays valid, so the sparse `.idx` files,
//! the readers' cached positions and the seqs (dense, which profile ids, destination
//! positions and the processor's checkpoint all rely on) are untouched; the frame chain
//! stays walkable, so no reader or recovery code has to learn about gaps. The header
//! (seq, event time, receive time, the dedupe hash of the message id) is kept: it holds
//! nothing about the person. On ext4/xfs an overwrite reuses the same blocks, so the bytes
//! are gone from the file, not only unlinked (copy-on-write file systems and SSD
//! remapping are a limit of any file-level approach; see ARCHITECTURE).
//!
//! Crash safety: overwriting a frame is not atomic (payload and crc are written apart),
//! so a torn overwrite would read as a corrupt frame. Before touching a segment the eraser
//! writes and fsyncs a **redo journal** (`erase.journal`: segment, offset and length of
//! every frame to erase, with a crc); after the overwrites are fsynced the journal is
//! removed. [`EventLog::open`](super::EventLog::open) redoes a journal left by a crash
//! before it validates anything: the overwrite is idempotent (it depends only on the
//! frame's length and header), so redoing it completes a torn one. A torn journal (bad
//! crc) means nothing was overwritten yet, and it is dropped.
//!
//! Concurrency: readers hold the shared `erase` lock (read side) while they read frames;
//! the eraser takes it for writing only while it overwrites, so no reader sees a frame
//! half-erased. The writer appends only past the durable end, never where erased frames
//! are, so erasure does not stop ingest.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::frame::{self, ChunkReader, FRAME_HEADER};
use super::reader::LogReader;
use super::segment::{sync_dir, INDEX_EVERY};
use super::LogEntry;
use crate::error::{StoreError, StoreResult};

const JOURNAL: &str = "erase.journal";
const JOURNAL_MAGIC: &[u8; 8] = b"SPRERA01";

/// A frame to overwrite: its segment file, offset and payload length.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    seg_first: u64,
    offset: u64,
    len: u32,
}

impl LogEntry {
    /// Whether this record was erased (its payload is a tombstone of zeroes). Erased
    /// records keep their seq and times; everything downstream skips them.
    pub fn is_erased(&self) -> bool {
        is_tombstone(&self.payload)
    }
}

/// A payload of zeroes only. No accepted event is one (payloads are JSON envelopes).
pub fn is_tombstone(payload: &[u8]) -> bool {
    !payload.is_empty() && payload.iter().all(|b| *b == 0)
}

impl LogReader {
    /// Erases the durable records with these seqs (unknown, not yet durable or already
    /// erased seqs are skipped). Returns how many were erased now. Durable on return.
    pub fn erase(&self, seqs: &[u64]) -> StoreResult<usize> {
        let mut seqs: Vec<u64> = seqs
            .iter()
            .copied()
            .filter(|s| *s >= 1 && *s <= self.last_seq())
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        let targets = self.locate_all(&seqs)?;
        self.overwrite(targets)
    }

    /// Erases every durable record for which `pred` is true, reading the whole log once
    /// (for the rejected log, which has no index by person). Returns how many were erased.
    pub fn erase_where(&self, mut pred: impl FnMut(&LogEntry) -> bool) -> StoreResult<usize> {
        let mut seqs = Vec::new();
        for e in self.iter_from(1) {
            let e = e?;
            if !e.is_erased() && pred(&e) {
                seqs.push(e.seq);
            }
        }
        self.erase(&seqs)
    }

    /// Finds the frames of `seqs` (ascending), walking each segment once from the indexed
    /// frame before its first wanted seq. Frames already erased are left out.
    fn locate_all(&self, seqs: &[u64]) -> StoreResult<Vec<Target>> {
        let segs = self.shared.read_segs().clone();
        let mut out = Vec::new();
        let mut i = 0;
        for s in &segs {
            if i >= seqs.len() {
                break;
            }
            if seqs[i] > s.last_seq {
                continue;
            }
            let first_wanted = seqs[i].max(s.first_seq);
            let k = (((first_wanted - s.first_seq) / INDEX_EVERY) as usize)
                .min(s.offsets.len().saturating_sub(1));
            let Some(&start) = s.offsets.get(k) else {
                continue;
            };
            let file = File::open(&s.path).map_err(|e| StoreError::io(&s.path, e))?;
            let mut chunks = ChunkReader::new(&file, s.len);
            let (mut off, mut seq) = (start, s.first_seq + k as u64 * INDEX_EVERY);
            while i < seqs.len() && seqs[i] <= s.last_seq {
                let (h, payload) = chunks
                    .frame(off, seq)
                    .map_err(|e| StoreError::io(&s.path, e))?
                    .map_err(|e| StoreError::corrupt(&s.path, off, e.describe()))?;
                while i < seqs.len() && seqs[i] < seq {
                    i += 1; // before this segment's start: not in the log
                }
                if i < seqs.len() && seqs[i] == seq {
                    if !is_tombstone(payload) {
                        out.push(Target {
                            seg_first: s.first_seq,
                            offset: off,
                            len: h.len,
                        });
                    }
                    i += 1;
                }
                off += (FRAME_HEADER + h.len as usize) as u64;
                seq += 1;
            }
        }
        Ok(out)
    }

    fn overwrite(&self, targets: Vec<Target>) -> StoreResult<usize> {
        if targets.is_empty() {
            return Ok(0);
        }
        let dir = self.shared.dir.clone();
        write_journal(&dir, &targets)?;
        {
            // No reader reads a frame while it is half-overwritten.
            let _guard = self.shared.erase.write().unwrap_or_else(|e| e.into_inner());
            apply(&dir, &targets)?;
        }
        remove_journal(&dir)?;
        Ok(targets.len())
    }
}

fn journal_path(dir: &Path) -> PathBuf {
    dir.join(JOURNAL)
}

fn write_journal(dir: &Path, targets: &[Target]) -> StoreResult<()> {
    let mut buf = Vec::with_capacity(16 + targets.len() * 20 + 4);
    buf.extend_from_slice(JOURNAL_MAGIC);
    buf.extend_from_slice(&(targets.len() as u64).to_le_bytes());
    for t in targets {
        buf.extend_from_slice(&t.seg_first.to_le_bytes());
        buf.extend_from_slice(&t.offset.to_le_bytes());
        buf.extend_from_slice(&t.len.to_le_bytes());
    }
    let crc = frame::crc(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = journal_path(dir);
    let mut f = File::create(&path).map_err(|e| StoreError::io(&path, e))?;
    f.write_all(&buf)
        .and_then(|_| f.sync_all())
        .map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)
}

fn read_journal(path: &Path) -> StoreResult<Option<Vec<Target>>> {
    let buf = fs::read(path).map_err(|e| StoreError::io(path, e))?;
    if buf.len() < 20 || &buf[..8] != JOURNAL_MAGIC {
        return Ok(None);
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if frame::crc(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Ok(None);
    }
    let n = u64::from_le_bytes(body[8..16].try_into().unwrap_or_default()) as usize;
    if body.len() != 16 + n * 20 {
        return Ok(None);
    }
    let targets = body[16..]
        .chunks_exact(20)
        .map(|c| Target {
            seg_first: u64::from_le_bytes(c[0..8].try_into().unwrap_or_default()),
            offset: u64::from_le_bytes(c[8..16].try_into().unwrap_or_default()),
            len: u32::from_le_bytes(c[16..20].try_into().unwrap_or_default()),
        })
        .collect();
    Ok(Some(targets))
}

fn remove_journal(dir: &Path) -> StoreResult<()> {
    let path = journal_path(dir);
    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
    sync_dir(dir)
}

/// Overwrites every target with its tombstone and fsyncs the files touched.
fn apply(dir: &Path, targets: &[Target]) -> StoreResult<()> {
    let mut open: Option<(u64, File, PathBuf)> = None;
    for t in targets {
        if open.as_ref().map(|(f, _, _)| *f) != Some(t.seg_first) {
            if let Some((_, f, p)) = open.take() {
                f.sync_data().map_err(|e| StoreError::io(&p, e))?;
            }
            let p = super::segment::seg_path(dir, t.seg_first);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&p)
                .map_err(|e| StoreError::io(&p, e))?;
            open = Some((t.seg_first, f, p));
        }
        let Some((_, f, p)) = open.as_ref() else {
            continue;
        };
        tombstone(f, t).map_err(|e| StoreError::io(p, e))?;
    }
    if let Some((_, f, p)) = open {
        f.sync_data().map_err(|e| StoreError::io(&p, e))?;
    }
    Ok(())
}

/// Writes zeroes over the payload and the crc of (header after the crc + zeroes). The
/// length field is never touched, so the result depends only on what is on disk already.
fn tombstone(f: &File, t: &Target) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; FRAME_HEADER];
    frame::read_exact_at(f, &mut header, t.offset)?;
    if u32::from_le_bytes([header[0], header[1], header[2], header[3]]) != t.len {
        return Err(std::io::Error::other(format!(
            "erase journal does not match the frame at offset {}",
            t.offset
        )));
    }
    let zeroes = vec![0u8; t.len as usize];
    f.write_all_at(&zeroes, t.offset + FRAME_HEADER as u64)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&header[8..]);
    h.update(&zeroes);
    f.write_all_at(&h.finalize().to_le_bytes(), t.offset + 4)
}

/// Completes an erasure a crash interrupted (called by `EventLog::open` before recovery).
pub(crate) fn redo_journal(dir: &Path) -> StoreResult<()> {
    let path = journal_path(dir);
    if !path.exists() {
        return Ok(());
    }
    match read_journal(&path)? {
        Some(targets) => {
            tracing::warn!(
                frames = targets.len(),
                "completing an interrupted log erasure"
            );
            apply(dir, &targets)?;
        }
        None => tracing::warn!("dropping a torn erase journal (nothing was erased yet)"),
    }
    remove_journal(dir)
}

#[cfg(test)]
impl LogReader {
    /// (offset, length) of the frames of `seqs`.
    pub(crate) fn locate_for_test(&self, seqs: &[u64]) -> Vec<(u64, u32)> {
        self.locate_all(seqs)
            .unwrap()
            .into_iter()
            .map(|t| (t.offset, t.len))
            .collect()
    }
}

/// Writes a journal for frames of the first segment (seq 1), as a crash would leave it.
#[cfg(test)]
pub(crate) fn write_journal_for_test(dir: &Path, frames: &[(u64, u32)]) {
    let targets: Vec<Target> = frames
        .iter()
        .map(|(offset, len)| Target {
            seg_first: 1,
            offset: *offset,
            len: *len,
        })
        .collect();
    write_journal(dir, &targets).unwrap();
}
