//! `spoor audiences export`: an audience as a CSV or NDJSON file for an ad platform or an
//! e-mail tool, in full or as the changes since a cursor — a thin client of
//! `GET /v1/audiences/{name}/export` that streams the answer to a file or standard output,
//! shows progress on a terminal, and prints the next cursor on standard error so a
//! scheduled job can keep it for its next run.

use crate::client::{Client, Conn};
use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The audience.
    pub name: String,
    /// `csv` (what upload forms take) or `ndjson`.
    #[arg(long, default_value = "csv")]
    pub format: String,
    /// Only what changed after this change number (the cursor an earlier export printed):
    /// `add` and `remove` rows.
    #[arg(long)]
    pub since: Option<u64>,
    /// Traits to add as columns, comma-separated (`first_name,country`).
    #[arg(long)]
    pub traits: Option<String>,
    /// Normalised e-mail and phone in plain text instead of SHA-256.
    #[arg(long)]
    pub plain: bool,
    /// A row per e-mail/phone of a profile instead of one row per profile.
    #[arg(long)]
    pub all_identifiers: bool,
    /// Leave out members who do not consent to this purpose (e.g. advertising).
    #[arg(long)]
    pub purpose: Option<String>,
    /// Write here instead of standard output (through `FILE.part`, renamed when complete,
    /// so an interrupted export never leaves a file that looks whole).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn run(a: ExportArgs) -> anyhow::Result<()> {
    let c = Client::new(&a.conn)?;
    let mut q = vec![("format", a.format.clone())];
    if let Some(s) = a.since {
        q.push(("since", s.to_string()));
    }
    if let Some(t) = &a.traits {
        q.push(("traits", t.clone()));
    }
    if a.plain {
        q.push(("hashed", "false".into()));
    }
    if a.all_identifiers {
        q.push(("identifiers", "all".into()));
    }
    if let Some(p) = &a.purpose {
        q.push(("purpose", p.clone()));
    }
    let path = format!("/v1/audiences/{}/export", a.name);
    let mut resp = c
        .request(Method::GET, &path)?
        .query(&q)
        .send()
        .await
        .with_context(|| format!("cannot reach spoor at {}", a.conn.url))?;
    let status = resp.status();
    if !status.is_success() {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        bail!(
            "{status}: {}",
            body["message"].as_str().unwrap_or("no details")
        );
    }
    let header = |k: &str| {
        resp.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (cursor, members) = (header("spoor-next-cursor"), header("spoor-members"));

    let part = a.output.as_ref().map(|p| {
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
    // Progress in lines (≈ rows; a header and quoted line breaks make it approximate).
    // Drawn on standard error, and only on a terminal.
    let bar = ProgressBar::new(members.unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} members {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut bytes, mut lines) = (0u64, 0u64);
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => break,
            Err(e) => {
                bar.abandon();
                bail!("the export was interrupted after {bytes} bytes: {e}");
            }
        };
        out.write_all(&chunk)?;
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        bar.set_position(lines.min(bar.length().unwrap_or(0)));
    }
    out.flush()?;
    drop(out);
    bar.finish_and_clear();
    if let (Some(part), Some(dest)) = (&part, &a.output) {
        std::fs::rename(part, dest)
            .with_context(|| format!("cannot rename {} to {}", part.display(), dest.display()))?;
    }
    let dest = a
        .output
        .as_ref()
        .map_or("standard output".to_string(), |p| p.display().to_string());
    eprintln!(
        "exported {} profiles ({bytes} bytes) of audience {} to {dest}",
        members.map_or("?".to_string(), |m| m.to_string()),
        a.name
    );
    match cursor {
        Some(c) => eprintln!("next cursor: {c}  (next time: --since {c})"),
        None => eprintln!("the server sent no next cursor"),
    }
    Ok(())
}
