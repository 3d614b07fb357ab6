//! Benchmarks: load generators and the figures they print. Nothing here asserts; the test
//! suite asserts behaviour, benchmarks report speed.

pub mod audience_backfill;
pub mod audiences;
pub mod destinations;
pub mod e2e;
pub mod erasure;
pub mod export;
pub mod identity_quality;
pub mod ingest;
pub mod privacy;
pub mod shop;
pub mod sinks;
pub mod ui;

use spoor_core::ingest::{normalize, BatchIn, IngestContext, Limits};
use spoor_core::SourceId;
use spoor_store::log::RecordIn;

/// Parses and normalises one batch body as the ingest API does (default limits, received at
/// `received_at`), for benches that write the log directly; invalid events are dropped.
pub fn batch_records(
    body: &[u8],
    source: &SourceId,
    received_at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Vec<RecordIn>> {
    let b: BatchIn = serde_json::from_slice(body)?;
    let limits = Limits::default();
    let gen = || "gen".to_string();
    let ctx = IngestContext {
        source_id: source,
        received_at,
        peer_ip: None,
        path_type: None,
        batch_sent_at: b.sent_at.get(),
        batch_context: b.context,
        batch_integrations: b.integrations,
        limits: &limits,
        new_message_id: &gen,
    };
    Ok(b.batch
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|raw| normalize(raw, &ctx).ok())
        .map(|n| RecordIn {
            timestamp_ms: n.timestamp_ms,
            received_ms: n.received_ms,
            dedupe_key: n.dedupe_key,
            payload: n.bytes,
        })
        .collect())
}

/// A fresh server state in a temporary directory with a known admin token, for the benches
/// that drive the API (warnings only on stderr). Keep the directory as long as the state.
pub fn open_app(token: &str) -> anyhow::Result<(tempfile::TempDir, spoor_server::AppState)> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = tempfile::tempdir()?;
    let cfg = spoor_server::config::Config::load(
        None,
        &spoor_server::config::Overrides {
            listen: None,
            data_dir: Some(tmp.path().to_path_buf()),
        },
    )?;
    let init = spoor_server::InitSecrets {
        write_key: None,
        admin_token: Some(token.into()),
        admin_password: None,
    };
    let (app, _) =
        spoor_server::AppState::open(cfg, std::sync::Arc::new(spoor_core::SystemClock), init)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok((tmp, app))
}

/// `app` served on a loopback port of `rt` until [`Served::stop`].
pub struct Served {
    pub url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    pub fn start(
        rt: &tokio::runtime::Runtime,
        app: &spoor_server::AppState,
    ) -> anyhow::Result<Self> {
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = app.clone();
        let task = rt.spawn(async move {
            let _ = spoor_server::serve(app, listener, async {
                let _ = stopped.await;
            })
            .await;
        });
        Ok(Self { url, stop, task })
    }

    /// Stops serving and waits until the server has let go of the state.
    pub fn stop(self, rt: &tokio::runtime::Runtime) {
        let _ = self.stop.send(());
        let _ = rt.block_on(self.task);
    }
}
