//! Configuration: a commented default TOML (which documents every key) < a config file <
//! `SPOOR_*` environment variables < command-line flags. Unknown keys are an error, so a
//! typo never silently falls back to a default.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use spoor_core::ingest::Limits;
use std::path::{Path, PathBuf};

/// The default configuration, with a comment on every key. `spoor config` prints it.
pub const DEFAULT_TOML: &str = include_str!("default_config.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub storage: StorageConfig,
    pub ingest: IngestConfig,
    pub processor: crate::processor::ProcessorConfig,
    /// Identifier types, limits, priorities and blocked values (see `spoor config`).
    #[serde(default)]
    pub identity: spoor_core::identity::IdentityConfig,
    pub destinations: DestinationsConfig,
    pub log: LogConfig,
    /// Consent purposes, PII controls (see `spoor config`).
    #[serde(default)]
    pub privacy: crate::privacy::PrivacyConfig,
    /// The web UI: sessions and login rate limiting.
    #[serde(default)]
    pub ui: crate::ui::UiConfig,
    /// Right to erasure: suppression default, compaction at start-up.
    #[serde(default)]
    pub erasure: crate::erasure::ErasureConfig,
    /// How long events are kept, per event name and per source.
    #[serde(default)]
    pub retention: crate::erasure::retention::RetentionConfig,
    /// Audience files written on a schedule (`[[exports.schedules]]`).
    #[serde(default)]
    pub exports: crate::scheduled_exports::ExportsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationsConfig {
    pub poll_ms: u64,
    /// Days the per-profile delivery log keeps a row (0: forever).
    pub delivery_log_days: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: String,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub cors_origins: Vec<String>,
    /// Scheduler slice the request-serving threads ask for, in µs (0: the kernel's
    /// default); see [`crate::sched`].
    #[serde(default = "default_thread_slice_us")]
    pub thread_slice_us: u64,
}

fn default_thread_slice_us() -> u64 {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestConfig {
    pub max_event_bytes: usize,
    pub max_batch_bytes: usize,
    pub max_batch_events: usize,
    pub dedupe_window_secs: u64,
    pub dedupe_max_keys: usize,
    pub queue_batches: usize,
    pub max_group_bytes: usize,
}

impl IngestConfig {
    /// The size limits, as the domain's normaliser takes them. (Listed as plain fields above
    /// rather than a flattened struct so a bad value names its key.)
    pub fn limits(&self) -> Limits {
        Limits {
            max_event_bytes: self.max_event_bytes,
            max_batch_bytes: self.max_batch_bytes,
            max_batch_events: self.max_batch_events,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
}

/// Short environment names for the keys people set most; any key can also be set as
/// `SPOOR_<SECTION>__<KEY>` (e.g. `SPOOR_INGEST__MAX_EVENT_BYTES`).
const ENV_SHORTCUTS: &[(&str, &str)] = &[
    ("listen", "server.listen"),
    ("data_dir", "storage.data_dir"),
    ("log_level", "log.level"),
    ("log_format", "log.format"),
];

#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads the layered configuration. `file` is an optional TOML file.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(f) = file {
            if !f.exists() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    f.display()
                )));
            }
            fig = fig.merge(Toml::file(f));
        }
        let env = Env::prefixed("SPOOR_")
            .filter(|k| k.as_str().contains("__") || ENV_SHORTCUTS.iter().any(|(s, _)| k == *s))
            .map(|k| {
                ENV_SHORTCUTS
                    .iter()
                    .find(|(s, _)| k == *s)
                    .map(|(_, full)| (*full).into())
                    .unwrap_or_else(|| k.as_str().replace("__", ".").into())
            })
            .lowercase(true);
        fig = fig.merge(env);
        if let Some(l) = &flags.listen {
            fig = fig.merge(Serialized::default("server.listen", l));
        }
        if let Some(d) = &flags.data_dir {
            fig = fig.merge(Serialized::default("storage.data_dir", d));
        }
        let cfg: Config = fig.extract().map_err(|e| ConfigError(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(format!(
                "server.listen {:?} is not host:port (e.g. 127.0.0.1:8080)",
                self.server.listen
            ));
        }
        self.exports.validate().map_err(ConfigError)?;
        let l = self.ingest.limits();
        if l.max_event_bytes == 0
            || l.max_batch_bytes < l.max_event_bytes
            || l.max_batch_events == 0
        {
            return bad(
                "ingest limits must be positive and max_batch_bytes >= max_event_bytes".into(),
            );
        }
        if self.ingest.queue_batches == 0 {
            return bad("ingest.queue_batches must be at least 1".into());
        }
        if self.storage.segment_bytes < 1024 * 1024 {
            return bad("storage.segment_bytes must be at least 1 MiB".into());
        }
        for p in &self.retention.policies {
            p.validate().map_err(ConfigError)?;
        }
        if let Err(e) = spoor_core::identity::IdentityRules::new(self.identity.clone()) {
            return bad(format!("identity: {e}"));
        }
        if self.processor.checkpoint_events == 0 {
            return bad("processor.checkpoint_events must be at least 1".into());
        }
        if self.processor.backfill_memory_mb < 16 {
            return bad("processor.backfill_memory_mb must be at least 16".into());
        }
        if self.destinations.poll_ms == 0 || self.destinations.poll_ms > 60_000 {
            return bad("destinations.poll_ms must be 1-60000".into());
        }
        if self.destinations.delivery_log_days > 36_500 {
            return bad(
                "destinations.delivery_log_days must be 0-36500 (0 keeps rows forever)".into(),
            );
        }
        if let Err(e) = self.privacy.validate() {
            return bad(e);
        }
        if self.storage.data_dir.as_os_str().is_empty() {
            return bad("storage.data_dir must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse_and_validate() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.ingest.limits(), Limits::default());
        assert_eq!(c.storage.data_dir, PathBuf::from("./spoor-data"));
    }

    #[test]
    fn file_then_flags_override_and_unknown_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spoor.toml");
        std::fs::write(
            &f,
            "[server]\nlisten = \"127.0.0.1:9000\"\n[ingest]\nmax_batch_events = 10\n",
        )
        .unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9000");
        assert_eq!(c.ingest.limits().max_batch_events, 10);
        let flags = Overrides {
            listen: Some("127.0.0.1:9001".into()),
            data_dir: Some("/tmp/x".into()),
        };
        let c = Config::load(Some(&f), &flags).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:9001");
        assert_eq!(c.storage.data_dir, PathBuf::from("/tmp/x"));

        std::fs::write(&f, "[server]\nlistn = \"x\"\n").unwrap();
        let err = Config::load(Some(&f), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listn"), "{err}");
        std::fs::write(&f, "[server]\nlisten = \"nope\"\n").unwrap();
        assert!(Config::load(Some(&f), &Overrides::default()).is_err());

        // Delivery log retention: 90 days by default, bounded so the cutoff stays a date.
        assert_eq!(
            Config::load(None, &Overrides::default())
                .unwrap()
                .destinations
                .delivery_log_days,
            90
        );
        std::fs::write(&f, "[destinations]\ndelivery_log_days = 40000\n").unwrap();
        let err = Config::load(Some(&f), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("delivery_log_days"), "{err}");

        // A backfill's memory limit: 2 GiB by default, at least 16 MiB.
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.processor.backfill_memory_mb, 2048);
        std::fs::write(&f, "[processor]\nbackfill_memory_mb = 8\n").unwrap();
        let err = Config::load(Some(&f), &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("backfill_memory_mb"), "{err}");
        std::fs::write(&f, "[processor]\nbackfill_memory_mb = 512\n").unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        assert_eq!(c.processor.backfill_memory_mb, 512);
    }

    #[test]
    fn privacy_section_is_checked() {
        let c = Config::load(None, &Overrides::default()).unwrap();
        assert_eq!(c.privacy.rules().unwrap().purposes().len(), 4);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("spoor.toml");
        for (toml, cause) in [
            ("[privacy.default_consent]\nads = \"granted\"\n", "ads"),
            ("[privacy.default_consent]\nemail = \"maybe\"\n", "maybe"),
            ("[privacy.categories]\nMarketing = [\"mail\"]\n", "mail"),
            (
                "[privacy]\nredact = [{ path = \"properties.\", action = \"drop\" }]\n",
                "properties.",
            ),
            (
                "[privacy]\nredact = [{ path = \"a\", action = \"burn\" }]\n",
                "burn",
            ),
        ] {
            std::fs::write(&f, toml).unwrap();
            let err = Config::load(Some(&f), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(cause), "{toml}: {err}");
        }
        std::fs::write(&f, "[privacy.default_consent]\nanalytics = \"granted\"\n").unwrap();
        let c = Config::load(Some(&f), &Overrides::default()).unwrap();
        let rules = c.privacy.rules().unwrap();
        assert!(rules.default_of("analytics").is_granted());
        assert!(!rules.default_of("advertising").is_granted());
    }
}
