//! Sending one request to a webhook: the body (mapped items), the headers (custom, auth,
//! Standard Webhooks signature, idempotency key) and the classification of the answer into
//! delivered / retry (with the receiver's `Retry-After`) / permanent failure.

use super::model::{Destination, WebhookAuth, WebhookSettings};
use super::sign;
use super::source::Compiled;
use serde_json::Value;
use std::time::{Duration, Instant};

/// The most response body kept (for `destinations test` and error messages).
const MAX_RESPONSE: usize = 4096;

/// What one attempt came to.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered {
        /// The HTTP status (webhooks only).
        status: Option<u16>,
        latency_ms: u64,
        body: String,
    },
    /// Try again later (network error, timeout, 408, 429, 5xx); `retry_after_ms` when the
    /// receiver said when.
    Retry {
        status: Option<u16>,
        error: String,
        retry_after_ms: Option<u64>,
        latency_ms: u64,
    },
    /// Sending again cannot help (other 4xx, redirects, a mapping that fails).
    Permanent { status: Option<u16>, error: String },
}

/// The request body of some items: each mapped (if the destination has a mapping), sent as
/// one object when the destination sends one item per request, else as a JSON array.
pub fn body(d: &Destination, c: &Compiled, items: &[Value]) -> Result<Vec<u8>, String> {
    let mut mapped = Vec::with_capacity(items.len());
    for it in items {
        mapped.push(match &c.mapping {
            Some(m) => m.map_one(it).map_err(|e| format!("mapping: {e}"))?,
            None => it.clone(),
        });
    }
    let v = if d.batch_size() == 1 && mapped.len() == 1 {
        mapped.pop().unwrap_or(Value::Null)
    } else {
        Value::Array(mapped)
    };
    serde_json::to_vec(&v).map_err(|e| e.to_string())
}

/// The `webhook-id` of a request: the item's key, or for a batch a key derived from all
/// of its items' keys (each item also carries its own `id`).
pub fn request_id(dest: &str, keys: &[&str]) -> String {
    match keys {
        [one] => (*one).to_owned(),
        many => super::source::key(dest, "batch", &many.join(",")),
    }
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<u64> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(ms.max(0) as u64)
}

/// Builds the shared client every webhook uses (one connection pool); redirects are not
/// followed, so a POST is never silently turned into a GET.
pub fn client(extra_roots: Vec<reqwest::Certificate>) -> reqwest::Result<reqwest::Client> {
    let mut b = crate::tls::http_client().redirect(reqwest::redirect::Policy::none());
    for c in extra_roots {
        b = b.add_root_certificate(c);
    }
    b.build()
}

/// The client for a destination: the shared one, or — for a destination that trusts an
/// extra CA — one built for that CA, kept for the next requests (its pool is reused).
fn client_for(shared: &reqwest::Client, w: &WebhookSettings) -> Result<reqwest::Client, String> {
    static WITH_CA: std::sync::LazyLock<
        parking_lot::Mutex<std::collections::HashMap<String, reqwest::Client>>,
    > = std::sync::LazyLock::new(Default::default);
    let Some(pem) = &w.ca_pem else {
        return Ok(shared.clone());
    };
    let mut m = WITH_CA.lock();
    if let Some(c) = m.get(pem) {
        return Ok(c.clone());
    }
    let c = client(crate::tls::parse_ca_pem(pem)?)
        .map_err(|e| format!("cannot build a TLS client for ca_pem: {e}"))?;
    m.insert(pem.clone(), c.clone());
    Ok(c)
}

/// Sends one request; never panics on what the receiver does.
pub async fn send(http: &reqwest::Client, d: &Destination, id: &str, body: Vec<u8>) -> Outcome {
    let Some(w) = &d.webhook else {
        return Outcome::Permanent {
            status: None,
            error: "not a webhook destination".into(),
        };
    };
    let http = match client_for(http, w) {
        Ok(c) => c,
        Err(error) => {
            return Outcome::Permanent {
                status: None,
                error,
            }
        }
    };
    let key = match sign::secret_key(&d.secret) {
        Some(k) => k,
        None => {
            return Outcome::Permanent {
                status: None,
                error: "the destination's secret is not valid".into(),
            }
        }
    };
    let ts = chrono::Utc::now().timestamp();
    let sig = sign::signature(&key, id, ts, &body);
    let mut req = http
        .post(&w.url)
        .timeout(Duration::from_millis(w.timeout_ms))
        .header("content-type", "application/json")
        .header("user-agent", concat!("spoor/", env!("CARGO_PKG_VERSION")))
        .header("webhook-id", id)
        .header("webhook-timestamp", ts.to_string())
        .header("webhook-signature", sig)
        .header("idempotency-key", id);
    for (k, v) in &w.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    req = match &w.auth {
        Some(WebhookAuth::Bearer(t)) => req.bearer_auth(t),
        Some(WebhookAuth::Basic { username, password }) => req.basic_auth(username, Some(password)),
        None => req,
    };
    let started = Instant::now();
    let resp = match req.body(body).send().await {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                status: None,
                error: describe(&e),
                retry_after_ms: None,
                latency_ms: started.elapsed().as_millis() as u64,
            }
        }
    };
    let status = resp.status().as_u16();
    let after = retry_after(resp.headers());
    let text = read_capped(resp).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    match status {
        200..=299 => Outcome::Delivered {
            status: Some(status),
            latency_ms,
            body: text,
        },
        408 | 429 | 500..=599 => Outcome::Retry {
            status: Some(status),
            error: format!("HTTP {status}: {}", snippet(&text)),
            retry_after_ms: after,
            latency_ms,
        },
        _ => Outcome::Permanent {
            status: Some(status),
            error: format!("HTTP {status}: {}", snippet(&text)),
        },
    }
}

/// Names the cause of a failed request, including the underlying one (refused connection,
/// DNS, an untrusted certificate…), so the destination's `last_error` says what to fix.
fn describe(e: &reqwest::Error) -> String {
    let head = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        e.to_string()
    };
    super::error_chain(&head, e)
}

async fn read_capped(mut resp: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_RESPONSE.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_RESPONSE {
            break;
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn snippet(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    t.trim().to_owned()
}
