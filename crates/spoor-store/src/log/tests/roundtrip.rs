use super::*;
use crate::error::StoreError;
use crate::log::MAX_PAYLOAD_BYTES;

/// Appends `n` records with sizes cycling 0..200 in batches of 1..=17; returns the model.
fn fill(log: &mut EventLog, n: u64) -> Vec<LogEntry> {
    let mut model = Vec::new();
    let mut tag = 0;
    while tag < n {
        let k = (tag % 17 + 1).min(n - tag);
        let recs: Vec<RecordIn> = (tag..tag + k)
            .map(|t| rec(t, (t * 37 % 200) as usize))
            .collect();
        let first = log.append(&recs).unwrap();
        assert_eq!(first, model.len() as u64 + 1, "seqs are dense");
        for (i, r) in recs.iter().enumerate() {
            model.push(entry(first + i as u64, r));
        }
        tag += k;
    }
    model
}

#[test]
fn round_trip_across_rolls_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 2048);
    let model = fill(&mut log, 1500);
    assert_eq!(log.last_seq(), 1500);
    assert!(segments(dir.path()).len() > 20, "tiny segments must roll");
    let size = log.size_bytes();
    let check = |r: &LogReader| {
        assert_eq!(read_all(r), model);
        let it: Vec<LogEntry> = r.iter_from(37).map(Result::unwrap).collect();
        assert_eq!(it, model[36..]);
        let back = r.read_back(u64::MAX, 10).unwrap();
        let want: Vec<LogEntry> = model[1490..].iter().rev().cloned().collect();
        assert_eq!(back, want);
        let back = r.read_back(5, 10).unwrap();
        assert_eq!(back.iter().map(|e| e.seq).collect::<Vec<_>>(), [4, 3, 2, 1]);
        for from in [1, 2, 255, 256, 257, 513, 777, 1499, 1500] {
            assert_eq!(
                r.read_from(from, 3).unwrap(),
                model[from as usize - 1..][..3.min(1501 - from as usize)]
            );
        }
        assert!(r.read_from(1501, 10).unwrap().is_empty());
        assert!(r.read_from(0, 1).unwrap()[0].seq == 1);
    };
    check(&log.reader());
    drop(log);
    let log = open(dir.path(), 2048);
    assert_eq!(log.last_seq(), 1500);
    assert_eq!(log.size_bytes(), size);
    check(&log.reader());
}

#[test]
fn sparse_index_lookups_inside_one_big_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 30);
    let model = fill(&mut log, 2000);
    let r = log.reader();
    for from in (1..=2000).step_by(13) {
        let got = r.read_from(from, 2).unwrap();
        assert_eq!(got[0], model[from as usize - 1]);
    }
    let it: Vec<LogEntry> = r.iter_from(1).map(Result::unwrap).collect();
    assert_eq!(it, model);
}

#[test]
fn missing_or_bad_index_files_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    let model = fill(&mut log, 800);
    drop(log);
    let idx: Vec<PathBuf> = segments(dir.path())
        .iter()
        .map(|p| p.with_extension("idx"))
        .collect();
    assert!(
        idx[0].exists() && !idx.last().unwrap().exists(),
        "closed segments have .idx"
    );
    std::fs::remove_file(&idx[0]).unwrap();
    std::fs::write(&idx[1], b"SPRIDX01 garbage").unwrap();
    let log = open(dir.path(), 4096);
    assert_eq!(read_all(&log.reader()), model);
    assert!(idx[0].exists());
    assert!(std::fs::metadata(&idx[1]).unwrap().len() > 16);
}

#[test]
fn empty_log_and_empty_append() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    let r = log.reader();
    assert_eq!((log.last_seq(), r.last_seq()), (0, 0));
    assert!(r.read_from(1, 10).unwrap().is_empty());
    assert!(r.read_back(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(r.iter_from(1).count(), 0);
    assert_eq!(log.append(&[]).unwrap(), 1);
    assert_eq!(log.append(&[rec(1, 0)]).unwrap(), 1);
    assert_eq!(
        r.last_seq(),
        1,
        "an existing reader sees new durable records"
    );
}

#[test]
fn oversized_record_is_rejected_and_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    let mut big = rec(1, 0);
    big.payload = vec![0; MAX_PAYLOAD_BYTES + 1];
    let err = log.append(&[rec(0, 5), big]).unwrap_err();
    assert!(matches!(err, StoreError::RecordTooLarge { .. }), "{err}");
    assert_eq!(log.last_seq(), 0, "nothing of a rejected batch is written");
    assert_eq!(log.append(&[rec(2, 5)]).unwrap(), 1);
}

#[test]
fn record_larger_than_a_segment_gets_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 256);
    let recs = [rec(1, 10), rec(2, 1000), rec(3, 10)];
    assert_eq!(log.append(&recs).unwrap(), 1);
    assert_eq!(segments(dir.path()).len(), 3);
    drop(log);
    let log = open(dir.path(), 256);
    let want: Vec<LogEntry> = recs
        .iter()
        .enumerate()
        .map(|(i, r)| entry(i as u64 + 1, r))
        .collect();
    assert_eq!(read_all(&log.reader()), want);
}

#[test]
fn invalid_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = EventLog::open(LogOptions {
        dir: dir.path().into(),
        segment_bytes: 10,
    })
    .unwrap_err();
    assert!(matches!(err, StoreError::InvalidOptions(_)));
}
