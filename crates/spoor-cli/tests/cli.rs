//! End-to-end tests of the `spoor` command line against a real `spoor serve` child process:
//! `import` (NDJSON and CSV; idempotent and resumable), the admin commands (`sources`,
//! `tokens`, `events`), configuration errors, and the first-start secrets.

mod common;

use common::{
    basic, free_port, http, run, spoor_admin, spoor_cmd, Init, Out, Server, ADMIN_TOKEN, WRITE_KEY,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const RUN_TIMEOUT: Duration = Duration::from_secs(40);

/// `spoor import FILE --url URL --write-key KEY --state-dir STATE EXTRA…`.
fn import(url: &str, file: &Path, state: &Path, extra: &[&str]) -> Out {
    let mut cmd = spoor_cmd();
    cmd.arg("import")
        .arg(file)
        .args(["--url", url, "--write-key", WRITE_KEY, "--state-dir"])
        .arg(state)
        .args(extra);
    run(cmd, RUN_TIMEOUT)
}

/// The messageId `spoor import` derives for the record on line `line` (1-based) of a file,
/// when the record has none: its own content and its line number.
fn derived_id(file: &Path, line: u64) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let record = text.lines().nth(line as usize - 1).unwrap();
    let hash = hex::encode(Sha256::digest(record.as_bytes()));
    format!("import-{}-{line}", &hash[..16])
}

/// Stored events by message_id; panics on a duplicate.
fn by_message_id(events: &[Value]) -> HashMap<String, Value> {
    let mut m = HashMap::new();
    for e in events {
        let id = e["message_id"].as_str().unwrap().to_owned();
        assert!(
            m.insert(id.clone(), e.clone()).is_none(),
            "{id} stored twice"
        );
    }
    m
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// The progress files `spoor import` keeps under `state/imports`.
fn progress_files(state: &Path) -> Vec<Value> {
    let dir = state.join("imports");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            out.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// import: NDJSON

#[test]
fn import_ndjson_stores_valid_lines_verbatim_and_reports_each_rejection() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let file = root.path().join("events.ndjson");
    let lines: Vec<String> = vec![
        // 1: complete track with its own messageId
        json!({"type":"track","userId":"u1","event":"Signed Up","messageId":"m-1",
               "timestamp":"2024-05-01T10:00:00.000Z",
               "properties":{"plan":"pro","seats":3,"ratio":1.5,"tags":["a","b"],"nested":{"x":null}},
               "context":{"ip":"203.0.113.9","locale":"fr-FR"}})
        .to_string(),
        String::new(),
        // 3: identify without messageId
        json!({"type":"identify","userId":"u2","traits":{"email":"u2@example.com","name":"Zoé"}})
            .to_string(),
        // 4: not JSON
        "{\"type\":\"track\", oops".into(),
        // 5: valid JSON the server refuses (no event name)
        json!({"type":"track","userId":"u3","messageId":"m-5","properties":{}}).to_string(),
        // 6: JSON but not an object
        "[1,2,3]".into(),
        // 7: page with an anonymous id
        json!({"type":"page","anonymousId":"anon-7","name":"Home","messageId":"m-7",
               "properties":{"url":"https://shop.test/?utm_source=news"}})
        .to_string(),
        "   ".into(),
        // 9: alias without messageId
        json!({"type":"alias","userId":"u4","previousId":"anon-7"}).to_string(),
        // 10: group
        json!({"type":"group","userId":"u1","groupId":"g-1","traits":{"name":"Acme"},"messageId":"m-10"})
            .to_string(),
    ];
    write_lines(&file, &lines);
    let state = root.path().join("state");
    let out = import(&server.url, &file, &state, &[]);
    out.assert_ok();
    let so = &out.stdout;
    assert!(
        so.contains("read 10 lines, accepted 5, rejected 3"),
        "summary: {out}"
    );
    assert!(so.contains("line 4: invalid_line: invalid JSON"), "{out}");
    assert!(so.contains("line 5: missing_field:"), "{out}");
    assert!(
        so.contains("line 6: invalid_line: not a JSON object"),
        "{out}"
    );
    assert!(so.contains("invalid_line: 2"), "counts by code: {out}");
    assert!(so.contains("missing_field: 1"), "counts by code: {out}");
    assert!(
        !so.contains("line 2:") && !so.contains("line 8:"),
        "blank lines are not rejections: {out}"
    );

    let stored = by_message_id(&server.export());
    assert_eq!(stored.len(), 5, "{stored:#?}");
    for (line_no, text) in [
        (1u64, &lines[0]),
        (3, &lines[2]),
        (7, &lines[6]),
        (9, &lines[8]),
        (10, &lines[9]),
    ] {
        let mut orig: Map<String, Value> = serde_json::from_str(text).unwrap();
        let id = match orig.get("messageId") {
            Some(v) => v.as_str().unwrap().to_owned(),
            None => {
                let id = derived_id(&file, line_no);
                orig.insert("messageId".into(), json!(id));
                id
            }
        };
        let e = stored
            .get(&id)
            .unwrap_or_else(|| panic!("line {line_no} ({id}) not stored: {stored:#?}"));
        // Field by field, the stored message is the line as written (plus the derived id).
        assert_eq!(e["message"], Value::Object(orig), "line {line_no}");
        assert_eq!(e["type"], e["message"]["type"], "line {line_no}");
    }
    // The derived ids are the documented ones: file hash + line number.
    assert!(stored.contains_key(&derived_id(&file, 3)));
    assert!(stored.contains_key(&derived_id(&file, 9)));

    // The server-side refusal is recorded with its reason.
    let (s, v) = server.admin_get("/v1/admin/rejections?order=asc");
    assert_eq!(s, 200);
    let rej = v["rejections"].as_array().unwrap();
    assert_eq!(rej.len(), 1, "{v}");
    assert_eq!(rej[0]["code"], "missing_field");
    assert!(rej[0]["raw"].as_str().unwrap().contains("m-5"));

    // The rejection report next to the progress file lists all three with line numbers.
    let report = std::fs::read_dir(state.join("imports"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".rejected.ndjson"))
        .expect("rejection report");
    let mut rlines: Vec<u64> = std::fs::read_to_string(report)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["line"]
                .as_u64()
                .unwrap()
        })
        .collect();
    rlines.sort();
    assert_eq!(rlines, vec![4, 5, 6]);
}

fn numbered_events(n: usize, prefix: &str) -> Vec<String> {
    (1..=n)
        .map(|i| {
            let mut e = json!({"type":"track","userId":format!("u{}", i % 5),"event":"Item Viewed",
                               "properties":{"i":i,"prefix":prefix}});
            // Every third event has no messageId: the import derives one.
            if i % 3 != 0 {
                e["messageId"] = json!(format!("{prefix}-{i}"));
            }
            e.to_string()
        })
        .collect()
}

/// The message of each stored event, by its `properties.i`; asserts nothing is duplicated.
fn stored_is(server: &Server, file: &Path, lines: &[String]) {
    let stored = by_message_id(&server.export());
    assert_eq!(stored.len(), lines.len(), "stored count");
    for (i, l) in lines.iter().enumerate() {
        let mut orig: Map<String, Value> = serde_json::from_str(l).unwrap();
        let id = match orig.get("messageId") {
            Some(v) => v.as_str().unwrap().to_owned(),
            None => {
                let id = derived_id(file, i as u64 + 1);
                orig.insert("messageId".into(), json!(id));
                id
            }
        };
        let e = stored
            .get(&id)
            .unwrap_or_else(|| panic!("line {} ({id}) missing", i + 1));
        assert_eq!(e["message"], Value::Object(orig));
    }
}

#[test]
fn import_twice_or_forced_stores_nothing_new() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let file = root.path().join("items.ndjson");
    let lines = numbered_events(30, "twice");
    write_lines(&file, &lines);
    let state = root.path().join("state");

    let first = import(&server.url, &file, &state, &["--batch-size", "7"]);
    first.assert_ok();
    assert!(
        first
            .stdout
            .contains("read 30 lines, accepted 30, rejected 0"),
        "{first}"
    );
    stored_is(&server, &file, &lines);

    let second = import(&server.url, &file, &state, &["--batch-size", "7"]);
    second.assert_ok();
    assert!(
        second
            .stdout
            .contains("already imported completely: 30 accepted, 0 rejected"),
        "{second}"
    );
    stored_is(&server, &file, &lines);

    let forced = import(
        &server.url,
        &file,
        &state,
        &["--batch-size", "7", "--force"],
    );
    forced.assert_ok();
    assert!(!forced.stdout.contains("already imported"), "{forced}");
    // Sent again, and dropped by the server's dedupe: still exactly one of each.
    stored_is(&server, &file, &lines);
}

/// A stand-in for the server that forwards the first `pass` requests to `upstream`, forwards
/// request `pass + 1` too but answers it 400 (the batch is stored, its 200 is lost and the
/// import stops), and refuses every later request the same way without forwarding.
/// Returns its URL and how many requests it saw.
fn interrupting_proxy(upstream: String, pass: usize) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let client = http();
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let Some((path, headers, body)) = read_request(&mut conn) else {
                continue;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let (status, answer) = if n <= pass + 1 {
                let mut req = client.post(format!("{upstream}{path}")).body(body);
                for (k, v) in &headers {
                    if k == "authorization" || k == "content-type" || k == "content-encoding" {
                        req = req.header(k.as_str(), v.as_str());
                    }
                }
                let r = req.send().unwrap();
                let status = r.status().as_u16();
                let text = r.text().unwrap();
                if n <= pass {
                    (status, text)
                } else {
                    (400, String::new())
                }
            } else {
                (400, String::new())
            };
            let answer = if status == 400 && answer.is_empty() {
                json!({"code":"invalid_request","message":"simulated interruption"}).to_string()
            } else {
                answer
            };
            let resp = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{answer}",
                answer.len()
            );
            let _ = conn.write_all(resp.as_bytes());
        }
    });
    (url, seen)
}

/// One HTTP request as the proxy read it: path, lowercased headers, body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

/// Reads one HTTP/1.1 request with a Content-Length body.
fn read_request(conn: &mut TcpStream) -> Option<Request> {
    conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((path, headers, body))
}

#[test]
fn interrupted_import_resumes_without_duplicates_or_loss() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let file = root.path().join("resume.ndjson");
    let lines = numbered_events(50, "resume");
    write_lines(&file, &lines);
    let state = root.path().join("state");

    // Batches 1 and 2 go through; batch 3 is stored but its answer is lost: the import stops.
    let (proxy, seen) = interrupting_proxy(server.url.clone(), 2);
    let cut = import(&proxy, &file, &state, &["--batch-size", "10"]);
    cut.assert_failed();
    assert!(
        cut.stderr.contains("refused the batch") && cut.stderr.contains("simulated interruption"),
        "{cut}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 3);
    let progress = progress_files(&state);
    assert_eq!(progress.len(), 1, "{progress:?}");
    assert_eq!(progress[0]["lines_done"], 20, "{progress:?}");
    assert_eq!(progress[0]["complete"], false, "{progress:?}");
    assert_eq!(server.export().len(), 30, "batches 1-3 are stored");

    // Resuming re-sends batch 3 (dropped as duplicates) and sends the rest.
    let resumed = import(&server.url, &file, &state, &["--batch-size", "10"]);
    resumed.assert_ok();
    assert!(resumed.stdout.contains("resuming"), "{resumed}");
    assert!(resumed.stdout.contains("at line 21"), "{resumed}");
    assert!(
        resumed
            .stdout
            .contains("read 50 lines, accepted 50, rejected 0"),
        "{resumed}"
    );
    stored_is(&server, &file, &lines);

    let again = import(&server.url, &file, &state, &[]);
    again.assert_ok();
    assert!(
        again.stdout.contains("already imported completely"),
        "{again}"
    );
    stored_is(&server, &file, &lines);
}

#[test]
fn import_to_an_unreachable_server_fails_fast_naming_the_url() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("few.ndjson");
    write_lines(&file, &numbered_events(5, "nowhere"));
    let state = root.path().join("state");
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let out = import(&url, &file, &state, &[]);
    let took = started.elapsed();
    out.assert_failed();
    assert!(out.stderr.contains(&url), "the error names the URL: {out}");
    assert!(
        out.stderr.to_lowercase().contains("refused"),
        "the error says why: {out}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}: {out}");
    // Nothing was acknowledged, so nothing is marked done.
    for p in progress_files(&state) {
        assert_eq!(p["lines_done"], 0, "{p}");
        assert_eq!(p["complete"], false, "{p}");
    }
}

// ---------------------------------------------------------------------------------------------
// import: CSV

#[test]
fn import_csv_as_identify_and_as_track() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let state = root.path().join("state");

    let people = root.path().join("people.csv");
    std::fs::write(
        &people,
        "user_id,email,name,plan\n\
         u1,ann@example.com,Ann,pro\n\
         u2,bob@example.com,\"Bob, Jr.\",free\n\
         u3,only-three@example.com,Carl\n\
         \n\
         u4,dee@example.com,Dee,\n",
    )
    .unwrap();
    let out = import(&server.url, &people, &state, &["--csv-as", "identify"]);
    out.assert_ok();
    assert!(out.stdout.contains("accepted 3, rejected 1"), "{out}");
    assert!(
        out.stdout
            .contains("line 4: invalid_line: 3 fields; the header has 4"),
        "{out}"
    );

    let orders = root.path().join("orders.csv");
    std::fs::write(
        &orders,
        "user_id,order_id,total,currency\n\
         u1,o-1,12.50,EUR\n\
         u2,o-2,7,USD\n\
         u2,o-3,1,USD,extra\n",
    )
    .unwrap();
    let out = import(
        &server.url,
        &orders,
        &state,
        &["--csv-as", "track", "--event", "Order Completed"],
    );
    out.assert_ok();
    assert!(out.stdout.contains("accepted 2, rejected 1"), "{out}");
    assert!(
        out.stdout
            .contains("line 4: invalid_line: 5 fields; the header has 4"),
        "{out}"
    );

    let events = server.export();
    let msgs: Vec<&Value> = events.iter().map(|e| &e["message"]).collect();
    let strip = |m: &Value| {
        let mut m = m.clone();
        m.as_object_mut().unwrap().remove("messageId");
        m
    };
    let got: Vec<Value> = msgs.iter().map(|m| strip(m)).collect();
    assert_eq!(
        got,
        vec![
            json!({"type":"identify","userId":"u1","traits":{"email":"ann@example.com","name":"Ann","plan":"pro"}}),
            json!({"type":"identify","userId":"u2","traits":{"email":"bob@example.com","name":"Bob, Jr.","plan":"free"}}),
            json!({"type":"identify","userId":"u4","traits":{"email":"dee@example.com","name":"Dee"}}),
            json!({"type":"track","userId":"u1","event":"Order Completed","properties":{"order_id":"o-1","total":"12.50","currency":"EUR"}}),
            json!({"type":"track","userId":"u2","event":"Order Completed","properties":{"order_id":"o-2","total":"7","currency":"USD"}}),
        ]
    );
    // Derived ids: the CSV line number (the header is line 1).
    assert_eq!(msgs[0]["messageId"], json!(derived_id(&people, 2)));
    assert_eq!(msgs[2]["messageId"], json!(derived_id(&people, 6)));
    assert_eq!(msgs[4]["messageId"], json!(derived_id(&orders, 3)));
}

#[test]
fn import_csv_with_a_byte_order_mark_finds_the_id_column() {
    // Spreadsheet programs often save "CSV UTF-8" with a BOM before the header.
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let file = root.path().join("excel.csv");
    std::fs::write(&file, "\u{feff}user_id,email\nu1,ann@example.com\n").unwrap();
    let out = import(&server.url, &file, &root.path().join("state"), &[]);
    out.assert_ok();
    assert!(out.stdout.contains("accepted 1, rejected 0"), "{out}");
    let events = server.export();
    assert_eq!(events[0]["message"]["userId"], "u1");
    assert_eq!(
        events[0]["message"]["traits"],
        json!({"email":"ann@example.com"})
    );
}

// ---------------------------------------------------------------------------------------------
// Admin commands

/// The value after `prefix` on the line of `text` that contains it.
fn after<'a>(text: &'a str, prefix: &str) -> &'a str {
    let line = text
        .lines()
        .find(|l| l.contains(prefix))
        .unwrap_or_else(|| panic!("no line with {prefix:?} in:\n{text}"));
    line.split(prefix).nth(1).unwrap().trim()
}

/// The id in `created … NAME (ID)…`.
fn paren_id(text: &str) -> String {
    let l = text.lines().next().unwrap();
    l[l.find('(').unwrap() + 1..l.find(')').unwrap()].to_owned()
}

#[test]
fn sources_tokens_and_events_commands() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let admin = Some(ADMIN_TOKEN);

    // sources create / list
    let out = spoor_admin(&server, admin, &["sources", "create", "web"]);
    out.assert_ok();
    assert!(out.stdout.starts_with("created source web ("), "{out}");
    let web_id = paren_id(&out.stdout);
    let web_key = after(&out.stdout, "write key (shown only now):").to_owned();
    assert!(web_key.len() >= 16, "{out}");
    let list = spoor_admin(&server, admin, &["sources", "list"]);
    list.assert_ok();
    let header = list.stdout.lines().next().unwrap();
    for col in ["ID", "NAME", "KEY", "CREATED", "REVOKED"] {
        assert!(header.contains(col), "{list}");
    }
    assert!(
        list.stdout.contains("default") && list.stdout.contains(&web_id),
        "{list}"
    );
    assert!(
        !list.stdout.contains(&web_key),
        "the list must not show a full key: {list}"
    );

    // The new key ingests; events list / export / rejections read it back.
    let (s, v) = server.post(
        "/v1/track",
        &json!({"userId":"w1","event":"Clicked","messageId":"web-1"}),
        &web_key,
    );
    assert_eq!(s, 200, "{v}");
    let (s, _) = server.post(
        "/v1/identify",
        &json!({"userId":"w2","messageId":"default-1"}),
        WRITE_KEY,
    );
    assert_eq!(s, 200);
    let (s, v) = server.post("/v1/track", &json!({"userId":"w3"}), &web_key);
    assert_eq!(s, 400, "a single event without a name is refused: {v}");

    let out = spoor_admin(&server, admin, &["events", "list"]);
    out.assert_ok();
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{out}");
    assert_eq!(listed[0]["message_id"], "default-1", "newest first: {out}");
    let out = spoor_admin(
        &server,
        admin,
        &[
            "events", "list", "--asc", "--type", "track", "--source", "web",
        ],
    );
    out.assert_ok();
    let listed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["message"]["event"], "Clicked");
    assert_eq!(listed[0]["source_id"], json!(web_id));

    let out = spoor_admin(&server, admin, &["events", "export"]);
    out.assert_ok();
    let exported: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 2);
    assert_eq!(exported, server.export());

    let out = spoor_admin(&server, admin, &["events", "rejections"]);
    out.assert_ok();
    assert!(out.stdout.lines().next().unwrap().contains("CODE"), "{out}");
    assert!(out.stdout.contains("missing_field"), "{out}");
    assert!(out.stdout.contains(&web_id), "{out}");

    // sources revoke: the key stops working, its events stay.
    let out = spoor_admin(&server, admin, &["sources", "revoke", "web"]);
    out.assert_ok();
    assert!(
        out.stdout
            .contains(&format!("revoked source web ({web_id})")),
        "{out}"
    );
    let (s, v) = server.post(
        "/v1/track",
        &json!({"userId":"w1","event":"Clicked","messageId":"web-2"}),
        &web_key,
    );
    assert_eq!(s, 401, "{v}");
    let list = spoor_admin(&server, admin, &["sources", "list"]);
    let web_row = list.stdout.lines().find(|l| l.contains(&web_id)).unwrap();
    assert!(
        !web_row.trim_end().ends_with(" -"),
        "revoked_at is shown: {list}"
    );
    assert_eq!(server.export().len(), 2);

    // tokens create (read scope) / list / revoke
    let out = spoor_admin(
        &server,
        admin,
        &["tokens", "create", "ci", "--scope", "read"],
    );
    out.assert_ok();
    assert!(out.stdout.starts_with("created token ci ("), "{out}");
    assert!(out.stdout.contains("read"), "{out}");
    let ci_id = paren_id(&out.stdout);
    let ci = after(&out.stdout, "token (shown only now):").to_owned();
    let out = spoor_admin(&server, Some(&ci), &["events", "list", "--limit", "1"]);
    out.assert_ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    let out = spoor_admin(&server, Some(&ci), &["sources", "create", "nope"]);
    out.assert_failed();
    assert!(
        out.stderr.contains("403"),
        "a read token cannot create sources: {out}"
    );
    let list = spoor_admin(&server, admin, &["tokens", "list"]);
    list.assert_ok();
    assert!(
        list.stdout.contains(&ci_id) && list.stdout.contains("ci"),
        "{list}"
    );
    assert!(
        !list.stdout.contains(&ci),
        "the list must not show a secret: {list}"
    );
    assert!(!list.stdout.contains(ADMIN_TOKEN), "{list}");
    let out = spoor_admin(&server, admin, &["tokens", "revoke", &ci_id]);
    out.assert_ok();
    assert!(out.stdout.contains("revoked token ci"), "{out}");
    let out = spoor_admin(&server, Some(&ci), &["events", "list"]);
    out.assert_failed();
    assert!(out.stderr.contains("401"), "{out}");

    // No token: a clear error, non-zero exit, for every command.
    for args in [
        &["events", "list"][..],
        &["events", "export"],
        &["sources", "list"],
        &["tokens", "create", "x"],
    ] {
        let out = spoor_admin(&server, None, args);
        out.assert_failed();
        assert!(
            out.stderr.contains("no admin token") && out.stderr.contains("SPOOR_TOKEN"),
            "{args:?}: {out}"
        );
    }
    // A wrong token.
    let out = spoor_admin(
        &server,
        Some("not-a-real-token-000000"),
        &["sources", "list"],
    );
    out.assert_failed();
    assert!(out.stderr.contains("401"), "{out}");
}

#[test]
fn admin_commands_against_no_server_fail_clearly() {
    let url = format!("http://127.0.0.1:{}", free_port());
    for args in [
        &["events", "list"][..],
        &["events", "export"],
        &["sources", "list"],
    ] {
        let mut cmd = spoor_cmd();
        cmd.args(args)
            .env("SPOOR_URL", &url)
            .env("SPOOR_TOKEN", ADMIN_TOKEN);
        let out = run(cmd, RUN_TIMEOUT);
        out.assert_failed();
        assert!(
            out.stderr.contains("cannot reach spoor at") && out.stderr.contains(&url),
            "{args:?}: {out}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// serve

fn serve_once(root: &Path, env: &[(&str, &str)], extra: &[&str]) -> Out {
    let mut cmd = spoor_cmd();
    cmd.arg("serve")
        .arg("--data-dir")
        .arg(root.join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(extra)
        .envs(env.iter().copied());
    run(cmd, Duration::from_secs(20))
}

#[test]
fn serve_refuses_an_unknown_config_key_and_names_it() {
    let root = tempfile::tempdir().unwrap();
    let out = serve_once(root.path(), &[("SPOOR_SERVER__LISTN", "x")], &[]);
    out.assert_failed();
    assert!(out.stderr.contains("listn"), "{out}");
    assert!(
        !root.path().join("data").exists(),
        "nothing is created: {out}"
    );

    let cfg = root.path().join("spoor.toml");
    std::fs::write(
        &cfg,
        "[ingest]\nmax_event_bytes = 1000\ndedupe_windw_secs = 60\n",
    )
    .unwrap();
    let out = serve_once(root.path(), &[], &["--config", cfg.to_str().unwrap()]);
    out.assert_failed();
    assert!(out.stderr.contains("dedupe_windw_secs"), "{out}");

    let out = serve_once(root.path(), &[("SPOOR_CONFIG", cfg.to_str().unwrap())], &[]);
    out.assert_failed();
    assert!(out.stderr.contains("dedupe_windw_secs"), "{out}");

    let missing = root.path().join("missing.toml");
    let out = serve_once(root.path(), &[], &["--config", missing.to_str().unwrap()]);
    out.assert_failed();
    assert!(out.stderr.contains("missing.toml"), "{out}");

    // A bad value is refused too. (For the `[ingest]` limits, flattened from
    // spoor_core::ingest::Limits, the message names only the section, not the key.)
    let out = serve_once(root.path(), &[("SPOOR_INGEST__QUEUE_BATCHES", "lots")], &[]);
    out.assert_failed();
    assert!(out.stderr.to_lowercase().contains("queue_batches"), "{out}");
    let out = serve_once(
        root.path(),
        &[("SPOOR_INGEST__MAX_EVENT_BYTES", "lots")],
        &[],
    );
    out.assert_failed();
    assert!(
        out.stderr.to_lowercase().contains("ingest") && out.stderr.contains("lots"),
        "{out}"
    );
}

#[test]
fn first_start_prints_the_secrets_once() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let mut first = Server::start(&data, port, Init::Random, &logs, "first");
    // The lines are printed before the listener starts, so they are there once it is ready.
    let out = first.stdout();
    assert!(out.contains("First start"), "{out}");
    let key = after(&out, "write key (")
        .split_once("):")
        .unwrap()
        .1
        .trim()
        .to_owned();
    let token = after(&out, "admin token (")
        .split_once("):")
        .unwrap()
        .1
        .trim()
        .to_owned();
    assert!(key.len() >= 16 && token.len() >= 16, "{out}");
    // The web UI's first user, with its password, once.
    assert!(out.contains("created web UI user 'admin'"), "{out}");
    let password = after(&out, "password:")
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 16, "{out}");

    // They work.
    let (s, v) = first.post(
        "/v1/track",
        &json!({"userId":"u","event":"E","messageId":"first-1"}),
        &key,
    );
    assert_eq!(s, 200, "{v}");
    let (s, v) = common::admin_get(&first.url, &token, "/v1/admin/status");
    assert_eq!(s, 200, "{v}");
    assert!(
        !first.stderr().contains(&key) && !first.stderr().contains(&token),
        "secrets in the log"
    );

    // A second start on the same directory (even after kill -9) prints neither.
    first.kill9();
    // A new port: another test may have been handed the freed one meanwhile.
    let second = Server::start(&data, free_port(), Init::Random, &logs, "second");
    let out2 = second.stdout();
    assert!(out2.contains("spoor listening"), "{out2}");
    assert!(!out2.contains("First start"), "{out2}");
    assert!(!out2.contains(&key) && !out2.contains(&token), "{out2}");
    assert!(!out2.contains(&password), "{out2}");
    let (s, _) = common::admin_get(&second.url, &token, "/v1/admin/status");
    assert_eq!(s, 200, "the first token still works");
    let r = http()
        .post(format!("{}/v1/track", second.url))
        .header("authorization", basic(&key))
        .body(json!({"userId":"u","event":"E","messageId":"first-2"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(common::export(&second.url, &token).len(), 2);
}

#[test]
fn a_refused_first_start_secret_leaves_the_directory_uninitialised() {
    let root = tempfile::tempdir().unwrap();
    let out = serve_once(
        root.path(),
        &[
            ("SPOOR_INIT_WRITE_KEY", WRITE_KEY),
            ("SPOOR_INIT_ADMIN_TOKEN", "too-short"),
        ],
        &[],
    );
    out.assert_failed();
    assert!(
        out.stderr.contains("SPOOR_INIT_ADMIN_TOKEN")
            && out.stderr.contains("at least 16 characters")
            && !out.stderr.contains("InvalidRequest("),
        "{out}"
    );
    // Fixed, the next start initialises the directory: both secrets are created and shown.
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let server = Server::start(
        &root.path().join("data"),
        free_port(),
        Init::Given(WRITE_KEY, ADMIN_TOKEN),
        &logs,
        "retry",
    );
    let so = server.stdout();
    assert!(
        so.contains("First start") && so.contains(ADMIN_TOKEN),
        "{so}"
    );
    let (s, v) = server.admin_get("/v1/admin/sources");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["sources"].as_array().unwrap().len(), 1, "{v}");
}

#[test]
fn appending_to_an_imported_file_imports_only_the_new_lines() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let state = root.path().join("state");
    let file = root.path().join("growing.ndjson");
    let line = |i: usize| format!(r#"{{"type":"track","userId":"u{i}","event":"E{i}"}}"#);
    write_lines(&file, &[line(1), line(2)]);
    import(&server.url, &file, &state, &[]).assert_ok();
    // The export grows; the same file is imported again (it is a new file to the importer).
    write_lines(&file, &[line(1), line(2), line(3)]);
    let out = import(&server.url, &file, &state, &[]);
    out.assert_ok();
    let events = server.export();
    let stored = by_message_id(&events);
    assert_eq!(
        stored.len(),
        3,
        "earlier lines are not stored twice: {events:?}"
    );
    for i in 1..=3 {
        assert!(stored.contains_key(&derived_id(&file, i)));
    }
}

#[test]
fn a_quoted_csv_field_may_span_lines() {
    let root = tempfile::tempdir().unwrap();
    let server = Server::start_fresh(root.path());
    let state = root.path().join("state");
    let file = root.path().join("notes.csv");
    std::fs::write(
        &file,
        "user_id,note\nu1,\"line one\nline two, with \"\"quotes\"\"\"\nu2,ok\nu3,\"never closed\n",
    )
    .unwrap();
    let out = import(&server.url, &file, &state, &["--csv-as", "identify"]);
    out.assert_ok();
    assert!(out.stdout.contains("accepted 2, rejected 1"), "{out}");
    assert!(
        out.stdout
            .contains("line 5: invalid_line: a quoted field is never closed"),
        "{out}"
    );
    let events = server.export();
    assert_eq!(
        events[0]["message"]["traits"]["note"],
        "line one\nline two, with \"quotes\""
    );
    assert_eq!(events[1]["message"]["userId"], "u2");
}
