//! Identity configuration (the `[identity]` TOML section) and its validated, compiled form.
//!
//! [`IdentityConfig`] is what users write; [`IdentityRules`] is what the engine runs: types
//! sorted by priority, regexes compiled once. Validation happens in [`IdentityConfig::compile`]
//! at start-up, so a bad pattern or a duplicate type stops the process instead of silently
//! linking the wrong people.

use super::model::{IdType, Identifier, RefusalRule};
use super::normalize::Normalize;
use super::IdentityError;
use regex::{RegexSet, RegexSetBuilder};
use serde::{Deserialize, Serialize};

/// How identifiers are recognised and linked. Setting `types` (or `blocked`) replaces the
/// default list as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    pub types: Vec<IdTypeConfig>,
    /// Regexes for placeholder values that must never link anything. Each must match the
    /// *whole* value (it is anchored for you) and matching ignores case. Checked against the
    /// trimmed raw value and the normalised value.
    pub blocked: Vec<String>,
    /// Longer values are refused as invalid (bounded input; real ids are far shorter).
    pub max_value_len: usize,
}

/// One identifier type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdTypeConfig {
    /// `[a-z0-9_]+`, as the caller names it in `(type, value)` pairs.
    pub name: String,
    /// Lower number = higher priority. The highest-priority identifier of an event decides
    /// which profile it lands on; the lowest-priority conflicting one is left out. Ties are
    /// broken by name.
    pub priority: u32,
    /// At most this many identifiers of the type per profile (at least 1).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Count only identifiers seen within this many milliseconds before the event.
    #[serde(default)]
    pub limit_window_ms: Option<u64>,
    #[serde(default)]
    pub normalize: Normalize,
    /// Extra blocked patterns for this type only (same rules as the global list).
    #[serde(default)]
    pub blocked: Vec<String>,
}

impl IdTypeConfig {
    pub fn new(name: &str, priority: u32, limit: Option<u32>, normalize: Normalize) -> Self {
        Self {
            name: name.to_owned(),
            priority,
            limit,
            limit_window_ms: None,
            normalize,
            blocked: Vec::new(),
        }
    }
}

impl IdentityConfig {
    /// Placeholders SDKs and forms send when they have no real id.
    pub fn default_blocked() -> Vec<String> {
        [
            r"\s*",
            r"null|nil|none|undefined|nan|n/a|unknown|anonymous|\[object object\]",
            r"-1",
            // 0, 000…, and all-zero UUIDs / advertising ids.
            r"[0\-]+",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Validates and compiles.
    pub fn compile(&self) -> Result<IdentityRules, IdentityError> {
        IdentityRules::new(self.clone())
    }
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            types: vec![
                IdTypeConfig::new("user_id", 1, Some(1), Normalize::Exact),
                IdTypeConfig::new("email", 2, Some(5), Normalize::Email),
                IdTypeConfig::new(
                    "phone",
                    3,
                    Some(5),
                    Normalize::Phone {
                        default_country_code: None,
                    },
                ),
                IdTypeConfig::new("device_id", 9, None, Normalize::Exact),
                IdTypeConfig::new("anonymous_id", 10, None, Normalize::Exact),
            ],
            blocked: Self::default_blocked(),
            max_value_len: 256,
        }
    }
}

/// A configured type, compiled.
#[derive(Debug, Clone)]
pub(crate) struct TypeRule {
    pub kind: IdType,
    pub cfg: IdTypeConfig,
    pub blocked: RegexSet,
}

/// The validated configuration the engine runs with.
#[derive(Debug, Clone)]
pub struct IdentityRules {
    config: IdentityConfig,
    /// Sorted by (priority, name); the index is the type's *rank*.
    types: Vec<TypeRule>,
    blocked: RegexSet,
}

fn compile_set(patterns: &[String]) -> Result<RegexSet, IdentityError> {
    for p in patterns {
        // Compile one by one first so the error names the offending pattern.
        RegexSetBuilder::new([format!("^(?:{p})$")])
            .build()
            .map_err(|e| IdentityError::BadPattern {
                pattern: p.clone(),
                reason: e.to_string(),
            })?;
    }
    RegexSetBuilder::new(patterns.iter().map(|p| format!("^(?:{p})$")))
        .case_insensitive(true)
        .build()
        .map_err(|e| IdentityError::BadPattern {
            pattern: patterns.join(" | "),
            reason: e.to_string(),
        })
}

impl IdentityRules {
    pub fn new(config: IdentityConfig) -> Result<Self, IdentityError> {
        let mut types = Vec::with_capacity(config.types.len());
        for t in &config.types {
            let bad = |reason: &str| IdentityError::BadType {
                name: t.name.clone(),
                reason: reason.to_owned(),
            };
            if t.name.is_empty()
                || !t
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad("name must be [a-z0-9_]+"));
            }
            if config.types.iter().filter(|o| o.name == t.name).count() > 1 {
                return Err(bad("defined twice"));
            }
            if t.limit == Some(0) {
                return Err(bad("limit must be at least 1 (omit it for no limit)"));
            }
            if t.limit_window_ms.is_some() && t.limit.is_none() {
                return Err(bad("limit_window_ms needs a limit"));
            }
            if t.limit_window_ms == Some(0) || t.limit_window_ms > Some(i64::MAX as u64) {
                return Err(bad("limit_window_ms out of range"));
            }
            if let Normalize::Phone {
                default_country_code: Some(cc),
            } = t.normalize
            {
                if !(1..=999).contains(&cc) {
                    return Err(bad("default_country_code must be 1..=999"));
                }
            }
            types.push(TypeRule {
                kind: IdType::new(t.name.clone()),
                cfg: t.clone(),
                blocked: compile_set(&t.blocked)?,
            });
        }
        if types.is_empty() {
            return Err(IdentityError::NoTypes);
        }
        if config.max_value_len == 0 {
            return Err(IdentityError::BadType {
                name: "max_value_len".to_owned(),
                reason: "must be positive".to_owned(),
            });
        }
        types.sort_by(|a, b| (a.cfg.priority, &a.cfg.name).cmp(&(b.cfg.priority, &b.cfg.name)));
        let blocked = compile_set(&config.blocked)?;
        Ok(Self {
            config,
            types,
            blocked,
        })
    }

    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    /// The rank (0 = highest priority) of a type name.
    pub fn rank(&self, kind: &str) -> Option<usize> {
        self.types.iter().position(|t| t.cfg.name == kind)
    }

    pub(crate) fn type_count(&self) -> usize {
        self.types.len()
    }

    pub(crate) fn type_rule(&self, rank: usize) -> Option<&TypeRule> {
        self.types.get(rank)
    }

    fn too_long(&self) -> RefusalRule {
        RefusalRule::Invalid {
            reason: format!("longer than {} bytes", self.config.max_value_len),
        }
    }

    fn check_blocked(&self, t: &TypeRule, v: &str) -> Result<(), RefusalRule> {
        // Almost no value is blocked: `is_match` stops as soon as no pattern can match
        // (usually at the first byte) and allocates nothing, while `matches` (which names
        // the pattern, for the decision) costs several thousand instructions a call — and
        // this runs four times per identifier per event.
        if !self.blocked.is_match(v) && !t.blocked.is_match(v) {
            return Ok(());
        }
        let global = self.blocked.matches(v).iter().next();
        let pattern = match global {
            Some(i) => self.config.blocked.get(i),
            None => t
                .blocked
                .matches(v)
                .iter()
                .next()
                .and_then(|i| t.cfg.blocked.get(i)),
        };
        match pattern {
            Some(p) => Err(RefusalRule::Blocked { pattern: p.clone() }),
            None => Ok(()),
        }
    }

    /// The graph key for a raw `(type, value)` pair, or the rule that refuses it. The
    /// processor uses the same function to index its event log, so look-ups agree.
    pub fn normalize(&self, kind: &str, raw: &str) -> Result<Identifier, RefusalRule> {
        let Some(t) = self.rank(kind).and_then(|r| self.types.get(r)) else {
            return Err(RefusalRule::UnknownType);
        };
        if raw.len() > self.config.max_value_len.saturating_mul(4) {
            // Do not even normalise absurd input.
            return Err(self.too_long());
        }
        self.check_blocked(t, raw.trim())?;
        let value = t
            .cfg
            .normalize
            .apply(raw)
            .map_err(|reason| RefusalRule::Invalid { reason })?;
        if value.len() > self.config.max_value_len {
            return Err(self.too_long());
        }
        self.check_blocked(t, &value)?;
        Ok(Identifier {
            kind: t.kind.clone(),
            value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> IdentityRules {
        IdentityConfig::default()
            .compile()
            .expect("default config is valid")
    }

    #[test]
    fn default_config_is_valid_and_sorted_by_priority() {
        let r = rules();
        assert_eq!(r.rank("user_id"), Some(0));
        assert_eq!(r.rank("anonymous_id"), Some(4));
        assert_eq!(r.rank("nope"), None);
    }

    #[test]
    fn blocked_defaults_cover_placeholders_case_insensitively() {
        let r = rules();
        for v in [
            "null",
            "NULL",
            " Undefined ",
            "anonymous",
            "0",
            "-1",
            "",
            "   ",
            "00000000-0000-0000-0000-000000000000",
            "[object Object]",
        ] {
            assert!(
                matches!(
                    r.normalize("anonymous_id", v),
                    Err(RefusalRule::Blocked { .. })
                ),
                "{v:?} must be blocked"
            );
        }
        assert!(r.normalize("anonymous_id", "a0").is_ok());
        assert!(r.normalize("user_id", "10").is_ok());
        assert!(r.normalize("user_id", "nullable").is_ok());
    }

    #[test]
    fn unknown_types_and_overlong_values_are_refused() {
        let r = rules();
        assert_eq!(
            r.normalize("shoe_size", "42"),
            Err(RefusalRule::UnknownType)
        );
        let long = "x".repeat(300);
        assert!(matches!(
            r.normalize("user_id", &long),
            Err(RefusalRule::Invalid { .. })
        ));
    }

    #[test]
    fn config_round_trips_and_rejects_unknown_keys() {
        let cfg = IdentityConfig::default();
        let json = serde_json::to_string(&cfg).expect("serialises");
        let back: IdentityConfig = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, cfg);
        let bad = r#"{"types":[{"name":"email","priority":1,"limt":2}]}"#;
        assert!(serde_json::from_str::<IdentityConfig>(bad).is_err());
        let top = r#"{"blocked":[],"colour":"red"}"#;
        assert!(serde_json::from_str::<IdentityConfig>(top).is_err());
        let phone = r#"{"types":[{"name":"phone","priority":1,
            "normalize":{"phone":{"default_country_code":31}}}]}"#;
        let cfg: IdentityConfig = serde_json::from_str(phone).expect("parses");
        assert!(cfg.compile().is_ok());
        assert_eq!(cfg.blocked, IdentityConfig::default_blocked());
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let mut c = IdentityConfig::default();
        c.types
            .push(IdTypeConfig::new("email", 4, None, Normalize::Email));
        assert!(matches!(c.compile(), Err(IdentityError::BadType { .. })));
        let mut c = IdentityConfig::default();
        c.types[0].limit = Some(0);
        assert!(c.compile().is_err());
        let mut c = IdentityConfig::default();
        c.types[3].limit_window_ms = Some(1000);
        assert!(c.compile().is_err(), "window without limit");
        let mut c = IdentityConfig::default();
        c.types
            .push(IdTypeConfig::new("Bad Name", 4, None, Normalize::Exact));
        assert!(c.compile().is_err());
        let mut c = IdentityConfig::default();
        c.blocked.push("(".to_owned());
        assert!(
            matches!(c.compile(), Err(IdentityError::BadPattern { pattern, .. }) if pattern == "(")
        );
        let c = IdentityConfig {
            types: vec![],
            ..IdentityConfig::default()
        };
        assert!(matches!(c.compile(), Err(IdentityError::NoTypes)));
    }
}
