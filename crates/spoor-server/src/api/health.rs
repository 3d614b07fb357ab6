//! `/healthz` (the process answers), `/readyz` (it can accept events), `/metrics`.

use crate::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
}

async fn ready(State(app): State<AppState>) -> impl IntoResponse {
    let processor_ok = !app
        .processor
        .status
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    if app.writer.is_healthy() && app.rejects.is_healthy() && processor_ok {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"status": "unavailable", "reason": "the event log writer or the processor has failed; see the logs"}),
            ),
        )
    }
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    app.metrics.log_size_bytes.set(app.writer.size_bytes());
    let last = app.reader.last_seq();
    app.metrics.log_last_seq.set(last);
    let st = &app.processor.status;
    let processed = st.processed_seq.load(std::sync::atomic::Ordering::Acquire);
    app.metrics.processed_seq.set(processed);
    app.metrics
        .durable_seq
        .set(st.durable_seq.load(std::sync::atomic::Ordering::Acquire));
    app.metrics
        .processor_lag
        .set(last.saturating_sub(processed));
    app.metrics
        .live_profiles
        .set(st.live_profiles.load(std::sync::atomic::Ordering::Relaxed));
    let store = &app.destinations.store;
    if let Ok(all) = store.destinations() {
        for d in all {
            let Ok(s) = store.state(&d.name) else {
                continue;
            };
            let values = [
                ("delivered", s.delivered),
                ("dead_letters", s.dead),
                ("retries", s.retries),
                ("requests", s.requests),
                ("events_behind", last.saturating_sub(s.event_cursor)),
                ("paused", u64::from(s.paused.is_some())),
            ];
            for (what, v) in values {
                app.metrics
                    .destinations
                    .get_or_create(&crate::metrics::DestinationLabels {
                        destination: d.name.clone(),
                        what: what.into(),
                    })
                    .set(v);
            }
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
