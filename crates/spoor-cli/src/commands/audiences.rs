//! `spoor audiences …` and `spoor traits …`: define audiences and computed traits, check and
//! preview rules, and read memberships — thin commands over the admin API of a running server.

use crate::client::{Client, Conn};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::PathBuf;

/// Where a rule comes from: exactly one of text, a text file, or a JSON file.
#[derive(Args, Debug, Clone)]
#[group(required = true, multiple = false)]
pub struct RuleSrc {
    /// The rule as text, e.g. `performed "Order Completed" within 7d`.
    #[arg(long)]
    pub rule: Option<String>,
    /// A file holding the rule as text (`-` reads standard input).
    #[arg(long)]
    pub rule_file: Option<PathBuf>,
    /// A file holding the rule in its JSON form (`-` reads standard input).
    #[arg(long)]
    pub rule_json: Option<PathBuf>,
}

impl RuleSrc {
    /// The request fields (`rule` or `rule_json`) and the text, to point at errors in.
    fn load(&self) -> anyhow::Result<(serde_json::Map<String, Value>, Option<String>)> {
        let mut m = serde_json::Map::new();
        let text = if let Some(t) = &self.rule {
            Some(t.clone())
        } else if let Some(f) = &self.rule_file {
            Some(read_input(f)?)
        } else {
            None
        };
        if let Some(t) = &text {
            m.insert("rule".into(), json!(t));
        } else if let Some(f) = &self.rule_json {
            let raw = read_input(f)?;
            let v: Value = serde_json::from_str(&raw)
                .with_context(|| format!("{} is not JSON", f.display()))?;
            m.insert("rule_json".into(), v);
        } else {
            bail!("give --rule, --rule-file or --rule-json");
        }
        Ok((m, text))
    }
}

#[derive(Subcommand, Debug)]
pub enum AudiencesCmd {
    /// List audiences.
    List {
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one audience: its rule as text and JSON, revision, backfill progress.
    Show {
        name: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create an audience from a rule.
    Create {
        name: String,
        #[command(flatten)]
        rule: RuleSrc,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace an audience's rule (it is then backfilled over the event history).
    Update {
        name: String,
        #[command(flatten)]
        rule: RuleSrc,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete an audience (refused while another audience refers to it).
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a rule: prints its canonical text and JSON form, or where it is wrong.
    Validate {
        #[command(flatten)]
        rule: RuleSrc,
        #[command(flatten)]
        conn: Conn,
    },
    /// Evaluate a rule over the current profiles without saving it: size and a sample.
    Preview {
        #[command(flatten)]
        rule: RuleSrc,
        /// Members to show (at most 100).
        #[arg(long, default_value_t = 10)]
        sample: usize,
        /// Profiles to evaluate at most (at most 200 000).
        #[arg(long)]
        scan: Option<usize>,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List an audience's members (paged), or export them all as NDJSON.
    Members {
        name: String,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Continue after this cursor (printed at the end of a page).
        #[arg(long)]
        cursor: Option<String>,
        /// Every member as NDJSON on standard output.
        #[arg(long)]
        export: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// Write an audience as a file for an ad platform or e-mail tool (CSV or NDJSON, e-mail
    /// and phone SHA-256 hashed), in full or the changes since a cursor; the next cursor is
    /// printed on standard error.
    Export(crate::commands::export::ExportArgs),
    /// How many people are in an audience now.
    Size {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// How two audiences overlap: sizes, both, only one.
    Overlap {
        a: String,
        b: String,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand, Debug)]
pub enum TraitsCmd {
    /// List computed traits.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Show one computed trait's definition (JSON).
    Show {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Create a computed trait from its JSON definition, e.g.
    /// `{"name": "orders_30d", "aggregation": "count", "event": {"name": "Order Completed"}, "window": "30d"}`.
    Create {
        /// The definition file (`-` reads standard input).
        #[arg(long = "json", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a computed trait's definition (it is then backfilled).
    Update {
        name: String,
        /// The definition file (`-` reads standard input); its name may be left out.
        #[arg(long = "json", value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a computed trait (refused while an audience uses it).
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

fn read_input(path: &PathBuf) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
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

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

fn short(text: &str, max: usize) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

fn backfill(v: &Value) -> String {
    match (v["done"].as_u64(), v["total"].as_u64()) {
        _ if v["started"] == false => "waiting".into(),
        (Some(d), Some(t)) if t > 0 => format!("{}% ({d}/{t})", d * 100 / t),
        (Some(_), Some(_)) => "running".into(),
        _ => "-".into(),
    }
}

/// Points at a position in a rule's text, like a compiler:
///
/// ```text
///  2 |   and trait x in [1 2]
///    |                     ^ expected `,` or `]`
/// ```
pub fn caret(text: &str, line: usize, column: usize, note: &str) -> String {
    let Some(src) = text.lines().nth(line.saturating_sub(1)) else {
        return String::new();
    };
    let num = line.to_string();
    // Keep tabs so the caret lines up under the same character.
    let pad: String = src
        .chars()
        .take(column.saturating_sub(1))
        .map(|c| if c == '\t' { '\t' } else { ' ' })
        .collect();
    format!(
        "{:>w$} | {src}\n{:>w$} | {pad}^ {note}",
        num,
        "",
        w = num.len() + 1
    )
}

/// Sends a request and returns the JSON answer. A rule error is shown with a caret under
/// its position in `text` (when the rule was given as text).
async fn call(req: RequestBuilder, text: Option<&str>) -> anyhow::Result<Value> {
    let resp = req
        .send()
        .await
        .context("cannot reach spoor — is `spoor serve` running?")?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let msg = body["message"].as_str().unwrap_or("no details");
    if body["code"] == "invalid_rule" {
        if let (Some(t), Some(line), Some(col)) =
            (text, body["line"].as_u64(), body["column"].as_u64())
        {
            let found = format!("found {}", s(&body["found"]));
            bail!(
                "invalid rule at line {line}, column {col}: expected {}\n{}",
                s(&body["expected"]),
                caret(t, line as usize, col as usize, &found)
            );
        }
    }
    bail!("{status}: {msg}")
}

fn print_audience(a: &Value) {
    println!(
        "audience {} (revision {})",
        s(&a["name"]),
        s(&a["revision"])
    );
    if a["description"].as_str().is_some_and(|d| !d.is_empty()) {
        println!("description: {}", s(&a["description"]));
    }
    println!("rule: {}", s(&a["rule"]));
    println!(
        "created: {}  updated: {}",
        s(&a["created_at"]),
        s(&a["updated_at"])
    );
    if !a["backfill"].is_null() {
        println!("backfill: {}", backfill(&a["backfill"]));
    }
}

pub fn audiences(cmd: AudiencesCmd) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            AudiencesCmd::List { json, conn } => {
                let c = Client::new(&conn)?;
                let r = call(c.request(Method::GET, "/v1/audiences")?, None).await?;
                if json {
                    println!("{}", pretty(&r));
                    return Ok(());
                }
                let mut rows = vec![vec![
                    "NAME".into(),
                    "REVISION".into(),
                    "BACKFILL".into(),
                    "UPDATED".into(),
                    "RULE".into(),
                ]];
                for a in r["audiences"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&a["name"]),
                        s(&a["revision"]),
                        backfill(&a["backfill"]),
                        s(&a["updated_at"]),
                        short(&s(&a["rule"]), 80),
                    ]);
                }
                print_table(&rows);
            }
            AudiencesCmd::Show { name, json, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/audiences/{name}");
                let a = call(c.request(Method::GET, &path)?, None).await?;
                if json {
                    println!("{}", pretty(&a));
                } else {
                    print_audience(&a);
                    println!("rule (JSON):\n{}", pretty(&a["rule_json"]));
                }
            }
            AudiencesCmd::Create {
                name,
                rule,
                description,
                conn,
            } => {
                let c = Client::new(&conn)?;
                let (mut body, text) = rule.load()?;
                body.insert("name".into(), json!(name));
                if let Some(d) = description {
                    body.insert("description".into(), json!(d));
                }
                let req = c.request(Method::POST, "/v1/audiences")?.json(&body);
                let a = call(req, text.as_deref()).await?;
                println!(
                    "created audience {} (revision {})",
                    s(&a["name"]),
                    s(&a["revision"])
                );
                println!("rule: {}", s(&a["rule"]));
            }
            AudiencesCmd::Update {
                name,
                rule,
                description,
                conn,
            } => {
                let c = Client::new(&conn)?;
                let (mut body, text) = rule.load()?;
                if let Some(d) = description {
                    body.insert("description".into(), json!(d));
                }
                let path = format!("/v1/audiences/{name}");
                let req = c.request(Method::PUT, &path)?.json(&body);
                let a = call(req, text.as_deref()).await?;
                println!(
                    "updated audience {} (revision {})",
                    s(&a["name"]),
                    s(&a["revision"])
                );
                println!("rule: {}", s(&a["rule"]));
            }
            AudiencesCmd::Delete { name, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/audiences/{name}");
                call(c.request(Method::DELETE, &path)?, None).await?;
                println!("deleted audience {name}");
            }
            AudiencesCmd::Validate { rule, conn } => {
                let c = Client::new(&conn)?;
                let (body, text) = rule.load()?;
                let req = c
                    .request(Method::POST, "/v1/audiences/validate")?
                    .json(&body);
                let r = call(req, text.as_deref()).await?;
                println!("valid");
                println!("text: {}", s(&r["text"]));
                println!("json:\n{}", pretty(&r["rule_json"]));
            }
            AudiencesCmd::Preview {
                rule,
                sample,
                scan,
                json,
                conn,
            } => {
                let c = Client::new(&conn)?;
                let (mut body, text) = rule.load()?;
                body.insert("sample".into(), json!(sample));
                if let Some(n) = scan {
                    body.insert("scan".into(), json!(n));
                }
                let req = c
                    .request(Method::POST, "/v1/audiences/preview")?
                    .json(&body);
                let r = call(req, text.as_deref()).await?;
                if json {
                    println!("{}", pretty(&r));
                    return Ok(());
                }
                let how = if r["exact"] == true {
                    "exact".to_string()
                } else {
                    format!(
                        "± {} at 95 %, estimated from a uniform random sample{}",
                        s(&r["margin_95"]),
                        if r["truncated"] == true {
                            "; stopped at the time budget"
                        } else {
                            ""
                        }
                    )
                };
                println!(
                    "matched {} of {} profiles scanned ({} in total) in {} ms",
                    s(&r["matched"]),
                    s(&r["scanned"]),
                    s(&r["total_profiles"]),
                    s(&r["took_ms"])
                );
                println!("size: {} ({how})", s(&r["estimated_size"]));
                let mut rows = vec![vec!["ID".to_string(), "TRAITS".to_string()]];
                for m in r["sample"].as_array().into_iter().flatten() {
                    rows.push(vec![s(&m["id"]), short(&m["traits"].to_string(), 100)]);
                }
                if rows.len() > 1 {
                    print_table(&rows);
                }
            }
            AudiencesCmd::Members {
                name,
                limit,
                cursor,
                export,
                conn,
            } => {
                let c = Client::new(&conn)?;
                if export {
                    let path = format!("/v1/audiences/{name}/members/export");
                    let mut resp =
                        c.request(Method::GET, &path)?.send().await.map_err(|e| {
                            anyhow::anyhow!("cannot reach spoor at {}: {e}", conn.url)
                        })?;
                    if !resp.status().is_success() {
                        let status = resp.status();
                        let body: Value = resp.json().await.unwrap_or(Value::Null);
                        bail!("{status}: {}", s(&body["message"]));
                    }
                    let mut out = std::io::stdout().lock();
                    while let Some(chunk) = resp.chunk().await? {
                        out.write_all(&chunk)?;
                    }
                    out.flush()?;
                    return Ok(());
                }
                let mut q = vec![("limit", limit.to_string())];
                if let Some(cur) = cursor {
                    q.push(("cursor", cur));
                }
                let path = format!("/v1/audiences/{name}/members");
                let r = call(c.request(Method::GET, &path)?.query(&q), None).await?;
                let members = r["members"].as_array().cloned().unwrap_or_default();
                // Columns: the id, then whatever else the API says about a member.
                let mut cols: Vec<String> = vec!["id".into()];
                for m in &members {
                    for k in m.as_object().into_iter().flat_map(|o| o.keys()) {
                        if !cols.contains(k) {
                            cols.push(k.clone());
                        }
                    }
                }
                let mut rows = vec![cols.iter().map(|c| c.to_uppercase()).collect::<Vec<_>>()];
                for m in &members {
                    rows.push(
                        cols.iter()
                            .map(|k| short(&s(&m[k.as_str()]), 100))
                            .collect(),
                    );
                }
                print_table(&rows);
                if let Some(next) = r["next_cursor"].as_str() {
                    eprintln!("more: --cursor {next}");
                }
            }
            AudiencesCmd::Export(a) => crate::commands::export::run(a).await?,
            AudiencesCmd::Size { name, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/audiences/{name}/size");
                let r = call(c.request(Method::GET, &path)?, None).await?;
                println!("{}", s(&r["size"]));
            }
            AudiencesCmd::Overlap { a, b, json, conn } => {
                let c = Client::new(&conn)?;
                let req = c
                    .request(Method::GET, "/v1/audiences/overlap")?
                    .query(&[("a", &a), ("b", &b)]);
                let r = call(req, None).await?;
                if json {
                    println!("{}", pretty(&r));
                    return Ok(());
                }
                print_table(&[
                    vec![
                        "A".into(),
                        "B".into(),
                        "A_SIZE".into(),
                        "B_SIZE".into(),
                        "BOTH".into(),
                        "A_ONLY".into(),
                        "B_ONLY".into(),
                        "TOOK_US".into(),
                    ],
                    [
                        "a", "b", "a_size", "b_size", "both", "a_only", "b_only", "took_us",
                    ]
                    .iter()
                    .map(|k| s(&r[*k]))
                    .collect(),
                ]);
            }
        }
        Ok(())
    })
}

pub fn traits(cmd: TraitsCmd) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        match cmd {
            TraitsCmd::List { conn } => {
                let c = Client::new(&conn)?;
                let r = call(c.request(Method::GET, "/v1/computed-traits")?, None).await?;
                let mut rows = vec![vec![
                    "NAME".into(),
                    "AGGREGATION".into(),
                    "PROPERTY".into(),
                    "EVENT".into(),
                    "WINDOW".into(),
                    "REVISION".into(),
                    "BACKFILL".into(),
                ]];
                for t in r["computed_traits"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&t["name"]),
                        s(&t["aggregation"]),
                        s(&t["property"]),
                        short(&t["event"].to_string(), 60),
                        s(&t["window"]),
                        s(&t["revision"]),
                        backfill(&t["backfill"]),
                    ]);
                }
                print_table(&rows);
            }
            TraitsCmd::Show { name, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/computed-traits/{name}");
                let r = call(c.request(Method::GET, &path)?, None).await?;
                println!("{}", pretty(&r));
            }
            TraitsCmd::Create { file, conn } => {
                let c = Client::new(&conn)?;
                let body: Value = serde_json::from_str(&read_input(&file)?)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                let req = c.request(Method::POST, "/v1/computed-traits")?.json(&body);
                let r = call(req, None).await?;
                println!(
                    "created computed trait {} (revision {})",
                    s(&r["name"]),
                    s(&r["revision"])
                );
            }
            TraitsCmd::Update { name, file, conn } => {
                let c = Client::new(&conn)?;
                let body: Value = serde_json::from_str(&read_input(&file)?)
                    .with_context(|| format!("{} is not JSON", file.display()))?;
                let path = format!("/v1/computed-traits/{name}");
                let r = call(c.request(Method::PUT, &path)?.json(&body), None).await?;
                println!(
                    "updated computed trait {} (revision {})",
                    s(&r["name"]),
                    s(&r["revision"])
                );
            }
            TraitsCmd::Delete { name, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/computed-traits/{name}");
                call(c.request(Method::DELETE, &path)?, None).await?;
                println!("deleted computed trait {name}");
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::caret;

    #[test]
    fn the_caret_points_at_the_column() {
        let text = "trait plan = \"pro\"\n  and trait x in [1 2]";
        assert_eq!(
            caret(text, 2, 21, "expected `,` or `]`"),
            " 2 |   and trait x in [1 2]\n   |                     ^ expected `,` or `]`"
        );
        assert_eq!(caret("\tx", 1, 2, "n"), " 1 | \tx\n   | \t^ n");
        assert_eq!(caret("x", 3, 1, "n"), "");
    }
}
