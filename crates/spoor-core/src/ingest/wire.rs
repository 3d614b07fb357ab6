//! The Segment wire format, parsed once, borrowed, and tolerantly.
//!
//! Real clients disagree on details: ids may be `null` or numbers, timestamps come with `Z`
//! or `+00:00` and ms or µs precision, `originalTimestamp` replaces `timestamp` in some
//! libraries. Only the fields Spoor derives something from are typed here; everything else
//! stays in the raw message, untouched.

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// A string-like field read leniently: strings as they are, numbers as their text, and
/// `null`, booleans, objects or arrays as absent. Used where a wrong type should not cost
/// the event (context details).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lenient<'a>(pub Option<Cow<'a, str>>);

/// An identifier field: a string or a number; `null` is absent; anything else is an error,
/// because a wrongly typed id would silently attach an event to no one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IdField<'a>(pub Option<Cow<'a, str>>);

impl<'a> Lenient<'a> {
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.is_empty())
    }
}

impl<'a> IdField<'a> {
    /// The id if present and not blank.
    pub fn get(&self) -> Option<&str> {
        self.0.as_deref().filter(|s| !s.trim().is_empty())
    }
}

struct StrVisitor {
    strict: bool,
}

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, a number or null")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(v.to_string())))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        if self.strict {
            Err(E::invalid_type(de::Unexpected::Bool(v), &self))
        } else {
            Ok(None)
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if self.strict {
            return Err(de::Error::invalid_type(de::Unexpected::Map, &self));
        }
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if self.strict {
            return Err(de::Error::invalid_type(de::Unexpected::Seq, &self));
        }
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor { strict: false }).map(Lenient)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for IdField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrVisitor { strict: true }).map(IdField)
    }
}

/// The fields of one Segment message that Spoor derives something from.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EventIn<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Lenient<'a>,
    #[serde(borrow)]
    pub user_id: IdField<'a>,
    #[serde(borrow)]
    pub anonymous_id: IdField<'a>,
    #[serde(borrow)]
    pub previous_id: IdField<'a>,
    #[serde(borrow)]
    pub group_id: IdField<'a>,
    #[serde(borrow)]
    pub message_id: IdField<'a>,
    #[serde(borrow)]
    pub event: Lenient<'a>,
    #[serde(borrow)]
    pub timestamp: Lenient<'a>,
    #[serde(borrow)]
    pub original_timestamp: Lenient<'a>,
    #[serde(borrow)]
    pub sent_at: Lenient<'a>,
    #[serde(borrow)]
    pub write_key: Lenient<'a>,
    #[serde(borrow)]
    pub context: Option<ContextIn<'a>>,
}

/// The parts of `context` enrichment reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContextIn<'a> {
    #[serde(borrow)]
    pub ip: Lenient<'a>,
    #[serde(borrow)]
    pub user_agent: Lenient<'a>,
    #[serde(borrow)]
    pub campaign: Option<CampaignIn<'a>>,
    #[serde(borrow)]
    pub page: Option<PageIn<'a>>,
}

/// `context.campaign` (UTM as parsed by the client; `name` is the campaign).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CampaignIn<'a> {
    #[serde(borrow)]
    pub source: Lenient<'a>,
    #[serde(borrow)]
    pub medium: Lenient<'a>,
    #[serde(borrow)]
    pub name: Lenient<'a>,
    #[serde(borrow)]
    pub content: Lenient<'a>,
    #[serde(borrow)]
    pub term: Lenient<'a>,
}

/// `context.page` (URL and query string, for UTM when `campaign` is absent).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PageIn<'a> {
    #[serde(borrow)]
    pub url: Lenient<'a>,
    #[serde(borrow)]
    pub search: Lenient<'a>,
}

/// A `/v1/batch` (or `/v1/import`) body. Events stay raw until each is parsed on its own,
/// so one malformed event cannot fail its siblings.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchIn<'a> {
    #[serde(borrow)]
    pub batch: Option<Vec<&'a RawValue>>,
    #[serde(borrow)]
    pub write_key: Lenient<'a>,
    #[serde(borrow)]
    pub sent_at: Lenient<'a>,
    /// Shared context, merged into each event (the event's own keys win).
    #[serde(borrow)]
    pub context: Option<&'a RawValue>,
    /// Shared integrations, merged like `context`.
    #[serde(borrow)]
    pub integrations: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_tolerate_null_and_numbers_but_not_objects() {
        let e: EventIn =
            serde_json::from_str(r#"{"userId":null,"anonymousId":42,"messageId":"m"}"#).unwrap();
        assert_eq!(e.user_id.get(), None);
        assert_eq!(e.anonymous_id.get(), Some("42"));
        assert_eq!(e.message_id.get(), Some("m"));
        assert!(serde_json::from_str::<EventIn>(r#"{"userId":{"a":1}}"#).is_err());
        assert!(serde_json::from_str::<EventIn>(r#"{"userId":true}"#).is_err());
    }

    #[test]
    fn context_details_of_the_wrong_type_are_ignored() {
        let e: EventIn = serde_json::from_str(
            r#"{"context":{"ip":["x"],"userAgent":{"a":1},"campaign":{"source":7,"name":null},"page":{"url":"u"},"extra":1}}"#,
        )
        .unwrap();
        let c = e.context.unwrap();
        assert_eq!(c.ip.get(), None);
        assert_eq!(c.user_agent.get(), None);
        assert_eq!(c.campaign.unwrap().source.get(), Some("7"));
        assert_eq!(c.page.unwrap().url.get(), Some("u"));
    }

    #[test]
    fn escaped_strings_are_owned_plain_ones_borrowed() {
        let e: EventIn =
            serde_json::from_str(r#"{"userId":"a\"b","anonymousId":"plain"}"#).unwrap();
        assert_eq!(e.user_id.get(), Some("a\"b"));
        assert!(matches!(e.anonymous_id.0, Some(Cow::Borrowed("plain"))));
    }
}
