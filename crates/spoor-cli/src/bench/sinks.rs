//! The PostgreSQL and NATS phases of `spoor bench destinations` (run when
//! `--postgres-url` / `--nats-url` are given):
//!
//! 3. PostgreSQL sync: N sign-ups of N different people already processed; a `postgres`
//!    destination created with `start: beginning`; time until every event is applied —
//!    profile rows upserted per second (each batch is one transaction).
//! 4. NATS JetStream: the same events published by a `nats` destination (stream created by
//!    it); time until JetStream has acknowledged them all — messages per second.
//!
//! Both write into a schema / stream of their own, removed afterwards.

use super::destinations::Bench;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn signup(i: usize) -> Value {
    json!({"type": "track", "userId": format!("sink-user-{i}"), "event": "Signed Up",
           "messageId": format!("sink-{i}"),
           "properties": {"plan": if i.is_multiple_of(3) { "pro" } else { "free" }, "i": i}})
}

/// Waits until `name` has delivered `n` items; the time it took from `t`.
async fn wait_delivered(b: &Bench, name: &str, n: u64, t: Instant) -> anyhow::Result<f64> {
    loop {
        let v = b
            .admin(
                reqwest::Method::GET,
                &format!("/v1/destinations/{name}"),
                json!(null),
            )
            .await?;
        let st = &v["stats"];
        if st["delivered"].as_u64().unwrap_or(0) + st["dead_letters"].as_u64().unwrap_or(0) >= n {
            anyhow::ensure!(st["dead_letters"] == 0, "{name}: dead letters: {st}");
            return Ok(t.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            t.elapsed() < Duration::from_secs(600),
            "{name}: not finished in 600 s: {st}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ingests the sign-ups and waits until the processor has applied them.
pub(super) async fn prepare(b: &Bench, n: usize) -> anyhow::Result<()> {
    let events: Vec<Value> = (0..n).map(signup).collect();
    for chunk in events.chunks(500) {
        b.ingest(chunk.to_vec()).await?;
    }
    let last = b
        .admin(reqwest::Method::GET, "/v1/admin/processor", json!(null))
        .await?["ingested_seq"]
        .as_u64()
        .unwrap_or(0);
    b.admin(
        reqwest::Method::GET,
        &format!("/v1/admin/processor?wait_for={last}&timeout_ms=600000"),
        json!(null),
    )
    .await?;
    Ok(())
}

pub(super) async fn postgres(b: &Bench, url: &str, n: usize, batch: usize) -> anyhow::Result<()> {
    let schema = format!("bench_{}", &uuid_hex()[..12]);
    println!("3. PostgreSQL sync: {n} sign-ups (one profile each) into schema {schema}, batch_size {batch}.");
    let t = Instant::now();
    b.admin(
        reqwest::Method::POST,
        "/v1/destinations",
        json!({"name": "pg", "type": "postgres", "start": "beginning",
               "subscriptions": {"events": [{"name": "Signed Up"}]},
               "postgres": {"url": url, "schema": schema, "batch_size": batch}}),
    )
    .await?;
    let s = wait_delivered(b, "pg", n as u64, t).await?;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let rows: i64 = client
        .query_one(&format!("SELECT count(*) FROM \"{schema}\".profiles"), &[])
        .await?
        .get(0);
    println!(
        "   {:>8.0} profile rows/s ({rows} rows in {s:.2} s, {} transactions)",
        rows as f64 / s,
        n.div_ceil(batch)
    );
    client
        .batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE"))
        .await?;
    b.admin(reqwest::Method::DELETE, "/v1/destinations/pg", json!({}))
        .await?;
    Ok(())
}

pub(super) async fn nats(b: &Bench, url: &str, n: usize, batch: usize) -> anyhow::Result<()> {
    let id = uuid_hex();
    let stream = format!("BENCH_{}", &id[..12]);
    let prefix = format!("bench{}", &id[..12]);
    println!("4. NATS JetStream: {n} events published to stream {stream}, batch_size {batch}.");
    let t = Instant::now();
    b.admin(
        reqwest::Method::POST,
        "/v1/destinations",
        json!({"name": "bus", "type": "nats", "start": "beginning",
               "subscriptions": {"events": [{"name": "Signed Up"}]},
               "nats": {"url": url, "stream": stream, "subject_prefix": prefix,
                        "create_stream": true, "batch_size": batch}}),
    )
    .await?;
    let s = wait_delivered(b, "bus", n as u64, t).await?;
    let js = async_nats::jetstream::new(async_nats::connect(url).await?);
    let mut st = js.get_stream(&stream).await?;
    let stored = st.info().await?.state.messages;
    println!(
        "   {:>8.0} messages/s ({stored} stored in {s:.2} s, acked before each position commit)",
        stored as f64 / s
    );
    js.delete_stream(&stream).await?;
    b.admin(reqwest::Method::DELETE, "/v1/destinations/bus", json!({}))
        .await?;
    Ok(())
}

/// A name part unique to this run: the current time in nanoseconds, hex, reversed (so the
/// first 12 characters are the fast-changing ones).
fn uuid_hex() -> String {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{ns:032x}").chars().rev().collect()
}
