//! `spoor privacy erase|erasures|suppression|retention|compact`: the right to erasure,
//! the suppression list and retention — thin commands over the admin API, except
//! `compact`, which rewrites the databases of a stopped server's data directory.
//!
//! Self-contained (its own clap enum and handler) so it can be folded into one
//! `spoor privacy` command with the consent/export/audit subcommands.

use crate::client::{Client, Conn};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};
use spoor_server::config::{Config, Overrides};
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum ErasureCmd {
    /// Erase a person (their whole merged profile cluster) everywhere: profile, identity
    /// graph, events (log and rejected log), computed state, audience memberships (an exit
    /// is sent), delivery rows and dead letters.
    Erase {
        /// `type:value` (e.g. email:ann@example.com) or a profile id (prof_…).
        reference: String,
        /// Do not keep hashed identifiers (new events for the person are then processed).
        #[arg(long)]
        no_suppress: bool,
        /// Return once the job is stored instead of waiting for it.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List erasure jobs, or show one.
    Erasures {
        id: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// The suppression list (hashed identifiers of erased people).
    Suppression {
        /// Remove the suppression with this SHA-256 (hex) instead of listing.
        #[arg(long)]
        remove: Option<String>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Apply the retention policies now, or with --dry-run show what they would remove.
    Retention {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Rewrite the databases so no stale page holds erased data (server stopped; `spoor
    /// serve` does it at start when `[erasure] compact_on_start` is on).
    Compact {
        #[arg(long, env = "SPOOR_CONFIG")]
        config: Option<PathBuf>,
        /// The data directory [default: ./spoor-data].
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(cmd: ErasureCmd) -> anyhow::Result<()> {
    if let ErasureCmd::Compact { config, data_dir } = cmd {
        let cfg = Config::load(
            config.as_deref(),
            &Overrides {
                listen: None,
                data_dir,
            },
        )?;
        let done = spoor_server::erasure::compact::compact_data_dir(&cfg.storage.data_dir)
            .map_err(|e| anyhow::anyhow!("compaction failed: {e}"))?;
        for r in done {
            println!(
                "{:<32} {:>12} → {:>12} bytes",
                r.file, r.bytes_before, r.bytes_after
            );
        }
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn job_line(j: &Value) -> String {
    format!(
        "{}  {:<8} {:<10} profiles {:>3}  events {:>7}  rejected {:>4}  delivery rows {:>5}  exits {:>3}  suppressed {:>2}{}",
        j["id"].as_str().unwrap_or("?"),
        j["status"].as_str().unwrap_or("?"),
        j["step"].as_str().unwrap_or("?"),
        j["profiles"],
        j["events"],
        j["rejected_events"],
        j["delivery_rows"],
        j["exits"],
        j["suppressed_identifiers"],
        match (j["compacted"].as_bool(), j["error"].as_str()) {
            (_, Some(e)) => format!("  error: {e}"),
            (Some(false), _) if j["status"] == "done" => "  (compaction pending)".into(),
            _ => String::new(),
        }
    )
}

async fn run_async(cmd: ErasureCmd) -> anyhow::Result<()> {
    match cmd {
        ErasureCmd::Erase {
            reference,
            no_suppress,
            no_wait,
            json,
            conn,
        } => {
            let c = Client::new(&conn)?;
            let path = if no_wait {
                "/v1/privacy/erasures"
            } else {
                "/v1/privacy/erasures?wait=true"
            };
            let mut body = json!({ "ref": reference });
            if no_suppress {
                body["suppress"] = json!(false);
            }
            let v = c.send(c.request(Method::POST, path)?.json(&body)).await?;
            if json {
                println!("{}", pretty(&v));
            } else {
                println!("{}", job_line(&v["erasure"]));
            }
        }
        ErasureCmd::Erasures { id, json, conn } => {
            let c = Client::new(&conn)?;
            let path = match &id {
                Some(id) => format!("/v1/privacy/erasures/{id}"),
                None => "/v1/privacy/erasures".into(),
            };
            let v = c.send(c.request(Method::GET, &path)?).await?;
            if json {
                println!("{}", pretty(&v));
            } else if id.is_some() {
                println!("{}", job_line(&v["erasure"]));
            } else {
                let jobs = v["erasures"].as_array().cloned().unwrap_or_default();
                if jobs.is_empty() {
                    println!("no erasures");
                }
                for j in &jobs {
                    println!("{}", job_line(j));
                }
            }
        }
        ErasureCmd::Suppression { remove, json, conn } => {
            let c = Client::new(&conn)?;
            if let Some(h) = remove {
                let v = c
                    .send(c.request(Method::DELETE, &format!("/v1/privacy/suppressions/{h}"))?)
                    .await?;
                println!("removed {}", v["removed"].as_str().unwrap_or(&h));
                return Ok(());
            }
            let v = c
                .send(c.request(Method::GET, "/v1/privacy/suppressions")?)
                .await?;
            if json {
                println!("{}", pretty(&v));
                return Ok(());
            }
            let list = v["suppressions"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no suppressions");
            }
            for s in &list {
                println!(
                    "{}  {:<14} {}",
                    s["hash"].as_str().unwrap_or("?"),
                    s["type"].as_str().unwrap_or("?"),
                    s["erasure"].as_str().unwrap_or("?")
                );
            }
        }
        ErasureCmd::Retention {
            dry_run,
            json,
            conn,
        } => {
            let c = Client::new(&conn)?;
            let path = format!("/v1/privacy/retention/run?dry_run={dry_run}");
            let v = c.send(c.request(Method::POST, &path)?).await?;
            if json {
                println!("{}", pretty(&v));
                return Ok(());
            }
            let r = &v["retention"];
            let verb = if dry_run { "would remove" } else { "removed" };
            let list = r["policies"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no retention policies");
            }
            for p in &list {
                println!(
                    "{:<40} keep {:>5} days  {verb} {} events",
                    p["policy"].as_str().unwrap_or("?"),
                    p["keep_days"],
                    p["events"]
                );
            }
            if !dry_run {
                println!(
                    "erased {} events, re-derived {} profiles{}",
                    r["erased"],
                    r["profiles_rederived"],
                    match r["components_skipped"].as_u64() {
                        Some(n) if n > 0 => format!(
                            "; {n} identity components too large to re-derive online: run `spoor rebuild`"
                        ),
                        _ => String::new(),
                    }
                );
            }
        }
        ErasureCmd::Compact { .. } => {
            anyhow::bail!("compact works on a data directory, not a server")
        }
    }
    Ok(())
}
