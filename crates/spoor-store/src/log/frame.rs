//! Frame encoding and decoding, and a chunked positional reader used by both recovery and
//! the read side. Kept free of segment/file bookkeeping so the byte format lives in one place.

use std::fs::File;
use std::io;

use super::RecordIn;

/// Bytes of the fixed frame header: len u32, crc u32, seq u64, timestamp_ms i64,
/// received_ms i64, dedupe_key u64.
pub(crate) const FRAME_HEADER: usize = 40;

/// Largest payload accepted. Far above any sane event, small enough that a garbage length
/// field in a torn tail is recognised as such instead of sending us to read gigabytes.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024 * 1024;

/// Magic + format version at the start of every segment file.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"SPRLOG01";
/// Bytes before the first frame of a segment.
pub(crate) const SEGMENT_HEADER: u64 = SEGMENT_MAGIC.len() as u64;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub len: u32,
    pub crc: u32,
    pub seq: u64,
    pub timestamp_ms: i64,
    pub received_ms: i64,
    pub dedupe_key: u64,
}

impl Header {
    pub(crate) fn decode(b: &[u8]) -> Header {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        Header {
            len: u32_at(0),
            crc: u32_at(4),
            seq: u64_at(8),
            timestamp_ms: u64_at(16) as i64,
            received_ms: u64_at(24) as i64,
            dedupe_key: u64_at(32),
        }
    }
}

/// Appends one encoded frame for `rec` with `seq` to `buf`.
pub(crate) fn encode(buf: &mut Vec<u8>, seq: u64, rec: &RecordIn) {
    let start = buf.len();
    buf.extend_from_slice(&(rec.payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]); // crc, filled below
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&rec.timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&rec.received_ms.to_le_bytes());
    buf.extend_from_slice(&rec.dedupe_key.unwrap_or(0).to_le_bytes());
    buf.extend_from_slice(&rec.payload);
    let crc = crc(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// CRC over everything after the crc field (rest of the header + payload).
pub(crate) fn crc(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// Why the bytes at an offset are not the expected frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The file ends inside the header or payload.
    Truncated,
    /// The length field is beyond [`MAX_PAYLOAD_BYTES`].
    TooLarge(u32),
    /// The checksum does not match.
    BadCrc,
    /// A valid frame, but not the seq that must come next.
    SeqMismatch { expected: u64, found: u64 },
}

impl FrameError {
    pub(crate) fn describe(&self) -> String {
        match self {
            FrameError::Truncated => "frame truncated".into(),
            FrameError::TooLarge(n) => format!("frame length {n} exceeds maximum"),
            FrameError::BadCrc => "checksum mismatch".into(),
            FrameError::SeqMismatch { expected, found } => {
                format!("expected seq {expected}, found {found}")
            }
        }
    }
}

/// Reads a file region `[.., end)` through a window buffer, so scanning frames costs one
/// `pread` per chunk instead of two per frame.
pub(crate) struct ChunkReader<'f> {
    file: &'f File,
    end: u64,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Bytes fetched per read (more when one frame is longer).
    chunk: usize,
}

const CHUNK: usize = 256 * 1024;
/// The chunk of a read of a few frames: walking from the nearest index entry (at most 255
/// frames) to them needs tens of KiB, and a 256 KiB fetch per lookup would dominate reads
/// of single events scattered over the log (a person's events, the audience preview).
pub(crate) const SMALL_CHUNK: usize = 32 * 1024;

impl<'f> ChunkReader<'f> {
    pub(crate) fn new(file: &'f File, end: u64) -> Self {
        Self::with_chunk(file, end, CHUNK)
    }

    pub(crate) fn with_chunk(file: &'f File, end: u64, chunk: usize) -> Self {
        ChunkReader {
            file,
            end,
            buf: Vec::new(),
            buf_start: 0,
            chunk,
        }
    }

    /// Returns `len` bytes at `off`, or `None` if they extend past `end`.
    pub(crate) fn get(&mut self, off: u64, len: usize) -> io::Result<Option<&[u8]>> {
        if off + len as u64 > self.end {
            return Ok(None);
        }
        let have =
            off >= self.buf_start && off + len as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            let want = (len.max(self.chunk) as u64).min(self.end - off) as usize;
            self.buf.resize(want, 0);
            read_exact_at(self.file, &mut self.buf, off)?;
            self.buf_start = off;
        }
        let s = (off - self.buf_start) as usize;
        Ok(Some(&self.buf[s..s + len]))
    }

    /// Decodes and checks the frame at `off`, which must carry `expected_seq`.
    /// Returns the header and the payload.
    pub(crate) fn frame(
        &mut self,
        off: u64,
        expected_seq: u64,
    ) -> io::Result<Result<(Header, &[u8]), FrameError>> {
        let header = match self.get(off, FRAME_HEADER)? {
            Some(b) => Header::decode(b),
            None => return Ok(Err(FrameError::Truncated)),
        };
        if header.len as usize > MAX_PAYLOAD_BYTES {
            return Ok(Err(FrameError::TooLarge(header.len)));
        }
        let total = FRAME_HEADER + header.len as usize;
        let bytes = match self.get(off, total)? {
            Some(b) => b,
            None => return Ok(Err(FrameError::Truncated)),
        };
        if crc(&bytes[8..]) != header.crc {
            return Ok(Err(FrameError::BadCrc));
        }
        if header.seq != expected_seq {
            return Ok(Err(FrameError::SeqMismatch {
                expected: expected_seq,
                found: header.seq,
            }));
        }
        Ok(Ok((header, &bytes[FRAME_HEADER..])))
    }
}

#[cfg(unix)]
pub(crate) fn read_exact_at(file: &File, buf: &mut [u8], off: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, off)
}

#[cfg(windows)]
pub(crate) fn read_exact_at(file: &File, mut buf: &mut [u8], mut off: u64) -> io::Result<()> {
    use std::os::windows::fs::FileExt;
    while !buf.is_empty() {
        match file.seek_read(buf, off) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                buf = &mut buf[n..];
                off += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let rec = RecordIn {
            timestamp_ms: -5,
            received_ms: 1_700_000_000_000,
            dedupe_key: Some(u64::MAX),
            payload: b"hello".to_vec(),
        };
        let mut buf = Vec::new();
        encode(&mut buf, 42, &rec);
        assert_eq!(buf.len(), FRAME_HEADER + 5);
        let h = Header::decode(&buf);
        assert_eq!((h.len, h.seq, h.timestamp_ms), (5, 42, -5));
        assert_eq!((h.received_ms, h.dedupe_key), (1_700_000_000_000, u64::MAX));
        assert_eq!(h.crc, crc(&buf[8..]));
    }
}
