//! The inputs of evaluation: one event as an owned [`EventFact`], and the non-event state of a
//! person as [`ProfileFacts`].
//!
//! Both are plain owned data so that audience and computed-trait state can be built, merged
//! and re-evaluated without access to the log or the store: the processor builds them once per
//! event / per evaluation and hands them in.

use crate::event::EventType;
use crate::profile::{EventView, Profile};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
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
        let name = match ev.kind {
            EventType::Track => ev.event.as_deref(),
            _ => ev.name.as_deref(),
        };
        EventFact {
            seq: ev.seq,
            ts_ms: ev.timestamp_ms,
            kind: ev.kind,
            name: name.map(str::to_owned),
            properties,
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
        ProfileFacts {
            traits: p.trait_values(),
            channels: p
                .channels
                .values()
                .map(|c| ChannelFact {
                    source: c.utm.source.clone(),
                    medium: c.utm.medium.clone(),
                    campaign: c.utm.campaign.clone(),
                    content: c.utm.content.clone(),
                    term: c.utm.term.clone(),
                })
                .collect(),
            devices: p
                .devices
                .values()
                .map(|d| DeviceFact {
                    device_type: d.device_type.clone(),
                    os: d.os.clone(),
                    browser: d.browser.clone(),
                })
                .collect(),
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
