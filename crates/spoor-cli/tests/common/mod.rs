//! Shared helpers for the end-to-end tests of the `spoor` binary: a server child process on a
//! free port (killed when dropped), running the CLI with a timeout, and admin API reads.
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WRITE_KEY: &str = "wk_e2e_test_key_0123456789";
pub const ADMIN_TOKEN: &str = "adm_e2e_test_token_0123456789";

/// How long a server may take to answer `/readyz` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn spoor_bin() -> &'static str {
    env!("CARGO_BIN_EXE_spoor")
}

/// A `spoor` command with no `SPOOR_*` variable inherited from the environment of the test
/// run, so only what a test sets explicitly reaches the binary.
pub fn spoor_cmd() -> Command {
    let mut cmd = Command::new(spoor_bin());
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SPOOR_") {
            cmd.env_remove(&k);
        }
    }
    cmd.env("SPOOR_LOG_LEVEL", "warn");
    cmd
}

/// The seed of a crash test's kill schedule: `SPOOR_CRASH_SEED` when set (to replay a
/// failure), else from the clock and the process id; printed either way.
pub fn crash_seed(test: &str) -> u64 {
    let seed = std::env::var("SPOOR_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64
                ^ std::process::id() as u64
        });
    eprintln!("{test} crash test seed: {seed} (SPOOR_CRASH_SEED={seed} replays it)");
    seed
}

/// A crash test's directories: the data directory its server restarts on, and one for
/// the servers' logs (one file per start), under a temporary root; and the port it serves
/// on, start after start.
pub struct CrashDirs {
    pub root: tempfile::TempDir,
    pub data: PathBuf,
    pub logs: PathBuf,
    pub port: u16,
}

impl CrashDirs {
    pub fn new() -> CrashDirs {
        let root = tempfile::tempdir().unwrap();
        let (data, logs) = (root.path().join("data"), root.path().join("logs"));
        std::fs::create_dir_all(&logs).unwrap();
        CrashDirs {
            root,
            data,
            logs,
            port: free_port(),
        }
    }

    /// Starts (or restarts) the server on the data directory with the tests' write key and
    /// admin token, and `env`; `tag` names its log files.
    pub fn serve(&self, tag: &str, env: &[(&str, &str)]) -> Server {
        let init = Init::Given(WRITE_KEY, ADMIN_TOKEN);
        Server::start_env(&self.data, self.port, init, &self.logs, tag, env)
    }
}

/// A port that was free a moment ago (bound to 127.0.0.1:0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn http() -> reqwest::blocking::Client {
    spoor_server::tls::install_crypto_provider();
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

pub fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// Secrets a server is started with.
#[derive(Clone, Copy)]
pub enum Init<'a> {
    /// `SPOOR_INIT_WRITE_KEY` / `SPOOR_INIT_ADMIN_TOKEN`.
    Given(&'a str, &'a str),
    /// Neither: the first start generates and prints them.
    Random,
}

/// A `spoor serve` child process. Killed (SIGKILL) and reaped when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub url: String,
    pub data_dir: PathBuf,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Server {
    /// Starts `spoor serve` on `data_dir` and `port` and waits until `/readyz` answers 200.
    /// Its stdout/stderr go to `<logs>/<tag>.out|.err`. Panics (with its stderr) if it exits
    /// or does not become ready.
    pub fn start(data_dir: &Path, port: u16, init: Init, logs: &Path, tag: &str) -> Server {
        Server::start_env(data_dir, port, init, logs, tag, &[])
    }

    /// Like [`Server::start`], with extra environment variables (e.g. config overrides).
    pub fn start_env(
        data_dir: &Path,
        port: u16,
        init: Init,
        logs: &Path,
        tag: &str,
        env: &[(&str, &str)],
    ) -> Server {
        let stdout_path = logs.join(format!("{tag}.out"));
        let stderr_path = logs.join(format!("{tag}.err"));
        let mut cmd = spoor_cmd();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).unwrap())
            .stderr(File::create(&stderr_path).unwrap());
        cmd.envs(env.iter().copied());
        if let Init::Given(wk, tok) = init {
            cmd.env("SPOOR_INIT_WRITE_KEY", wk)
                .env("SPOOR_INIT_ADMIN_TOKEN", tok);
        }
        let child = cmd.spawn().expect("spawn spoor serve");
        let mut s = Server {
            child: Some(child),
            port,
            url: format!("http://127.0.0.1:{port}"),
            data_dir: data_dir.to_path_buf(),
            stdout_path,
            stderr_path,
        };
        s.wait_ready();
        s
    }

    /// A fresh data directory inside `root` and a free port, with the test secrets.
    pub fn start_fresh(root: &Path) -> Server {
        let data = root.join("data");
        let logs = root.join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        Server::start(
            &data,
            free_port(),
            Init::Given(WRITE_KEY, ADMIN_TOKEN),
            &logs,
            "serve",
        )
    }

    fn wait_ready(&mut self) {
        spoor_server::tls::install_crypto_provider();
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "spoor serve exited with {status} before it was ready\nstdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if let Ok(r) = client.get(format!("{}/readyz", self.url)).send() {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "spoor serve not ready after {READY_TIMEOUT:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// SIGKILL (`Child::kill` is SIGKILL on unix) and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn admin_get(&self, path_and_query: &str) -> (u16, Value) {
        admin_get(&self.url, ADMIN_TOKEN, path_and_query)
    }

    /// The processor's status once it has applied `seq`, or after 120 s (the caller
    /// asserts). Waits in steps of 10 s: one request may not outlast the client's 20 s
    /// timeout, and a restarted processor replaying its backlog on a loaded machine can
    /// take longer than that.
    pub fn wait_processed(&self, seq: u64) -> Value {
        let mut st = Value::Null;
        for _ in 0..12 {
            st = self
                .admin_get(&format!(
                    "/v1/admin/processor?wait_for={seq}&timeout_ms=10000"
                ))
                .1;
            if st["processed_seq"].as_u64() >= Some(seq) {
                break;
            }
        }
        st
    }

    /// An admin GET that must answer 200: its JSON.
    pub fn admin_get_ok(&self, path_and_query: &str) -> Value {
        let (s, v) = self.admin_get(path_and_query);
        assert_eq!(s, 200, "GET {path_and_query}: {v}");
        v
    }

    /// Waits until everything ingested so far is processed; returns that seq.
    pub fn wait_ingested_processed(&self) -> u64 {
        let last = self.admin_get_ok("/v1/admin/processor")["ingested_seq"]
            .as_u64()
            .unwrap();
        let st = self.wait_processed(last);
        assert_eq!(
            st["processed_seq"].as_u64(),
            Some(last),
            "not processed: {st}"
        );
        assert_eq!(st["healthy"], true, "{st}");
        last
    }

    /// Every member id of `audience`, through the paged members API.
    pub fn audience_members(&self, audience: &str) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let q = match &cursor {
                Some(c) => format!("/v1/audiences/{audience}/members?limit=1000&cursor={c}"),
                None => format!("/v1/audiences/{audience}/members?limit=1000"),
            };
            let v = self.admin_get_ok(&q);
            for m in v["members"].as_array().unwrap() {
                out.insert(m["id"].as_str().unwrap().to_owned());
            }
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return out,
            }
        }
        panic!("members of {audience}: the cursor never ends");
    }

    /// Every stored event (the full envelope with `seq`), oldest first, via the NDJSON export.
    pub fn export(&self) -> Vec<Value> {
        export(&self.url, ADMIN_TOKEN)
    }

    /// Creates an audience through the admin API (its backfill starts; see
    /// [`Server::wait_backfilled`]).
    pub fn create_audience(&self, name: &str, rule: &str) {
        let (s, v) = admin(
            self,
            reqwest::Method::POST,
            "/v1/audiences",
            Some(serde_json::json!({"name": name, "rule": rule})),
        );
        assert_eq!(s, 201, "create audience {name}: {v}");
    }

    /// Waits (at most `within`) until `audiences` audiences exist and none reports a
    /// backfill in progress.
    pub fn wait_backfilled(&self, audiences: usize, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let v = self.admin_get_ok("/v1/audiences");
            let list = v["audiences"].as_array().unwrap();
            if list.len() == audiences && list.iter().all(|a| a["backfill"].is_null()) {
                return;
            }
            assert!(Instant::now() < deadline, "backfill never finished: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// POSTs a JSON body with the test write key; returns status and JSON answer.
    pub fn post(&self, path: &str, body: &Value, key: &str) -> (u16, Value) {
        let r = http()
            .post(format!("{}{path}", self.url))
            .header("authorization", basic(key))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn admin_get(url: &str, token: &str, path_and_query: &str) -> (u16, Value) {
    let r = http()
        .get(format!("{url}{path_and_query}"))
        .bearer_auth(token)
        .send()
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

pub fn export(url: &str, token: &str) -> Vec<Value> {
    let r = http()
        .get(format!("{url}/v1/admin/events/export"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad export line {l}: {e}")))
        .collect()
}

/// What a finished CLI run printed.
#[derive(Debug)]
pub struct Out {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics with everything printed unless the exit code is 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.ok(), "expected success, got {self}");
        self
    }

    pub fn assert_failed(&self) -> &Self {
        assert!(
            self.code.is_some() && !self.ok(),
            "expected failure, got {self}"
        );
        self
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs a prepared command to completion with a time limit (killed past it), capturing output.
pub fn run(mut cmd: Command, timeout: Duration) -> Out {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn spoor");
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Out {
        code: status.and_then(|s| s.code()),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
    };
    assert!(
        status.is_some(),
        "spoor did not finish in {timeout:?}: {out}"
    );
    out
}

/// `spoor ARGS…` with `SPOOR_URL`/`SPOOR_TOKEN` set for `server` (token may be `None`).
pub fn spoor_admin(server: &Server, token: Option<&str>, args: &[&str]) -> Out {
    let mut cmd = spoor_cmd();
    cmd.args(args).env("SPOOR_URL", &server.url);
    if let Some(t) = token {
        cmd.env("SPOOR_TOKEN", t);
    }
    run(cmd, Duration::from_secs(30))
}

/// splitmix64: small, seedable, good enough to pick sizes and delays; a printed seed replays
/// a crash test's schedule.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// True with probability `pct`/100.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.next() % 100 < pct
    }
}

/// An admin-token API call: `(status, JSON body or null)`.
pub fn admin(
    server: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http()
        .request(method, format!("{}{path}", server.url))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().unwrap();
    let s = r.status().as_u16();
    (s, r.json().unwrap_or(Value::Null))
}

/// Sends a batch until it is acknowledged (the server may be restarting), 30 s at most.
pub fn send_until_acked(server: &Server, batch: &Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http()
            .post(format!("{}/v1/batch", server.url))
            .header("authorization", basic(WRITE_KEY))
            .header("content-type", "application/json")
            .body(batch.to_string())
            .send();
        if r.is_ok_and(|r| r.status().as_u16() == 200) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a batch was not acknowledged in 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[path = "../../../spoor-server/tests/support/drop_schema.rs"]
pub mod drop_schema;
