//! `spoor users create|list|delete`: web UI accounts, over the admin API of a running server.

use crate::client::{Client, Conn};
use anyhow::{bail, Context};
use clap::Subcommand;
use reqwest::Method;
use serde_json::json;
use std::io::{BufRead, IsTerminal, Write};

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Create a web UI user. The password is asked for (twice) at a terminal, or read from
    /// standard input with --password-stdin (for scripts).
    Create {
        name: String,
        /// admin, marketer or viewer.
        #[arg(long, default_value = "viewer")]
        role: String,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        conn: Conn,
    },
    /// List web UI users and their roles.
    List {
        #[command(flatten)]
        conn: Conn,
    },
    /// Delete a web UI user and end their sessions (the last admin is kept).
    Delete {
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
}

/// Reads a line from the terminal without echoing it (`stty -echo`), so the password does
/// not stay on screen.
fn prompt_hidden(label: &str) -> anyhow::Result<String> {
    eprint!("{label}");
    std::io::stderr().flush()?;
    let stty = |arg: &str| {
        std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status()
    };
    let hidden = stty("-echo").is_ok_and(|s| s.success());
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if hidden {
        let _ = stty("echo");
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn read_password(from_stdin: bool) -> anyhow::Result<String> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("cannot read the password from standard input")?;
        let p = line.trim_end_matches(['\r', '\n']).to_owned();
        if p.is_empty() {
            bail!("--password-stdin: standard input has no password on its first line");
        }
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        bail!("no terminal to ask for the password; use --password-stdin");
    }
    let a = prompt_hidden("password: ")?;
    let b = prompt_hidden("again: ")?;
    if a != b {
        bail!("the two passwords differ");
    }
    Ok(a)
}

pub fn run(cmd: UsersCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            UsersCmd::Create {
                name,
                role,
                password_stdin,
                conn,
            } => {
                let password = read_password(password_stdin)?;
                let c = Client::new(&conn)?;
                let r = c
                    .send(
                        c.request(Method::POST, "/v1/admin/users")?
                            .json(&json!({"name": name, "role": role, "password": password})),
                    )
                    .await?;
                println!(
                    "created user {} ({})",
                    r["name"].as_str().unwrap_or(""),
                    r["role"].as_str().unwrap_or("")
                );
            }
            UsersCmd::List { conn } => {
                let c = Client::new(&conn)?;
                let r = c.send(c.request(Method::GET, "/v1/admin/users")?).await?;
                println!("{:<32} {:<10} CREATED", "NAME", "ROLE");
                for u in r["users"].as_array().into_iter().flatten() {
                    println!(
                        "{:<32} {:<10} {}",
                        u["name"].as_str().unwrap_or(""),
                        u["role"].as_str().unwrap_or(""),
                        u["created_at"].as_str().unwrap_or("")
                    );
                }
            }
            UsersCmd::Delete { name, conn } => {
                let c = Client::new(&conn)?;
                let path = format!("/v1/admin/users/{name}");
                c.send(c.request(Method::DELETE, &path)?).await?;
                println!("deleted user {name}");
            }
        }
        Ok(())
    })
}
