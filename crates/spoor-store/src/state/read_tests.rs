//! The lookup shortcuts of [`StateReader`] (identity read once while resolving, clusters
//! from a record already read, shared `Arc`s) answer exactly what the plain reads answer,
//! from the pending layer and from the backend alike.

use super::super::StateStore;
use super::StateReader;
use spoor_core::identity::{IdentityStore, ProfileId, ProfileIdentity, ProfileStatus};

fn merged_into(into: ProfileId) -> ProfileIdentity {
    let mut i = ProfileIdentity::new(1, 1);
    i.status = ProfileStatus::MergedInto(into);
    i
}

fn check(r: &StateReader, ids: &[ProfileId]) {
    for &p in ids {
        let plain = r.resolve(p).unwrap();
        let with = r.resolve_identity(p).unwrap();
        assert_eq!(plain, with.as_ref().map(|(q, _)| *q), "{p}");
        if let Some((live, ident)) = with {
            assert_eq!(r.identity(live).unwrap().as_ref(), Some(&*ident));
            assert_eq!(
                r.cluster_of(live, &ident).unwrap(),
                r.cluster(live).unwrap()
            );
        }
        assert_eq!(
            r.profile_arc(p).unwrap().map(|a| (*a).clone()),
            r.profile(p).unwrap()
        );
        assert_eq!(
            r.identity_arc(p).unwrap().map(|a| (*a).clone()),
            r.identity(p).unwrap()
        );
    }
}

#[test]
fn resolve_identity_and_cluster_of_agree_with_resolve_and_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut st = store.processor_state(1024).unwrap();
    let [p1, p2, p3, p4, p5] = [1, 2, 3, 4, 5].map(ProfileId::from_raw);
    // p1 absorbed p2, which had absorbed p3; p4 is dissolved; p5 does not exist.
    let mut live = ProfileIdentity::new(1, 1);
    live.absorbed = vec![p2];
    let mut mid = merged_into(p1);
    mid.absorbed = vec![p3];
    st.put_identity(p1, live);
    st.put_identity(p2, mid);
    st.put_identity(p3, merged_into(p2));
    let mut gone = ProfileIdentity::new(4, 4);
    gone.status = ProfileStatus::Dissolved;
    st.put_identity(p4, gone);
    st.with_profile(p1, |p| super::super::pending_tests::set_trait(p, "gold"))
        .unwrap();
    st.set_processed(1);
    let ids = [p1, p2, p3, p4, p5];
    let r = store.reader().unwrap();
    // From the pending layer.
    check(&r, &ids);
    assert_eq!(r.resolve(p3).unwrap(), Some(p1));
    assert_eq!(r.cluster(p1).unwrap(), vec![p1, p2, p3]);
    // From the backend.
    st.checkpoint().unwrap();
    check(&store.durable_reader().unwrap(), &ids);
    check(&r, &ids);
    // Half in each: a newer record for p2 pending over the committed others.
    let mut mid = merged_into(p1);
    mid.absorbed = vec![p3, p4];
    st.put_identity(p2, mid);
    check(&r, &ids);
    assert_eq!(r.cluster(p1).unwrap(), vec![p1, p2, p3, p4]);
}

/// Counts the snapshots opened on a backend.
struct Counting {
    inner: std::sync::Arc<dyn super::super::backend::StateBackend>,
    opened: std::sync::atomic::AtomicUsize,
}

impl super::super::backend::StateBackend for Counting {
    fn commit(
        &self,
        changes: &mut super::super::backend::ChangeSet,
    ) -> Result<(), crate::error::StoreError> {
        self.inner.commit(changes)
    }
    fn snapshot(
        &self,
    ) -> Result<Box<dyn super::super::backend::StateSnapshot>, crate::error::StoreError> {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.snapshot()
    }
}

/// Readers use the snapshot the processor opened after its last checkpoint: opening one
/// waits while a checkpoint commits, which put milliseconds on Profile API lookups. Each
/// checkpoint opens exactly one, however many readers come, and what they read is the
/// committed state.
#[test]
fn readers_share_the_snapshot_of_the_last_checkpoint() {
    use std::sync::atomic::Ordering::SeqCst;
    let dir = tempfile::tempdir().unwrap();
    let counting = std::sync::Arc::new(Counting {
        inner: std::sync::Arc::new(super::super::RedbBackend::open(dir.path()).unwrap()),
        opened: Default::default(),
    });
    let store = StateStore::with_backend(counting.clone());
    let mut st = store.processor_state(1024).unwrap();
    let p = ProfileId::from_raw(7);
    for round in 1..=3u8 {
        st.put_identity(p, ProfileIdentity::new(1, 1));
        let v = format!("v{round}");
        st.with_profile(p, |x| super::super::pending_tests::set_trait(x, &v))
            .unwrap();
        st.set_processed(u64::from(round));
        st.checkpoint().unwrap();
        let before = counting.opened.load(SeqCst);
        for _ in 0..50 {
            let r = store.reader().unwrap();
            // Not pending any more: read from the backend snapshot.
            assert_eq!(r.processed_seq().unwrap(), u64::from(round));
            let mut want = spoor_core::profile::Profile::new(p);
            super::super::pending_tests::set_trait(&mut want, &v);
            assert_eq!(r.profile(p).unwrap(), Some(want), "round {round}");
        }
        assert_eq!(counting.opened.load(SeqCst), before, "round {round}");
    }
}
