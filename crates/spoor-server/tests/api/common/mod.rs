//! A real server on 127.0.0.1:0 with a temporary data directory, and small HTTP helpers.
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;
use spoor_server::config::{Config, Overrides};
use spoor_server::{AppState, InitSecrets};
use std::io::Write;
use std::sync::Arc;

pub const WRITE_KEY: &str = "test-write-key";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
pub const ADMIN_PASSWORD: &str = "test-admin-password";

pub struct TestServer {
    pub url: String,
    pub app: AppState,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, tweak).await
    }

    pub async fn start_in(dir: tempfile::TempDir, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start_clocked(dir, tweak, Arc::new(spoor_core::SystemClock)).await
    }

    /// A server whose notion of "now" is `clock` (tests that move time).
    pub async fn start_clocked(
        dir: tempfile::TempDir,
        tweak: impl FnOnce(&mut Config),
        clock: Arc<dyn spoor_core::Clock>,
    ) -> Self {
        let mut cfg = Config::load(
            None,
            &Overrides {
                listen: Some("127.0.0.1:0".into()),
                data_dir: Some(dir.path().to_path_buf()),
            },
        )
        .unwrap();
        tweak(&mut cfg);
        let init = InitSecrets {
            write_key: Some(WRITE_KEY.into()),
            admin_token: Some(ADMIN_TOKEN.into()),
            admin_password: Some(ADMIN_PASSWORD.into()),
        };
        let (app, _) = AppState::open(cfg, clock, init)
            .unwrap_or_else(|e| panic!("cannot open the data directory: {e:?}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let served = app.clone();
        let task = tokio::spawn(async move {
            spoor_server::serve(served, listener, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self {
            url,
            app,
            http: spoor_server::tls::http_client().build().unwrap(),
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Stops the server and returns its data directory (to restart on it).
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        // Connection tasks may still hold the state for a moment after shutdown; the data
        // directory can only be reopened once the last handle (and so the stores) is gone.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.app.handles() > 1 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(
            self.app.handles(),
            1,
            "the server state is still in use after shutdown"
        );
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        drop(self);
        dir
    }

    pub fn basic(key: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
        )
    }

    /// POSTs raw bytes with the given headers; returns status and JSON body.
    pub async fn post_raw(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.post(format!("{}{path}", self.url)).body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let v = resp.json().await.unwrap_or(Value::Null);
        (status, v, h)
    }

    /// POSTs JSON authenticated with the default write key.
    /// Ingests `events` (200 expected) and waits until the processor has applied them all.
    pub async fn send_processed(&self, events: Vec<Value>) {
        let (s, v) = self
            .post("/v1/batch", &serde_json::json!({ "batch": events }))
            .await;
        assert_eq!(s, 200, "{v}");
        let last = self.app.reader.last_seq();
        let (_, v) = self
            .admin_get(&format!(
                "/v1/admin/processor?wait_for={last}&timeout_ms=20000"
            ))
            .await;
        assert_eq!(v["processed_seq"], last, "{v}");
    }

    /// Changes the audience and computed-trait definitions and waits (10 s at most) until
    /// the processor has applied them (backfill included).
    pub async fn define(&self, f: impl FnOnce(&mut spoor_core::audience::Definitions)) {
        let d = self
            .app
            .defs
            .update(|d| {
                f(d);
                Ok(())
            })
            .unwrap();
        for _ in 0..400 {
            if self.app.defs.applied_revision().unwrap() >= d.revision {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("definitions not applied in 10 s");
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let auth = Self::basic(WRITE_KEY);
        let (s, v, _) = self
            .post_raw(
                path,
                &[
                    ("authorization", &auth),
                    ("content-type", "application/json"),
                ],
                body.to_string().into_bytes(),
            )
            .await;
        (s, v)
    }

    pub async fn admin_get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}{path_and_query}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let s = resp.status().as_u16();
        (s, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every stored event, oldest first.
    pub async fn events(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let q = match &cursor {
                Some(c) => format!("/v1/admin/events?order=asc&limit=1000&cursor={c}"),
                None => "/v1/admin/events?order=asc&limit=1000".to_string(),
            };
            let (s, v) = self.admin_get(&q).await;
            assert_eq!(s, 200, "{v}");
            out.extend(v["events"].as_array().unwrap().iter().cloned());
            match v["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return out,
            }
        }
    }

    pub async fn rejections(&self) -> Vec<Value> {
        let (s, v) = self
            .admin_get("/v1/admin/rejections?limit=1000&order=asc")
            .await;
        assert_eq!(s, 200, "{v}");
        v["rejections"].as_array().unwrap().clone()
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// An admin-token API call: `(status, JSON body or null)`.
pub async fn call(srv: &TestServer, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut req = srv
        .http
        .request(method, format!("{}{path}", srv.url))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let s = resp.status().as_u16();
    (s, resp.json().await.unwrap_or(Value::Null))
}
