//! `spoor audiences …` and `spoor traits …` against a real `spoor serve` child process.

mod common;

use common::{run, spoor_admin, spoor_cmd, Server, ADMIN_TOKEN, WRITE_KEY};
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

/// members / size / overlap / export: argument parsing only (their endpoints live elsewhere).
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
        &[
            "audiences",
            "export",
            "a",
            "--since",
            "3",
            "--traits",
            "x,y",
            "--plain",
        ],
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
        &["audiences", "export", "a", "--since", "last"],
        &["audiences", "export"],
    ] {
        let out = parse(args);
        assert_eq!(out.code, Some(2), "{args:?}: {out}");
    }
}

/// `spoor audiences export`: a full CSV file with hashed e-mails, then a delta as NDJSON from
/// the printed cursor after someone leaves.
#[test]
fn audiences_export_writes_files_and_prints_the_next_cursor() {
    const ANN: &str = "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476";
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let admin = Some(ADMIN_TOKEN);
    spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "create",
            "pros",
            "--rule",
            "trait plan = \"pro\"",
        ],
    )
    .assert_ok();
    let ingest = |events: serde_json::Value| {
        let (s, v) = server.post(
            "/v1/batch",
            &serde_json::json!({"batch": events}),
            WRITE_KEY,
        );
        assert_eq!(s, 200, "{v}");
        let (_, st) = server.admin_get("/v1/admin/processor");
        let last = st["ingested_seq"].as_u64().unwrap();
        let st = server.wait_processed(last);
        assert_eq!(st["processed_seq"].as_u64(), Some(last), "{st}");
    };
    ingest(serde_json::json!([
        {"type": "identify", "userId": "u0", "messageId": "a",
         "traits": {"plan": "pro", "email": "Ann@Example.com", "first_name": "Ann"}},
        {"type": "identify", "userId": "u1", "messageId": "b",
         "traits": {"plan": "pro", "email": "bob@example.com"}},
    ]));

    let file = root.path().join("pros.csv");
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "export",
            "pros",
            "--traits",
            "first_name",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    out.assert_ok();
    let csv = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0], "action,id,user_id,email_sha256,phone_sha256,first_name",
        "{csv}"
    );
    assert_eq!(lines.len(), 3, "{csv}");
    assert!(
        lines
            .iter()
            .any(|l| l.ends_with(&format!(",u0,{ANN},,Ann"))),
        "{csv}"
    );
    assert!(out.stderr.contains("exported 2 profiles"), "{out}");
    let cursor: String = out
        .stderr
        .split("next cursor: ")
        .nth(1)
        .expect("a cursor on stderr")
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!root.path().join("pros.csv.part").exists());

    // Bob leaves; the delta from the cursor, plain, on standard output.
    ingest(serde_json::json!([
        {"type": "identify", "userId": "u1", "messageId": "c", "traits": {"plan": "free"}},
    ]));
    let out = spoor_admin(
        &server,
        admin,
        &[
            "audiences",
            "export",
            "pros",
            "--since",
            &cursor,
            "--format",
            "ndjson",
            "--plain",
        ],
    );
    out.assert_ok();
    let rows: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["action"], "remove", "{out}");
    assert_eq!(rows[0]["email"], "bob@example.com", "{out}");
    assert!(out.stderr.contains("next cursor: "), "{out}");

    // Refusals carry the server's reason.
    let out = spoor_admin(&server, admin, &["audiences", "export", "nope"]);
    out.assert_failed();
    assert!(out.stderr.contains("404"), "{out}");
    let out = spoor_admin(
        &server,
        admin,
        &["audiences", "export", "pros", "--format", "parquet"],
    );
    out.assert_failed();
    assert!(out.stderr.contains("not one of csv, ndjson"), "{out}");
}
