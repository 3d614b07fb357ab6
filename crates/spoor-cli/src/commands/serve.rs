//! `spoor serve`: open the data directory, print first-start secrets once, serve HTTP.

use anyhow::Context;
use clap::Args;
use spoor_server::config::{Config, LogFormat, Overrides};
use spoor_server::error::ApiError;
use spoor_server::{AppState, InitSecrets};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// A TOML config file (see `spoor config` for every key).
    #[arg(long, env = "SPOOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the embedded storage lives [default: ./spoor-data].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<String>,
}

pub fn init_tracing(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal; files and collectors get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let flags = Overrides {
        listen: args.listen,
        data_dir: args.data_dir,
    };
    let cfg = Config::load(args.config.as_deref(), &flags)?;
    init_tracing(&cfg.log.level, cfg.log.format);
    let init = InitSecrets {
        write_key: std::env::var("SPOOR_INIT_WRITE_KEY")
            .ok()
            .filter(|s| !s.is_empty()),
        admin_token: std::env::var("SPOOR_INIT_ADMIN_TOKEN")
            .ok()
            .filter(|s| !s.is_empty()),
        admin_password: std::env::var("SPOOR_INIT_ADMIN_PASSWORD")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    let slice = cfg.server.thread_slice_us;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_start(move || spoor_server::sched::request_slice(slice))
        .build()?;
    rt.block_on(async move {
        let listen = cfg.server.listen.clone();
        let data_dir = cfg.storage.data_dir.clone();
        let (app, first) =
            AppState::open(cfg, Arc::new(spoor_core::SystemClock), init).map_err(|e| match e {
                // Its Display hides the cause (it is meant for HTTP answers).
                ApiError::Internal(cause) => {
                    anyhow::anyhow!("cannot open data dir {}: {cause}", data_dir.display())
                }
                other => {
                    anyhow::anyhow!("cannot start on data dir {}: {other}", data_dir.display())
                }
            })?;
        if let Some(f) = first {
            println!(
                "First start: created what this data directory needs. Secrets are shown only now."
            );
            if let Some((source, key)) = &f.source {
                println!("  created source '{}'", source.name);
                println!("  write key ({}):  {key}", source.id);
            }
            if let Some((token, secret)) = &f.token {
                println!("  created an admin token");
                println!("  admin token ({}): {secret}", token.id);
            }
            if let Some((user, password)) = &f.ui_admin {
                println!("  created web UI user '{user}' (role admin)");
                println!("  password:  {password}   (log in at /ui/login)");
            }
        }
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        println!(
            "spoor listening on http://{addr} (data dir {})",
            data_dir.display()
        );
        tracing::info!(%addr, data_dir = %data_dir.display(), "spoor started");
        spoor_server::serve(app, listener, shutdown_signal()).await?;
        tracing::info!("spoor stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
