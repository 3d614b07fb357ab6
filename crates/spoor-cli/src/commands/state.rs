//! `spoor rebuild` (re-derive profiles and the identity graph from the log) and
//! `spoor profiles …` (look at one person from a terminal).

use crate::client::{Client, Conn};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;
use spoor_server::config::{Config, Overrides};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct RebuildArgs {
    /// A TOML config file.
    #[arg(long, env = "SPOOR_CONFIG")]
    pub config: Option<PathBuf>,
    /// The data directory [default: ./spoor-data]. The server must be stopped.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub fn rebuild(args: RebuildArgs) -> anyhow::Result<()> {
    let cfg = Config::load(
        args.config.as_deref(),
        &Overrides {
            listen: None,
            data_dir: args.data_dir,
        },
    )?;
    super::serve::init_tracing(&cfg.log.level, cfg.log.format);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let total = spoor_server::processor::rebuild(&cfg, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .map_err(|e| anyhow::anyhow!("rebuild failed: {e}"))?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rebuilt profiles and identities from {total} events in {secs:.1} s ({:.0} events/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}

#[derive(Subcommand, Debug)]
pub enum ProfilesCmd {
    /// Show one person: a profile id (prof_…) or type:value (email:a@example.com).
    Show {
        reference: String,
        /// Newest events to list.
        #[arg(long, default_value_t = 10)]
        events: usize,
        /// Print the raw JSON instead of a card.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Find profiles by identifier prefix (e.g. --type email --prefix ann).
    Search {
        #[arg(long = "type")]
        kind: String,
        #[arg(long, default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn profiles(cmd: ProfilesCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            ProfilesCmd::Show { reference, events, json, conn } => {
                let c = Client::new(&conn)?;
                let r = urlencode(&reference);
                let p = c.send(c.request(Method::GET, &format!("/v1/profiles/{r}"))?).await?;
                let id = c.send(c.request(Method::GET, &format!("/v1/profiles/{r}/identity"))?).await?;
                let ev = c
                    .send(c.request(Method::GET, &format!("/v1/profiles/{r}/events"))?.query(&[("limit", events.to_string())]))
                    .await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&serde_json::json!({"profile": p, "identity": id, "events": ev["events"]}))?);
                    return Ok(());
                }
                println!("{}  ({} events, first seen {}, last seen {})", s(&p["id"]), s(&p["event_count"]), s(&p["first_seen"]), s(&p["last_seen"]));
                println!("identities:");
                for i in id["identifiers"].as_array().into_iter().flatten() {
                    println!("  {:<14} {}  (since {})", s(&i["type"]), s(&i["value"]), s(&i["first_seen"]));
                }
                println!("traits:");
                for (k, v) in p["traits"].as_object().into_iter().flatten() {
                    let from = &p["trait_provenance"][k];
                    println!("  {k:<14} {}  (set {} by {})", s(v), s(&from["set_at"]), s(&from["source_id"]));
                }
                if let Some(m) = p["merged_ids"].as_array().filter(|m| !m.is_empty()) {
                    println!("merged: {}", m.iter().map(s).collect::<Vec<_>>().join(", "));
                }
                println!("identity decisions:");
                for d in id["decisions"].as_array().into_iter().flatten() {
                    println!("  seq {:<8} {:<8} {}", s(&d["seq"]), s(&d["decision"]), summarize(d));
                }
                println!("newest events:");
                for e in ev["events"].as_array().into_iter().flatten() {
                    let name = e["message"]["event"].as_str().or(e["message"]["name"].as_str()).unwrap_or("");
                    println!("  {}  {:<8} {}", s(&e["timestamp"]), s(&e["type"]), name);
                }
            }
            ProfilesCmd::Search { kind, prefix, limit, conn } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(c.request(Method::GET, "/v1/profiles")?.query(&[("type", kind), ("prefix", prefix), ("limit", limit.to_string())]))
                    .await?;
                for m in r["matches"].as_array().into_iter().flatten() {
                    println!("{}  {}:{}", s(&m["profile_id"]), s(&m["type"]), s(&m["value"]));
                }
            }
        }
        Ok(())
    })
}

fn summarize(d: &Value) -> String {
    let mut parts = Vec::new();
    for k in ["identifier", "via", "from", "into", "rule", "profile"] {
        if let Some(v) = d.get(k).filter(|v| !v.is_null()) {
            let text = match v {
                Value::Object(o) if o.contains_key("type") => {
                    format!("{}:{}", s(&o["type"]), s(&o["value"]))
                }
                other => s(other),
            };
            parts.push(format!("{k}={text}"));
        }
    }
    parts.join(" ")
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
