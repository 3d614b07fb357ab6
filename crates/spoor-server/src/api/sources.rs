//! `/v1/admin/sources`: list, create (the write key is shown once), revoke.

use crate::auth::{Caller, Need, SourceOut};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/sources", get(list).post(create))
        .route("/v1/admin/sources/{id}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceIn {
    pub name: String,
    /// A chosen write key (for automation); random when absent.
    pub write_key: Option<String>,
}

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadSources)?;
    let sources: Vec<SourceOut> = app.auth.sources()?.iter().map(SourceOut::from).collect();
    Ok(Json(json!({ "sources": sources })))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<SourceIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::WriteSources)?;
    let (source, key) = app.auth.create_source(&body.name, body.write_key)?;
    tracing::info!(source = %source.id, name = %source.name, by = %caller.token_id, "source created");
    Ok(Json(
        json!({ "source": SourceOut::from(&source), "write_key": key }),
    ))
}

async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::WriteSources)?;
    let source = app.auth.revoke_source(&id)?;
    tracing::info!(source = %source.id, by = %caller.token_id, "source revoked");
    Ok(Json(json!({ "source": SourceOut::from(&source) })))
}
