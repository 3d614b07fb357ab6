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
