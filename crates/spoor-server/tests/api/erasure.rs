//! Right to erasure, proven on the raw files: a person with a distinctive e-mail, name and
//! phone across many events (merged from an anonymous visitor), in an audience, delivered
//! to a webhook and dead-lettered by a second one, with a rejected event of theirs — is
//! erased; after the databases are rewritten not one file under the data directory holds
//! any of their values (in any case), the others are intact and the state equals a rebuild
//! of the remaining log. Suppression keeps them from coming back.

use crate::common::{call, TestServer};
use crate::receiver::{Receiver, Reply};
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition};
use std::path::Path;
use std::time::Duration;

const EMAIL: &str = "Zelda.Quux-7391@Example.ORG";
const NAME: &str = "Zelda Quuxington";
const PHONE: &str = "+31 6 1234 9876";
const USER: &str = "u-zelda-7391";
const ANON: &str = "anon-zelda-7391";

/// Every form of the person's values that must not survive (compared lowercase).
const NEEDLES: &[&str] = &[
    EMAIL,
    NAME,
    PHONE,
    "+31612349876",
    "31612349876",
    "1234 9876",
    USER,
    ANON,
    "Quuxington",
];

pub fn tweak(c: &mut spoor_server::config::Config) {
    c.processor.checkpoint_ms = 100;
    c.destinations.poll_ms = 10;
}

fn person_events() -> Vec<Value> {
    let mut v = vec![
        json!({"type": "page", "anonymousId": ANON, "name": "Home", "messageId": "z-p0"}),
        json!({"type": "identify", "anonymousId": ANON, "userId": USER, "messageId": "z-id",
               "traits": {"email": EMAIL, "name": NAME, "phone": PHONE}}),
    ];
    for n in 0..30 {
        v.push(json!({"type": "track", "userId": USER, "event": "Bought", "messageId": format!("z-b{n}"),
                      "properties": {"n": n, "buyer": NAME}, "context": {"traits": {"email": EMAIL}}}));
    }
    v
}

fn other_events(who: &str) -> Vec<Value> {
    let mut v = vec![
        json!({"type": "identify", "userId": who, "messageId": format!("{who}-id"),
                            "traits": {"email": format!("{who}@example.com"), "name": format!("Person {who}")}}),
    ];
    for n in 0..5 {
        v.push(json!({"type": "track", "userId": who, "event": "Bought", "messageId": format!("{who}-b{n}"),
                      "properties": {"n": n}}));
    }
    v
}

async fn setup() -> (TestServer, Receiver) {
    let srv = TestServer::start_with(tweak).await;
    let rx = Receiver::start().await;
    rx.always("/broken", Some(Reply::Status(400)));
    for (name, path) in [("hook", "/hook"), ("broken", "/broken")] {
        let (s, v) = call(
            &srv,
            "POST",
            "/v1/destinations",
            Some(json!({"name": name, "type": "webhook",
                        "subscriptions": {"events": [{"name": "Bought"}], "audiences": [{"audience": "buyers"}]},
                        "webhook": {"url": format!("{}{path}", rx.url)},
                        "retry": {"max_attempts": 1, "initial_backoff_ms": 10, "max_backoff_ms": 10, "pause_after_secs": 3600}})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    srv.define(|d| {
        d.audiences.insert(
            "buyers".into(),
            AudienceDefinition {
                name: "buyers".into(),
                description: String::new(),
                rule: parse(r#"performed "Bought""#).unwrap(),
                created_ms: 0,
                updated_ms: 0,
                revision: 1,
            },
        );
    })
    .await;
    (srv, rx)
}

async fn wait_delivered(srv: &TestServer, name: &str) {
    let last = srv.app.reader.last_seq();
    for _ in 0..800 {
        let (_, v) = call(srv, "GET", &format!("/v1/destinations/{name}"), None).await;
        if v["state"]["event_cursor"].as_u64().unwrap_or(0) >= last
            || v["delivery"]["event_cursor"].as_u64().unwrap_or(0) >= last
            || v.to_string().contains(&format!("\"event_cursor\":{last}"))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{name} did not reach seq {last}");
}

/// Every file under `dir`, recursively, with its bytes lowercased.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let b = std::fs::read(&p).unwrap().to_ascii_lowercase();
                out.push((p.display().to_string(), b));
            }
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn leaks(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (path, bytes) in files(dir) {
        for n in NEEDLES {
            if find(&bytes, n.to_ascii_lowercase().as_bytes()) {
                out.push(format!("{n:?} in {path}"));
            }
        }
    }
    out
}

pub fn dump(dir: &Path) -> Vec<String> {
    spoor_store::state::StateStore::open(&dir.join("state"))
        .unwrap()
        .durable_reader()
        .unwrap()
        .dump()
        .unwrap()
        .into_iter()
        // The change feed and histories number every change, the erasure's exits too, so
        // they differ from a rebuild by design; everything else must be equal.
        .filter(|l| !l.starts_with("membership_") && !l.starts_with("meta "))
        .map(|l| without_entry_times(&l))
        .collect()
}

/// A profile line with its audience entry times blanked: an entry found while replaying
/// (a rebuild) is stamped with the time of the replay, not of the original evaluation.
fn without_entry_times(line: &str) -> String {
    let Some(rest) = line.strip_prefix("profile ") else {
        return line.to_owned();
    };
    let Some((id, body)) = rest.split_once(' ') else {
        return line.to_owned();
    };
    let mut v: Value = serde_json::from_str(body).unwrap();
    if let Some(m) = v["activation"]["members"].as_object_mut() {
        for t in m.values_mut() {
            *t = json!(0);
        }
    }
    format!("profile {id} {v}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_leaves_no_byte_of_the_person_in_the_data_directory() {
    let (srv, rx) = setup().await;
    let mut events = person_events();
    for who in ["o1", "o2", "o3"] {
        events.extend(other_events(who));
    }
    srv.send_processed(events).await;
    // A rejected event of theirs (a track without an event name).
    let (s, _) = srv
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "userId": USER, "messageId": "z-bad",
                                "properties": {"email": EMAIL}}]}),
        )
        .await;
    assert!(s == 200 || s == 400, "{s}");
    assert!(!srv.rejections().await.is_empty());
    wait_delivered(&srv, "hook").await;
    wait_delivered(&srv, "broken").await;
    assert!(rx.delivered("/hook").len() >= 30);
    assert!(
        !leaks(srv.dir.path()).is_empty(),
        "the person is on disk before"
    );

    let (s, before_o1) = call(&srv, "GET", "/v1/profiles/user_id:o1", None).await;
    assert_eq!(s, 200);
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/privacy/erasures?wait=true",
        Some(json!({"ref": format!("email:{}", EMAIL.to_uppercase())})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let job = &v["erasure"];
    assert_eq!(job["status"], "done", "{v}");
    assert_eq!(
        job["profiles"], 1,
        "the anonymous visitor's profile took the user id: {v}"
    );
    assert_eq!(job["events"], 32, "{v}");
    assert_eq!(job["rejected_events"], 1, "{v}");
    assert!(job["delivery_rows"].as_u64().unwrap() > 0, "{v}");
    assert!(job["exits"].as_u64().unwrap() >= 1, "{v}");
    assert!(!v.to_string().to_lowercase().contains("zelda"), "{v}");
    let id = job["id"].as_str().unwrap().to_owned();
    let (s, v) = call(&srv, "GET", &format!("/v1/privacy/erasures/{id}"), None).await;
    assert_eq!((s, &v["erasure"]["status"]), (200, &json!("done")));

    for r in [
        format!("email:{EMAIL}"),
        format!("user_id:{USER}"),
        format!("anonymous_id:{ANON}"),
    ] {
        let (s, _) = call(&srv, "GET", &format!("/v1/profiles/{r}"), None).await;
        assert_eq!(s, 404, "{r}");
    }
    // The exit reaches the destination, with the profile id only.
    let mut exit = None;
    for _ in 0..400 {
        exit = rx
            .delivered("/hook")
            .into_iter()
            .find(|i| i["kind"] == "audience" && i["action"] == "exited");
        if exit.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let exit = exit
        .expect("the exit is delivered")
        .to_string()
        .to_lowercase();
    for n in NEEDLES {
        assert!(!exit.contains(&n.to_ascii_lowercase()), "{exit}");
    }
    // So does a deletion notice, to the destination that delivered about the person (the
    // one that only dead-lettered never received anything), with the profile id only.
    let mut notice = None;
    for _ in 0..400 {
        notice = rx
            .delivered("/hook")
            .into_iter()
            .find(|i| i["kind"] == "erasure");
        if notice.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let notice = notice.expect("the deletion notice is delivered");
    assert_eq!(notice["action"], "erased", "{notice}");
    assert!(
        notice["profile_id"]
            .as_str()
            .is_some_and(|p| p.starts_with("prof_")),
        "{notice}"
    );
    let text = notice.to_string().to_lowercase();
    for n in NEEDLES {
        assert!(!text.contains(&n.to_ascii_lowercase()), "{text}");
    }
    assert!(!rx
        .got("/broken")
        .iter()
        .any(|r| r.json().to_string().contains(r#""kind":"erasure""#)));
    let n_events = srv.events().await.len();
    assert_eq!(
        n_events, 18,
        "the others' events are all there, the person's gone"
    );

    // Offline: rewrite the databases (as `spoor privacy compact` / start-up does).
    let cfg = srv.app.cfg.clone();
    let dir = srv.stop().await;
    eprintln!("before the rewrite: {:?}", leaks(dir.path()));
    let rewritten = spoor_server::erasure::compact::compact_data_dir(dir.path()).unwrap();
    assert!(rewritten.len() >= 3, "{rewritten:?}");
    let leaks = leaks(dir.path());
    assert!(leaks.is_empty(), "the person is still on disk: {leaks:?}");

    // The others are intact after a restart on the rewritten files.
    let srv = TestServer::start_in(dir, tweak).await;
    let (s, after_o1) = call(&srv, "GET", "/v1/profiles/user_id:o1", None).await;
    assert_eq!(s, 200);
    assert_eq!(
        after_o1["profile"]["traits"],
        before_o1["profile"]["traits"]
    );
    assert_eq!(after_o1["traits"], before_o1["traits"]);
    let (_, m) = call(&srv, "GET", "/v1/audiences/buyers/size", None).await;
    assert!(m.to_string().contains('3'), "three buyers left: {m}");
    assert_eq!(srv.events().await.len(), 18);
    let dir = srv.stop().await;

    // And the state equals a rebuild of what is left of the log.
    let incremental = dump(dir.path());
    spoor_server::processor::rebuild(&cfg, |_, _| {}).unwrap();
    let rebuilt = dump(dir.path());
    assert_eq!(incremental, rebuilt);
    drop(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suppression_keeps_an_erased_person_from_coming_back() {
    let srv = TestServer::start_with(tweak).await;
    srv.send_processed(person_events()).await;
    srv.send_processed(other_events("o1")).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/privacy/erasures?wait=true",
        Some(json!({"ref": format!("user_id:{USER}")})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["erasure"]["suppressed_identifiers"], 4, "{v}");
    let (_, list) = call(&srv, "GET", "/v1/privacy/suppressions", None).await;
    let list = list["suppressions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 4);
    assert!(!Value::Array(list.clone())
        .to_string()
        .to_lowercase()
        .contains("zelda"));

    // A late tracking call and a re-import carrying any one of the identifiers.
    srv.send_processed(vec![
        json!({"type": "track", "userId": USER, "event": "Bought", "messageId": "late-1"}),
        json!({"type": "identify", "anonymousId": "fresh-device", "traits": {"email": EMAIL.to_lowercase()}, "messageId": "late-2"}),
        json!({"type": "track", "userId": "o2", "event": "Bought", "messageId": "o2-1"}),
    ])
    .await;
    for r in [
        format!("user_id:{USER}"),
        format!("email:{EMAIL}"),
        "anonymous_id:fresh-device".into(),
    ] {
        let (s, _) = call(&srv, "GET", &format!("/v1/profiles/{r}"), None).await;
        assert_eq!(s, 404, "{r} was re-created");
    }
    let (s, _) = call(&srv, "GET", "/v1/profiles/user_id:o2", None).await;
    assert_eq!(s, 200, "other people are processed as usual");
    let all = srv.events().await;
    assert_eq!(
        all.len(),
        6 + 1,
        "the suppressed events are erased from the log too"
    );

    // An admin lifts the suppression of the user id: the person may come back.
    let user_hash = hex_sha256(&format!("user_id:{USER}"));
    let (s, v) = call(
        &srv,
        "DELETE",
        &format!("/v1/privacy/suppressions/{user_hash}"),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(&srv, "DELETE", "/v1/privacy/suppressions/nothex", None).await;
    assert_eq!(s, 400);
    srv.send_processed(vec![
        json!({"type": "track", "userId": USER, "event": "Bought", "messageId": "late-3"}),
    ])
    .await;
    let (s, _) = call(&srv, "GET", &format!("/v1/profiles/user_id:{USER}"), None).await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erasure_refuses_bad_references_and_needs_an_admin() {
    let srv = TestServer::start_with(tweak).await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/privacy/erasures",
        Some(json!({"ref": "nonsense"})),
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = call(
        &srv,
        "POST",
        "/v1/privacy/erasures",
        Some(json!({"ref": "email:nobody@example.com"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(&srv, "GET", "/v1/privacy/erasures/era_999999", None).await;
    assert_eq!(s, 404);
    let resp = srv
        .http
        .get(format!("{}/v1/privacy/erasures", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

fn hex_sha256(s: &str) -> String {
    let (kind, value) = s.split_once(':').unwrap();
    hex::encode(spoor_server::erasure::identifier_hash(kind, value))
}
