//! The conformance suite every [`StateBackend`] must pass: the embedded redb backend runs it
//! in this crate's tests, and a PostgreSQL backend runs the very same checks by calling
//! [`run`] with a factory of fresh, empty backends.
//!
//! It checks behaviour only the contract promises: atomic checkpoints with their position,
//! snapshot isolation, deletes, timeline order and cursors, profile statuses, row drops
//! before re-inserts, decision order and replacement, identifier prefix search, paging, the
//! identifier→events and group→members indexes, split rules, audience memberships (bitmaps,
//! timers, history, change feed), and a canonical dump.

use super::backend::{ChangeSet, StateBackend};
use super::memberships::{decode_members, encode_members, ChangeCause, MembershipChange};
use super::tables::{ident_hash, ident_key};
use spoor_core::identity::{
    Decision, DecisionKind, Identifier, ProfileId, ProfileIdentity, ProfileStatus, SplitOrigin,
    SplitRule, SplitRuleId,
};
use spoor_core::profile::{Group, Profile};
use std::sync::Arc;

/// Runs every check, each on a fresh backend from `make`. Panics on the first failure.
pub fn run(make: &mut dyn FnMut() -> Arc<dyn StateBackend>) {
    empty_backend_reads_as_empty(make());
    a_checkpoint_round_trips_and_snapshots_are_isolated(make());
    deletes_remove(make());
    timeline_is_newest_first_with_cursor_and_limit(make());
    profile_statuses_are_listed_in_id_order(make());
    dropped_rows_go_before_the_same_checkpoint_adds_new_ones(make());
    decisions_are_ordered_and_a_later_one_replaces(make());
    identifier_search_is_by_type_and_prefix_with_cursor(make());
    profiles_page_in_id_order_and_events_are_indexed_by_identifier(make());
    group_members_accumulate_per_group(make());
    split_rules_persist_and_change_only_when_given(make());
    memberships_round_trip_and_snapshots_are_isolated(make());
    membership_deletes_and_dropped_rows(make());
    the_dump_is_canonical(make);
}

fn profile(id: u64, trait_value: &str) -> Profile {
    let mut p = Profile::new(ProfileId::from_raw(id));
    p.event_count = id;
    p.first_seen_ms = 1_000 + id as i64;
    p.last_seen_ms = 2_000 + id as i64;
    p.groups_mut().insert(trait_value.to_owned(), 5);
    p
}

fn decision(seq: u64, profile: u64) -> Decision {
    Decision {
        seq,
        message_id: format!("m{seq}"),
        timestamp_ms: seq as i64,
        kind: DecisionKind::Created {
            profile: ProfileId::from_raw(profile),
        },
    }
}

fn rule(id: u64) -> SplitRule {
    let a = Identifier::new("anonymous_id", format!("a{id}"));
    SplitRule {
        id: SplitRuleId(id),
        side_a: vec![a.clone()],
        side_b: vec![Identifier::new("user_id", format!("u{id}"))],
        created_ms: 7,
        origin: SplitOrigin::Detach { identifier: a },
    }
}

fn members(ids: &[u64]) -> Vec<u8> {
    encode_members(&ids.iter().copied().collect())
}

fn mchange(aud: &str, pid: u64, entered: bool, at_ms: i64) -> Arc<MembershipChange> {
    Arc::new(MembershipChange {
        audience: aud.into(),
        profile: ProfileId::from_raw(pid),
        entered,
        at_ms,
        seq: 10 + pid,
        cause: if entered {
            ChangeCause::Event
        } else {
            ChangeCause::Timer
        },
    })
}

fn commit(b: &dyn StateBackend, c: ChangeSet) {
    let mut c = c;
    b.commit(&mut c).expect("commit");
}

fn empty_backend_reads_as_empty(b: Arc<dyn StateBackend>) {
    let s = b.snapshot().unwrap();
    assert_eq!(s.processed_seq().unwrap(), 0);
    assert_eq!(s.live_profiles().unwrap(), 0);
    assert!(s.split_rules().unwrap().is_empty());
    assert_eq!(s.owners(&["user_id\u{1f}x"]).unwrap(), vec![None]);
    assert_eq!(s.identities(&[1, 2]).unwrap(), vec![None, None]);
    assert_eq!(s.profiles(&[1]).unwrap(), vec![None]);
    assert_eq!(s.groups(&["g"]).unwrap(), vec![None]);
    assert!(s.timeline(&[1], None, 10).unwrap().is_empty());
    assert_eq!(s.timeline_span().unwrap(), None);
    assert!(s.decisions(&[1]).unwrap().is_empty());
    assert!(s.list_profiles(None, 10).unwrap().is_empty());
    assert!(s.events_with("user_id\u{1f}x", 10).unwrap().is_empty());
    assert!(s.audience_names().unwrap().is_empty());
    assert_eq!(s.audience_bitmaps(&["a"]).unwrap(), vec![None]);
    assert!(s.timers(None, 10).unwrap().is_empty());
    assert!(s.membership_history(&[1], 10).unwrap().is_empty());
    assert!(s.membership_feed(0, 10).unwrap().is_empty());
    assert_eq!(s.next_change_no().unwrap(), 0);
}

fn a_checkpoint_round_trips_and_snapshots_are_isolated(b: Arc<dyn StateBackend>) {
    let before = b.snapshot().unwrap();
    let mut ident = ProfileIdentity::new(3, 30);
    ident.absorbed.push(ProfileId::from_raw(9));
    let key = ident_key("user_id", "u1");
    commit(
        &*b,
        ChangeSet {
            processed_seq: 42,
            live_profiles: 2,
            owners: vec![(key.clone(), Some(3))],
            identities: vec![(3, Some(Arc::new(ident.clone())))],
            profiles: vec![
                (3, Some(Arc::new(profile(3, "acme")))),
                (4, Some(Arc::new(profile(4, "x")))),
            ],
            groups: vec![("acme".into(), Arc::new(Group::new("acme")))],
            timeline: vec![(3, 100, 1)],
            ident_events: vec![(ident_hash(&key), 1)],
            decisions: vec![((3, 1, 0), Arc::new(decision(1, 3)))],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.processed_seq().unwrap(), 42);
    assert_eq!(s.live_profiles().unwrap(), 2);
    assert_eq!(
        s.owners(&[key.as_str(), "user_id\u{1f}nobody"]).unwrap(),
        vec![Some(3), None]
    );
    assert_eq!(s.identities(&[3]).unwrap(), vec![Some(ident)]);
    assert_eq!(
        s.profiles(&[4, 3]).unwrap(),
        vec![Some(profile(4, "x")), Some(profile(3, "acme"))]
    );
    assert_eq!(s.groups(&["acme"]).unwrap(), vec![Some(Group::new("acme"))]);
    assert_eq!(s.timeline(&[3], None, 10).unwrap(), vec![(100, 1)]);
    assert_eq!(s.decisions(&[3]).unwrap(), vec![decision(1, 3)]);
    assert_eq!(s.events_with(&key, 10).unwrap(), vec![1]);
    // A snapshot taken before the commit still sees the state before it.
    assert_eq!(before.processed_seq().unwrap(), 0);
    assert_eq!(before.profiles(&[3]).unwrap(), vec![None]);
}

fn deletes_remove(b: Arc<dyn StateBackend>) {
    let key = ident_key("email", "a@x.y");
    commit(
        &*b,
        ChangeSet {
            processed_seq: 1,
            owners: vec![(key.clone(), Some(1))],
            identities: vec![(1, Some(Arc::new(ProfileIdentity::new(1, 1))))],
            profiles: vec![(1, Some(Arc::new(profile(1, "g"))))],
            ..ChangeSet::default()
        },
    );
    commit(
        &*b,
        ChangeSet {
            processed_seq: 2,
            owners: vec![(key.clone(), None)],
            identities: vec![(1, None)],
            profiles: vec![(1, None)],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.owners(&[key.as_str()]).unwrap(), vec![None]);
    assert_eq!(s.identities(&[1]).unwrap(), vec![None]);
    assert_eq!(s.profiles(&[1]).unwrap(), vec![None]);
    assert_eq!(s.processed_seq().unwrap(), 2);
}

fn timeline_is_newest_first_with_cursor_and_limit(b: Arc<dyn StateBackend>) {
    commit(
        &*b,
        ChangeSet {
            processed_seq: 6,
            timeline: vec![
                (1, 10, 1),
                (2, 20, 2),
                (1, 30, 3),
                (2, 30, 4),
                (1, 50, 5),
                (3, 60, 6),
            ],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(
        s.timeline(&[1, 2], None, 10).unwrap(),
        vec![(50, 5), (30, 4), (30, 3), (20, 2), (10, 1)]
    );
    assert_eq!(
        s.timeline(&[1, 2], None, 2).unwrap(),
        vec![(50, 5), (30, 4)]
    );
    assert_eq!(
        s.timeline(&[1, 2], Some((30, 4)), 2).unwrap(),
        vec![(30, 3), (20, 2)]
    );
    assert_eq!(s.timeline(&[2], Some((30, 4)), 10).unwrap(), vec![(20, 2)]);
    assert!(s.timeline(&[9], None, 10).unwrap().is_empty());
    // Every row of an id range, by id then time (what a backfill maps seqs with).
    let rows = |r: std::ops::Range<u64>| {
        let mut out = Vec::new();
        s.timeline_rows(r, &mut |p, seq| out.push((p, seq)))
            .unwrap();
        out
    };
    assert_eq!(rows(1..3), vec![(1, 1), (1, 3), (1, 5), (2, 2), (2, 4)]);
    assert_eq!(rows(2..4), vec![(2, 2), (2, 4), (3, 6)]);
    assert_eq!(rows(0..u64::MAX).len(), 6);
    assert!(rows(4..9).is_empty() && rows(3..3).is_empty());
    assert_eq!(s.timeline_span().unwrap(), Some((1, 3)));
}

fn profile_statuses_are_listed_in_id_order(b: Arc<dyn StateBackend>) {
    let with = |status| {
        Some(Arc::new(ProfileIdentity {
            status,
            ..ProfileIdentity::new(1, 1)
        }))
    };
    let within = |s: &dyn super::backend::StateSnapshot, r| {
        let mut out = Vec::new();
        s.profile_statuses(r, &mut |p, st| out.push((p, st)))
            .unwrap();
        out
    };
    let statuses = |s: &dyn super::backend::StateSnapshot| within(s, 0..u64::MAX);
    assert!(statuses(&*b.snapshot().unwrap()).is_empty());
    let into = ProfileStatus::MergedInto(ProfileId::from_raw(2));
    commit(
        &*b,
        ChangeSet {
            processed_seq: 1,
            identities: vec![
                (9, with(ProfileStatus::Dissolved)),
                (2, with(ProfileStatus::Live)),
                (5, with(into)),
                (7, with(ProfileStatus::Live)),
            ],
            ..ChangeSet::default()
        },
    );
    let before = b.snapshot().unwrap();
    commit(
        &*b,
        ChangeSet {
            processed_seq: 2,
            identities: vec![(7, None), (3, with(ProfileStatus::Live))],
            ..ChangeSet::default()
        },
    );
    assert_eq!(
        statuses(&*b.snapshot().unwrap()),
        vec![
            (2, ProfileStatus::Live),
            (3, ProfileStatus::Live),
            (5, into),
            (9, ProfileStatus::Dissolved)
        ]
    );
    assert_eq!(statuses(&*before).len(), 4, "a snapshot keeps its statuses");
    let s = b.snapshot().unwrap();
    assert_eq!(within(&*s, 3..9), vec![(3, ProfileStatus::Live), (5, into)]);
    assert!(within(&*s, 6..9).is_empty() && within(&*s, 5..5).is_empty());
}

fn dropped_rows_go_before_the_same_checkpoint_adds_new_ones(b: Arc<dyn StateBackend>) {
    commit(
        &*b,
        ChangeSet {
            timeline: vec![(1, 10, 1), (1, 20, 2), (2, 5, 3)],
            decisions: vec![
                ((1, 1, 0), Arc::new(decision(1, 1))),
                ((2, 3, 0), Arc::new(decision(3, 2))),
            ],
            ..ChangeSet::default()
        },
    );
    commit(
        &*b,
        ChangeSet {
            drop_rows: vec![1],
            timeline: vec![(1, 20, 2)],
            decisions: vec![((1, 2, 0), Arc::new(decision(2, 1)))],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.timeline(&[1], None, 10).unwrap(), vec![(20, 2)]);
    assert_eq!(s.decisions(&[1]).unwrap(), vec![decision(2, 1)]);
    assert_eq!(
        s.timeline(&[2], None, 10).unwrap(),
        vec![(5, 3)],
        "other profiles keep theirs"
    );
}

fn decisions_are_ordered_and_a_later_one_replaces(b: Arc<dyn StateBackend>) {
    let mut replaced = decision(5, 1);
    replaced.message_id = "second".into();
    commit(
        &*b,
        ChangeSet {
            decisions: vec![
                ((1, 5, 1), Arc::new(decision(5, 1))),
                ((2, 4, 0), Arc::new(decision(4, 2))),
                ((1, 5, 1), Arc::new(replaced.clone())),
                ((1, 2, 0), Arc::new(decision(2, 1))),
            ],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(
        s.decisions(&[1, 2]).unwrap(),
        vec![decision(2, 1), decision(4, 2), replaced]
    );
}

fn identifier_search_is_by_type_and_prefix_with_cursor(b: Arc<dyn StateBackend>) {
    let owners = ["ann@x.y", "anna@x.y", "annie@x.y", "bob@x.y"]
        .iter()
        .enumerate()
        .map(|(i, v)| (ident_key("email", v), Some(i as u64 + 1)))
        .chain([
            (ident_key("e", "ann"), Some(9)),
            (ident_key("emails", "ann"), Some(8)),
        ])
        .collect();
    commit(
        &*b,
        ChangeSet {
            owners,
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    let values = |v: Vec<(String, String, u64)>| {
        v.into_iter()
            .map(|(k, v, o)| format!("{k}:{v}:{o}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        values(s.search_identifiers("email", "ann", None, 10).unwrap()),
        vec!["email:ann@x.y:1", "email:anna@x.y:2", "email:annie@x.y:3"]
    );
    assert_eq!(
        values(s.search_identifiers("email", "ann", None, 2).unwrap()),
        vec!["email:ann@x.y:1", "email:anna@x.y:2"]
    );
    assert_eq!(
        values(
            s.search_identifiers("email", "ann", Some("anna@x.y"), 2)
                .unwrap()
        ),
        vec!["email:annie@x.y:3"]
    );
    assert_eq!(
        values(s.search_identifiers("email", "", None, 10).unwrap()).len(),
        4,
        "another type never matches"
    );
    assert_eq!(
        values(s.search_identifiers("e", "", None, 10).unwrap()),
        vec!["e:ann:9"]
    );
}

fn profiles_page_in_id_order_and_events_are_indexed_by_identifier(b: Arc<dyn StateBackend>) {
    let k1 = ident_key("user_id", "u1");
    let k2 = ident_key("user_id", "u10");
    commit(
        &*b,
        ChangeSet {
            profiles: (1..=5)
                .rev()
                .map(|i| (i, Some(Arc::new(profile(i, "g")))))
                .collect(),
            ident_events: vec![
                (ident_hash(&k1), 9),
                (ident_hash(&k1), 3),
                (ident_hash(&k2), 4),
                (ident_hash(&k1), 7),
            ],
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    let ids = |v: Vec<Profile>| v.into_iter().map(|p| p.id.raw()).collect::<Vec<_>>();
    assert_eq!(ids(s.list_profiles(None, 2).unwrap()), vec![1, 2]);
    assert_eq!(ids(s.list_profiles(Some(2), 2).unwrap()), vec![3, 4]);
    assert_eq!(ids(s.list_profiles(Some(5), 2).unwrap()), Vec::<u64>::new());
    // The ids alone page the same way.
    assert_eq!(s.list_profile_ids(None, 2).unwrap(), vec![1, 2]);
    assert_eq!(s.list_profile_ids(Some(2), 2).unwrap(), vec![3, 4]);
    assert_eq!(s.list_profile_ids(Some(5), 2).unwrap(), Vec::<u64>::new());
    assert_eq!(s.events_with(&k1, 10).unwrap(), vec![3, 7, 9]);
    assert_eq!(s.events_with(&k1, 2).unwrap(), vec![3, 7]);
    assert_eq!(s.events_with(&k2, 10).unwrap(), vec![4]);
}

fn group_members_accumulate_per_group(b: Arc<dyn StateBackend>) {
    assert!(b
        .snapshot()
        .unwrap()
        .group_members("acme")
        .unwrap()
        .is_empty());
    let rows = |v: &[(&str, u64)]| v.iter().map(|(g, p)| (g.to_string(), *p)).collect();
    commit(
        &*b,
        ChangeSet {
            group_members: rows(&[("acme", 9), ("acme", 2), ("acme2", 5), ("acm", 1)]),
            ..ChangeSet::default()
        },
    );
    let before = b.snapshot().unwrap();
    // A later checkpoint adds to a group's rows; the same row twice is one row.
    commit(
        &*b,
        ChangeSet {
            group_members: rows(&[("acme", 4), ("acme", 9)]),
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.group_members("acme").unwrap(), vec![2, 4, 9]);
    assert_eq!(s.group_members("acme2").unwrap(), vec![5]);
    assert_eq!(s.group_members("acm").unwrap(), vec![1]);
    assert!(s.group_members("nope").unwrap().is_empty());
    assert_eq!(before.group_members("acme").unwrap(), vec![2, 9]);
}

fn split_rules_persist_and_change_only_when_given(b: Arc<dyn StateBackend>) {
    commit(
        &*b,
        ChangeSet {
            split_rules: Some(vec![rule(1)]),
            ..ChangeSet::default()
        },
    );
    commit(
        &*b,
        ChangeSet {
            processed_seq: 3,
            ..ChangeSet::default()
        },
    );
    assert_eq!(b.snapshot().unwrap().split_rules().unwrap(), vec![rule(1)]);
    commit(
        &*b,
        ChangeSet {
            split_rules: Some(vec![rule(1), rule(2)]),
            ..ChangeSet::default()
        },
    );
    assert_eq!(
        b.snapshot().unwrap().split_rules().unwrap(),
        vec![rule(1), rule(2)]
    );
}

fn memberships_round_trip_and_snapshots_are_isolated(b: Arc<dyn StateBackend>) {
    let before = b.snapshot().unwrap();
    let (c1, c2, c3) = (
        mchange("buyers", 1, true, 50),
        mchange("vip", 1, true, 40),
        mchange("buyers", 2, true, 40),
    );
    let rows = vec![(1, c1.clone()), (2, c2.clone()), (3, c3.clone())];
    commit(
        &*b,
        ChangeSet {
            processed_seq: 9,
            audiences: vec![
                ("vip".into(), Some(members(&[1]))),
                ("buyers".into(), Some(members(&[2, 1, u64::MAX - 1]))),
            ],
            timers_add: vec![(300, 2), (100, 1), (100, 0), (-5, 3)],
            membership_feed: rows.clone(),
            membership_history: rows,
            next_change_no: Some(4),
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.audience_names().unwrap(), vec!["buyers", "vip"]);
    let bitmaps = s.audience_bitmaps(&["buyers", "nobody", "vip"]).unwrap();
    let ids = |b: &Option<Vec<u8>>| {
        decode_members(b.as_deref().unwrap())
            .unwrap()
            .iter()
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&bitmaps[0]), vec![1, 2, u64::MAX - 1]);
    assert_eq!(bitmaps[1], None);
    assert_eq!(ids(&bitmaps[2]), vec![1]);
    assert_eq!(
        s.timers(None, 10).unwrap(),
        vec![(-5, 3), (100, 0), (100, 1), (300, 2)]
    );
    assert_eq!(s.timers(None, 2).unwrap(), vec![(-5, 3), (100, 0)]);
    assert_eq!(
        s.timers(Some((100, 0)), 10).unwrap(),
        vec![(100, 1), (300, 2)]
    );
    // Newest first by time, then by change number.
    assert_eq!(
        s.membership_history(&[1, 2], 10).unwrap(),
        vec![(1, (*c1).clone()), (3, (*c3).clone()), (2, (*c2).clone())]
    );
    assert_eq!(
        s.membership_history(&[1, 2], 2).unwrap(),
        vec![(1, (*c1).clone()), (3, (*c3).clone())]
    );
    assert_eq!(
        s.membership_history(&[2], 10).unwrap(),
        vec![(3, (*c3).clone())]
    );
    assert_eq!(
        s.membership_feed(0, 10).unwrap(),
        vec![(1, (*c1).clone()), (2, (*c2).clone()), (3, (*c3).clone())]
    );
    assert_eq!(s.membership_feed(1, 1).unwrap(), vec![(2, (*c2).clone())]);
    assert!(s.membership_feed(3, 10).unwrap().is_empty());
    assert!(s.membership_feed(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(s.next_change_no().unwrap(), 4);
    // The next change number stays unless a checkpoint gives one.
    commit(
        &*b,
        ChangeSet {
            processed_seq: 10,
            ..ChangeSet::default()
        },
    );
    assert_eq!(b.snapshot().unwrap().next_change_no().unwrap(), 4);
    // A snapshot taken before the commits sees none of it.
    assert!(before.audience_names().unwrap().is_empty());
    assert!(before.timers(None, 10).unwrap().is_empty());
    assert!(before.membership_feed(0, 10).unwrap().is_empty());
    assert!(before.membership_history(&[1], 10).unwrap().is_empty());
}

fn membership_deletes_and_dropped_rows(b: Arc<dyn StateBackend>) {
    let rows = vec![
        (1, mchange("a", 1, true, 10)),
        (2, mchange("a", 2, true, 10)),
    ];
    commit(
        &*b,
        ChangeSet {
            audiences: vec![
                ("a".into(), Some(members(&[1, 2]))),
                ("b".into(), Some(members(&[1]))),
            ],
            timers_add: vec![(10, 1), (20, 2)],
            membership_feed: rows.clone(),
            membership_history: rows,
            next_change_no: Some(3),
            ..ChangeSet::default()
        },
    );
    let mid = b.snapshot().unwrap();
    let later = mchange("a", 1, false, 20);
    commit(
        &*b,
        ChangeSet {
            audiences: vec![("a".into(), Some(members(&[2]))), ("b".into(), None)],
            timers_add: vec![(30, 1)],
            timers_remove: vec![(10, 1), (99, 9)],
            drop_rows: vec![1],
            membership_feed: vec![(3, later.clone())],
            membership_history: vec![(3, later.clone())],
            next_change_no: Some(4),
            ..ChangeSet::default()
        },
    );
    let s = b.snapshot().unwrap();
    assert_eq!(s.audience_names().unwrap(), vec!["a"]);
    assert_eq!(s.audience_bitmaps(&["b"]).unwrap(), vec![None]);
    let a = s.audience_bitmaps(&["a"]).unwrap().pop().flatten().unwrap();
    assert_eq!(decode_members(&a).unwrap().iter().collect::<Vec<_>>(), [2]);
    assert_eq!(s.timers(None, 10).unwrap(), vec![(20, 2), (30, 1)]);
    // Profile 1's older history rows went before this checkpoint's row was added; the
    // feed keeps every row, and other profiles keep theirs.
    assert_eq!(
        s.membership_history(&[1], 10).unwrap(),
        vec![(3, (*later).clone())]
    );
    assert_eq!(s.membership_history(&[2], 10).unwrap().len(), 1);
    assert_eq!(s.membership_feed(0, 10).unwrap().len(), 3);
    // The snapshot between the two commits is unchanged.
    assert_eq!(mid.audience_names().unwrap(), vec!["a", "b"]);
    assert_eq!(mid.timers(None, 10).unwrap(), vec![(10, 1), (20, 2)]);
    assert_eq!(mid.membership_history(&[1], 10).unwrap().len(), 1);
    assert_eq!(mid.membership_feed(0, 10).unwrap().len(), 2);
}

/// The same state reached by different commit sequences dumps to the same lines.
fn the_dump_is_canonical(make: &mut dyn FnMut() -> Arc<dyn StateBackend>) {
    let (a, b) = (make(), make());
    let key = ident_key("user_id", "u");
    commit(
        &*a,
        ChangeSet {
            processed_seq: 2,
            owners: vec![(key.clone(), Some(1))],
            profiles: vec![
                (1, Some(Arc::new(profile(1, "g")))),
                (2, Some(Arc::new(profile(2, "h")))),
            ],
            timeline: vec![(1, 5, 1), (2, 6, 2)],
            audiences: vec![("a".into(), Some(members(&[2, 1])))],
            timers_add: vec![(7, 1)],
            membership_feed: vec![(1, mchange("a", 1, true, 5)), (2, mchange("a", 2, true, 6))],
            membership_history: vec![(1, mchange("a", 1, true, 5)), (2, mchange("a", 2, true, 6))],
            next_change_no: Some(3),
            ..ChangeSet::default()
        },
    );
    commit(
        &*b,
        ChangeSet {
            processed_seq: 1,
            profiles: vec![(2, Some(Arc::new(profile(2, "h"))))],
            timeline: vec![(2, 6, 2)],
            // Built differently (another order, a removed member, a moved timer).
            audiences: vec![("a".into(), Some(members(&[1, 3])))],
            timers_add: vec![(3, 1)],
            membership_feed: vec![(1, mchange("a", 1, true, 5))],
            membership_history: vec![(1, mchange("a", 1, true, 5))],
            next_change_no: Some(2),
            ..ChangeSet::default()
        },
    );
    commit(
        &*b,
        ChangeSet {
            processed_seq: 2,
            owners: vec![(key, Some(1))],
            profiles: vec![(1, Some(Arc::new(profile(1, "g"))))],
            timeline: vec![(1, 5, 1)],
            audiences: vec![("a".into(), Some(members(&[1, 2])))],
            timers_add: vec![(7, 1)],
            timers_remove: vec![(3, 1)],
            membership_feed: vec![(2, mchange("a", 2, true, 6))],
            membership_history: vec![(2, mchange("a", 2, true, 6))],
            next_change_no: Some(3),
            ..ChangeSet::default()
        },
    );
    let (da, db) = (
        a.snapshot().unwrap().dump().unwrap(),
        b.snapshot().unwrap().dump().unwrap(),
    );
    assert_eq!(da, db);
    assert!(da.iter().any(|l| l.contains("processed_seq 2")), "{da:?}");
    for want in [
        "audience \"a\" 1,2",
        "timer (7, 1)",
        "meta next_change_no 3",
    ] {
        assert!(da.iter().any(|l| l == want), "{want} in {da:?}");
    }
    assert_eq!(
        da.iter().filter(|l| l.starts_with("membership_")).count(),
        4,
        "{da:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RedbBackend;

    #[test]
    fn the_redb_backend_conforms() {
        let dirs = std::cell::RefCell::new(Vec::new());
        run(&mut || {
            let d = tempfile::tempdir().unwrap();
            let b: Arc<dyn StateBackend> = Arc::new(RedbBackend::open(d.path()).unwrap());
            dirs.borrow_mut().push(d);
            b
        });
    }
}
