//! `/v1/computed-traits`: define computed traits (create, list, show, replace, delete).
//!
//! The body is the computed trait's JSON form (`{"name", "aggregation", "property", "event",
//! "window"}`, see `spoor_core::computed`) plus an optional `"description"`. A definition is
//! validated (400 with the reason); deleting one that an audience reads is refused (409,
//! naming the audiences). The processor backfills a new or changed trait (`backfill`).

use crate::api::audiences::{apply, backfill_json, check_name, now_ms, parse_body, time_json};
use crate::auth::{Caller, Need};
use crate::defs::Backfill;
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use spoor_core::audience::{ComputedDefinition, Definitions, Dependencies};
use spoor_core::computed::ComputedDef;
use std::collections::BTreeMap;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/computed-traits", get(list).post(create))
        .route(
            "/v1/computed-traits/{name}",
            get(show).put(replace).delete(remove),
        )
        .layer(DefaultBodyLimit::max(1024 * 1024))
}

/// The JSON shape of a computed trait definition.
pub fn computed_out(c: &ComputedDefinition, backfills: &BTreeMap<String, Backfill>) -> Value {
    let mut out = match serde_json::to_value(&c.def) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };
    out.insert("description".into(), json!(c.description));
    out.insert("revision".into(), json!(c.revision));
    out.insert("created_at".into(), time_json(c.created_ms));
    out.insert("updated_at".into(), time_json(c.updated_ms));
    out.insert("backfill".into(), backfill_json(backfills.get(&c.def.name)));
    Value::Object(out)
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no computed trait {name:?}"))
}

/// Reads a definition body: the `ComputedDef` JSON plus an optional description. With
/// `path_name` (PUT), the body's name may be left out but must match if given.
fn read_def(
    body: &Bytes,
    path_name: Option<&str>,
) -> Result<(ComputedDef, Option<String>), ApiError> {
    let mut m: Map<String, Value> = parse_body(body)?;
    let description = match m.remove("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "\"description\" must be a string".into(),
            ))
        }
    };
    if let Some(p) = path_name {
        match m.get("name") {
            None => {
                m.insert("name".into(), json!(p));
            }
            Some(Value::String(n)) if n == p => {}
            Some(other) => {
                return Err(ApiError::InvalidRequest(format!(
                "the body's name {other} differs from the path's {p:?} (renaming is not supported)"
            )))
            }
        }
    }
    let def: ComputedDef = serde_json::from_value(Value::Object(m))
        .map_err(|e| ApiError::InvalidRequest(format!("invalid computed trait: {e}")))?;
    check_name(&def.name, "computed trait")?;
    def.validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    Ok((def, description))
}

/// Audiences whose rule reads the computed trait `name`.
fn users_of(defs: &Definitions, name: &str) -> Vec<String> {
    defs.audiences
        .values()
        .filter(|a| Dependencies::of(&a.rule).computed.contains(name))
        .map(|a| a.name.clone())
        .collect()
}

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let defs = app.defs.current();
    let backfills = app.defs.backfills();
    let out: Vec<Value> = defs
        .computed
        .values()
        .map(|c| computed_out(c, &backfills))
        .collect();
    Ok(Json(json!({ "computed_traits": out })))
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let defs = app.defs.current();
    let c = defs.computed.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(computed_out(c, &app.defs.backfills())))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Need::Admin)?;
    let (def, description) = read_def(&body, None)?;
    let name = def.name.clone();
    let now = now_ms(&app);
    let defs = apply(&app, |d| {
        if d.computed.contains_key(&name) {
            return Err(ApiError::Conflict(format!(
                "computed trait {name:?} already exists"
            )));
        }
        d.computed.insert(
            name.clone(),
            ComputedDefinition {
                def,
                description: description.unwrap_or_default(),
                created_ms: now,
                updated_ms: now,
                revision: 1,
            },
        );
        Ok(())
    })?;
    let c = defs.computed.get(&name).ok_or_else(|| not_found(&name))?;
    tracing::info!(computed = %name, by = %caller.token_id, "computed trait created");
    Ok((
        StatusCode::CREATED,
        Json(computed_out(c, &app.defs.backfills())),
    ))
}

/// Replaces a definition; the revision is bumped (and the trait backfilled) when it changes.
async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    if !app.defs.current().computed.contains_key(&name) {
        return Err(not_found(&name));
    }
    let (def, description) = read_def(&body, Some(&name))?;
    let now = now_ms(&app);
    let defs = apply(&app, |d| {
        let c = d.computed.get_mut(&name).ok_or_else(|| not_found(&name))?;
        if c.def != def {
            c.def = def;
            c.revision += 1;
        }
        if let Some(desc) = description {
            c.description = desc;
        }
        c.updated_ms = now;
        Ok(())
    })?;
    let c = defs.computed.get(&name).ok_or_else(|| not_found(&name))?;
    tracing::info!(computed = %name, revision = c.revision, by = %caller.token_id, "computed trait updated");
    Ok(Json(computed_out(c, &app.defs.backfills())))
}

async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let mut gone = None;
    apply(&app, |d| {
        if !d.computed.contains_key(&name) {
            return Err(not_found(&name));
        }
        let users = users_of(d, &name);
        if !users.is_empty() {
            return Err(ApiError::Conflict(format!(
                "computed trait {name:?} is used by audience{} {}; change or delete {} first",
                if users.len() > 1 { "s" } else { "" },
                users
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() > 1 { "them" } else { "it" },
            )));
        }
        gone = d.computed.remove(&name);
        Ok(())
    })?;
    let c = gone.ok_or_else(|| not_found(&name))?;
    tracing::info!(computed = %name, by = %caller.token_id, "computed trait deleted");
    Ok(Json(
        json!({"deleted": true, "computed_trait": computed_out(&c, &BTreeMap::new())}),
    ))
}
