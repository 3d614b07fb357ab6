//! `/v1/admin/users`: web UI accounts (admin tokens only). `spoor users` uses this, so
//! accounts are managed while the server runs (the metadata store has one writer).

use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::ui::users::Role;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/users", get(list).post(create))
        .route("/v1/admin/users/{name}", delete(remove))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserIn {
    pub name: String,
    /// `admin`, `marketer` or `viewer`.
    pub role: String,
    pub password: String,
}

fn out(u: &crate::ui::users::User) -> Value {
    json!({"name": u.name, "role": u.role.as_str(), "created_at": u.created_at, "last_login": u.last_login})
}

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let users: Vec<Value> = app.users.list().iter().map(out).collect();
    Ok(Json(json!({ "users": users })))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<UserIn>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Need::Admin)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "unknown role {:?}; expected admin, marketer or viewer",
            body.role
        ))
    })?;
    let users = app.users.clone();
    // argon2 takes tens of milliseconds: off the async workers.
    let user = tokio::task::spawn_blocking(move || users.create(&body.name, role, &body.password))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(user = %user.name, role = user.role.as_str(), by = %caller.token_id, "ui user created");
    Ok((StatusCode::CREATED, Json(out(&user))))
}

async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let u = app.users.delete(&name)?;
    tracing::info!(user = %u.name, by = %caller.token_id, "ui user deleted");
    Ok(Json(json!({"deleted": true, "user": out(&u)})))
}
