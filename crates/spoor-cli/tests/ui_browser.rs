//! The web UI in a real browser: starts `spoor demo` on a free port and runs
//! `tests/ui/e2e.mjs` (Debian's chromium driven by playwright-core): log in, find a profile
//! by e-mail, see its merged history, create an audience watching the preview size, see it
//! in the list, see a just-sent event in the debugger, create a viewer on the Users page,
//! and that viewer refused an admin action.
//! Screenshots of the main pages go to `<target>/ui-screenshots` (the path is printed).
//!
//! Needs `/usr/bin/chromium` (or `SPOOR_CHROMIUM`), Node (`SPOOR_NODE`, default `node`) and
//! `npm ci --prefix tests/ui`; `.ci/run` installs them. Without them the test prints
//! `SKIPPED ui browser test: <reason>` and passes, except under `CI`, where it fails.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const PASSWORD: &str = "ui-e2e-admin-password";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Why the test cannot run here, if it cannot.
fn missing(chromium: &str, node: &str, ui: &Path) -> Option<String> {
    if !Path::new(chromium).exists() {
        return Some(format!(
            "no browser at {chromium} (apt-get install chromium)"
        ));
    }
    if !ui
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Some(format!(
            "{} has no playwright-core (npm ci --prefix tests/ui)",
            ui.display()
        ));
    }
    match Command::new(node).arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some(format!("no Node.js ({node})")),
    }
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_web_ui_works_in_a_real_browser() {
    let chromium = env_or("SPOOR_CHROMIUM", "/usr/bin/chromium");
    let node = env_or("SPOOR_NODE", "node");
    let ui = repo_root().join("tests/ui");
    if let Some(reason) = missing(&chromium, &node, &ui) {
        if std::env::var_os("CI").is_some() {
            panic!("ui browser test cannot run under CI: {reason}");
        }
        eprintln!("SKIPPED ui browser test: {reason}");
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_spoor"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--people",
            "200",
            "--no-live",
        ])
        .arg("--data-dir")
        .arg(data.path().join("demo"))
        .env("SPOOR_INIT_ADMIN_PASSWORD", PASSWORD)
        .env("SPOOR_LOG_LEVEL", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spoor demo starts");
    let stdout = child.stdout.take().unwrap();
    let _guard = Kill(child);
    // The demo prints its address and secrets, then a line when the shop is filled.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let (mut url, mut key, mut token) = (None, None, None);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .expect("spoor demo fills the shop within 3 minutes");
        let last = line.split_whitespace().last().unwrap_or("").to_owned();
        if line.starts_with("Spoor demo on ") {
            url = line
                .split_whitespace()
                .nth(3)
                .map(|u| u.trim_end_matches("/ui/").to_owned());
        } else if line.contains("write key:") {
            key = Some(last);
        } else if line.contains("admin token:") {
            token = Some(last);
        } else if line.contains("the UI is ready") {
            break;
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let shots = target.join("ui-screenshots");
    let status = Command::new(&node)
        .arg(ui.join("e2e.mjs"))
        .current_dir(&ui)
        .env("SPOOR_URL", url.expect("the demo's address"))
        .env("SPOOR_WRITE_KEY", key.expect("the demo's write key"))
        .env("SPOOR_TOKEN", token.expect("the demo's admin token"))
        .env("SPOOR_PASSWORD", PASSWORD)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .status()
        .expect("node runs");
    eprintln!("ui screenshots: {}", shots.display());
    assert!(
        status.success(),
        "tests/ui/e2e.mjs failed ({status}); see its output above"
    );
}
