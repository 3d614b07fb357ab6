//! PostgreSQL sync ("reverse ETL"): keeps two tables in the user's own database equal to
//! what Spoor knows, for the profiles and audiences the destination subscribes to.
//!
//! A batch of delivery items is turned into a set of *touched profiles* (the owner of each
//! event's identifiers when it is delivered, the profile of each membership change), and
//! each is written as it is **now** — not as the item described it. That makes every write
//! an idempotent upsert keyed by ids, so re-applying a batch after a crash (positions are
//! committed after the database commit) changes nothing, and it makes merges easy: a
//! merged-away id resolves to its survivor, whose row is upserted while the merged-away
//! rows are deleted and its memberships are rewritten from the survivor's current ones
//! (folded). A profile that no longer exists (deleted) has its rows deleted. A batch is
//! one transaction, with one statement per table, so a batch of 500 profiles is a handful
//! of round trips.
//!
//! TLS as the URL's `sslmode` asks, verified against `ca_pem` when given (`postgres_tls.rs`).

use super::model::Destination;
use super::source::Item;
use super::webhook::Outcome;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use spoor_core::identity::ProfileId;
use spoor_store::state::StateStore;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tokio_postgres::Client;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSettings {
    /// `postgres://user:password@host:port/database` (key=value strings work too).
    pub url: String,
    /// Schema of the tables (created if missing).
    #[serde(default = "default_schema")]
    pub schema: String,
    /// Put before the table names (`profiles`, `audience_memberships`).
    #[serde(default)]
    pub table_prefix: String,
    /// Delivery items applied in one transaction.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Connecting and applying one batch.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// CA certificates (PEM) the server's certificate must chain to, with its name matching
    /// the host (libpq's `sslrootcert` + `verify-full`). Without it, TLS (per the URL's
    /// `sslmode`) encrypts but does not verify the server (see `postgres_tls.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

fn default_schema() -> String {
    "spoor".into()
}

fn default_batch() -> usize {
    500
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn sql_name(s: &str, max: usize, allow_empty: bool) -> bool {
    (allow_empty || !s.is_empty())
        && s.len() <= max
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl PostgresSettings {
    pub fn validate(&self) -> Result<(), String> {
        let cfg: tokio_postgres::Config =
            self.url.parse().map_err(|e| format!("postgres.url: {e}"))?;
        if self.ca_pem.is_some() {
            if cfg.get_ssl_mode() != tokio_postgres::config::SslMode::Require {
                return Err("postgres.ca_pem needs sslmode=require in postgres.url \
                    (otherwise the connection could fall back to plain TCP)"
                    .into());
            }
            super::postgres_tls::connector(self.ca_pem.as_deref())?;
        }
        if cfg.get_hosts().is_empty() {
            return Err("postgres.url: no host".into());
        }
        if !sql_name(&self.schema, 40, false) {
            return Err(
                "postgres.schema must be 1-40 of a-z 0-9 _, not starting with a digit".into(),
            );
        }
        if !sql_name(&self.table_prefix, 30, true) {
            return Err("postgres.table_prefix must be 0-30 of a-z 0-9 _".into());
        }
        if self.batch_size == 0 || self.batch_size > super::model::MAX_BATCH {
            return Err(format!(
                "postgres.batch_size must be 1-{}",
                super::model::MAX_BATCH
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            return Err("postgres.timeout_ms must be 1-300000".into());
        }
        Ok(())
    }

    /// The quoted, schema-qualified names of the profiles and memberships tables.
    pub fn tables(&self) -> (String, String) {
        let (s, p) = (&self.schema, &self.table_prefix);
        (
            format!("\"{s}\".\"{p}profiles\""),
            format!("\"{s}\".\"{p}audience_memberships\""),
        )
    }

    fn ddl(&self) -> String {
        let (profiles, members) = self.tables();
        format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {profiles} (
                 id text PRIMARY KEY,
                 traits jsonb NOT NULL,
                 identities jsonb NOT NULL,
                 computed_traits jsonb NOT NULL,
                 merged_ids jsonb NOT NULL,
                 event_count bigint NOT NULL,
                 first_seen timestamptz,
                 last_seen timestamptz,
                 updated_at timestamptz NOT NULL);
             CREATE TABLE IF NOT EXISTS {members} (
                 audience text NOT NULL,
                 profile_id text NOT NULL,
                 entered_at timestamptz,
                 updated_at timestamptz NOT NULL,
                 PRIMARY KEY (audience, profile_id));
             CREATE INDEX IF NOT EXISTS \"{prefix}audience_memberships_profile\"
                 ON {members} (profile_id);",
            schema = self.schema,
            prefix = self.table_prefix,
        )
    }
}

/// What one batch writes.
#[derive(Debug, Default)]
pub struct Plan {
    /// Live profiles to upsert (one row each).
    pub profiles: Vec<Value>,
    /// The current memberships of `synced` in subscribed audiences.
    pub memberships: Vec<Value>,
    /// Profiles whose membership rows are replaced by `memberships`.
    pub synced: Vec<String>,
    /// Ids whose rows are deleted (merged away, deleted, dissolved).
    pub deleted: Vec<String>,
}

fn rfc3339(ms: i64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    chrono::DateTime::from_timestamp_millis(ms).map_or(Value::Null, |t| json!(t.to_rfc3339()))
}

/// Reads the current state of every profile `items` touch (blocking: redb reads).
pub fn plan(d: &Destination, state: &StateStore, items: &[Item]) -> Result<Plan, String> {
    let mut touched = BTreeSet::new();
    // An erased person's rows go whatever the state says when the notice is handled (the
    // erasure removes the profile from the state after it queues the notice).
    let mut erased = BTreeSet::new();
    for it in items {
        if it.kind == "erasure" {
            if let Some(p) = it.body["profile_id"].as_str().and_then(ProfileId::parse) {
                erased.insert(p);
            }
            continue;
        }
        let raw = if it.kind == "audience" {
            it.body["profile_id"].as_str().map(str::to_owned)
        } else {
            it.profile.clone()
        };
        if let Some(p) = raw.as_deref().and_then(ProfileId::parse) {
            touched.insert(p);
        }
    }
    let audiences = &d.subscriptions.audiences;
    let subscribed = |name: &str| {
        audiences
            .iter()
            .any(|s| s.audience == "*" || s.audience == name)
    };
    let r = state.reader().map_err(|e| e.to_string())?;
    let mut deleted = erased.clone();
    let mut live = BTreeSet::new();
    for p in touched.difference(&erased).copied() {
        match r.resolve(p).map_err(|e| e.to_string())? {
            Some(s) => {
                if s != p {
                    deleted.insert(p);
                }
                live.insert(s);
            }
            None => {
                deleted.insert(p);
            }
        }
    }
    let mut plan = Plan::default();
    for s in live {
        let Some(profile) = r.profile(s).map_err(|e| e.to_string())? else {
            deleted.insert(s);
            continue;
        };
        let doc = crate::api::profiles::profile_json(&r, s, &profile).map_err(|e| e.to_string())?;
        for other in r.cluster(s).map_err(|e| e.to_string())?.into_iter().skip(1) {
            deleted.insert(other);
        }
        let id = s.to_string();
        plan.profiles.push(json!({
            "id": id,
            "traits": doc["traits"],
            "identities": doc["identities"],
            "computed_traits": doc["computed_traits"],
            "merged_ids": doc["merged_ids"],
            "event_count": profile.event_count,
            "first_seen": rfc3339(profile.first_seen_ms),
            "last_seen": rfc3339(profile.last_seen_ms),
        }));
        for (name, since) in &profile.activation.members {
            if subscribed(name) {
                plan.memberships.push(
                    json!({"audience": name, "profile_id": id, "entered_at": rfc3339(*since)}),
                );
            }
        }
        plan.synced.push(id);
    }
    plan.deleted = deleted.iter().map(ToString::to_string).collect();
    Ok(plan)
}

/// A destination's connection, opened (and its tables created) on first use and again
/// after it broke.
#[derive(Default)]
pub struct PgSink {
    client: Option<Client>,
}

/// Connects and creates the tables if missing.
pub async fn connect(s: &PostgresSettings) -> Result<Client, String> {
    let mut cfg: tokio_postgres::Config =
        s.url.parse().map_err(|e| format!("postgres.url: {e}"))?;
    let timeout = Duration::from_millis(s.timeout_ms);
    cfg.connect_timeout(timeout);
    let where_ = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let tls = super::postgres_tls::connector(s.ca_pem.as_deref())?;
    let (client, conn) = tokio::time::timeout(timeout, cfg.connect(tls))
        .await
        .map_err(|_| format!("cannot connect to PostgreSQL at {where_}: timed out"))?
        .map_err(|e| format!("cannot connect to PostgreSQL at {where_}: {}", describe(&e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::warn!(error = %e, "postgres destination connection closed");
        }
    });
    client.batch_execute(&s.ddl()).await.map_err(|e| {
        format!(
            "cannot create the tables in schema {:?}: {}",
            s.schema,
            describe(&e)
        )
    })?;
    Ok(client)
}

/// The error and its database detail (`tokio_postgres::Error` alone says just "db error").
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => super::error_chain(&e.to_string(), e),
    }
}

/// Bad data (class 22) and constraint violations (23) fail the same way every time; the
/// rest (connection, locks, permissions an operator can grant) is worth retrying.
fn permanent(e: &tokio_postgres::Error) -> bool {
    e.code()
        .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"))
}

impl PgSink {
    /// Applies one plan in one transaction.
    pub async fn apply(&mut self, s: &PostgresSettings, plan: &Plan) -> Outcome {
        let started = Instant::now();
        let timeout = Duration::from_millis(s.timeout_ms);
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            match connect(s).await {
                Ok(c) => self.client = Some(c),
                Err(error) => {
                    return Outcome::Retry {
                        status: None,
                        error,
                        retry_after_ms: None,
                        latency_ms: started.elapsed().as_millis() as u64,
                    }
                }
            }
        }
        let Some(client) = self.client.as_mut() else {
            return Outcome::Permanent {
                status: None,
                error: "no connection".into(),
            };
        };
        let result = tokio::time::timeout(timeout, write(client, s, plan)).await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(Ok(())) => Outcome::Delivered {
                status: None,
                latency_ms,
                body: format!(
                    "{} profiles, {} memberships, {} deleted",
                    plan.profiles.len(),
                    plan.memberships.len(),
                    plan.deleted.len()
                ),
            },
            Ok(Err(e)) if permanent(&e) => Outcome::Permanent {
                status: None,
                error: format!("PostgreSQL: {}", describe(&e)),
            },
            Ok(Err(e)) => Outcome::Retry {
                status: None,
                error: format!("PostgreSQL: {}", describe(&e)),
                retry_after_ms: None,
                latency_ms,
            },
            Err(_) => {
                // The connection is in an unknown state: start afresh next time.
                self.client = None;
                Outcome::Retry {
                    status: None,
                    error: "PostgreSQL: timed out".into(),
                    retry_after_ms: None,
                    latency_ms,
                }
            }
        }
    }
}

async fn write(
    client: &mut Client,
    s: &PostgresSettings,
    plan: &Plan,
) -> Result<(), tokio_postgres::Error> {
    let (profiles, members) = s.tables();
    let tx = client.transaction().await?;
    if !plan.deleted.is_empty() {
        tx.execute(
            &format!("DELETE FROM {members} WHERE profile_id = ANY($1::text[])"),
            &[&plan.deleted],
        )
        .await?;
        tx.execute(
            &format!("DELETE FROM {profiles} WHERE id = ANY($1::text[])"),
            &[&plan.deleted],
        )
        .await?;
    }
    if !plan.profiles.is_empty() {
        let rows = Value::Array(plan.profiles.clone()).to_string();
        tx.execute(
            &format!(
                "INSERT INTO {profiles} (id, traits, identities, computed_traits, merged_ids,
                     event_count, first_seen, last_seen, updated_at)
                 SELECT id, traits, identities, computed_traits, merged_ids, event_count,
                     first_seen, last_seen, now()
                 FROM jsonb_to_recordset($1::text::jsonb) AS x(id text, traits jsonb,
                     identities jsonb, computed_traits jsonb, merged_ids jsonb,
                     event_count bigint, first_seen timestamptz, last_seen timestamptz)
                 ON CONFLICT (id) DO UPDATE SET traits = EXCLUDED.traits,
                     identities = EXCLUDED.identities,
                     computed_traits = EXCLUDED.computed_traits,
                     merged_ids = EXCLUDED.merged_ids, event_count = EXCLUDED.event_count,
                     first_seen = EXCLUDED.first_seen, last_seen = EXCLUDED.last_seen,
                     updated_at = now()"
            ),
            &[&rows],
        )
        .await?;
    }
    if !plan.synced.is_empty() {
        let rows = Value::Array(plan.memberships.clone()).to_string();
        tx.execute(
            &format!(
                "DELETE FROM {members} WHERE profile_id = ANY($1::text[])
                 AND (audience, profile_id) NOT IN (SELECT audience, profile_id
                     FROM jsonb_to_recordset($2::text::jsonb) AS x(audience text, profile_id text))"
            ),
            &[&plan.synced, &rows],
        )
        .await?;
        if !plan.memberships.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO {members} (audience, profile_id, entered_at, updated_at)
                     SELECT audience, profile_id, entered_at, now()
                     FROM jsonb_to_recordset($1::text::jsonb)
                         AS x(audience text, profile_id text, entered_at timestamptz)
                     ON CONFLICT (audience, profile_id) DO UPDATE
                         SET entered_at = EXCLUDED.entered_at, updated_at = now()"
                ),
                &[&rows],
            )
            .await?;
        }
    }
    tx.commit().await
}

/// `destinations test`: connects, creates the tables if missing and counts their rows;
/// writes nothing else.
pub async fn check(s: &PostgresSettings) -> Value {
    let started = Instant::now();
    let client = match connect(s).await {
        Ok(c) => c,
        Err(error) => return json!({"ok": false, "retryable": true, "error": error}),
    };
    let (profiles, members) = s.tables();
    let count = |t: String| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {t}"), &[])
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    };
    match (count(profiles.clone()).await, count(members.clone()).await) {
        (Ok(p), Ok(m)) => json!({
            "ok": true,
            "latency_ms": started.elapsed().as_millis() as u64,
            "tables": {profiles: p, members: m},
        }),
        (Err(e), _) | (_, Err(e)) => json!({"ok": false, "retryable": true, "error": describe(&e)}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> PostgresSettings {
        PostgresSettings {
            url: "postgres://u:p@127.0.0.1:5432/db".into(),
            schema: default_schema(),
            table_prefix: String::new(),
            batch_size: 10,
            timeout_ms: 1000,
            ca_pem: None,
        }
    }

    #[test]
    fn settings_are_checked_with_the_field_named() {
        assert_eq!(settings().validate(), Ok(()));
        for (change, field) in [
            (
                (|s: &mut PostgresSettings| s.url = "mysql://h/db".into())
                    as fn(&mut PostgresSettings),
                "postgres.url",
            ),
            (
                |s| {
                    s.url = "postgres://h/db?sslmode=require".into();
                    s.ca_pem = Some("not a certificate".into());
                },
                "postgres.ca_pem",
            ),
            (
                |s| s.ca_pem = Some("not a certificate".into()),
                "postgres.ca_pem",
            ),
            (|s| s.schema = "Public".into(), "postgres.schema"),
            (|s| s.schema = "a\"b".into(), "postgres.schema"),
            (|s| s.schema = "1a".into(), "postgres.schema"),
            (|s| s.table_prefix = "x y".into(), "postgres.table_prefix"),
            (|s| s.batch_size = 100_000, "postgres.batch_size"),
        ] {
            let mut s = settings();
            change(&mut s);
            let e = s.validate().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
        let mut s = settings();
        s.table_prefix = "cdp_".into();
        assert_eq!(
            s.tables(),
            (
                "\"spoor\".\"cdp_profiles\"".into(),
                "\"spoor\".\"cdp_audience_memberships\"".into()
            )
        );
    }
}
