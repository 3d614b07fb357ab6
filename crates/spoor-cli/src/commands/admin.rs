//! `spoor sources|tokens|events …`: thin commands over the admin API of a running server.

use crate::client::{Client, Conn};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::io::Write;

#[derive(Subcommand, Debug)]
pub enum SourcesCmd {
    /// Create a source; prints its write key once.
    Create {
        name: String,
        /// Use this write key instead of a random one.
        #[arg(long)]
        write_key: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List sources.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a source's write key (by id or name); its events stay.
    Revoke {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokensCmd {
    /// Create an admin token; prints the secret once.
    Create {
        name: String,
        /// Scopes: admin, read, events, sources, tokens (repeat or comma-separate).
        #[arg(long = "scope", value_delimiter = ',', default_value = "read")]
        scopes: Vec<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tokens.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token (by id or name).
    Revoke {
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Args, Debug, Clone, Default)]
pub struct EventFilter {
    /// Source id or name.
    #[arg(long)]
    pub source: Option<String>,
    /// identify, track, page, screen, group or alias.
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Event name (track) or page/screen name.
    #[arg(long)]
    pub event: Option<String>,
    /// Only events at or after this time (RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Only events before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
}

impl EventFilter {
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        for (k, v) in [
            ("source", &self.source),
            ("type", &self.kind),
            ("event", &self.event),
            ("since", &self.since),
            ("until", &self.until),
        ] {
            if let Some(v) = v {
                q.push((k, v.clone()));
            }
        }
        q
    }
}

#[derive(Subcommand, Debug)]
pub enum EventsCmd {
    /// Show the newest events (or oldest with --asc), as JSON lines.
    List {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        asc: bool,
        #[command(flatten)]
        filter: EventFilter,
        #[command(flatten)]
        conn: Conn,
    },
    /// Export events as NDJSON (every original field), oldest first, to stdout.
    Export {
        /// Start at this sequence number.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[command(flatten)]
        filter: EventFilter,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show rejected events with their reasons, newest first.
    Rejections {
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[command(flatten)]
        conn: Conn,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |s| s.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, s)| format!("{s:<w$}", w = widths[i]))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub fn sources(cmd: SourcesCmd) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            SourcesCmd::Create {
                name,
                write_key,
                conn,
            } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(
                        c.request(Method::POST, "/v1/admin/sources")?
                            .json(&json!({"name": name, "write_key": write_key})),
                    )
                    .await?;
                println!(
                    "created source {} ({})",
                    s(&r["source"]["name"]),
                    s(&r["source"]["id"])
                );
                println!("write key (shown only now): {}", s(&r["write_key"]));
            }
            SourcesCmd::List { conn } => {
                let c = Client::new(&conn)?;
                let r = c.send(c.request(Method::GET, "/v1/admin/sources")?).await?;
                let mut rows = vec![vec![
                    "ID".into(),
                    "NAME".into(),
                    "KEY".into(),
                    "CREATED".into(),
                    "REVOKED".into(),
                ]];
                for src in r["sources"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&src["id"]),
                        s(&src["name"]),
                        s(&src["write_key_hint"]),
                        s(&src["created_at"]),
                        s(&src["revoked_at"]),
                    ]);
                }
                print_table(&rows);
            }
            SourcesCmd::Revoke { id, conn } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(c.request(Method::DELETE, &format!("/v1/admin/sources/{id}"))?)
                    .await?;
                println!(
                    "revoked source {} ({})",
                    s(&r["source"]["name"]),
                    s(&r["source"]["id"])
                );
            }
        }
        Ok(())
    })
}

pub fn tokens(cmd: TokensCmd) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            TokensCmd::Create { name, scopes, conn } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(
                        c.request(Method::POST, "/v1/admin/tokens")?
                            .json(&json!({"name": name, "scopes": scopes})),
                    )
                    .await?;
                println!(
                    "created token {} ({}) with scopes {}",
                    s(&r["token"]["name"]),
                    s(&r["token"]["id"]),
                    r["token"]["scopes"]
                );
                println!("token (shown only now): {}", s(&r["secret"]));
            }
            TokensCmd::List { conn } => {
                let c = Client::new(&conn)?;
                let r = c.send(c.request(Method::GET, "/v1/admin/tokens")?).await?;
                let mut rows = vec![vec![
                    "ID".into(),
                    "NAME".into(),
                    "SCOPES".into(),
                    "TOKEN".into(),
                    "CREATED".into(),
                    "REVOKED".into(),
                ]];
                for t in r["tokens"].as_array().into_iter().flatten() {
                    let scopes: Vec<String> = t["scopes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(s)
                        .collect();
                    rows.push(vec![
                        s(&t["id"]),
                        s(&t["name"]),
                        scopes.join(","),
                        s(&t["token_hint"]),
                        s(&t["created_at"]),
                        s(&t["revoked_at"]),
                    ]);
                }
                print_table(&rows);
            }
            TokensCmd::Revoke { id, conn } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(c.request(Method::DELETE, &format!("/v1/admin/tokens/{id}"))?)
                    .await?;
                println!(
                    "revoked token {} ({})",
                    s(&r["token"]["name"]),
                    s(&r["token"]["id"])
                );
            }
        }
        Ok(())
    })
}

pub fn events(cmd: EventsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            EventsCmd::List {
                limit,
                asc,
                filter,
                conn,
            } => {
                let c = Client::new(&conn)?;
                let mut q = filter.query();
                q.push(("limit", limit.to_string()));
                q.push(("order", if asc { "asc" } else { "desc" }.into()));
                let r = c
                    .send(c.request(Method::GET, "/v1/admin/events")?.query(&q))
                    .await?;
                for e in r["events"].as_array().into_iter().flatten() {
                    println!("{e}");
                }
            }
            EventsCmd::Export { from, filter, conn } => {
                let c = Client::new(&conn)?;
                let mut q = filter.query();
                q.push(("from", from.to_string()));
                let mut resp = c
                    .request(Method::GET, "/v1/admin/events/export")?
                    .query(&q)
                    .send()
                    .await
                    .map_err(|e| anyhow::anyhow!("cannot reach spoor at {}: {e}", conn.url))?;
                if !resp.status().is_success() {
                    let status = resp.status();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    anyhow::bail!("{status}: {}", s(&body["message"]));
                }
                let mut out = std::io::stdout().lock();
                while let Some(chunk) = resp.chunk().await? {
                    out.write_all(&chunk)?;
                }
                out.flush()?;
            }
            EventsCmd::Rejections { limit, conn } => {
                let c = Client::new(&conn)?;
                let r = c
                    .send(
                        c.request(Method::GET, "/v1/admin/rejections")?
                            .query(&[("limit", limit.to_string())]),
                    )
                    .await?;
                let mut rows = vec![vec![
                    "SEQ".into(),
                    "RECEIVED".into(),
                    "SOURCE".into(),
                    "CODE".into(),
                    "MESSAGE".into(),
                ]];
                for e in r["rejections"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&e["seq"]),
                        s(&e["received_at"]),
                        s(&e["source_id"]),
                        s(&e["code"]),
                        s(&e["message"]),
                    ]);
                }
                print_table(&rows);
            }
        }
        Ok(())
    })
}
