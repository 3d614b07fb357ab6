//! Property test: any sequence of appends (random sizes, across segment rolls), reopens and
//! torn tails leaves a log that reads back exactly like a `Vec` model.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<usize>),
    Reopen,
    /// Garbage appended to the active segment (a torn write), then reopen.
    TornTail(Vec<u8>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec(0usize..300, 0..40).prop_map(Op::Append),
        1 => Just(Op::Reopen),
        1 => prop::collection::vec(any::<u8>(), 1..200).prop_map(Op::TornTail),
    ]
}

fn check(log: &EventLog, model: &[LogEntry], probe: u64) {
    let r = log.reader();
    let n = model.len() as u64;
    assert_eq!(log.last_seq(), n);
    assert_eq!(r.last_seq(), n);
    let from = probe % (n + 2);
    let want: Vec<LogEntry> = model[(from.max(1) as usize - 1).min(model.len())..]
        .iter()
        .take(5)
        .cloned()
        .collect();
    assert_eq!(r.read_from(from, 5).unwrap(), want);
    // A scan's read (its pages dropped from the OS cache afterwards) reads the same, and
    // leaves the log reading the same.
    assert_eq!(r.read_once(from, 5).unwrap(), want);
    assert_eq!(r.read_once(1, usize::MAX).unwrap(), model);
    assert_eq!(r.read_from(from, 5).unwrap(), want);
    let back: Vec<LogEntry> = model[..(from.max(1) as usize - 1).min(model.len())]
        .iter()
        .rev()
        .take(7)
        .cloned()
        .collect();
    assert_eq!(r.read_back(from.max(1), 7).unwrap(), back);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn log_behaves_like_a_vec(
        segment_bytes in 100u64..3000,
        ops in prop::collection::vec(op(), 1..25),
        probe in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path(), segment_bytes);
        let mut model: Vec<LogEntry> = Vec::new();
        let mut tag = 0u64;
        for op in ops {
            match op {
                Op::Append(sizes) => {
                    let recs: Vec<RecordIn> = sizes.iter().map(|&s| { tag += 1; rec(tag, s) }).collect();
                    let first = log.append(&recs).unwrap();
                    prop_assert_eq!(first, model.len() as u64 + 1);
                    for r in &recs {
                        let seq = model.len() as u64 + 1;
                        model.push(entry(seq, r));
                    }
                }
                Op::Reopen => {
                    drop(log);
                    log = open(dir.path(), segment_bytes);
                }
                Op::TornTail(garbage) => {
                    drop(log);
                    let active = segments(dir.path()).pop().unwrap();
                    let mut bytes = std::fs::read(&active).unwrap();
                    bytes.extend_from_slice(&garbage);
                    std::fs::write(&active, bytes).unwrap();
                    log = open(dir.path(), segment_bytes);
                }
            }
            check(&log, &model, probe ^ tag);
        }
        prop_assert_eq!(&read_all(&log.reader()), &model);
        let iterated: Vec<LogEntry> = log.reader().iter_from(1).map(Result::unwrap).collect();
        prop_assert_eq!(&iterated, &model);
        drop(log);
        let log = open(dir.path(), segment_bytes);
        prop_assert_eq!(&read_all(&log.reader()), &model);
    }
}
