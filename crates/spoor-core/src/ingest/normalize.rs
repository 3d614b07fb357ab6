//! Normalisation and enrichment: one raw Segment message in, one canonical envelope out (or a
//! rejection with its reason).
//!
//! Everything here is a pure function of the message and an [`IngestContext`] (receive time,
//! peer IP, source, id generator), so HTTP ingest, bulk import and tests share one behaviour.

use super::limits::Limits;
use super::reject::{RejectCode, Rejection};
use super::wire::{EventIn, Lenient};
use crate::enrich::{parse_user_agent, utm_from_campaign, utm_from_url};
use crate::event::{EventType, StoredEvent, Utm};
use crate::ids::SourceId;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;

/// What is known about the request an event arrived in.
pub struct IngestContext<'a> {
    pub source_id: &'a SourceId,
    pub received_at: DateTime<Utc>,
    /// The client address (already resolved through trusted proxies).
    pub peer_ip: Option<IpAddr>,
    /// Set when the endpoint implies the type (`/v1/track`, `/v1/t`, …).
    pub path_type: Option<EventType>,
    /// A batch's `sentAt`, used when the event has none of its own.
    pub batch_sent_at: Option<&'a str>,
    /// A batch's shared `context` object.
    pub batch_context: Option<&'a RawValue>,
    /// A batch's shared `integrations` object.
    pub batch_integrations: Option<&'a RawValue>,
    pub limits: &'a Limits,
    /// Makes a messageId for events that carry none.
    pub new_message_id: &'a (dyn Fn() -> String + Sync),
}

/// A canonical event, serialised and ready to append to the log.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// The envelope JSON ([`StoredEvent`]).
    pub bytes: Vec<u8>,
    /// Hash of (source, messageId) for dedupe; `None` when Spoor generated the messageId.
    pub dedupe_key: Option<u64>,
    pub kind: EventType,
    pub message_id: String,
    pub timestamp_ms: i64,
    pub received_ms: i64,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct PropsIn<'a> {
    #[serde(borrow)]
    url: Lenient<'a>,
    #[serde(borrow)]
    search: Lenient<'a>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct WithProps<'a> {
    #[serde(borrow)]
    properties: Option<PropsIn<'a>>,
}

/// The dedupe key of a message: stable for the life of the process, which is all the
/// in-memory dedupe index (rebuilt from the log at start-up) needs.
pub fn dedupe_key(source: &SourceId, message_id: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    source.as_str().hash(&mut h);
    message_id.hash(&mut h);
    h.finish()
}

/// Parses the timestamp formats clients send: RFC 3339 with any fractional precision and
/// `Z` or an offset, a naive date-time taken as UTC, or epoch seconds / milliseconds.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(n) = s.parse::<f64>() {
        if !n.is_finite() || n < 0.0 {
            return None;
        }
        // Heuristic used by analytics tools: values past 10^11 are milliseconds.
        let ms = if n > 1e11 { n } else { n * 1000.0 };
        return DateTime::from_timestamp_millis(ms as i64);
    }
    None
}

fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn invalid_json(e: serde_json::Error) -> Rejection {
    Rejection::new(RejectCode::InvalidJson, format!("event is not valid: {e}"))
}

/// Merges a batch's shared object into the event's own (the event's keys win).
fn merge_shared(
    event: &mut Map<String, Value>,
    key: &str,
    shared: &RawValue,
) -> Result<(), Rejection> {
    let Value::Object(shared) = serde_json::from_str(shared.get()).map_err(invalid_json)? else {
        return Ok(());
    };
    match event
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()))
    {
        Value::Object(own) => {
            for (k, v) in shared {
                own.entry(k).or_insert(v);
            }
        }
        other if other.is_null() => *other = Value::Object(shared),
        _ => {}
    }
    Ok(())
}

/// Turns one raw message into a canonical envelope, or says why it cannot be accepted.
pub fn normalize(raw: &RawValue, ctx: &IngestContext) -> Result<Normalized, Rejection> {
    let text = raw.get();
    if text.len() > ctx.limits.max_event_bytes {
        return Err(Rejection::new(
            RejectCode::EventTooLarge,
            format!(
                "event is {} bytes; the limit is {}",
                text.len(),
                ctx.limits.max_event_bytes
            ),
        ));
    }
    if !text.starts_with('{') {
        return Err(Rejection::new(
            RejectCode::InvalidJson,
            "event must be a JSON object",
        ));
    }
    // A batch's shared context/integrations become part of each event's message (before
    // anything is read from it: a shared `context.ip` or campaign applies to every event),
    // and a `writeKey` (browser clients put it in every event) is removed: it is a
    // credential, the one field Spoor does not keep.
    let merged;
    let rewrite = ctx.batch_context.is_some()
        || ctx.batch_integrations.is_some()
        || text.contains("\"writeKey\"");
    let message: &RawValue = if rewrite {
        let Value::Object(mut obj) = serde_json::from_str(text).map_err(invalid_json)? else {
            return Err(Rejection::new(
                RejectCode::InvalidJson,
                "event must be a JSON object",
            ));
        };
        obj.remove("writeKey");
        if let Some(c) = ctx.batch_context {
            merge_shared(&mut obj, "context", c)?;
        }
        if let Some(i) = ctx.batch_integrations {
            merge_shared(&mut obj, "integrations", i)?;
        }
        merged = serde_json::value::to_raw_value(&obj).map_err(invalid_json)?;
        &merged
    } else {
        raw
    };
    let text = message.get();
    let ev: EventIn = serde_json::from_str(text).map_err(invalid_json)?;

    let kind = match ctx.path_type {
        Some(t) => t,
        None => {
            let t = ev
                .kind
                .get()
                .ok_or_else(|| Rejection::new(RejectCode::InvalidType, "event has no type"))?;
            EventType::parse(t).ok_or_else(|| {
                Rejection::new(
                    RejectCode::InvalidType,
                    format!("unknown type {t:?}; expected identify, track, page, screen, group or alias"),
                )
            })?
        }
    };
    validate(kind, &ev)?;

    let mut warnings = Vec::new();
    let received = ctx.received_at;
    let mut read_time = |field: &str, v: Option<&str>| {
        let v = v?;
        let t = parse_time(v);
        if t.is_none() {
            warnings.push(format!("{field} {v:?} is not a timestamp; ignored"));
        }
        t
    };
    let original_str = ev.timestamp.get().or(ev.original_timestamp.get());
    let sent_str = ev
        .sent_at
        .get()
        .or(ctx.batch_sent_at.filter(|s| !s.is_empty()));
    let original = read_time("timestamp", original_str);
    let sent = read_time("sentAt", sent_str);
    // Clock-skew correction: the client's clock may be off, but the gap between when it
    // says the event happened and when it says it sent it is trustworthy.
    let timestamp = match (original, sent) {
        (Some(o), Some(s)) => received - (s - o),
        (Some(o), None) => o,
        (None, _) => received,
    };

    let (message_id, generated): (Cow<str>, bool) = match ev.message_id.get() {
        Some(m) => (Cow::Borrowed(m), false),
        None => (Cow::Owned((ctx.new_message_id)()), true),
    };

    let context = ev.context.as_ref();
    let ip = context
        .and_then(|c| c.ip.get().map(str::to_owned))
        .or_else(|| ctx.peer_ip.map(|ip| ip.to_string()));
    let user_agent = context
        .and_then(|c| c.user_agent.get())
        .and_then(parse_user_agent);
    let utm = extract_utm(&ev, text)?;

    let stored = StoredEvent {
        v: 1,
        source_id: Cow::Borrowed(ctx.source_id.as_str()),
        kind,
        message_id: message_id.clone(),
        message_id_generated: generated,
        received_at: fmt_time(received),
        timestamp: fmt_time(timestamp),
        original_timestamp: original_str.map(str::to_owned),
        sent_at: sent_str.map(str::to_owned),
        ip,
        user_agent,
        utm: (!utm.is_empty()).then_some(utm),
        warnings,
        message,
    };
    let bytes = serde_json::to_vec(&stored).map_err(invalid_json)?;
    Ok(Normalized {
        bytes,
        dedupe_key: (!generated).then(|| dedupe_key(ctx.source_id, &message_id)),
        kind,
        message_id: message_id.into_owned(),
        timestamp_ms: timestamp.timestamp_millis(),
        received_ms: received.timestamp_millis(),
    })
}

fn validate(kind: EventType, ev: &EventIn) -> Result<(), Rejection> {
    let missing = |code, what: &str| {
        Err(Rejection::new(
            code,
            format!("{} event needs {what}", kind.as_str()),
        ))
    };
    match kind {
        EventType::Alias if ev.user_id.get().is_none() || ev.previous_id.get().is_none() => {
            return missing(RejectCode::MissingIdentity, "userId and previousId");
        }
        EventType::Alias => {}
        _ if ev.user_id.get().is_none() && ev.anonymous_id.get().is_none() => {
            return missing(RejectCode::MissingIdentity, "userId or anonymousId");
        }
        EventType::Track if ev.event.get().is_none() => {
            return missing(RejectCode::MissingField, "an event name");
        }
        EventType::Group if ev.group_id.get().is_none() => {
            return missing(RejectCode::MissingField, "groupId");
        }
        _ => {}
    }
    Ok(())
}

/// UTM from `context.campaign`, else from the page URL or query string (context first, then
/// the `properties` of a page call, where server-side libraries put the URL).
fn extract_utm(ev: &EventIn, text: &str) -> Result<Utm, Rejection> {
    let context = ev.context.as_ref();
    if let Some(c) = context.and_then(|c| c.campaign.as_ref()) {
        let utm = utm_from_campaign(
            c.source.get(),
            c.medium.get(),
            c.name.get(),
            c.content.get(),
            c.term.get(),
        );
        if !utm.is_empty() {
            return Ok(utm);
        }
    }
    if let Some(p) = context.and_then(|c| c.page.as_ref()) {
        for candidate in [p.url.get(), p.search.get()].into_iter().flatten() {
            let utm = utm_from_url(candidate);
            if !utm.is_empty() {
                return Ok(utm);
            }
        }
    }
    if text.contains("utm_") {
        let props: WithProps = serde_json::from_str(text).map_err(invalid_json)?;
        if let Some(p) = props.properties {
            for candidate in [p.url.get(), p.search.get()].into_iter().flatten() {
                let utm = utm_from_url(candidate);
                if !utm.is_empty() {
                    return Ok(utm);
                }
            }
        }
    }
    Ok(Utm::default())
}

#[cfg(test)]
#[path = "normalize_tests.rs"]
mod tests;
