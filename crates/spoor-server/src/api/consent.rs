//! The Consent API: a person's consent per purpose, and its history.
//!
//! - `GET /v1/profiles/{ref}/consent`: the current value of every configured purpose, with
//!   the statement that set it (or `"default": true`).
//! - `GET /v1/profiles/{ref}/consent/history?purpose=`: every kept statement, newest first.
//! - `PUT /v1/profiles/{ref}/consent` `{"purposes": {"advertising": "denied"}}`: records a
//!   choice made elsewhere (a preference centre, a support call).
//!
//! A PUT does not change the state directly: it appends an event to the log, from the
//! internal source [`CONSENT_API_SOURCE`], which the processor applies like any other. The
//! log is the source of truth, so the choice is as durable as an ingested event, survives
//! `spoor rebuild`, and is ordered by event time with every other statement. The answer
//! waits (a few seconds at most) until the processor applied it, so a GET right after sees it.

use super::profiles::resolve_ref;
use crate::auth::{Caller, Need};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use spoor_core::consent::{
    Consent, ConsentRecord, ConsentRules, ConsentValue, CONSENT_API_SOURCE, CONSENT_EVENT,
};
use spoor_core::identity::ProfileId;
use spoor_core::ingest::{normalize, IngestContext};
use spoor_core::SourceId;
use spoor_store::log::RecordIn;
use spoor_store::state::StateReader;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/profiles/{pref}/consent", get(show).put(set))
        .route("/v1/profiles/{pref}/consent/history", get(history))
}

fn ms(t: i64) -> Value {
    chrono::DateTime::from_timestamp_millis(t)
        .map(|d| json!(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
        .unwrap_or(Value::Null)
}

fn record_json(r: &ConsentRecord) -> Value {
    json!({
        "purpose": r.purpose,
        "value": r.value,
        "at": ms(r.at_ms),
        "via": r.via,
        "source_id": r.source_id,
        "message_id": r.message_id,
        "seq": r.seq,
    })
}

/// Current consent per configured purpose — what the Profile API shows under `consent`.
pub fn consent_json(rules: &ConsentRules, c: &Consent) -> Value {
    let mut out = Map::new();
    for p in rules.purposes() {
        let v = match c.current.get(p) {
            Some(r) => {
                json!({"value": r.value, "at": ms(r.at_ms), "via": r.via, "source_id": r.source_id, "message_id": r.message_id})
            }
            None => json!({"value": rules.default_of(p), "default": true}),
        };
        out.insert(p.clone(), v);
    }
    Value::Object(out)
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let r = app.state.reader()?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let c = consent_of(&r, pid)?;
    Ok(Json(
        json!({"profile_id": pid.to_string(), "consent": consent_json(&app.consent, &c)}),
    ))
}

fn consent_of(r: &StateReader, pid: ProfileId) -> Result<Consent, ApiError> {
    Ok(r.profile(pid)?
        .map(|p| Arc::unwrap_or_clone(p.consent))
        .unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    purpose: Option<String>,
}

async fn history(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    if let Some(p) = &q.purpose {
        known(&app.consent, p)?;
    }
    let r = app.state.reader()?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let c = consent_of(&r, pid)?;
    let rows: Vec<Value> = c
        .history
        .iter()
        .rev()
        .filter(|x| q.purpose.as_deref().is_none_or(|p| p == x.purpose))
        .map(record_json)
        .collect();
    Ok(Json(
        json!({"profile_id": pid.to_string(), "history": rows}),
    ))
}

fn known(rules: &ConsentRules, p: &str) -> Result<(), ApiError> {
    if rules.is_purpose(p) {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "unknown purpose {p:?}; the configured purposes are {:?}",
            rules.purposes()
        )))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsentIn {
    purposes: Map<String, Value>,
}

/// The identifier the consent event carries, so the processor resolves it to this person:
/// user id, else anonymous id, else device id (identifiers that are not traits, so the
/// event changes nothing else about the profile).
fn anchor(r: &StateReader, pid: ProfileId) -> Result<(&'static str, String), ApiError> {
    let ident = r
        .identity(pid)?
        .ok_or_else(|| ApiError::NotFound(format!("no profile {pid}")))?;
    for kind in ["user_id", "anonymous_id", "device_id"] {
        if let Some(l) = ident
            .identifiers
            .iter()
            .find(|l| l.identifier.kind.as_str() == kind)
        {
            return Ok((kind, l.identifier.value.clone()));
        }
    }
    Err(ApiError::Conflict(format!(
        "profile {pid} has no user id, anonymous id or device id to record consent under"
    )))
}

async fn set(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Json(body): Json<ConsentIn>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    if body.purposes.is_empty() {
        return Err(ApiError::InvalidRequest(
            "purposes is empty; give e.g. {\"purposes\": {\"advertising\": \"denied\"}}".into(),
        ));
    }
    let mut purposes = Map::new();
    for (p, v) in &body.purposes {
        known(&app.consent, p)?;
        let value = ConsentValue::from_json(v).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "purposes.{p}: {v} is not \"granted\" or \"denied\" (or true/false)"
            ))
        })?;
        purposes.insert(p.clone(), json!(value));
    }
    let r = app.state.reader()?;
    let pid = resolve_ref(&app, &r, &pref)?;
    let (kind, value) = anchor(&r, pid)?;
    let now = app.clock.now();
    let message_id = format!("consent-{}", uuid::Uuid::new_v4());
    let mut msg = json!({
        "type": "track",
        "event": CONSENT_EVENT,
        "messageId": message_id,
        "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "context": {"consent": {"purposes": purposes}},
        "properties": {"purposes": purposes, "set_by": caller.token_id.to_string()},
    });
    match kind {
        "user_id" => msg["userId"] = json!(value),
        "anonymous_id" => msg["anonymousId"] = json!(value),
        _ => msg["context"]["device"] = json!({"id": value}),
    }
    let raw = serde_json::value::to_raw_value(&msg).map_err(ApiError::internal)?;
    let source = SourceId::parse(CONSENT_API_SOURCE)
        .ok_or_else(|| ApiError::internal("the consent source id does not parse"))?;
    let limits = app.cfg.ingest.limits();
    let gen = || uuid::Uuid::new_v4().to_string();
    let ctx = IngestContext {
        source_id: &source,
        received_at: now,
        peer_ip: None,
        path_type: None,
        batch_sent_at: None,
        batch_context: None,
        batch_integrations: None,
        limits: &limits,
        new_message_id: &gen,
    };
    let n = normalize(&raw, &ctx)
        .map_err(|e| ApiError::internal(format!("consent event rejected: {}", e.message)))?;
    let out = app
        .writer
        .append(vec![RecordIn {
            timestamp_ms: n.timestamp_ms,
            received_ms: n.received_ms,
            dedupe_key: n.dedupe_key,
            payload: n.bytes,
        }])
        .await?;
    let seq = out.first_seq.unwrap_or(0);
    // Read your writes: wait (bounded) for the processor to apply it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut applied = false;
    while Instant::now() < deadline {
        if app.processor.status.processed_seq.load(Ordering::Acquire) >= seq {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = app.state.reader()?;
    let live = r.resolve(pid)?.unwrap_or(pid);
    let c = consent_of(&r, live)?;
    Ok(Json(json!({
        "profile_id": live.to_string(),
        "message_id": message_id,
        "seq": seq,
        "applied": applied,
        "consent": consent_json(&app.consent, &c),
    })))
}
