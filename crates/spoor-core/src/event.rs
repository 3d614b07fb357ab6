//! The canonical, stored form of an event.
//!
//! The original message is kept byte for byte (`message`), so every field a client sent —
//! known or not — survives; what Spoor derived at the door (receive time, corrected
//! timestamp, source, parsed user agent, UTM, IP) sits beside it. Downstream stages read the
//! envelope once and never re-derive these values.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The Segment message types Spoor understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Identify,
    Track,
    Page,
    Screen,
    Group,
    Alias,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::Identify,
        Self::Track,
        Self::Page,
        Self::Screen,
        Self::Group,
        Self::Alias,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

/// Browser, OS and device class parsed from `context.userAgent`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAgentInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub browser_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device_type: String,
}

/// The UTM parameters of the channel an event arrived through.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Utm {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub term: Option<String>,
}

impl Utm {
    pub fn is_empty(&self) -> bool {
        self.source.is_none()
            && self.medium.is_none()
            && self.campaign.is_none()
            && self.content.is_none()
            && self.term.is_none()
    }
}

/// One event as written to the log. Serialised as JSON; `message` is the original payload.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredEvent<'a> {
    /// Envelope format version.
    pub v: u8,
    pub source_id: std::borrow::Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The client's messageId, or one Spoor generated when it was missing.
    pub message_id: std::borrow::Cow<'a, str>,
    /// True when Spoor had to generate `message_id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub message_id_generated: bool,
    /// When the HTTP request (or import line) reached Spoor (RFC 3339, UTC).
    pub received_at: String,
    /// Event time, corrected for client clock skew (RFC 3339, UTC).
    pub timestamp: String,
    /// The timestamp the client claimed, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<UserAgentInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub utm: Option<Utm>,
    /// Problems Spoor tolerated (e.g. an unparseable timestamp replaced by `received_at`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The message exactly as received (with a batch's shared `context` merged in).
    #[serde(borrow)]
    pub message: &'a RawValue,
}
