//! The inputs of evaluation: one event as an owned [`EventFact`], and the non-event state of a
//! person as [`ProfileFacts`].
//!
//! Both are plain owned data so that audience and computed-trait state can be built, merged
//! and re-evaluated without access to the log or the store: the processor builds them once per
//! event / per evaluation and hands them in.

use super::ast::{DeviceField, EventSelector, PropCond, UtmField};
use crate::event::EventType;
use crate::profile::{EventView, LeanView, Profile};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeSet;

/// What audience rules and computed traits need to know about one event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFact {
    /// Log position; breaks timestamp ties, so "first", "last" and "then" are total orders.
    pub seq: u64,
    /// Event time (clock-skew corrected), ms since the epoch.
    pub ts_ms: i64,
    pub kind: EventType,
    /// The `track` event name, or the `page` / `screen` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The event's `properties` (empty when absent or not an object).
    #[serde(default)]
    pub properties: Map<String, Value>,
}

impl EventFact {
    /// Builds the fact from a parsed event. `properties` are parsed here, once: the view keeps
    /// them raw because most stages never read them.
    pub fn from_view(ev: &EventView) -> EventFact {
        let properties = ev
            .properties
            .and_then(|raw| serde_json::from_str::<Map<String, Value>>(raw.get()).ok())
            .unwrap_or_default();
        EventFact {
            seq: ev.seq,
            ts_ms: ev.timestamp_ms,
            kind: ev.kind,
            name: ev.selector_name().map(str::to_owned),
            properties,
        }
    }

    /// [`EventFact::from_view`] keeping only the top-level properties in `keys` (the ones
    /// the definitions read, see [`property_keys`]): the others are skipped by the parser,
    /// never built. Rules and computed traits read nothing else, so they see the same fact.
    pub fn from_view_keys(ev: &EventView, keys: &BTreeSet<String>) -> EventFact {
        EventFact {
            seq: ev.seq,
            ts_ms: ev.timestamp_ms,
            kind: ev.kind,
            name: ev.selector_name().map(str::to_owned),
            properties: wanted(ev.properties, keys),
        }
    }

    /// The same fact from a [`LeanView`] (what a backfill parses): equal to
    /// [`EventFact::from_view_keys`] for any event the full parse accepts.
    pub fn from_lean(seq: u64, ts_ms: i64, ev: &LeanView, keys: &BTreeSet<String>) -> EventFact {
        EventFact {
            seq,
            ts_ms,
            kind: ev.kind,
            name: ev.name.as_deref().map(str::to_owned),
            properties: wanted(ev.properties, keys),
        }
    }

    /// The `(ts, seq)` order key: a total order on events, independent of arrival order.
    pub fn key(&self) -> (i64, u64) {
        (self.ts_ms, self.seq)
    }

    /// The property at a dotted path (`product.category`; a numeric segment indexes an array).
    pub fn property(&self, path: &str) -> Option<&Value> {
        lookup(&self.properties, path)
    }
}

/// The wanted top-level properties of a raw `properties` value (empty when it is absent
/// or not an object).
fn wanted(raw: Option<&RawValue>, keys: &BTreeSet<String>) -> Map<String, Value> {
    match raw {
        Some(raw) if !keys.is_empty() => {
            let mut de = serde_json::Deserializer::from_str(raw.get());
            serde::de::Deserializer::deserialize_map(&mut de, Wanted(keys)).unwrap_or_default()
        }
        _ => Map::new(),
    }
}

/// Adds the top-level property keys an event selector's where-clause reads.
pub fn property_keys(sel: &EventSelector, out: &mut BTreeSet<String>) {
    fn walk(c: &PropCond, out: &mut BTreeSet<String>) {
        match c {
            PropCond::And { all } => all.iter().for_each(|c| walk(c, out)),
            PropCond::Or { any } => any.iter().for_each(|c| walk(c, out)),
            PropCond::Not { cond } => walk(cond, out),
            PropCond::Property { path, .. } => {
                out.insert(top_key(path).to_owned());
            }
        }
    }
    if let Some(c) = &sel.filter {
        walk(c, out);
    }
}

/// The map key a dotted path starts with ([`lookup`] reads it first).
pub fn top_key(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// Reads a JSON object keeping only the wanted keys (the rest is skipped unparsed into
/// values). Later duplicates win, as in `serde_json::Map`.
struct Wanted<'k>(&'k BTreeSet<String>);

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Map<String, Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<Cow<'de, str>>()? {
            if self.0.contains(k.as_ref()) {
                let v: Value = map.next_value()?;
                out.insert(k.into_owned(), v);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}

/// Reads a dotted path out of a JSON object. `null` counts as absent.
pub fn lookup<'a>(map: &'a Map<String, Value>, path: &str) -> Option<&'a Value> {
    let mut segments = path.split('.');
    let mut cur = map.get(segments.next()?)?;
    for seg in segments {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    (!cur.is_null()).then_some(cur)
}

/// One marketing channel the person arrived through (see [`crate::profile::ChannelStat`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelFact {
    pub source: Option<String>,
    pub medium: Option<String>,
    pub campaign: Option<String>,
    pub content: Option<String>,
    pub term: Option<String>,
}

/// One kind of device the person used (see [`crate::profile::DeviceStat`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceFact {
    /// `desktop`, `mobile`, `tablet`, `bot` or `other`.
    pub device_type: String,
    pub os: Option<String>,
    pub browser: Option<String>,
}

/// Which UTM and device fields some rules read (a bit per field, gathered by
/// [`super::Dependencies::of`]), so that facts are built with those alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FactFields {
    utm: u8,
    device: u8,
}

impl FactFields {
    /// Every field (what a caller that does not know the rules needs).
    pub const ALL: FactFields = FactFields {
        utm: 0b1_1111,
        device: 0b111,
    };

    pub fn add_utm(&mut self, f: UtmField) {
        self.utm |= 1 << f as u8;
    }

    pub fn add_device(&mut self, f: DeviceField) {
        self.device |= 1 << f as u8;
    }

    /// The fields of both.
    pub fn union(self, other: FactFields) -> FactFields {
        FactFields {
            utm: self.utm | other.utm,
            device: self.device | other.device,
        }
    }

    pub fn has_utm(self, f: UtmField) -> bool {
        self.utm & (1 << f as u8) != 0
    }

    pub fn has_device(self, f: DeviceField) -> bool {
        self.device & (1 << f as u8) != 0
    }
}

/// Everything about a person that is *not* an event condition, as of one evaluation.
///
/// Channel and device conditions hold when *any* of the person's channels / devices matches
/// (people arrive through several campaigns and use several devices); group-trait conditions
/// hold when any of the person's groups matches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProfileFacts {
    /// Live trait values (`Profile::trait_values`).
    #[serde(default)]
    pub traits: Map<String, Value>,
    /// Computed trait name → current value (absent when the value is `None`).
    #[serde(default)]
    pub computed: Map<String, Value>,
    /// The traits of each group (account) the person belongs to.
    #[serde(default)]
    pub groups: Vec<Map<String, Value>>,
    #[serde(default)]
    pub channels: Vec<ChannelFact>,
    #[serde(default)]
    pub devices: Vec<DeviceFact>,
    /// Names of the audiences the person is currently a member of (evaluated earlier in the
    /// topological order, see [`crate::audience::audience_order`]).
    #[serde(default)]
    pub audiences: BTreeSet<String>,
    /// The purposes the person consents to now (stated or by default), see
    /// [`crate::consent::ConsentRules::granted`].
    #[serde(default)]
    pub consents: BTreeSet<String>,
}

impl ProfileFacts {
    /// Traits, channels and devices from a profile; the caller adds computed values, group
    /// traits and audience memberships, which live elsewhere.
    pub fn from_profile(p: &Profile) -> ProfileFacts {
        ProfileFacts::from_profile_parts(p, true, true, true)
    }

    /// [`ProfileFacts::from_profile`] with only the parts asked for (the others empty): the
    /// processor builds only what the rules it evaluates read.
    pub fn from_profile_parts(
        p: &Profile,
        traits: bool,
        channels: bool,
        devices: bool,
    ) -> ProfileFacts {
        ProfileFacts::from_profile_fields(p, traits, channels, devices, FactFields::ALL)
    }

    /// [`ProfileFacts::from_profile_parts`] copying only the UTM and device fields in
    /// `fields` (the others are left empty): the real-time path copies what its rules read,
    /// a string per channel instead of five.
    pub fn from_profile_fields(
        p: &Profile,
        traits: bool,
        channels: bool,
        devices: bool,
        fields: FactFields,
    ) -> ProfileFacts {
        let pick = |on: bool, v: &Option<String>| if on { v.clone() } else { None };
        let u = |f: UtmField| fields.has_utm(f);
        let d = |f: DeviceField| fields.has_device(f);
        ProfileFacts {
            traits: if traits { p.trait_values() } else { Map::new() },
            channels: if channels {
                p.channels
                    .values()
                    .map(|c| ChannelFact {
                        source: pick(u(UtmField::Source), &c.utm.source),
                        medium: pick(u(UtmField::Medium), &c.utm.medium),
                        campaign: pick(u(UtmField::Campaign), &c.utm.campaign),
                        content: pick(u(UtmField::Content), &c.utm.content),
                        term: pick(u(UtmField::Term), &c.utm.term),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            devices: if devices {
                p.devices
                    .values()
                    .map(|dev| DeviceFact {
                        device_type: if d(DeviceField::Type) {
                            dev.device_type.clone()
                        } else {
                            String::new()
                        },
                        os: pick(d(DeviceField::Os), &dev.os),
                        browser: pick(d(DeviceField::Browser), &dev.browser),
                    })
                    .collect()
            } else {
                Vec::new()
            },
            ..ProfileFacts::default()
        }
    }

    /// [`ProfileFacts::from_profile`] with the purposes the person consents to filled in.
    pub fn with_consent(p: &Profile, rules: &crate::consent::ConsentRules) -> ProfileFacts {
        let mut f = ProfileFacts::from_profile(p);
        f.consents = rules.granted(&p.consent).into_iter().collect();
        f
    }
}
