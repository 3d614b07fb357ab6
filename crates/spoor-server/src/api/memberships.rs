//! Who is in an audience: size, members (paged, and exported as NDJSON), and the overlap of
//! two audiences — all counted on the in-memory membership bitmaps, so a size or an overlap
//! of million-member audiences takes milliseconds. A profile's own memberships and their
//! history are under `/v1/profiles/{ref}/audiences` (`profiles.rs`).
//!
//! Reading needs an admin token with the `read` or `profiles` scope. An audience that is
//! not defined answers 404.

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use spoor_core::identity::ProfileId;
use spoor_store::state::StateReader;
use std::time::Instant;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audiences/overlap", get(overlap))
        .route("/v1/audiences/{name}/size", get(size))
        .route("/v1/audiences/{name}/members", get(members))
        .route("/v1/audiences/{name}/members/export", get(export))
}

/// Fails with 404 unless `name` is a defined audience.
fn defined(app: &AppState, name: &str) -> Result<(), ApiError> {
    if app.defs.current().audiences.contains_key(name) {
        Ok(())
    } else {
        Err(ApiError::NotFound(format!("no audience {name:?}")))
    }
}

async fn size(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    defined(&app, &name)?;
    let size = app.state.reader()?.audience_size(&name)?;
    Ok(Json(json!({"audience": name, "size": size})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MembersQuery {
    limit: Option<usize>,
    /// The last profile id of the previous page.
    cursor: Option<String>,
}

fn cursor(c: Option<&str>) -> Result<Option<ProfileId>, ApiError> {
    c.map(|c| {
        ProfileId::parse(c)
            .ok_or_else(|| ApiError::InvalidRequest(format!("cursor {c:?} is not valid")))
    })
    .transpose()
}

/// Members in profile id order, with their traits.
async fn members(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    defined(&app, &name)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    let after = cursor(q.cursor.as_deref())?;
    let r = app.state.reader()?;
    let ids = r.audience_members(&name, after, limit + 1)?;
    let page = &ids[..ids.len().min(limit)];
    let mut out = Vec::with_capacity(page.len());
    for pid in page {
        let traits = r
            .profile(*pid)?
            .map(|p| Value::Object(p.trait_values()))
            .unwrap_or_else(|| json!({}));
        out.push(json!({"id": pid.to_string(), "traits": traits}));
    }
    let next = (ids.len() > limit)
        .then(|| page.last().map(ToString::to_string))
        .flatten();
    Ok(Json(json!({"members": out, "next_cursor": next})))
}

/// One NDJSON line of the export.
fn export_line(r: &StateReader, pid: ProfileId) -> Result<String, ApiError> {
    let identities: Vec<Value> = r
        .identity(pid)?
        .map(|i| {
            i.identifiers
                .iter()
                .map(|l| json!({"type": l.identifier.kind.as_str(), "value": l.identifier.value}))
                .collect()
        })
        .unwrap_or_default();
    let traits = r
        .profile(pid)?
        .map(|p| Value::Object(p.trait_values()))
        .unwrap_or_else(|| json!({}));
    Ok(json!({"id": pid.to_string(), "identities": identities, "traits": traits}).to_string())
}

const EXPORT_PAGE: usize = 1000;

/// Every member as NDJSON (`{"id","identities","traits"}` a line), in id order. Read page
/// by page while streaming, so the set is never held in memory; members who join or leave
/// during the export are included or not depending on where the export is.
async fn export(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<MembersQuery>,
) -> Result<Response, ApiError> {
    caller.require(Need::ReadProfiles)?;
    defined(&app, &name)?;
    let mut after = cursor(q.cursor.as_deref())?;
    let r = app.state.reader()?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let fail = |e: ApiError| {
            tracing::warn!(error = ?e, "audience export failed");
            std::io::Error::other("export failed")
        };
        loop {
            let page = match r.audience_members(&name, after, EXPORT_PAGE) {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.blocking_send(Err(fail(e.into())));
                    return;
                }
            };
            let Some(last) = page.last().copied() else {
                return;
            };
            let mut buf = String::new();
            for pid in page {
                match export_line(&r, pid) {
                    Ok(line) => {
                        buf.push_str(&line);
                        buf.push('\n');
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Err(fail(e)));
                        return;
                    }
                }
            }
            if tx.blocking_send(Ok(buf)).is_err() {
                return; // the client went away
            }
            after = Some(last);
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverlapQuery {
    a: String,
    b: String,
}

/// How many people are in `a`, in `b`, in both, and in only one of them.
async fn overlap(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<OverlapQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    defined(&app, &q.a)?;
    defined(&app, &q.b)?;
    let r = app.state.reader()?;
    let t = Instant::now();
    let (a_size, b_size, both) = r.audience_overlap(&q.a, &q.b)?;
    let took_us = t.elapsed().as_micros() as u64;
    Ok(Json(json!({
        "a": q.a,
        "b": q.b,
        "a_size": a_size,
        "b_size": b_size,
        "both": both,
        "a_only": a_size - both,
        "b_only": b_size - both,
        "took_us": took_us,
    })))
}
