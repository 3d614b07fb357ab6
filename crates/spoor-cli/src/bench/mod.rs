//! Benchmarks: load generators and the figures they print. Nothing here asserts; the test
//! suite asserts behaviour, benchmarks report speed.

pub mod audiences;
pub mod destinations;
pub mod e2e;
pub mod erasure;
pub mod export;
pub mod identity_quality;
pub mod ingest;
pub mod privacy;
pub mod shop;
pub mod sinks;
pub mod ui;

use spoor_core::ingest::{normalize, BatchIn, IngestContext, Limits};
use spoor_core::SourceId;
use spoor_store::log::RecordIn;

/// Parses and normalises one batch body as the ingest API does (default limits, received at
/// `received_at`), for benches that write the log directly; invalid events are dropped.
pub fn batch_records(
    body: &[u8],
    source: &SourceId,
    received_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<RecordIn>> {
    let b: BatchIn = serde_json::from_slice(body)?;
    let limits = Limits::default();
    let gen = || "gen".to_string();
    let ctx = IngestContext {
        source_id: source,
        received_at,
        peer_ip: None,
        path_type: None,
        batch_sent_at: b.sent_at.get(),
        batch_context: b.context,
        batch_integrations: b.integrations,
        limits: &limits,
        new_message_id: &gen,
    };
    Ok(b.batch
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|raw| normalize(raw, &ctx).ok())
        .map(|n| RecordIn {
            timestamp_ms: n.timestamp_ms,
            received_ms: n.received_ms,
            dedupe_key: n.dedupe_key,
            payload: n.bytes,
        })
        .collect())
}
