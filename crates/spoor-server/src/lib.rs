//! Spoor's HTTP surface: the Segment-compatible ingest API, the admin API, health and
//! metrics. Handlers are thin: they check input at the door and call into `spoor-core`
//! (pure rules) and `spoor-store` (durable state).

pub mod api;
pub mod auth;
pub mod body;
pub mod config;
pub mod defs;
pub mod destinations;
pub mod erasure;
pub mod error;
pub mod metrics;
pub mod parse_pool;
pub mod privacy;
pub mod processor;
pub mod sched;
pub mod scheduled_exports;
pub mod tls;
pub mod ui;

use auth::{Auth, FirstStart};
use config::Config;
use error::ApiError;
use metrics::Metrics;
use spoor_core::Clock;
use spoor_store::log::{EventLog, LogOptions, LogReader, LogWriter, WriterOptions};
use spoor_store::meta::MetaStore;
use spoor_store::state::StateStore;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Shared state of a running server. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub cfg: Config,
    pub auth: Auth,
    pub writer: LogWriter,
    pub reader: LogReader,
    pub rejects: LogWriter,
    pub rejects_reader: LogReader,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub started: Instant,
    /// Derived state (profiles, identity graph), written by the processor.
    pub state: StateStore,
    pub processor: processor::Processor,
    /// Identity rules, for normalising identifiers in lookups (`email:Ann@X.com`).
    pub rules: spoor_core::identity::IdentityRules,
    /// Audience and computed-trait definitions (the API writes, the processor reads).
    pub defs: defs::DefsHandle,
    /// Destinations and their delivery workers (started by [`serve`]).
    pub destinations: Arc<destinations::Destinations>,
    /// Consent purposes, defaults and mappings (`[privacy]`).
    pub consent: Arc<spoor_core::consent::ConsentRules>,
    /// IP anonymisation and redaction applied at ingest (`[privacy]`).
    pub pii: privacy::pii::Pii,
    /// Who did what through the admin API (see [`privacy::audit`]).
    pub audit: privacy::audit::AuditLog,
    /// Web UI accounts and sessions.
    pub users: Arc<ui::users::Users>,
    /// Erasure jobs and the suppression list.
    pub privacy: Arc<erasure::Privacy>,
    /// The web UI's exact audience counts running in the background.
    pub counts: ui::count::CountJobs,
    /// The overview page's per-minute event counts, updated incrementally.
    pub overview: ui::overview_stats::OverviewStats,
    /// Where ingest batches are parsed, below the API's priority.
    pub parse: parse_pool::ParsePool,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Secrets to create on first start instead of random ones (`SPOOR_INIT_*`).
#[derive(Debug, Default, Clone)]
pub struct InitSecrets {
    pub write_key: Option<String>,
    pub admin_token: Option<String>,
    /// Password of the first web UI user `admin` (`SPOOR_INIT_ADMIN_PASSWORD`).
    pub admin_password: Option<String>,
}

fn open_log(
    dir: std::path::PathBuf,
    cfg: &Config,
    metrics: &Arc<Metrics>,
    clock: &Arc<dyn Clock>,
    observe_fsync: bool,
) -> Result<(LogWriter, LogReader), ApiError> {
    let log = EventLog::open(LogOptions {
        dir,
        segment_bytes: cfg.storage.segment_bytes,
    })?;
    let m = metrics.clone();
    let on_fsync: Option<Arc<dyn Fn(Duration) + Send + Sync>> = if observe_fsync {
        Some(Arc::new(move |d: Duration| {
            m.fsync_seconds.observe(d.as_secs_f64())
        }))
    } else {
        None
    };
    let clock = clock.clone();
    let opts = WriterOptions {
        queue_batches: cfg.ingest.queue_batches,
        dedupe_window: Duration::from_secs(cfg.ingest.dedupe_window_secs),
        dedupe_max_keys: cfg.ingest.dedupe_max_keys,
        max_group_bytes: cfg.ingest.max_group_bytes,
        on_fsync,
    };
    Ok(LogWriter::spawn(
        log,
        opts,
        Arc::new(move || clock.now().timestamp_millis()),
    )?)
}

impl AppState {
    /// How many handles to this state are alive (tests wait for 1 before reopening the
    /// data directory: the stores are closed only when the last handle is dropped).
    pub fn handles(&self) -> usize {
        Arc::strong_count(&self.0)
    }

    /// Opens (or creates) the data directory and starts the log writers. On an empty data
    /// directory it also creates the `default` source and an admin token, returned once.
    pub fn open(
        cfg: Config,
        clock: Arc<dyn Clock>,
        init: InitSecrets,
    ) -> Result<(Self, Option<FirstStart>), ApiError> {
        let dir = cfg.storage.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| {
            ApiError::internal(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        if cfg.erasure.compact_on_start
            && erasure::compact::pending(&dir).map_err(ApiError::Internal)?
        {
            let done = erasure::compact::compact_data_dir(&dir).map_err(ApiError::Internal)?;
            tracing::info!(databases = done.len(), "databases rewritten after erasure");
        }
        let meta = Arc::new(MetaStore::open(&dir.join("meta"))?);
        let auth = Auth::new(meta.clone())?;
        let mut first = auth.initialize(init.write_key, init.admin_token)?;
        let users = Arc::new(ui::users::Users::open(meta.clone(), cfg.ui.clone())?);
        if let Some(admin) = users.initialize(init.admin_password)? {
            first.get_or_insert_with(Default::default).ui_admin = Some(admin);
        }
        let metrics = Arc::new(Metrics::default());
        let (writer, reader) = open_log(dir.join("log"), &cfg, &metrics, &clock, true)?;
        let (rejects, rejects_reader) =
            open_log(dir.join("rejected"), &cfg, &metrics, &clock, false)?;
        let state = StateStore::open(&dir.join("state"))?;
        let defs = defs::DefsHandle::open(meta.clone())?;
        let now_clock = clock.clone();
        let consent = Arc::new(cfg.privacy.rules().map_err(ApiError::InvalidRequest)?);
        let pii = privacy::pii::Pii::new(&cfg.privacy);
        let mut pipeline = processor::Pipeline::new(
            &cfg.identity,
            &cfg.processor,
            consent.clone(),
            defs.clone(),
            Arc::new(move || now_clock.now().timestamp_millis()),
        )
        .map_err(ApiError::InvalidRequest)?;
        let rules = spoor_core::identity::IdentityRules::new(cfg.identity.clone())
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        let destinations = Arc::new(destinations::Destinations::open(&dir.join("destinations"))?);
        let privacy = Arc::new(erasure::Privacy::open(meta.clone())?);
        pipeline.erase = Some(processor::erase::EraseCtx {
            privacy: privacy.clone(),
            retention: cfg.retention.clone(),
            rejects: rejects_reader.clone(),
            deliveries: destinations.store.clone(),
        });
        let processor = processor::Processor::spawn(
            reader.clone(),
            state.clone(),
            pipeline,
            cfg.processor.clone(),
        )?;
        let audit =
            privacy::audit::AuditLog::open(&dir.join("audit")).map_err(ApiError::internal)?;
        let inner = Inner {
            cfg,
            auth,
            writer,
            reader,
            rejects,
            rejects_reader,
            metrics,
            clock,
            started: Instant::now(),
            state,
            processor,
            rules,
            defs,
            destinations,
            consent,
            pii,
            audit,
            users,
            privacy,
            counts: Default::default(),
            overview: Default::default(),
            parse: Default::default(),
        };
        Ok((Self(Arc::new(inner)), first))
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    app: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    app.destinations
        .start(destinations::worker::Context {
            log: app.reader.clone(),
            state: app.state.clone(),
            store: app.destinations.store.clone(),
            http: app.destinations.http.clone(),
            consent: app.consent.clone(),
            poll: Duration::from_millis(app.cfg.destinations.poll_ms),
        })
        .await
        .map_err(std::io::Error::other)?;
    // Background tasks hold the app; they are stopped below so the data directory is free.
    let mut background = scheduled_exports::spawn(&app);
    background.push(ui::sizes::spawn(&app));
    background.push(destinations::log_prune::spawn(&app));
    let router = api::router(app.clone());
    // Audited reads are synced within a second even when no later record comes; on the
    // blocking pool, so a slow disk sync holds no runtime worker (requests run there).
    let syncing = {
        let app = app.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(privacy::audit::SYNC_EVERY / 2).await;
                let app = app.clone();
                let r = tokio::task::spawn_blocking(move || app.audit.sync()).await;
                if let Ok(Err(e)) = r {
                    tracing::error!(error = %e, "cannot sync the audit log");
                }
            }
        })
    };
    let served = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    // Workers hold the stores open; stop them so the data directory can be reopened.
    app.destinations.shutdown().await;
    app.counts.stop_all();
    background.push(syncing);
    for task in background {
        task.abort();
        let _ = task.await;
    }
    if let Err(e) = app.audit.sync() {
        tracing::error!(error = %e, "cannot sync the audit log");
    }
    served
}
