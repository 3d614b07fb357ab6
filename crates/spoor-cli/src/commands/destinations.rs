//! `spoor destinations …`: configure destinations (webhook, PostgreSQL sync, NATS
//! JetStream), test them, look at their health, dead letters and one person's delivery log
//! — thin commands over the admin API.
//!
//! A definition is given as a JSON file (the API's body, see README) and/or flags for the
//! common fields; flags win over the file.

use crate::client::{Client, Conn};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::path::PathBuf;

#[derive(Args, Debug, Clone, Default)]
pub struct DefArgs {
    /// The definition as JSON (the API's body; `-` reads standard input).
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// `webhook` (default), `postgres` or `nats`.
    #[arg(long = "type", value_parser = ["webhook", "postgres", "nats"])]
    pub kind: Option<String>,
    /// Webhook URL to POST to (`--url` is the Spoor server's).
    #[arg(long)]
    pub webhook_url: Option<String>,
    /// PostgreSQL to sync into: `postgres://user:password@host:port/database`.
    #[arg(long)]
    pub postgres_url: Option<String>,
    /// Schema of the PostgreSQL tables (default `spoor`).
    #[arg(long)]
    pub schema: Option<String>,
    /// Prefix of the PostgreSQL table names.
    #[arg(long)]
    pub table_prefix: Option<String>,
    /// NATS server: `nats://host:port`.
    #[arg(long)]
    pub nats_url: Option<String>,
    /// JetStream stream to publish into.
    #[arg(long)]
    pub stream: Option<String>,
    /// First token(s) of the NATS subjects (default `spoor`).
    #[arg(long)]
    pub subject_prefix: Option<String>,
    /// Create the JetStream stream if it does not exist.
    #[arg(long)]
    pub create_stream: bool,
    /// Subscribe to every event.
    #[arg(long)]
    pub all_events: bool,
    /// Subscribe to events with this name (repeatable).
    #[arg(long = "event")]
    pub events: Vec<String>,
    /// Subscribe to entries and exits of this audience (`*`: all; repeatable).
    #[arg(long = "audience")]
    pub audiences: Vec<String>,
    /// Subscribe to profile changes (an event set traits; sent as the current profile).
    #[arg(long)]
    pub profile_changes: bool,
    /// Only profile changes that set this trait (repeatable; implies --profile-changes).
    #[arg(long = "profile-trait")]
    pub profile_traits: Vec<String>,
    /// Items per request (1: one JSON object each; more: a JSON array).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// jq mapping of each item to what is sent.
    #[arg(long)]
    pub mapping: Option<String>,
    /// Extra header `Name: value` (repeatable).
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Send `Authorization: Bearer <token>`.
    #[arg(long)]
    pub bearer: Option<String>,
    /// A consent purpose the destination serves (repeatable).
    #[arg(long = "purpose")]
    pub purposes: Vec<String>,
    /// PEM file of CA certificates to trust for the destination's TLS certificate (a private
    /// CA): webhook and NATS trust it besides the system's CAs; PostgreSQL verifies against
    /// it (with sslmode=require).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum DestinationsCmd {
    /// List destinations with their health.
    List {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one destination: definition, signing secret, counters, last error.
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a destination; prints its signing secret (whsec_…).
    Create {
        name: String,
        #[command(flatten)]
        def: Box<DefArgs>,
        /// Deliver the whole history instead of what happens from now on.
        #[arg(long)]
        from_beginning: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change a destination (the current definition, changed by the file and flags).
    Update {
        name: String,
        #[command(flatten)]
        def: Box<DefArgs>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a destination with its queue position and dead letters.
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send a sample item to the destination and show the receiver's answer.
    Test {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List deliveries that failed for good.
    DeadLetters {
        name: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        after: Option<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Send dead letters again (all, or the given ids), with their original keys.
    Replay {
        name: String,
        ids: Vec<u64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Resume a destination Spoor paused after failing beyond its grace period.
    Resume {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// What was delivered about one person (`prof_…` or `type:value`).
    Log {
        profile: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
}

fn read_json(p: &PathBuf) -> anyhow::Result<Value> {
    let mut s = String::new();
    if p.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut s)?;
    } else {
        s = std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
    }
    serde_json::from_str(&s).with_context(|| format!("{} is not JSON", p.display()))
}

impl DefArgs {
    /// `base` changed by the file, then the flags.
    fn apply(&self, mut base: Map<String, Value>) -> anyhow::Result<Map<String, Value>> {
        if let Some(f) = &self.file {
            match read_json(f)? {
                Value::Object(m) => base.extend(m),
                _ => bail!("{} must hold a JSON object", f.display()),
            }
        }
        if let Some(k) = &self.kind {
            base.insert("type".into(), json!(k));
        }
        let kind = base
            .entry("type")
            .or_insert(json!("webhook"))
            .as_str()
            .unwrap_or("webhook")
            .to_owned();
        let section = base.entry(kind.as_str()).or_insert(json!({}));
        let mut set = |flag: &str, key: &str, v: Option<Value>, only: &str| {
            if let Some(v) = v {
                if kind != only {
                    bail!("{flag} applies to --type {only}, not {kind}");
                }
                section[key] = v;
            }
            Ok(())
        };
        set(
            "--webhook-url",
            "url",
            self.webhook_url.as_ref().map(|u| json!(u)),
            "webhook",
        )?;
        set(
            "--mapping",
            "mapping",
            self.mapping.as_ref().map(|m| json!(m)),
            "webhook",
        )?;
        set(
            "--bearer",
            "auth",
            self.bearer.as_ref().map(|t| json!({"bearer": t})),
            "webhook",
        )?;
        set(
            "--postgres-url",
            "url",
            self.postgres_url.as_ref().map(|u| json!(u)),
            "postgres",
        )?;
        set(
            "--schema",
            "schema",
            self.schema.as_ref().map(|u| json!(u)),
            "postgres",
        )?;
        let prefix = self.table_prefix.as_ref().map(|u| json!(u));
        set("--table-prefix", "table_prefix", prefix, "postgres")?;
        set(
            "--nats-url",
            "url",
            self.nats_url.as_ref().map(|u| json!(u)),
            "nats",
        )?;
        set(
            "--stream",
            "stream",
            self.stream.as_ref().map(|u| json!(u)),
            "nats",
        )?;
        let prefix = self.subject_prefix.as_ref().map(|u| json!(u));
        set("--subject-prefix", "subject_prefix", prefix, "nats")?;
        set(
            "--create-stream",
            "create_stream",
            self.create_stream.then_some(json!(true)),
            "nats",
        )?;
        let batch = self.batch_size.map(|b| json!(b));
        set("--batch-size", "batch_size", batch, kind.as_str())?;
        let ca =
            match &self.ca_file {
                Some(p) => Some(json!(std::fs::read_to_string(p)
                    .with_context(|| format!("--ca-file {}", p.display()))?)),
                None => None,
            };
        set("--ca-file", "ca_pem", ca, kind.as_str())?;
        for h in &self.headers {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header {h:?} is not `Name: value`"))?;
            if kind != "webhook" {
                bail!("--header applies to --type webhook, not {kind}");
            }
            if !section["headers"].is_object() {
                section["headers"] = json!({});
            }
            section["headers"][k.trim()] = json!(v.trim());
        }
        let subs = base.entry("subscriptions").or_insert(json!({}));
        if self.all_events || !self.events.is_empty() {
            let mut ev: Vec<Value> = self.events.iter().map(|n| json!({"name": n})).collect();
            if self.all_events {
                ev = vec![json!({})];
            }
            subs["events"] = json!(ev);
        }
        if !self.audiences.is_empty() {
            subs["audiences"] = json!(self
                .audiences
                .iter()
                .map(|a| json!({"audience": a}))
                .collect::<Vec<_>>());
        }
        if self.profile_changes || !self.profile_traits.is_empty() {
            subs["profiles"] = json!({ "traits": self.profile_traits });
        }
        if !self.purposes.is_empty() {
            base.insert("purposes".into(), json!(self.purposes));
        }
        Ok(base)
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Where a destination sends, for listings.
fn target(d: &Value) -> String {
    match d["type"].as_str() {
        Some("postgres") => format!(
            "postgres schema {} prefix {:?}",
            s(&d["postgres"]["schema"]),
            d["postgres"]["table_prefix"].as_str().unwrap_or("")
        ),
        Some("nats") => format!(
            "nats stream {} subjects {}.>",
            s(&d["nats"]["stream"]),
            s(&d["nats"]["subject_prefix"])
        ),
        _ => s(&d["webhook"]["url"]),
    }
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub fn run(cmd: DestinationsCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_async(cmd))
}

async fn run_async(cmd: DestinationsCmd) -> anyhow::Result<()> {
    match cmd {
        DestinationsCmd::List { json, conn } => {
            let c = Client::new(&conn)?;
            let v = c.send(c.request(Method::GET, "/v1/destinations")?).await?;
            if json {
                println!("{}", pretty(&v));
                return Ok(());
            }
            let list = v["destinations"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no destinations");
            }
            println!(
                "{:<20} {:<9} {:>10} {:>8} {:>6} {:>8}  URL / LAST ERROR",
                "NAME", "STATUS", "DELIVERED", "RETRIES", "DEAD", "LAT(ms)"
            );
            for d in list {
                let st = &d["stats"];
                println!(
                    "{:<20} {:<9} {:>10} {:>8} {:>6} {:>8}  {}",
                    s(&d["name"]),
                    s(&d["status"]),
                    s(&st["delivered"]),
                    s(&st["retries"]),
                    s(&st["dead_letters"]),
                    s(&st["latency_ms"]["avg"]),
                    if st["last_error"].is_null() {
                        target(&d)
                    } else {
                        s(&st["last_error"])
                    }
                );
            }
        }
        DestinationsCmd::Show { name, conn } => {
            let c = Client::new(&conn)?;
            let v = c
                .send(c.request(Method::GET, &format!("/v1/destinations/{name}"))?)
                .await?;
            println!("{}", pretty(&v));
        }
        DestinationsCmd::Create {
            name,
            def,
            from_beginning,
            conn,
        } => {
            let c = Client::new(&conn)?;
            let mut body = def.apply(Map::new())?;
            body.insert("name".into(), json!(name));
            if from_beginning {
                body.insert("start".into(), json!("beginning"));
            }
            let v = c
                .send(c.request(Method::POST, "/v1/destinations")?.json(&body))
                .await?;
            println!("created destination {name} ({})", target(&v));
            if v["type"] == "webhook" {
                println!(
                    "signing secret (verify webhook-signature with it): {}",
                    s(&v["secret"])
                );
            }
        }
        DestinationsCmd::Update { name, def, conn } => {
            let c = Client::new(&conn)?;
            let cur = c
                .send(c.request(Method::GET, &format!("/v1/destinations/{name}"))?)
                .await?;
            let mut base = Map::new();
            for k in [
                "type",
                "enabled",
                "purposes",
                "subscriptions",
                "webhook",
                "postgres",
                "nats",
                "retry",
            ] {
                if let Some(v) = cur.get(k) {
                    base.insert(k.into(), v.clone());
                }
            }
            let body = def.apply(base)?;
            c.send(
                c.request(Method::PUT, &format!("/v1/destinations/{name}"))?
                    .json(&body),
            )
            .await?;
            println!("updated destination {name}");
        }
        DestinationsCmd::Delete { name, conn } => {
            let c = Client::new(&conn)?;
            c.send(c.request(Method::DELETE, &format!("/v1/destinations/{name}"))?)
                .await?;
            println!("deleted destination {name}");
        }
        DestinationsCmd::Test { name, conn } => {
            let c = Client::new(&conn)?;
            let v = c
                .send(c.request(Method::POST, &format!("/v1/destinations/{name}/test"))?)
                .await?;
            let r = &v["result"];
            if r["tables"].is_object() && r["ok"] == true {
                println!("connected in {} ms; rows:", s(&r["latency_ms"]));
                for (t, n) in r["tables"].as_object().into_iter().flatten() {
                    println!("  {t}: {n}");
                }
                return Ok(());
            }
            if r["subject"].is_string() && r["ok"] == true {
                println!("published:\n{}", pretty(&v["sent"]));
                println!(
                    "acked in {} ms: subject {} stream {} seq {} duplicate {}",
                    s(&r["latency_ms"]),
                    s(&r["subject"]),
                    s(&r["stream"]),
                    s(&r["stream_seq"]),
                    s(&r["duplicate"])
                );
                return Ok(());
            }
            if v["webhook_id"].is_string() {
                println!(
                    "sent (webhook-id {}):\n{}",
                    s(&v["webhook_id"]),
                    pretty(&v["sent"])
                );
            }
            if r["ok"] == true {
                println!(
                    "answer: HTTP {} in {} ms\n{}",
                    s(&r["status"]),
                    s(&r["latency_ms"]),
                    s(&r["response"])
                );
            } else {
                bail!(
                    "the receiver did not accept it ({}): {}",
                    if r["retryable"] == true {
                        "would be retried"
                    } else {
                        "permanent"
                    },
                    s(&r["error"])
                );
            }
        }
        DestinationsCmd::DeadLetters {
            name,
            limit,
            after,
            conn,
        } => {
            let c = Client::new(&conn)?;
            let mut path = format!("/v1/destinations/{name}/dead-letters?limit={limit}");
            if let Some(a) = after {
                path.push_str(&format!("&after={a}"));
            }
            let v = c.send(c.request(Method::GET, &path)?).await?;
            let rows = v["dead_letters"].as_array().cloned().unwrap_or_default();
            if rows.is_empty() {
                println!("no dead letters");
            }
            for d in rows {
                println!(
                    "#{} {} items={} attempts={} key={} {}",
                    s(&d["id"]),
                    s(&d["at"]),
                    d["items"].as_array().map_or(0, Vec::len),
                    s(&d["attempts"]),
                    s(&d["key"]),
                    s(&d["error"])
                );
            }
            if let Some(n) = v["next_after"].as_u64() {
                println!("more: --after {n}");
            }
        }
        DestinationsCmd::Replay { name, ids, conn } => {
            let c = Client::new(&conn)?;
            let body = if ids.is_empty() {
                json!({})
            } else {
                json!({ "ids": ids })
            };
            let v = c
                .send(
                    c.request(Method::POST, &format!("/v1/destinations/{name}/replay"))?
                        .json(&body),
                )
                .await?;
            println!("replaying {} dead letter(s)", s(&v["replaying"]));
        }
        DestinationsCmd::Resume { name, conn } => {
            let c = Client::new(&conn)?;
            c.send(c.request(Method::POST, &format!("/v1/destinations/{name}/resume"))?)
                .await?;
            println!("resumed destination {name}");
        }
        DestinationsCmd::Log {
            profile,
            limit,
            conn,
        } => {
            let c = Client::new(&conn)?;
            let v = c
                .send(c.request(
                    Method::GET,
                    &format!("/v1/profiles/{profile}/deliveries?limit={limit}"),
                )?)
                .await?;
            let rows = v["deliveries"].as_array().cloned().unwrap_or_default();
            println!("profile {}: {} deliveries", s(&v["profile"]), rows.len());
            for r in rows {
                println!(
                    "{}  {:<16} {:<12} {:<24} HTTP {} attempts={} {}",
                    s(&r["at"]),
                    s(&r["destination"]),
                    s(&r["outcome"]),
                    s(&r["what"]),
                    s(&r["status"]),
                    s(&r["attempts"]),
                    s(&r["key"])
                );
            }
        }
    }
    Ok(())
}
