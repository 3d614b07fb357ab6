//! Round trips of the binary records: `decode(encode(x)) == x` for arbitrary profiles and
//! activations, with the cases JSON handled by construction — nested trait values,
//! tombstones, integers at the edges of u64/i64, floats, unicode keys — and the ones it
//! did not (non-finite floats in states). Corrupt input must fail, never panic.

use super::*;
use crate::audience::{Activation, AudienceState, SlotState};
use crate::computed::{ComputedState, Sum};
use crate::consent::{Consent, ConsentRecord, ConsentValue, ConsentVia};
use crate::event::Utm;
use crate::identity::ProfileId;
use crate::profile::{ChannelStat, DeviceStat, Profile, SourceStat, TraitValue};
use proptest::collection::{btree_map, vec};
use proptest::option::of;
use proptest::prelude::*;
use std::sync::Arc;

/// Keys and strings: ASCII, empty, unicode (multi-byte, combining, emoji), control chars.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z]{0,6}",
        Just(String::new()),
        "\\PC{0,8}",
        Just("clé ü 日本語 🎉\u{1f}\u{0}".to_owned()),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::from(u64::MAX)),
        Just(Value::from(i64::MIN)),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        Just(Value::from(1.0)),
        Just(Value::from(-0.0)),
        Just(Value::from(1e300)),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            btree_map(text(), inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn trait_value() -> impl Strategy<Value = TraitValue> {
    (
        value(),
        any::<bool>(),
        any::<i64>(),
        any::<u64>(),
        prop::sample::select(vec!["src_a", "src_b", ""]),
        prop::sample::select(vec!["m-1", "m-2", "ü-3"]),
    )
        .prop_map(|(value, removed, set_at_ms, seq, s, m)| TraitValue {
            // A tombstone holds null, as `apply_traits` writes it.
            value: if removed { Value::Null } else { value },
            removed,
            set_at_ms,
            seq,
            source_id: s.into(),
            message_id: m.into(),
        })
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    of(text())
}

fn channel() -> impl Strategy<Value = ChannelStat> {
    (
        (opt_text(), opt_text(), opt_text(), opt_text(), opt_text()),
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(
            |((source, medium, campaign, content, term), count, first_ms, last_ms, first_seq)| {
                ChannelStat {
                    utm: Utm {
                        source,
                        medium,
                        campaign,
                        content,
                        term,
                    },
                    count,
                    first_ms,
                    last_ms,
                    first_seq,
                }
            },
        )
}

fn device() -> impl Strategy<Value = DeviceStat> {
    (
        text(),
        (opt_text(), opt_text(), opt_text(), opt_text()),
        any::<u64>(),
        any::<i64>(),
        any::<i64>(),
        any::<u64>(),
    )
        .prop_map(
            |(device_type, (os, browser, os_version, browser_version), count, f, l, s)| {
                DeviceStat {
                    device_type,
                    os,
                    browser,
                    os_version,
                    browser_version,
                    count,
                    first_ms: f,
                    last_ms: l,
                    last_seq: s,
                }
            },
        )
}

fn consent_record() -> impl Strategy<Value = ConsentRecord> {
    (
        prop::sample::select(vec!["analytics", "email", "ads"]),
        any::<bool>(),
        any::<i64>(),
        any::<u64>(),
        0u8..3,
        prop::sample::select(vec!["src_a", "src_spoor_consent_api"]),
        text(),
    )
        .prop_map(|(p, granted, at_ms, seq, via, s, m)| ConsentRecord {
            purpose: p.into(),
            value: if granted {
                ConsentValue::Granted
            } else {
                ConsentValue::Denied
            },
            at_ms,
            seq,
            via: [ConsentVia::Event, ConsentVia::Trait, ConsentVia::Api][via as usize],
            source_id: s.into(),
            message_id: m,
        })
}

fn key() -> impl Strategy<Value = (i64, u64)> {
    (any::<i64>(), any::<u64>())
}

fn slot() -> impl Strategy<Value = SlotState> {
    prop_oneof![
        any::<u64>().prop_map(|n| SlotState::Count { n }),
        vec(any::<i64>(), 0..5).prop_map(|ts| SlotState::Latest { ts: ts.into() }),
        of(any::<i64>()).prop_map(|ts| SlotState::Extreme { ts }),
        (any::<bool>(), vec(key(), 0..4), vec(key(), 0..4)).prop_map(|(done, firsts, thens)| {
            SlotState::Then {
                done,
                firsts: firsts.into(),
                thens: thens.into(),
            }
        }),
        (of(key()), vec(key(), 0..4)).prop_map(|(latest, thens)| SlotState::NotFollowed {
            latest,
            thens: thens.into(),
        }),
    ]
}

/// Any f64, NaN and infinities included (states are not JSON values).
fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(-0.0)
    ]
}

fn computed() -> impl Strategy<Value = ComputedState> {
    prop_oneof![
        any::<u64>().prop_map(|n| ComputedState::Count { n }),
        (any::<i64>(), float(), any::<u64>()).prop_map(|(int, frac, n)| ComputedState::Sum {
            sum: Sum { int, frac, n }
        }),
        of(float()).prop_map(|v| ComputedState::Extreme { v }),
        (of(key()), value()).prop_map(|(at, v)| ComputedState::Pick { at, v }),
        btree_map(text(), any::<u64>(), 0..4)
            .prop_map(|counts| ComputedState::Frequency { counts }),
        btree_map(text(), key(), 0..4).prop_map(|latest| ComputedState::Recent { latest }),
        vec((any::<i64>(), float()), 0..4).prop_map(|points| ComputedState::Staircase { points }),
        vec((key(), value()), 0..4).prop_map(|entries| ComputedState::Window { entries }),
    ]
}

/// Names drawn from a small pool, so the maps share some names and not others.
fn name() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a0", "a1", "big spenders", "é", "t0", ""]).prop_map(String::from)
}

fn activation() -> impl Strategy<Value = Activation> {
    (
        btree_map(name(), computed(), 0..4),
        btree_map(
            name(),
            vec(slot(), 0..3).prop_map(|slots| AudienceState {
                slots: slots.into(),
            }),
            0..4,
        ),
        btree_map(name(), any::<i64>(), 0..4),
        btree_map(name(), value(), 0..4),
        of(any::<i64>()),
        btree_map(name(), any::<i64>(), 0..4),
        of(any::<i64>()),
        any::<u64>(),
    )
        .prop_map(
            |(computed, audiences, members, values, next_timer_ms, next, computed_next, rev)| {
                let shared = |k: String| Arc::<str>::from(k);
                Activation {
                    computed: computed
                        .into_iter()
                        .map(|(k, v)| (shared(k), Arc::new(v)))
                        .collect(),
                    audiences: audiences
                        .into_iter()
                        .map(|(k, v)| (shared(k), Arc::new(v)))
                        .collect(),
                    members: members.into_iter().map(|(k, v)| (shared(k), v)).collect(),
                    values: Arc::new(values.into_iter().collect()),
                    next_timer_ms,
                    next: next.into_iter().map(|(k, v)| (shared(k), v)).collect(),
                    computed_next,
                    revision: rev,
                }
            },
        )
}

fn profile() -> impl Strategy<Value = Profile> {
    (
        (any::<u64>(), btree_map(text(), trait_value(), 0..6)),
        (any::<i64>(), any::<i64>(), any::<u64>()),
        btree_map(text(), any::<u64>(), 0..3),
        btree_map(
            text(),
            (any::<u64>(), any::<i64>(), any::<i64>()).prop_map(|(count, first_ms, last_ms)| {
                SourceStat {
                    count,
                    first_ms,
                    last_ms,
                }
            }),
            0..3,
        ),
        btree_map(text(), channel(), 0..3),
        btree_map(text(), device(), 0..3),
        btree_map(text(), any::<i64>(), 0..3),
        (
            btree_map(
                prop::sample::select(vec!["analytics", "email"]).prop_map(String::from),
                consent_record(),
                0..2,
            ),
            vec(consent_record(), 0..4),
        ),
        activation(),
    )
        .prop_map(
            |(
                (id, traits),
                (first_seen_ms, last_seen_ms, event_count),
                event_counts,
                sources,
                channels,
                devices,
                groups,
                (current, history),
                activation,
            )| Profile {
                id: ProfileId::from_raw(id),
                traits: traits.into(),
                first_seen_ms,
                last_seen_ms,
                event_count,
                event_counts: event_counts.into(),
                sources: sources.into(),
                channels: channels.into(),
                devices: devices.into(),
                groups: groups.into(),
                consent: Consent { current, history }.into(),
                activation: activation.into(),
            },
        )
}

/// `b` cut short at `cut` (never whole), and `b` with the byte at `flip.0` changed.
fn damaged(
    b: &[u8],
    cut: prop::sample::Index,
    flip: (prop::sample::Index, u8),
) -> (&[u8], Vec<u8>) {
    let mut c = b.to_vec();
    let i = flip.0.index(c.len());
    c[i] ^= flip.1.max(1);
    (&b[..cut.index(b.len())], c)
}

/// Equality that treats NaN as equal to itself (states may hold one; `PartialEq` says
/// NaN != NaN): compares the debug forms, which print every field.
fn same<T: std::fmt::Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn profile_round_trips(p in profile()) {
        let b = encode_profile(&p);
        let back = decode_profile(&b).expect("decodes");
        prop_assert!(same(&back, &p), "{back:?}\n!=\n{p:?}");
        // Re-encoding gives the same bytes: the encoding is canonical.
        prop_assert_eq!(encode_profile(&back), b);
    }

    #[test]
    fn activation_round_trips(a in activation()) {
        let back = decode_activation(&encode_activation(&a)).expect("decodes");
        prop_assert!(same(&back, &a), "{back:?}\n!=\n{a:?}");
    }

    #[test]
    fn values_round_trip_exactly(v in value()) {
        let mut out = Vec::new();
        Writer::new(&mut out).value(&v);
        let mut r = Reader::new(&out);
        let back = r.value().expect("decodes");
        r.finish().expect("whole record");
        // Equal as values, and as JSON text (integers stay integers, floats floats).
        prop_assert_eq!(&back, &v);
        prop_assert_eq!(back.to_string(), v.to_string());
    }

    #[test]
    fn truncated_or_corrupt_records_fail_without_panicking(
        p in profile(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let b = encode_profile(&p);
        let (cut, flipped) = damaged(&b, cut, flip);
        prop_assert!(decode_profile(cut).is_err());
        let _ = decode_profile(&flipped); // may decode to another profile; must not panic
    }

    #[test]
    fn arbitrary_bytes_never_panic(b in vec(any::<u8>(), 0..256), v3 in any::<bool>()) {
        let mut b = b;
        if let Some(first) = b.first_mut() {
            *first = if v3 { PROFILE_V3 } else { PROFILE_V2 };
        }
        let _ = decode_profile(&b);
        let _ = decode_profile_lazy(&b);
    }

    /// A profile read lazily is written back byte for byte without decoding its
    /// activation, and decodes, when used, to the profile written.
    #[test]
    fn lazy_profiles_write_back_unchanged_and_decode_when_used(p in profile()) {
        let b = encode_profile(&p);
        let lazy = decode_profile_lazy(&b).expect("decodes");
        prop_assert!(!lazy.activation.is_decoded());
        prop_assert_eq!(encode_profile(&lazy), b.clone());
        prop_assert!(!lazy.activation.is_decoded());
        prop_assert!(same(&lazy, &p), "{lazy:?}\n!=\n{p:?}");
        prop_assert!(lazy.activation.is_decoded());
        // Changed, it is encoded from the decoded form.
        let mut changed = lazy.clone();
        changed.activation_mut().revision ^= 1;
        prop_assert!(changed.activation.encoded_bytes().is_none());
        let back = decode_profile(&encode_profile(&changed)).expect("decodes");
        prop_assert_eq!(back.activation.revision, p.activation.revision ^ 1);
    }

    /// Differential: splicing audience entries into the encoded activation gives the bytes
    /// of encoding the decoded activation changed the same way.
    #[test]
    fn splicing_entries_equals_changing_the_decoded_activation(
        a in activation(),
        with in activation(),
        names in vec(name(), 0..4),
    ) {
        let b = encode_activation(&a);
        let view = ActivationView::parse(&b).expect("parses");
        prop_assert_eq!(view.next_timer_ms, a.next_timer_ms);
        for e in &view.audiences {
            prop_assert_eq!(e.member, a.members.get(e.name).copied());
            prop_assert_eq!(e.next, a.next.get(e.name).copied());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (spliced, timer) = view.splice(&refs, &with);
        let want = replaced(&a, &names, &with);
        prop_assert_eq!(timer, want.next_timer_ms);
        prop_assert_eq!(&spliced, &encode_activation(&want));
        prop_assert!(same(&decode_activation(&spliced).expect("decodes"), &want));
    }

    #[test]
    fn corrupt_activations_fail_to_parse_without_panicking(
        a in activation(),
        cut in any::<prop::sample::Index>(),
        flip in any::<(prop::sample::Index, u8)>(),
    ) {
        let b = encode_activation(&a);
        let (cut, flipped) = damaged(&b, cut, flip);
        prop_assert!(ActivationView::parse(cut).is_err());
        let _ = ActivationView::parse(&flipped);
        let _ = decode_activation(&flipped);
    }
}

#[test]
fn unknown_formats_are_named() {
    assert_eq!(decode_profile(&[9]), Err(DecodeError::Format(9)));
    assert_eq!(decode_profile(&[]), Err(DecodeError::Truncated));
}

#[test]
fn repeated_names_are_written_once() {
    let mut a = Activation::default();
    let name = "a_rather_long_audience_name_for_a_marketing_team";
    a.audiences
        .insert(name.into(), Arc::new(AudienceState::default()));
    a.members.insert(name.into(), 1);
    a.next.insert(name.into(), 2);
    let b = encode_activation(&a);
    let text = String::from_utf8_lossy(&b);
    assert_eq!(text.matches(name).count(), 1);
}

/// A profile with a string that its activation repeats from the rest of the record (the
/// source id, counted by a computed trait), states of both kinds, and timers.
fn golden_profile() -> Profile {
    let mut p = Profile::new(ProfileId::from_raw(42));
    let t = TraitValue {
        value: Value::from("Ada"),
        removed: false,
        set_at_ms: 1_700_000_000_000,
        seq: 7,
        source_id: "src_web".into(),
        message_id: "m-1".into(),
    };
    p.traits = Arc::new([("name".to_owned(), t)].into_iter().collect());
    p.first_seen_ms = 1_700_000_000_000;
    p.last_seen_ms = 1_700_000_100_000;
    p.event_count = 3;
    let mut a = Activation::default();
    a.computed.insert(
        "sources".into(),
        Arc::new(ComputedState::Frequency {
            counts: [("src_web".to_owned(), 3)].into_iter().collect(),
        }),
    );
    a.computed
        .insert("n".into(), Arc::new(ComputedState::Count { n: 3 }));
    Arc::make_mut(&mut a.values).insert("n".into(), Value::from(3));
    a.audiences.insert(
        "buyers".into(),
        Arc::new(AudienceState {
            slots: smallvec::smallvec![
                SlotState::Count { n: 2 },
                SlotState::Latest {
                    ts: smallvec::smallvec![5, 9],
                },
            ],
        }),
    );
    a.members.insert("buyers".into(), 1_700_000_050_000);
    a.next.insert("buyers".into(), 1_700_600_000_000);
    a.next.insert("viewers".into(), 1_700_500_000_000);
    a.next_timer_ms = Some(1_700_500_000_000);
    a.computed_next = Some(1_700_900_000_000);
    a.revision = 4;
    p.activation = a.into();
    p
}

/// [`golden_profile`] as Spoor wrote it before `PROFILE_V3` (states of format 2 hold such
/// records until each profile is rewritten).
const GOLDEN_V2: &str = "022a01046e616d6506034164610080a0abfef9620700077372635f77656200036d2d3180a0abfef962c0bab7fef9620300000000000000040180b496dbfd620180c4d2d8806303016e000303030107736f75726365730401010300070662757965727302000201020a12a0adb1fef96280b8c5bafe6204077669657765727380b496dbfd6200";

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn format_2_records_are_still_read_and_rewritten_in_format_3() {
    let v2 = unhex(GOLDEN_V2);
    let p = golden_profile();
    for read in [decode_profile, decode_profile_lazy] {
        let back = read(&v2).expect("a format-2 record decodes");
        assert!(
            back.activation.is_decoded(),
            "format 2 cannot be kept encoded"
        );
        assert_eq!(back, p);
        let v3 = encode_profile(&back);
        assert_eq!(v3[0], PROFILE_V3);
        assert_eq!(decode_profile(&v3).unwrap(), p);
    }
}

/// What [`ActivationView::splice`] must produce: `a` with the entries of `names` replaced
/// by `with`'s, and the timer recomputed.
fn replaced(a: &Activation, names: &[String], with: &Activation) -> Activation {
    let mut e = a.clone();
    for n in names {
        let k: Arc<str> = n.as_str().into();
        match with.audiences.get(n) {
            Some(s) => e.audiences.insert(k.clone(), s.clone()),
            None => e.audiences.remove(n),
        };
        match with.members.get(n) {
            Some(t) => e.members.insert(k.clone(), *t),
            None => e.members.remove(n),
        };
        match with.next.get(n) {
            Some(t) => e.next.insert(k, *t),
            None => e.next.remove(n),
        };
    }
    e.next_timer_ms = e.next.values().copied().chain(e.computed_next).min();
    e
}
