//! Retention policies: how long events are kept, per event name and per source
//! (`[[retention.policies]]` in the config, plus policies set through the API and kept in
//! the metadata store). The processor applies them (`processor/retention.rs`).
//!
//! When several policies match an event, the **longest** `keep_days` wins: keeping is the
//! safe side (an order that is also a page of a short-lived source is kept as an order),
//! and a policy can only ever shorten what no other policy wants kept.

use serde::{Deserialize, Serialize};

/// `[retention]` configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Apply the policies every this many minutes in `spoor serve` (0: only on demand).
    pub interval_minutes: u64,
    #[serde(default)]
    pub policies: Vec<RetentionPolicy>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval_minutes: 60,
            policies: Vec::new(),
        }
    }
}

/// Events matching `event` (the track event name or page/screen name) and/or `source`
/// (a source id) are removed `keep_days` after their event time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// A label for reports; defaults to a description of the match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    pub keep_days: u32,
}

/// Most days a policy may keep events (100 years): beyond that it is a typo.
const MAX_KEEP_DAYS: u32 = 36_500;

impl RetentionPolicy {
    /// Checks a policy; the error names the cause.
    pub fn validate(&self) -> Result<(), String> {
        if self.event.is_none() && self.source.is_none() {
            return Err(format!(
                "retention policy {}: give `event` and/or `source` (a policy for everything \
                 would empty the log)",
                self.label()
            ));
        }
        if self.keep_days == 0 || self.keep_days > MAX_KEEP_DAYS {
            return Err(format!(
                "retention policy {}: keep_days must be 1..={MAX_KEEP_DAYS}, not {}",
                self.label(),
                self.keep_days
            ));
        }
        Ok(())
    }

    pub fn label(&self) -> String {
        if let Some(n) = &self.name {
            return n.clone();
        }
        match (&self.event, &self.source) {
            (Some(e), Some(s)) => format!("event {e:?} from {s}"),
            (Some(e), None) => format!("event {e:?}"),
            (None, Some(s)) => format!("source {s}"),
            (None, None) => "(nothing)".into(),
        }
    }

    fn matches(&self, event: Option<&str>, source: &str) -> bool {
        self.event.as_deref().is_none_or(|e| Some(e) == event)
            && self.source.as_deref().is_none_or(|s| s == source)
    }
}

/// The policy governing an event (index into `policies`): among the matching ones, the one
/// keeping longest (the first of equals). `None`: kept forever.
pub fn governing(policies: &[RetentionPolicy], event: Option<&str>, source: &str) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, p) in policies.iter().enumerate() {
        if p.matches(event, source) && best.is_none_or(|b| policies[b].keep_days < p.keep_days) {
            best = Some(i);
        }
    }
    best
}

/// What a run removed (or, dry, would remove), per policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RetentionReport {
    pub dry_run: bool,
    pub at_ms: i64,
    pub policies: Vec<PolicyCount>,
    /// Events removed from the log (0 in a dry run).
    pub erased: usize,
    /// Profiles re-derived from their remaining events.
    pub profiles_rederived: usize,
    /// Identity components too large to re-derive online (a `spoor rebuild` fixes them).
    pub components_skipped: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyCount {
    pub policy: String,
    pub keep_days: u32,
    pub events: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(event: Option<&str>, source: Option<&str>, keep_days: u32) -> RetentionPolicy {
        RetentionPolicy {
            name: None,
            event: event.map(Into::into),
            source: source.map(Into::into),
            keep_days,
        }
    }

    #[test]
    fn the_longest_matching_policy_governs() {
        let ps = [
            p(Some("Page Viewed"), None, 395),
            p(None, Some("src_web"), 30),
            p(Some("Order Completed"), None, 2555),
        ];
        assert_eq!(governing(&ps, Some("Page Viewed"), "src_web"), Some(0));
        assert_eq!(governing(&ps, Some("Page Viewed"), "src_app"), Some(0));
        assert_eq!(governing(&ps, Some("Clicked"), "src_web"), Some(1));
        assert_eq!(governing(&ps, Some("Order Completed"), "src_web"), Some(2));
        assert_eq!(governing(&ps, None, "src_app"), None);
    }

    #[test]
    fn bad_policies_are_refused_with_their_cause() {
        assert!(p(None, None, 5).validate().unwrap_err().contains("event"));
        assert!(p(Some("x"), None, 0)
            .validate()
            .unwrap_err()
            .contains("keep_days"));
        assert!(p(Some("x"), None, 40_000).validate().is_err());
        assert!(p(Some("x"), Some("s"), 7).validate().is_ok());
    }
}
