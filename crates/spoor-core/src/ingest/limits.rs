//! Size limits, as Segment documents them for its HTTP Tracking API.

use serde::{Deserialize, Serialize};

/// Per-request and per-event limits. Defaults follow Segment: 32 KB an event, 500 KB a batch
/// request (measured after decompression), 2,500 events a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest single event, in bytes of JSON.
    pub max_event_bytes: usize,
    /// Largest request body, in bytes after inflating `Content-Encoding: gzip`.
    pub max_batch_bytes: usize,
    /// Most events in one batch.
    pub max_batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: 32 * 1024,
            max_batch_bytes: 500 * 1024,
            max_batch_events: 2_500,
        }
    }
}
