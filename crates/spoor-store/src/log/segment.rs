//! Segment files: naming, listing, validating scans and the persisted sparse index (`.idx`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::frame::{ChunkReader, FrameError, FRAME_HEADER, SEGMENT_HEADER, SEGMENT_MAGIC};
use crate::error::{StoreError, StoreResult};

/// One sparse-index entry every this many records of a segment. Entry `k` is the offset of
/// seq `first_seq + k * INDEX_EVERY`, so a lookup is a division, not a search.
pub(crate) const INDEX_EVERY: u64 = 256;

const IDX_MAGIC: &[u8; 8] = b"SPRIDX01";

/// What is known about one segment; shared with readers behind a lock.
#[derive(Debug, Clone)]
pub(crate) struct SegMeta {
    pub first_seq: u64,
    pub path: PathBuf,
    /// `first_seq - 1` while the segment is empty.
    pub last_seq: u64,
    /// Bytes of the file that hold durable, valid frames (including the segment header).
    pub len: u64,
    /// Sparse index, see [`INDEX_EVERY`].
    pub offsets: Vec<u64>,
}

pub(crate) fn seg_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.seg"))
}

pub(crate) fn idx_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.idx"))
}

/// First seqs of the segment files in `dir`, ascending. Other files are ignored.
pub(crate) fn list_segments(dir: &Path) -> StoreResult<Vec<u64>> {
    let mut firsts = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            match stem.parse::<u64>() {
                Ok(first) if first > 0 => firsts.push(first),
                _ => {
                    return Err(StoreError::corrupt(
                        entry.path(),
                        0,
                        "bad segment file name",
                    ));
                }
            }
        }
    }
    firsts.sort_unstable();
    Ok(firsts)
}

/// Outcome of scanning a segment from its start.
pub(crate) struct Scan {
    pub meta: SegMeta,
    /// The first invalid frame, if the scan did not reach the end of the file cleanly.
    pub bad: Option<(u64, FrameError)>,
}

/// Validates every frame of a segment whose file is `file_len` bytes long. The magic must
/// already be known to be present.
pub(crate) fn scan(file: &File, path: &Path, first_seq: u64, file_len: u64) -> StoreResult<Scan> {
    let mut reader = ChunkReader::new(file, file_len);
    let mut off = SEGMENT_HEADER;
    let mut seq = first_seq;
    let mut offsets = Vec::new();
    let mut bad = None;
    while off < file_len {
        match reader
            .frame(off, seq)
            .map_err(|e| StoreError::io(path, e))?
        {
            Ok((h, _)) => {
                if (seq - first_seq) % INDEX_EVERY == 0 {
                    offsets.push(off);
                }
                off += (FRAME_HEADER + h.len as usize) as u64;
                seq += 1;
            }
            Err(e) => {
                bad = Some((off, e));
                break;
            }
        }
    }
    Ok(Scan {
        meta: SegMeta {
            first_seq,
            path: path.to_path_buf(),
            last_seq: seq - 1,
            len: off,
            offsets,
        },
        bad,
    })
}

/// Reads the segment magic; `Ok(false)` when the file is shorter than the header.
pub(crate) fn check_magic(file: &File, path: &Path, file_len: u64) -> StoreResult<bool> {
    if file_len < SEGMENT_HEADER {
        return Ok(false);
    }
    let mut magic = [0u8; SEGMENT_MAGIC.len()];
    super::frame::read_exact_at(file, &mut magic, 0).map_err(|e| StoreError::io(path, e))?;
    if &magic != SEGMENT_MAGIC {
        return Err(StoreError::corrupt(
            path,
            0,
            "not a spoor log segment (bad magic or version)",
        ));
    }
    Ok(true)
}

/// Loads the metadata of a closed segment: from its `.idx` when that is present and agrees
/// with the segment file, else by a full validating scan (after which the `.idx` is
/// rewritten). Any invalid frame in a closed segment is an error: closed segments were
/// fsynced before the next one was created, so a bad frame there is real corruption.
pub(crate) fn load_closed(dir: &Path, first_seq: u64) -> StoreResult<SegMeta> {
    let path = seg_path(dir, first_seq);
    let file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
    let file_len = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
    if let Some(meta) = read_idx(dir, first_seq, &path, file_len) {
        return Ok(meta);
    }
    if !check_magic(&file, &path, file_len)? {
        return Err(StoreError::corrupt(
            &path,
            0,
            "closed segment shorter than its header",
        ));
    }
    let scan = scan(&file, &path, first_seq, file_len)?;
    if let Some((offset, err)) = scan.bad {
        return Err(StoreError::corrupt(&path, offset, err.describe()));
    }
    if let Err(e) = write_idx(dir, &scan.meta) {
        tracing::warn!(path = %path.display(), error = %e, "could not write segment index");
    }
    Ok(scan.meta)
}

/// Writes the sparse index of a closed segment next to it. Not fsynced on purpose: it is a
/// cache, verified by checksum and segment length when read, and rebuilt if it is wrong.
pub(crate) fn write_idx(dir: &Path, meta: &SegMeta) -> StoreResult<()> {
    let mut buf = Vec::with_capacity(48 + meta.offsets.len() * 8);
    buf.extend_from_slice(IDX_MAGIC);
    for v in [
        meta.first_seq,
        meta.last_seq,
        meta.len,
        meta.offsets.len() as u64,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    for o in &meta.offsets {
        buf.extend_from_slice(&o.to_le_bytes());
    }
    let crc = super::frame::crc(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    let path = idx_path(dir, meta.first_seq);
    let tmp = path.with_extension("idx.tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(|e| StoreError::io(&tmp, e))?;
    f.write_all(&buf).map_err(|e| StoreError::io(&tmp, e))?;
    drop(f);
    fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))
}

/// Reads and checks an `.idx`; `None` means "missing or not trustworthy, scan instead".
fn read_idx(dir: &Path, first_seq: u64, seg: &Path, seg_len: u64) -> Option<SegMeta> {
    let path = idx_path(dir, first_seq);
    let mut buf = Vec::new();
    File::open(&path).ok()?.read_to_end(&mut buf).ok()?;
    if buf.len() < 44 || &buf[..8] != IDX_MAGIC {
        return None;
    }
    let (body, tail) = buf.split_at(buf.len() - 4);
    if super::frame::crc(body) != u32::from_le_bytes(tail.try_into().ok()?) {
        return None;
    }
    let words: Vec<u64> = body[8..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect();
    let [first, last, len, n, ref offsets @ ..] = words[..] else {
        return None;
    };
    let count = (last + 1).checked_sub(first)?;
    let consistent = first == first_seq
        && len == seg_len
        && n as usize == offsets.len()
        && n == count.div_ceil(INDEX_EVERY)
        && offsets.windows(2).all(|w| w[0] < w[1])
        && offsets.first().is_none_or(|&o| o == SEGMENT_HEADER)
        && offsets.last().is_none_or(|&o| o < len);
    if !consistent {
        tracing::warn!(path = %path.display(), "segment index inconsistent, rebuilding");
        return None;
    }
    Some(SegMeta {
        first_seq,
        path: seg.to_path_buf(),
        last_seq: last,
        len,
        offsets: offsets.to_vec(),
    })
}

/// Makes a new or renamed directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> StoreResult<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
