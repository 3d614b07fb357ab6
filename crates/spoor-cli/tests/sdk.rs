//! Wire compatibility with the real client libraries.
//!
//! Starts the `spoor` binary on a free port with a fresh data directory, runs the scripts in
//! `tests/sdk/` (segment-analytics-python, @segment/analytics-node,
//! @rudderstack/rudder-sdk-node), each sending identify, track, page, screen, group and alias,
//! then reads the stored events back through the admin API and checks them field by field
//! against what each script says it sent (`SPOOR_SDK_SENT <json>`, built from
//! `tests/sdk/fixture.json`, the one source of truth for the values).
//!
//! Libraries come from outside cargo: `npm ci --prefix tests/sdk` and
//! `pip install segment-analytics-python` (see `.ci/run`). A missing library is skipped with
//! `SKIPPED sdk tests: <reason>` on stderr, unless `SPOOR_REQUIRE_SDKS=1`, which makes it a
//! failure (CI sets it). `SPOOR_PYTHON` picks the Python (default `python3`), `SPOOR_NODE`
//! the Node binary (default `node` from PATH).

use chrono::{DateTime, Duration as Span, Utc};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WRITE_KEY: &str = "wk_sdk_compat_test_0123456789";
const ADMIN_TOKEN: &str = "adm_sdk_compat_test_0123456789";
/// How long one client script may take (they stop themselves after 90 s).
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn sdk_dir() -> PathBuf {
    repo_root().join("tests").join("sdk")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

// ---------------------------------------------------------------------------------------------
// The libraries

struct Library {
    /// Package name, as the scripts report it.
    name: &'static str,
    program: String,
    script: &'static str,
}

impl Library {
    fn all() -> Vec<Library> {
        let python = env_or("SPOOR_PYTHON", "python3");
        let node = env_or("SPOOR_NODE", "node");
        vec![
            Library {
                name: "segment-analytics-python",
                program: python,
                script: "segment_python.py",
            },
            Library {
                name: "@segment/analytics-node",
                program: node.clone(),
                script: "segment_node.mjs",
            },
            Library {
                name: "@rudderstack/rudder-sdk-node",
                program: node,
                script: "rudder_node.mjs",
            },
        ]
    }

    fn is_python(&self) -> bool {
        self.script.ends_with(".py")
    }

    /// `Err(reason)` when the interpreter or the library is not installed.
    fn availability(&self) -> Result<(), String> {
        let probe = if self.is_python() {
            Command::new(&self.program)
                .args(["-c", "import segment.analytics"])
                .output()
        } else {
            Command::new(&self.program).arg("--version").output()
        };
        let out = probe.map_err(|e| format!("cannot run {:?}: {e}", self.program))?;
        if self.is_python() {
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                let last = err.lines().last().unwrap_or_default();
                return Err(format!(
                    "{} is not importable by {:?} ({last}); install it with `pip install segment-analytics-python` and point SPOOR_PYTHON at that python",
                    self.name, self.program
                ));
            }
        } else {
            if !out.status.success() {
                return Err(format!("{:?} --version failed", self.program));
            }
            let manifest = sdk_dir()
                .join("node_modules")
                .join(self.name)
                .join("package.json");
            if !manifest.is_file() {
                return Err(format!(
                    "{} is not installed ({} missing); run `npm ci --prefix tests/sdk`",
                    self.name,
                    manifest.display()
                ));
            }
        }
        Ok(())
    }

    /// Runs the script against `host`; returns what it says it sent.
    fn run(&self, host: &str, run_id: &str, scratch: &Path) -> Result<Sent, String> {
        let stem = self.script.replace('.', "_");
        let out_path = scratch.join(format!("{stem}.stdout"));
        let err_path = scratch.join(format!("{stem}.stderr"));
        let started = Instant::now();
        let mut child = Command::new(&self.program)
            .arg(sdk_dir().join(self.script))
            .args([host, WRITE_KEY, run_id])
            .current_dir(sdk_dir())
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", self.program))?;
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if started.elapsed() > SCRIPT_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {SCRIPT_TIMEOUT:?}",
                    self.script
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
        eprintln!(
            "sdk: {} finished in {:.1?} with {status}",
            self.name,
            started.elapsed()
        );
        if !status.success() {
            return Err(format!(
                "{} exited with {status} (1: delivery error, 2: timeout, 3: not installed)\n--- stderr ---\n{}\n--- stdout ---\n{}",
                self.script,
                stderr.trim_end(),
                stdout.trim_end()
            ));
        }
        let line = stdout
            .lines()
            .find_map(|l| l.strip_prefix("SPOOR_SDK_SENT "))
            .ok_or_else(|| format!("{} printed no SPOOR_SDK_SENT line:\n{stdout}", self.script))?;
        let sent: Value =
            serde_json::from_str(line).map_err(|e| format!("bad SPOOR_SDK_SENT json: {e}"))?;
        if sent["library"] != self.name {
            return Err(format!(
                "{} reports library {}",
                self.script, sent["library"]
            ));
        }
        let calls = sent["calls"].as_array().cloned().unwrap_or_default();
        if calls.len() != 6 {
            return Err(format!(
                "{} sent {} calls, expected the six of fixture.json",
                self.script,
                calls.len()
            ));
        }
        Ok(Sent {
            library: self.name,
            version: sent["version"].clone(),
            calls,
        })
    }
}

/// What one script sent.
struct Sent {
    library: &'static str,
    version: Value,
    calls: Vec<Value>,
}

// ---------------------------------------------------------------------------------------------
// The server

/// The running `spoor serve`; killed on drop, also when the test panics (then its log is
/// printed).
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
    http: reqwest::blocking::Client,
    _data: tempfile::TempDir,
}

impl Server {
    fn start(scratch: &Path) -> Server {
        let mut last_error = String::new();
        // The port is picked by binding :0 and releasing it, so another process may take it
        // before spoor binds; retry a few times.
        for attempt in 1..=3 {
            let data = tempfile::tempdir().expect("data dir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let log = scratch.join(format!("spoor-serve-{attempt}.log"));
            let log_file = File::create(&log).expect("server log file");
            let child = Command::new(env!("CARGO_BIN_EXE_spoor"))
                .arg("serve")
                .arg("--data-dir")
                .arg(data.path())
                .arg("--listen")
                .arg(format!("127.0.0.1:{port}"))
                .env("SPOOR_INIT_WRITE_KEY", WRITE_KEY)
                .env("SPOOR_INIT_ADMIN_TOKEN", ADMIN_TOKEN)
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().unwrap())
                .stderr(log_file)
                .spawn()
                .expect("start spoor serve");
            spoor_server::tls::install_crypto_provider();
            let http = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            let mut server = Server {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
                http,
                _data: data,
            };
            match server.wait_ready(Duration::from_secs(30)) {
                Ok(()) => return server,
                Err(e) => last_error = format!("{e}\n--- spoor log ---\n{}", server.log_text()),
            }
        }
        panic!("spoor serve did not become ready: {last_error}");
    }

    fn wait_ready(&mut self, within: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("spoor serve exited with {status}"));
            }
            if let Ok(r) = self.http.get(format!("{}/readyz", self.base)).send() {
                if r.status() == 200 {
                    return Ok(());
                }
            }
            if started.elapsed() > within {
                return Err(format!("GET /readyz did not answer 200 within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an admin endpoint (path with query), expecting 200 and JSON.
    fn admin(&self, path_and_query: &str) -> Value {
        let url = format!("{}{path_and_query}", self.base);
        let resp = self
            .http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status();
        let body = resp.text().unwrap_or_default();
        assert_eq!(status, 200, "GET {url} answered {status}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e}): {body}"))
    }

    /// All stored events, oldest first, following `next_cursor`.
    fn events(&self, filter: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut q = format!("/v1/admin/events?limit=1000&order=asc{filter}");
            if let Some(c) = &cursor {
                q.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = self.admin(&q);
            let events = page["events"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {q}: no `events` array: {page}"));
            all.extend(events.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) if !events.is_empty() => cursor = Some(c.to_owned()),
                _ => return all,
            }
        }
        panic!("GET /v1/admin/events: more than 100 pages");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- spoor serve log ({}) ---\n{}",
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checks

fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Checks one library's six stored events against what it sent; returns the problems.
fn check_library(
    sent: &Sent,
    events: &[Value],
    window: (DateTime<Utc>, DateTime<Utc>),
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut fail = |m: String| problems.push(format!("{}: {m}", sent.library));
    let (start, end) = window;
    let sane = |t: DateTime<Utc>| t >= start - Span::seconds(5) && t <= end + Span::seconds(5);

    // Every event whose ids belong to this library's run.
    let ident_prefix = sent.calls[0]["userId"]
        .as_str()
        .unwrap()
        .trim_end_matches("-u1")
        .to_owned();
    let mine: Vec<&Value> = events
        .iter()
        .filter(|e| {
            ["userId", "anonymousId", "previousId"].iter().any(|k| {
                e["message"][k]
                    .as_str()
                    .is_some_and(|v| v.starts_with(&format!("{ident_prefix}-")))
            })
        })
        .collect();
    if mine.len() != sent.calls.len() {
        fail(format!(
            "stored {} events for {ident_prefix}-*, sent {} (types stored: {:?})",
            mine.len(),
            sent.calls.len(),
            mine.iter()
                .map(|e| e["type"].as_str().unwrap_or("?"))
                .collect::<Vec<_>>()
        ));
    }

    for call in &sent.calls {
        let kind = call["type"].as_str().unwrap();
        let matching: Vec<&&Value> = mine
            .iter()
            .filter(|e| {
                e["type"] == call["type"]
                    && e["message"]["userId"] == call["userId"]
                    && (kind != "alias" || e["message"]["previousId"] == call["previousId"])
            })
            .collect();
        let ev = match matching.as_slice() {
            [one] => **one,
            [] => {
                fail(format!("{kind}: not stored (sent {call})"));
                continue;
            }
            more => {
                fail(format!("{kind}: stored {} times", more.len()));
                continue;
            }
        };
        let m = &ev["message"];
        let mut expect = |what: &str, got: &Value, want: &Value| {
            if got != want {
                fail(format!("{kind}: {what} is {got}, sent {want}"));
            }
        };

        // The message as the client sent it.
        expect("message.type", &m["type"], &call["type"]);
        for key in [
            "userId",
            "anonymousId",
            "previousId",
            "groupId",
            "event",
            "name",
            "properties",
            "traits",
        ] {
            if let Some(want) = call.get(key) {
                expect(&format!("message.{key}"), &m[key], want);
            }
        }
        if !m["context"]["library"]["name"].is_string() {
            fail(format!(
                "{kind}: message.context.library.name missing: {}",
                m["context"]
            ));
        }

        // What Spoor derived.
        let message_id = ev["message_id"].as_str().unwrap_or_default();
        if message_id.is_empty() {
            fail(format!("{kind}: message_id missing"));
        } else if m["messageId"].as_str() != Some(message_id) {
            fail(format!(
                "{kind}: message_id {message_id:?} differs from the client's messageId {}",
                m["messageId"]
            ));
        }
        if ev.get("message_id_generated").is_some_and(|g| g != false) {
            fail(format!(
                "{kind}: message_id_generated set although the client sent a messageId"
            ));
        }
        if !ev["source_id"]
            .as_str()
            .is_some_and(|s| s.starts_with("src_"))
        {
            fail(format!("{kind}: source_id is {}", ev["source_id"]));
        }
        match parse_time(&ev["received_at"]) {
            Some(t) if sane(t) => {}
            _ => fail(format!(
                "{kind}: received_at {} is not a time during the test",
                ev["received_at"]
            )),
        }
        let timestamp = parse_time(&ev["timestamp"]);
        match call.get("timestamp").and_then(parse_time) {
            // An explicit event time survives clock-skew correction (off by the latency).
            Some(want) => {
                let close = matches!(timestamp, Some(t) if (t - want).abs() < Span::seconds(30));
                if !close {
                    fail(format!(
                        "{kind}: timestamp {} is not the sent {want}",
                        ev["timestamp"]
                    ));
                }
            }
            None => {
                if !timestamp.is_some_and(sane) {
                    fail(format!(
                        "{kind}: timestamp {} is not a time during the test",
                        ev["timestamp"]
                    ));
                }
            }
        }
        // original_timestamp is the client's claim, unchanged.
        let claimed = if m["timestamp"].is_string() {
            &m["timestamp"]
        } else {
            &m["originalTimestamp"]
        };
        if claimed.is_string() && ev["original_timestamp"] != *claimed {
            fail(format!(
                "{kind}: original_timestamp {} is not the client's {claimed}",
                ev["original_timestamp"]
            ));
        }
        if parse_time(&ev["sent_at"]).is_none() {
            fail(format!(
                "{kind}: sent_at {} missing or not RFC 3339",
                ev["sent_at"]
            ));
        }
        // Server-side libraries send no context.ip: the peer address is used.
        if ev["ip"] != "127.0.0.1" {
            fail(format!(
                "{kind}: ip is {}, expected the peer 127.0.0.1",
                ev["ip"]
            ));
        }
        if kind == "page" {
            let utm = &ev["utm"];
            if utm["source"] != "newsletter"
                || utm["medium"] != "email"
                || utm["campaign"] != "spring"
            {
                fail(format!(
                    "page: utm is {utm}, expected newsletter/email/spring from properties.url"
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------------------------

#[test]
fn real_client_libraries_are_wire_compatible() {
    let required = std::env::var("SPOOR_REQUIRE_SDKS").is_ok_and(|v| v == "1");
    let mut ready = Vec::new();
    let mut missing = Vec::new();
    for lib in Library::all() {
        match lib.availability() {
            Ok(()) => ready.push(lib),
            Err(reason) => missing.push(reason),
        }
    }
    if required && !missing.is_empty() {
        panic!("SPOOR_REQUIRE_SDKS=1 but:\n  {}", missing.join("\n  "));
    }
    for reason in &missing {
        eprintln!("SKIPPED sdk tests: {reason}");
    }
    if ready.is_empty() {
        return;
    }

    let scratch = tempfile::tempdir().expect("scratch dir");
    let server = Server::start(scratch.path());
    let run_id = format!("{:x}", Utc::now().timestamp_micros());
    let start = Utc::now();

    let mut problems = Vec::new();
    let mut sent = Vec::new();
    for lib in &ready {
        match lib.run(&server.base, &run_id, scratch.path()) {
            Ok(s) => sent.push(s),
            Err(e) => problems.push(format!("{}: {e}", lib.name)),
        }
    }

    // Delivery is acknowledged once the log writer has the batch; allow for a short lag
    // before the admin API shows everything.
    let expected = sent.len() * 6;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = server.events("");
    while events.len() < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        events = server.events("");
    }
    let end = Utc::now();
    if events.len() != expected {
        problems.push(format!(
            "admin API lists {} events; the clients delivered {expected}",
            events.len()
        ));
    }
    for s in &sent {
        eprintln!("sdk: checking {} {}", s.library, s.version);
        problems.extend(check_library(s, &events, (start, end)));
    }

    // One write key, one source.
    let sources: std::collections::BTreeSet<&str> = events
        .iter()
        .filter_map(|e| e["source_id"].as_str())
        .collect();
    if sources.len() > 1 {
        problems.push(format!(
            "events of one write key carry several source_ids: {sources:?}"
        ));
    }
    // seq is increasing in ascending order.
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    if seqs.len() != events.len() || seqs.windows(2).any(|w| w[0] >= w[1]) {
        problems.push(format!(
            "seq missing or not increasing with order=asc: {seqs:?}"
        ));
    }

    // The admin filters see the same events.
    if !sent.is_empty() {
        let n = sent.len();
        let tracks = server.events("&type=track");
        if tracks.len() != n || tracks.iter().any(|e| e["type"] != "track") {
            problems.push(format!(
                "type=track returned {} events, expected {n} tracks",
                tracks.len()
            ));
        }
        let orders = server.events(&format!("&event={}", encode("Order Completed")));
        if orders.len() != n
            || orders
                .iter()
                .any(|e| e["message"]["event"] != "Order Completed")
        {
            problems.push(format!(
                "event=Order Completed returned {} events, expected {n}",
                orders.len()
            ));
        }
        if let Some(src) = sources.iter().next() {
            let by_source = server.events(&format!("&source={}", encode(src)));
            if by_source.len() != events.len() {
                problems.push(format!(
                    "source={src} returned {} events, expected {}",
                    by_source.len(),
                    events.len()
                ));
            }
        }
    }

    // Nothing the libraries sent was rejected.
    let rejections = server.admin("/v1/admin/rejections");
    let rejected = rejections
        .get("rejections")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if rejected > 0 {
        problems.push(format!("the server rejected events: {rejections}"));
    }

    if !problems.is_empty() {
        panic!(
            "{} problem(s) with the real client libraries:\n- {}",
            problems.len(),
            problems.join("\n- ")
        );
    }
    eprintln!(
        "sdk: {} libraries delivered {} events; all fields check out{}",
        sent.len(),
        events.len(),
        if missing.is_empty() {
            ""
        } else {
            " (some skipped, see above)"
        }
    );
}
