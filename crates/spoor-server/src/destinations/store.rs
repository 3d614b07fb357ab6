//! The delivery store: destination definitions and everything about their delivery — each
//! destination's cursors into the two durable sources (event log seq, membership change
//! number), counters, retry/pause state, dead letters, replays and the per-profile delivery
//! log. One redb file, `destinations/destinations.redb`, apart from the processor's state so
//! delivery never contends with checkpoints and can be reset without touching profiles.
//!
//! A worker commits its cursor together with the outcome of what it delivered (counters,
//! dead letters, log rows) in one transaction: after a crash it resumes exactly after the
//! last committed batch, and re-sends at most that one batch, with the same idempotency key.

use super::model::Destination;
use chrono::{DateTime, Utc};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;
use std::path::Path;

const DESTS: TableDefinition<&str, &[u8]> = TableDefinition::new("destinations");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("delivery_state");
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
const REPLAY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("replays");
/// (profile key, row number) → [`LogRow`]; profile key is a profile id (`prf_…`) or, for an
/// event whose sender had no profile yet, `user_id:…` / `anonymous_id:…`.
pub(super) const PLOG: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("profile_log");
/// (time in ms, row number) → profile key of every [`PLOG`] row: what ages out first, for
/// pruning without reading the log (see `log_prune.rs`).
pub(super) const PLOG_AT: TableDefinition<(i64, u64), &str> =
    TableDefinition::new("profile_log_at");
/// Row numbers of the profile log, shared by all destinations (`"profile_log"` → last used).
pub(super) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

#[derive(Debug, thiserror::Error)]
#[error("delivery store: {0}")]
pub struct DeliveryStoreError(pub String);

fn err(e: impl std::fmt::Display) -> DeliveryStoreError {
    DeliveryStoreError(e.to_string())
}

type R<T> = Result<T, DeliveryStoreError>;

impl From<DeliveryStoreError> for crate::error::ApiError {
    fn from(e: DeliveryStoreError) -> Self {
        Self::Internal(e.0)
    }
}

/// A destination's delivery position and health, written only by its worker (or by the
/// API while the worker is stopped).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeliveryState {
    /// Last event log seq handled (delivered, dead-lettered or not subscribed).
    pub event_cursor: u64,
    /// Last membership change number handled.
    pub change_cursor: u64,
    /// Items delivered (2xx).
    pub delivered: u64,
    /// Items sent to the dead letters.
    pub dead: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Requests sent (a batch is one).
    pub requests: u64,
    /// Set while the delivery at the head of the queue is being retried.
    pub retrying: Option<Retrying>,
    /// Since when deliveries have failed without a success in between (ms).
    pub failing_since_ms: Option<i64>,
    /// Why Spoor paused the destination (failing beyond the grace period); `None`: running.
    pub paused: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
    /// Request latency (send → response), ms.
    pub latency_last_ms: u64,
    pub latency_max_ms: u64,
    pub latency_sum_ms: u64,
    /// Successful requests (what `latency_sum_ms` is summed over).
    pub successes: u64,
    /// Delay from the source (event received, membership change) to delivery, ms.
    pub delay_last_ms: u64,
    /// Last dead-letter id used.
    pub last_dead_id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retrying {
    pub key: String,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
}

/// A delivery that failed for good, with what it would have sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: u64,
    /// The delivery's idempotency key (the `webhook-id` it was sent with).
    pub key: String,
    /// The items (before mapping), so a replay maps them with the current mapping.
    pub items: Vec<Value>,
    /// Profile keys of the items, for the delivery log of a replay.
    #[serde(default)]
    pub profiles: Vec<String>,
    pub error: String,
    pub status: Option<u16>,
    pub attempts: u32,
    pub at: DateTime<Utc>,
}

/// One row of a profile's delivery log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    pub at: DateTime<Utc>,
    pub destination: String,
    pub key: String,
    /// `event` or `audience`.
    pub kind: String,
    /// What it was: the event name/type, or `entered audience x`.
    pub what: String,
    /// `delivered`, `dead_letter` or `replayed`.
    pub outcome: String,
    pub status: Option<u16>,
    pub attempts: u32,
}

/// The outcome of a batch, committed with the cursor that covers it.
#[derive(Debug, Default)]
pub struct Commit {
    /// fsync this commit (otherwise it is made durable by the next durable one, at most
    /// [`DURABLE_EVERY`] later).
    pub durable: bool,
    pub dead: Vec<DeadLetter>,
    pub log: Vec<(String, LogRow)>,
    /// Replays finished (removed from the replay queue).
    pub replays_done: Vec<u64>,
}

/// Routine commits (a position moved after a delivery) are fsynced at most this often. A
/// crash may undo the ones since the last fsync; the worker then re-sends those items with
/// the same idempotency keys — a receiver sees more repeats, never a gap — while an fsync
/// per request would cap a destination at a few hundred requests a second. Dead letters,
/// pauses and API changes are always fsynced.
pub const DURABLE_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

pub struct DeliveryStore {
    pub(super) db: Database,
    last_durable: parking_lot::Mutex<std::time::Instant>,
}

fn enc<T: Serialize>(v: &T) -> R<Vec<u8>> {
    serde_json::to_vec(v).map_err(err)
}

fn dec<T: DeserializeOwned>(b: &[u8]) -> R<T> {
    serde_json::from_slice(b).map_err(|e| DeliveryStoreError(format!("unreadable record: {e}")))
}

impl DeliveryStore {
    /// Rewrites `dir/destinations.redb` into a fresh file (no stale pages; see
    /// `spoor_store::rewrite`). The store must not be open.
    pub fn rewrite(dir: &Path) -> Result<Option<(u64, u64)>, spoor_store::StoreError> {
        spoor_store::rewrite::rewrite_redb(&dir.join("destinations.redb"), |r, w| {
            use spoor_store::rewrite::copy_table;
            copy_table(r, w, DESTS)?;
            copy_table(r, w, STATE)?;
            copy_table(r, w, DEAD)?;
            copy_table(r, w, REPLAY)?;
            copy_table(r, w, PLOG)?;
            copy_table(r, w, PLOG_AT)?;
            copy_table(r, w, COUNTERS)?;
            Ok(())
        })
    }

    pub fn open(dir: &Path) -> R<Self> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("{}: {e}", dir.display())))?;
        let db = Database::create(dir.join("destinations.redb")).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(DESTS).map_err(err)?;
            tx.open_table(STATE).map_err(err)?;
            tx.open_table(DEAD).map_err(err)?;
            tx.open_table(REPLAY).map_err(err)?;
            tx.open_table(PLOG).map_err(err)?;
            tx.open_table(PLOG_AT).map_err(err)?;
            tx.open_table(COUNTERS).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        let s = Self {
            db,
            last_durable: parking_lot::Mutex::new(std::time::Instant::now()),
        };
        s.index_profile_log()?;
        Ok(s)
    }

    pub fn destinations(&self) -> R<Vec<Destination>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(DESTS).map_err(err)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(dec(v.value())?);
        }
        Ok(out)
    }

    pub fn destination(&self, name: &str) -> R<Option<Destination>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(DESTS).map_err(err)?;
        let v = t.get(name).map_err(err)?;
        v.map(|v| dec(v.value())).transpose()
    }

    pub fn state(&self, name: &str) -> R<DeliveryState> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(STATE).map_err(err)?;
        let v = t.get(name).map_err(err)?;
        Ok(v.map(|v| dec(v.value())).transpose()?.unwrap_or_default())
    }

    /// Saves a definition; with `state`, also (re)sets its delivery state (creation).
    pub fn put(&self, d: &Destination, state: Option<&DeliveryState>) -> R<()> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            tx.open_table(DESTS)
                .map_err(err)?
                .insert(d.name.as_str(), enc(d)?.as_slice())
                .map_err(err)?;
            if let Some(s) = state {
                tx.open_table(STATE)
                    .map_err(err)?
                    .insert(d.name.as_str(), enc(s)?.as_slice())
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)
    }

    /// Removes a destination with its state, dead letters and replays (the per-profile log
    /// keeps its rows: they record what was sent).
    pub fn delete(&self, name: &str) -> R<bool> {
        let tx = self.db.begin_write().map_err(err)?;
        let existed;
        {
            existed = tx
                .open_table(DESTS)
                .map_err(err)?
                .remove(name)
                .map_err(err)?
                .is_some();
            tx.open_table(STATE)
                .map_err(err)?
                .remove(name)
                .map_err(err)?;
            for table in [DEAD, REPLAY] {
                let mut t = tx.open_table(table).map_err(err)?;
                t.retain_in((name, 0)..=(name, u64::MAX), |_, _| false)
                    .map_err(err)?;
            }
        }
        tx.commit().map_err(err)?;
        Ok(existed)
    }

    /// Writes the worker's state with the outcome of a batch, atomically.
    pub fn commit(&self, name: &str, state: &mut DeliveryState, c: Commit) -> R<()> {
        let mut tx = self.db.begin_write().map_err(err)?;
        let durable = {
            let mut last = self.last_durable.lock();
            let due = c.durable
                || !c.dead.is_empty()
                || state.paused.is_some()
                || last.elapsed() >= DURABLE_EVERY;
            if due {
                *last = std::time::Instant::now();
            }
            due
        };
        if !durable {
            tx.set_durability(redb::Durability::None).map_err(err)?;
        }
        {
            let mut dead = tx.open_table(DEAD).map_err(err)?;
            for d in &c.dead {
                dead.insert((name, d.id), enc(d)?.as_slice()).map_err(err)?;
            }
            let mut replay = tx.open_table(REPLAY).map_err(err)?;
            for id in &c.replays_done {
                replay.remove((name, *id)).map_err(err)?;
            }
            if !c.log.is_empty() {
                let mut counters = tx.open_table(COUNTERS).map_err(err)?;
                let mut next = counters
                    .get("profile_log")
                    .map_err(err)?
                    .map_or(0, |v| v.value());
                let mut plog = tx.open_table(PLOG).map_err(err)?;
                let mut plog_at = tx.open_table(PLOG_AT).map_err(err)?;
                for (profile, row) in &c.log {
                    next += 1;
                    plog.insert((profile.as_str(), next), enc(row)?.as_slice())
                        .map_err(err)?;
                    plog_at
                        .insert((row.at.timestamp_millis(), next), profile.as_str())
                        .map_err(err)?;
                }
                counters.insert("profile_log", next).map_err(err)?;
            }
            tx.open_table(STATE)
                .map_err(err)?
                .insert(name, enc(state)?.as_slice())
                .map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Makes every earlier commit durable (a worker calls it when it stops).
    pub fn flush(&self) -> R<()> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.commit().map_err(err)?;
        *self.last_durable.lock() = std::time::Instant::now();
        Ok(())
    }

    fn rows<T: DeserializeOwned>(
        &self,
        table: TableDefinition<(&str, u64), &[u8]>,
        name: &str,
        after: u64,
        limit: usize,
    ) -> R<Vec<T>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(table).map_err(err)?;
        let mut out = Vec::new();
        let Some(from) = after.checked_add(1) else {
            return Ok(out);
        };
        for row in t.range((name, from)..=(name, u64::MAX)).map_err(err)? {
            let (_, v) = row.map_err(err)?;
            out.push(dec(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Dead letters with an id greater than `after`, oldest first.
    pub fn dead_letters(&self, name: &str, after: u64, limit: usize) -> R<Vec<DeadLetter>> {
        self.rows(DEAD, name, after, limit)
    }

    /// Replays waiting to be sent, oldest first.
    pub fn replays(&self, name: &str, limit: usize) -> R<Vec<DeadLetter>> {
        self.rows(REPLAY, name, 0, limit)
    }

    /// Moves dead letters (all, or those in `ids`) to the replay queue; how many moved.
    pub fn replay(&self, name: &str, ids: Option<&[u64]>) -> R<usize> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut moved = 0;
        {
            let mut dead = tx.open_table(DEAD).map_err(err)?;
            let mut replay = tx.open_table(REPLAY).map_err(err)?;
            let mut taken = Vec::new();
            for row in dead.range((name, 0)..=(name, u64::MAX)).map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let id = k.value().1;
                if ids.is_none_or(|ids| ids.contains(&id)) {
                    taken.push((id, v.value().to_vec()));
                }
            }
            for (id, v) in taken {
                dead.remove((name, id)).map_err(err)?;
                replay.insert((name, id), v.as_slice()).map_err(err)?;
                moved += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(moved)
    }

    /// Right to erasure: deletes the delivery log rows filed under any of `keys` (profile
    /// ids, `user_id:…`, `anonymous_id:…`) and every dead letter and replay whose profiles
    /// include one of `keys` or whose stored items mention one of `needles` (lowercase
    /// values of the person's identifiers). Returns how many rows went.
    ///
    /// Every destination the log shows delivered something about the person gets a
    /// **deletion notice** in its replay queue, in the same transaction (so a crash cannot
    /// lose it once the rows that proved the delivery are gone): one item per erased profile
    /// id, `{"id", "kind": "erasure", "destination", "profile_id", "action": "erased"}`,
    /// carrying nothing else about the person. Webhooks receive it, NATS publishes it on
    /// `<prefix>.profiles.erased`, a PostgreSQL sync deletes the profile's rows.
    pub fn erase_person(&self, keys: &[String], needles: &[String]) -> R<usize> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut gone = 0;
        {
            let mut plog = tx.open_table(PLOG).map_err(err)?;
            let mut plog_at = tx.open_table(PLOG_AT).map_err(err)?;
            let mut told: std::collections::BTreeSet<String> = Default::default();
            for k in keys {
                // The time index names the profile key (a `user_id:…` is personal data):
                // its rows go with the log's.
                let mut index_rows = Vec::new();
                for row in plog
                    .extract_from_if((k.as_str(), 0)..=(k.as_str(), u64::MAX), |_, _| true)
                    .map_err(err)?
                {
                    let (key, v) = row.map_err(err)?;
                    if let Ok(r) = serde_json::from_slice::<LogRow>(v.value()) {
                        index_rows.push((r.at.timestamp_millis(), key.value().1));
                        if r.outcome != "dead_letter" && r.kind != "erasure" {
                            told.insert(r.destination);
                        }
                    }
                    gone += 1;
                }
                for at in index_rows {
                    plog_at.remove(at).map_err(err)?;
                }
            }
            for table in [DEAD, REPLAY] {
                let mut t = tx.open_table(table).map_err(err)?;
                let mut hit: Vec<(String, u64)> = Vec::new();
                for row in t.iter().map_err(err)? {
                    let (k, v) = row.map_err(err)?;
                    let text = String::from_utf8_lossy(v.value()).to_lowercase();
                    let d: Option<DeadLetter> = serde_json::from_slice(v.value()).ok();
                    let by_key = d.is_some_and(|d| d.profiles.iter().any(|p| keys.contains(p)));
                    if by_key || needles.iter().any(|n| !n.is_empty() && text.contains(n)) {
                        let (name, id) = k.value();
                        hit.push((name.to_owned(), id));
                    }
                }
                for (name, id) in hit {
                    t.remove((name.as_str(), id)).map_err(err)?;
                    gone += 1;
                }
            }
            // After the sweep above, which would take them for rows about the person.
            self.queue_erasure_notices(&tx, &told, keys)?;
        }
        tx.commit().map_err(err)?;
        Ok(gone)
    }

    /// Queues the deletion notices of [`Self::erase_person`] for the destinations in `told`
    /// that still exist. Their ids come from a range of their own (high bit set), so they
    /// never collide with dead-letter ids, and sort after replays an admin asked for.
    fn queue_erasure_notices(
        &self,
        tx: &redb::WriteTransaction,
        told: &std::collections::BTreeSet<String>,
        keys: &[String],
    ) -> R<()> {
        let profiles: Vec<&String> = keys.iter().filter(|k| k.starts_with("prof_")).collect();
        if told.is_empty() || profiles.is_empty() {
            return Ok(());
        }
        let dests = tx.open_table(DESTS).map_err(err)?;
        let mut counters = tx.open_table(COUNTERS).map_err(err)?;
        let mut next = counters
            .get("erasure_notice")
            .map_err(err)?
            .map_or(0, |v| v.value());
        let mut replay = tx.open_table(REPLAY).map_err(err)?;
        let at = Utc::now();
        for name in told {
            if dests.get(name.as_str()).map_err(err)?.is_none() {
                continue;
            }
            next += 1;
            let items: Vec<Value> = profiles
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": super::source::key(name, "erasure", p),
                        "kind": "erasure",
                        "destination": name,
                        "profile_id": p,
                        "action": "erased",
                        "at": at.to_rfc3339(),
                    })
                })
                .collect();
            let notice = DeadLetter {
                id: (1 << 63) | next,
                key: super::source::key(name, "erasure", profiles[0]),
                items,
                profiles: profiles.iter().map(|p| p.to_string()).collect(),
                error: "deletion notice (erasure)".into(),
                status: None,
                attempts: 0,
                at,
            };
            replay
                .insert((name.as_str(), notice.id), enc(&notice)?.as_slice())
                .map_err(err)?;
        }
        counters.insert("erasure_notice", next).map_err(err)?;
        Ok(())
    }

    /// The newest `limit` log rows of the given profile keys, newest first.
    pub fn profile_log(&self, keys: &[String], limit: usize) -> R<Vec<LogRow>> {
        let tx = self.db.begin_read().map_err(err)?;
        let t = tx.open_table(PLOG).map_err(err)?;
        let mut rows: Vec<(u64, LogRow)> = Vec::new();
        for k in keys {
            for row in t
                .range((k.as_str(), 0)..=(k.as_str(), u64::MAX))
                .map_err(err)?
                .rev()
                .take(limit)
            {
                let (key, v) = row.map_err(err)?;
                rows.push((key.value().1, dec(v.value())?));
            }
        }
        rows.sort_by(|a, b| b.1.at.cmp(&a.1.at).then(b.0.cmp(&a.0)));
        rows.truncate(limit);
        Ok(rows.into_iter().map(|(_, r)| r).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(id: u64) -> DeadLetter {
        DeadLetter {
            id,
            key: format!("msg_{id}"),
            items: vec![serde_json::json!({"id": format!("msg_{id}")})],
            profiles: vec!["prof_a".into()],
            error: "HTTP 400".into(),
            status: Some(400),
            attempts: 1,
            at: Utc::now(),
        }
    }

    fn row(dest: &str, key: &str) -> LogRow {
        LogRow {
            at: Utc::now(),
            destination: dest.into(),
            key: key.into(),
            kind: "event".into(),
            what: "E".into(),
            outcome: "delivered".into(),
            status: Some(200),
            attempts: 1,
        }
    }

    #[test]
    fn commits_dead_letters_replays_and_profile_log_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = DeliveryStore::open(dir.path()).unwrap();
            let mut st = DeliveryState {
                event_cursor: 5,
                ..DeliveryState::default()
            };
            // Two destinations log rows for the same profile: neither overwrites the other.
            s.commit(
                "a",
                &mut st,
                Commit {
                    dead: vec![dead(1), dead(2)],
                    log: vec![("prof_a".into(), row("a", "k1"))],
                    ..Commit::default()
                },
            )
            .unwrap();
            let mut st_b = DeliveryState::default();
            s.commit(
                "b",
                &mut st_b,
                Commit {
                    log: vec![("prof_a".into(), row("b", "k1"))],
                    ..Commit::default()
                },
            )
            .unwrap();
            // A routine (not fsynced) commit, then a flush, as a stopping worker does.
            st.event_cursor = 9;
            s.commit("a", &mut st, Commit::default()).unwrap();
            s.flush().unwrap();
        }
        let s = DeliveryStore::open(dir.path()).unwrap();
        assert_eq!(s.state("a").unwrap().event_cursor, 9);
        assert_eq!(s.dead_letters("a", 0, 10).unwrap().len(), 2);
        assert_eq!(s.dead_letters("a", 1, 10).unwrap()[0].id, 2);
        assert!(s.dead_letters("b", 0, 10).unwrap().is_empty());
        let log = s.profile_log(&["prof_a".into()], 10).unwrap();
        assert_eq!(log.len(), 2);

        assert_eq!(s.replay("a", Some(&[2])).unwrap(), 1);
        assert_eq!(s.dead_letters("a", 0, 10).unwrap().len(), 1);
        assert_eq!(s.replays("a", 10).unwrap()[0].id, 2);
        let mut st = s.state("a").unwrap();
        s.commit(
            "a",
            &mut st,
            Commit {
                replays_done: vec![2],
                ..Commit::default()
            },
        )
        .unwrap();
        assert!(s.replays("a", 10).unwrap().is_empty());

        // No definition was stored (only delivery state): it says so, and clears the rest.
        assert!(!s.delete("a").unwrap());
        assert!(s.dead_letters("a", 0, 10).unwrap().is_empty());
        assert_eq!(s.state("a").unwrap(), DeliveryState::default());
    }
}
