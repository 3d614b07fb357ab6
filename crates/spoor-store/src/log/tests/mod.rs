//! Tests of the event log against real files in temporary directories.

mod erase;
mod model;
mod pipeline;
mod recovery;
mod roundtrip;
mod writer;

use std::path::{Path, PathBuf};

use super::{EventLog, LogEntry, LogOptions, LogReader, RecordIn};

/// A record whose payload is derived from `tag`, so tests can recognise it.
pub(super) fn rec(tag: u64, size: usize) -> RecordIn {
    let mut payload: Vec<u8> = tag
        .to_le_bytes()
        .iter()
        .copied()
        .cycle()
        .take(size)
        .collect();
    if let Some(b) = payload.first_mut() {
        *b ^= size as u8;
    }
    RecordIn {
        timestamp_ms: tag as i64 * 10,
        received_ms: 1_000 + tag as i64,
        dedupe_key: (tag % 3 == 0).then_some(tag + 1),
        payload,
    }
}

/// What reading `r` back as seq `seq` must give.
pub(super) fn entry(seq: u64, r: &RecordIn) -> LogEntry {
    LogEntry {
        seq,
        timestamp_ms: r.timestamp_ms,
        received_ms: r.received_ms,
        dedupe_key: r.dedupe_key,
        payload: r.payload.clone(),
    }
}

pub(super) fn open(dir: &Path, segment_bytes: u64) -> EventLog {
    EventLog::open(LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes,
    })
    .expect("open log")
}

pub(super) fn read_all(r: &LogReader) -> Vec<LogEntry> {
    r.read_from(1, usize::MAX).expect("read log")
}

/// Segment files in `dir`, ascending.
pub(super) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}
