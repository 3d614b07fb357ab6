//! Webhooks over https: a receiver behind TLS with a certificate from a private CA
//! (`fixtures/tls/`). Trusted through the destination's `ca_pem`, items arrive; without it
//! the system trust store refuses the certificate and the destination's last error says
//! so; bad TLS settings are refused when saved.

use crate::common::{call, TestServer};
use crate::receiver::Receiver;
use serde_json::{json, Value};
use std::time::Duration;

const CA: &str = include_str!("fixtures/tls/ca.pem");
const CERT: &str = include_str!("fixtures/tls/server.pem");
const KEY: &str = include_str!("fixtures/tls/server.key");

async fn start() -> TestServer {
    TestServer::start_with(|c| {
        c.processor.checkpoint_ms = 100;
        c.destinations.poll_ms = 10;
    })
    .await
}

fn webhook(name: &str, url: String, ca: Option<&str>) -> Value {
    let mut w = json!({"url": url});
    if let Some(ca) = ca {
        w["ca_pem"] = json!(ca);
    }
    json!({
        "name": name, "type": "webhook",
        "subscriptions": {"events": [{"type": "track"}]},
        "webhook": w,
        "retry": {"max_attempts": 3, "initial_backoff_ms": 20, "max_backoff_ms": 50,
                  "pause_after_secs": 3600},
    })
}

async fn status(srv: &TestServer, name: &str) -> Value {
    let (s, v) = call(srv, "GET", &format!("/v1/destinations/{name}"), None).await;
    assert_eq!(s, 200, "{v}");
    v
}

#[tokio::test]
async fn https_webhooks_verify_the_certificate_against_the_trusted_cas() {
    let srv = start().await;
    let rx = Receiver::start_tls(CERT, KEY).await;
    assert!(rx.url.starts_with("https://localhost:"), "{}", rx.url);
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(webhook("private-ca", format!("{}/in", rx.url), Some(CA))),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(webhook("untrusted", format!("{}/untrusted", rx.url), None)),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = srv
        .post(
            "/v1/batch",
            &json!({"batch": [{"type": "track", "userId": "u1", "event": "Signed Up",
                              "messageId": "m1"}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    // Trusted through ca_pem: delivered over TLS.
    let got = rx.wait_for("/in", 1).await;
    assert_eq!(got[0]["event"]["message"]["event"], "Signed Up", "{got:?}");

    // Not trusted: nothing arrives, and the error names the certificate problem.
    let mut last = Value::Null;
    for _ in 0..600 {
        last = status(&srv, "untrusted").await;
        if last["stats"]["dead_letters"].as_u64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let err = last["stats"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("certificate"), "{last}");
    assert!(rx.got("/untrusted").is_empty());
}

#[tokio::test]
async fn bad_tls_settings_are_refused_when_saved() {
    let srv = start().await;
    for (body, want) in [
        (
            webhook("a", "https://localhost:1/x".into(), Some("not a pem")),
            "webhook.ca_pem",
        ),
        (
            webhook("b", "http://localhost:1/x".into(), Some(CA)),
            "https URLs only",
        ),
        (
            webhook("c", "ftp://localhost:1/x".into(), None),
            "not http or https",
        ),
    ] {
        let (s, v) = call(&srv, "POST", "/v1/destinations", Some(body)).await;
        assert_eq!(s, 400, "{v}");
        assert!(v.to_string().contains(want), "{want}: {v}");
    }
}
