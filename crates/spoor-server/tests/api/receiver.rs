//! A real webhook receiver for the destination tests: an axum server on 127.0.0.1:0 that
//! records every request and answers what the test scripted for its path — failures, 429
//! with `Retry-After`, slow answers — then 200.
#![allow(dead_code)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// What to answer to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// 429 with `Retry-After: secs`.
    TooMany(u64),
    /// 200 after a delay.
    Slow(Duration),
}

#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub status: u16,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, k: &str) -> String {
        self.headers
            .get(k)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Inner {
    got: Vec<Got>,
    /// Per path: replies to give first, in order.
    script: HashMap<String, VecDeque<Reply>>,
    /// Per path: the reply once the script is used up (default 200).
    always: HashMap<String, Reply>,
}

#[derive(Clone)]
pub struct Receiver {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Self { url, inner }
    }

    /// The same receiver behind TLS (https), with the certificate and PKCS#8 key given.
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        spoor_server::tls::install_crypto_provider();
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let cfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/{*path}", post(handle))
            .with_state(inner.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://localhost:{}", l.local_addr().unwrap().port());
        let l = TlsListener {
            tcp: l,
            tls: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)),
        };
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        Self { url, inner }
    }

    pub fn script(&self, path: &str, replies: Vec<Reply>) {
        self.inner
            .lock()
            .script
            .insert(path.to_owned(), replies.into());
    }

    pub fn always(&self, path: &str, reply: Option<Reply>) {
        let mut g = self.inner.lock();
        match reply {
            Some(r) => g.always.insert(path.to_owned(), r),
            None => g.always.remove(path),
        };
    }

    /// Every request to `path`, in arrival order.
    pub fn got(&self, path: &str) -> Vec<Got> {
        let g = self.inner.lock();
        g.got.iter().filter(|r| r.path == path).cloned().collect()
    }

    /// Items accepted (2xx) on `path`: each request's object, or a batch's elements.
    pub fn delivered(&self, path: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self.got(path).into_iter().filter(|r| r.status < 300) {
            match r.json() {
                Value::Array(v) => out.extend(v),
                v => out.push(v),
            }
        }
        out
    }

    /// Waits (up to 30 s) until `path` has accepted `n` items.
    pub async fn wait_for(&self, path: &str, n: usize) -> Vec<Value> {
        for _ in 0..1200 {
            let d = self.delivered(path);
            if d.len() >= n {
                return d;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{path}: {} of {n} items arrived in 30 s",
            self.delivered(path).len()
        );
    }
}

/// A TCP listener that does the TLS handshake before handing the connection to axum; a
/// failed handshake (a client that does not trust the certificate) is dropped.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    tls: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((s, a)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(t) = self.tls.accept(s).await {
                return (t, a);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

async fn handle(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(path): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/{path}");
    let reply = {
        let mut g = inner.lock();
        let scripted = g.script.get_mut(&path).and_then(|q| q.pop_front());
        scripted
            .or_else(|| g.always.get(&path).cloned())
            .unwrap_or(Reply::Status(200))
    };
    let (status, resp) = match reply {
        Reply::Status(s) => (
            s,
            (StatusCode::from_u16(s).unwrap(), "answer").into_response(),
        ),
        Reply::TooMany(secs) => (
            429,
            (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "slow down",
            )
                .into_response(),
        ),
        Reply::Slow(d) => {
            tokio::time::sleep(d).await;
            (200, (StatusCode::OK, "ok").into_response())
        }
    };
    inner.lock().got.push(Got {
        path,
        headers,
        body,
        status,
    });
    resp
}
