//! Tests of `redb_backend.rs`.

use super::*;
use spoor_core::identity::ProfileId;
use std::sync::Arc;

/// A state written before the group→members index existed gets it filled from the
/// profiles' groups when opened.
#[test]
fn an_older_state_gets_its_group_index_on_open() {
    let d = tempfile::tempdir().unwrap();
    {
        let b = RedbBackend::open(d.path()).unwrap();
        let mut p = Profile::new(ProfileId::from_raw(7));
        p.groups_mut().insert("acme".into(), 1);
        p.groups_mut().insert("beta".into(), 2);
        let mut c = ChangeSet {
            profiles: vec![(7, Some(Arc::new(p)))],
            ..ChangeSet::default()
        };
        b.commit(&mut c).unwrap();
        let tx = b.db.begin_write().unwrap();
        tx.delete_table(GROUP_MEMBERS).unwrap();
        tx.commit().unwrap();
    }
    let b = RedbBackend::open(d.path()).unwrap();
    let s = b.snapshot().unwrap();
    assert_eq!(s.group_members("acme").unwrap(), vec![7]);
    assert_eq!(s.group_members("beta").unwrap(), vec![7]);
    drop(s);
    drop(b);
    // Once it exists, opening does not touch it again.
    let b = RedbBackend::open(d.path()).unwrap();
    assert_eq!(
        b.snapshot().unwrap().group_members("acme").unwrap(),
        vec![7]
    );
}

/// A state written before the status table existed gets it filled from the identity
/// records when opened; later commits keep it in step with them.
#[test]
fn an_older_state_gets_its_status_table_on_open() {
    use spoor_core::identity::{ProfileIdentity, ProfileStatus};
    let d = tempfile::tempdir().unwrap();
    let with = |status| {
        Some(Arc::new(ProfileIdentity {
            status,
            ..ProfileIdentity::new(1, 1)
        }))
    };
    let into = ProfileStatus::MergedInto(ProfileId::from_raw(3));
    let statuses = |b: &RedbBackend| {
        let mut out = Vec::new();
        let s = b.snapshot().unwrap();
        s.profile_statuses(0..u64::MAX, &mut |p, st| out.push((p, st)))
            .unwrap();
        out
    };
    {
        let b = RedbBackend::open(d.path()).unwrap();
        let mut c = ChangeSet {
            identities: vec![
                (3, with(ProfileStatus::Live)),
                (4, with(into)),
                (5, with(ProfileStatus::Dissolved)),
            ],
            ..ChangeSet::default()
        };
        b.commit(&mut c).unwrap();
        let tx = b.db.begin_write().unwrap();
        tx.delete_table(PSTATUS).unwrap();
        tx.commit().unwrap();
    }
    let b = RedbBackend::open(d.path()).unwrap();
    let all = vec![
        (3, ProfileStatus::Live),
        (4, into),
        (5, ProfileStatus::Dissolved),
    ];
    assert_eq!(statuses(&b), all);
    let mut c = ChangeSet {
        identities: vec![(5, None), (6, with(ProfileStatus::Live))],
        ..ChangeSet::default()
    };
    b.commit(&mut c).unwrap();
    assert_eq!(
        statuses(&b),
        vec![
            (3, ProfileStatus::Live),
            (4, into),
            (6, ProfileStatus::Live)
        ]
    );
}

fn profile_with_activation() -> Profile {
    let mut p = Profile::new(ProfileId::from_raw(7));
    p.event_count = 3;
    p.activation_mut().members.insert("vip".into(), 1_000);
    p.activation_mut().next.insert("vip".into(), 2_000);
    std::sync::Arc::make_mut(&mut p.activation_mut().values)
        .insert("orders".into(), serde_json::json!(2));
    p
}

/// A state written before format 2 holds JSON profiles: they are still read, and the
/// open records the current format.
#[test]
fn json_profiles_of_format_1_are_read() {
    let d = tempfile::tempdir().unwrap();
    let p = profile_with_activation();
    {
        let db = Database::create(d.path().join("state.redb")).unwrap();
        create_all(&db).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(PROFILES)
            .unwrap()
            .insert(7, json(&p).unwrap().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let b = RedbBackend::open(d.path()).unwrap();
    let snap = b.snapshot().unwrap();
    assert_eq!(snap.profiles(&[7]).unwrap(), vec![Some(p.clone())]);
    assert_eq!(snap.list_profiles(None, 10).unwrap(), vec![p.clone()]);
    let t = b.db.begin_read().unwrap();
    let format = t.open_table(META).unwrap().get(K_FORMAT).unwrap().unwrap();
    assert_eq!(format.value(), STATE_FORMAT.to_le_bytes().as_slice());
    // A checkpoint rewrites it in the binary form, which reads back the same.
    let mut c = ChangeSet {
        profiles: vec![(7, Some(std::sync::Arc::new(p.clone())))],
        ..ChangeSet::default()
    };
    b.commit(&mut c).unwrap();
    let t = b.db.begin_read().unwrap();
    let raw = t.open_table(PROFILES).unwrap().get(7).unwrap().unwrap();
    assert_eq!(raw.value()[0], spoor_core::codec::PROFILE_V3);
    let snap = b.snapshot().unwrap();
    assert_eq!(snap.profiles(&[7]).unwrap(), vec![Some(p.clone())]);
    // Read for a rewrite: the activation stays encoded until used, and equals it then.
    let lazy = snap.profiles_lazy(&[7]).unwrap().pop().flatten().unwrap();
    assert!(!lazy.activation.is_decoded());
    assert_eq!(lazy, p);
}

#[test]
fn a_newer_state_format_is_refused() {
    let d = tempfile::tempdir().unwrap();
    {
        let db = Database::create(d.path().join("state.redb")).unwrap();
        create_all(&db).unwrap();
        let tx = db.begin_write().unwrap();
        tx.open_table(META)
            .unwrap()
            .insert(K_FORMAT, (STATE_FORMAT + 1).to_le_bytes().as_slice())
            .unwrap();
        tx.commit().unwrap();
    }
    let e = RedbBackend::open(d.path())
        .err()
        .expect("refused")
        .to_string();
    assert!(e.contains("spoor rebuild"), "{e}");
}
