//! Hash vectors, identifier choice, CSV quoting, NDJSON shape and the delta fold.

use super::*;
use crate::identity::{Identifier, LinkedIdentifier, ProfileId};
use crate::profile::model::{Profile, TraitValue};
use serde_json::{json, Value};

// SHA-256 of the normalised values (checked with coreutils `sha256sum`); the first two are
// the FIPS 180-2 vectors.
const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
const ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const JAN: &str = "b82dbe5433cfaeb5238ada81eadf911798ab04ba8ed69e004ec907826efa758e";
const NL_PHONE: &str = "fab7be8a931d1088a82f6acf9e468aaf6a3accc07d5112ee5d6fca93281e1583";
const US_PHONE: &str = "cb6880e416769253645cb9c6b8989154bf66a56a77fc14c81fb1019663cbb928";
const TAGGED: &str = "ad851febadc5038ff32f200bd654efc7bf549a2149068e2aa6d09c5ee8c3c1f1";

#[test]
fn sha256_is_lowercase_hex_of_the_bytes() {
    assert_eq!(sha256_hex(""), EMPTY);
    assert_eq!(sha256_hex("abc"), ABC);
    assert_eq!(sha256_hex("jan@example.com"), JAN);
}

#[test]
fn emails_are_normalised_before_hashing() {
    for raw in [
        "jan@example.com",
        "  Jan@Example.COM ",
        "mailto:JAN@example.com",
    ] {
        assert_eq!(email_key(raw, true).as_deref(), Some(JAN), "{raw:?}");
        assert_eq!(email_key(raw, false).as_deref(), Some("jan@example.com"));
    }
    // Tags and dots are kept: they are not universal.
    assert_eq!(email_key("A.B+X@ex.nl", true).as_deref(), Some(TAGGED));
    assert_eq!(email_key("not an address", true), None);
}

#[test]
fn phones_are_hashed_in_e164_and_national_numbers_left_out() {
    for raw in [
        "+31 6 1234 5678",
        "0031-6-12345678",
        "tel:+31612345678;ext=12",
    ] {
        assert_eq!(phone_key(raw, true).as_deref(), Some(NL_PHONE), "{raw:?}");
    }
    assert_eq!(
        phone_key("+1 (415) 555-2671", true).as_deref(),
        Some(US_PHONE)
    );
    assert_eq!(
        phone_key("+1 (415) 555-2671", false).as_deref(),
        Some("+14155552671")
    );
    // Stored without a country code: its hash could match nothing.
    assert_eq!(phone_key("0612345678", true), None);
    assert_eq!(phone_key("call me", true), None);
}

fn linked(kind: &str, value: &str, first_seen_ms: i64) -> LinkedIdentifier {
    LinkedIdentifier {
        identifier: Identifier::new(kind, value),
        first_seen_ms,
        last_seen_ms: first_seen_ms,
        since_seq: 1,
    }
}

fn profile(traits: Value) -> Profile {
    let mut p = Profile::new(ProfileId::from_raw(7));
    for (k, v) in traits.as_object().unwrap() {
        p.traits_mut().insert(
            k.clone(),
            TraitValue {
                value: v.clone(),
                removed: false,
                set_at_ms: 1,
                seq: 1,
                source_id: "s".into(),
                message_id: "m".into(),
            },
        );
    }
    p
}

fn spec(format: Format, hashed: bool, traits: &[&str], ids: Identifiers) -> ExportSpec {
    let traits = traits.iter().map(|t| t.to_string()).collect();
    ExportSpec::new(format, hashed, traits, ids).unwrap()
}

fn write(spec: ExportSpec, members: &[Member]) -> String {
    let mut w = RowWriter::new(spec).unwrap();
    for m in members {
        w.write(m).unwrap();
    }
    String::from_utf8(w.take().unwrap()).unwrap()
}

#[test]
fn csv_has_a_header_quotes_what_needs_it_and_picks_the_earliest_email() {
    let ids = [
        linked("anonymous_id", "a-1", 0),
        linked("email", "zed@example.com", 10),
        linked("email", "jan@example.com", 20),
        linked("phone", "+31612345678", 5),
        linked("user_id", "u1", 0),
    ];
    let p = profile(json!({
        "first_name": "Jan, \"the man\"",
        "country": "NL",
        "bio": "two\nlines",
        "score": 4.5,
    }));
    let m = Member {
        id: ProfileId::from_raw(7),
        action: Action::Add,
        identifiers: &ids,
        profile: Some(&p),
    };
    let s = spec(
        Format::Csv,
        false,
        &["first_name", "bio", "score", "missing"],
        Identifiers::First,
    );
    let out = write(s, &[m]);
    assert_eq!(
        out,
        "action,id,user_id,email,phone,first_name,bio,score,missing\n\
         add,7,u1,zed@example.com,+31612345678,\"Jan, \"\"the man\"\"\",\"two\nlines\",4.5,\n"
            .replace(",7,", &format!(",{},", ProfileId::from_raw(7))),
    );
    // It reads back as the same cells.
    let mut r = csv::Reader::from_reader(out.as_bytes());
    let rec = r.records().next().unwrap().unwrap();
    assert_eq!(&rec[5], "Jan, \"the man\"");
    assert_eq!(&rec[6], "two\nlines");

    // All: a row per address, the shorter list padded; hashed by default.
    let s = spec(Format::Csv, true, &[], Identifiers::All);
    let out = write(s, &[m]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "action,id,user_id,email_sha256,phone_sha256");
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].ends_with(&format!(",u1,{},{NL_PHONE}", sha256_hex("zed@example.com"))));
    assert!(lines[2].ends_with(&format!(",u1,{JAN},")), "{out}");
}

#[test]
fn ndjson_has_the_same_fields_with_traits_nested_and_nulls_for_missing() {
    let ids = [linked("email", "Jan@Example.com", 0)];
    let m = Member {
        id: ProfileId::from_raw(9),
        action: Action::Remove,
        identifiers: &ids,
        profile: None,
    };
    let out = write(
        spec(Format::Ndjson, true, &["plan", "age"], Identifiers::First),
        &[m],
    );
    assert!(
        out.starts_with(r#"{"action":"remove","id":"#),
        "fields in column order: {out}"
    );
    assert!(
        out.ends_with("\"phone_sha256\":null,\"traits\":{\"plan\":null,\"age\":null}}\n"),
        "traits in the order asked for: {out}"
    );
    let v: Value = serde_json::from_str(out.trim_end()).unwrap();
    assert_eq!(
        v,
        json!({"action": "remove", "id": ProfileId::from_raw(9).to_string(), "user_id": null,
               "email_sha256": JAN, "phone_sha256": null, "traits": {"plan": null, "age": null}})
    );
    // A profile without any identifier still gets one row (its id).
    let bare = Member {
        identifiers: &[],
        ..m
    };
    let out = write(spec(Format::Ndjson, true, &[], Identifiers::All), &[bare]);
    assert_eq!(out.lines().count(), 1);
    assert!(!out.contains("traits"));
}

#[test]
fn specs_refuse_bad_trait_lists() {
    let bad = |traits: &[&str], format| {
        let t = traits.iter().map(|t| t.to_string()).collect();
        ExportSpec::new(format, true, t, Identifiers::First).unwrap_err()
    };
    assert!(bad(&["a", "a"], Format::Csv).contains("twice"));
    assert!(bad(&[""], Format::Ndjson).contains("empty"));
    assert!(bad(&["email_sha256"], Format::Csv).contains("fixed column"));
    // NDJSON nests traits, so any name goes there.
    assert!(ExportSpec::new(Format::Ndjson, true, vec!["id".into()], Identifiers::First).is_ok());
    assert_eq!(Format::parse("parquet"), None);
    assert_eq!(Format::parse("ndjson"), Some(Format::Ndjson));
}

#[test]
fn the_delta_keeps_only_net_changes_in_the_order_of_the_last_change() {
    let p = ProfileId::from_raw;
    let mut f = DeltaFold::new();
    f.push(1, p(1), true); // in
    f.push(2, p(2), true); // in, then out again: nothing
    f.push(3, p(3), false); // out
    f.push(4, p(2), false);
    f.push(5, p(4), false); // out, then back: nothing
    f.push(6, p(5), true); // in, out, in: in
    f.push(7, p(4), true);
    f.push(8, p(5), false);
    f.push(9, p(5), true);
    assert_eq!(
        f.finish(),
        vec![
            (p(1), Action::Add),
            (p(3), Action::Remove),
            (p(5), Action::Add)
        ]
    );
}
