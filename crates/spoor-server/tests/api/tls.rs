//! TLS to destinations. Webhooks over https: a receiver behind TLS with a certificate from
//! a private CA (`fixtures/tls/`); trusted through the destination's `ca_pem`, items arrive;
//! without it the system trust store refuses the certificate and the destination's last
//! error says so. PostgreSQL with `sslmode=require` against the local server, and NATS over
//! `tls://` against a nats-server started here with the fixture certificate. Bad TLS
//! settings are refused when saved.

use crate::common::{call, TestServer};
use crate::receiver::Receiver;
use crate::sinks::{identify, pg, service_url, unique, wait_tables};
use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

const CA: &str = include_str!("fixtures/tls/ca.pem");
const CERT: &str = include_str!("fixtures/tls/server.pem");
const KEY: &str = include_str!("fixtures/tls/server.key");

use crate::sinks::start;

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

/// `url` with more query parameters.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test]
async fn postgres_sync_over_tls_is_encrypted_and_a_given_ca_is_enforced() {
    let Some(url) = service_url("SPOOR_TEST_POSTGRES_URL") else {
        return;
    };
    let (schema, app) = (unique("t_"), unique("spoor_tls_"));
    let tls_url = with_params(&url, &format!("sslmode=require&application_name={app}"));
    let srv = start().await;
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "db", "type": "postgres",
                    "postgres": {"url": tls_url, "schema": schema}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    srv.send_processed(vec![identify("u1", "pro", 1)]).await;
    let c = pg(&url).await;
    wait_tables(&c, &schema, "1 profile", |(p, _)| p.len() == 1).await;
    // Every connection of the destination (named by application_name) is TLS.
    let rows = c
        .query(
            "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no connection named {app}");
    assert!(
        rows.iter().all(|r| r.get::<_, bool>(0)),
        "a plain connection"
    );

    // A CA that did not sign the server's certificate: refused, naming the reason.
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(json!({"name": "db2", "type": "postgres",
                    "postgres": {"url": tls_url, "schema": schema,
                                 "ca_pem": include_str!("fixtures/tls/ca.pem")}})),
    )
    .await;
    assert_ne!(s, 201, "{v}");
    assert!(v.to_string().contains("certificate"), "{v}");
}

/// nats-server, from PATH or where Debian installs it.
fn nats_server() -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> =
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()).collect();
    dirs.extend(["/usr/sbin", "/usr/local/bin", "/usr/bin"].map(Into::into));
    dirs.into_iter()
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
}

/// A JetStream nats-server on a free port that requires TLS with the fixture certificate.
struct TlsNats {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for TlsNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_tls_nats(bin: &std::path::Path) -> TlsNats {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/tls");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(dir.path())
        .arg("--tls")
        .arg("--tlscert")
        .arg(fixtures.join("server.pem"))
        .arg("--tlskey")
        .arg(fixtures.join("server.key"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start nats-server");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return TlsNats {
                child,
                port,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nats-server with TLS did not listen on {port} in 5 s");
}

#[tokio::test]
async fn nats_over_tls_trusts_the_given_ca_and_refuses_an_unknown_one() {
    let Some(bin) = nats_server() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "nats-server is not installed; CI must provide it"
        );
        eprintln!("skipping: nats-server is not installed (Debian package nats-server)");
        return;
    };
    let nats = start_tls_nats(&bin).await;
    let url = format!("tls://localhost:{}", nats.port);
    let srv = start().await;
    let nats_settings = |ca: Option<&str>| {
        let mut n = json!({"url": url, "stream": "TLS", "subject_prefix": "tls",
                           "create_stream": true});
        if let Some(ca) = ca {
            n["ca_pem"] = json!(ca);
        }
        n
    };
    // Not trusted by the system store: refused at creation, naming the certificate.
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(
            json!({"name": "bus0", "type": "nats", "subscriptions": {"events": [{}]},
                    "nats": nats_settings(None)}),
        ),
    )
    .await;
    assert_ne!(s, 201, "{v}");
    assert!(v.to_string().contains("certificate"), "{v}");
    let (s, v) = call(
        &srv,
        "POST",
        "/v1/destinations",
        Some(
            json!({"name": "bus", "type": "nats", "subscriptions": {"events": [{}]},
                    "nats": nats_settings(Some(CA))}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    srv.send_processed(vec![identify("u1", "pro", 1)]).await;

    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api/fixtures/tls");
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(fixtures.join("ca.pem"))
        .connect(url.as_str())
        .await
        .unwrap();
    let consumer = jetstream::new(client)
        .get_stream("TLS")
        .await
        .unwrap()
        .create_consumer(jetstream::consumer::pull::Config::default())
        .await
        .unwrap();
    let mut msgs = consumer.messages().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(30), msgs.next())
        .await
        .expect("no message over TLS in 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(m.subject.as_str(), "tls.events.identify");
}
