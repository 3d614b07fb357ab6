//! The Segment HTTP Tracking API: `/v1/{identify,track,page,screen,group,alias}`, their
//! browser short forms `/v1/{i,t,p,s,g,a}`, `/v1/batch` (`/v1/b`) and `/v1/import`.
//!
//! A request is answered 200 only after its accepted events are fsynced in the event log.
//! In a batch, an invalid event is recorded with its reason and does not cost its valid
//! siblings.

use crate::body::{client_ip, read_body, write_key_from_request};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Request, State};
use axum::routing::{post, MethodRouter};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use spoor_core::ingest::wire::Lenient;
use spoor_core::ingest::{normalize, BatchIn, IngestContext, Rejection};
use spoor_core::{EventType, SourceId};
use spoor_store::log::RecordIn;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Most raw bytes of a rejected event kept for inspection.
const REJECTED_RAW_KEEP: usize = 8 * 1024;

pub fn routes() -> Router<AppState> {
    let mut r = Router::new()
        .route("/v1/batch", batch_route())
        .route("/v1/b", batch_route())
        .route("/v1/import", batch_route())
        // analytics.js posts its own client metrics here; accepted and ignored.
        .route("/v1/m", post(|| async { Json(json!({"success": true})) }));
    for t in EventType::ALL {
        let short = &t.as_str()[..1];
        r = r
            .route(&format!("/v1/{}", t.as_str()), single_route(t))
            .route(&format!("/v1/{short}"), single_route(t));
    }
    r
}

fn batch_route() -> MethodRouter<AppState> {
    post(|State(app): State<AppState>, req: Request| async move { ingest(app, req, None).await })
}

fn single_route(t: EventType) -> MethodRouter<AppState> {
    post(
        move |State(app): State<AppState>, req: Request| async move { ingest(app, req, Some(t)).await },
    )
}

/// One rejected event, as answered to the client and recorded for the admin API.
#[derive(Debug, Serialize)]
pub struct RejectedOut {
    pub index: usize,
    pub code: &'static str,
    pub message: String,
}

/// What the CPU-bound part of a request produced.
struct Prepared {
    source: SourceId,
    records: Vec<RecordIn>,
    kinds: Vec<EventType>,
    rejected: Vec<(usize, Rejection, String)>,
}

async fn ingest(
    app: AppState,
    req: Request,
    path_type: Option<EventType>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let header_key = write_key_from_request(&parts.headers, parts.uri.query());
    let header_source = match header_key {
        Some(k) => Some(
            app.auth
                .source_for_key(&k)
                .ok_or_else(|| ApiError::Unauthorized("unknown or revoked write key".into()))?,
        ),
        None => None,
    };
    let received_at = app.clock.now();
    let limits = app.cfg.ingest.limits();
    let body = match read_body(body, &parts.headers, limits.max_batch_bytes).await {
        Ok(b) => b,
        Err(e) => {
            record_request_failure(&app, header_source.as_ref(), received_at, &e, b"").await;
            return Err(e);
        }
    };
    app.metrics.ingest_bytes.inc_by(body.len() as u64);
    let ip = client_ip(peer, &parts.headers, &app.cfg.server.trusted_proxies);

    // Parsing and normalising a batch takes milliseconds of CPU: done on the parse threads,
    // below the runtime workers' priority, so reads (profile lookups, health checks) are
    // neither queued behind it on a worker nor kept off the CPU by it.
    let job = {
        let (app2, body, source) = (app.clone(), body.clone(), header_source.clone());
        app.parse
            .run(move || prepare(&app2, &body, path_type, source, received_at, ip))
    };
    let prepared = match job
        .await
        .ok_or_else(|| ApiError::internal("the batch parser failed"))?
    {
        Ok(p) => p,
        Err(e) => {
            record_request_failure(&app, header_source.as_ref(), received_at, &e, &body).await;
            return Err(e);
        }
    };
    let Prepared {
        source,
        records,
        kinds,
        rejected,
    } = prepared;

    if !records.is_empty() {
        let outcome = app.writer.append(records).await?;
        app.metrics
            .events_duplicate
            .inc_by(outcome.duplicates as u64);
        for k in &kinds {
            app.metrics
                .events_accepted
                .get_or_create(&crate::metrics::TypeLabels {
                    r#type: k.as_str().into(),
                })
                .inc();
        }
    }
    let rejected_out = record_rejections(&app, &source, received_at, rejected).await?;
    app.metrics
        .request_seconds
        .observe(started.elapsed().as_secs_f64());

    if path_type.is_some() {
        // A single-event call whose event is invalid: the client should hear why.
        if let Some(r) = rejected_out.first() {
            return Err(ApiError::InvalidRequest(format!(
                "{}: {}",
                r.code, r.message
            )));
        }
    }
    if rejected_out.is_empty() {
        Ok(Json(json!({"success": true})))
    } else {
        Ok(Json(json!({"success": true, "rejected": rejected_out})))
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
struct SingleHead<'a> {
    #[serde(borrow)]
    write_key: Lenient<'a>,
}

/// Parses and normalises every event of a request (CPU only; no awaits).
fn prepare(
    app: &AppState,
    body: &[u8],
    path_type: Option<EventType>,
    header_source: Option<SourceId>,
    received_at: DateTime<Utc>,
    ip: Option<IpAddr>,
) -> Result<Prepared, ApiError> {
    let limits = &app.cfg.ingest.limits();
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::InvalidRequest("body is not UTF-8 JSON".into()))?;
    let invalid =
        |e: serde_json::Error| ApiError::InvalidRequest(format!("body is not valid JSON: {e}"));

    let resolve_source = |body_key: Option<&str>| -> Result<SourceId, ApiError> {
        if let Some(s) = header_source.clone() {
            return Ok(s);
        }
        let key = body_key.ok_or_else(|| {
            ApiError::Unauthorized("no write key: send it as the HTTP Basic user, ?writeKey= or \"writeKey\" in the body".into())
        })?;
        app.auth
            .source_for_key(key)
            .ok_or_else(|| ApiError::Unauthorized("unknown or revoked write key".into()))
    };

    let gen = || uuid::Uuid::new_v4().to_string();
    let (source, events, batch): (SourceId, Vec<&RawValue>, Option<BatchIn>) = match path_type {
        Some(_) => {
            let raw: &RawValue = serde_json::from_str(text).map_err(invalid)?;
            let head: SingleHead = serde_json::from_str(text).unwrap_or_default();
            (resolve_source(head.write_key.get())?, vec![raw], None)
        }
        None => {
            let b: BatchIn = serde_json::from_str(text).map_err(invalid)?;
            let events = b
                .batch
                .clone()
                .ok_or_else(|| ApiError::InvalidRequest("body has no \"batch\" array".into()))?;
            if events.len() > limits.max_batch_events {
                return Err(ApiError::TooLarge(format!(
                    "batch has {} events; the limit is {}",
                    events.len(),
                    limits.max_batch_events
                )));
            }
            // A key may also sit in the first event (some browser clients).
            let key = b.write_key.get().map(str::to_owned).or_else(|| {
                events.first().and_then(|e| {
                    serde_json::from_str::<SingleHead>(e.get())
                        .ok()?
                        .write_key
                        .get()
                        .map(str::to_owned)
                })
            });
            (resolve_source(key.as_deref())?, events, Some(b))
        }
    };

    let ctx = IngestContext {
        source_id: &source,
        received_at,
        peer_ip: ip,
        path_type,
        batch_sent_at: batch.as_ref().and_then(|b| b.sent_at.get()),
        batch_context: batch.as_ref().and_then(|b| b.context),
        batch_integrations: batch.as_ref().and_then(|b| b.integrations),
        limits,
        new_message_id: &gen,
    };
    let mut records = Vec::with_capacity(events.len());
    let mut kinds = Vec::with_capacity(events.len());
    let mut rejected = Vec::new();
    for (i, raw) in events.iter().enumerate() {
        match normalize(raw, &ctx) {
            Ok(n) => {
                kinds.push(n.kind);
                records.push(RecordIn {
                    timestamp_ms: n.timestamp_ms,
                    received_ms: n.received_ms,
                    dedupe_key: n.dedupe_key,
                    payload: app
                        .pii
                        .apply(source.as_str(), n.bytes)
                        .map_err(ApiError::internal)?,
                });
            }
            Err(r) => rejected.push((i, r, truncate(raw.get(), REJECTED_RAW_KEEP))),
        }
    }
    Ok(Prepared {
        source,
        records,
        kinds,
        rejected,
    })
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// What the rejection log keeps instead of the raw text for sources with PII rules.
const WITHHELD: &str = "(withheld: the source has [privacy] redaction or IP anonymisation rules)";

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn rejection_record(
    source: Option<&SourceId>,
    received_at: DateTime<Utc>,
    index: Option<usize>,
    code: &str,
    message: &str,
    raw: &str,
) -> RecordIn {
    let payload = json!({
        "received_at": fmt_time(received_at),
        "source_id": source.map(|s| s.as_str()),
        "index": index,
        "code": code,
        "message": message,
        "raw": raw,
        "truncated": raw.len() >= REJECTED_RAW_KEEP,
    });
    RecordIn {
        timestamp_ms: received_at.timestamp_millis(),
        received_ms: received_at.timestamp_millis(),
        dedupe_key: None,
        payload: payload.to_string().into_bytes(),
    }
}

/// Records the events of a batch that were rejected, so nothing is silently dropped.
async fn record_rejections(
    app: &AppState,
    source: &SourceId,
    received_at: DateTime<Utc>,
    rejected: Vec<(usize, Rejection, String)>,
) -> Result<Vec<RejectedOut>, ApiError> {
    if rejected.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(rejected.len());
    let mut recs = Vec::with_capacity(rejected.len());
    let withhold = app.pii.applies_to(source.as_str());
    for (index, r, raw) in rejected {
        // A source with PII rules never has raw text stored: it could not be redacted
        // reliably (it is invalid or cut short), so it is not kept at all.
        let raw = if withhold { WITHHELD.to_owned() } else { raw };
        app.metrics
            .events_rejected
            .get_or_create(&crate::metrics::ReasonLabels {
                reason: r.code.as_str().into(),
            })
            .inc();
        recs.push(rejection_record(
            Some(source),
            received_at,
            Some(index),
            r.code.as_str(),
            &r.message,
            &raw,
        ));
        out.push(RejectedOut {
            index,
            code: r.code.as_str(),
            message: r.message,
        });
    }
    app.rejects.append(recs).await?;
    Ok(out)
}

/// Records a request that failed as a whole (invalid JSON, too large) when its source is
/// known — so a developer can see in the debugger why their client's calls vanish.
async fn record_request_failure(
    app: &AppState,
    source: Option<&SourceId>,
    at: DateTime<Utc>,
    e: &ApiError,
    body: &[u8],
) {
    let reason = e.code();
    app.metrics
        .events_rejected
        .get_or_create(&crate::metrics::ReasonLabels {
            reason: reason.into(),
        })
        .inc();
    if source.is_none() || matches!(e, ApiError::Unauthorized(_) | ApiError::Busy(_)) {
        return;
    }
    let raw = match source {
        Some(s) if app.pii.applies_to(s.as_str()) => WITHHELD.to_owned(),
        _ => String::from_utf8_lossy(&body[..body.len().min(1024)]).into_owned(),
    };
    let rec = rejection_record(source, at, None, reason, &e.to_string(), &raw);
    if let Err(err) = app.rejects.append(vec![rec]).await {
        tracing::warn!(error = %err, "could not record a rejected request");
    }
}
