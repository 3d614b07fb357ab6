//! Delivery survives crashes: a webhook receiver that goes down for a while (its port
//! closed) and answers slowly, `spoor serve` killed with `kill -9` while it delivers, then
//! restarted on the same data directory — and in the end every event and audience entry
//! arrives at both destinations (one item per request, and batched), none twice except
//! re-sends with the same idempotency key (a crash between the receiver's 200 and the
//! worker's commit), and each person's items in the order they happened.
//!
//! The schedule comes from a seed, printed at the start; `SPOOR_CRASH_SEED=<n>` replays it.

mod common;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{admin, crash_seed, free_port, send_until_acked, CrashDirs, Rng};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const ROUNDS: u64 = 8;
const USERS: u64 = 12;

/// (path, webhook-id, body) of every accepted request.
type Log = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A receiver on a fixed port that can be taken down (port closed) and brought back.
struct Receiver {
    port: u16,
    log: Log,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn accept(
    State(log): State<Log>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // Slow enough that a kill often lands while a request is in flight.
    let pause = body.len() as u64 % 15;
    tokio::time::sleep(Duration::from_millis(pause)).await;
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    log.lock().unwrap().push((path, id, v));
    StatusCode::OK
}

impl Receiver {
    fn new() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut r = Self {
            port: free_port(),
            log: Log::default(),
            rt,
            stop: None,
        };
        r.up();
        r
    }

    fn up(&mut self) {
        if self.stop.is_some() {
            return;
        }
        let app = Router::new()
            .route("/{path}", post(accept))
            .with_state(self.log.clone());
        let port = self.port;
        let listener = self.rt.block_on(async move {
            for _ in 0..100 {
                if let Ok(l) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                    return l;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("cannot bind the receiver port {port} again");
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.rt.spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        self.stop = Some(tx);
    }

    fn down(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Items accepted on `path`, in arrival order: (key, item).
    fn items(&self, path: &str) -> Vec<(String, Value)> {
        let log = self.log.lock().unwrap();
        let mut out = Vec::new();
        for (p, _, v) in log.iter().filter(|(p, _, _)| p == path) {
            let _ = p;
            match v {
                Value::Array(a) => out.extend(
                    a.iter()
                        .map(|i| (i["id"].as_str().unwrap_or_default().to_owned(), i.clone())),
                ),
                v => out.push((v["id"].as_str().unwrap_or_default().to_owned(), v.clone())),
            }
        }
        out
    }
}

#[test]
fn deliveries_survive_kill9_and_a_receiver_outage() {
    let seed = crash_seed("destination");
    let mut rng = Rng(seed);
    let dirs = CrashDirs::new();
    let env = [
        ("SPOOR_PROCESSOR__CHECKPOINT_MS", "200"),
        ("SPOOR_DESTINATIONS__POLL_MS", "10"),
    ];
    let mut receiver = Receiver::new();
    let mut server = dirs.serve("d0", &env);

    server.create_audience("buyers", "performed \"Bought\"");
    for (name, batch) in [("single", 1), ("batched", 10)] {
        let (s, v) = admin(
            &server,
            reqwest::Method::POST,
            "/v1/destinations",
            Some(json!({"name": name, "type": "webhook",
                    "subscriptions": {"events": [{}], "audiences": [{"audience": "buyers"}]},
                    "webhook": {"url": format!("http://127.0.0.1:{}/{name}", receiver.port),
                                "batch_size": batch, "timeout_ms": 2000},
                    "retry": {"max_attempts": 100000, "initial_backoff_ms": 20,
                              "max_backoff_ms": 300, "pause_after_secs": 86400}})),
        );
        assert_eq!(s, 201, "{v}");
    }

    let mut next_n: HashMap<String, u64> = HashMap::new();
    let mut sent: Vec<(String, String, u64)> = Vec::new(); // (messageId, user, n)
    let mut buyers: HashSet<String> = HashSet::new();
    for round in 0..ROUNDS {
        let count = rng.range(20, 80);
        let mut batch = Vec::new();
        for _ in 0..count {
            let user = format!("u{}", rng.range(0, USERS - 1));
            let n = next_n.entry(user.clone()).or_insert(0);
            *n += 1;
            let bought = rng.range(0, 9) == 0;
            let event = if bought { "Bought" } else { "Viewed" };
            if bought {
                buyers.insert(user.clone());
            }
            let mid = format!("r{round}-{user}-{n}");
            sent.push((mid.clone(), user.clone(), *n));
            batch.push(json!({"type": "track", "userId": user, "event": event,
                              "messageId": mid, "properties": {"n": *n}}));
        }
        send_until_acked(&server, &json!({ "batch": batch }));
        match rng.range(0, 2) {
            0 => receiver.down(),
            1 => receiver.up(),
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 400)));
        server.kill9();
        std::thread::sleep(Duration::from_millis(rng.range(0, 300)));
        server = dirs.serve(&format!("d{}", round + 1), &env);
    }
    receiver.up();

    let expected = sent.len() + buyers.len();
    for name in ["single", "batched"] {
        let path = name.to_string();
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let keys: HashSet<String> = receiver.items(&path).into_iter().map(|(k, _)| k).collect();
            if keys.len() >= expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} of {expected} distinct items arrived in 90 s\n{}",
                keys.len(),
                server.stderr()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let items = receiver.items(&path);
        let mut first: HashMap<String, Value> = HashMap::new();
        let mut order: Vec<Value> = Vec::new();
        let mut resent = 0;
        for (k, v) in items {
            match first.get(&k) {
                Some(prev) => {
                    assert_eq!(prev, &v, "{name}: key {k} re-sent with other content");
                    resent += 1;
                }
                None => {
                    first.insert(k, v.clone());
                    order.push(v);
                }
            }
        }
        assert_eq!(first.len(), expected, "{name}: distinct items");
        let got: HashSet<String> = order
            .iter()
            .filter(|v| v["kind"] == "event")
            .map(|v| {
                v["event"]["message"]["messageId"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        for (mid, _, _) in &sent {
            assert!(got.contains(mid), "{name}: event {mid} never arrived");
        }
        let entered: HashSet<String> = order
            .iter()
            .filter(|v| v["kind"] == "audience" && v["action"] == "entered")
            .map(|v| v["profile_id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(entered.len(), buyers.len(), "{name}: one entry per buyer");
        let mut last: HashMap<String, u64> = HashMap::new();
        for v in order.iter().filter(|v| v["kind"] == "event") {
            let user = v["event"]["message"]["userId"].as_str().unwrap().to_owned();
            let n = v["event"]["message"]["properties"]["n"].as_u64().unwrap();
            let prev = last.insert(user.clone(), n).unwrap_or(0);
            assert!(n > prev, "{name}: {user} item {n} arrived after {prev}");
        }
        eprintln!(
            "{name}: {} items delivered ({} events, {} audience entries), {resent} re-sent with the same key after crashes",
            first.len(),
            sent.len(),
            buyers.len()
        );
    }
    drop(server);
    receiver.down();
}
