use std::fs::OpenOptions;
use std::io::Write;

use super::*;
use crate::error::StoreError;
use crate::log::frame::{self, FRAME_HEADER};

/// A log of `n` records of 50 bytes each in one segment; returns the model.
fn make(dir: &Path, n: u64, segment_bytes: u64) -> Vec<LogEntry> {
    let mut log = open(dir, segment_bytes);
    let recs: Vec<RecordIn> = (0..n).map(|t| rec(t, 50)).collect();
    log.append(&recs).unwrap();
    recs.iter()
        .enumerate()
        .map(|(i, r)| entry(i as u64 + 1, r))
        .collect()
}

fn append_bytes(path: &Path, bytes: &[u8]) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Reopens after damage to the tail: the good records are all there, the file is cut back
/// to them, and appends continue at the next seq (also after yet another reopen).
fn assert_recovers(dir: &Path, model: &[LogEntry], good_len: u64) {
    let mut log = open(dir, 1 << 20);
    assert_eq!(read_all(&log.reader()), model);
    let active = segments(dir).pop().unwrap();
    assert_eq!(std::fs::metadata(&active).unwrap().len(), good_len);
    let next = model.len() as u64 + 1;
    assert_eq!(log.append(&[rec(99, 7)]).unwrap(), next);
    drop(log);
    let log = open(dir, 1 << 20);
    assert_eq!(log.last_seq(), next);
    assert_eq!(
        log.reader().read_back(u64::MAX, 1).unwrap()[0],
        entry(next, &rec(99, 7))
    );
}

#[test]
fn garbage_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = make(dir.path(), 20, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &[0xAB; 123]);
    assert_recovers(dir.path(), &model, len);
}

#[test]
fn zeroed_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = make(dir.path(), 20, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    append_bytes(&seg, &[0; 4096]);
    assert_recovers(dir.path(), &model, len);
}

#[test]
fn half_written_frame_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let model = make(dir.path(), 20, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    let mut buf = Vec::new();
    frame::encode(&mut buf, 21, &rec(21, 300));
    for cut in [
        3,
        FRAME_HEADER - 1,
        FRAME_HEADER,
        FRAME_HEADER + 150,
        buf.len() - 1,
    ] {
        append_bytes(&seg, &buf[..cut]);
        assert_recovers(dir.path(), &model, len);
        // assert_recovers appended seq 21; cut it off again for the next round.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len)
            .unwrap();
    }
}

#[test]
fn flipped_byte_in_last_frame_cuts_that_frame() {
    let dir = tempfile::tempdir().unwrap();
    let model = make(dir.path(), 20, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0x40; // inside the payload of seq 20
    std::fs::write(&seg, &bytes).unwrap();
    let last_frame = (FRAME_HEADER + 50) as u64;
    assert_recovers(dir.path(), &model[..19], n as u64 - last_frame);
}

#[test]
fn crash_while_creating_a_segment_is_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let model = make(dir.path(), 20, 1 << 20);
    let next = dir.path().join(format!("{:020}.seg", 21));
    std::fs::write(&next, b"SPR").unwrap();
    assert_recovers(dir.path(), &model, 8);
}

#[test]
fn corrupt_middle_frame_of_closed_segment_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), 40, 1024); // 90-byte frames: ~11 per segment
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let victim = &segs[1];
    let mut bytes = std::fs::read(victim).unwrap();
    bytes[8 + 90 * 2 + 60] ^= 1; // payload of the third frame
    std::fs::write(victim, &bytes).unwrap();

    // With its .idx present the segment is not scanned at open; reading finds the damage.
    let log = open(dir.path(), 1024);
    let err = log.reader().read_from(1, usize::MAX).unwrap_err();
    match &err {
        StoreError::Corrupt { path, offset, .. } => {
            assert_eq!(path, victim);
            assert_eq!(*offset, 8 + 90 * 2);
        }
        other => panic!("expected corruption, got {other}"),
    }
    assert!(
        err.to_string().contains("00000000000000000012.seg"),
        "{err}"
    );
    // The iterator yields the good entries before the damage, then the error, then ends.
    let items: Vec<_> = log.reader().iter_from(1).collect();
    assert_eq!(items.len(), 14);
    let good: Vec<u64> = items[..13]
        .iter()
        .map(|e| e.as_ref().unwrap().seq)
        .collect();
    assert_eq!(good, (1..=13).collect::<Vec<u64>>());
    assert!(items[13].is_err());
    drop(log);

    // Without it the open scan finds it, and refuses to repair a closed segment.
    std::fs::remove_file(victim.with_extension("idx")).unwrap();
    let err = EventLog::open(LogOptions {
        dir: dir.path().into(),
        segment_bytes: 1024,
    })
    .unwrap_err();
    match err {
        StoreError::Corrupt { path, offset, .. } => {
            assert_eq!(&path, victim);
            assert_eq!(offset, 8 + 90 * 2);
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn seq_gap_between_segments_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), 40, 1024);
    let segs = segments(dir.path());
    std::fs::remove_file(&segs[1]).unwrap();
    let err = EventLog::open(LogOptions {
        dir: dir.path().into(),
        segment_bytes: 1024,
    })
    .unwrap_err();
    assert!(
        matches!(&err, StoreError::Corrupt { path, .. } if path == &segs[2]),
        "{err}"
    );
}

#[test]
fn valid_frame_with_wrong_seq_in_active_segment_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make(dir.path(), 5, 1 << 20);
    let seg = segments(dir.path()).pop().unwrap();
    let mut buf = Vec::new();
    frame::encode(&mut buf, 9, &rec(9, 10));
    append_bytes(&seg, &buf);
    let err = EventLog::open(LogOptions::new(dir.path())).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
}
