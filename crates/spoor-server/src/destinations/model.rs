//! What a destination is: where to send (a webhook, a PostgreSQL database, a NATS
//! JetStream stream), what to send (subscriptions to events and audience changes), how
//! (mapping, batching, headers, auth, signing) and how hard to try (retry schedule, pause
//! after a grace period). Checked once, when it is saved, so a worker only ever runs a
//! valid definition.

use super::mapping::Jq;
use super::nats::NatsSettings;
use super::postgres::PostgresSettings;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A configured destination, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Destination {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: DestinationType,
    /// Paused by an operator (or, after the grace period, by Spoor: see the delivery state).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The consent purposes this destination serves (e.g. `marketing`, `analytics`).
    #[serde(default)]
    pub purposes: Vec<String>,
    #[serde(default)]
    pub subscriptions: Subscriptions,
    /// The settings of the destination's type: exactly the one named by `type` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresSettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsSettings>,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// `whsec_…`, generated at creation; receivers verify signatures with it.
    pub secret: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestinationType {
    Webhook,
    Postgres,
    Nats,
}

impl DestinationType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Postgres => "postgres",
            Self::Nats => "nats",
        }
    }
}

/// What a destination receives. Empty lists receive nothing of that kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscriptions {
    #[serde(default)]
    pub events: Vec<EventSubscription>,
    #[serde(default)]
    pub audiences: Vec<AudienceSubscription>,
    /// Profile changes: an event set traits of a profile; delivered as the current profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profiles: Option<ProfileSubscription>,
}

/// "Profile changed" items: one after each event that set (wrote) traits of a profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSubscription {
    /// Only when one of these traits was set (empty: any trait).
    #[serde(default)]
    pub traits: Vec<String>,
}

/// Events that match every given field (an absent field matches anything).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventSubscription {
    /// Source id (`src_…`).
    pub source: Option<String>,
    /// `track`, `identify`, `page`, `screen`, `group`, `alias`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The track event name (or page/screen name).
    pub name: Option<String>,
    /// A jq expression over the delivered item (`.event.message.properties.total > 100`);
    /// the event matches when it yields neither `false` nor `null`.
    #[serde(rename = "where")]
    pub filter: Option<String>,
}

/// Entries into and/or exits from an audience (`"*"`: every audience).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AudienceSubscription {
    pub audience: String,
    #[serde(default = "yes")]
    pub entered: bool,
    #[serde(default = "yes")]
    pub exited: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    pub url: String,
    /// Extra request headers (e.g. an API key the receiver wants).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `Authorization` to send: `{"bearer": "…"}` or `{"basic": {"username", "password"}}`.
    #[serde(default)]
    pub auth: Option<WebhookAuth>,
    /// Items per request: 1 sends each as its own JSON object; more sends a JSON array.
    #[serde(default = "one")]
    pub batch_size: usize,
    /// jq mapping from the delivery item (see README) to the JSON that is sent.
    #[serde(default)]
    pub mapping: Option<String>,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) trusted for this https URL besides the system's trust
    /// store: for a receiver behind a private CA. Public, not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

fn one() -> usize {
    1
}

fn default_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookAuth {
    Bearer(String),
    Basic { username: String, password: String },
}

/// Retries with exponential backoff and full jitter: attempt n waits a random time in
/// `[d/2, d]` with `d = min(initial · 2^(n-1), max)`, or what the receiver's `Retry-After`
/// asks (capped at `max`). After `max_attempts` a delivery goes to the dead letters; after
/// `pause_after_secs` without one success the destination is paused and flagged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub pause_after_secs: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 600_000,
            pause_after_secs: 86_400,
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` (after `attempt` failures).
    pub fn backoff_ms(&self, attempt: u32, retry_after_ms: Option<u64>) -> u64 {
        if let Some(ra) = retry_after_ms {
            return ra.min(self.max_backoff_ms);
        }
        let exp = attempt.saturating_sub(1).min(30);
        let d = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms);
        d / 2 + rand::random_range(0..=d - d / 2)
    }
}

/// Names: 1–64 of `A-Z a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Limits of one destination definition.
pub const MAX_SUBSCRIPTIONS: usize = 100;
pub const MAX_BATCH: usize = 1_000;
pub const MAX_HEADERS: usize = 50;

impl Destination {
    /// Items sent in one request / transaction / round of publishes.
    pub fn batch_size(&self) -> usize {
        match (&self.webhook, &self.postgres, &self.nats) {
            (Some(w), _, _) => w.batch_size,
            (_, Some(p), _) => p.batch_size,
            (_, _, Some(n)) => n.batch_size,
            _ => 1,
        }
        .max(1)
    }

    /// The jq mapping of what is sent (webhooks only).
    pub fn mapping(&self) -> Option<&str> {
        self.webhook.as_ref().and_then(|w| w.mapping.as_deref())
    }

    /// Every check a definition must pass; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name {:?} must be 1-64 of A-Z a-z 0-9 _ -",
                self.name
            ));
        }
        let kind = self.kind.as_str();
        let sections = [
            ("webhook", self.webhook.is_some()),
            ("postgres", self.postgres.is_some()),
            ("nats", self.nats.is_some()),
        ];
        if !sections.iter().any(|(s, set)| *s == kind && *set) {
            return Err(format!("{kind} settings are required for type {kind}"));
        }
        if let Some((other, _)) = sections.iter().find(|(s, set)| *s != kind && *set) {
            return Err(format!("{other} settings do not apply to type {kind}"));
        }
        if let Some(w) = &self.webhook {
            validate_webhook(w)?;
        }
        if let Some(p) = &self.postgres {
            p.validate()?;
        }
        if let Some(n) = &self.nats {
            n.validate()?;
        }
        self.validate_common()
    }

    fn validate_common(&self) -> Result<(), String> {
        let s = &self.subscriptions;
        let profile_traits = s.profiles.as_ref().map_or(0, |p| p.traits.len());
        if s.events.len() + s.audiences.len() + profile_traits > MAX_SUBSCRIPTIONS {
            return Err(format!("at most {MAX_SUBSCRIPTIONS} subscriptions"));
        }
        for e in &s.events {
            if let Some(k) = &e.kind {
                if spoor_core::event::EventType::parse(k).is_none() {
                    return Err(format!("subscriptions.events: unknown type {k:?}"));
                }
            }
            if let Some(f) = &e.filter {
                Jq::compile(f).map_err(|e| format!("subscriptions.events.where: {e}"))?;
            }
        }
        for a in &s.audiences {
            if a.audience != "*" && !valid_name(&a.audience) {
                return Err(format!(
                    "subscriptions.audiences: {:?} is not an audience name",
                    a.audience
                ));
            }
        }
        let r = &self.retry;
        if r.max_attempts == 0
            || r.initial_backoff_ms == 0
            || r.max_backoff_ms < r.initial_backoff_ms
        {
            return Err(
                "retry: max_attempts and initial_backoff_ms must be positive, \
                 max_backoff_ms >= initial_backoff_ms"
                    .into(),
            );
        }
        if super::sign::secret_key(&self.secret).is_none() {
            return Err("secret must be whsec_ and 24-64 bytes of base64".into());
        }
        for p in &self.purposes {
            if !valid_name(p) {
                return Err(format!("purposes: {p:?} must be 1-64 of A-Z a-z 0-9 _ -"));
            }
        }
        Ok(())
    }
}

/// The checks of a webhook's settings.
fn validate_webhook(w: &WebhookSettings) -> Result<(), String> {
    let url = url::Url::parse(&w.url).map_err(|e| format!("webhook.url: {e}"))?;
    match url.scheme() {
        "http" | "https" => {}
        s => return Err(format!("webhook.url: scheme {s:?} is not http or https")),
    }
    if let Some(pem) = &w.ca_pem {
        if url.scheme() != "https" {
            return Err("webhook.ca_pem applies to https URLs only".into());
        }
        crate::tls::parse_ca_pem(pem).map_err(|e| format!("webhook.ca_pem: {e}"))?;
    }
    if w.batch_size == 0 || w.batch_size > MAX_BATCH {
        return Err(format!("webhook.batch_size must be 1-{MAX_BATCH}"));
    }
    if w.timeout_ms == 0 || w.timeout_ms > 300_000 {
        return Err("webhook.timeout_ms must be 1-300000".into());
    }
    if w.headers.len() > MAX_HEADERS {
        return Err(format!("at most {MAX_HEADERS} webhook.headers"));
    }
    for (k, v) in &w.headers {
        let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| format!("webhook.headers: {k:?} is not a header name"))?;
        if name.as_str().starts_with("webhook-") || name == reqwest::header::CONTENT_TYPE {
            return Err(format!("webhook.headers: {k:?} is set by Spoor"));
        }
        reqwest::header::HeaderValue::from_str(v)
            .map_err(|_| format!("webhook.headers: the value of {k:?} is not valid"))?;
    }
    if let Some(m) = &w.mapping {
        Jq::compile(m).map_err(|e| format!("webhook.mapping: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 1_000,
            pause_after_secs: 60,
        };
        for _ in 0..100 {
            let b1 = p.backoff_ms(1, None);
            assert!((50..=100).contains(&b1), "{b1}");
            let b3 = p.backoff_ms(3, None);
            assert!((200..=400).contains(&b3), "{b3}");
            let b9 = p.backoff_ms(9, None);
            assert!((500..=1_000).contains(&b9), "{b9}");
        }
        assert_eq!(p.backoff_ms(1, Some(700)), 700);
        assert_eq!(p.backoff_ms(1, Some(70_000)), 1_000);
    }
}
