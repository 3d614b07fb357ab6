//! PII controls applied at ingest, before an event is stored: the log never holds what
//! these rules remove, so neither does anything derived from it.
//!
//! - **IP anonymisation** per source: IPv4 truncated to its /24, IPv6 to its /48, in the
//!   envelope's `ip` and the message's `context.ip`.
//! - **Redaction**: a dotted path of the message (`properties.card_number`,
//!   `traits.ssn`, `context.traits.phone`) dropped, or replaced by the SHA-256 (hex) of its
//!   value (a string as is, anything else as its JSON text) — for all sources or some.
//!
//! Only events of a source with a rule are rewritten (parsed and serialised again); the
//! others are stored byte for byte as received.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// One redaction rule of `[[privacy.redact]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactRule {
    /// Dotted path in the message, e.g. `properties.card_number`.
    pub path: String,
    pub action: RedactAction,
    /// Source ids it applies to; empty: every source.
    #[serde(default)]
    pub sources: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedactAction {
    Drop,
    Hash,
}

impl RedactRule {
    pub fn validate(&self) -> Result<(), String> {
        if self.path.is_empty() || self.path.split('.').any(str::is_empty) {
            return Err(format!(
                "path {:?} must be dotted keys, e.g. properties.card_number",
                self.path
            ));
        }
        Ok(())
    }
}

/// The PII rules of a server.
#[derive(Debug, Clone, Default)]
pub struct Pii {
    anonymize_ip: Vec<String>,
    redact: Vec<RedactRule>,
}

impl Pii {
    pub fn new(cfg: &super::PrivacyConfig) -> Self {
        Self {
            anonymize_ip: cfg.anonymize_ip.clone(),
            redact: cfg.redact.clone(),
        }
    }

    fn anonymizes(&self, source: &str) -> bool {
        self.anonymize_ip.iter().any(|s| s == "*" || s == source)
    }

    fn rules_for<'a>(&'a self, source: &'a str) -> impl Iterator<Item = &'a RedactRule> + 'a {
        self.redact
            .iter()
            .filter(move |r| r.sources.is_empty() || r.sources.iter().any(|s| s == source))
    }

    /// True when events of this source are rewritten.
    pub fn applies_to(&self, source: &str) -> bool {
        self.anonymizes(source) || self.rules_for(source).next().is_some()
    }

    /// Rewrites one stored envelope (JSON bytes) of `source`. Returns the input unchanged
    /// when no rule applies or it is not a JSON object (ingest produced it, so that is a
    /// bug; storing it unrewritten would leak, so the caller should not get here).
    pub fn apply(&self, source: &str, bytes: Vec<u8>) -> Result<Vec<u8>, String> {
        if !self.applies_to(source) {
            return Ok(bytes);
        }
        let mut env: Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("stored envelope is not JSON: {e}"))?;
        let Value::Object(env_map) = &mut env else {
            return Err("stored envelope is not a JSON object".into());
        };
        if self.anonymizes(source) {
            if let Some(Value::String(ip)) = env_map.get_mut("ip") {
                *ip = anonymize_ip(ip);
            }
            if let Some(Value::Object(ctx)) = env_map
                .get_mut("message")
                .and_then(|m| m.get_mut("context"))
            {
                if let Some(Value::String(ip)) = ctx.get_mut("ip") {
                    *ip = anonymize_ip(ip);
                }
            }
        }
        if let Some(Value::Object(msg)) = env_map.get_mut("message") {
            for r in self.rules_for(source) {
                redact(msg, &r.path, r.action);
            }
        }
        serde_json::to_vec(&env).map_err(|e| e.to_string())
    }
}

/// IPv4 → its /24 (`203.0.113.77` → `203.0.113.0`), IPv6 → its /48. Text that is not an
/// IP address is dropped to the empty string rather than stored as is.
pub fn anonymize_ip(ip: &str) -> String {
    match ip.trim().parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            let o = v4.octets();
            std::net::Ipv4Addr::new(o[0], o[1], o[2], 0).to_string()
        }
        Ok(IpAddr::V6(v6)) => {
            let s = v6.segments();
            std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
        }
        Err(_) => String::new(),
    }
}

fn redact(obj: &mut Map<String, Value>, path: &str, action: RedactAction) {
    let (head, rest) = match path.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (path, None),
    };
    match rest {
        Some(rest) => {
            if let Some(Value::Object(inner)) = obj.get_mut(head) {
                redact(inner, rest, action);
            }
        }
        None => match action {
            RedactAction::Drop => {
                obj.remove(head);
            }
            RedactAction::Hash => {
                if let Some(v) = obj.get_mut(head) {
                    if !v.is_null() {
                        let text = match &*v {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *v = Value::String(hex::encode(Sha256::digest(text.as_bytes())));
                    }
                }
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ips_are_truncated() {
        assert_eq!(anonymize_ip("203.0.113.77"), "203.0.113.0");
        assert_eq!(anonymize_ip("2001:db8:abcd:12::1"), "2001:db8:abcd::");
        assert_eq!(anonymize_ip("not an ip"), "");
    }

    #[test]
    fn rules_apply_per_source_and_leave_other_sources_byte_for_byte() {
        let cfg = super::super::PrivacyConfig {
            anonymize_ip: vec!["src_a".into()],
            redact: vec![
                RedactRule {
                    path: "properties.card".into(),
                    action: RedactAction::Drop,
                    sources: vec![],
                },
                RedactRule {
                    path: "traits.email".into(),
                    action: RedactAction::Hash,
                    sources: vec!["src_a".into()],
                },
            ],
            ..Default::default()
        };
        let pii = Pii::new(&cfg);
        let env = json!({"source_id": "src_a", "ip": "198.51.100.23", "message": {
            "context": {"ip": "198.51.100.23"}, "properties": {"card": "4111", "n": 1},
            "traits": {"email": "ann@example.com"}}});
        let out: Value = serde_json::from_slice(
            &pii.apply("src_a", serde_json::to_vec(&env).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(out["ip"], "198.51.100.0");
        assert_eq!(out["message"]["context"]["ip"], "198.51.100.0");
        assert_eq!(out["message"]["properties"], json!({"n": 1}));
        assert_eq!(
            out["message"]["traits"]["email"],
            hex::encode(Sha256::digest(b"ann@example.com"))
        );
        // src_b: only the global drop rule.
        let out: Value = serde_json::from_slice(
            &pii.apply("src_b", serde_json::to_vec(&env).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(out["ip"], "198.51.100.23");
        assert_eq!(out["message"]["traits"]["email"], "ann@example.com");
        assert_eq!(out["message"]["properties"], json!({"n": 1}));
        let none = Pii::default();
        let raw = b"{\"b\":1,  \"a\":2}".to_vec();
        assert_eq!(none.apply("src_b", raw.clone()).unwrap(), raw);
    }
}
