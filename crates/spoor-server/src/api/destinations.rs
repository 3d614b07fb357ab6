//! `/v1/destinations`: configure destinations (create, list, show, replace, delete), send a
//! test request, look at and replay dead letters, resume a paused destination; and
//! `/v1/profiles/{ref}/deliveries`, what was delivered about one person.
//!
//! Definitions hold secrets (the signing secret, receivers' credentials), so every
//! destination endpoint needs an `admin` token. A change stops the destination's worker,
//! applies the change and starts it again (see [`crate::destinations::Destinations::change`]).

use super::audiences::parse_body;
use crate::auth::{Caller, Need};
use crate::destinations::model::{
    AudienceSubscription, Destination, DestinationType, EventSubscription, RetryPolicy,
    Subscriptions, WebhookSettings,
};
use crate::destinations::nats::NatsSettings;
use crate::destinations::postgres::PostgresSettings;
use crate::destinations::source::Compiled;
use crate::destinations::store::DeliveryState;
use crate::destinations::{nats, postgres, sign, webhook, Destinations};
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

const READ_LIMIT: usize = 1024 * 1024;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/destinations", get(list).post(create))
        .route(
            "/v1/destinations/{name}",
            get(show).put(replace).delete(remove),
        )
        .route("/v1/destinations/{name}/test", post(test))
        .route("/v1/destinations/{name}/dead-letters", get(dead_letters))
        .route("/v1/destinations/{name}/replay", post(replay))
        .route("/v1/destinations/{name}/resume", post(resume))
        .route("/v1/profiles/{pref}/deliveries", get(profile_log))
        .layer(DefaultBodyLimit::max(READ_LIMIT))
}

/// A destination as given by a client. `PUT` takes the same body (its name must match).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationIn {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: DestinationType,
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub subscriptions: Subscriptions,
    /// The settings of the type (exactly the one `type` names).
    #[serde(default)]
    pub webhook: Option<WebhookSettings>,
    #[serde(default)]
    pub postgres: Option<PostgresSettings>,
    #[serde(default)]
    pub nats: Option<NatsSettings>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `whsec_…` to use instead of a generated one (e.g. when moving a receiver over).
    pub secret: Option<String>,
    /// Where a new destination starts: `now` (default) or `beginning` (all history).
    pub start: Option<String>,
}

fn not_found(name: &str) -> ApiError {
    ApiError::NotFound(format!("no destination {name:?}"))
}

/// The stored definition, or 404.
fn load(app: &AppState, name: &str) -> Result<Destination, ApiError> {
    app.destinations
        .store
        .destination(name)?
        .ok_or_else(|| not_found(name))
}

fn stats(s: &DeliveryState, last_seq: u64) -> Value {
    let avg = s.latency_sum_ms.checked_div(s.successes).unwrap_or(0);
    json!({
        "delivered": s.delivered,
        "dead_letters": s.dead,
        "retries": s.retries,
        "requests": s.requests,
        "retrying": s.retrying,
        "paused": s.paused,
        "failing_since": s.failing_since_ms.and_then(chrono::DateTime::from_timestamp_millis),
        "last_error": s.last_error,
        "last_error_at": s.last_error_at,
        "last_success_at": s.last_success_at,
        "latency_ms": {"last": s.latency_last_ms, "avg": avg, "max": s.latency_max_ms},
        "delay_ms_last": s.delay_last_ms,
        "event_cursor": s.event_cursor,
        "change_cursor": s.change_cursor,
        "events_behind": last_seq.saturating_sub(s.event_cursor),
    })
}

fn out(app: &AppState, d: &Destination, with_secret: bool) -> Result<Value, ApiError> {
    let mut v = serde_json::to_value(d).map_err(ApiError::internal)?;
    if !with_secret {
        if let Some(o) = v.as_object_mut() {
            o.remove("secret");
        }
    }
    let s = app.destinations.store.state(&d.name)?;
    v["status"] = json!(if !d.enabled {
        "disabled"
    } else if s.paused.is_some() {
        "paused"
    } else if s.retrying.is_some() {
        "retrying"
    } else {
        "active"
    });
    v["stats"] = stats(&s, app.reader.last_seq());
    Ok(v)
}

fn build(
    name: String,
    body: DestinationIn,
    old: Option<&Destination>,
) -> Result<Destination, ApiError> {
    let now = chrono::Utc::now();
    let secret = match (&body.secret, old) {
        (Some(s), _) => s.clone(),
        (None, Some(o)) => o.secret.clone(),
        (None, None) => sign::new_secret(),
    };
    let mut subscriptions = body.subscriptions;
    // A database sync with no subscriptions mirrors everything: every profile an event
    // touches and every audience.
    if body.kind == DestinationType::Postgres
        && subscriptions.events.is_empty()
        && subscriptions.audiences.is_empty()
    {
        subscriptions.events.push(EventSubscription::default());
        subscriptions.audiences.push(AudienceSubscription {
            audience: "*".into(),
            entered: true,
            exited: true,
        });
    }
    let d = Destination {
        name,
        kind: body.kind,
        enabled: body.enabled.unwrap_or(true),
        purposes: body.purposes,
        subscriptions,
        webhook: body.webhook,
        postgres: body.postgres,
        nats: body.nats,
        retry: body.retry,
        secret,
        created_at: old.map_or(now, |o| o.created_at),
        updated_at: now,
    };
    d.validate().map_err(ApiError::InvalidRequest)?;
    Ok(d)
}

/// A database or broker that cannot be reached when the destination is saved is refused
/// with the reason (a webhook receiver may legitimately be down: it is not called).
async fn reachable(d: &Destination) -> Result<(), ApiError> {
    if !d.enabled {
        return Ok(());
    }
    if let Some(p) = &d.postgres {
        postgres::connect(p)
            .await
            .map_err(|e| ApiError::InvalidRequest(format!("postgres: {e}")))?;
    }
    if let Some(n) = &d.nats {
        nats::connect(n)
            .await
            .map_err(|e| ApiError::InvalidRequest(format!("nats: {e}")))?;
    }
    Ok(())
}

pub(crate) async fn list(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let all = app.destinations.store.destinations()?;
    let v: Vec<Value> = all
        .iter()
        .map(|d| out(&app, d, false))
        .collect::<Result<_, _>>()?;
    Ok(Json(json!({ "destinations": v })))
}

async fn create(
    State(app): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(axum::http::StatusCode, Json<Value>), ApiError> {
    caller.require(Need::Admin)?;
    let mut body: DestinationIn = parse_body(&body)?;
    let name = body
        .name
        .take()
        .ok_or_else(|| ApiError::InvalidRequest("name is required".into()))?;
    let start = body.start.take();
    let d = build(name.clone(), body, None)?;
    crate::privacy::enforce::check_purposes(&app.consent, &d.purposes)
        .map_err(ApiError::InvalidRequest)?;
    reachable(&d).await?;
    let state = match start.as_deref() {
        None | Some("now") => Destinations::state_at_end(&app.reader, &app.state)?,
        Some("beginning") => DeliveryState::default(),
        Some(o) => {
            return Err(ApiError::InvalidRequest(format!(
                "start {o:?} must be \"now\" or \"beginning\""
            )))
        }
    };
    let created = app
        .destinations
        .change(&name, |s| {
            if s.destination(&name)?.is_some() {
                return Ok(false);
            }
            s.put(&d, Some(&state)).map(|_| true)
        })
        .await??;
    if !created {
        return Err(ApiError::Conflict(format!("destination {name:?} exists")));
    }
    tracing::info!(destination = %name, by = %caller.token_id, "destination created");
    Ok((axum::http::StatusCode::CREATED, Json(out(&app, &d, true)?)))
}

async fn show(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let d = load(&app, &name)?;
    Ok(Json(out(&app, &d, true)?))
}

async fn replace(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let mut body: DestinationIn = parse_body(&body)?;
    if body.name.take().is_some_and(|n| n != name) {
        return Err(ApiError::InvalidRequest(
            "a destination cannot be renamed; create a new one".into(),
        ));
    }
    if body.start.is_some() {
        return Err(ApiError::InvalidRequest(
            "start applies to new destinations only".into(),
        ));
    }
    let old = load(&app, &name)?;
    let d = build(name.clone(), body, Some(&old))?;
    crate::privacy::enforce::check_purposes(&app.consent, &d.purposes)
        .map_err(ApiError::InvalidRequest)?;
    reachable(&d).await?;
    app.destinations
        .change(&name, |s| s.put(&d, None))
        .await??;
    tracing::info!(destination = %name, by = %caller.token_id, "destination updated");
    Ok(Json(out(&app, &d, true)?))
}

async fn remove(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let existed = app
        .destinations
        .change(&name, |s| s.delete(&name))
        .await??;
    if !existed {
        return Err(not_found(&name));
    }
    tracing::info!(destination = %name, by = %caller.token_id, "destination deleted");
    Ok(Json(json!({"deleted": true, "name": name})))
}

/// Sends a sample item (an event, or an audience entry if it takes no events) through the
/// mapping, signing and headers of the destination, once, and shows what came back; for
/// NATS publishes it and shows the ack; for PostgreSQL connects, creates the tables if
/// missing and counts their rows (writing no sample). It counts in no statistic and is not
/// retried.
async fn test(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let d = load(&app, &name)?;
    let c = Compiled::new(&d).map_err(ApiError::InvalidRequest)?;
    let now = chrono::Utc::now();
    let id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
    let item = if d.subscriptions.events.is_empty() && !d.subscriptions.audiences.is_empty() {
        json!({"id": id, "kind": "audience", "destination": name, "test": true, "change": 0,
               "audience": d.subscriptions.audiences[0].audience, "action": "entered",
               "profile_id": "prof_test", "at": now, "cause": "event", "seq": 0})
    } else {
        json!({"id": id, "kind": "event", "destination": name, "test": true, "seq": 0,
               "event": {"v": 1, "source_id": "src_test", "type": "track",
                         "message_id": "test", "received_at": now, "timestamp": now,
                         "message": {"type": "track", "event": "Spoor Test",
                                     "userId": "test-user", "properties": {"test": true}}}})
    };
    match d.kind {
        DestinationType::Webhook => {}
        DestinationType::Postgres => {
            let Some(p) = &d.postgres else {
                return Err(ApiError::internal("postgres settings missing"));
            };
            return Ok(Json(
                json!({"destination": name, "result": postgres::check(p).await}),
            ));
        }
        DestinationType::Nats => {
            let Some(n) = &d.nats else {
                return Err(ApiError::internal("nats settings missing"));
            };
            return Ok(Json(
                json!({"destination": name, "sent": item, "result": nats::check(n, &id, &item).await}),
            ));
        }
    }
    let body =
        webhook::body(&d, &c, std::slice::from_ref(&item)).map_err(ApiError::InvalidRequest)?;
    let sent: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let outcome = webhook::send(&app.destinations.http, &d, &id, body).await;
    let result = match outcome {
        webhook::Outcome::Delivered {
            status,
            latency_ms,
            body,
        } => json!({"ok": true, "status": status, "latency_ms": latency_ms, "response": body}),
        webhook::Outcome::Retry {
            status,
            error,
            latency_ms,
            ..
        } => {
            json!({"ok": false, "retryable": true, "status": status, "error": error, "latency_ms": latency_ms})
        }
        webhook::Outcome::Permanent { status, error } => {
            json!({"ok": false, "retryable": false, "status": status, "error": error})
        }
    };
    Ok(Json(
        json!({"destination": name, "webhook_id": id, "sent": sent, "result": result}),
    ))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub after: Option<u64>,
    pub limit: Option<usize>,
}

pub(crate) async fn dead_letters(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    if app.destinations.store.destination(&name)?.is_none() {
        return Err(not_found(&name));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = app
        .destinations
        .store
        .dead_letters(&name, q.after.unwrap_or(0), limit)?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    Ok(Json(json!({"dead_letters": rows, "next_after": next})))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayIn {
    /// Dead letters to replay; all when absent.
    pub ids: Option<Vec<u64>>,
}

/// Moves dead letters to the replay queue; the worker sends them before new items, with
/// their original idempotency keys, mapped with the current mapping.
pub(crate) async fn replay(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let body: ReplayIn = if body.is_empty() {
        ReplayIn::default()
    } else {
        parse_body(&body)?
    };
    if app.destinations.store.destination(&name)?.is_none() {
        return Err(not_found(&name));
    }
    let moved = app
        .destinations
        .change(&name, |s| s.replay(&name, body.ids.as_deref()))
        .await??;
    tracing::info!(destination = %name, moved, by = %caller.token_id, "dead letters replayed");
    Ok(Json(json!({"replaying": moved})))
}

/// Resumes a destination Spoor paused; it retries where it stopped.
async fn resume(
    State(app): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::Admin)?;
    let d = load(&app, &name)?;
    app.destinations
        .change(&name, |s| {
            let mut st = s.state(&name)?;
            st.paused = None;
            st.failing_since_ms = None;
            let durable = crate::destinations::store::Commit {
                durable: true,
                ..Default::default()
            };
            s.commit(&name, &mut st, durable)
        })
        .await??;
    Ok(Json(out(&app, &d, false)?))
}

#[derive(Debug, Deserialize)]
pub struct LogQuery {
    pub limit: Option<usize>,
}

/// What was delivered (or dead-lettered) about one person, newest first, over all of
/// their merged profiles and identifiers.
pub(crate) async fn profile_log(
    State(app): State<AppState>,
    caller: Caller,
    Path(pref): Path<String>,
    Query(q): Query<LogQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Need::ReadProfiles)?;
    let r = app.state.reader()?;
    let pid = super::profiles::resolve_ref(&app, &r, &pref)?;
    let mut keys: Vec<String> = r.cluster(pid)?.iter().map(ToString::to_string).collect();
    for p in r.cluster(pid)? {
        if let Some(ident) = r.identity(p)? {
            for l in &ident.identifiers {
                let k = l.identifier.kind.as_str();
                if k == "user_id" || k == "anonymous_id" {
                    keys.push(format!("{k}:{}", l.identifier.value));
                }
            }
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let rows = app.destinations.store.profile_log(&keys, limit)?;
    Ok(Json(
        json!({"profile": pid.to_string(), "deliveries": rows}),
    ))
}
