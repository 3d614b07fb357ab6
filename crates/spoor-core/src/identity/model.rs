//! The values the identity engine reads and writes: typed ids, identifiers, the per-profile
//! identity record, the input it resolves and the decisions it records.
//!
//! Everything here is plain data with `serde`, so a store can persist it and the API can show
//! it without the engine in between.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A profile (one person, anonymous or known).
///
/// Internally the number of the log entry (`seq`) whose event created the profile. That makes
/// ids a pure function of the log: a replay from empty *and* a partial re-derivation after a
/// split give the same id to the profile the same event creates — no counter to keep in sync.
/// Ordering by the number is ordering by age, which is how "the older profile survives" is
/// decided. Shown as `prof_` + 13 Crockford base32 characters of a bijective scramble of the
/// number, so ids do not reveal event counts and nobody is tempted to do arithmetic on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProfileId(u64);

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
const SCRAMBLE_XOR: u64 = 0x5DEE_CE66_D1CE_4E5B;
const SCRAMBLE_MUL: u64 = 0x9E37_79B9_7F4A_7C15; // odd, so multiplication mod 2^64 is a bijection
const SCRAMBLE_MUL_INV: u64 = mul_inverse(SCRAMBLE_MUL);

/// Inverse of an odd number modulo 2^64 by Newton iteration (3 → 6 → … → 96 correct bits).
const fn mul_inverse(a: u64) -> u64 {
    let mut x = a;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u64.wrapping_sub(a.wrapping_mul(x)));
        i += 1;
    }
    x
}

impl ProfileId {
    pub const PREFIX: &'static str = "prof_";

    /// The id of the profile created by the event at log position `seq`.
    pub const fn from_seq(seq: u64) -> Self {
        Self(seq)
    }

    /// The raw number, for storage keys. Not for display.
    pub const fn raw(self) -> u64 {
        self.0
    }

    pub const fn from_raw(raw: u64) -> Self {
        Self(raw)
    }

    /// Parses the `prof_…` form.
    pub fn parse(s: &str) -> Option<Self> {
        let body = s.strip_prefix(Self::PREFIX)?.as_bytes();
        if body.len() != 13 {
            return None;
        }
        let mut v: u64 = 0;
        for (i, c) in body.iter().enumerate() {
            let d = ALPHABET.iter().position(|a| a == c)? as u64;
            if i == 0 && d >= 16 {
                return None; // 13 × 5 = 65 bits; the first character carries only 4
            }
            v = (v << 5) | d;
        }
        Some(Self(v.wrapping_mul(SCRAMBLE_MUL_INV) ^ SCRAMBLE_XOR))
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = (self.0 ^ SCRAMBLE_XOR).wrapping_mul(SCRAMBLE_MUL);
        let mut buf = [0u8; 13];
        for (i, b) in buf.iter_mut().rev().enumerate() {
            *b = ALPHABET[((v >> (5 * i)) & 31) as usize];
        }
        f.write_str(Self::PREFIX)?;
        // The alphabet is ASCII, so this cannot fail; fall back to nothing rather than panic.
        f.write_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl FromStr for ProfileId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s).ok_or_else(|| format!("not a profile id: {s:?}"))
    }
}

impl Serialize for ProfileId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProfileId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("bad profile id {s:?}")))
    }
}

/// The name of an identifier type (`user_id`, `email`, a custom one…), as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdType(String);

impl IdType {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One identifier: a type and a *normalised* value. Two identifiers are the same key in the
/// graph exactly when both are equal, so normalisation happens once, before this is built.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identifier {
    #[serde(rename = "type")]
    pub kind: IdType,
    pub value: String,
}

impl Identifier {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: IdType::new(kind),
            value: value.into(),
        }
    }
}

impl fmt::Display for Identifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind, self.value)
    }
}

/// An identifier as held by a profile, with when it was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkedIdentifier {
    pub identifier: Identifier,
    /// Event time of the event that first linked it (kept across merges).
    pub first_seen_ms: i64,
    /// Latest event time it was carried. Maintained only for types with a `limit_window_ms`
    /// (other types keep `first_seen_ms`), so the common event — all identifiers already
    /// known — writes nothing. Changing a type's window therefore needs a replay.
    pub last_seen_ms: i64,
    /// Log position of the event that first linked it: the answer to "why is this here".
    pub since_seq: u64,
}

/// Whether a profile is current or was merged away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "into", rename_all = "snake_case")]
pub enum ProfileStatus {
    Live,
    /// Merged into another profile; follow the chain to find the live one.
    MergedInto(ProfileId),
    /// Left over from a split whose re-derivation gave none of its identifiers an owner.
    Dissolved,
}

/// The identity part of a profile: what identifies it and how it came to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileIdentity {
    pub created_seq: u64,
    pub created_ms: i64,
    pub status: ProfileStatus,
    /// Sorted by identifier. For a merged-away profile: what it brought into the merge (kept so
    /// the merge can be explained and undone); the owner of those identifiers is the survivor.
    pub identifiers: Vec<LinkedIdentifier>,
    /// Profiles merged directly into this one (the reverse of `MergedInto`), in merge order.
    pub absorbed: Vec<ProfileId>,
    /// For a profile merged away by an event: that event's `seq`. Lets a split tell what the
    /// survivor held at the time of the merge from what it gained later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_seq: Option<u64>,
}

impl ProfileIdentity {
    pub fn new(created_seq: u64, created_ms: i64) -> Self {
        Self {
            created_seq,
            created_ms,
            status: ProfileStatus::Live,
            identifiers: Vec::new(),
            absorbed: Vec::new(),
            merged_seq: None,
        }
    }

    pub fn is_live(&self) -> bool {
        self.status == ProfileStatus::Live
    }

    /// Position of `id` in the (sorted) identifier list.
    pub fn find(&self, id: &Identifier) -> Result<usize, usize> {
        self.identifiers.binary_search_by(|l| l.identifier.cmp(id))
    }
}

/// What the engine needs from one event: its log position, message id, time and the raw
/// `(type, value)` pairs the caller extracted from the configured paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityInput {
    /// Log position; strictly increasing in processing order, below 2^56.
    pub seq: u64,
    pub message_id: String,
    /// Event time (after clock-skew correction). Only limit windows use it.
    pub timestamp_ms: i64,
    pub identifiers: Vec<(String, String)>,
}

/// An admin decision that two sets of identifiers belong to different people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SplitRuleId(pub u64);

impl fmt::Display for SplitRuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "split_{}", self.0)
    }
}

/// Which side of a [`SplitRule`] an identifier is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitSide {
    A,
    B,
}

/// Why a split rule exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitOrigin {
    /// Undo of the merge of `from` into `into`.
    UndoMerge { from: ProfileId, into: ProfileId },
    /// One identifier detached from its profile.
    Detach { identifier: Identifier },
}

/// "No profile may ever hold an identifier of `side_a` together with one of `side_b`."
///
/// Stated over identifiers, not profile ids, so it means the same thing in every replay and
/// applies to all of history — a split says "these are different people", which has no date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRule {
    pub id: SplitRuleId,
    pub side_a: Vec<Identifier>,
    pub side_b: Vec<Identifier>,
    pub created_ms: i64,
    pub origin: SplitOrigin,
}

impl SplitRule {
    /// The side `id` is on, if any.
    pub fn side_of(&self, id: &Identifier) -> Option<SplitSide> {
        if self.side_a.binary_search(id).is_ok() {
            Some(SplitSide::A)
        } else if self.side_b.binary_search(id).is_ok() {
            Some(SplitSide::B)
        } else {
            None
        }
    }
}

/// Which rule kept an identifier out of a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefusalRule {
    /// Linking would give the profile more identifiers of `id_type` than `limit` (counting
    /// only identifiers seen within `window_ms` when set).
    LimitExceeded {
        id_type: IdType,
        limit: u32,
        window_ms: Option<u64>,
    },
    /// The value matches a blocked pattern (placeholder values like `null`).
    Blocked { pattern: String },
    /// The type is not configured.
    UnknownType,
    /// The value cannot be normalised (e.g. an e-mail without `@`, or too long).
    Invalid { reason: String },
    /// An admin split forbids the link.
    SplitRule { rule: SplitRuleId },
}

/// What happened, and why. Stored with the event so the API can answer "why are these one
/// person" (follow `Linked` / `Merged`) and "why not" (`Refused`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub seq: u64,
    pub message_id: String,
    pub timestamp_ms: i64,
    #[serde(flatten)]
    pub kind: DecisionKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum DecisionKind {
    Created {
        profile: ProfileId,
    },
    Linked {
        profile: ProfileId,
        identifier: Identifier,
    },
    /// `from` merged into `into` because the event carried `via` (owned by `from`) together
    /// with `with` (owned by `into`).
    Merged {
        from: ProfileId,
        into: ProfileId,
        via: Identifier,
        with: Identifier,
    },
    /// `identifier` was left out of this event's link. `owner` is the profile that already
    /// held it (if any); `profile` the one the event resolved to.
    Refused {
        identifier: Identifier,
        rule: RefusalRule,
        owner: Option<ProfileId>,
        profile: Option<ProfileId>,
    },
}

/// The outcome of resolving one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolution {
    /// The profile the event belongs to; `None` when it carried no usable identifier.
    pub profile: Option<ProfileId>,
    /// Profiles merged away into `profile` by this event.
    pub merged: Vec<ProfileId>,
    pub decisions: Vec<Decision>,
}
