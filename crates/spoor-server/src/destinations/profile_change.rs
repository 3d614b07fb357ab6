//! "Profile changed" delivery items: after each event that set traits of a profile, the
//! profile as it is when delivered (the shape of `GET /v1/profiles/{id}`) with the keys the
//! event wrote.
//!
//! The change is read from the traits' provenance: a trait whose register was written by
//! the event at `seq` carries that `seq`. So no before-image is kept, and a write of the
//! value a trait already had counts as a change too. If a later event overwrote the same
//! traits before this one is delivered, this event yields no item and the later one does
//! (with the same current profile): changes coalesce, the last state always arrives.
//! The profile is that of the event's `userId` (else `anonymousId`), followed through
//! merges; the event must have been applied, so these items wait for the checkpoint like
//! audience changes do.

use super::model::{Destination, ProfileSubscription};
use super::source::{as_text, key, Head, Item};
use serde_json::json;
use spoor_store::state::StateStore;
use spoor_store::StoreError;

/// The profile-change item of the event at `seq`, if it set a subscribed trait.
pub fn item(
    d: &Destination,
    sub: &ProfileSubscription,
    consent: &spoor_core::consent::ConsentRules,
    state: &StateStore,
    seq: u64,
    received_ms: i64,
    payload: &[u8],
) -> Result<Option<Item>, StoreError> {
    let Ok(head) = serde_json::from_slice::<Head>(payload) else {
        return Ok(None);
    };
    let r = state.reader()?;
    let mut owner = None;
    for (kind, v) in [
        ("user_id", as_text(&head.message.user_id)),
        ("anonymous_id", as_text(&head.message.anonymous_id)),
    ] {
        if let Some(v) = v {
            if let Some(p) = r.owner(kind, &v)? {
                owner = Some(p);
                break;
            }
        }
    }
    let Some(pid) = owner.map(|p| r.resolve(p)).transpose()?.flatten() else {
        return Ok(None);
    };
    let Some(profile) = r.profile(pid)? else {
        return Ok(None);
    };
    // The profile is data about the person: it leaves only with their consent.
    if !consent.allows(&profile.consent, &d.purposes) {
        return Ok(None);
    }
    let changed: Vec<&String> = profile
        .traits
        .iter()
        .filter(|(_, t)| t.seq == seq)
        .map(|(k, _)| k)
        .collect();
    let wanted = !changed.is_empty()
        && (sub.traits.is_empty() || changed.iter().any(|k| sub.traits.contains(k)));
    if !wanted {
        return Ok(None);
    }
    let doc = crate::api::profiles::profile_json(&r, pid, &profile)
        .map_err(|e| StoreError::Meta(format!("reading profile {pid}: {e}")))?;
    let k = key(&d.name, "profile", &seq.to_string());
    let body = json!({
        "id": k,
        "kind": "profile",
        "destination": d.name,
        "seq": seq,
        "profile_id": pid.to_string(),
        "changed": changed,
        "profile": doc,
    });
    Ok(Some(Item {
        key: k,
        body,
        profile: Some(pid.to_string()),
        kind: "profile",
        what: "profile changed".into(),
        source_ms: received_ms,
        pos: (seq, 0),
    }))
}
