//! `/v1/audiences`: define audiences (create, list, show, replace, delete), validate a rule
//! (text ⇄ JSON conversion) and preview one before saving it (`api/preview.rs`: evaluated
//! over a uniform random sample of the live profiles).
//!
//! A rule is given as text (`"rule"`) or in its JSON form (`"rule_json"`), never both. It is
//! checked against the computed traits and audiences that exist; a rule that does not parse
//! or names something unknown answers 400 `invalid_rule` with the position (`line`, `column`,
//! `offset`, `expected`, `found`). Every change goes through [`crate::defs::DefsHandle::update`],
//! which refuses cycles between audiences and persists the definitions; the processor then
//! backfills the changed audience (progress in `backfill`).
//!
//! Memberships (members, size, overlap) are served by `api/memberships.rs`.

use super::preview::{run_preview, PreviewOpts};
use crate::auth::{Caller, Need};
use crate::defs::{Backfill, DefsError};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use spoor_core::audience::{
    AudienceDefinition, Catalog, DefinitionError, Dependencies, ParseError, Rule, RuleError,
};
use std::collections::BTreeMap;
use std::time::Duration;

/// The largest definition body accepted (a rule is a few hundred bytes; this is generous).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// Bodies are never read past this (the check above then answers with a JSON error).
const READ_LIMIT: usize = 1024 * 1024;
/// Names that are routes under `/v1/audiences/`, so no audience may take them.
const RESERVED: [&str; 3] = ["validate", "preview", "overlap"];

const PREVIEW_SAMPLE_DEFAULT: usize = 10;
const PREVIEW_SAMPLE_MAX: usize = 100;
const PREVIEW_SCAN_DEFAULT: usize = 20_000;
const PREVIEW_SCAN_MAX: usize = 200_000;
/// A preview stops after this long and says so (`"truncated": true`).
const PREVIEW_BUDGET: Duration = Duration::from_secs(2);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audiences", get(list).post(create))
        .route("/v1/audiences/validate", post(validate))
        .route("/v1/audiences/preview", post(preview))
        .route(
            "/v1/audiences/{name}",
            get(show).put(replace).delete(remove),
        )
        .layer(DefaultBodyLimit::max(READ_LIMIT))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceIn {
    pub name: String,
    pub description: Option<String>,
    /// The rule as text.
    pub rule: Option<String>,
    /// The rule in its JSON form.
    pub rule_json: Option<Value>,
}

/// `PUT /v1/audiences/{name}`: the name is the path's; a missing description keeps the old.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceUpdateIn {
    pub description: Option<String>,
    pub rule: Option<String>,
    pub rule_json: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleIn {
    pub rule: Option<String>,
    pub rule_json: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewIn {
    pub rule: Option<String>,
    pub rule_json: Option<Value>,
    /// Members to show (default 10, at most 100).
    pub sample: Option<usize>,
    /// Profiles to evaluate at most (default 20 000, at most 200 000).
    pub scan: Option<usize>,
    /// Seeds the random sample (default: a fresh one): the same seed over the same data
    /// evaluates the same people.
    pub seed: Option<u64>,
}

// ------------------------------------------------------------------------------------------
// Helpers shared with `computed.rs`.

/// Parses a JSON body, bounded to [`MAX_BODY`], answering errors in the API's format.
pub(crate) fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_BODY {
        return Err(ApiError::TooLarge(format!(
            "the body is {} bytes; at most {MAX_BODY} are accepted",
            body.len()
        )));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidRequest(format!("invalid body: {e}")))
}

/// Names of audiences and computed traits: 1–64 of `A-Z a-z 0-9 _ -`.
pub(crate) fn check_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "{what} name {name:?} is not valid: use 1 to 64 letters, digits, `_` or `-`"
        )))
    }
}

pub(crate) fn time_json(ms: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

pub(crate) fn backfill_json(b: Option<&Backfill>) -> Value {
    b.map_or(
        Value::Null,
        |b| json!({"done": b.done, "total": b.total, "started": b.started}),
    )
}

pub(crate) fn now_ms(app: &AppState) -> i64 {
    app.clock.now().timestamp_millis()
}

/// Applies a change to the definitions. `refuse` is set by the change itself when it is
/// refused for a reason with its own status (404, 409); other refusals are mapped here
/// without exposing internals.
pub(crate) fn apply(
    app: &AppState,
    f: impl FnOnce(&mut spoor_core::audience::Definitions) -> Result<(), ApiError>,
) -> Result<std::sync::Arc<spoor_core::audience::Definitions>, ApiError> {
    let mut refused: Option<ApiError> = None;
    let slot = &mut refused;
    let out = app.defs.update(|d| {
        f(d).map_err(|e| {
            let msg = e.to_string();
            *slot = Some(e);
            msg
        })
    });
    out.map_err(|e| match e {
        DefsError::Rejected(msg) => refused.take().unwrap_or(ApiError::InvalidRequest(msg)),
        DefsError::Invalid(DefinitionError::Audience { name, reason }) => {
            ApiError::InvalidRule(format!("audience \"{name}\": {reason}"), None)
        }
        DefsError::Invalid(DefinitionError::Order(m)) => ApiError::InvalidRule(m, None),
        DefsError::Invalid(DefinitionError::Computed(m)) => ApiError::InvalidRequest(m),
        DefsError::Store(e) => ApiError::from(e),
    })
}

fn rule_error(e: ParseError) -> ApiError {
    ApiError::InvalidRule(format!("invalid rule: {e}"), Some(Box::new(e)))
}

/// The rule of a request: exactly one of text or JSON, checked against `catalog`.
pub(crate) fn read_rule(
    text: Option<&str>,
    json: Option<&Value>,
    catalog: &Catalog,
) -> Result<Rule, ApiError> {
    match (text, json) {
        (Some(t), None) => spoor_core::audience::parse_checked(t, catalog).map_err(rule_error),
        (None, Some(j)) => {
            spoor_core::audience::from_json(&j.to_string(), Some(catalog)).map_err(|e| match e {
                RuleError::Json(m) => ApiError::InvalidRule(m, None),
                RuleError::Invalid(pe) => ApiError::InvalidRule(
                    format!("invalid rule (position in its canonical text): {pe}"),
                    Some(Box::new(pe)),
                ),
            })
        }
        _ => Err(ApiError::InvalidRequest(
            "give exactly one of \"rule\" (the text form) or \"rule_json\" (the JSON form)".into(),
        )),
    }
}

/// A new audience naming itself is a cycle, not an unknown name: say so, at the position.
fn self_reference(e: ApiError, name: &str) -> ApiError {
    match e {
        ApiError::InvalidRule(_, Some(mut pe))
            if pe.found == format!("unknown audience \"{name}\"") =>
        {
            pe.expected = format!("an audience other than \"{name}\"");
            pe.found = format!("\"{name}\" itself (an audience cannot contain itself)");
            ApiError::InvalidRule(
                format!("audiences refer to each other in a cycle: {name} → {name}; {pe}"),
                Some(pe),
            )
        }
        other => other,
    }
}

fn rule_json(rule: &Rule) -> Value {
    serde_json::to_value(rule).unwrap_or(Value::Null)
}

/// The JSON shape of an audience definition.
pub fn audience_out(a: &AudienceDefinition, backfills: &BTreeMap<String, Backfill>) -> Value {
    json!({
        "name": a.name,
        "description": a.description,
        "rule": a.rule.to_string(),
        "rule_json": rule_json(&a.rule),
        "revision": a.revision,
        "created_at": time_json(a.created_ms),
        "updated_at": time_json(a.updated_ms),
        "backfill": backfill_json(backfills.get(&a.name)),
    })
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no audience {name:?}"))
}

/// Audiences whose rule reads `name`'s membership.
fn referrers(defs: &spoor_core::audience::Definitions, name: &str) -> Vec<String> {
    defs.audiences
        .values()
        .filter(|a| a.name != name && Dependencies::of(&a.rule).audiences.contains(name))
        .map(|a| a.name.clone())
        .collect()
}

// ------------------------------------------------------------------------------------------
// Handlers.

async fn list(State(app): State<AppState>, caller: Caller) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let defs = app.defs.current();
    let backfills = app.defs.backfills();
    let out: Vec<Value> = defs
        .audiences
        .values()
        .map(|a| audience_out(a, &backfills))
        .collect();
    Ok(Json(json!({ "audiences": out })))
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let defs = app.defs.current();
    let a = defs.audiences.get(&name).ok_or_else(|| not_found(&name))?;
    Ok(Json(audience_out(a, &app.defs.backfills())))
}

pub(crate) async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Need::Admin)?;
    let body: AudienceIn = parse_body(&body)?;
    check_name(&body.name, "audience")?;
    if RESERVED.contains(&body.name.as_str()) {
        return Err(ApiError::InvalidRequest(format!(
            "{:?} is reserved (it is a route under /v1/audiences/)",
            body.name
        )));
    }
    let name = body.name.clone();
    if app.defs.current().audiences.contains_key(&name) {
        return Err(ApiError::Conflict(format!(
            "audience {name:?} already exists"
        )));
    }
    let rule = read_rule(
        body.rule.as_deref(),
        body.rule_json.as_ref(),
        &app.defs.current().catalog(),
    )
    .map_err(|e| self_reference(e, &name))?;
    let now = now_ms(&app);
    let defs = apply(&app, |d| {
        if d.audiences.contains_key(&name) {
            return Err(ApiError::Conflict(format!(
                "audience {name:?} already exists"
            )));
        }
        d.audiences.insert(
            name.clone(),
            AudienceDefinition {
                name: name.clone(),
                description: body.description.unwrap_or_default(),
                rule,
                created_ms: now,
                updated_ms: now,
                revision: 1,
            },
        );
        Ok(())
    })?;
    let a = defs.audiences.get(&name).ok_or_else(|| not_found(&name))?;
    tracing::info!(audience = %name, by = %caller.token_id, "audience created");
    Ok((
        StatusCode::CREATED,
        Json(audience_out(a, &app.defs.backfills())),
    ))
}

/// Replaces the rule (and the description, when given). The revision is bumped when the
/// rule changes, which makes the processor backfill the audience.
pub(crate) async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let body: AudienceUpdateIn = parse_body(&body)?;
    let current = app.defs.current();
    if !current.audiences.contains_key(&name) {
        return Err(not_found(&name));
    }
    let rule = read_rule(
        body.rule.as_deref(),
        body.rule_json.as_ref(),
        &current.catalog(),
    )?;
    let now = now_ms(&app);
    let defs = apply(&app, |d| {
        let a = d.audiences.get_mut(&name).ok_or_else(|| not_found(&name))?;
        if a.rule != rule {
            a.rule = rule;
            a.revision += 1;
        }
        if let Some(desc) = body.description {
            a.description = desc;
        }
        a.updated_ms = now;
        Ok(())
    })?;
    let a = defs.audiences.get(&name).ok_or_else(|| not_found(&name))?;
    tracing::info!(audience = %name, revision = a.revision, by = %caller.token_id, "audience updated");
    Ok(Json(audience_out(a, &app.defs.backfills())))
}

/// Deletes an audience, unless another audience's rule refers to it (409, naming them).
async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let mut gone = None;
    apply(&app, |d| {
        if !d.audiences.contains_key(&name) {
            return Err(not_found(&name));
        }
        let users = referrers(d, &name);
        if !users.is_empty() {
            return Err(ApiError::Conflict(format!(
                "audience {name:?} is used by audience{} {}; change or delete {} first",
                if users.len() > 1 { "s" } else { "" },
                users
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                if users.len() > 1 { "them" } else { "it" },
            )));
        }
        gone = d.audiences.remove(&name);
        Ok(())
    })?;
    let a = gone.ok_or_else(|| not_found(&name))?;
    tracing::info!(audience = %name, by = %caller.token_id, "audience deleted");
    Ok(Json(
        json!({"deleted": true, "audience": audience_out(&a, &BTreeMap::new())}),
    ))
}

/// Checks a rule and converts it: the canonical text, the JSON form and what it reads.
pub(crate) async fn validate(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let body: RuleIn = parse_body(&body)?;
    let rule = read_rule(
        body.rule.as_deref(),
        body.rule_json.as_ref(),
        &app.defs.current().catalog(),
    )?;
    Ok(Json(json!({
        "valid": true,
        "text": rule.to_string(),
        "rule_json": rule_json(&rule),
        "dependencies": Dependencies::of(&rule),
    })))
}

/// Evaluates a rule over a uniform random sample of the live profiles, now: how many match
/// (exact when everyone was evaluated, otherwise an estimate with its 95 % interval) and who.
async fn preview(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let body: PreviewIn = parse_body(&body)?;
    let rule = read_rule(
        body.rule.as_deref(),
        body.rule_json.as_ref(),
        &app.defs.current().catalog(),
    )?;
    let sample = body
        .sample
        .unwrap_or(PREVIEW_SAMPLE_DEFAULT)
        .min(PREVIEW_SAMPLE_MAX);
    let scan = body
        .scan
        .unwrap_or(PREVIEW_SCAN_DEFAULT)
        .clamp(1, PREVIEW_SCAN_MAX);
    let opts = PreviewOpts {
        sample,
        scan,
        budget: PREVIEW_BUDGET,
        seed: body.seed.unwrap_or_else(rand::random),
    };
    let out = tokio::task::spawn_blocking(move || run_preview(&app, &rule, opts))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(out))
}
