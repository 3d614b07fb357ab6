//! `spoor audiences …` and `spoor traits …` against a real `spoor serve` child process.

mod common;

use common::{run, spoor_admin, spoor_cmd, Server, ADMIN_TOKEN};
use std::time::Duration;

#[test]
fn audiences_create_list_validate_and_traits() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let admin = Some(ADMIN_TOKEN);

    // validate: canonical text and JSON.
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "validate",
            "--rule",
            "performed   \"Order Completed\"   within 7d",
        ],
    );
    out.assert_ok();
    assert!(
        out.stdout
            .contains("text: performed \"Order Completed\" within 7d"),
        "{out}"
    );
    let json_part = out.stdout.split_once("json:\n").unwrap().1;
    let v: serde_json::Value = serde_json::from_str(json_part).unwrap();
    assert_eq!(v["type"], "performed", "{out}");
    assert_eq!(v["within"], "7d", "{out}");

    // validate: an error, with a caret under the position.
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "validate",
            "--rule",
            "trait plan = \"pro\"\n  and trait x in [1 2]",
        ],
    );
    out.assert_failed();
    assert!(
        out.stderr.contains("line 2, column 21"),
        "the position: {out}"
    );
    assert!(
        out.stderr
            .contains(" 2 |   and trait x in [1 2]\n   |                     ^ found `2`"),
        "a caret under `2`: {out}"
    );

    // traits create from a file, then an audience that uses it.
    let def = root.path().join("ltv.json");
    std::fs::write(
        &def,
        r#"{"name": "ltv", "aggregation": "sum", "property": "revenue",
            "event": {"kind": "track", "name": "Order Completed"}}"#,
    )
    .unwrap();
    let out = spoor_admin(
        &server,
        admin,
        &["traits", "create", "--json", def.to_str().unwrap()],
    );
    out.assert_ok();
    assert!(
        out.stdout
            .contains("created computed trait ltv (revision 1)"),
        "{out}"
    );
    let out = spoor_admin(&server, admin, &["traits", "list"]);
    out.assert_ok();
    assert!(out.stdout.starts_with("NAME"), "{out}");
    assert!(
        out.stdout.contains("ltv") && out.stdout.contains("sum"),
        "{out}"
    );

    // create (text, and from a file), list, show.
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "create",
            "big-spenders",
            "--rule",
            "computed ltv > 1000",
            "--description",
            "spent over 1000",
        ],
    );
    out.assert_ok();
    assert!(
        out.stdout
            .contains("created audience big-spenders (revision 1)"),
        "{out}"
    );
    let rule_file = root.path().join("rule.txt");
    std::fs::write(
        &rule_file,
        "# buyers who are not big spenders\nperformed \"Order Completed\" within 30d\n  and not in audience \"big-spenders\"\n",
    )
    .unwrap();
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "create",
            "small",
            "--rule-file",
            rule_file.to_str().unwrap(),
        ],
    );
    out.assert_ok();
    assert!(
        out.stdout.contains(
            "rule: performed \"Order Completed\" within 30d and not in audience \"big-spenders\""
        ),
        "{out}"
    );
    let out = spoor_admin(&server, admin, &["audiences", "list"]);
    out.assert_ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for col in ["NAME", "REVISION", "BACKFILL", "UPDATED", "RULE"] {
        assert!(lines[0].contains(col), "{out}");
    }
    assert!(
        lines[1].starts_with("big-spenders") && lines[1].contains("computed ltv > 1000"),
        "{out}"
    );
    assert!(lines[2].starts_with("small"), "{out}");
    let out = spoor_admin(&server, admin, &["audiences", "show", "big-spenders"]);
    out.assert_ok();
    assert!(out.stdout.contains("description: spent over 1000"), "{out}");
    assert!(out.stdout.contains("\"type\": \"computed\""), "{out}");

    // A refused create shows the caret too; a refused delete names the user.
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "create",
            "x",
            "--rule",
            "in audience \"nobody\"",
        ],
    );
    out.assert_failed();
    assert!(
        out.stderr.contains(
            " 1 | in audience \"nobody\"\n   |             ^ found unknown audience \"nobody\""
        ),
        "{out}"
    );
    let out = spoor_admin(&server, admin, &["audiences", "delete", "big-spenders"]);
    out.assert_failed();
    assert!(out.stderr.contains("\"small\""), "{out}");
    let out = spoor_admin(&server, admin, &["traits", "delete", "ltv"]);
    out.assert_failed();
    assert!(out.stderr.contains("409"), "{out}");

    // update, preview, delete.
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "update",
            "small",
            "--rule",
            "performed \"Order Completed\"",
        ],
    );
    out.assert_ok();
    assert!(out.stdout.contains("(revision 2)"), "{out}");
    let out = spoor_admin(
        &server,
        admin,
        &["audiences", "preview", "--rule", "trait plan exists"],
    );
    out.assert_ok();
    assert!(
        out.stdout
            .contains("matched 0 of 0 profiles scanned (0 in total)"),
        "{out}"
    );
    assert!(out.stdout.contains("size: 0 (exact)"), "{out}");
    for args in [
        &["audiences", "delete", "small"][..],
        &["audiences", "delete", "big-spenders"],
        &["traits", "delete", "ltv"],
    ] {
        spoor_admin(&server, admin, args).assert_ok();
    }
    let out = spoor_admin(&server, admin, &["audiences", "list"]);
    assert_eq!(out.stdout.lines().count(), 1, "only the header: {out}");

    // No token: a clear error.
    let out = spoor_admin(&server, None, &["audiences", "list"]);
    out.assert_failed();
    assert!(out.stderr.contains("no admin token"), "{out}");
}

/// members / size / overlap: argument parsing only (their endpoints live elsewhere).
#[test]
fn membership_commands_parse_their_arguments() {
    let parse = |args: &[&str]| {
        let mut cmd = spoor_cmd();
        cmd.args(args)
            .env("SPOOR_URL", "http://127.0.0.1:9")
            .env_remove("SPOOR_TOKEN");
        run(cmd, Duration::from_secs(20))
    };
    // Well-formed: they get as far as needing a token.
    for args in [
        &["audiences", "members", "a", "--limit", "5"][..],
        &["audiences", "members", "a", "--export"],
        &["audiences", "size", "a"],
        &["audiences", "overlap", "a", "b", "--json"],
    ] {
        let out = parse(args);
        out.assert_failed();
        assert!(out.stderr.contains("no admin token"), "{args:?}: {out}");
    }
    // Malformed: clap refuses them (exit 2) before any request.
    for args in [
        &["audiences", "members", "a", "--limit", "five"][..],
        &["audiences", "overlap", "a"],
        &["audiences", "size"],
        &["audiences", "create", "a"],
        &["audiences", "validate", "--rule", "x", "--rule-file", "f"],
        &["traits", "create"],
    ] {
        let out = parse(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out}");
    }
}
