//! The read side over pending changes: what the processor applied is visible at once,
//! durable only after a checkpoint, and readers never see a change vanish while a
//! checkpoint moves it into the backend.

use super::{StateReader, StateStore};
use spoor_core::identity::{Identifier, IdentityStore, ProfileId, ProfileIdentity};
use spoor_core::profile::{Profile, TraitValue};

pub(super) fn set_trait(p: &mut Profile, v: &str) {
    p.traits_mut().insert(
        "plan".into(),
        TraitValue {
            value: serde_json::json!(v),
            set_at_ms: 1,
            seq: 1,
            source_id: "src".into(),
            message_id: "m".into(),
            removed: false,
        },
    );
}

fn plan(r: &StateReader, pid: ProfileId) -> Option<String> {
    r.profile(pid)
        .unwrap()
        .and_then(|p| p.trait_value("plan").map(|v| v.to_string()))
}

#[test]
fn pending_changes_are_read_before_the_checkpoint_and_survive_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let (p1, p2) = (ProfileId::from_raw(1), ProfileId::from_raw(2));
    let ann = Identifier::new("email", "ann@example.com");

    st.with_profile(p1, |p| set_trait(p, "free")).unwrap();
    st.put_identity(p1, ProfileIdentity::new(1, 1));
    st.set_owner(&ann, Some(p1));
    st.add_timeline(p1, 10, 1);
    st.set_processed(1);

    // A reader opened before the change sees it too: every call reads the current state.
    let r = store.reader().unwrap();
    assert_eq!(plan(&r, p1).as_deref(), Some("\"free\""));
    assert_eq!(r.owner("email", "ann@example.com").unwrap(), Some(p1));
    assert_eq!(r.timeline(&[p1], None, 10).unwrap().len(), 1);
    assert_eq!(r.list_profiles(None, 10).unwrap().len(), 1);
    assert_eq!(
        r.search_identifiers("email", "ann", None, 10)
            .unwrap()
            .len(),
        1
    );
    // Not durable yet.
    let d = store.durable_reader().unwrap();
    assert_eq!(plan(&d, p1), None);
    assert_eq!(d.processed_seq().unwrap(), 0);

    st.checkpoint().unwrap();
    assert_eq!(st.durable_seq(), 1);
    // The same reader, across the checkpoint, still sees everything (now from the backend).
    assert_eq!(plan(&r, p1).as_deref(), Some("\"free\""));
    assert_eq!(r.timeline(&[p1], None, 10).unwrap().len(), 1);
    assert_eq!(
        plan(&store.durable_reader().unwrap(), p1).as_deref(),
        Some("\"free\"")
    );

    // Changes over committed data, and removals, merge with it.
    st.with_profile(p1, |p| set_trait(p, "gold")).unwrap();
    st.with_profile(p2, |p| set_trait(p, "free")).unwrap();
    st.add_timeline(p1, 20, 2);
    st.set_processed(2);
    assert_eq!(plan(&r, p1).as_deref(), Some("\"gold\""));
    assert_eq!(r.timeline(&[p1], None, 10).unwrap().len(), 2);
    let ids: Vec<u64> = r
        .list_profiles(None, 10)
        .unwrap()
        .iter()
        .map(|p| p.id.raw())
        .collect();
    assert_eq!(ids, vec![1, 2]);
    let listed = |after| r.list_profile_ids(after, 10).unwrap();
    assert_eq!(listed(None), vec![p1, p2]);
    assert_eq!(listed(Some(p1)), vec![p2]);
    assert!(st.take_profile(p1).unwrap().is_some());
    // A profile put back whole replaces the current one at once.
    let mut back = r.profile(p2).unwrap().unwrap_or_else(|| Profile::new(p2));
    set_trait(&mut back, "silver");
    st.put_profile(back);
    assert_eq!(plan(&r, p2).as_deref(), Some("\"silver\""));
    st.with_profile(p2, |p| set_trait(p, "free")).unwrap();
    st.set_owner(&ann, None);
    assert_eq!(plan(&r, p1), None);
    assert_eq!(r.owner("email", "ann@example.com").unwrap(), None);
    assert!(r
        .search_identifiers("email", "", None, 10)
        .unwrap()
        .is_empty());
    assert_eq!(r.list_profiles(None, 10).unwrap().len(), 1);
    assert_eq!(r.list_profile_ids(None, 10).unwrap(), vec![p2]);

    // A split supersedes committed rows at once.
    st.drop_rows(p1);
    assert!(r.timeline(&[p1], None, 10).unwrap().is_empty());
    st.checkpoint().unwrap();
    assert!(r.timeline(&[p1], None, 10).unwrap().is_empty());
    assert_eq!(plan(&r, p2).as_deref(), Some("\"free\""));
}

#[test]
fn a_new_processor_discards_what_a_crashed_one_left_pending() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    st.with_profile(ProfileId::from_raw(7), |p| set_trait(p, "x"))
        .unwrap();
    st.set_processed(5);
    drop(st);
    // The replacement starts from the durable position and replays; nothing stale shows.
    let st = store.processor_state(1024).unwrap();
    assert_eq!(st.processed_seq(), 0);
    assert!(store
        .reader()
        .unwrap()
        .profile(ProfileId::from_raw(7))
        .unwrap()
        .is_none());
}

#[test]
fn a_background_checkpoint_keeps_its_changes_readable_while_new_ones_pile_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let p1 = ProfileId::from_raw(1);
    let ann = Identifier::new("email", "ann@example.com");
    st.with_profile(p1, |p| {
        set_trait(p, "free");
        p.first_seen_ms = 5;
    })
    .unwrap();
    st.set_owner(&ann, Some(p1));
    st.add_timeline(p1, 10, 1);
    st.set_processed(1);
    st.begin_checkpoint().unwrap();
    assert!(st.checkpoint_in_flight());

    // The frozen layer stays readable (to readers and to the processor) until it is
    // durable, whether or not the commit has finished meanwhile.
    let r = store.reader().unwrap();
    assert_eq!(plan(&r, p1).as_deref(), Some("\"free\""));
    assert_eq!(r.owner("email", "ann@example.com").unwrap(), Some(p1));
    st.with_profile(p1, |p| set_trait(p, "gold")).unwrap();
    let p = r.profile(p1).unwrap().unwrap();
    assert_eq!(p.first_seen_ms, 5, "changed from the frozen copy");
    assert_eq!(plan(&r, p1).as_deref(), Some("\"gold\""));
    st.add_timeline(p1, 20, 2);
    assert_eq!(r.timeline(&[p1], None, 10).unwrap().len(), 2);
    // A split in the new layer hides the frozen layer's rows as well as committed ones.
    st.drop_rows(p1);
    st.add_timeline(p1, 30, 3);
    let rows = r.timeline(&[p1], None, 10).unwrap();
    assert_eq!(rows.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3]);
    st.set_processed(3);

    assert!(st.finish_checkpoint(true).unwrap());
    assert_eq!(st.durable_seq(), 1);
    let d = store.durable_reader().unwrap();
    assert_eq!(plan(&d, p1).as_deref(), Some("\"free\""));
    assert_eq!(d.timeline(&[p1], None, 10).unwrap().len(), 1);
    assert_eq!(plan(&r, p1).as_deref(), Some("\"gold\""));
    let rows = r.timeline(&[p1], None, 10).unwrap();
    assert_eq!(rows.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3]);

    st.checkpoint().unwrap();
    assert_eq!(st.durable_seq(), 3);
    let d = store.durable_reader().unwrap();
    assert_eq!(plan(&d, p1).as_deref(), Some("\"gold\""));
    let rows = d.timeline(&[p1], None, 10).unwrap();
    assert_eq!(rows.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![3]);
}

/// A profile holding many audience and computed-trait states counts for more than one
/// pending entry (the checkpoint policy bounds memory by entries), and a replaced copy no
/// longer counts.
#[test]
fn pending_entries_weigh_profiles_by_their_states() {
    use spoor_core::computed::ComputedState;
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let with_states = |raw: u64, n: usize| {
        let mut p = Profile::new(ProfileId::from_raw(raw));
        let a = p.activation_mut();
        for i in 0..n {
            a.computed.insert(
                Arc::from(format!("t{i}").as_str()),
                Arc::new(ComputedState::Count { n: 1 }),
            );
        }
        p
    };
    for raw in 1..=10 {
        st.put_profile(with_states(raw, 80));
    }
    assert_eq!(
        st.pending_entries(),
        10 * 11,
        "one plus one per 8 states each"
    );
    // Replaced by a plain copy: the old weight goes.
    st.put_profile(with_states(3, 0));
    assert_eq!(st.pending_entries(), 9 * 11 + 1);
    st.with_profile(ProfileId::from_raw(4), |p| set_trait(p, "pro"))
        .unwrap();
    assert_eq!(
        st.pending_entries(),
        9 * 11 + 1,
        "changed in place, same states"
    );
    st.checkpoint().unwrap();
    assert_eq!(st.pending_entries(), 0);
}
