//! The one error type of the crate. Variants carry enough context (file, offset) for an
//! operator to find the problem; the server maps them to a small set of HTTP statuses
//! (`Busy` → 429, everything else → 500 with a generic body).

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An I/O call failed; `path` is the file or directory it was about.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Bytes on disk do not form a valid log where they must (a closed segment, an index
    /// claim that does not hold, a gap in seq numbers).
    #[error("corrupt log file {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A record larger than the log accepts; rejected before anything is written.
    #[error("record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    /// Options that cannot work (e.g. a zero segment size).
    #[error("invalid log options: {0}")]
    InvalidOptions(String),
    /// An earlier write or fsync failed, so the state of the file is unknown; the log
    /// refuses further appends until it is reopened (which re-validates from disk).
    #[error("event log stopped after an earlier write failure; restart to recover")]
    LogFailed,
    /// The append of this group failed and the records are NOT known to be durable (some of
    /// them may still surface after a restart; clients retry with the same dedupe key).
    #[error("append failed: {0}")]
    AppendFailed(#[source] Arc<StoreError>),
    /// The writer's bounded queue is full: back-pressure, answer 429 and let the client retry.
    #[error("event log writer is busy")]
    Busy,
    /// The metadata store (sources, tokens, bookkeeping) failed or holds an unreadable record.
    #[error("metadata store: {0}")]
    Meta(String),
    /// The writer thread has shut down (or died); nothing was appended.
    #[error("event log writer is closed")]
    Closed,
}

impl StoreError {
    /// Wraps an `io::Error` with the path it concerns.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        StoreError::Corrupt {
            path: path.into(),
            offset,
            reason: reason.into(),
        }
    }
}

/// Shorthand used across the crate.
pub type StoreResult<T> = Result<T, StoreError>;
