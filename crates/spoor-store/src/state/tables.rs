//! Table layout of `state.redb`. Profiles, written at every checkpoint and read at every
//! cache miss, are compact binary records (`spoor_core::codec`); the other values are JSON
//! (small or rarely written; readable with any tool, and the types evolve with
//! `#[serde(default)]`). Keys are fixed-width where they are ranged over.

use super::engine_err;
use crate::error::StoreError;
use redb::{Database, TableDefinition};
use spoor_core::identity::{ProfileId, ProfileStatus};
use spoor_core::profile::Profile;

/// Identifier key (`ident_key`) → owning profile id (raw u64).
pub const IDENT: TableDefinition<&str, u64> = TableDefinition::new("ident");
/// Profile id → `ProfileIdentity` (identifiers, status, merges).
pub const PIDENT: TableDefinition<u64, &[u8]> = TableDefinition::new("profile_identity");
/// Profile id → its [`ProfileStatus`] ([`status_code`]), written with each identity record:
/// the one field of [`PIDENT`] a backfill needs for every profile. 16-byte rows read in a
/// few MB; the identity records are hundreds of MB of pages scattered through the file.
pub const PSTATUS: TableDefinition<u64, u64> = TableDefinition::new("profile_status");
/// Profile id → `Profile` (traits with provenance, stats, activation) as a binary record
/// ([`write_profile`]; format 1 states hold JSON, still read). Only live profiles.
pub const PROFILES: TableDefinition<u64, &[u8]> = TableDefinition::new("profiles");
/// Group id → `Group`.
pub const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// (profile id at processing time, event time ms, seq) → (): the per-profile timeline.
/// Merged profiles keep their rows; reads take the union over a profile's absorbed ids.
pub const TIMELINE: TableDefinition<(u64, i64, u64), ()> = TableDefinition::new("timeline");
/// (group id, profile id at the time it joined) → (): the people of a group, so a change of
/// a group's traits re-evaluates its members' group-trait audiences. Rows stay when a
/// profile is merged away or re-derived (readers resolve each id to the live profile and
/// skip the gone ones): a superset of the members, never missing one.
pub const GROUP_MEMBERS: TableDefinition<(&str, u64), ()> = TableDefinition::new("group_members");
/// ([`ident_hash`] of the identifier key, seq) → (): which events carried an identifier
/// (for splits). Hashed, because two or three rows are written per event and fixed-width
/// keys sort and insert several times faster than strings; a reader re-checks each event,
/// so a collision costs a wasted read, never a wrong answer.
pub const IDENT_EVENTS: TableDefinition<(u64, u64), ()> =
    TableDefinition::new("ident_event_hashes");
/// (profile id, seq, index) → `Decision` JSON: why identifiers were linked, merged or refused.
pub const DECISIONS: TableDefinition<(u64, u64, u32), &[u8]> = TableDefinition::new("decisions");
/// Audience name → its members, a serialized roaring bitmap of profile raw ids
/// ([`super::encode_members`]). Audiences without members have no row.
pub const AUDIENCE_MEMBERS: TableDefinition<&str, &[u8]> = TableDefinition::new("audience_members");
/// (at ms, profile id) → (): when time alone may change a profile's memberships.
pub const TIMERS: TableDefinition<(i64, u64), ()> = TableDefinition::new("timers");
/// (profile id at the time, at ms, change number) → `MembershipChange` (binary record,
/// `memberships::write_change`; JSON in format 1).
pub const MEMBERSHIP_HISTORY: TableDefinition<(u64, i64, u64), &[u8]> =
    TableDefinition::new("membership_history");
/// Change number → `MembershipChange` (as above): every entry and exit, in order.
pub const MEMBERSHIP_FEED: TableDefinition<u64, &[u8]> = TableDefinition::new("membership_feed");
/// Small values: `processed_seq`, `split_rules`, counters.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

pub const K_PROCESSED: &str = "processed_seq";
pub const K_SPLIT_RULES: &str = "split_rules";
pub const K_LIVE_PROFILES: &str = "live_profiles";
pub const K_NEXT_CHANGE: &str = "next_change_no";
pub const K_FORMAT: &str = "state_format";

/// The state format this code writes: 1 = every value JSON; 2 = profiles and membership
/// changes as binary records; 3 = profile records whose activation is a self-contained,
/// spliceable tail (`spoor_core::codec::PROFILE_V3`).
/// A format-2 reader reads format-1 profiles too (a record says which it is by its first
/// byte), so an older state is upgraded in place as its profiles are rewritten; a state of
/// a newer format is refused at open.
pub const STATE_FORMAT: u64 = 3;

/// The key of an identifier: its type and value separated by U+001F (never in a type name).
pub fn ident_key(kind: &str, value: &str) -> String {
    let mut k = String::with_capacity(kind.len() + value.len() + 1);
    k.push_str(kind);
    k.push('\u{1f}');
    k.push_str(value);
    k
}

/// A stable 64-bit hash (FNV-1a) of an identifier key. Stored on disk, so it must never
/// change.
pub fn ident_hash(key: &str) -> u64 {
    key.bytes().fold(IDENT_HASH_SEED, ident_hash_step)
}

pub(super) const IDENT_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;

pub(super) fn ident_hash_step(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

/// Splits an identifier key back into (type, value).
pub fn split_ident_key(k: &str) -> (&str, &str) {
    k.split_once('\u{1f}').unwrap_or((k, ""))
}

/// A status as a [`PSTATUS`] value: 0 live, `u64::MAX` dissolved, else the raw id merged
/// into (ids start at 1).
pub fn status_code(s: ProfileStatus) -> u64 {
    match s {
        ProfileStatus::Live => 0,
        ProfileStatus::MergedInto(p) => p.raw(),
        ProfileStatus::Dissolved => u64::MAX,
    }
}

/// The inverse of [`status_code`].
pub fn status_of(code: u64) -> ProfileStatus {
    match code {
        0 => ProfileStatus::Live,
        u64::MAX => ProfileStatus::Dissolved,
        p => ProfileStatus::MergedInto(ProfileId::from_raw(p)),
    }
}

pub fn create_all(db: &Database) -> Result<(), StoreError> {
    let tx = db.begin_write().map_err(engine_err)?;
    {
        tx.open_table(IDENT).map_err(engine_err)?;
        tx.open_table(PIDENT).map_err(engine_err)?;
        tx.open_table(PSTATUS).map_err(engine_err)?;
        tx.open_table(PROFILES).map_err(engine_err)?;
        tx.open_table(GROUPS).map_err(engine_err)?;
        tx.open_table(GROUP_MEMBERS).map_err(engine_err)?;
        tx.open_table(TIMELINE).map_err(engine_err)?;
        tx.open_table(IDENT_EVENTS).map_err(engine_err)?;
        tx.open_table(DECISIONS).map_err(engine_err)?;
        tx.open_table(META).map_err(engine_err)?;
        tx.open_table(AUDIENCE_MEMBERS).map_err(engine_err)?;
        tx.open_table(TIMERS).map_err(engine_err)?;
        tx.open_table(MEMBERSHIP_HISTORY).map_err(engine_err)?;
        tx.open_table(MEMBERSHIP_FEED).map_err(engine_err)?;
    }
    tx.commit().map_err(engine_err)
}

/// Writes a profile's record into `out` (cleared first).
pub fn write_profile(out: &mut Vec<u8>, p: &Profile) {
    out.clear();
    spoor_core::codec::write_profile(out, p);
}

/// Reads a profile record of either format: JSON (format 1) starts with `{`, a binary
/// record with its format byte.
pub fn read_profile(b: &[u8]) -> Result<Profile, StoreError> {
    if b.first() == Some(&b'{') {
        return from_json(b);
    }
    spoor_core::codec::decode_profile(b)
        .map_err(|e| StoreError::Meta(format!("unreadable profile record: {e}")))
}

/// [`read_profile`], leaving the activation of a binary record encoded until used where
/// its format allows (`spoor_core::codec::decode_profile_lazy`).
pub fn read_profile_lazy(b: &[u8]) -> Result<Profile, StoreError> {
    if b.first() == Some(&b'{') {
        return from_json(b);
    }
    spoor_core::codec::decode_profile_lazy(b)
        .map_err(|e| StoreError::Meta(format!("unreadable profile record: {e}")))
}

/// Checks the state's format and records the current one: a newer format is refused
/// (this code cannot read it), an older one is readable and becomes the current one.
pub fn check_format(db: &Database) -> Result<(), StoreError> {
    use redb::ReadableTable;
    let tx = db.begin_write().map_err(engine_err)?;
    {
        let mut t = tx.open_table(META).map_err(engine_err)?;
        let found = t
            .get(K_FORMAT)
            .map_err(engine_err)?
            .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes))
            .unwrap_or(1);
        if found > STATE_FORMAT {
            return Err(StoreError::Meta(format!(
                "state.redb has state format {found}, newer than this Spoor reads ({STATE_FORMAT}): \
                 run the newer Spoor, or `spoor rebuild` to derive the state again from the log"
            )));
        }
        if found != STATE_FORMAT {
            t.insert(K_FORMAT, STATE_FORMAT.to_le_bytes().as_slice())
                .map_err(engine_err)?;
        }
    }
    tx.commit().map_err(engine_err)
}

pub fn json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(v).map_err(|e| StoreError::Meta(format!("encode: {e}")))
}

pub fn from_json<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(b).map_err(|e| StoreError::Meta(format!("unreadable state record: {e}")))
}
