//! Audience sizes over time, for the audience list: a sample of every audience's size every
//! `ui.size_sample_secs`, kept for 30 days in `<data dir>/ui/audience_sizes.json`.
//!
//! Sizes are counts only (no profile is named), so the file is not personal data and an
//! erasure need not touch it. Sampling costs one bitmap length per audience; a change feed
//! scan per page view would cost more the busier the audience.

use crate::AppState;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

/// How far back samples are kept.
const KEEP_MS: i64 = 30 * 24 * 3_600_000;

/// audience → (time ms, size), oldest first.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SizeHistory(pub BTreeMap<String, Vec<(i64, u64)>>);

fn path(app: &AppState) -> PathBuf {
    app.cfg
        .storage
        .data_dir
        .join("ui")
        .join("audience_sizes.json")
}

impl SizeHistory {
    /// The kept samples (none when never sampled or unreadable: the list then shows no trend).
    pub fn load(app: &AppState) -> Self {
        std::fs::read(path(app))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds a sample of every defined audience and forgets audiences no longer defined and
    /// samples past [`KEEP_MS`].
    pub fn sample(&mut self, now_ms: i64, sizes: BTreeMap<String, u64>) {
        self.0.retain(|name, _| sizes.contains_key(name));
        for (name, size) in sizes {
            let v = self.0.entry(name).or_default();
            v.push((now_ms, size));
            v.retain(|(t, _)| now_ms - t <= KEEP_MS);
        }
    }

    /// Size now minus the size about 24 hours ago (or at the oldest sample, if younger).
    pub fn change_24h(&self, name: &str, now_size: u64, now_ms: i64) -> Option<i64> {
        let v = self.0.get(name)?;
        let then = v
            .iter()
            .find(|(t, _)| now_ms - t <= 24 * 3_600_000)
            .or(v.first())?;
        Some(now_size as i64 - then.1 as i64)
    }

    /// A small line of the samples (an inline SVG), or nothing with fewer than two.
    pub fn sparkline(&self, name: &str) -> String {
        let Some(v) = self.0.get(name).filter(|v| v.len() >= 2) else {
            return String::new();
        };
        let (w, h) = (120.0, 24.0);
        let (t0, t1) = (v[0].0 as f64, v[v.len() - 1].0 as f64);
        let max = v.iter().map(|p| p.1).max().unwrap_or(0).max(1) as f64;
        let mut pts = String::new();
        for (t, s) in v {
            let x = if t1 > t0 {
                (*t as f64 - t0) / (t1 - t0) * w
            } else {
                0.0
            };
            let y = h - 2.0 - (*s as f64 / max) * (h - 4.0);
            let _ = write!(pts, "{x:.1},{y:.1} ");
        }
        format!(
            r#"<svg class="spark" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" aria-label="size over time"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="{}"/></svg>"#,
            pts.trim_end()
        )
    }
}

/// Takes one sample now.
pub fn record(app: &AppState) -> Result<(), String> {
    let r = app.state.reader().map_err(|e| e.to_string())?;
    let mut sizes = BTreeMap::new();
    for name in app.defs.current().audiences.keys() {
        sizes.insert(
            name.clone(),
            r.audience_size(name).map_err(|e| e.to_string())?,
        );
    }
    let mut h = SizeHistory::load(app);
    h.sample(app.clock.now().timestamp_millis(), sizes);
    let p = path(app);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let tmp = p.with_extension("json.tmp");
    let bytes = serde_json::to_vec(&h).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, bytes).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))
}

/// Samples every `ui.size_sample_secs` (the first at start-up); `serve` aborts the task when
/// it stops. A sample is a few bitmap lengths and one small file, so it runs inline rather
/// than on the blocking pool (where an aborted task could not be stopped).
pub fn spawn(app: &AppState) -> tokio::task::JoinHandle<()> {
    let app = app.clone();
    tokio::spawn(async move {
        let every = Duration::from_secs(app.cfg.ui.size_sample_secs.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = record(&app) {
                tracing::warn!(error = %e, "cannot sample audience sizes");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_kept_30_days_and_the_24h_change_compares_with_a_day_ago() {
        let hour = 3_600_000;
        let mut h = SizeHistory::default();
        let sizes = |a: u64, b: u64| BTreeMap::from([("a".to_owned(), a), ("b".to_owned(), b)]);
        h.sample(0, sizes(10, 1));
        h.sample(10 * hour, sizes(20, 1));
        h.sample(30 * hour, sizes(25, 1));
        // 24 h before 30 h is 6 h: the first sample at or after it is the one at 10 h.
        assert_eq!(h.change_24h("a", 40, 30 * hour), Some(20));
        assert_eq!(h.change_24h("missing", 40, 30 * hour), None);
        assert!(h.sparkline("a").contains("<polyline"));
        // b is no longer defined: forgotten; old samples fall out after 30 days.
        h.sample(32 * 24 * hour, BTreeMap::from([("a".to_owned(), 30)]));
        assert!(!h.0.contains_key("b"));
        assert_eq!(h.0["a"].len(), 1, "{:?}", h.0["a"]);
        assert_eq!(h.sparkline("a"), "", "one sample draws no line");
        assert_eq!(h.change_24h("a", 30, 32 * 24 * hour), Some(0));
    }
}
