//! Property tests over random event sequences with small value pools (so identifiers collide,
//! limits bite and merges chain), interleaved with admin splits.
//!
//! Checked after every sequence: graph invariants, determinism, and the replay differential —
//! the incremental graph *and every event's resolution* equal a full replay of the log from
//! empty with all split rules active from the start.

use super::tests::World;
use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const TYPES: [&str; 7] = [
    "user_id",
    "email",
    "anonymous_id",
    "device_id",
    "crm_id",
    "phone",
    "shoe_size",
];

fn config() -> IdentityConfig {
    let mut cfg = IdentityConfig::default();
    cfg.types[1].limit = Some(2); // email: 2 per 10 time units
    cfg.types[1].limit_window_ms = Some(10);
    cfg.types[2].normalize = Normalize::Phone {
        default_country_code: Some(31),
    };
    cfg.types[2].limit = Some(1);
    let mut crm = IdTypeConfig::new("crm_id", 4, Some(1), Normalize::Lowercase);
    crm.blocked = vec!["test.*".to_owned()];
    cfg.types.push(crm);
    cfg
}

/// A raw value: spellings that normalise together, and placeholders.
fn value(kind: &str, v: u8) -> String {
    match (kind, v) {
        (_, 5) => "null".to_owned(),
        ("email", v) if v % 2 == 1 => format!(" E{}@Ex.nl", v / 2),
        ("email", v) => format!("e{}@ex.nl", v / 2),
        ("phone", v) if v % 2 == 1 => format!("06-1234567{}", v / 2),
        ("phone", v) => format!("+31 6 1234567{}", v / 2),
        ("crm_id", 4) => "TEST-1".to_owned(),
        ("crm_id", v) => format!("C{v}"),
        (k, v) => format!("{}{v}", &k[..1]),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Event { ids: Vec<(usize, u8)>, dt: i64 },
    UndoMerge(usize),
    Detach(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let ids = prop::collection::vec((0..TYPES.len(), 0u8..6), 0..5);
    prop_oneof![
        12 => (ids, -3i64..6).prop_map(|(ids, dt)| Op::Event { ids, dt }),
        1 => any::<usize>().prop_map(Op::UndoMerge),
        1 => any::<usize>().prop_map(Op::Detach),
    ]
}

/// Runs the ops; returns the world and the latest resolution of every event (replaced when a
/// split re-derives it, as the processor would).
fn run(ops: &[Op]) -> (World, BTreeMap<u64, Resolution>) {
    let mut w = World::with(config());
    let mut latest = BTreeMap::new();
    let (mut ts, mut rule) = (1_000i64, 0u64);
    for op in ops {
        let plan = match op {
            Op::Event { ids, dt } => {
                ts += dt;
                let raw: Vec<(&str, String)> = ids
                    .iter()
                    .map(|(t, v)| (TYPES[*t], value(TYPES[*t], *v)))
                    .collect();
                let pairs: Vec<(&str, &str)> = raw.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let r = w.event(ts, &pairs);
                latest.insert(w.log.len() as u64, r);
                continue;
            }
            Op::UndoMerge(k) => {
                let merged: Vec<ProfileId> = w
                    .store
                    .profiles()
                    .iter()
                    .filter(|(_, r)| matches!(r.status, ProfileStatus::MergedInto(_)))
                    .map(|(p, _)| *p)
                    .collect();
                let Some(p) = merged.get(k % merged.len().max(1)) else {
                    continue;
                };
                plan_undo_merge(&mut w.store, *p, SplitRuleId(rule), ts)
            }
            Op::Detach(k) => {
                let owned: Vec<Identifier> = w.store.owners().keys().cloned().collect();
                let Some(id) = owned.get(k % owned.len().max(1)) else {
                    continue;
                };
                plan_detach(&mut w.store, id, SplitRuleId(rule), ts)
            }
        };
        if let Ok(plan) = plan {
            rule += 1;
            for (seq, r) in w.split(plan).resolutions {
                latest.insert(seq, r);
            }
        }
    }
    (w, latest)
}

fn check_invariants(w: &World) -> Result<(), TestCaseError> {
    let store = &w.store;
    for (id, p) in store.owners() {
        let rec = store.profiles().get(p);
        prop_assert!(
            rec.is_some_and(|r| r.is_live()),
            "{id} owned by non-live {p}"
        );
        prop_assert!(
            rec.is_some_and(|r| r.find(id).is_ok()),
            "{p} does not list {id}"
        );
    }
    let mut held = BTreeSet::new();
    for (p, r) in store.live_profiles() {
        prop_assert!(!r.identifiers.is_empty(), "live {p} without identifiers");
        prop_assert!(r
            .identifiers
            .windows(2)
            .all(|x| x[0].identifier < x[1].identifier));
        for l in &r.identifiers {
            prop_assert!(
                held.insert(&l.identifier),
                "{} in two live profiles",
                l.identifier
            );
            prop_assert_eq!(store.owners().get(&l.identifier), Some(&p));
        }
        for t in &w.rules.config().types {
            if let (Some(limit), None) = (t.limit, t.limit_window_ms) {
                let n = r
                    .identifiers
                    .iter()
                    .filter(|l| l.identifier.kind.as_str() == t.name);
                prop_assert!(n.count() <= limit as usize, "{p} over the {} limit", t.name);
            }
        }
        for rule in store.split_rules() {
            let a = r
                .identifiers
                .iter()
                .any(|l| rule.side_of(&l.identifier) == Some(SplitSide::A));
            let b = r
                .identifiers
                .iter()
                .any(|l| rule.side_of(&l.identifier) == Some(SplitSide::B));
            prop_assert!(!(a && b), "{p} breaks split rule {}", rule.id);
        }
    }
    let mut probe = store.clone();
    for (p, r) in store.profiles() {
        let end = resolve_profile(&mut probe, *p);
        match r.status {
            ProfileStatus::Dissolved => prop_assert_eq!(end, None),
            _ => prop_assert!(end.is_some(), "{p} does not resolve to a live profile"),
        }
    }
    Ok(())
}

/// The live graph, without bookkeeping that only re-derivation adds (redirect records and
/// their entries in `absorbed`).
fn live_view(s: &MemIdentityStore) -> BTreeMap<ProfileId, (u64, i64, Vec<LinkedIdentifier>)> {
    s.live_profiles()
        .map(|(p, r)| (p, (r.created_seq, r.created_ms, r.identifiers.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn invariants_determinism_and_replay(ops in prop::collection::vec(op(), 0..60)) {
        let (w, latest) = run(&ops);
        check_invariants(&w)?;

        let (again, latest_again) = run(&ops);
        prop_assert_eq!(&again.store, &w.store, "not deterministic");
        prop_assert_eq!(&latest_again, &latest);

        let mut fresh = MemIdentityStore::new();
        for r in w.store.split_rules() {
            fresh.add_split_rule(r.clone());
        }
        for e in &w.log {
            let r = resolve(&mut fresh, &w.rules, e);
            prop_assert_eq!(Some(&r), latest.get(&e.seq), "event {} resolved differently", e.seq);
        }
        prop_assert_eq!(fresh.owners(), w.store.owners());
        prop_assert_eq!(live_view(&fresh), live_view(&w.store));
    }
}

/// Guards the property test against a generator that stopped producing interesting cases.
#[test]
fn generator_exercises_merges_refusals_and_splits() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut merges, mut limits, mut splits, mut rederived_refusals) = (0, 0, 0, 0);
    for _ in 0..200 {
        let Ok(tree) = prop::collection::vec(op(), 0..60).new_tree(&mut runner) else {
            continue;
        };
        let (w, latest) = run(&tree.current());
        splits += w.store.split_rules().len();
        for r in latest.values() {
            merges += r.merged.len();
            for d in &r.decisions {
                match &d.kind {
                    DecisionKind::Refused {
                        rule: RefusalRule::LimitExceeded { .. },
                        ..
                    } => limits += 1,
                    DecisionKind::Refused {
                        rule: RefusalRule::SplitRule { .. },
                        ..
                    } => rederived_refusals += 1,
                    _ => {}
                }
            }
        }
    }
    eprintln!("merges {merges}, limit refusals {limits}, splits {splits}, split refusals {rederived_refusals}");
    assert!(merges > 100 && limits > 100 && splits > 50 && rederived_refusals > 50);
}
