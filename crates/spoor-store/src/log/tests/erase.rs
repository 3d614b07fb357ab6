use super::*;

/// Appends `n` records of 50..150 bytes, each carrying a marker `tag:N;` the tests look for.
fn fill(log: &mut EventLog, n: u64) -> Vec<RecordIn> {
    let recs: Vec<RecordIn> = (1..=n)
        .map(|t| RecordIn {
            timestamp_ms: t as i64,
            received_ms: 1_000 + t as i64,
            dedupe_key: Some(t),
            payload: format!("tag:{t};{}", "x".repeat((t * 7 % 100) as usize + 50)).into_bytes(),
        })
        .collect();
    for chunk in recs.chunks(13) {
        log.append(chunk).unwrap();
    }
    recs
}

fn raw_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for p in segments(dir) {
        all.extend(std::fs::read(p).unwrap());
    }
    all
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn erased_records_keep_their_seq_and_their_bytes_are_gone() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    let recs = fill(&mut log, 900);
    assert!(segments(dir.path()).len() > 5, "closed and active segments");
    let r = log.reader();
    let victims: Vec<u64> = (1..=900).filter(|s| s % 97 == 3 || *s == 900).collect();
    assert_eq!(r.erase(&victims).unwrap(), victims.len());
    // Idempotent: erasing again erases nothing.
    assert_eq!(r.erase(&victims).unwrap(), 0);
    let check = |r: &LogReader| {
        let all = r.read_from(1, 900).unwrap();
        assert_eq!(all.len(), 900, "seqs stay dense");
        for (e, rec) in all.iter().zip(&recs) {
            assert_eq!(e.timestamp_ms, rec.timestamp_ms);
            if victims.contains(&e.seq) {
                assert!(e.is_erased(), "seq {}", e.seq);
                assert_eq!(e.payload.len(), rec.payload.len());
            } else {
                assert!(!e.is_erased());
                assert_eq!(e.payload, rec.payload);
            }
        }
    };
    check(&r);
    let bytes = raw_bytes(dir.path());
    for v in &victims {
        assert!(!contains(&bytes, format!("tag:{v};").as_bytes()), "{v}");
    }
    assert!(contains(&bytes, b"tag:4;"));
    // Appending goes on after an erasure, and a reopen validates every frame.
    log.append(&recs[..3]).unwrap();
    drop(r);
    drop(log);
    let log = open(dir.path(), 4096);
    assert_eq!(log.last_seq(), 903);
    check(&log.reader());
}

#[test]
fn erase_where_reads_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 4096);
    fill(&mut log, 300);
    let r = log.reader();
    let n = r.erase_where(|e| e.payload.starts_with(b"tag:1")).unwrap();
    assert_eq!(n, 1 + 10 + 100, "1, 10..19, 100..199");
    assert!(!contains(&raw_bytes(dir.path()), b"tag:1"));
}

#[test]
fn a_journal_left_by_a_crash_is_redone_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = open(dir.path(), 1 << 20);
    let recs = fill(&mut log, 50);
    drop(log);
    // Simulate a crash after the journal was written and one frame half-overwritten:
    // erase in a copy, keep its journal, and tear the frame in the original.
    let copy = tempfile::tempdir().unwrap();
    for p in segments(dir.path()) {
        std::fs::copy(&p, copy.path().join(p.file_name().unwrap())).unwrap();
    }
    let log2 = open(copy.path(), 1 << 20);
    let targets = log2.reader().locate_for_test(&[7, 8]);
    super::super::erase::write_journal_for_test(dir.path(), &targets);
    drop(log2);
    let seg = &segments(dir.path())[0];
    let mut bytes = std::fs::read(seg).unwrap();
    let (off, _) = targets[0];
    let start = off as usize + 40;
    bytes[start..start + 5].fill(0); // torn: part of the payload, crc not yet
    std::fs::write(seg, &bytes).unwrap();

    let log = open(dir.path(), 1 << 20);
    let all = read_all(&log.reader());
    assert_eq!(all.len(), 50);
    assert!(all[6].is_erased() && all[7].is_erased());
    assert_eq!(all[8].payload, recs[8].payload);
    assert!(!dir.path().join("erase.journal").exists());
}
