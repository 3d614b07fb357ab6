//! Audience files on a schedule: `[[exports.schedules]]` in the config writes an audience's
//! file (full, or the delta since the previous run) into a directory every `every_secs`,
//! for an ad platform's or e-mail tool's sync job (SFTP drop, bucket upload) to pick up.
//!
//! Each run is the on-demand export (`GET /v1/audiences/{name}/export`) called in-process,
//! so a scheduled file and a downloaded one are the same bytes for the same state. A file
//! is written as `*.part`, fsynced and renamed, and only then the delta cursor (the export's
//! `Spoor-Next-Cursor`) is stored next to it: a crash mid-run leaves no half file and makes
//! the next run repeat the same delta rather than skip it.

use crate::api::exports::{export, ExportQuery, MEMBERS, NEXT_CURSOR};
use crate::auth::{Caller, Scope};
use crate::AppState;
use axum::extract::{Path, Query, State};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use spoor_core::ids::TokenId;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// `[exports]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportsConfig {
    #[serde(default)]
    pub schedules: Vec<ScheduledExport>,
}

/// One `[[exports.schedules]]` entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledExport {
    /// Names the files (`<name>-<UTC time>.csv`) and the cursor; unique.
    pub name: String,
    pub audience: String,
    /// Seconds between runs (the first run is at start-up).
    #[serde(default = "default_every")]
    pub every_secs: u64,
    /// Write only what changed since the previous run (`add`/`remove` rows); the first run
    /// is a full file.
    #[serde(default)]
    pub delta: bool,
    /// `csv` (default) or `ndjson`.
    #[serde(default)]
    pub format: Option<String>,
    /// SHA-256 the e-mail and phone (default true).
    #[serde(default)]
    pub hashed: Option<bool>,
    /// Comma-separated traits to add as columns.
    #[serde(default)]
    pub traits: Option<String>,
    /// Leave out members without consent to this purpose (e.g. `advertising`).
    #[serde(default)]
    pub purpose: Option<String>,
    /// Where the files go; relative paths are under the data directory.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
}

fn default_every() -> u64 {
    86_400
}

fn default_dir() -> PathBuf {
    PathBuf::from("exports")
}

impl ExportsConfig {
    /// Refuses what could never run, naming the entry.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::BTreeSet::new();
        for s in &self.schedules {
            let ok = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return Err(format!(
                    "exports.schedules: name {:?} must be letters, digits, - or _",
                    s.name
                ));
            }
            if !names.insert(&s.name) {
                return Err(format!(
                    "exports.schedules: name {:?} is used twice",
                    s.name
                ));
            }
            if s.every_secs == 0 {
                return Err(format!(
                    "exports.schedules {:?}: every_secs must be > 0",
                    s.name
                ));
            }
            if let Some(f) = &s.format {
                if f != "csv" && f != "ndjson" {
                    return Err(format!(
                        "exports.schedules {:?}: format {f:?} is not csv or ndjson",
                        s.name
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Starts one task per schedule; `serve` aborts them when it stops (a run cut short leaves
/// at most a `*.part` file and the old cursor, so the next start repeats it).
pub fn spawn(app: &AppState) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for s in app.cfg.exports.schedules.clone() {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(s.every_secs));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match run_once(&app, &s).await {
                    Ok(Some((file, members))) => tracing::info!(
                        export = %s.name, audience = %s.audience, file = %file.display(),
                        members, "scheduled audience export written"
                    ),
                    Ok(None) => {
                        tracing::debug!(export = %s.name, "scheduled export: nothing changed")
                    }
                    Err(e) => tracing::warn!(
                        export = %s.name, audience = %s.audience, error = %e,
                        "scheduled audience export failed; retrying at the next run"
                    ),
                }
            }
        }));
    }
    tasks
}

fn dir_of(app: &AppState, s: &ScheduledExport) -> PathBuf {
    if s.dir.is_absolute() {
        s.dir.clone()
    } else {
        app.cfg.storage.data_dir.join(&s.dir)
    }
}

/// One run: the file written and its member rows, or `None` for a delta with no change.
pub async fn run_once(
    app: &AppState,
    s: &ScheduledExport,
) -> Result<Option<(PathBuf, u64)>, String> {
    let dir = dir_of(app, s);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let cursor_file = dir.join(format!(".{}.cursor", s.name));
    let since = if s.delta {
        match tokio::fs::read_to_string(&cursor_file).await {
            Ok(t) => Some(t.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("cannot read {}: {e}", cursor_file.display())),
        }
    } else {
        None
    };
    let q = ExportQuery {
        format: s.format.clone(),
        hashed: s.hashed.map(|h| h.to_string()),
        traits: s.traits.clone(),
        since: since.clone(),
        identifiers: None,
        purpose: s.purpose.clone(),
    };
    let caller = Caller {
        token_id: TokenId::parse("tok_scheduled-export").unwrap_or_else(TokenId::generate),
        scopes: vec![Scope::Admin],
    };
    let resp = export(
        State(app.clone()),
        caller,
        Path(s.audience.clone()),
        Query(q),
    )
    .await
    .map_err(|e| e.to_string())?;
    let (next, members) = {
        let h = resp.headers();
        let text = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let members: u64 = text(MEMBERS).and_then(|m| m.parse().ok()).unwrap_or(0);
        (text(NEXT_CURSOR), members)
    };
    let next = next.ok_or("the export gave no cursor")?;
    if since.is_some() && members == 0 {
        write_atomic(&cursor_file, next.as_bytes()).await?;
        return Ok(None);
    }
    let ext = s.format.as_deref().unwrap_or("csv");
    let kind = if since.is_some() { "-delta" } else { "" };
    let stamp = app.clock.now().format("%Y%m%dT%H%M%S%.3fZ");
    let file = dir.join(format!("{}-{stamp}{kind}.{ext}", s.name));
    let part = file.with_extension(format!("{ext}.part"));
    let mut out = tokio::fs::File::create(&part)
        .await
        .map_err(|e| format!("cannot create {}: {e}", part.display()))?;
    let mut body = resp.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("export stream: {e}"))?;
        out.write_all(&chunk)
            .await
            .map_err(|e| format!("cannot write {}: {e}", part.display()))?;
    }
    out.sync_all()
        .await
        .map_err(|e| format!("cannot sync {}: {e}", part.display()))?;
    drop(out);
    tokio::fs::rename(&part, &file)
        .await
        .map_err(|e| format!("cannot rename {}: {e}", part.display()))?;
    if s.delta {
        write_atomic(&cursor_file, next.as_bytes()).await?;
    }
    Ok(Some((file, members)))
}

async fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension("tmp");
    let mut f = tokio::fs::File::create(&tmp)
        .await
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .await
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    f.sync_all()
        .await
        .map_err(|e| format!("cannot sync {}: {e}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .map_err(|e| format!("cannot rename {}: {e}", tmp.display()))
}
