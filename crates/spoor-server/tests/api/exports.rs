//! Audience file export: a full file and deltas by cursor over memberships the processor
//! keeps, as people enter and leave — rows, hashes, quoting, cursors — and the 4xx answers.
//! (Hash vectors, CSV quoting and the delta fold are unit-tested in `spoor_core::share`.)

use crate::common::{TestServer, ADMIN_TOKEN};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use std::collections::BTreeMap;

// SHA-256 of the normalised identifiers (coreutils `sha256sum`).
const ANN: &str = "71d4f55f72fa128dfb468a1a3901507c804b74316488744d769d7f4b16696476";
const ANN_WORK: &str = "cbc1f27a0707b416f4c83db7101b818f614722228ba4da9687b16b3e5cd41fa4";
const BOB: &str = "5ff860bf1190596c7188ab851db691f0f3169c453936e9e1eba2f9a47f7a0018";
const CAT: &str = "d2d66462631a2d1b0ca18e8b66dc594a58a1cdd569028e1d97f6be4ff0d5fb68";
/// `+31612345678`.
const ANN_PHONE: &str = "fab7be8a931d1088a82f6acf9e468aaf6a3accc07d5112ee5d6fca93281e1583";

async fn define_pros(srv: &TestServer) {
    let def = AudienceDefinition {
        name: "pros".into(),
        description: String::new(),
        rule: parse(r#"trait plan = "pro""#).unwrap(),
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    };
    srv.define(|d| {
        d.audiences.insert("pros".into(), def);
    })
    .await;
}

fn identify(user: &str, msg: &str, traits: Value) -> Value {
    json!({"type": "identify", "userId": user, "traits": traits, "messageId": msg,
           "timestamp": "2026-03-01T10:00:00Z"})
}

struct Export {
    status: u16,
    content_type: String,
    cursor: Option<u64>,
    members: Option<u64>,
    body: String,
}

async fn export(srv: &TestServer, query: &str) -> Export {
    let resp = srv
        .http
        .get(format!("{}/v1/audiences/pros/export{query}", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let h = |k: &str| {
        resp.headers()
            .get(k)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (content_type, cursor, members) = (
        h("content-type").unwrap_or_default(),
        h("spoor-next-cursor").map(|c| c.parse().unwrap()),
        h("spoor-members").map(|c| c.parse().unwrap()),
    );
    Export {
        status: resp.status().as_u16(),
        content_type,
        cursor,
        members,
        body: resp.text().await.unwrap(),
    }
}

/// CSV rows as column → cell maps, keyed by `user_id`.
fn csv_rows(body: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut r = csv::Reader::from_reader(body.as_bytes());
    let head: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    r.records()
        .map(|rec| {
            let row: BTreeMap<String, String> = head
                .iter()
                .cloned()
                .zip(rec.unwrap().iter().map(str::to_string))
                .collect();
            (row["user_id"].clone(), row)
        })
        .collect()
}

fn ndjson(body: &str) -> Vec<Value> {
    body.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_full_and_delta_files_with_hashed_identifiers_and_cursors() {
    let srv = TestServer::start().await;
    define_pros(&srv).await;
    srv.send_processed(vec![
        identify(
            "u0",
            "i0",
            json!({"plan": "pro", "email": " Ann@Example.com ", "phone": "+31 6 1234 5678",
                   "first_name": "Ann", "country": "NL"}),
        ),
        identify(
            "u1",
            "i1",
            json!({"plan": "pro", "email": "bob@example.com", "first_name": "Bob, \"Jr.\""}),
        ),
        identify(
            "u2",
            "i2",
            json!({"plan": "free", "email": "cat@example.com"}),
        ),
    ])
    .await;

    // Full, CSV (the default), hashed (the default), with traits.
    let full = export(&srv, "?traits=first_name,country").await;
    assert_eq!(full.status, 200, "{}", full.body);
    assert_eq!(full.content_type, "text/csv; charset=utf-8");
    assert_eq!(full.members, Some(2));
    let c0 = full.cursor.expect("a next cursor");
    assert!(c0 >= 2, "two entries were recorded: {c0}");
    assert_eq!(
        full.body.lines().next().unwrap(),
        "action,id,user_id,email_sha256,phone_sha256,first_name,country"
    );
    let rows = csv_rows(&full.body);
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["u0", "u1"],
        "{}",
        full.body
    );
    let ann = &rows["u0"];
    assert_eq!(ann["action"], "add");
    assert_eq!(ann["email_sha256"], ANN, "normalised, then hashed");
    assert_eq!(ann["phone_sha256"], ANN_PHONE);
    assert_eq!(
        (ann["first_name"].as_str(), ann["country"].as_str()),
        ("Ann", "NL")
    );
    let (_, p) = srv.admin_get("/v1/profiles/user_id:u0").await;
    assert_eq!(ann["id"], p["id"].as_str().unwrap(), "{p}");
    let bob = &rows["u1"];
    assert_eq!(
        (bob["email_sha256"].as_str(), bob["phone_sha256"].as_str()),
        (BOB, "")
    );
    assert_eq!(bob["first_name"], "Bob, \"Jr.\"", "quoted and read back");
    assert_eq!(bob["country"], "");

    // Nothing changed since: an empty delta (the header only) and the same cursor.
    let same = export(&srv, &format!("?since={c0}")).await;
    assert_eq!(same.status, 200, "{}", same.body);
    assert_eq!((same.cursor, same.members), (Some(c0), Some(0)));
    assert_eq!(same.body, "action,id,user_id,email_sha256,phone_sha256\n");

    // Bob leaves, Cat enters, Dan enters and leaves again, Ann gets a second address.
    srv.send_processed(vec![
        identify("u1", "i1b", json!({"plan": "free"})),
        identify("u2", "i2b", json!({"plan": "pro"})),
        identify(
            "u3",
            "i3",
            json!({"plan": "pro", "email": "dan@example.com"}),
        ),
        identify("u3", "i3b", json!({"plan": "free"})),
    ])
    .await;
    srv.send_processed(vec![
        json!({"type": "identify", "userId": "u0", "traits": {"email": "ann.work@example.com"},
               "messageId": "i0b", "timestamp": "2026-03-02T10:00:00Z"}),
    ])
    .await;
    let delta = export(&srv, &format!("?since={c0}&format=ndjson")).await;
    assert_eq!(delta.status, 200, "{}", delta.body);
    assert_eq!(delta.content_type, "application/x-ndjson");
    let c1 = delta.cursor.unwrap();
    assert!(
        c1 >= c0 + 2,
        "at least Bob's exit and Cat's entry: {c0} → {c1}"
    );
    let lines = ndjson(&delta.body);
    let got: Vec<(&str, &str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["action"].as_str().unwrap(),
                l["user_id"].as_str().unwrap(),
                l["email_sha256"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [("remove", "u1", BOB), ("add", "u2", CAT)],
        "net changes in change order; u3 came and went: {}",
        delta.body
    );
    assert_eq!(delta.members, Some(2));
    assert!(lines.iter().all(|l| l.get("traits").is_none()));

    // From the new cursor: nothing again. From the start: the current members, added.
    let after = export(&srv, &format!("?since={c1}&format=ndjson")).await;
    assert_eq!((after.status, after.body.as_str()), (200, ""));
    assert_eq!(after.cursor, Some(c1));
    let all = export(&srv, "?since=0&format=ndjson").await;
    let mut users: Vec<(String, String)> = ndjson(&all.body)
        .iter()
        .map(|l| (l["action"].to_string(), l["user_id"].to_string()))
        .collect();
    users.sort();
    assert_eq!(
        users,
        [
            ("\"add\"".into(), "\"u0\"".into()),
            ("\"add\"".into(), "\"u2\"".into())
        ]
    );

    // Plain, every address: Ann has two rows, earliest linked first.
    let plain = export(&srv, "?hashed=false&identifiers=all&format=ndjson").await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    let rows: Vec<Value> = ndjson(&plain.body)
        .into_iter()
        .filter(|l| l["user_id"] == "u0")
        .collect();
    assert_eq!(
        rows,
        [
            json!({"action": "add", "id": rows[0]["id"], "user_id": "u0",
                   "email": "ann@example.com", "phone": "+31612345678"}),
            json!({"action": "add", "id": rows[0]["id"], "user_id": "u0",
                   "email": "ann.work@example.com", "phone": null}),
        ]
    );
    let hashed_all = export(&srv, "?identifiers=all").await;
    let ann_rows: Vec<&str> = hashed_all
        .body
        .lines()
        .filter(|l| l.contains(",u0,"))
        .collect();
    assert_eq!(ann_rows.len(), 2, "{}", hashed_all.body);
    assert!(
        ann_rows[1].ends_with(&format!(",{ANN_WORK},")),
        "{ann_rows:?}"
    );
    // The default keeps one row per member.
    let first = export(&srv, "").await;
    assert_eq!(first.body.lines().count(), 1 + 2, "{}", first.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_exports_are_refused_with_reasons() {
    let srv = TestServer::start().await;
    define_pros(&srv).await;
    let ok = export(&srv, "").await;
    assert_eq!((ok.status, ok.cursor), (200, Some(0)));
    for (query, needle) in [
        ("?format=parquet", "not one of csv, ndjson"),
        ("?hashed=maybe", "not true or false"),
        ("?since=abc", "not a change number"),
        ("?since=-1", "not a change number"),
        ("?since=5", "past the newest change (0)"),
        ("?identifiers=some", "not first or all"),
        ("?traits=email_sha256", "fixed column"),
        ("?traits=a,a", "twice"),
    ] {
        let e = export(&srv, query).await;
        assert_eq!(e.status, 400, "{query}: {}", e.body);
        let v: Value = serde_json::from_str(&e.body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(needle),
            "{query}: {v}"
        );
    }
    let e = export(&srv, "?colour=blue").await;
    assert_eq!(e.status, 400, "unknown parameters are refused: {}", e.body);

    let unknown = srv
        .http
        .get(format!("{}/v1/audiences/nope/export", srv.url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let anon = srv
        .http
        .get(format!("{}/v1/audiences/pros/export", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status().as_u16(), 401);
}

/// The files of a scheduled export's directory, by name (cursor and `.part` files included).
fn files_in(dir: &std::path::Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read_to_string(e.path()).unwrap_or_default())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits (30 s at most) until a file of the schedule satisfies `f`; returns its name.
async fn wait_file(dir: &std::path::Path, what: &str, f: impl Fn(&str, &str) -> bool) -> String {
    for _ in 0..300 {
        if let Some((name, _)) = files_in(dir).into_iter().find(|(n, t)| f(n, t)) {
            return name;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{what}: not written in 30 s: {:?}", files_in(dir));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_delta_exports_write_whole_files_with_entries_then_removals() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_path_buf();
    let srv = TestServer::start_with(|c| {
        c.exports.schedules = vec![spoor_server::scheduled_exports::ScheduledExport {
            name: "pros-sync".into(),
            audience: "pros".into(),
            every_secs: 1,
            delta: true,
            format: None,
            hashed: None,
            traits: None,
            purpose: None,
            dir: dir.clone(),
        }];
    })
    .await;
    // Runs before the audience exists fail (logged) and are retried at the next tick.
    define_pros(&srv).await;
    srv.send_processed(vec![identify(
        "u0",
        "i0",
        json!({"plan": "pro", "email": " Ann@Example.com "}),
    )])
    .await;
    let added = wait_file(&dir, "Ann added", |n, t| {
        n.ends_with(".csv") && t.lines().any(|l| l.starts_with("add,") && l.contains(ANN))
    })
    .await;
    assert!(added.starts_with("pros-sync-"), "{added}");

    // Ann leaves: a delta file with her removal (and not her addition again).
    srv.send_processed(vec![identify("u0", "i1", json!({"plan": "free"}))])
        .await;
    let removed = wait_file(&dir, "Ann removed", |n, t| {
        n.ends_with("-delta.csv")
            && t.lines()
                .any(|l| l.starts_with("remove,") && l.contains(ANN))
    })
    .await;
    let text = &files_in(&dir)[&removed];
    assert!(
        !text.contains("add,"),
        "only the change since the last run: {text}"
    );
    assert_eq!(
        text.lines().next().unwrap(),
        "action,id,user_id,email_sha256,phone_sha256"
    );
    let all = files_in(&dir);
    assert!(all.contains_key(".pros-sync.cursor"), "{all:?}");
    assert!(!all.keys().any(|n| n.ends_with(".part")), "{all:?}");
    // Unchanged runs write no file.
    let n = all.len();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(files_in(&dir).len(), n, "{:?}", files_in(&dir));
}

#[test]
fn scheduled_exports_config_errors_name_the_entry() {
    use spoor_server::scheduled_exports::{ExportsConfig, ScheduledExport};
    let one = |name: &str, every: u64, format: Option<&str>| ScheduledExport {
        name: name.into(),
        audience: "a".into(),
        every_secs: every,
        delta: false,
        format: format.map(str::to_owned),
        hashed: None,
        traits: None,
        purpose: None,
        dir: "exports".into(),
    };
    let check = |v: Vec<ScheduledExport>| ExportsConfig { schedules: v }.validate();
    assert!(check(vec![one("ok", 60, Some("ndjson"))]).is_ok());
    assert!(check(vec![one("a b", 60, None)])
        .unwrap_err()
        .contains("\"a b\""));
    assert!(check(vec![one("x", 0, None)])
        .unwrap_err()
        .contains("every_secs"));
    assert!(check(vec![one("x", 1, Some("xml"))])
        .unwrap_err()
        .contains("xml"));
    assert!(check(vec![one("x", 1, None), one("x", 2, None)])
        .unwrap_err()
        .contains("twice"));
}
