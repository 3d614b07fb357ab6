//! Privacy: consent per purpose (enforced at delivery and in audiences), PII controls at
//! ingest, the right of access and the audit log. See `docs/ARCHITECTURE.md`, "Privacy".
//!
//! - [`enforce`]: the one gate every destination type calls before data leaves.
//! - [`pii`]: IP anonymisation and property redaction, applied before an event is stored.
//! - [`audit`]: the append-only audit log, recorded by a middleware on every admin route.

pub mod audit;
pub mod enforce;
pub mod pii;

use pii::RedactRule;
use serde::{Deserialize, Serialize};
use spoor_core::consent::{ConsentRules, ConsentValue};
use std::collections::BTreeMap;

/// `[privacy]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// The purposes consent is asked and enforced for.
    pub purposes: Vec<String>,
    /// Purpose → the value of a person who never said anything (absent: `denied`).
    #[serde(default)]
    pub default_consent: BTreeMap<String, ConsentValue>,
    /// The trait carrying consent: `traits.<consent_trait>.<purpose>` or the flat key
    /// `"<consent_trait>.<purpose>"`.
    pub consent_trait: String,
    /// Consent-platform category id (Segment's `categoryPreferences` keys) → purposes.
    #[serde(default)]
    pub categories: BTreeMap<String, Vec<String>>,
    /// Sources (ids, or `"*"` for all) whose IP addresses are truncated before storage.
    #[serde(default)]
    pub anonymize_ip: Vec<String>,
    /// Properties dropped or hashed before storage.
    #[serde(default)]
    pub redact: Vec<RedactRule>,
}

impl Default for PrivacyConfig {
    fn default() -> Self {
        Self {
            purposes: ConsentRules::default().purposes().to_vec(),
            default_consent: BTreeMap::new(),
            consent_trait: "consent".into(),
            categories: BTreeMap::new(),
            anonymize_ip: Vec::new(),
            redact: Vec::new(),
        }
    }
}

impl PrivacyConfig {
    /// The consent rules, or why the configuration is invalid.
    pub fn rules(&self) -> Result<ConsentRules, String> {
        ConsentRules::new(
            self.purposes.clone(),
            self.default_consent.clone(),
            self.categories.clone(),
            self.consent_trait.clone(),
        )
        .map_err(|e| format!("privacy: {e}"))
    }

    pub fn validate(&self) -> Result<(), String> {
        self.rules()?;
        for r in &self.redact {
            r.validate().map_err(|e| format!("privacy.redact: {e}"))?;
        }
        Ok(())
    }
}
