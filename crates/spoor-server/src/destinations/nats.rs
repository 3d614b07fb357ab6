//! NATS JetStream publishing: each delivery item becomes one message on a subject named
//! after what it is, so streaming consumers subscribe with NATS wildcards:
//!
//! - `<prefix>.events.track.<event name>` (the name with every character other than
//!   `A-Z a-z 0-9 _ -` replaced by `_`), `<prefix>.events.identify`, `.page`, `.screen`,
//!   `.group`, `.alias`;
//! - `<prefix>.audiences.<audience>.entered` / `.exited`;
//! - `<prefix>.profiles.changed` (profile-change subscriptions).
//!
//! The item's idempotency key is the `Nats-Msg-Id` header: JetStream drops a message whose
//! id it has seen within the stream's duplicate window (2 minutes by default), so a batch
//! re-published after a failed ack or a crash is stored once. A batch is published
//! pipelined (in order, on one connection, so the stream keeps the order of the log) and
//! the position advances only once JetStream has acknowledged every message of it.
//!
//! TLS with `tls://` (or when the server requires it), trusting the system's CAs plus the
//! destination's `ca_pem`. No credentials beyond what the URL carries yet.

use super::source::Item;
use super::webhook::Outcome;
use async_nats::jetstream::{self, stream};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// `nats://host:port` (TLS when the server requires it) or `tls://host:port` (always TLS).
    pub url: String,
    /// The JetStream stream that stores the subjects.
    pub stream: String,
    /// First token(s) of every subject.
    #[serde(default = "default_prefix")]
    pub subject_prefix: String,
    /// Create the stream (subjects `<prefix>.>`) if it does not exist; otherwise it must.
    #[serde(default)]
    pub create_stream: bool,
    /// Messages published before their acks are awaited.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Connecting, and waiting for one batch's acks.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Extra CA certificates (PEM) trusted for the server's TLS certificate, besides the
    /// system's trust store: for a server behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
}

fn default_prefix() -> String {
    "spoor".into()
}

fn default_batch() -> usize {
    100
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn token_ok(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl NatsSettings {
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.url).map_err(|e| format!("nats.url: {e}"))?;
        match url.scheme() {
            "nats" | "tls" => {}
            s => return Err(format!("nats.url: scheme {s:?} is not nats or tls")),
        }
        if let Some(pem) = &self.ca_pem {
            tls_config(pem)?;
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("nats.url: no host".into());
        }
        if self.stream.len() > 64 || !token_ok(&self.stream) {
            return Err("nats.stream must be 1-64 of A-Z a-z 0-9 _ -".into());
        }
        if self.subject_prefix.len() > 100 || !self.subject_prefix.split('.').all(token_ok) {
            return Err(
                "nats.subject_prefix must be tokens of A-Z a-z 0-9 _ - separated by dots".into(),
            );
        }
        if self.batch_size == 0 || self.batch_size > super::model::MAX_BATCH {
            return Err(format!(
                "nats.batch_size must be 1-{}",
                super::model::MAX_BATCH
            ));
        }
        if self.timeout_ms == 0 || self.timeout_ms > 300_000 {
            return Err("nats.timeout_ms must be 1-300000".into());
        }
        Ok(())
    }
}

/// `A-Z a-z 0-9 _ -` kept, anything else `_` (a dot would add a subject token, `*`/`>` are
/// wildcards).
pub fn sanitise(s: &str) -> String {
    let t: String = s
        .chars()
        .take(128)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// The subject of a delivery item.
pub fn subject(prefix: &str, body: &Value) -> String {
    if body["kind"] == "profile" {
        return format!("{prefix}.profiles.changed");
    }
    if body["kind"] == "erasure" {
        return format!("{prefix}.profiles.erased");
    }
    if body["kind"] == "audience" {
        let aud = body["audience"].as_str().unwrap_or_default();
        let action = body["action"].as_str().unwrap_or_default();
        return format!("{prefix}.audiences.{}.{}", sanitise(aud), sanitise(action));
    }
    let ev = &body["event"];
    let kind = ev["type"].as_str().unwrap_or("unknown");
    if kind == "track" {
        let name = ev["message"]["event"].as_str().unwrap_or_default();
        format!("{prefix}.events.track.{}", sanitise(name))
    } else {
        format!("{prefix}.events.{}", sanitise(kind))
    }
}

/// A TLS client configuration trusting the system's CAs and those in `pem`.
fn tls_config(pem: &str) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    // Unreadable system certificates are skipped: the extra CA may be all that is needed.
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    crate::tls::add_pem_roots(&mut roots, pem).map_err(|e| format!("nats.ca_pem: {e}"))?;
    crate::tls::client_config_with_roots(roots)
}

/// Connects and finds (or creates) the stream.
pub async fn connect(s: &NatsSettings) -> Result<jetstream::Context, String> {
    let timeout = Duration::from_millis(s.timeout_ms);
    let mut options = async_nats::ConnectOptions::new();
    if let Some(pem) = &s.ca_pem {
        options = options.tls_client_config(tls_config(pem)?);
    }
    let client = options
        .connection_timeout(timeout)
        .request_timeout(Some(timeout))
        .connect(s.url.as_str())
        .await
        .map_err(|e| {
            format!(
                "cannot connect to NATS at {}: {}",
                s.url,
                super::error_chain(&e.to_string(), &e)
            )
        })?;
    let mut js = jetstream::new(client);
    js.set_timeout(timeout);
    if s.create_stream {
        js.get_or_create_stream(stream::Config {
            name: s.stream.clone(),
            subjects: vec![format!("{}.>", s.subject_prefix)],
            ..Default::default()
        })
        .await
        .map_err(|e| format!("cannot create the JetStream stream {:?}: {e}", s.stream))?;
    } else {
        js.get_stream(&s.stream).await.map_err(|e| {
            format!(
                "JetStream stream {:?} not found ({e}); create it with subjects {}.> \
                 or set nats.create_stream",
                s.stream, s.subject_prefix
            )
        })?;
    }
    Ok(js)
}

/// A destination's JetStream context, made on first use (the client reconnects by itself).
#[derive(Default)]
pub struct NatsSink {
    js: Option<jetstream::Context>,
}

fn retry(error: String, started: Instant) -> Outcome {
    Outcome::Retry {
        status: None,
        error,
        retry_after_ms: None,
        latency_ms: started.elapsed().as_millis() as u64,
    }
}

/// Publishes `(subject, key, body)` in order and waits for every ack; the acks.
async fn publish_all(
    js: &jetstream::Context,
    msgs: &[(String, String, Vec<u8>)],
) -> Result<Vec<jetstream::publish::PublishAck>, String> {
    let mut pending = Vec::with_capacity(msgs.len());
    for (subject, key, payload) in msgs {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", key.as_str());
        h.insert("Content-Type", "application/json");
        let f = js
            .publish_with_headers(subject.clone(), h, payload.clone().into())
            .await
            .map_err(|e| format!("publish to {subject}: {e}"))?;
        pending.push((subject, f));
    }
    let mut acks = Vec::with_capacity(pending.len());
    for (subject, f) in pending {
        acks.push(f.await.map_err(|e| format!("no ack for {subject}: {e}"))?);
    }
    Ok(acks)
}

impl NatsSink {
    pub async fn publish(&mut self, s: &NatsSettings, items: &[Item]) -> Outcome {
        let started = Instant::now();
        if self.js.is_none() {
            match connect(s).await {
                Ok(js) => self.js = Some(js),
                Err(e) => return retry(e, started),
            }
        }
        let Some(js) = &self.js else {
            return retry("no connection".into(), started);
        };
        let mut msgs = Vec::with_capacity(items.len());
        for it in items {
            let payload = match serde_json::to_vec(&it.body) {
                Ok(p) => p,
                Err(e) => {
                    return Outcome::Permanent {
                        status: None,
                        error: e.to_string(),
                    }
                }
            };
            msgs.push((
                subject(&s.subject_prefix, &it.body),
                it.key.clone(),
                payload,
            ));
        }
        let timeout = Duration::from_millis(s.timeout_ms).saturating_mul(2);
        match tokio::time::timeout(timeout, publish_all(js, &msgs)).await {
            Ok(Ok(acks)) => Outcome::Delivered {
                status: None,
                latency_ms: started.elapsed().as_millis() as u64,
                body: format!(
                    "{} acked by stream {}, {} duplicates",
                    acks.len(),
                    s.stream,
                    acks.iter().filter(|a| a.duplicate).count()
                ),
            },
            Ok(Err(e)) => retry(e, started),
            Err(_) => retry("JetStream acks timed out".into(), started),
        }
    }
}

/// `destinations test`: publishes `item` once and shows the ack.
pub async fn check(s: &NatsSettings, key: &str, item: &Value) -> Value {
    let started = Instant::now();
    let js = match connect(s).await {
        Ok(js) => js,
        Err(error) => return json!({"ok": false, "retryable": true, "error": error}),
    };
    let subject = subject(&s.subject_prefix, item);
    let payload = serde_json::to_vec(item).unwrap_or_default();
    match publish_all(&js, &[(subject.clone(), key.to_owned(), payload)]).await {
        Ok(acks) => json!({
            "ok": true,
            "latency_ms": started.elapsed().as_millis() as u64,
            "subject": subject,
            "stream": acks.first().map(|a| a.stream.clone()),
            "stream_seq": acks.first().map(|a| a.sequence),
            "duplicate": acks.first().map(|a| a.duplicate),
        }),
        Err(error) => json!({"ok": false, "retryable": true, "subject": subject, "error": error}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_name_the_event_type_and_audience_change() {
        let track = json!({"kind": "event", "event": {"type": "track",
                           "message": {"event": "Order Completed.v2 *>"}}});
        assert_eq!(
            subject("p.x", &track),
            "p.x.events.track.Order_Completed_v2___"
        );
        let erased = json!({"kind": "erasure", "profile_id": "prof_1", "action": "erased"});
        assert_eq!(subject("p", &erased), "p.profiles.erased");
        let empty = json!({"kind": "event", "event": {"type": "track", "message": {}}});
        assert_eq!(subject("p", &empty), "p.events.track._");
        let ident = json!({"kind": "event", "event": {"type": "identify", "message": {}}});
        assert_eq!(subject("p", &ident), "p.events.identify");
        let aud = json!({"kind": "audience", "audience": "vip-1", "action": "exited"});
        assert_eq!(subject("p", &aud), "p.audiences.vip-1.exited");
        let prof = json!({"kind": "profile"});
        assert_eq!(subject("p", &prof), "p.profiles.changed");
    }

    #[test]
    fn settings_are_checked_with_the_field_named() {
        let ok = NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            stream: "SPOOR".into(),
            subject_prefix: "spoor.prod".into(),
            create_stream: false,
            batch_size: 100,
            timeout_ms: 1000,
            ca_pem: None,
        };
        assert_eq!(ok.validate(), Ok(()));
        for (change, field) in [
            (
                (|s: &mut NatsSettings| s.url = "ws://h:4222".into()) as fn(&mut NatsSettings),
                "nats.url",
            ),
            (
                |s| s.ca_pem = Some("not a certificate".into()),
                "nats.ca_pem",
            ),
            (|s| s.stream = "a.b".into(), "nats.stream"),
            (|s| s.subject_prefix = "a..b".into(), "nats.subject_prefix"),
            (|s| s.subject_prefix = "a.*".into(), "nats.subject_prefix"),
            (|s| s.batch_size = 0, "nats.batch_size"),
        ] {
            let mut s = ok.clone();
            change(&mut s);
            let e = s.validate().unwrap_err();
            assert!(e.starts_with(field), "{e}");
        }
    }
}
