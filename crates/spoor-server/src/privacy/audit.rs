//! The audit log: who (admin token id) did what (method and route), to what (the route's
//! parameters), when, and with what result — for every admin action, every profile read,
//! every export (access exports and audience files) and every erasure made through the API.
//!
//! Recorded by a middleware on the whole router ([`crate::api::router`]), so a new route is
//! audited without a line of its own: every request that carries an admin token (`Bearer`)
//! and either changes something (any method but GET/HEAD) or reads personal data (routes
//! under `/v1/profiles`, exports, `/v1/privacy`). Ingest (write keys), health and metrics
//! are not admin actions and are not recorded.
//!
//! Stored append-only as NDJSON in `audit/audit.ndjson` of the data directory: one line per
//! record, written before the response leaves (so a completed request is in the OS), and
//! fdatasynced at once for changes, within [`SYNC_EVERY`] for reads (an fsync per profile
//! read would cap reads at the disk's sync rate).
//!
//! **Personal data in the audit log**: a target given as `type:value` (`email:ann@x.com`) is
//! recorded as `type:sha256:<hex>` of the value, so the log proves an access without
//! holding the identifier — an erased person leaves no readable trace here.

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Reads are made durable at most this long after they were recorded.
pub const SYNC_EVERY: Duration = Duration::from_secs(1);

/// One audited request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub at: chrono::DateTime<chrono::Utc>,
    /// The admin token id (`tok_…`), or null when the token was not valid.
    pub who: Option<String>,
    pub method: String,
    /// The route template, e.g. `/v1/profiles/{pref}/consent`.
    pub route: String,
    /// The route's parameters (identifier values pseudonymised, see the module docs).
    pub target: Vec<String>,
    /// `read`, `change` or `export`.
    pub action: String,
    pub status: u16,
}

#[derive(Debug, thiserror::Error)]
#[error("audit log: {0}")]
pub struct AuditError(String);

struct Writer {
    file: File,
    /// Records appended so far (by this process).
    written: u64,
}

/// The syncing side: its own handle on the file, so an fdatasync never holds the lock
/// appenders take.
struct Syncer {
    file: File,
    /// Records known durable (`written` as it was when the last fdatasync began).
    synced: u64,
    last_sync: Instant,
}

/// The append-only audit file.
///
/// Appends and syncs take different locks. Every profile read appends a record on a
/// runtime worker, so an fdatasync made under the appenders' lock (as before) stalled every
/// lookup and ingest request of the server behind one slow disk sync (tens of ms while the
/// event log and a checkpoint also sync) once a second.
pub struct AuditLog {
    path: PathBuf,
    w: Mutex<Writer>,
    sync: Mutex<Syncer>,
}

impl AuditLog {
    pub fn open(dir: &Path) -> Result<Self, AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError(format!("{}: {e}", dir.display())))?;
        let path = dir.join("audit.ndjson");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        let for_sync = file
            .try_clone()
            .map_err(|e| AuditError(format!("{}: {e}", path.display())))?;
        Ok(Self {
            path,
            w: Mutex::new(Writer { file, written: 0 }),
            sync: Mutex::new(Syncer {
                file: for_sync,
                synced: 0,
                last_sync: Instant::now(),
            }),
        })
    }

    /// Appends one record; `durable` syncs it to disk before returning. A read (not
    /// durable) is synced by [`Self::sync`] (the server calls it every half
    /// [`SYNC_EVERY`] off the runtime), or here when no sync has run for [`SYNC_EVERY`] —
    /// then only if no one else is syncing (they cover this record or sync again soon).
    pub fn append(&self, r: &AuditRecord, durable: bool) -> Result<(), AuditError> {
        let mut line = serde_json::to_vec(r).map_err(|e| AuditError(e.to_string()))?;
        line.push(b'\n');
        let n = {
            let mut w = self.w.lock();
            w.file
                .write_all(&line)
                .map_err(|e| AuditError(e.to_string()))?;
            w.written += 1;
            w.written
        };
        if durable {
            return self.sync_upto(n, self.sync.lock());
        }
        match self.sync.try_lock() {
            Some(s) if s.last_sync.elapsed() >= SYNC_EVERY => self.sync_upto(n, s),
            _ => Ok(()),
        }
    }

    /// Syncs what was appended since the last sync (called on shutdown and by a timer).
    pub fn sync(&self) -> Result<(), AuditError> {
        let n = self.w.lock().written;
        self.sync_upto(n, self.sync.lock())
    }

    /// Makes at least the first `n` records durable: one fdatasync covers everything
    /// written before it begins, so `synced` moves to what was written then.
    fn sync_upto(
        &self,
        n: u64,
        mut s: parking_lot::MutexGuard<'_, Syncer>,
    ) -> Result<(), AuditError> {
        if s.synced >= n {
            return Ok(());
        }
        let upto = self.w.lock().written;
        s.file.sync_data().map_err(|e| AuditError(e.to_string()))?;
        s.synced = upto;
        s.last_sync = Instant::now();
        Ok(())
    }

    /// The newest `limit` records (oldest first), read from the end of the file so the cost
    /// does not grow with the log: a record is a short line, so `limit` × 1 KiB from the end
    /// holds them (fewer come back only if records are unusually long).
    pub fn tail(&self, limit: usize) -> Result<Vec<AuditRecord>, AuditError> {
        let len = std::fs::metadata(&self.path)
            .map_err(|e| AuditError(e.to_string()))?
            .len();
        let start = len.saturating_sub(limit as u64 * 1024);
        let mut f = File::open(&self.path).map_err(|e| AuditError(e.to_string()))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| AuditError(e.to_string()))?;
        let mut rd = BufReader::new(f);
        let mut line = String::new();
        if start > 0 {
            // Skip the partial line the window starts in.
            rd.read_line(&mut line)
                .map_err(|e| AuditError(e.to_string()))?;
        }
        let mut out = std::collections::VecDeque::with_capacity(limit + 1);
        loop {
            line.clear();
            let n = rd
                .read_line(&mut line)
                .map_err(|e| AuditError(e.to_string()))?;
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            if let Ok(r) = serde_json::from_str(line.trim_end()) {
                out.push_back(r);
                if out.len() > limit {
                    out.pop_front();
                }
            }
        }
        Ok(out.into())
    }

    /// Up to `limit` records from byte offset `cursor` (oldest first), and the cursor of
    /// the next page when there is more. A torn last line (a crash mid-write) is skipped.
    pub fn read(
        &self,
        cursor: u64,
        limit: usize,
    ) -> Result<(Vec<AuditRecord>, Option<u64>), AuditError> {
        let mut f = File::open(&self.path).map_err(|e| AuditError(e.to_string()))?;
        let len = f.metadata().map_err(|e| AuditError(e.to_string()))?.len();
        if cursor > len {
            return Err(AuditError(format!(
                "cursor {cursor} is past the end of the audit log"
            )));
        }
        f.seek(SeekFrom::Start(cursor))
            .map_err(|e| AuditError(e.to_string()))?;
        let mut rd = BufReader::new(f);
        let mut out = Vec::new();
        let mut pos = cursor;
        let mut line = String::new();
        while out.len() < limit {
            line.clear();
            let n = rd
                .read_line(&mut line)
                .map_err(|e| AuditError(e.to_string()))?;
            if n == 0 || !line.ends_with('\n') {
                return Ok((out, None));
            }
            pos += n as u64;
            if let Ok(r) = serde_json::from_str(line.trim_end()) {
                out.push(r);
            }
        }
        let more = pos < len;
        Ok((out, more.then_some(pos)))
    }
}

/// What kind of audited request this is, or `None` when it is not audited.
pub fn classify(method: &str, route: &str) -> Option<&'static str> {
    // The web UI's pages and forms are audited like the API they call (`ui:<user>`).
    if route == "/ui/login" || route == "/ui/logout" || route.starts_with("/ui/assets") {
        return None;
    }
    let reads_personal = route.starts_with("/v1/profiles")
        || route.starts_with("/v1/privacy")
        || route.starts_with("/ui/profiles")
        || route.starts_with("/ui/privacy");
    if route.starts_with("/ui") && !reads_personal && matches!(method, "GET" | "HEAD") {
        return None;
    }
    let export = route.ends_with("/export") || route.ends_with("/privacy-export");
    // POSTs that only evaluate (a preview returns sample profiles, a count a number) read,
    // not change.
    let evaluates = route.ends_with("/preview")
        || route.ends_with("/validate")
        || route == "/ui/audiences/count";
    match method {
        "POST" if evaluates => Some("read"),
        "GET" | "HEAD" if export => Some("export"),
        "GET" | "HEAD" if reads_personal => Some("read"),
        "GET" | "HEAD" | "OPTIONS" => None,
        _ => Some("change"),
    }
}

/// A route parameter as recorded: `type:value` identifiers pseudonymised.
pub fn pseudonymise(param: &str) -> String {
    match param.split_once(':') {
        Some((kind, value)) if !param.starts_with("prof_") => {
            let h = hex::encode(Sha256::digest(value.as_bytes()));
            format!("{kind}:sha256:{}", &h[..32])
        }
        _ => param.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u16) -> AuditRecord {
        AuditRecord {
            at: chrono::Utc::now(),
            who: Some("tok_x".into()),
            method: "GET".into(),
            route: "/v1/profiles/{pref}".into(),
            target: vec![pseudonymise("email:ann@example.com")],
            action: "read".into(),
            status: i,
        }
    }

    #[test]
    fn appends_pages_and_survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        for i in 0..5 {
            log.append(&rec(200 + i), i % 2 == 0).unwrap();
        }
        log.sync().unwrap();
        let (a, next) = log.read(0, 3).unwrap();
        assert_eq!(
            a.iter().map(|r| r.status).collect::<Vec<_>>(),
            [200, 201, 202]
        );
        let (b, end) = log.read(next.unwrap(), 3).unwrap();
        assert_eq!(b.iter().map(|r| r.status).collect::<Vec<_>>(), [203, 204]);
        assert_eq!(end, None);
        drop(log);
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("audit.ndjson"))
            .unwrap()
            .write_all(b"{\"at\":")
            .unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        assert_eq!(log.read(0, 100).unwrap().0.len(), 5);
        let text = std::fs::read_to_string(dir.path().join("audit.ndjson")).unwrap();
        assert!(!text.contains("ann@example.com"));
        assert!(text.contains("email:sha256:"));
        assert!(log.read(1 << 40, 1).is_err());
    }

    #[test]
    fn a_read_never_waits_for_a_sync_in_progress_and_a_change_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        {
            // A sync in progress (the timer's) holds the syncing side; a read that finds
            // the last sync overdue appends without waiting for it (on this thread, waiting
            // would never end) and leaves the sync to whoever holds it.
            let mut s = log.sync.lock();
            s.last_sync = Instant::now() - SYNC_EVERY * 2;
            log.append(&rec(200), false).unwrap();
            log.append(&rec(201), false).unwrap();
            assert_eq!(s.synced, 0);
        }
        assert_eq!(log.w.lock().written, 2);
        // Overdue and free: the read syncs everything written so far.
        log.append(&rec(202), false).unwrap();
        assert_eq!(log.sync.lock().synced, 3);
        // Not overdue: a read is left to the timer, a change is synced before returning.
        log.append(&rec(203), false).unwrap();
        assert_eq!(log.sync.lock().synced, 3);
        log.append(&rec(204), true).unwrap();
        assert_eq!(log.sync.lock().synced, 5);
        log.sync().unwrap();
        assert_eq!(log.read(0, 10).unwrap().0.len(), 5);
    }

    #[test]
    fn tail_gives_the_newest_records_in_order_past_a_partial_window() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        // More than the window of 2 records (2 KiB) holds, so the window starts mid-line.
        for i in 0..60 {
            log.append(&rec(200 + i), false).unwrap();
        }
        log.sync().unwrap();
        let t = log.tail(2).unwrap();
        assert_eq!(t.iter().map(|r| r.status).collect::<Vec<_>>(), [258, 259]);
        let all = log.tail(1000).unwrap();
        assert_eq!(all.len(), 60);
        assert_eq!(all[0].status, 200);
        assert!(AuditLog::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .tail(5)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn what_is_audited() {
        assert_eq!(classify("GET", "/v1/profiles/{pref}"), Some("read"));
        assert_eq!(classify("GET", "/ui/profiles/{pref}"), Some("read"));
        assert_eq!(classify("GET", "/ui/privacy/export"), Some("export"));
        assert_eq!(classify("POST", "/ui/privacy/erase"), Some("change"));
        assert_eq!(
            classify("POST", "/ui/profiles/{pref}/split"),
            Some("change")
        );
        assert_eq!(classify("POST", "/ui/audiences/preview"), Some("read"));
        assert_eq!(classify("POST", "/ui/audiences/count"), Some("read"));
        assert_eq!(classify("GET", "/ui/audiences/count/{id}"), None);
        assert_eq!(classify("POST", "/ui/users/{name}/role"), Some("change"));
        assert_eq!(classify("GET", "/ui/users"), None);
        assert_eq!(classify("GET", "/ui/audiences"), None);
        assert_eq!(classify("POST", "/ui/login"), None);
        assert_eq!(
            classify("GET", "/v1/profiles/{pref}/privacy-export"),
            Some("export")
        );
        assert_eq!(
            classify("GET", "/v1/audiences/{name}/export"),
            Some("export")
        );
        assert_eq!(
            classify("PUT", "/v1/profiles/{pref}/consent"),
            Some("change")
        );
        assert_eq!(
            classify("DELETE", "/v1/destinations/{name}"),
            Some("change")
        );
        assert_eq!(classify("GET", "/v1/destinations"), None);
        assert_eq!(classify("POST", "/v1/audiences/preview"), Some("read"));
        assert_eq!(pseudonymise("prof_12"), "prof_12");
    }
}
