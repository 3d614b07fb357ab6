//! Which identifiers an event carries, as `(type, raw value)` pairs for the identity engine.
//!
//! Values are returned exactly as sent (no trimming, no lowercasing): normalisation and
//! placeholder blocking are configured per type in [`crate::identity::IdentityConfig`], and
//! doing any of it here would make the two disagree.

use super::view::{value_at_path, EventView};
use crate::event::EventType;
use crate::identity::IdentityInput;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A custom identifier type read from a dotted path of the message (from configuration),
/// e.g. `{ id_type = "loyalty_id", path = "traits.loyalty_id" }`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct IdentifierSource {
    pub id_type: String,
    /// See [`value_at_path`].
    pub path: String,
}

/// The identifiers of the person behind `ev`, in a fixed order, without duplicate pairs.
///
/// - `user_id` ← `userId`; `anonymous_id` ← `anonymousId`.
/// - `alias`: `previousId` → `anonymous_id`. analytics.js (and most client SDKs) call
///   `alias(newUserId)` with `previousId` defaulting to the anonymous id of the device, so
///   this is what links the anonymous history to the user. Mapping it to `user_id` instead
///   would, under the default limit of one user id per profile, make every such alias a
///   conflict — and a rename of one user id to another is not a merge of two people anyway.
/// - `email` ← the person's `traits.email` (top-level on identify, or `context.traits`), and
///   on `track` events `properties.email` (order forms, sign-up events).
/// - `phone` ← `traits.phone`; `device_id` ← `context.device.id`.
/// - Then each custom path, read from the raw message.
///
/// On `group` calls `groupId` and the top-level `traits` describe the *group* (a company's
/// email is not a person's), so neither is read, and custom paths under `traits.` are
/// skipped for the same reason.
pub fn extract_identifiers(ev: &EventView, custom: &[IdentifierSource]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |id_type: &str, value: String| {
        if value.trim().is_empty() || out.iter().any(|(t, v)| t == id_type && *v == value) {
            return;
        }
        out.push((id_type.to_owned(), value));
    };
    if let Some(v) = &ev.user_id {
        push("user_id", v.to_string());
    }
    if let Some(v) = &ev.anonymous_id {
        push("anonymous_id", v.to_string());
    }
    if ev.kind == EventType::Alias {
        if let Some(v) = &ev.previous_id {
            push("anonymous_id", v.to_string());
        }
    }
    if let Some(traits) = &ev.traits {
        if let Some(v) = scalar(traits, "email") {
            push("email", v);
        }
    }
    if ev.kind == EventType::Track {
        if let Some(v) = ev.properties.and_then(|p| value_at_path(p, "email")) {
            push("email", v);
        }
    }
    if let Some(traits) = &ev.traits {
        if let Some(v) = scalar(traits, "phone") {
            push("phone", v);
        }
    }
    if let Some(v) = &ev.device_id {
        push("device_id", v.to_string());
    }
    let message = if custom.is_empty() {
        None
    } else {
        ev.message()
    };
    for c in custom {
        if ev.kind == EventType::Group && c.path.split('.').next() == Some("traits") {
            continue;
        }
        if let Some(v) = message.and_then(|m| value_at_path(m, &c.path)) {
            push(&c.id_type, v);
        }
    }
    out
}

/// The identity engine's input for `ev` — the usual glue, kept here so every caller builds
/// it the same way.
pub fn identity_input(ev: &EventView, custom: &[IdentifierSource]) -> IdentityInput {
    IdentityInput {
        seq: ev.seq,
        message_id: ev.message_id.to_string(),
        timestamp_ms: ev.timestamp_ms,
        identifiers: extract_identifiers(ev, custom),
    }
}

/// A string, or a number as its text (phone numbers are often sent as numbers).
fn scalar(traits: &Map<String, Value>, key: &str) -> Option<String> {
    match traits.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
