//! One destination's worker: a task of its own, so a slow or failing destination delays
//! only itself. It takes items in source order, sends them (one per request, or batched),
//! retries the head of its queue in place with backoff until it is delivered or its retry
//! budget is spent (then it becomes a dead letter), and commits its position with each
//! outcome. Items of one profile are therefore delivered in the order they happened.
//!
//! The worker owns its delivery state; the API changes it only while the worker is stopped
//! (see [`super::Destinations`]).

use super::model::Destination;
use super::sink::Sink;
use super::source::{self, Compiled, Item, Pos};
use super::store::{Commit, DeadLetter, DeliveryState, DeliveryStore, LogRow, Retrying};
use super::webhook::{self, Outcome};
use chrono::Utc;
use spoor_store::log::LogReader;
use spoor_store::state::StateStore;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// What every worker needs.
#[derive(Clone)]
pub struct Context {
    pub log: LogReader,
    pub state: StateStore,
    pub store: Arc<DeliveryStore>,
    pub http: reqwest::Client,
    /// Consent purposes and defaults: the gate of [`crate::privacy::enforce`].
    pub consent: Arc<spoor_core::consent::ConsentRules>,
    /// How long an idle worker waits before it looks for new items.
    pub poll: Duration,
}

enum Sent {
    /// Delivered or dead-lettered: move on.
    Done,
    /// Paused (failing beyond the grace period) or stopped: keep the position.
    Halt,
}

/// Runs until `stop` turns true.
pub async fn run(ctx: Context, dest: Destination, mut stop: watch::Receiver<bool>) {
    let name = dest.name.clone();
    let compiled = match Compiled::new(&dest) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(destination = %name, error = %e, "destination does not compile");
            return;
        }
    };
    let mut st = match ctx.store.state(&name) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(destination = %name, error = %e, "cannot read delivery state");
            return;
        }
    };
    let compiled = Arc::new(compiled);
    let mut sink = Sink::new(&dest);
    let dest = Arc::new(dest);
    tracing::info!(destination = %name, "delivery worker started");
    loop {
        if *stop.borrow() {
            break;
        }
        if st.paused.is_some() {
            let _ = stop.changed().await;
            continue;
        }
        match step(&ctx, &dest, &compiled, &mut sink, &mut st, &mut stop).await {
            Ok(true) => {}
            Ok(false) => {
                tokio::select! {
                    _ = tokio::time::sleep(ctx.poll) => {}
                    _ = stop.changed() => {}
                }
            }
            Err(e) => {
                tracing::error!(destination = %name, error = %e, "delivery step failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
    if let Err(e) = ctx.store.flush() {
        tracing::error!(destination = %name, error = %e, "cannot flush delivery state");
    }
    tracing::info!(destination = %name, "delivery worker stopped");
}

/// One round: replays first, then new items. `Ok(true)` when it did something.
async fn step(
    ctx: &Context,
    d: &Arc<Destination>,
    c: &Arc<Compiled>,
    sink: &mut Sink,
    st: &mut DeliveryState,
    stop: &mut watch::Receiver<bool>,
) -> Result<bool, String> {
    let replays = ctx.store.replays(&d.name, 1).map_err(|e| e.0)?;
    if let Some(r) = replays.into_iter().next() {
        let items: Vec<Item> = r
            .items
            .iter()
            .enumerate()
            .map(|(i, body)| Item {
                key: body["id"].as_str().unwrap_or(&r.key).to_owned(),
                body: body.clone(),
                profile: r.profiles.get(i).cloned().filter(|p| !p.is_empty()),
                kind: match body["kind"].as_str() {
                    Some("audience") => "audience",
                    Some("profile") => "profile",
                    Some("erasure") => "erasure",
                    _ => "event",
                },
                what: "replay".into(),
                source_ms: r.at.timestamp_millis(),
                pos: (st.event_cursor, st.change_cursor),
            })
            .collect();
        deliver(ctx, d, c, sink, st, &items, Some(r.id), stop).await?;
        return Ok(true);
    }
    let from: Pos = (st.event_cursor, st.change_cursor);
    let (ctx2, d2, c2) = (ctx.clone(), d.clone(), c.clone());
    let max = d.batch_size() * 16;
    let (items, end) = tokio::task::spawn_blocking(move || {
        source::gather(&d2, &c2, &ctx2.consent, &ctx2.log, &ctx2.state, from, max)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    if items.is_empty() {
        if end != from {
            (st.event_cursor, st.change_cursor) = end;
            ctx.store
                .commit(&d.name, st, Commit::default())
                .map_err(|e| e.0)?;
            return Ok(true);
        }
        return Ok(false);
    }
    for chunk in items.chunks(d.batch_size()) {
        if let Sent::Halt = deliver(ctx, d, c, sink, st, chunk, None, stop).await? {
            return Ok(false);
        }
    }
    if (st.event_cursor, st.change_cursor) != end {
        (st.event_cursor, st.change_cursor) = end;
        ctx.store
            .commit(&d.name, st, Commit::default())
            .map_err(|e| e.0)?;
    }
    Ok(true)
}

/// Sends `items` as one request until it is delivered, dead-lettered, the destination is
/// paused or the worker is stopped; commits the outcome with the position after `items`.
#[allow(clippy::too_many_arguments)]
async fn deliver(
    ctx: &Context,
    d: &Destination,
    c: &Compiled,
    sink: &mut Sink,
    st: &mut DeliveryState,
    items: &[Item],
    replay: Option<u64>,
    stop: &mut watch::Receiver<bool>,
) -> Result<Sent, String> {
    let keys: Vec<&str> = items.iter().map(|i| i.key.as_str()).collect();
    let id = webhook::request_id(&d.name, &keys);
    let bodies: Vec<_> = items.iter().map(|i| i.body.clone()).collect();
    let mut attempts = 0u32;
    let (status, error) = loop {
        attempts += 1;
        st.requests += 1;
        let outcome = tokio::select! {
            o = sink.send(ctx, d, c, &id, items) => o,
            _ = stop.changed() => return Ok(Sent::Halt),
        };
        match outcome {
            Outcome::Delivered {
                status, latency_ms, ..
            } => {
                let now = Utc::now();
                st.delivered += items.len() as u64;
                st.latency_last_ms = latency_ms;
                st.latency_max_ms = st.latency_max_ms.max(latency_ms);
                st.latency_sum_ms += latency_ms;
                st.successes += 1;
                st.delay_last_ms = items
                    .last()
                    .map_or(0, |i| (now.timestamp_millis() - i.source_ms).max(0) as u64);
                st.last_success_at = Some(now);
                st.failing_since_ms = None;
                st.retrying = None;
                let outcome = if replay.is_some() {
                    "replayed"
                } else {
                    "delivered"
                };
                let commit = Commit {
                    log: log_rows(d, items, outcome, status, attempts),
                    replays_done: replay.into_iter().collect(),
                    ..Commit::default()
                };
                advance(st, items, replay);
                ctx.store.commit(&d.name, st, commit).map_err(|e| e.0)?;
                return Ok(Sent::Done);
            }
            Outcome::Permanent { status, error } => break (status, error),
            Outcome::Retry {
                status,
                error,
                retry_after_ms,
                ..
            } => {
                let now = Utc::now();
                st.last_error = Some(error.clone());
                st.last_error_at = Some(now);
                let since = *st.failing_since_ms.get_or_insert(now.timestamp_millis());
                if attempts >= d.retry.max_attempts {
                    break (status, error);
                }
                st.retries += 1;
                let failing_ms = now.timestamp_millis() - since;
                if failing_ms >= (d.retry.pause_after_secs as i64).saturating_mul(1000) {
                    st.paused = Some(format!(
                        "paused after failing for {} s: {error}",
                        failing_ms / 1000
                    ));
                    st.retrying = None;
                    ctx.store
                        .commit(&d.name, st, Commit::default())
                        .map_err(|e| e.0)?;
                    tracing::warn!(destination = %d.name, %error, "destination paused");
                    return Ok(Sent::Halt);
                }
                let wait = d.retry.backoff_ms(attempts, retry_after_ms);
                st.retrying = Some(Retrying {
                    key: id.clone(),
                    attempts,
                    next_attempt_at: now + chrono::Duration::milliseconds(wait as i64),
                });
                ctx.store
                    .commit(&d.name, st, Commit::default())
                    .map_err(|e| e.0)?;
                tracing::debug!(destination = %d.name, %error, wait_ms = wait, "delivery will be retried");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(wait)) => {}
                    _ = stop.changed() => return Ok(Sent::Halt),
                }
            }
        }
    };
    // Dead letter: keep what would have been sent, move on.
    let now = Utc::now();
    st.dead += items.len() as u64;
    st.last_error = Some(error.clone());
    st.last_error_at = Some(now);
    st.retrying = None;
    st.last_dead_id += 1;
    let dead = DeadLetter {
        id: st.last_dead_id,
        key: id,
        items: bodies,
        profiles: items
            .iter()
            .map(|i| i.profile.clone().unwrap_or_default())
            .collect(),
        error,
        status,
        attempts,
        at: now,
    };
    let commit = Commit {
        durable: true,
        dead: vec![dead],
        log: log_rows(d, items, "dead_letter", status, attempts),
        replays_done: replay.into_iter().collect(),
    };
    advance(st, items, replay);
    ctx.store.commit(&d.name, st, commit).map_err(|e| e.0)?;
    Ok(Sent::Done)
}

fn advance(st: &mut DeliveryState, items: &[Item], replay: Option<u64>) {
    if replay.is_none() {
        if let Some(last) = items.last() {
            (st.event_cursor, st.change_cursor) = last.pos;
        }
    }
}

fn log_rows(
    d: &Destination,
    items: &[Item],
    outcome: &str,
    status: Option<u16>,
    attempts: u32,
) -> Vec<(String, LogRow)> {
    let at = Utc::now();
    items
        .iter()
        .filter_map(|i| {
            let p = i.profile.clone()?;
            Some((
                p,
                LogRow {
                    at,
                    destination: d.name.clone(),
                    key: i.key.clone(),
                    kind: i.kind.into(),
                    what: i.what.clone(),
                    outcome: outcome.into(),
                    status,
                    attempts,
                },
            ))
        })
        .collect()
}
