//! Why an event was not accepted. Codes are stable strings clients and dashboards can match.

use serde::Serialize;
use std::fmt;

/// The closed set of reasons an event is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    /// Not a JSON object, or a field has a type that cannot be read.
    InvalidJson,
    /// Larger than the per-event limit.
    EventTooLarge,
    /// `type` missing or not one of the six Segment types.
    InvalidType,
    /// Neither `userId` nor `anonymousId` (or `alias` without `userId` + `previousId`).
    MissingIdentity,
    /// `track` without `event`, `group` without `groupId`.
    MissingField,
}

impl RejectCode {
    pub const ALL: [RejectCode; 5] = [
        Self::InvalidJson,
        Self::EventTooLarge,
        Self::InvalidType,
        Self::MissingIdentity,
        Self::MissingField,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::EventTooLarge => "event_too_large",
            Self::InvalidType => "invalid_type",
            Self::MissingIdentity => "missing_identity",
            Self::MissingField => "missing_field",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected event: the code and a human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub code: RejectCode,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}
