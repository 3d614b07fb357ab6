//! Retention of the per-profile delivery log (`GET /v1/profiles/{ref}/deliveries`).
//!
//! Every delivered item adds a row, so without pruning the log grows with traffic for as
//! long as the server runs. Rows older than `destinations.delivery_log_days` are deleted
//! by a background task once an hour (0 keeps them forever).
//!
//! The log is keyed by profile (what the API reads); a second table keys every row by its
//! time (`PLOG_AT`, written in the same transaction), so pruning reads only the rows that go
//! and never decodes a record. Stores written before the index existed are indexed once when
//! opened.

use super::store::{DeliveryStore, DeliveryStoreError, COUNTERS, PLOG, PLOG_AT};
use crate::AppState;
use chrono::{DateTime, Utc};
use redb::{ReadableTable, ReadableTableMetadata};
use std::time::Duration;

/// Rows deleted per transaction: a large backlog is pruned in steps that each hold the
/// store's write lock (workers commit through it) only briefly.
const BATCH: usize = 10_000;

/// How often the background task prunes.
const EVERY: Duration = Duration::from_secs(3600);

/// Marks a store whose log rows are all in the time index.
const INDEXED: &str = "profile_log_indexed";

fn err(e: impl std::fmt::Display) -> DeliveryStoreError {
    DeliveryStoreError(e.to_string())
}

impl DeliveryStore {
    /// Indexes by time the log rows of a store written before the index existed (once).
    pub(super) fn index_profile_log(&self) -> Result<(), DeliveryStoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut counters = tx.open_table(COUNTERS).map_err(err)?;
            if counters.get(INDEXED).map_err(err)?.is_some() {
                return Ok(());
            }
            let plog = tx.open_table(PLOG).map_err(err)?;
            let mut at = tx.open_table(PLOG_AT).map_err(err)?;
            let rows = plog.len().map_err(err)?;
            if rows > 0 {
                tracing::info!(
                    rows,
                    "indexing the delivery log by time (once, for pruning)"
                );
            }
            for row in plog.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                let (profile, n) = k.value();
                // An unreadable row has no time: it is indexed as the oldest, so it goes
                // at the first pruning rather than never.
                let ms = serde_json::from_slice::<super::store::LogRow>(v.value())
                    .map_or(i64::MIN, |r| r.at.timestamp_millis());
                at.insert((ms, n), profile).map_err(err)?;
            }
            counters.insert(INDEXED, 1).map_err(err)?;
        }
        tx.commit().map_err(err)
    }

    /// Deletes the log rows made before `before`; returns how many went.
    pub fn prune_profile_log(&self, before: DateTime<Utc>) -> Result<usize, DeliveryStoreError> {
        let cutoff = before.timestamp_millis();
        let mut total = 0;
        loop {
            let tx = self.db.begin_write().map_err(err)?;
            let n = {
                let mut at = tx.open_table(PLOG_AT).map_err(err)?;
                let mut plog = tx.open_table(PLOG).map_err(err)?;
                let mut old = Vec::new();
                for row in at.range(..(cutoff, 0)).map_err(err)?.take(BATCH) {
                    let (k, v) = row.map_err(err)?;
                    old.push((k.value(), v.value().to_owned()));
                }
                for ((ms, n), profile) in &old {
                    plog.remove((profile.as_str(), *n)).map_err(err)?;
                    at.remove((*ms, *n)).map_err(err)?;
                }
                old.len()
            };
            tx.commit().map_err(err)?;
            total += n;
            if n < BATCH {
                return Ok(total);
            }
        }
    }
}

/// Prunes the delivery log once an hour (first a minute after start), unless
/// `destinations.delivery_log_days` is 0.
pub fn spawn(app: &AppState) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let days = app.cfg.destinations.delivery_log_days;
        if days == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
        loop {
            let store = app.destinations.store.clone();
            // Config validation bounds `days` (100 years), so this cannot leave chrono's range.
            let before = Utc::now() - chrono::Duration::days(i64::from(days));
            match tokio::task::spawn_blocking(move || store.prune_profile_log(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => {
                    tracing::info!(rows = n, days, "pruned the delivery log");
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot prune the delivery log"),
                Err(e) => tracing::warn!(error = %e, "delivery log pruning stopped"),
            }
            tokio::time::sleep(EVERY).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::super::store::{Commit, DeliveryState, LogRow};
    use super::*;
    use redb::ReadableDatabase;

    fn row(at: DateTime<Utc>, what: &str) -> LogRow {
        LogRow {
            at,
            destination: "hook".into(),
            key: format!("k_{what}"),
            kind: "event".into(),
            what: what.into(),
            outcome: "delivered".into(),
            status: Some(200),
            attempts: 1,
        }
    }

    fn log(store: &DeliveryStore, rows: Vec<(String, LogRow)>) {
        let c = Commit {
            durable: true,
            log: rows,
            ..Commit::default()
        };
        store
            .commit("hook", &mut DeliveryState::default(), c)
            .expect("commit");
    }

    fn index_len(store: &DeliveryStore) -> usize {
        let tx = store.db.begin_read().unwrap();
        let t = tx.open_table(PLOG_AT).unwrap();
        t.iter().unwrap().count()
    }

    /// Old rows go from the log and its index, newer rows of the same profile stay, and
    /// erasure leaves no index row naming the person.
    #[test]
    fn prunes_rows_older_than_the_cutoff_and_keeps_the_index_in_step() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeliveryStore::open(dir.path()).unwrap();
        let now = Utc::now();
        let days = |d: i64| now - chrono::Duration::days(d);
        log(
            &store,
            vec![
                ("prof_a".into(), row(days(100), "old a")),
                ("prof_a".into(), row(days(1), "new a")),
                ("user_id:u1".into(), row(days(95), "old u1")),
                ("prof_b".into(), row(days(5), "new b")),
            ],
        );
        assert_eq!(index_len(&store), 4);
        assert_eq!(store.prune_profile_log(days(90)).unwrap(), 2);
        let a = store.profile_log(&["prof_a".into()], 10).unwrap();
        assert_eq!(
            a.iter().map(|r| r.what.as_str()).collect::<Vec<_>>(),
            ["new a"]
        );
        assert!(store
            .profile_log(&["user_id:u1".into()], 10)
            .unwrap()
            .is_empty());
        assert_eq!(store.profile_log(&["prof_b".into()], 10).unwrap().len(), 1);
        assert_eq!(index_len(&store), 2);
        // Nothing more is old enough; pruning again is a no-op.
        assert_eq!(store.prune_profile_log(days(90)).unwrap(), 0);
        store.erase_person(&["prof_b".into()], &[]).unwrap();
        assert_eq!(
            index_len(&store),
            1,
            "erasure removes the person's index rows"
        );
        assert_eq!(store.prune_profile_log(now).unwrap(), 1);
        assert!(store
            .profile_log(&["prof_a".into()], 10)
            .unwrap()
            .is_empty());
    }

    /// More rows than one transaction deletes are all pruned.
    #[test]
    fn prunes_a_backlog_larger_than_one_batch() {
        let dir = tempfile::tempdir().unwrap();
        let store = DeliveryStore::open(dir.path()).unwrap();
        let old = Utc::now() - chrono::Duration::days(200);
        let rows = (0..BATCH + 7)
            .map(|i| (format!("prof_{}", i % 13), row(old, &i.to_string())))
            .collect();
        log(&store, rows);
        assert_eq!(
            store
                .prune_profile_log(Utc::now() - chrono::Duration::days(90))
                .unwrap(),
            BATCH + 7
        );
        assert_eq!(index_len(&store), 0);
    }

    /// A store written before the time index existed is indexed when opened, so its old
    /// rows are pruned too.
    #[test]
    fn a_store_from_before_the_index_is_indexed_once_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = DeliveryStore::open(dir.path()).unwrap();
            log(
                &store,
                vec![
                    (
                        "prof_a".into(),
                        row(Utc::now() - chrono::Duration::days(300), "old"),
                    ),
                    ("prof_a".into(), row(Utc::now(), "new")),
                ],
            );
            // As an older version left it: no index rows, no marker.
            let tx = store.db.begin_write().unwrap();
            {
                let mut at = tx.open_table(PLOG_AT).unwrap();
                at.retain(|_, _| false).unwrap();
                tx.open_table(COUNTERS).unwrap().remove(INDEXED).unwrap();
            }
            tx.commit().unwrap();
            assert_eq!(index_len(&store), 0);
        }
        let store = DeliveryStore::open(dir.path()).unwrap();
        assert_eq!(index_len(&store), 2);
        assert_eq!(
            store
                .prune_profile_log(Utc::now() - chrono::Duration::days(90))
                .unwrap(),
            1
        );
        let left = store.profile_log(&["prof_a".into()], 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].what, "new");
    }
}
