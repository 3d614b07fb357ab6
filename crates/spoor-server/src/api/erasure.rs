//! `/v1/privacy/erasures…` and `/v1/privacy/suppressions…`: the right to erasure (admin).
//! An erasure is a job run by the processor (the single writer); the request stores it and
//! answers at once (202) with its id, or waits for it with `?wait=true`.

use super::profiles::resolve_ref;
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/privacy/erasures", get(list).post(create))
        .route("/v1/privacy/erasures/{id}", get(show))
        .route("/v1/privacy/suppressions", get(suppressions))
        .route("/v1/privacy/suppressions/{hash}", delete(unsuppress))
        .route("/v1/privacy/retention", get(retention))
        .route(
            "/v1/privacy/retention/policies",
            axum::routing::put(set_policies),
        )
        .route(
            "/v1/privacy/retention/run",
            axum::routing::post(run_retention),
        )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesIn {
    pub policies: Vec<crate::erasure::retention::RetentionPolicy>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunQ {
    #[serde(default)]
    pub dry_run: bool,
}

async fn retention(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let api = app.privacy.api_policies().map_err(ApiError::Internal)?;
    let last = app.privacy.last_retention().map_err(ApiError::Internal)?;
    Ok(Json(json!({
        "interval_minutes": app.cfg.retention.interval_minutes,
        "config_policies": app.cfg.retention.policies,
        "api_policies": api,
        "last_run": last,
    })))
}

async fn set_policies(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<PoliciesIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    for p in &body.policies {
        p.validate().map_err(ApiError::InvalidRequest)?;
    }
    app.privacy
        .set_api_policies(&body.policies)
        .map_err(ApiError::Internal)?;
    tracing::info!(policies = body.policies.len(), by = %caller.token_id, "retention policies set");
    Ok(Json(json!({ "api_policies": body.policies })))
}

async fn run_retention(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<RunQ>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let report = app
        .processor
        .retention(q.dry_run)
        .await
        .map_err(ApiError::Conflict)?;
    Ok(Json(json!({ "retention": report })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErasureIn {
    /// `type:value` (any identifier type) or a profile id.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Keep hashed identifiers so new events for the person are dropped (default from
    /// `[erasure] suppress_by_default`).
    #[serde(default)]
    pub suppress: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQ {
    #[serde(default)]
    pub wait: bool,
}

pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Query(q): Query<WaitQ>,
    Json(body): Json<ErasureIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Need::Admin)?;
    let r = app.state.reader()?;
    let pid = resolve_ref(&app, &r, body.reference.trim())?;
    let suppress = body.suppress.unwrap_or(app.cfg.erasure.suppress_by_default);
    let now = app.clock.now().timestamp_millis();
    let job = app
        .privacy
        .create_job(pid.to_string(), suppress, now)
        .map_err(ApiError::Internal)?;
    // The reference is personal data: the log line names the job and the profile only.
    tracing::info!(job = %job.id, profile = %pid, by = %caller.token_id, "erasure requested");
    let id = job.id.clone();
    match app.processor.erase(job, q.wait).await {
        Ok(Some(done)) => Ok((StatusCode::OK, Json(json!({ "erasure": done })))),
        Ok(None) => {
            let job = app.privacy.job(&id).map_err(ApiError::Internal)?;
            Ok((StatusCode::ACCEPTED, Json(json!({ "erasure": job }))))
        }
        Err(e) => Err(ApiError::Conflict(format!("erasure {id} failed: {e}"))),
    }
}

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let mut jobs = app.privacy.jobs().map_err(ApiError::Internal)?;
    jobs.reverse();
    let pending = app.privacy.compact_pending().map_err(ApiError::Internal)?;
    Ok(Json(
        json!({ "erasures": jobs, "compaction_pending": pending }),
    ))
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let job = app
        .privacy
        .job(&id)
        .map_err(ApiError::Internal)?
        .ok_or_else(|| ApiError::NotFound(format!("no erasure {id:?}")))?;
    Ok(Json(json!({ "erasure": job })))
}

async fn suppressions(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let list = app.privacy.suppressions().map_err(ApiError::Internal)?;
    Ok(Json(json!({ "suppressions": list })))
}

async fn unsuppress(
    State(app): State<AppState>,
    caller: Caller,
    Path(hash): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::InvalidRequest(format!(
            "{hash:?} is not a SHA-256 hash (64 hex digits)"
        )));
    }
    if !app.privacy.unsuppress(&hash).map_err(ApiError::Internal)? {
        return Err(ApiError::NotFound(format!("no suppression {hash}")));
    }
    tracing::info!(hash = %hash, by = %caller.token_id, "suppression removed");
    Ok(Json(json!({ "removed": hash.to_ascii_lowercase() })))
}
