//! The audience rule AST. Its serde form *is* the JSON language; the text form is parsed by
//! [`super::parse`] and printed by [`Rule`]'s `Display` (canonical text).

use crate::event::EventType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A span of time in ms. In JSON and text it is written with a unit (`90s`, `15m`, `2h`,
/// `7d`, `1w`, `250ms`) so rules stay readable; the largest exact unit up to days is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

const UNITS: [(&str, u64); 6] = [
    ("w", 604_800_000),
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

impl Duration {
    pub fn ms(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Parses `<digits><unit>`; `None` when malformed or out of range.
    pub fn parse(s: &str) -> Option<Duration> {
        let split = s.find(|c: char| !c.is_ascii_digit())?;
        let (n, unit) = s.split_at(split);
        let n: u64 = n.parse().ok()?;
        let (_, mult) = UNITS.iter().find(|(u, _)| *u == unit)?;
        let ms = n.checked_mul(*mult)?;
        // Keep every duration usable in i64 time arithmetic without overflow.
        (ms <= MAX_DURATION_MS).then_some(Duration(ms))
    }
}

/// 1000 years: far beyond any useful window, far from i64 overflow when added to a time.
pub const MAX_DURATION_MS: u64 = 1000 * 365 * 86_400_000;

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        // Weeks are accepted but printed as days: "7d" is how marketers say it.
        for (unit, mult) in &UNITS[1..] {
            if self.0.checked_rem(*mult) == Some(0) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        // Not reached: the last unit is 1 ms.
        write!(f, "{}ms", self.0)
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration `{s}`: expected a number and a unit (ms, s, m, h, d, w), e.g. `7d`"
            ))
        })
    }
}

/// A point in time: relative to the evaluation time, or absolute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TimeRef {
    /// `now`, `now - 30d`, `now + 1h`: evaluation time plus this offset (ms).
    Now(i64),
    /// `date "2024-01-01"`: ms since the epoch.
    Date(i64),
}

impl TimeRef {
    pub fn at(self, now_ms: i64) -> i64 {
        match self {
            TimeRef::Now(off) => now_ms.saturating_add(off),
            TimeRef::Date(ms) => ms,
        }
    }
}

/// A literal on the right of a comparison. JSON: a plain number / string / boolean, or
/// `{"now": -2592000000}` / `{"date": 1704067200000}` for times.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Number(f64),
    String(String),
    Time(TimeRef),
}

/// A comparison applied to one value (a trait, a property, a UTM field…).
///
/// Semantics (`v` is the value, absent = missing or `null`):
/// - `=` / `in`: numbers numerically, strings and booleans exactly; against a time literal
///   `v` is read as a time (a number is ms since the epoch, a string RFC 3339 or
///   `YYYY-MM-DD`). A value of another type never equals. `!=` is exactly `not =`, so it
///   holds for an absent value.
/// - `<`, `<=`, `>`, `>=`: numbers with numbers, strings with strings (byte order), times
///   with times; otherwise false.
/// - `contains`: a substring of a string, or an element (by `=`) of an array.
/// - `starts with`: a string prefix.
/// - `exists`: present and not `null`. `is empty`: absent, `null`, `""`, `[]` or `{}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", deny_unknown_fields)]
pub enum Comparison {
    #[serde(rename = "=")]
    Eq { value: Literal },
    #[serde(rename = "!=")]
    Ne { value: Literal },
    #[serde(rename = "<")]
    Lt { value: Literal },
    #[serde(rename = "<=")]
    Le { value: Literal },
    #[serde(rename = ">")]
    Gt { value: Literal },
    #[serde(rename = ">=")]
    Ge { value: Literal },
    #[serde(rename = "contains")]
    Contains { value: Literal },
    #[serde(rename = "starts_with")]
    StartsWith { value: String },
    #[serde(rename = "in")]
    In { values: Vec<Literal> },
    #[serde(rename = "exists")]
    Exists,
    #[serde(rename = "is_empty")]
    IsEmpty,
}

/// A condition on event properties (the `where` clause). Paths are dotted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PropCond {
    And { all: Vec<PropCond> },
    Or { any: Vec<PropCond> },
    Not { cond: Box<PropCond> },
    Property { path: String, cmp: Comparison },
}

/// Which events a condition (or a computed trait) looks at.
///
/// `kind: None` matches every type; `name: None` every name. In text: `"Order Completed"`
/// (a track event), `page "Pricing"`, `page`, `track`, `any event`, `any event "Home"`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<EventType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<PropCond>,
}

impl EventSelector {
    /// A track event with this name.
    pub fn track(name: impl Into<String>) -> Self {
        EventSelector {
            kind: Some(EventType::Track),
            name: Some(name.into()),
            filter: None,
        }
    }
}

/// How many matching events a `performed` condition asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CountOp {
    AtLeast(u32),
    AtMost(u32),
    Exactly(u32),
}

/// `first performed` or `last performed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Which {
    First,
    Last,
}

/// `before` (strictly earlier) or `after` (strictly later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    Before,
    After,
}

/// UTM fields of a channel condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UtmField {
    Source,
    Medium,
    Campaign,
    Content,
    Term,
}

/// Fields of a device condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceField {
    Type,
    Os,
    Browser,
}

/// An audience rule. See the module documentation for the text grammar and the exact
/// semantics of each event condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rule {
    And {
        all: Vec<Rule>,
    },
    Or {
        any: Vec<Rule>,
    },
    Not {
        rule: Box<Rule>,
    },
    Trait {
        path: String,
        cmp: Comparison,
    },
    Computed {
        name: String,
        cmp: Comparison,
    },
    GroupTrait {
        path: String,
        cmp: Comparison,
    },
    Utm {
        field: UtmField,
        cmp: Comparison,
    },
    Device {
        field: DeviceField,
        cmp: Comparison,
    },
    InAudience {
        name: String,
    },
    /// `consented to PURPOSE`: the person's current consent for the purpose is granted
    /// (stated, or the configured default).
    Consented {
        purpose: String,
    },
    /// `performed E [at least|at most|exactly N times] [within W]`.
    Performed {
        event: EventSelector,
        count: CountOp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<Duration>,
    },
    /// `first|last performed E before|after T`.
    FirstLast {
        which: Which,
        event: EventSelector,
        order: Order,
        time: TimeRef,
    },
    /// `performed A then B within T`.
    Then {
        first: EventSelector,
        then: EventSelector,
        within: Duration,
    },
    /// `performed A and not followed by B within T`.
    NotFollowed {
        first: EventSelector,
        then: EventSelector,
        within: Duration,
    },
}

impl Rule {
    /// True for the conditions whose truth depends on the person's events (they get a slot
    /// in [`super::AudienceState`]).
    pub fn is_event_condition(&self) -> bool {
        matches!(
            self,
            Rule::Performed { .. }
                | Rule::FirstLast { .. }
                | Rule::Then { .. }
                | Rule::NotFollowed { .. }
        )
    }

    /// Visits every node, parents before children, left to right.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Rule)) {
        f(self);
        match self {
            Rule::And { all: rs } | Rule::Or { any: rs } => rs.iter().for_each(|r| r.walk(f)),
            Rule::Not { rule } => rule.walk(f),
            _ => {}
        }
    }
}
