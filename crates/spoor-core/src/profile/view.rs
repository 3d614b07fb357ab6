//! A typed, borrowed view of one stored event, parsed once from the log payload.
//!
//! The processor reads every event of the log; parsing into `serde_json::Value` would cost
//! about a third of its throughput (see DESIGN.md). So the envelope and the message are read
//! into borrowed structs in one pass: strings without escapes are slices of the payload,
//! `properties` stays raw until someone asks, and only `traits` — which the profile stores
//! anyway — become owned JSON.

use crate::event::{EventType, UserAgentInfo, Utm};
use crate::ingest::normalize::parse_time;
use crate::ingest::wire::{IdField, Lenient};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;

use super::ProfileError;

/// One stored event as the profile stage sees it.
///
/// `traits` are always the traits of the *person*: `identify` contributes its top-level
/// `traits` over `context.traits`; every other type (mobile SDKs repeat the user's cached
/// traits there) contributes `context.traits`. A `group` call's top-level `traits` describe
/// the *group*, so they are in `group_traits`, never in `traits`.
#[derive(Debug, Clone)]
pub struct EventView<'a> {
    /// Log position: unique, increasing in processing order. Breaks timestamp ties.
    pub seq: u64,
    pub kind: EventType,
    pub source_id: Cow<'a, str>,
    pub message_id: Cow<'a, str>,
    /// Event time (clock-skew corrected) in ms since the epoch.
    pub timestamp_ms: i64,
    pub user_id: Option<Cow<'a, str>>,
    pub anonymous_id: Option<Cow<'a, str>>,
    pub previous_id: Option<Cow<'a, str>>,
    pub group_id: Option<Cow<'a, str>>,
    /// The `track` event name.
    pub event: Option<Cow<'a, str>>,
    /// The `page` / `screen` name.
    pub name: Option<Cow<'a, str>>,
    /// Traits of the person (see the type's documentation).
    pub traits: Option<Map<String, Value>>,
    /// Traits of the group, on `group` calls only.
    pub group_traits: Option<Map<String, Value>>,
    /// Kept raw; parse lazily (e.g. with [`value_at_path`]) where needed.
    pub properties: Option<&'a RawValue>,
    pub utm: Option<Utm>,
    pub user_agent: Option<UserAgentInfo>,
    pub ip: Option<Cow<'a, str>>,
    /// `context.device.id`.
    pub device_id: Option<Cow<'a, str>>,
    /// `context.consent` (Segment's `categoryPreferences`, Spoor's `purposes`), read by
    /// [`crate::consent::ConsentRules::statements`]. Absent on almost every event but those
    /// of a consent platform, so it is parsed only when present.
    pub consent: Option<Value>,
    /// The stored payload, for [`Self::message`].
    payload: &'a [u8],
}

impl<'a> EventView<'a> {
    /// The whole message as received (for custom identifier paths). Found by parsing the
    /// payload again: the one pass that builds the view reads the message's fields directly,
    /// without first scanning it as a raw value (half the parsing cost of an event), and
    /// only configured custom identifiers need the raw text.
    pub fn message(&self) -> Option<&'a RawValue> {
        serde_json::from_slice::<Envelope<'a, &'a RawValue>>(self.payload)
            .ok()
            .map(|e| e.message)
    }

    /// The name events are selected by: a track call's `event`, any other call's `name`
    /// (page, screen); the same rule as [`parse_event_lean`].
    pub fn selector_name(&self) -> Option<&str> {
        match self.kind {
            EventType::Track => self.event.as_deref(),
            _ => self.name.as_deref(),
        }
    }
}

/// The envelope fields the profile stage reads (unknown ones are skipped). `M` is the
/// message: [`MessageIn`] when building a view (one pass over the payload), `&RawValue`
/// for the raw text.
#[derive(Deserialize)]
struct Envelope<'a, M> {
    #[serde(borrow)]
    source_id: Cow<'a, str>,
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow)]
    message_id: Cow<'a, str>,
    #[serde(default, borrow)]
    timestamp: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    ip: Option<Cow<'a, str>>,
    #[serde(default)]
    user_agent: Option<UserAgentInfo>,
    #[serde(default)]
    utm: Option<Utm>,
    message: M,
}

/// The message fields the profile stage reads. Ids are strict ([`IdField`]) like at ingest;
/// names are lenient; `traits` of a non-object type are ignored rather than fatal, because
/// the event was already accepted and losing it would lose its counts too.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct MessageIn<'a> {
    #[serde(borrow)]
    user_id: IdField<'a>,
    #[serde(borrow)]
    anonymous_id: IdField<'a>,
    #[serde(borrow)]
    previous_id: IdField<'a>,
    #[serde(borrow)]
    group_id: IdField<'a>,
    #[serde(borrow)]
    event: Lenient<'a>,
    #[serde(borrow)]
    name: Lenient<'a>,
    traits: Option<Value>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
    #[serde(borrow)]
    context: Option<ContextIn<'a>>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct ContextIn<'a> {
    traits: Option<Value>,
    #[serde(borrow)]
    device: Option<DeviceIn<'a>>,
    consent: Option<Value>,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct DeviceIn<'a> {
    #[serde(borrow)]
    id: Lenient<'a>,
}

/// Parses one log payload (a [`crate::StoredEvent`] as JSON). `timestamp_ms` is passed in
/// because the log frame header already carries it; see [`parse_event_envelope_time`] to
/// read it from the envelope instead.
pub fn parse_event(
    seq: u64,
    timestamp_ms: i64,
    payload: &[u8],
) -> Result<EventView<'_>, ProfileError> {
    let env = envelope(seq, payload)?;
    view(seq, timestamp_ms, env)
}

/// Like [`parse_event`], with the time taken from the envelope's (corrected) `timestamp`.
pub fn parse_event_envelope_time(seq: u64, payload: &[u8]) -> Result<EventView<'_>, ProfileError> {
    let env = envelope(seq, payload)?;
    let ts = env
        .0
        .timestamp
        .as_deref()
        .and_then(parse_time)
        .ok_or_else(|| ProfileError::Envelope {
            seq,
            reason: "missing or invalid timestamp".to_owned(),
        })?;
    view(seq, ts.timestamp_millis(), env)
}

type Parsed<'a> = (Envelope<'a, MessageIn<'a>>, &'a [u8]);

/// The envelope with its message, in one pass. On an error the payload is parsed again in
/// two steps (envelope with a raw message, then the message) to say which part is broken.
fn envelope(seq: u64, payload: &[u8]) -> Result<Parsed<'_>, ProfileError> {
    let first = match serde_json::from_slice::<Envelope<MessageIn>>(payload) {
        Ok(env) => return Ok((env, payload)),
        Err(e) => e,
    };
    let raw: Envelope<&RawValue> =
        serde_json::from_slice(payload).map_err(|e| ProfileError::Envelope {
            seq,
            reason: e.to_string(),
        })?;
    Err(match serde_json::from_str::<MessageIn>(raw.message.get()) {
        Err(e) => ProfileError::Message {
            seq,
            reason: e.to_string(),
        },
        Ok(_) => ProfileError::Envelope {
            seq,
            reason: first.to_string(),
        },
    })
}

fn view(
    seq: u64,
    timestamp_ms: i64,
    (env, payload): Parsed<'_>,
) -> Result<EventView<'_>, ProfileError> {
    let m = env.message;
    let context = m.context.unwrap_or_default();
    let context_traits = object(context.traits);
    let top_traits = object(m.traits);
    let (traits, group_traits) = match env.kind {
        EventType::Group => (context_traits, top_traits),
        EventType::Identify => (overlay(context_traits, top_traits), None),
        _ => (context_traits, None),
    };
    Ok(EventView {
        seq,
        kind: env.kind,
        source_id: env.source_id,
        message_id: env.message_id,
        timestamp_ms,
        user_id: id(m.user_id),
        anonymous_id: id(m.anonymous_id),
        previous_id: id(m.previous_id),
        group_id: id(m.group_id),
        event: text(m.event),
        name: text(m.name),
        traits,
        group_traits,
        properties: m.properties,
        utm: env.utm.filter(|u| !u.is_empty()),
        user_agent: env.user_agent,
        ip: env.ip,
        device_id: context.device.and_then(|d| text(d.id)),
        consent: context.consent.filter(Value::is_object),
        payload,
    })
}

/// The few fields the audience engine reads of an event: type, name and raw properties
/// (the time comes from the log frame). A backfill reads millions of events for a handful
/// of definitions, and the identity fields, context, traits, UTM and user agent that
/// [`parse_event`] builds are most of its cost.
#[derive(Debug, Clone)]
pub struct LeanView<'a> {
    pub kind: EventType,
    /// The `track` event name, or the `page` / `screen` name (what
    /// `EventFact::name` holds).
    pub name: Option<Cow<'a, str>>,
    pub properties: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LeanEnvelope<'a> {
    #[serde(rename = "type")]
    kind: EventType,
    #[serde(borrow)]
    message: LeanMessage<'a>,
}

/// The same field types as [`MessageIn`], so a name or properties are read alike.
#[derive(Default, Deserialize)]
#[serde(default)]
struct LeanMessage<'a> {
    #[serde(borrow)]
    event: Lenient<'a>,
    #[serde(borrow)]
    name: Lenient<'a>,
    #[serde(borrow)]
    properties: Option<&'a RawValue>,
}

/// Reads only what [`LeanView`] holds. It may accept a payload [`parse_event`] refuses
/// (it does not check the fields it skips): callers use it only for events the processor
/// did apply (they have a timeline row), which the full parse accepted.
pub fn parse_event_lean(seq: u64, payload: &[u8]) -> Result<LeanView<'_>, ProfileError> {
    let env: LeanEnvelope =
        serde_json::from_slice(payload).map_err(|e| ProfileError::Envelope {
            seq,
            reason: e.to_string(),
        })?;
    let m = env.message;
    let name = match env.kind {
        EventType::Track => text(m.event),
        _ => text(m.name),
    };
    Ok(LeanView {
        kind: env.kind,
        name,
        properties: m.properties,
    })
}

fn id(f: IdField<'_>) -> Option<Cow<'_, str>> {
    f.0.filter(|s| !s.trim().is_empty())
}

fn text(f: Lenient<'_>) -> Option<Cow<'_, str>> {
    f.0.filter(|s| !s.is_empty())
}

fn object(v: Option<Value>) -> Option<Map<String, Value>> {
    match v {
        Some(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// `top` over `base`, key by key (an identify's own traits win over its context's copy).
fn overlay(
    base: Option<Map<String, Value>>,
    top: Option<Map<String, Value>>,
) -> Option<Map<String, Value>> {
    match (base, top) {
        (Some(mut b), Some(t)) => {
            b.extend(t);
            Some(b)
        }
        (b, t) => t.or(b),
    }
}

/// Reads a dotted path (e.g. `traits.loyalty_id`, `context.device.advertisingId`,
/// `properties.email`) out of a raw JSON value; a numeric segment indexes an array.
///
/// Only strings and numbers (as their JSON text) are returned — an identifier that is an
/// object or a boolean is a configuration mistake, not an id — and empty strings count as
/// absent. Walks the raw text without building a `Value`: keys that do not match are
/// skipped unparsed, so a custom identifier costs little even on large messages.
pub fn value_at_path(message: &RawValue, path: &str) -> Option<String> {
    let mut cur = message;
    for segment in path.split('.') {
        if segment.is_empty() {
            return None;
        }
        let mut de = serde_json::Deserializer::from_str(cur.get());
        cur = Child(segment).deserialize(&mut de).ok()??;
    }
    let Lenient(v) = serde_json::from_str(cur.get()).ok()?;
    v.filter(|s| !s.is_empty()).map(Cow::into_owned)
}

/// Finds one child (object key, or array index when the segment is a number) of a value.
struct Child<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Child<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        // serde_json checks the closing brace after the visitor returns, so the rest of the
        // object must be consumed even after a hit. The first occurrence of a key wins.
        while let Some(hit) = map.next_key_seed(KeyIs(self.0))? {
            if hit && found.is_none() {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let Ok(index) = self.0.parse::<usize>() else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            return Ok(None);
        };
        let mut found = None;
        let mut i = 0;
        loop {
            if i == index {
                match seq.next_element::<&'de RawValue>()? {
                    Some(v) => found = Some(v),
                    None => break,
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(found)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Compares a map key with the wanted one without allocating (escaped keys are decoded by
/// serde_json into a scratch buffer and handed over as `&str`).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}
