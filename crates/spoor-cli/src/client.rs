//! A small client for a running Spoor server's admin API.

use anyhow::{bail, Context};
use clap::Args;
use serde_json::Value;

#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Base URL of the Spoor server.
    #[arg(
        long,
        env = "SPOOR_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub url: String,
    /// Admin API token (printed at first start, or from `spoor tokens create`).
    #[arg(long, env = "SPOOR_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(conn: &Conn) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base: conn.url.trim_end_matches('/').to_owned(),
            token: conn.token.clone(),
        })
    }

    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        let Some(token) = &self.token else {
            bail!("no admin token: pass --token or set SPOOR_TOKEN (the first start of `spoor serve` prints one)")
        };
        Ok(self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token))
    }

    /// Sends a request and returns the JSON answer, turning API errors into readable ones.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach spoor at {} — is `spoor serve` running?",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = body["message"].as_str().unwrap_or("no details");
            bail!("{status}: {msg}");
        }
        Ok(body)
    }
}
