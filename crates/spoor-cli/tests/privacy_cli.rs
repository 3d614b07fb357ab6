//! `spoor privacy …` against a real `spoor serve`: set and show consent, its history, an
//! access export to a file, the audit log; bad input fails with the cause.

mod common;
use common::{spoor_admin, Server, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn privacy_commands() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let t = Some(ADMIN_TOKEN);
    let (s, v) = server.post(
        "/v1/batch",
        &json!({"batch": [
            {"type": "identify", "userId": "cli1", "traits": {"email": "cli@example.com"}, "messageId": "c1"},
            {"type": "track", "userId": "cli1", "event": "Viewed", "messageId": "c2",
             "context": {"consent": {"categoryPreferences": {"Analytics": true}}}}]}),
        WRITE_KEY,
    );
    assert_eq!(s, 200, "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.admin_get("/v1/profiles/user_id:cli1").0 != 200 {
        assert!(Instant::now() < deadline, "profile not created in 30 s");
        std::thread::sleep(Duration::from_millis(50));
    }

    let out = spoor_admin(
        &server,
        t,
        &[
            "privacy",
            "consent",
            "email:cli@example.com",
            "advertising=denied",
            "email=granted",
        ],
    );
    out.assert_ok();
    assert!(
        out.stdout.contains("advertising") && out.stdout.contains("via api"),
        "{out}"
    );
    let out = spoor_admin(&server, t, &["privacy", "consent", "user_id:cli1"]);
    out.assert_ok();
    let line = |name: &str| {
        out.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("analytics").contains("granted") && line("analytics").contains("via event"),
        "{out}"
    );
    assert!(line("email").contains("granted"), "{out}");
    assert!(line("personalization").contains("(default)"), "{out}");
    let out = spoor_admin(
        &server,
        t,
        &["privacy", "consent", "user_id:cli1", "--history"],
    );
    out.assert_ok();
    assert_eq!(
        out.stdout.lines().count(),
        4,
        "header + 3 statements: {out}"
    );

    let out = spoor_admin(
        &server,
        t,
        &["privacy", "consent", "user_id:cli1", "ads=maybe"],
    );
    out.assert_failed();
    assert!(out.stderr.contains("granted or denied"), "{out}");
    let out = spoor_admin(
        &server,
        t,
        &["privacy", "consent", "user_id:cli1", "telepathy=granted"],
    );
    out.assert_failed();
    assert!(out.stderr.contains("telepathy"), "{out}");

    let file = root.path().join("erin.json");
    let out = spoor_admin(
        &server,
        t,
        &[
            "privacy",
            "export",
            "user_id:cli1",
            "-o",
            file.to_str().unwrap(),
        ],
    );
    out.assert_ok();
    let doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(doc["format"], "spoor-privacy-export/1");
    assert_eq!(
        doc["events"].as_array().unwrap().len(),
        3,
        "2 ingested + the consent event"
    );

    let out = spoor_admin(&server, t, &["privacy", "audit"]);
    out.assert_ok();
    assert!(
        out.stdout.contains("/v1/profiles/{pref}/privacy-export"),
        "{out}"
    );
    assert!(out.stdout.contains("email:sha256:"), "{out}");
    assert!(!out.stdout.contains("cli@example.com"), "{out}");
}
