//! The right of access (GDPR art. 15): `GET /v1/profiles/{ref}/privacy-export` answers one
//! JSON document with everything Spoor holds about a person — the profile, identifiers,
//! every identity decision, consent with its history, computed traits, audience membership
//! history, the delivery log, and every event of the person (as stored in the log).
//!
//! Events are the bulk of it, so they are streamed last, read from the log a page at a
//! time on a blocking thread into a bounded channel: memory does not grow with the
//! person's history and a slow client slows the reads. Everything before `events` is
//! small (bounded by the profile) and built first, from one state snapshot.

use super::consent::consent_json;
use super::profiles::{profile_json, resolve_ref};
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Map, Value};
use spoor_core::identity::ProfileId;
use spoor_store::log::LogReader;
use spoor_store::state::{StateReader, TimelineCursor};

/// The `format` field of the document; bumped when its shape changes incompatibly.
pub const EXPORT_FORMAT: &str = "spoor-privacy-export/1";
/// Events read from the log per page.
const PAGE: usize = 500;
/// Membership changes and delivery-log rows included (newest first).
const MAX_ROWS: usize = 100_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/profiles/{pref}/privacy-export", get(export))
        .route("/v1/admin/audit", get(audit))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<u64>,
}

/// The audit log, oldest first, a page at a time.
async fn audit(
    State(app): State<AppState>,
    caller: Caller,
    axum::extract::Query(q): axum::extract::Query<AuditQuery>,
) -> Result<axum::Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let app2 = app.clone();
    let (records, next) =
        tokio::task::spawn_blocking(move || app2.audit.read(q.cursor.unwrap_or(0), limit))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    Ok(axum::Json(json!({"records": records, "next_cursor": next})))
}

fn ms(t: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

/// Everything but the events, from one snapshot.
fn head(app: &AppState, r: &StateReader, pid: ProfileId) -> Result<Map<String, Value>, ApiError> {
    let p = r
        .profile(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pid}")))?;
    let cluster = r.cluster(pid)?;
    let mut profile = profile_json(r, pid, &p)?;
    profile["consent"] = consent_json(&app.consent, &p.consent);
    let ident = r.identity(pid)?;
    let identifiers: Vec<Value> = ident
        .iter()
        .flat_map(|i| &i.identifiers)
        .map(|l| {
            json!({"type": l.identifier.kind.as_str(), "value": l.identifier.value,
                   "first_seen": ms(l.first_seen_ms), "last_seen": ms(l.last_seen_ms)})
        })
        .collect();
    let history: Vec<Value> = r
        .membership_history(&cluster, MAX_ROWS)?
        .into_iter()
        .map(|c| {
            json!({"audience": c.audience, "change": if c.entered { "entered" } else { "exited" },
                   "at": ms(c.at_ms), "seq": c.seq, "cause": c.cause})
        })
        .collect();
    let mut keys: Vec<String> = cluster.iter().map(ToString::to_string).collect();
    for c in &cluster {
        if let Some(i) = r.identity(*c)? {
            for l in &i.identifiers {
                let k = l.identifier.kind.as_str();
                if k == "user_id" || k == "anonymous_id" {
                    keys.push(format!("{k}:{}", l.identifier.value));
                }
            }
        }
    }
    let deliveries = app.destinations.store.profile_log(&keys, MAX_ROWS)?;
    let consent_history: Vec<Value> = p
        .consent
        .history
        .iter()
        .rev()
        .map(|h| serde_json::to_value(h).unwrap_or(Value::Null))
        .collect();
    let mut m = Map::new();
    m.insert("format".into(), json!(EXPORT_FORMAT));
    m.insert("generated_at".into(), json!(app.clock.now().to_rfc3339()));
    m.insert("profile_id".into(), json!(pid.to_string()));
    m.insert("profile".into(), profile);
    m.insert(
        "identity".into(),
        json!({
            "identifiers": identifiers,
            "merged_ids": cluster.iter().skip(1).map(ToString::to_string).collect::<Vec<_>>(),
            "decisions": r.decisions(&cluster)?,
        }),
    );
    m.insert(
        "consent".into(),
        json!({"current": consent_json(&app.consent, &p.consent), "history": consent_history}),
    );
    m.insert("computed_traits".into(), json!(p.activation.values));
    m.insert(
        "audiences".into(),
        json!({"current": p.activation.members.iter()
                   .map(|(n, since)| json!({"name": n, "since": ms(*since)})).collect::<Vec<_>>(),
               "history": history}),
    );
    m.insert("deliveries".into(), json!(deliveries));
    Ok(m)
}

pub(crate) async fn export(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let (r, pid, head) = {
        let app = app.clone();
        tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
            let r = app.state.reader()?;
            let pid = resolve_ref(&app, &r, &pref)?;
            let h = head(&app, &r, pid)?;
            Ok((r, pid, h))
        })
        .await
        .map_err(ApiError::internal)??
    };
    let mut first = serde_json::to_string(&Value::Object(head)).map_err(ApiError::internal)?;
    first.pop(); // the closing brace: the events follow
    first.push_str(",\"events\":[");
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let log = app.reader.clone();
    tokio::task::spawn_blocking(move || {
        if tx.blocking_send(Ok(Bytes::from(first))).is_err() {
            return;
        }
        match stream_events(&r, &log, pid, &tx) {
            Ok(()) => {
                let _ = tx.blocking_send(Ok(Bytes::from_static(b"]}")));
            }
            Err(e) => {
                tracing::warn!(profile = %pid, error = ?e, "privacy export failed");
                let _ = tx.blocking_send(Err(std::io::Error::other("export failed")));
            }
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = format!("attachment; filename=\"privacy-export-{pid}.json\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        Body::from_stream(body),
    )
        .into_response())
}

/// Every event of the person's cluster, newest first, a page at a time.
fn stream_events(
    r: &StateReader,
    log: &LogReader,
    pid: ProfileId,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), ApiError> {
    let cluster = r.cluster(pid)?;
    let mut before: Option<TimelineCursor> = None;
    let mut first = true;
    loop {
        let page = r.timeline(&cluster, before, PAGE)?;
        let mut chunk = String::new();
        for c in &page {
            if let Some(e) = log
                .read_from(c.seq, 1)?
                .into_iter()
                .next()
                .filter(|e| e.seq == c.seq)
            {
                if !first {
                    chunk.push(',');
                }
                first = false;
                chunk.push_str(&super::events::with_seq(&e));
            }
        }
        if tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
            return Ok(()); // the client went away
        }
        if page.len() < PAGE {
            return Ok(());
        }
        before = page.last().copied();
    }
}
