//! Scenario tests: the journeys and edge cases the issue names, end to end through `resolve`.

use super::*;

const DAY: i64 = 86_400_000;

/// A graph plus its event log, as the processor would hold them.
pub(super) struct World {
    pub store: MemIdentityStore,
    pub rules: IdentityRules,
    pub log: Vec<IdentityInput>,
}

impl World {
    pub fn new() -> Self {
        Self::with(IdentityConfig::default())
    }

    pub fn with(cfg: IdentityConfig) -> Self {
        Self {
            store: MemIdentityStore::new(),
            rules: cfg.compile().expect("valid config"),
            log: Vec::new(),
        }
    }

    pub fn event(&mut self, ts: i64, ids: &[(&str, &str)]) -> Resolution {
        let seq = self.log.len() as u64 + 1;
        let input = IdentityInput {
            seq,
            message_id: format!("m{seq}"),
            timestamp_ms: ts,
            identifiers: ids
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.log.push(input.clone());
        resolve(&mut self.store, &self.rules, &input)
    }

    pub fn owner(&mut self, kind: &str, value: &str) -> Option<ProfileId> {
        let id = self.rules.normalize(kind, value).ok()?;
        self.store.profile_of(&id)
    }

    /// `type:value` of a profile's identifiers, sorted.
    pub fn ids_of(&self, p: ProfileId) -> Vec<String> {
        self.store
            .profiles()
            .get(&p)
            .map(|r| {
                r.identifiers
                    .iter()
                    .map(|l| l.identifier.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn events_with(&self) -> impl FnMut(&Identifier) -> Vec<IdentityInput> + '_ {
        |id| {
            self.log
                .iter()
                .filter(|e| {
                    e.identifiers
                        .iter()
                        .any(|(k, v)| self.rules.normalize(k, v).as_ref() == Ok(id))
                })
                .cloned()
                .collect()
        }
    }

    pub fn split(&mut self, plan: SplitPlan) -> Rederived {
        let events = component_events(&self.rules, &plan.seed, 10_000, self.events_with())
            .expect("small component");
        self.store.add_split_rule(plan.rule);
        rederive(&mut self.store, &self.rules, &events)
    }

    /// A fresh graph from the whole log with the current split rules active from the start.
    pub fn replayed(&self) -> MemIdentityStore {
        let mut fresh = MemIdentityStore::new();
        for r in self.store.split_rules() {
            fresh.add_split_rule(r.clone());
        }
        for e in &self.log {
            resolve(&mut fresh, &self.rules, e);
        }
        fresh
    }
}

fn refusals(r: &Resolution) -> Vec<(String, RefusalRule)> {
    r.decisions
        .iter()
        .filter_map(|d| match &d.kind {
            DecisionKind::Refused {
                identifier, rule, ..
            } => Some((identifier.to_string(), rule.clone())),
            _ => None,
        })
        .collect()
}

fn user_limit() -> RefusalRule {
    RefusalRule::LimitExceeded {
        id_type: IdType::new("user_id"),
        limit: 1,
        window_ms: None,
    }
}

#[test]
fn cross_device_journey_ends_in_one_profile() {
    let mut w = World::new();
    let p = w.event(0, &[("anonymous_id", "a1")]).profile;
    w.event(
        DAY,
        &[
            ("user_id", "u1"),
            ("anonymous_id", "a1"),
            ("email", "jan@ex.nl"),
        ],
    );
    let login = w.event(2 * DAY, &[("user_id", "u1"), ("anonymous_id", "a2")]);
    let click = w.event(3 * DAY, &[("email", " JAN@Ex.NL "), ("anonymous_id", "a3")]);
    assert_eq!(login.profile, p);
    assert_eq!(click.profile, p);
    let p = p.expect("a profile");
    assert_eq!(
        w.ids_of(p),
        [
            "anonymous_id:a1",
            "anonymous_id:a2",
            "anonymous_id:a3",
            "email:jan@ex.nl",
            "user_id:u1"
        ]
    );
    assert!(matches!(
        &click.decisions[..],
        [Decision { seq: 4, kind: DecisionKind::Linked { identifier, .. }, .. }]
            if identifier.value == "a3"
    ));
    assert_eq!(w.store.live_profiles().count(), 1);
}

#[test]
fn shared_computer_does_not_merge_two_users() {
    let mut w = World::new();
    let p1 = w
        .event(0, &[("user_id", "u1"), ("anonymous_id", "shared")])
        .profile;
    let second = w.event(DAY, &[("user_id", "u2"), ("anonymous_id", "shared")]);
    assert_ne!(
        second.profile, p1,
        "u2's event must not land on u1's profile"
    );
    assert_eq!(
        refusals(&second),
        [("anonymous_id:shared".to_owned(), user_limit())]
    );
    let Some(DecisionKind::Refused { owner, profile, .. }) = second
        .decisions
        .iter()
        .map(|d| &d.kind)
        .find(|k| matches!(k, DecisionKind::Refused { .. }))
    else {
        panic!("refusal recorded");
    };
    assert_eq!((*owner, *profile), (p1, second.profile));
    assert_eq!(w.owner("anonymous_id", "shared"), p1);
    assert_eq!(w.owner("user_id", "u2"), second.profile);
    assert_eq!(w.event(2 * DAY, &[("anonymous_id", "shared")]).profile, p1);
}

#[test]
fn merge_that_breaks_a_limit_is_refused() {
    let mut w = World::new();
    let p = w
        .event(0, &[("user_id", "u1"), ("anonymous_id", "a1")])
        .profile;
    let q = w
        .event(0, &[("user_id", "u2"), ("anonymous_id", "a2")])
        .profile;
    let r = w.event(DAY, &[("anonymous_id", "a1"), ("anonymous_id", "a2")]);
    assert_eq!(r.profile, p);
    assert!(r.merged.is_empty());
    assert_eq!(refusals(&r), [("anonymous_id:a2".to_owned(), user_limit())]);
    assert_eq!(w.owner("user_id", "u2"), q);
}

#[test]
fn blocked_values_never_link() {
    let mut w = World::new();
    let zero = "00000000-0000-0000-0000-000000000000";
    let events: [&[(&str, &str)]; 5] = [
        &[("user_id", "u1"), ("anonymous_id", "anonymous")],
        &[("user_id", "u2"), ("anonymous_id", "anonymous")],
        &[("user_id", "u3"), ("anonymous_id", "NULL")],
        &[("user_id", "u4"), ("device_id", zero)],
        &[("user_id", "u5"), ("device_id", "0"), ("email", " ")],
    ];
    for ids in events {
        let r = w.event(0, ids);
        assert!(r.merged.is_empty());
        assert!(refusals(&r)
            .iter()
            .all(|(_, rule)| matches!(rule, RefusalRule::Blocked { .. })));
    }
    assert_eq!(w.store.live_profiles().count(), 5);
    let none = w.event(0, &[("anonymous_id", "null"), ("user_id", "undefined")]);
    assert_eq!(none.profile, None);
    assert_eq!(refusals(&none).len(), 2);
}

#[test]
fn unknown_types_are_refused_not_dropped() {
    let mut w = World::new();
    let r = w.event(0, &[("user_id", "u1"), ("shoe_size", "42")]);
    assert_eq!(
        refusals(&r),
        [("shoe_size:42".to_owned(), RefusalRule::UnknownType)]
    );
    assert!(r.profile.is_some());
}

#[test]
fn alias_merges_into_the_older_profile() {
    let mut w = World::new();
    let old = w.event(0, &[("anonymous_id", "a1")]).profile.expect("p");
    let young = w
        .event(DAY, &[("user_id", "u1"), ("anonymous_id", "a2")])
        .profile
        .expect("q");
    // alias: previousId a1 → userId u1.
    let r = w.event(2 * DAY, &[("user_id", "u1"), ("anonymous_id", "a1")]);
    assert_eq!(r.profile, Some(old), "the older profile survives");
    assert_eq!(r.merged, [young]);
    assert!(r.decisions.iter().any(|d| d.kind
        == DecisionKind::Merged {
            from: young,
            into: old,
            via: Identifier::new("user_id", "u1"),
            with: Identifier::new("anonymous_id", "a1"),
        }));
    assert_eq!(resolve_profile(&mut w.store, young), Some(old));
    assert_eq!(w.owner("anonymous_id", "a2"), Some(old));
}

#[test]
fn merged_away_ids_resolve_through_chains() {
    let mut w = World::new();
    let p: Vec<ProfileId> = ["a1", "a2", "a3"]
        .iter()
        .filter_map(|a| w.event(0, &[("anonymous_id", a)]).profile)
        .collect();
    w.event(1, &[("anonymous_id", "a2"), ("anonymous_id", "a3")]);
    w.event(2, &[("anonymous_id", "a3"), ("anonymous_id", "a1")]);
    for q in &p {
        assert_eq!(resolve_profile(&mut w.store, *q), Some(p[0]));
    }
    assert_eq!(
        w.store.profiles()[&p[2]].status,
        ProfileStatus::MergedInto(p[1])
    );
}

#[test]
fn limit_window_counts_only_recently_seen_identifiers() {
    let mut cfg = IdentityConfig::default();
    cfg.types[1].limit = Some(1); // email
    cfg.types[1].limit_window_ms = Some(30 * DAY as u64);
    let mut w = World::with(cfg);
    let p = w
        .event(0, &[("user_id", "u1"), ("email", "old@ex.nl")])
        .profile;
    let r = w.event(10 * DAY, &[("user_id", "u1"), ("email", "new@ex.nl")]);
    assert!(matches!(
        &refusals(&r)[..],
        [(
            _,
            RefusalRule::LimitExceeded {
                window_ms: Some(_),
                ..
            }
        )]
    ));
    // Seen again on day 20: still active on day 45.
    w.event(20 * DAY, &[("email", "old@ex.nl")]);
    let r = w.event(45 * DAY, &[("user_id", "u1"), ("email", "new@ex.nl")]);
    assert_eq!(refusals(&r).len(), 1);
    // Day 51: last seen 31 days ago, no longer counts.
    let r = w.event(51 * DAY, &[("user_id", "u1"), ("email", "new@ex.nl")]);
    assert!(refusals(&r).is_empty());
    assert_eq!(w.owner("email", "new@ex.nl"), p);
}

#[test]
fn undoing_a_merge_restores_two_profiles() {
    let mut w = World::new();
    let p = w
        .event(0, &[("user_id", "u1"), ("anonymous_id", "a1")])
        .profile
        .expect("p");
    let q = w
        .event(DAY, &[("email", "x@ex.nl"), ("anonymous_id", "a2")])
        .profile
        .expect("q");
    w.event(2 * DAY, &[("anonymous_id", "a2"), ("anonymous_id", "a1")]); // wrong merge
    w.event(3 * DAY, &[("email", "x@ex.nl"), ("device_id", "d9")]);
    assert_eq!(w.owner("device_id", "d9"), Some(p));

    let plan = plan_undo_merge(&mut w.store, q, SplitRuleId(1), 4 * DAY).expect("plan");
    assert_eq!(plan.rule.side_a.len(), 2);
    let out = w.split(plan);
    assert!(out.redirected.is_empty(), "both ids came back: {out:?}");
    assert_eq!(w.ids_of(p), ["anonymous_id:a1", "user_id:u1"]);
    assert_eq!(
        w.ids_of(q),
        ["anonymous_id:a2", "device_id:d9", "email:x@ex.nl"]
    );
    assert_eq!(w.store.profiles()[&q].status, ProfileStatus::Live);
    let refused = out.resolutions.iter().flat_map(|(_, r)| refusals(r));
    assert!(refused.map(|(_, rule)| rule).any(|rule| rule
        == RefusalRule::SplitRule {
            rule: SplitRuleId(1)
        }));
    // The rule holds for new events too, and a full replay agrees.
    let r = w.event(5 * DAY, &[("anonymous_id", "a1"), ("email", "x@ex.nl")]);
    assert_eq!(r.profile, Some(q));
    assert_eq!(w.replayed(), w.store);
}

#[test]
fn detaching_an_identifier_separates_it() {
    let mut w = World::new();
    let p = w.event(0, &[("anonymous_id", "kiosk")]).profile.expect("p");
    w.event(1, &[("user_id", "u1"), ("anonymous_id", "kiosk")]);
    w.event(2, &[("user_id", "u1"), ("email", "a@ex.nl")]);
    let kiosk = Identifier::new("anonymous_id", "kiosk");
    let plan = plan_detach(&mut w.store, &kiosk, SplitRuleId(7), 3).expect("plan");
    w.split(plan);
    assert_eq!(w.ids_of(p), ["anonymous_id:kiosk"]);
    let u = w.owner("user_id", "u1").expect("u1 owned");
    assert_ne!(u, p);
    assert_eq!(w.ids_of(u), ["email:a@ex.nl", "user_id:u1"]);
    assert_eq!(w.replayed(), w.store);
    assert_eq!(
        plan_detach(&mut w.store, &kiosk, SplitRuleId(8), 4),
        Err(IdentityError::NothingToSplit)
    );
}

#[test]
fn reprocessing_a_seq_does_not_corrupt_the_graph() {
    let mut w = World::new();
    let first = w.event(0, &[("anonymous_id", "a1")]);
    let mut again = w.log[0].clone();
    again.identifiers = vec![("anonymous_id".to_owned(), "b1".to_owned())];
    let second = resolve(&mut w.store, &w.rules, &again);
    assert_ne!(first.profile, second.profile);
    assert_eq!(w.store.live_profiles().count(), 2);
}

#[test]
fn decisions_serialise_for_the_api() {
    let mut w = World::new();
    w.event(0, &[("user_id", "u1"), ("anonymous_id", "s")]);
    let r = w.event(0, &[("user_id", "u2"), ("anonymous_id", "s")]);
    let json = serde_json::to_value(&r.decisions).expect("serialises");
    let refused = json
        .as_array()
        .and_then(|a| a.iter().find(|d| d["decision"] == "refused"))
        .expect("a refusal");
    assert_eq!(refused["message_id"], "m2");
    assert_eq!(refused["rule"]["kind"], "limit_exceeded");
    assert_eq!(refused["identifier"]["type"], "anonymous_id");
    assert!(refused["owner"]
        .as_str()
        .is_some_and(|s| s.starts_with("prof_")));
    let back: Vec<Decision> = serde_json::from_value(json).expect("parses back");
    assert_eq!(back, r.decisions);
}

#[test]
fn profile_ids_are_opaque_and_round_trip() {
    for raw in [0, 1, 2, 12345, u64::MAX, 1 << 56] {
        let p = ProfileId::from_raw(raw);
        let s = p.to_string();
        assert!(s.starts_with("prof_") && s.len() == 18, "{s}");
        assert_eq!(ProfileId::parse(&s), Some(p));
    }
    assert_ne!(
        ProfileId::from_raw(1).to_string()[..10],
        ProfileId::from_raw(2).to_string()[..10]
    );
    assert_eq!(ProfileId::parse("prof_zzzzzzzzzzzzz"), None);
    assert_eq!(ProfileId::parse("src_0000000000000"), None);
}

#[test]
fn resolve_visiting_hands_over_each_usable_identifier_once_normalised() {
    let mut w = World::new();
    let input = IdentityInput {
        seq: 1,
        message_id: "m1".into(),
        timestamp_ms: 0,
        identifiers: [
            ("email", " Ann@Example.com "),
            ("user_id", "u1"),
            ("anonymous_id", "undefined"),
            ("email", "ann@example.com"),
            ("fax", "123"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect(),
    };
    let mut seen = Vec::new();
    let res = resolve_visiting(&mut w.store, &w.rules, &input, |id| seen.push(id.clone()));
    // Exactly what normalising each one gives, blocked and unknown ones left out, the
    // duplicate once; the resolution is the same as without a visitor.
    let mut want: Vec<Identifier> = input
        .identifiers
        .iter()
        .filter_map(|(k, v)| w.rules.normalize(k, v).ok())
        .collect();
    want.sort_by(|a, b| (a.kind.as_str(), &a.value).cmp(&(b.kind.as_str(), &b.value)));
    want.dedup();
    seen.sort_by(|a, b| (a.kind.as_str(), &a.value).cmp(&(b.kind.as_str(), &b.value)));
    assert_eq!(seen, want);
    assert_eq!(seen.len(), 2);
    let mut again = World::new();
    assert_eq!(resolve(&mut again.store, &again.rules, &input), res);
}
