//! `spoor privacy …`: consent per purpose, the right of access and the audit log — thin
//! commands over the admin API (`/v1/profiles/{ref}/consent`, `…/privacy-export`,
//! `/v1/admin/audit`). Each handler is self-contained so other privacy subcommands can sit
//! beside them in one `spoor privacy` command.

use crate::client::{Client, Conn};
use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::PathBuf;

#[derive(Subcommand, Debug)]
pub enum PrivacyCmd {
    /// Show a person's consent per purpose, or set it: `spoor privacy consent
    /// email:ann@example.com advertising=denied email=granted`.
    Consent {
        /// The person: a profile id (prof_…) or type:value (user_id:u1, email:a@b.c).
        person: String,
        /// `purpose=granted|denied` (none: show the current consent).
        changes: Vec<String>,
        /// Show every kept statement (newest first) instead of the current values.
        #[arg(long)]
        history: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Everything Spoor holds about a person, as one JSON document (GDPR art. 15).
    Export {
        /// The person: a profile id (prof_…) or type:value.
        person: String,
        /// Write here instead of standard output (through `FILE.part`, renamed when
        /// complete).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        #[command(flatten)]
        conn: Conn,
    },
    /// The audit log: who read, exported or changed what through the admin API.
    Audit {
        /// Records to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start at this cursor (the `next cursor` a previous call printed).
        #[arg(long)]
        cursor: Option<u64>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Erasure, suppression, retention and compaction (`commands/erasure.rs`).
    #[command(flatten)]
    Erasure(super::erasure::ErasureCmd),
}

pub fn run(cmd: PrivacyCmd) -> anyhow::Result<()> {
    // Erasure commands run on their own (compaction needs no server and no runtime).
    if let PrivacyCmd::Erasure(c) = cmd {
        return super::erasure::run(c);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        match cmd {
            PrivacyCmd::Consent {
                person,
                changes,
                history,
                json,
                conn,
            } => consent(&Client::new(&conn)?, &person, &changes, history, json).await,
            PrivacyCmd::Export {
                person,
                output,
                conn,
            } => export(&Client::new(&conn)?, &conn.url, &person, output).await,
            PrivacyCmd::Audit {
                limit,
                cursor,
                json,
                conn,
            } => audit(&Client::new(&conn)?, limit, cursor, json).await,
            PrivacyCmd::Erasure(c) => Err(anyhow::anyhow!("not reached: {c:?}")),
        }
    })
}

/// `person` as one path segment: the characters that would end or change it escaped
/// (`:`, `@` and `+` are fine in a path).
fn path_part(person: &str) -> String {
    let mut out = String::with_capacity(person.len());
    for ch in person.chars() {
        match ch {
            '/' | '?' | '#' | '%' | ' ' => {
                let mut buf = [0u8; 4];
                for b in ch.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Parses `purpose=value` arguments.
fn parse_changes(changes: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for c in changes {
        let Some((p, v)) = c.split_once('=') else {
            bail!("{c:?} is not purpose=granted or purpose=denied");
        };
        let v = v.trim().to_ascii_lowercase();
        if v != "granted" && v != "denied" {
            bail!("{c:?}: the value must be granted or denied");
        }
        out.insert(p.trim().to_owned(), json!(v));
    }
    Ok(out)
}

async fn consent(
    c: &Client,
    person: &str,
    changes: &[String],
    history: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let base = format!("/v1/profiles/{}/consent", path_part(person));
    let v = if !changes.is_empty() {
        let body = json!({"purposes": parse_changes(changes)?});
        let v = c.send(c.request(Method::PUT, &base)?.json(&body)).await?;
        if v["applied"] != true {
            eprintln!(
                "recorded (message {}); the processor has not applied it yet",
                v["message_id"]
            );
        }
        v
    } else if history {
        c.send(c.request(Method::GET, &format!("{base}/history"))?)
            .await?
    } else {
        c.send(c.request(Method::GET, &base)?).await?
    };
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if history {
        println!(
            "{:<16} {:<8} {:<7} {:<25} MESSAGE",
            "PURPOSE", "VALUE", "VIA", "AT"
        );
        for h in v["history"].as_array().into_iter().flatten() {
            println!(
                "{:<16} {:<8} {:<7} {:<25} {}",
                h["purpose"].as_str().unwrap_or(""),
                h["value"].as_str().unwrap_or(""),
                h["via"].as_str().unwrap_or(""),
                h["at"].as_str().unwrap_or(""),
                h["message_id"].as_str().unwrap_or("")
            );
        }
        return Ok(());
    }
    println!("profile {}", v["profile_id"].as_str().unwrap_or("?"));
    if let Some(m) = v["consent"].as_object() {
        for (p, s) in m {
            let how = if s["default"] == true {
                "(default)".to_string()
            } else {
                format!(
                    "via {} at {}",
                    s["via"].as_str().unwrap_or("?"),
                    s["at"].as_str().unwrap_or("?")
                )
            };
            println!("  {p:<16} {:<8} {how}", s["value"].as_str().unwrap_or("?"));
        }
    }
    Ok(())
}

async fn export(
    c: &Client,
    url: &str,
    person: &str,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let path = format!("/v1/profiles/{}/privacy-export", path_part(person));
    let mut resp = c
        .request(Method::GET, &path)?
        .send()
        .await
        .with_context(|| format!("cannot reach spoor at {url}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("no details")
        );
    }
    let part = output.as_ref().map(|p| {
        let mut s = p.clone().into_os_string();
        s.push(".part");
        PathBuf::from(s)
    });
    let mut out: Box<dyn Write> = match &part {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut bytes = 0u64;
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                out.write_all(&chunk)?;
                bytes += chunk.len() as u64;
            }
            Ok(None) => break,
            Err(e) => bail!("the export was interrupted after {bytes} bytes: {e}"),
        }
    }
    out.flush()?;
    drop(out);
    if let (Some(part), Some(dest)) = (&part, &output) {
        std::fs::rename(part, dest)
            .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
        eprintln!(
            "exported {bytes} bytes about {person} to {}",
            dest.display()
        );
    }
    Ok(())
}

async fn audit(c: &Client, limit: usize, cursor: Option<u64>, as_json: bool) -> anyhow::Result<()> {
    let mut q = vec![("limit", limit.to_string())];
    if let Some(cur) = cursor {
        q.push(("cursor", cur.to_string()));
    }
    let v = c
        .send(c.request(Method::GET, "/v1/admin/audit")?.query(&q))
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{:<32} {:<22} {:<7} {:<6} {:<6} ROUTE TARGET",
        "AT", "WHO", "ACTION", "METHOD", "STATUS"
    );
    for r in v["records"].as_array().into_iter().flatten() {
        let target: Vec<&str> = r["target"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        println!(
            "{:<32} {:<22} {:<7} {:<6} {:<6} {} {}",
            r["at"].as_str().unwrap_or(""),
            r["who"].as_str().unwrap_or("-"),
            r["action"].as_str().unwrap_or(""),
            r["method"].as_str().unwrap_or(""),
            r["status"],
            r["route"].as_str().unwrap_or(""),
            target.join(" ")
        );
    }
    if let Some(n) = v["next_cursor"].as_u64() {
        eprintln!("next cursor: {n}  (--cursor {n})");
    }
    Ok(())
}
