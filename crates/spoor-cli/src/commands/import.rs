//! `spoor import FILE`: bulk import of Segment events (NDJSON) or records (CSV) through the
//! server's `/v1/import` endpoint, so imported data passes the same validation as live data.
//!
//! Idempotent: an event without a messageId gets one derived from the file's hash and the
//! line number, so re-sending the same file is dropped by the server's dedupe. Resumable:
//! progress is saved after every acknowledged batch, and a re-run continues where the last
//! one stopped (a finished file is not sent again unless `--force`).

use anyhow::{bail, Context};
use base64::Engine;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CsvAs {
    /// Each row is an identify call; the other columns become traits.
    Identify,
    /// Each row is a track call; the other columns become properties.
    Track,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The file to import (.ndjson/.jsonl of Segment events, or .csv with a header row).
    pub file: PathBuf,
    /// File format [default: from the extension].
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Base URL of the Spoor server.
    #[arg(long, env = "SPOOR_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Write key of the source the events belong to.
    #[arg(long, env = "SPOOR_WRITE_KEY", hide_env_values = true)]
    pub write_key: String,
    /// Events per request (at most 2,500; requests are also kept under 400 KB).
    #[arg(long, default_value_t = 500)]
    pub batch_size: usize,
    /// CSV: what each row is.
    #[arg(long, value_enum, default_value = "identify")]
    pub csv_as: CsvAs,
    /// CSV: the column holding the userId [default: user_id, userId, id or email, the first present].
    #[arg(long)]
    pub id_column: Option<String>,
    /// CSV with --csv-as track: the event name (or a column named `event`).
    #[arg(long)]
    pub event: Option<String>,
    /// CSV: a column with the event time (RFC 3339).
    #[arg(long)]
    pub timestamp_column: Option<String>,
    /// Where import progress is kept [default: $XDG_STATE_HOME/spoor or ~/.local/state/spoor].
    #[arg(long, env = "SPOOR_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Send a file again even if it was imported completely before.
    #[arg(long)]
    pub force: bool,
}

/// Saved after every acknowledged batch.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    file: String,
    lines_done: u64,
    accepted: u64,
    rejected: u64,
    complete: bool,
}

/// A line that could not be imported, and why.
#[derive(Debug, Serialize)]
struct Rejected {
    line: u64,
    code: String,
    message: String,
}

fn state_dir(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("XDG_STATE_HOME").map(|d| PathBuf::from(d).join("spoor")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state/spoor")))
        .unwrap_or_else(|| PathBuf::from(".spoor-state"))
}

/// SHA-256 of the file and its line count, in one pass.
fn fingerprint(path: &Path) -> anyhow::Result<(String, u64)> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let (mut lines, mut last) = (0u64, b'\n');
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        lines += buf[..n].iter().filter(|b| **b == b'\n').count() as u64;
        last = buf[n - 1];
    }
    if last != b'\n' {
        lines += 1;
    }
    Ok((hex::encode(h.finalize()), lines))
}

fn save_progress(path: &Path, p: &Progress) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(p)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Turns one input record into a Segment event, or says why it cannot be.
trait Mapper {
    /// `None` for lines to skip silently (blank lines).
    fn map(&mut self, line_no: u64, line: &str) -> Option<Result<Map<String, Value>, String>>;
}

struct NdjsonMapper;

impl Mapper for NdjsonMapper {
    fn map(&mut self, _: u64, line: &str) -> Option<Result<Map<String, Value>, String>> {
        if line.trim().is_empty() {
            return None;
        }
        Some(match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err("not a JSON object".into()),
            Err(e) => Err(format!("invalid JSON: {e}")),
        })
    }
}

struct CsvMapper {
    headers: Vec<String>,
    id_col: usize,
    ts_col: Option<usize>,
    event_col: Option<usize>,
    csv_as: CsvAs,
    event: Option<String>,
}

impl CsvMapper {
    fn new(header: &str, args: &ImportArgs) -> anyhow::Result<Self> {
        let headers: Vec<String> =
            parse_csv_line(header).map_err(|e| anyhow::anyhow!("header row: {e}"))?;
        let find = |name: &str| headers.iter().position(|h| h == name);
        let id_col = match &args.id_column {
            Some(c) => {
                find(c).with_context(|| format!("no column {c:?} in the header {headers:?}"))?
            }
            None => ["user_id", "userId", "id", "email"]
                .iter()
                .find_map(|c| find(c))
                .with_context(|| {
                    format!(
                        "no id column (user_id, userId, id, email) in {headers:?}; use --id-column"
                    )
                })?,
        };
        let ts_col = match &args.timestamp_column {
            Some(c) => Some(find(c).with_context(|| format!("no column {c:?} in the header"))?),
            None => None,
        };
        let event_col = find("event");
        if args.csv_as == CsvAs::Track && args.event.is_none() && event_col.is_none() {
            bail!("--csv-as track needs --event NAME or an `event` column");
        }
        Ok(Self {
            headers,
            id_col,
            ts_col,
            event_col,
            csv_as: args.csv_as,
            event: args.event.clone(),
        })
    }
}

fn parse_csv_line(line: &str) -> Result<Vec<String>, String> {
    let mut r = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(line.as_bytes());
    match r.records().next() {
        Some(Ok(rec)) => Ok(rec.iter().map(str::to_owned).collect()),
        Some(Err(e)) => Err(e.to_string()),
        None => Ok(Vec::new()),
    }
}

impl Mapper for CsvMapper {
    fn map(&mut self, _: u64, line: &str) -> Option<Result<Map<String, Value>, String>> {
        if line.trim().is_empty() {
            return None;
        }
        let fields = match parse_csv_line(line) {
            Ok(f) => f,
            Err(e) => return Some(Err(format!("invalid CSV: {e}"))),
        };
        if fields.len() != self.headers.len() {
            return Some(Err(format!(
                "{} fields; the header has {}",
                fields.len(),
                self.headers.len()
            )));
        }
        let id = fields[self.id_col].trim();
        if id.is_empty() {
            return Some(Err(format!(
                "empty id column {:?}",
                self.headers[self.id_col]
            )));
        }
        let mut attrs = Map::new();
        for (i, (h, v)) in self.headers.iter().zip(&fields).enumerate() {
            if i == self.id_col
                || Some(i) == self.ts_col
                || (self.csv_as == CsvAs::Track && Some(i) == self.event_col)
                || v.is_empty()
            {
                continue;
            }
            attrs.insert(h.clone(), Value::String(v.clone()));
        }
        let mut ev = Map::new();
        ev.insert("userId".into(), json!(id));
        match self.csv_as {
            CsvAs::Identify => {
                ev.insert("type".into(), json!("identify"));
                ev.insert("traits".into(), Value::Object(attrs));
            }
            CsvAs::Track => {
                let name = self
                    .event
                    .clone()
                    .or_else(|| self.event_col.map(|c| fields[c].clone()));
                ev.insert("type".into(), json!("track"));
                ev.insert("event".into(), json!(name));
                ev.insert("properties".into(), Value::Object(attrs));
            }
        }
        if let Some(c) = self.ts_col {
            ev.insert("timestamp".into(), json!(fields[c]));
        }
        Some(Ok(ev))
    }
}

struct Sender {
    http: reqwest::Client,
    url: String,
    auth: String,
    /// Whether any request of this run got an HTTP answer. Until one does, a connection
    /// error most likely means a wrong URL or no server, so it is reported quickly instead
    /// of after the full backoff meant for a server that restarts mid-import.
    reached: AtomicBool,
}

/// Connection attempts before giving up on a server this run never reached (~1.4 s).
const UNREACHED_ATTEMPTS: u32 = 4;

/// `e` and its sources, `: `-separated (reqwest's own message omits the cause, e.g.
/// "Connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        src = c.source();
    }
    s
}

impl Sender {
    /// Posts one batch, retrying on 429/5xx/connection errors with backoff. Returns the
    /// server's per-event rejections as (index, code, message).
    async fn send(
        &self,
        events: &[Map<String, Value>],
    ) -> anyhow::Result<Vec<(usize, String, String)>> {
        let body = serde_json::to_vec(&json!({ "batch": events }))?;
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=10 {
            let res = self
                .http
                .post(&self.url)
                .header("authorization", &self.auth)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            if res.is_ok() {
                self.reached.store(true, Ordering::Relaxed);
            }
            let retry_after = match res {
                Ok(resp) if resp.status().is_success() => {
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    return Ok(v["rejected"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|r| {
                            (
                                r["index"].as_u64().unwrap_or(0) as usize,
                                r["code"].as_str().unwrap_or("rejected").to_owned(),
                                r["message"].as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect());
                }
                Ok(resp) if resp.status().as_u16() == 429 || resp.status().is_server_error() => {
                    resp.headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .map(Duration::from_secs)
                }
                Ok(resp) => {
                    let status = resp.status();
                    let v: Value = resp.json().await.unwrap_or(Value::Null);
                    bail!(
                        "the server refused the batch: {status}: {}",
                        v["message"].as_str().unwrap_or("")
                    );
                }
                Err(e)
                    if !self.reached.load(Ordering::Relaxed) && attempt >= UNREACHED_ATTEMPTS =>
                {
                    bail!(
                        "cannot reach spoor at {}: {} (is `spoor serve` running there? see --url / SPOOR_URL)",
                        self.url,
                        error_chain(&e)
                    )
                }
                Err(e) if attempt == 10 => bail!(
                    "cannot reach {}: {}; progress is saved, run the same command again to resume",
                    self.url,
                    error_chain(&e)
                ),
                Err(_) => None,
            };
            tokio::time::sleep(retry_after.unwrap_or(delay)).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        bail!("the server kept answering busy/errors; progress is saved, run the same command again to resume")
    }
}

pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let format =
        args.format
            .unwrap_or_else(|| match args.file.extension().and_then(|e| e.to_str()) {
                Some("csv") => Format::Csv,
                _ => Format::Ndjson,
            });
    let (hash, total_lines) = fingerprint(&args.file)?;
    let dir = state_dir(args.state_dir.clone()).join("imports");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let progress_path = dir.join(format!("{}.json", &hash[..32]));
    let mut progress: Progress = std::fs::read(&progress_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    if progress.complete && !args.force {
        println!(
            "{} was already imported completely: {} accepted, {} rejected. Use --force to send it again \
             (events the server saw within its dedupe window are still dropped).",
            args.file.display(),
            progress.accepted,
            progress.rejected
        );
        return Ok(());
    }
    if args.force && progress.complete {
        progress = Progress::default();
    }
    progress.file = args.file.display().to_string();
    if progress.lines_done > 0 {
        println!(
            "resuming {} at line {}",
            args.file.display(),
            progress.lines_done + 1
        );
    }

    let file = std::fs::File::open(&args.file)?;
    let mut lines = BufReader::new(file).lines();
    let mut line_no = 0u64;
    let mut mapper: Box<dyn Mapper> = match format {
        Format::Ndjson => Box::new(NdjsonMapper),
        Format::Csv => {
            let header = lines.next().context("the CSV file is empty")??;
            line_no = 1;
            Box::new(CsvMapper::new(&header, &args)?)
        }
    };
    let sender = Sender {
        http: reqwest::Client::new(),
        url: format!("{}/v1/import", args.url.trim_end_matches('/')),
        auth: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{}:", args.write_key))
        ),
        reached: AtomicBool::new(false),
    };
    let bar = ProgressBar::new(total_lines);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} lines {per_sec} eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(progress.lines_done.max(line_no));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let batch_size = args.batch_size.clamp(1, 2500);
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut batch: Vec<Map<String, Value>> = Vec::new();
    let mut batch_lines: Vec<u64> = Vec::new();
    let mut batch_bytes = 0usize;
    let flush = |batch: &mut Vec<Map<String, Value>>,
                 batch_lines: &mut Vec<u64>,
                 upto: u64,
                 progress: &mut Progress,
                 rejected: &mut Vec<Rejected>|
     -> anyhow::Result<()> {
        if !batch.is_empty() {
            let server_rejects = rt.block_on(sender.send(batch))?;
            for (i, code, message) in &server_rejects {
                rejected.push(Rejected {
                    line: batch_lines.get(*i).copied().unwrap_or(0),
                    code: code.clone(),
                    message: message.clone(),
                });
            }
            progress.accepted += (batch.len() - server_rejects.len()) as u64;
            progress.rejected += server_rejects.len() as u64;
        }
        progress.lines_done = upto;
        save_progress(&progress_path, progress)?;
        bar.set_position(upto);
        batch.clear();
        batch_lines.clear();
        Ok(())
    };

    // A record starts at `start` and, in CSV, may run over several lines inside a quoted
    // field (it continues while its count of quote characters is odd).
    let mut pending: Option<(u64, String)> = None;
    for line in lines {
        let line = line.with_context(|| format!("reading line {}", line_no + 1))?;
        line_no += 1;
        if line_no <= progress.lines_done {
            continue;
        }
        let (start, text) = match pending.take() {
            Some((start, mut text)) => {
                text.push('\n');
                text.push_str(&line);
                (start, text)
            }
            None => (line_no, line),
        };
        if format == Format::Csv && text.bytes().filter(|b| *b == b'"').count() % 2 == 1 {
            pending = Some((start, text));
            continue;
        }
        match mapper.map(start, &text) {
            None => continue,
            Some(Err(reason)) => {
                progress.rejected += 1;
                rejected.push(Rejected {
                    line: start,
                    code: "invalid_line".into(),
                    message: reason,
                });
            }
            Some(Ok(mut ev)) => {
                if ev.get("messageId").is_none_or(Value::is_null) {
                    // From the record itself and where it stands, not the whole file: lines
                    // appended to a file later do not change the ids of the earlier ones.
                    let digest = hex::encode(Sha256::digest(text.as_bytes()));
                    ev.insert(
                        "messageId".into(),
                        json!(format!("import-{}-{start}", &digest[..16])),
                    );
                }
                let size = serde_json::to_string(&ev).map(|s| s.len()).unwrap_or(0);
                if batch_bytes + size > 400 * 1024 && !batch.is_empty() {
                    flush(
                        &mut batch,
                        &mut batch_lines,
                        start - 1,
                        &mut progress,
                        &mut rejected,
                    )?;
                    batch_bytes = 0;
                }
                batch.push(ev);
                batch_lines.push(start);
                batch_bytes += size;
            }
        }
        if batch.len() >= batch_size {
            flush(
                &mut batch,
                &mut batch_lines,
                line_no,
                &mut progress,
                &mut rejected,
            )?;
            batch_bytes = 0;
        }
    }
    if let Some((start, _)) = pending {
        progress.rejected += 1;
        rejected.push(Rejected {
            line: start,
            code: "invalid_line".into(),
            message: "a quoted field is never closed".into(),
        });
    }
    flush(
        &mut batch,
        &mut batch_lines,
        line_no,
        &mut progress,
        &mut rejected,
    )?;
    progress.complete = true;
    rejected.sort_by_key(|r| r.line);
    save_progress(&progress_path, &progress)?;
    bar.finish_and_clear();

    println!(
        "imported {}: read {} lines, accepted {}, rejected {}",
        args.file.display(),
        line_no,
        progress.accepted,
        progress.rejected
    );
    if !rejected.is_empty() {
        let mut by_code: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &rejected {
            *by_code.entry(&r.code).or_default() += 1;
        }
        for (code, n) in by_code {
            println!("  {code}: {n}");
        }
        for r in rejected.iter().take(20) {
            println!("  line {}: {}: {}", r.line, r.code, r.message);
        }
        let report = dir.join(format!("{}.rejected.ndjson", &hash[..32]));
        let text: String = rejected
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .map(|l| l + "\n")
            .collect();
        std::fs::write(&report, text)?;
        println!(
            "  every rejected line with its reason: {}",
            report.display()
        );
    }
    Ok(())
}
