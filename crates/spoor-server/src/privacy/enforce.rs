//! The consent gate: may data about this person go to a destination serving these purposes?
//!
//! One place, called by every destination type at delivery time (not when the event was
//! processed), so a withdrawal stops what is still queued. A destination without purposes
//! is not gated (it is internal: a warehouse, a log).

use spoor_core::consent::{ConsentRules, ConsentValue};
use spoor_core::identity::ProfileId;
use spoor_store::state::StateReader;
use spoor_store::StoreError;

/// True when the person (a profile id, followed through merges) consents to every purpose.
/// An unknown person has the default consent.
pub fn allows(
    reader: &StateReader,
    rules: &ConsentRules,
    profile: Option<ProfileId>,
    purposes: &[String],
) -> Result<bool, StoreError> {
    if purposes.is_empty() {
        return Ok(true);
    }
    let live = match profile {
        Some(p) => reader.resolve(p)?,
        None => None,
    };
    let consent = match live {
        Some(p) => reader.profile(p)?.map(|p| p.consent).unwrap_or_default(),
        None => Default::default(),
    };
    Ok(rules.allows(&consent, purposes))
}

/// The purposes of `purposes` the event at `seq` withdrew for this person (its statement
/// turned granted into denied), if the person does not consent to them now. Used to send
/// audience exits once, on withdrawal.
pub fn withdrawn_at(
    reader: &StateReader,
    rules: &ConsentRules,
    profile: ProfileId,
    seq: u64,
    purposes: &[String],
) -> Result<Vec<String>, StoreError> {
    let Some(live) = reader.resolve(profile)? else {
        return Ok(Vec::new());
    };
    let Some(p) = reader.profile(live)? else {
        return Ok(Vec::new());
    };
    Ok(rules
        .changes_at(&p.consent, seq)
        .into_iter()
        .filter(|(purpose, v)| {
            *v == ConsentValue::Denied
                && purposes.contains(purpose)
                && !rules.value(&p.consent, purpose).is_granted()
        })
        .map(|(purpose, _)| purpose)
        .collect())
}

/// Refuses purposes that are not configured: a typo would otherwise gate a destination on
/// a purpose nobody can consent to, and it would silently receive nothing.
pub fn check_purposes(rules: &ConsentRules, purposes: &[String]) -> Result<(), String> {
    match purposes.iter().find(|p| !rules.is_purpose(p)) {
        Some(p) => Err(format!(
            "purposes: {p:?} is not a configured purpose ({:?}; see [privacy] purposes)",
            rules.purposes()
        )),
        None => Ok(()),
    }
}
