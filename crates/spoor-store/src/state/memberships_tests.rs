//! Tests of `memberships.rs`.

use super::*;
use crate::state::StateStore;

fn change(aud: &str, pid: u64, entered: bool, at_ms: i64) -> MembershipChange {
    MembershipChange {
        audience: aud.into(),
        profile: ProfileId::from_raw(pid),
        entered,
        at_ms,
        seq: pid,
        cause: ChangeCause::Event,
    }
}

fn ids(v: Vec<ProfileId>) -> Vec<u64> {
    v.into_iter().map(|p| p.raw()).collect()
}

/// Binary change rows round-trip (every cause, edge values, a unicode name); JSON rows
/// of format 1 are still read; a truncated row is an error.
#[test]
fn change_rows_round_trip_and_json_rows_are_read() {
    let causes = [
        ChangeCause::Event,
        ChangeCause::Timer,
        ChangeCause::Backfill,
        ChangeCause::Merge,
        ChangeCause::Deleted,
        ChangeCause::Group,
    ];
    let mut buf = Vec::new();
    for (i, cause) in causes.into_iter().enumerate() {
        let c = MembershipChange {
            audience: format!("größte Käufer 🎉 {i}"),
            profile: ProfileId::from_raw(u64::MAX - i as u64),
            entered: i % 2 == 0,
            at_ms: if i % 2 == 0 { i64::MIN } else { i64::MAX },
            seq: u64::MAX,
            cause,
        };
        write_change(&mut buf, &c);
        assert_eq!(read_change(&buf).unwrap(), c);
        assert!(read_change(&buf[..buf.len() - 1]).is_err());
        let json = serde_json::to_vec(&c).unwrap();
        assert_eq!(read_change(&json).unwrap(), c);
    }
}

#[test]
fn readers_see_memberships_before_and_after_a_checkpoint_and_a_restart_loads_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let r = store.reader().unwrap();
    let (p1, p2, p3) = (
        ProfileId::from_raw(1),
        ProfileId::from_raw(2),
        ProfileId::from_raw(3),
    );

    st.set_member("buyers", p1, true);
    st.set_member("buyers", p2, true);
    st.set_member("vip", p2, true);
    assert_eq!(st.record_membership(change("buyers", 1, true, 10)), 1);
    assert_eq!(st.record_membership(change("buyers", 2, true, 20)), 2);
    assert_eq!(st.record_membership(change("vip", 2, true, 20)), 3);
    st.set_timer(p1, None, Some(500));
    st.set_timer(p2, None, Some(100));
    st.set_timer(p3, None, Some(300));
    st.set_timer(p3, Some(300), Some(900));
    st.set_processed(5);
    assert!(st.has_pending());

    // Visible at once.
    assert_eq!(r.audience_size("buyers").unwrap(), 2);
    assert_eq!(r.audience_overlap("buyers", "vip").unwrap(), (2, 1, 1));
    assert_eq!(r.audience_names().unwrap(), vec!["buyers", "vip"]);
    assert!(st.is_member("vip", p2) && !st.is_member("vip", p1));
    let h = r.membership_history(&[p2], 10).unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].at_ms, 20);
    assert_eq!(r.membership_changes(0, 10).unwrap().len(), 3);
    assert_eq!(r.membership_changes(2, 10).unwrap()[0].0, 3);
    assert_eq!(
        st.due_timers(500, 10),
        vec![(100, p2), (500, p1)],
        "earliest first, the moved timer is gone from 300"
    );
    assert_eq!(st.next_timer(), Some(100));
    // Not durable yet.
    let d = store.durable_reader().unwrap();
    assert_eq!(d.audience_size("buyers").unwrap(), 0);
    assert!(d.membership_changes(0, 10).unwrap().is_empty());

    st.checkpoint().unwrap();
    assert!(!st.has_pending());
    // The same after the checkpoint, through the same reader and a durable one.
    for rd in [&r, &store.durable_reader().unwrap()] {
        assert_eq!(rd.audience_size("buyers").unwrap(), 2);
        assert_eq!(rd.audience_overlap("buyers", "vip").unwrap(), (2, 1, 1));
        assert_eq!(
            ids(rd.audience_members("buyers", None, 10).unwrap()),
            [1, 2]
        );
        assert_eq!(rd.membership_history(&[p1, p2], 10).unwrap().len(), 3);
        let feed = rd.membership_changes(0, 10).unwrap();
        assert_eq!(feed.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3]);
    }

    // After the checkpoint: more changes, pending and committed rows together.
    st.set_member("buyers", p1, false);
    st.record_membership(change("buyers", 1, false, 30));
    assert_eq!(r.audience_size("buyers").unwrap(), 1);
    let h = r.membership_history(&[p1], 10).unwrap();
    assert_eq!((h[0].entered, h[1].entered), (false, true), "newest first");
    assert_eq!(r.membership_changes(2, 1).unwrap()[0].0, 3);
    assert_eq!(r.membership_changes(3, 10).unwrap()[0].0, 4);
    st.drop_audience("vip");
    assert_eq!(r.audience_size("vip").unwrap(), 0);
    st.set_timer(p2, Some(100), None);
    st.checkpoint().unwrap();
    drop(st);

    // A restart (a new store on the same directory) loads bitmaps, timers and numbers.
    drop((r, d, store));
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let r = store.reader().unwrap();
    assert_eq!(ids(r.audience_members("buyers", None, 10).unwrap()), [2]);
    assert_eq!(r.audience_size("vip").unwrap(), 0);
    assert_eq!(r.audience_names().unwrap(), vec!["buyers"]);
    assert!(st.is_member("buyers", p2));
    assert_eq!(st.due_timers(i64::MAX, 10), vec![(500, p1), (900, p3)]);
    assert_eq!(st.timer_count(), 2);
    assert_eq!(st.record_membership(change("buyers", 3, true, 40)), 5);
    assert_eq!(r.membership_history(&[p1, p2, p3], 10).unwrap().len(), 5);
}

#[test]
fn members_page_in_id_order_and_overlap_counts_two_million_member_audiences() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    const N: u64 = 1_000_000;
    // a: even ids, b: multiples of 3 (from a large base, so two treemap buckets too).
    let base = (1u64 << 32) - 600_000;
    for i in 0..N {
        st.set_member("a", ProfileId::from_raw(base + 2 * i), true);
        st.set_member("b", ProfileId::from_raw(base + 3 * i), true);
    }
    // Setting a member twice or removing a non-member changes nothing.
    st.set_member("a", ProfileId::from_raw(base), true);
    st.set_member("a", ProfileId::from_raw(base + 1), false);
    // Multiples of 6 below 2N are in both: ceil(2N / 6).
    let both = (2 * N).div_ceil(6);
    let r = store.reader().unwrap();
    assert_eq!(r.audience_overlap("a", "b").unwrap(), (N, N, both));
    assert_eq!(r.audience_overlap("a", "nobody").unwrap(), (N, 0, 0));
    assert_eq!(r.audience_size("b").unwrap(), N);

    let page = r.audience_members("b", None, 3).unwrap();
    assert_eq!(ids(page.clone()), [base, base + 3, base + 6]);
    let next = r.audience_members("b", page.last().copied(), 2).unwrap();
    assert_eq!(ids(next), [base + 9, base + 12]);
    // A cursor that is not a member continues after it.
    let mid = r
        .audience_members("b", Some(ProfileId::from_raw(base + 10)), 1)
        .unwrap();
    assert_eq!(ids(mid), [base + 12]);
    let tail = r
        .audience_members("b", Some(ProfileId::from_raw(base + 3 * (N - 2))), 10)
        .unwrap();
    assert_eq!(ids(tail), [base + 3 * (N - 1)]);
    assert!(r
        .audience_members("b", Some(ProfileId::from_raw(u64::MAX)), 10)
        .unwrap()
        .is_empty());

    st.checkpoint().unwrap();
    let d = store.durable_reader().unwrap();
    assert_eq!(d.audience_overlap("a", "b").unwrap(), (N, N, both));
    // Emptied audiences are not stored.
    for i in 0..N {
        st.set_member("b", ProfileId::from_raw(base + 3 * i), false);
    }
    st.checkpoint().unwrap();
    let d = store.durable_reader().unwrap();
    assert_eq!(d.audience_names().unwrap(), vec!["a"]);
    assert_eq!(r.audience_overlap("a", "b").unwrap(), (N, 0, 0));
}

#[test]
fn a_dropped_profile_loses_its_history_rows_but_the_feed_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let p = ProfileId::from_raw(7);
    st.record_membership(change("a", 7, true, 1));
    st.checkpoint().unwrap();
    st.record_membership(change("a", 7, false, 2));
    st.drop_rows(p);
    st.record_membership(change("a", 7, true, 3));
    let r = store.reader().unwrap();
    let h = r.membership_history(&[p], 10).unwrap();
    assert_eq!(h.iter().map(|c| c.at_ms).collect::<Vec<_>>(), [3]);
    assert_eq!(r.membership_changes(0, 10).unwrap().len(), 3);
    st.checkpoint().unwrap();
    let d = store.durable_reader().unwrap();
    let h = d.membership_history(&[p], 10).unwrap();
    assert_eq!(h.iter().map(|c| c.at_ms).collect::<Vec<_>>(), [3]);
    assert_eq!(d.membership_changes(0, 10).unwrap().len(), 3);
    assert!(d
        .dump()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("meta next_change_no 4")));
}

#[test]
fn a_checkpoint_writes_the_bitmaps_as_they_were_when_it_began() {
    // The bitmaps are serialized on the checkpoint thread from Arcs taken when it
    // began: a change made meanwhile (copy-on-write) belongs to the next checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let (p1, p2) = (ProfileId::from_raw(1), ProfileId::from_raw(2));
    st.set_member("buyers", p1, true);
    st.set_member("gone", p1, true);
    st.set_processed(1);
    st.begin_checkpoint().unwrap();
    st.set_member("buyers", p2, true);
    st.set_member("buyers", p1, false);
    st.drop_audience("gone");
    st.set_processed(2);
    st.finish_checkpoint(true).unwrap();
    let d = store.durable_reader().unwrap();
    assert_eq!(ids(d.audience_members("buyers", None, 10).unwrap()), [1]);
    assert_eq!(d.audience_size("gone").unwrap(), 1);
    // Readers of the pending state see the newer bitmaps all along.
    let r = store.reader().unwrap();
    assert_eq!(ids(r.audience_members("buyers", None, 10).unwrap()), [2]);
    assert_eq!(r.audience_size("gone").unwrap(), 0);

    st.checkpoint().unwrap();
    let d = store.durable_reader().unwrap();
    assert_eq!(ids(d.audience_members("buyers", None, 10).unwrap()), [2]);
    assert_eq!(d.audience_size("gone").unwrap(), 0);
    assert_eq!(d.processed_seq().unwrap(), 2);
}
