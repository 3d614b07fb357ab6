//! Publishing staged changes: what readers see after a publish is what they would see had
//! every change been published as it was made (differential, against a second store), and
//! a reader running beside the processor sees each event whole, with its seq.

use super::{ident_key, ChangeCause, MembershipChange, ProcessorState, StateReader, StateStore};
use proptest::prelude::*;
use spoor_core::identity::{Identifier, IdentityStore, ProfileId, ProfileIdentity};
use spoor_core::profile::Profile;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn set_trait(p: &mut Profile, v: u8) {
    super::pending_tests::set_trait(p, &v.to_string());
    p.event_count += 1;
}

#[derive(Debug, Clone)]
enum Op {
    Owner(u8, Option<u8>),
    Identity(u8, bool),
    Trait(u8, u8),
    Take(u8),
    Timeline(u8, i64),
    DropRows(u8),
    Member(u8, u8, bool),
    Record(u8, u8, bool),
    /// Ends an event: the next seq is processed.
    Processed,
    /// Publishes (the batching store only).
    Publish,
    BeginCheckpoint,
    FinishCheckpoint(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let pid = 1u8..6;
    prop_oneof![
        (0u8..6, proptest::option::of(1u8..6)).prop_map(|(k, p)| Op::Owner(k, p)),
        (pid.clone(), any::<bool>()).prop_map(|(p, live)| Op::Identity(p, live)),
        (pid.clone(), 0u8..4).prop_map(|(p, v)| Op::Trait(p, v)),
        pid.clone().prop_map(Op::Take),
        (pid.clone(), 0i64..50).prop_map(|(p, t)| Op::Timeline(p, t)),
        pid.clone().prop_map(Op::DropRows),
        (0u8..2, pid.clone(), any::<bool>()).prop_map(|(a, p, m)| Op::Member(a, p, m)),
        (0u8..2, pid, any::<bool>()).prop_map(|(a, p, e)| Op::Record(a, p, e)),
        Just(Op::Processed),
        Just(Op::Publish),
        Just(Op::BeginCheckpoint),
        any::<bool>().prop_map(Op::FinishCheckpoint),
    ]
}

fn apply(st: &mut ProcessorState, op: &Op, seq: u64) {
    let pid = |p: &u8| ProfileId::from_raw(u64::from(*p));
    let ident = |k: &u8| Identifier::new("email", format!("p{k}@example.com"));
    match op {
        Op::Owner(k, p) => st.set_owner(&ident(k), p.as_ref().map(pid)),
        Op::Identity(p, true) => st.put_identity(pid(p), ProfileIdentity::new(seq, 1)),
        Op::Identity(p, false) => st.remove_identity(pid(p)),
        Op::Trait(p, v) => st.with_profile(pid(p), |pr| set_trait(pr, *v)).unwrap(),
        Op::Take(p) => {
            st.take_profile(pid(p)).unwrap();
        }
        Op::Timeline(p, t) => st.add_timeline(pid(p), *t, seq),
        Op::DropRows(p) => st.drop_rows(pid(p)),
        Op::Member(a, p, m) => st.set_member(&format!("a{a}"), pid(p), *m),
        Op::Record(a, p, entered) => {
            st.record_membership(MembershipChange {
                audience: format!("a{a}"),
                profile: pid(p),
                entered: *entered,
                at_ms: seq as i64,
                seq,
                cause: ChangeCause::Event,
            });
        }
        Op::Processed => st.set_processed(seq),
        Op::Publish => st.publish(),
        Op::BeginCheckpoint => st.begin_checkpoint().unwrap(),
        Op::FinishCheckpoint(wait) => {
            st.finish_checkpoint(*wait).unwrap();
        }
    }
}

/// Everything a reader can see of the keys the ops touch, as text.
fn view(r: &StateReader) -> Vec<String> {
    let mut v = vec![format!("seq {}", r.visible_seq().unwrap())];
    for k in 0..6 {
        v.push(format!(
            "owner {k} {:?}",
            r.owner("email", &format!("p{k}@example.com")).unwrap()
        ));
    }
    for p in 1..6 {
        let pid = ProfileId::from_raw(p);
        v.push(format!("profile {p} {:?}", r.profile(pid).unwrap()));
        v.push(format!("identity {p} {:?}", r.identity(pid).unwrap()));
        v.push(format!(
            "timeline {p} {:?}",
            r.timeline(&[pid], None, 1000).unwrap()
        ));
        v.push(format!(
            "history {p} {:?}",
            r.membership_history(&[pid], 1000).unwrap()
        ));
    }
    for a in 0..2 {
        v.push(format!(
            "members a{a} {:?}",
            r.audience_members(&format!("a{a}"), None, 100).unwrap()
        ));
    }
    v.push(format!("feed {:?}", r.membership_changes(0, 1000).unwrap()));
    v
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A store whose processor batches and publishes at random points shows, after each
    /// publish, exactly what a store publishing every change shows — and, after a final
    /// checkpoint, stores the same. A store without readers (a rebuild's) publishes only
    /// when a checkpoint begins, and then shows and stores the same too.
    #[test]
    fn published_batches_read_like_immediate_changes(ops in proptest::collection::vec(op(), 1..120)) {
        let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
        let (sa, sb, sc) = (
            StateStore::open(dirs[0].path()).unwrap(),
            StateStore::open(dirs[1].path()).unwrap(),
            StateStore::open(dirs[2].path()).unwrap(),
        );
        let mut a = sa.processor_state(1024).unwrap();
        let mut b = sb.processor_state(1024).unwrap();
        let mut c = sc.processor_state(1024).unwrap();
        a.set_batching(true);
        c.set_batching(true);
        c.without_readers();
        let (ra, rb, rc) = (sa.reader().unwrap(), sb.reader().unwrap(), sc.reader().unwrap());
        let unread = view(&rc);
        let mut seq = 1;
        let mut checkpointed = false;
        for op in &ops {
            apply(&mut a, op, seq);
            apply(&mut c, op, seq);
            if !matches!(op, Op::Publish) {
                apply(&mut b, op, seq);
            }
            if matches!(op, Op::Processed) {
                seq += 1;
            }
            if matches!(op, Op::Publish | Op::BeginCheckpoint) {
                prop_assert_eq!(view(&ra), view(&rb));
            }
            checkpointed |= matches!(op, Op::BeginCheckpoint);
            if matches!(op, Op::BeginCheckpoint) {
                prop_assert_eq!(view(&rc), view(&rb));
            } else if !checkpointed {
                prop_assert_eq!(view(&rc), unread.clone(), "nothing is published before a checkpoint");
            }
        }
        a.set_batching(false);
        c.set_batching(false);
        prop_assert_eq!(view(&ra), view(&rb));
        a.checkpoint().unwrap();
        b.checkpoint().unwrap();
        c.checkpoint().unwrap();
        prop_assert_eq!(view(&ra), view(&rb));
        prop_assert_eq!(view(&rc), view(&rb));
        let (dump_a, dump_b) = (sa.durable_reader().unwrap().dump().unwrap(), sb.durable_reader().unwrap().dump().unwrap());
        let dump_c = sc.durable_reader().unwrap().dump().unwrap();
        prop_assert_eq!(&dump_a, &dump_b);
        prop_assert_eq!(&dump_c, &dump_b);
    }
}

/// Events applied by one thread, read by another meanwhile (checkpoints included): each
/// event adds to a profile's count, its timeline and an identifier, and the reader, under
/// one lock, always finds all three matching the published seq — never half an event,
/// never a seq ahead of its changes.
#[test]
fn a_reader_sees_whole_events_with_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    st.set_batching(true);
    let pid = ProfileId::from_raw(1);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let r = store.reader().unwrap();
            let mut seen = 0u64;
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                reads += 1;
                let (seq, count, owner) = r
                    .with(|p, s| {
                        let p = p.expect("a processor runs");
                        let key = ident_key("email", &format!("e{}@example.com", p.seq));
                        let count = match p.profile(1) {
                            Some(prof) => prof.map_or(0, |x| x.event_count),
                            None => s
                                .profiles(&[1])?
                                .pop()
                                .flatten()
                                .map_or(0, |x| x.event_count),
                        };
                        let owner = match p.owner(&key) {
                            Some(o) => o,
                            None => s.owners(&[key.as_str()])?.pop().flatten(),
                        };
                        Ok((p.seq, count, owner))
                    })
                    .unwrap();
                assert_eq!(count, seq, "the profile's events match the published seq");
                assert!(
                    seq == 0 || owner == Some(1),
                    "event {seq}'s identifier is there"
                );
                assert!(seq >= seen, "the published seq went back");
                seen = seq;
            }
            (seen, reads)
        })
    };
    for seq in 1..=3000u64 {
        st.with_profile(pid, |p| p.event_count += 1).unwrap();
        st.set_owner(
            &Identifier::new("email", format!("e{seq}@example.com")),
            Some(pid),
        );
        st.add_timeline(pid, seq as i64, seq);
        st.set_processed(seq);
        if seq % 7 == 0 {
            st.publish();
        }
        if seq % 500 == 0 {
            st.begin_checkpoint().unwrap();
        }
        if seq % 500 == 250 {
            st.finish_checkpoint(false).unwrap();
        }
    }
    st.set_batching(false);
    stop.store(true, Ordering::Relaxed);
    let (seen, reads) = reader.join().unwrap();
    assert!(reads > 0 && seen <= 3000);
    let r = store.reader().unwrap();
    assert_eq!(r.visible_seq().unwrap(), 3000);
    assert_eq!(r.profile(pid).unwrap().unwrap().event_count, 3000);
    assert_eq!(r.timeline(&[pid], None, 5000).unwrap().len(), 3000);
}

/// A profile a reader holds does not change when the processor changes the published
/// profile: the change copies the parts it touches (only those: the others stay shared
/// with what the reader holds) and is seen by the next read after the next publish.
#[test]
fn a_change_after_publishing_leaves_what_a_reader_holds() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    st.set_batching(true);
    let pid = ProfileId::from_raw(1);
    st.with_profile(pid, |p| {
        super::pending_tests::set_trait(p, "free");
        p.groups_mut().insert("acme".into(), 5);
        p.activation_mut().members.insert("vip".into(), 5);
    })
    .unwrap();
    st.set_processed(1);
    st.publish();
    let r = store.reader().unwrap();
    let held = r.profile(pid).unwrap().unwrap();
    let before = format!("{held:?}");

    st.with_profile(pid, |p| {
        super::pending_tests::set_trait(p, "pro");
        p.event_count += 1;
    })
    .unwrap();
    st.set_processed(2);
    st.publish();
    let now = r.profile(pid).unwrap().unwrap();
    assert_eq!(
        format!("{held:?}"),
        before,
        "what the reader holds is unchanged"
    );
    assert_eq!(held.trait_value("plan"), Some(&serde_json::json!("free")));
    assert_eq!(now.trait_value("plan"), Some(&serde_json::json!("pro")));
    assert_eq!((held.event_count, now.event_count), (0, 1));
    assert!(
        !Arc::ptr_eq(&held.traits, &now.traits),
        "traits were copied"
    );
    assert!(
        Arc::ptr_eq(&held.groups, &now.groups),
        "groups are still shared"
    );
    assert!(Arc::ptr_eq(
        held.activation.shared(),
        now.activation.shared()
    ));

    st.with_profile(pid, |p| p.activation_mut().members.clear())
        .unwrap();
    st.set_processed(3);
    st.publish();
    assert_eq!(
        format!("{held:?}"),
        before,
        "what the reader holds is unchanged"
    );
    assert!(held.activation.members.contains_key("vip"));
    let now = r.profile(pid).unwrap().unwrap();
    assert!(now.activation.members.is_empty());
    assert!(
        Arc::ptr_eq(&held.groups, &now.groups),
        "groups are still shared"
    );
}
