//! `/v1/admin/tokens`: list, create (the secret is shown once), revoke.

use crate::auth::{Caller, Need, Scope, TokenOut};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tokens", get(list).post(create))
        .route("/v1/admin/tokens/{id}", delete(revoke))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIn {
    pub name: String,
    /// Any of `admin`, `read`, `events`, `sources`, `tokens`.
    pub scopes: Vec<String>,
}

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ManageTokens)?;
    let tokens: Vec<TokenOut> = app.auth.tokens()?.iter().map(TokenOut::from).collect();
    Ok(Json(json!({ "tokens": tokens })))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    Json(body): Json<TokenIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ManageTokens)?;
    let scopes = body
        .scopes
        .iter()
        .map(|s| {
            Scope::parse(s).ok_or_else(|| {
                ApiError::InvalidRequest(format!(
                    "unknown scope {s:?}; expected admin, read, events, sources, tokens or profiles"
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    // A token cannot hand out more than it has.
    if !caller.scopes.contains(&Scope::Admin) && scopes.contains(&Scope::Admin) {
        return Err(ApiError::Forbidden(
            "only an admin token can create an admin token".into(),
        ));
    }
    let (token, secret) = app.auth.create_token(&body.name, scopes, None)?;
    tracing::info!(token = %token.id, name = %token.name, by = %caller.token_id, "token created");
    Ok(Json(
        json!({ "token": TokenOut::from(&token), "secret": secret }),
    ))
}

async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ManageTokens)?;
    let token = app.auth.revoke_token(&id)?;
    tracing::info!(token = %token.id, by = %caller.token_id, "token revoked");
    Ok(Json(json!({ "token": TokenOut::from(&token) })))
}
