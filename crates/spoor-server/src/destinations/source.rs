//! Reads what a destination has not handled yet from the two durable sources — the event
//! log and the membership change feed — merged into one sequence in source order, and turns
//! what it subscribes to into delivery items.
//!
//! Both sources are durable before anything is delivered from them: the log is fsynced
//! before ingest answers 200, and a membership change is written in the same checkpoint
//! transaction as the membership itself. They *are* the outbox: nothing is copied, and a
//! worker's position in each is a number it commits with its deliveries.
//!
//! Order: a change caused by the event at seq `s` comes after that event and before event
//! `s + 1`; changes without a cause (timers, deletions) keep their place in the feed. While
//! a destination takes audience changes, events are read only up to the last durable
//! checkpoint, so a change can never be found after events that followed its cause.

use super::mapping::Jq;
use super::model::Destination;
use crate::privacy::enforce;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use spoor_core::consent::ConsentRules;
use spoor_core::identity::ProfileId;
use spoor_store::log::LogReader;
use spoor_store::state::StateReader;
use spoor_store::state::{MembershipChange, StateStore};
use spoor_store::StoreError;

/// Source entries read per step (bounds a worker's memory).
pub const SCAN: usize = 1_000;

/// A position in both sources: (last event seq, last change number) handled.
pub type Pos = (u64, u64);

/// One thing to deliver.
#[derive(Debug, Clone)]
pub struct Item {
    /// Idempotency key: the same for every attempt, across restarts.
    pub key: String,
    /// The delivery item (input of the mapping).
    pub body: Value,
    /// Where a profile's delivery log files it.
    pub profile: Option<String>,
    /// What it is, for the delivery log.
    pub kind: &'static str,
    pub what: String,
    /// When its source happened (event received, change made), ms, for the delay figure.
    pub source_ms: i64,
    /// The position once this item is handled.
    pub pos: Pos,
}

/// The compiled filters of a destination's event subscriptions.
pub struct Compiled {
    pub filters: Vec<Option<Jq>>,
    pub mapping: Option<Jq>,
}

impl Compiled {
    pub fn new(d: &Destination) -> Result<Self, String> {
        let filters = d
            .subscriptions
            .events
            .iter()
            .map(|s| s.filter.as_deref().map(Jq::compile).transpose())
            .collect::<Result<_, _>>()?;
        let mapping = d.mapping().map(Jq::compile).transpose()?;
        Ok(Self { filters, mapping })
    }
}

pub fn key(dest: &str, kind: &str, id: &str) -> String {
    let h = Sha256::new()
        .chain_update(dest.as_bytes())
        .chain_update([0])
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(id.as_bytes())
        .finalize();
    format!("msg_{}", &hex::encode(h)[..32])
}

#[derive(Deserialize)]
pub(super) struct Head {
    #[serde(default)]
    source_id: String,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    pub(super) message: MessageHead,
}

#[derive(Deserialize, Default)]
pub(super) struct MessageHead {
    #[serde(default)]
    event: Option<Value>,
    #[serde(default)]
    name: Option<Value>,
    #[serde(rename = "userId", default)]
    pub(super) user_id: Option<Value>,
    #[serde(rename = "anonymousId", default)]
    pub(super) anonymous_id: Option<Value>,
}

pub(super) fn as_text(v: &Option<Value>) -> Option<String> {
    match v {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// The profile that owns an event's `userId` (else `anonymousId`) now.
fn event_owner(reader: &StateReader, head: &Head) -> Result<Option<ProfileId>, StoreError> {
    let uid = as_text(&head.message.user_id);
    let aid = as_text(&head.message.anonymous_id);
    for (kind, v) in [("user_id", &uid), ("anonymous_id", &aid)] {
        if let Some(v) = v {
            if let Some(p) = reader.owner(kind, v)? {
                return Ok(Some(p));
            }
        }
    }
    Ok(None)
}

/// Exits for the audiences (that the destination takes exits of) a person is a member of,
/// when the event at `seq` withdrew consent to one of the destination's purposes: the
/// destination must forget them although their membership did not change. Keyed by the
/// event and audience, so a re-send after a crash is the same request.
fn consent_exits(
    d: &Destination,
    consent: &ConsentRules,
    reader: &StateReader,
    seq: u64,
    received_ms: i64,
    payload: &[u8],
) -> Result<Vec<Item>, StoreError> {
    // Only an event that mentions consent can state it: skip the rest without parsing.
    let mentions = |w: &str| !w.is_empty() && payload.windows(w.len()).any(|x| x == w.as_bytes());
    if !mentions("consent") && !mentions(consent.consent_trait()) {
        return Ok(Vec::new());
    }
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        return Ok(Vec::new());
    };
    let Some(owner) = event_owner(reader, &head)? else {
        return Ok(Vec::new());
    };
    let withdrawn = enforce::withdrawn_at(reader, consent, owner, seq, &d.purposes)?;
    if withdrawn.is_empty() {
        return Ok(Vec::new());
    }
    let Some(live) = reader.resolve(owner)? else {
        return Ok(Vec::new());
    };
    let Some(profile) = reader.profile(live)? else {
        return Ok(Vec::new());
    };
    let at = chrono::DateTime::from_timestamp_millis(received_ms).map(|t| t.to_rfc3339());
    Ok(profile
        .activation
        .members
        .keys()
        .filter(|a| {
            d.subscriptions
                .audiences
                .iter()
                .any(|s| s.exited && (s.audience == "*" || s.audience == ***a))
        })
        .map(|audience| {
            let k = key(&d.name, "consent-exit", &format!("{seq}:{audience}"));
            let body = json!({
                "id": k,
                "kind": "audience",
                "destination": d.name,
                "audience": audience,
                "action": "exited",
                "profile_id": live.to_string(),
                "at": at,
                "cause": "consent_withdrawn",
                "purposes": withdrawn,
                "seq": seq,
            });
            Item {
                key: k,
                body,
                profile: Some(live.to_string()),
                kind: "audience",
                what: format!("exited {audience} (consent withdrawn)"),
                source_ms: received_ms,
                pos: (seq, 0),
            }
        })
        .collect())
}

/// The delivery item of a stored event, if the destination subscribes to it and the person
/// consents to the destination's purposes.
fn event_item(
    d: &Destination,
    c: &Compiled,
    consent: &ConsentRules,
    state: &StateStore,
    seq: u64,
    received_ms: i64,
    payload: &[u8],
) -> Result<Option<Item>, StoreError> {
    let Ok(event) = serde_json::from_slice::<Value>(payload) else {
        return Ok(None);
    };
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        return Ok(None);
    };
    let name = as_text(&head.message.event).or_else(|| as_text(&head.message.name));
    let id = if head.message_id.is_empty() {
        format!("seq:{seq}")
    } else {
        head.message_id.clone()
    };
    let body = json!({
        "id": key(&d.name, "event", &id),
        "kind": "event",
        "destination": d.name,
        "seq": seq,
        "event": event,
    });
    let matched = d.subscriptions.events.iter().zip(&c.filters).any(|(s, f)| {
        s.source.as_deref().is_none_or(|x| x == head.source_id)
            && s.kind.as_deref().is_none_or(|x| x == head.kind)
            && s.name.as_deref().is_none_or(|x| name.as_deref() == Some(x))
            && f.as_ref().is_none_or(|f| f.test(&body).unwrap_or(false))
    });
    if !matched {
        return Ok(None);
    }
    // The profile is looked up when the event is delivered, for the delivery log only: the
    // payload carries the identifiers, so a re-send is byte-for-byte the same.
    let uid = as_text(&head.message.user_id);
    let aid = as_text(&head.message.anonymous_id);
    let reader = state.reader()?;
    let owner = event_owner(&reader, &head)?;
    if !enforce::allows(&reader, consent, owner, &d.purposes)? {
        return Ok(None);
    }
    let profile = owner.map(|p| p.to_string()).or_else(|| {
        uid.map(|u| format!("user_id:{u}"))
            .or(aid.map(|a| format!("anonymous_id:{a}")))
    });
    Ok(Some(Item {
        key: body["id"].as_str().unwrap_or_default().to_owned(),
        what: name.unwrap_or_else(|| head.kind.clone()),
        body,
        profile,
        kind: "event",
        source_ms: received_ms,
        pos: (seq, 0),
    }))
}

/// The delivery item of a membership change, if the destination subscribes to it. An entry
/// needs the person's consent to the destination's purposes; an exit is always sent.
fn change_item(
    d: &Destination,
    consent: &ConsentRules,
    reader: &StateReader,
    no: u64,
    c: &MembershipChange,
) -> Result<Option<Item>, StoreError> {
    let wanted = d.subscriptions.audiences.iter().any(|s| {
        (s.audience == "*" || s.audience == c.audience)
            && if c.entered { s.entered } else { s.exited }
    });
    if !wanted || c.entered && !enforce::allows(reader, consent, Some(c.profile), &d.purposes)? {
        return Ok(None);
    }
    let action = if c.entered { "entered" } else { "exited" };
    let at = chrono::DateTime::from_timestamp_millis(c.at_ms).map(|t| t.to_rfc3339());
    let k = key(&d.name, "change", &no.to_string());
    let body = json!({
        "id": k,
        "kind": "audience",
        "destination": d.name,
        "change": no,
        "audience": c.audience,
        "action": action,
        "profile_id": c.profile.to_string(),
        "at": at,
        "cause": c.cause,
        "seq": c.seq,
    });
    Ok(Some(Item {
        key: k,
        body,
        profile: Some(c.profile.to_string()),
        kind: "audience",
        what: format!("{action} {}", c.audience),
        source_ms: c.at_ms,
        pos: (0, no),
    }))
}

/// Items after `from`, at most `max`, and the position they (and the unsubscribed entries
/// between them) take the destination to.
///
/// A destination with purposes reads events only up to the last durable checkpoint too:
/// its consent gate must see the effect of every event before it (a consent given or
/// withdrawn in the event itself included).
#[allow(clippy::too_many_arguments)]
pub fn gather(
    d: &Destination,
    c: &Compiled,
    consent: &ConsentRules,
    log: &LogReader,
    state: &StateStore,
    from: Pos,
    max: usize,
) -> Result<(Vec<Item>, Pos), StoreError> {
    // A PostgreSQL sync writes the profile as the processor left it, so it too waits for
    // the checkpoint that applied an event before it takes the event.
    // So do profile changes.
    let wants_changes = !d.subscriptions.audiences.is_empty()
        || d.subscriptions.profiles.is_some()
        || d.kind == super::model::DestinationType::Postgres;
    let gated = !d.purposes.is_empty();
    let durable = state.durable_reader()?;
    let reader = state.reader()?;
    let bound = if wants_changes || gated {
        log.last_seq().min(durable.processed_seq()?)
    } else {
        log.last_seq()
    };
    let events = if from.0 < bound {
        let mut v = log.read_from(from.0 + 1, SCAN)?;
        v.retain(|e| e.seq <= bound);
        v
    } else {
        Vec::new()
    };
    let events_all = events.last().is_none_or(|e| e.seq >= bound);
    let changes = durable.membership_changes(from.1, SCAN)?;
    let changes_all = changes.len() < SCAN;

    let mut pos = from;
    let mut items = Vec::new();
    let (mut i, mut j) = (0, 0);
    // The event seq a change is ordered after: its cause, or (no cause) the previous one's.
    let mut after_seq = from.0;
    while items.len() < max {
        let e = events.get(i);
        let ch = changes
            .get(j)
            .map(|(n, ch)| (*n, ch, after_seq.max(ch.seq)));
        let take_event = match (e, &ch) {
            (Some(e), Some((_, _, s))) => e.seq <= *s,
            (Some(_), None) => changes_all,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_event {
            let Some(e) = e else { break };
            i += 1;
            let before = pos;
            pos.0 = e.seq;
            if gated && !d.subscriptions.audiences.is_empty() {
                for mut it in consent_exits(d, consent, &reader, e.seq, e.received_ms, &e.payload)?
                {
                    it.pos = before;
                    items.push(it);
                }
            }
            let change = match &d.subscriptions.profiles {
                Some(sub) => super::profile_change::item(
                    d,
                    sub,
                    consent,
                    state,
                    e.seq,
                    e.received_ms,
                    &e.payload,
                )?,
                None => None,
            };
            if !d.subscriptions.events.is_empty() {
                if let Some(mut it) =
                    event_item(d, c, consent, state, e.seq, e.received_ms, &e.payload)?
                {
                    // Handled only with the profile change that follows it (same seq), so a
                    // crash between the two re-sends the event rather than skip the change.
                    it.pos = if change.is_some() { before } else { pos };
                    items.push(it);
                }
            }
            if let Some(mut it) = change {
                it.pos = pos;
                items.push(it);
            }
        } else {
            let Some((no, change, s)) = ch else { break };
            if e.is_none() && !events_all {
                break;
            }
            j += 1;
            after_seq = s;
            pos.1 = no;
            if let Some(mut it) = change_item(d, consent, &reader, no, change)? {
                it.pos = pos;
                items.push(it);
            }
        }
    }
    Ok((items, pos))
}
