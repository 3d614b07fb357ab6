//! DELIVERY: destinations and their workers (see `docs/ARCHITECTURE.md`, "Destinations").
//!
//! - [`model`]: what a destination is, validated when saved.
//! - [`source`]: the outbox — the event log and the membership change feed, read from a
//!   destination's position, merged in source order, filtered by its subscriptions;
//!   [`profile_change`] derives "profile changed" items from the events.
//! - [`worker`]: one task per destination: send, retry in place, dead-letter, commit.
//! - [`webhook`], [`sign`], [`mapping`]: the HTTP request, its Standard Webhooks signature
//!   and the jq mapping of its body.
//! - [`store`]: definitions, positions, counters, dead letters and the delivery log.
//! - [`sink`]: one attempt per destination type: [`webhook`], [`postgres`] (sync into the
//!   user's database) and [`nats`] (JetStream publishing).

pub mod log_prune;
pub mod mapping;
pub mod model;
pub mod nats;
pub mod postgres;
pub mod postgres_tls;
pub mod profile_change;
pub mod sign;
pub mod sink;
pub mod source;
pub mod store;
pub mod webhook;
pub mod worker;

use model::Destination;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use store::{DeliveryState, DeliveryStore};
use tokio::sync::{watch, Mutex};
use tokio::task::JoinHandle;

struct Running {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The destinations of a server: their store, and their workers once [`start`](Self::start)
/// was called (by [`crate::serve`]).
pub struct Destinations {
    pub store: Arc<DeliveryStore>,
    /// One client (one connection pool) for all workers; redirects are not followed, so a
    /// POST is never silently turned into a GET.
    pub http: reqwest::Client,
    ctx: parking_lot::Mutex<Option<worker::Context>>,
    /// Held across the stop → change → start of one destination, so two API calls can never
    /// run two workers for it at once (which could send an item twice).
    workers: Mutex<HashMap<String, Running>>,
}

impl Destinations {
    pub fn open(dir: &Path) -> Result<Self, store::DeliveryStoreError> {
        let http = webhook::client(Vec::new())
            .map_err(|e| store::DeliveryStoreError(format!("http client: {e}")))?;
        Ok(Self {
            store: Arc::new(DeliveryStore::open(dir)?),
            http,
            ctx: parking_lot::Mutex::new(None),
            workers: Mutex::new(HashMap::new()),
        })
    }

    /// Starts a worker for every enabled destination.
    pub async fn start(&self, ctx: worker::Context) -> Result<(), store::DeliveryStoreError> {
        *self.ctx.lock() = Some(ctx);
        let mut w = self.workers.lock().await;
        for d in self.store.destinations()? {
            self.spawn(&mut w, d);
        }
        Ok(())
    }

    fn spawn(&self, w: &mut HashMap<String, Running>, d: Destination) {
        let Some(ctx) = self.ctx.lock().clone() else {
            return;
        };
        if !d.enabled {
            return;
        }
        let (stop, rx) = watch::channel(false);
        let name = d.name.clone();
        let task = tokio::spawn(worker::run(ctx, d, rx));
        w.insert(name, Running { stop, task });
    }

    /// Stops the destination's worker (waiting for it), runs `change` on the store, and
    /// starts a worker for what is then stored.
    pub async fn change<T>(
        &self,
        name: &str,
        change: impl FnOnce(&DeliveryStore) -> T,
    ) -> Result<T, store::DeliveryStoreError> {
        let mut w = self.workers.lock().await;
        if let Some(r) = w.remove(name) {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        let out = change(&self.store);
        if let Some(d) = self.store.destination(name)? {
            self.spawn(&mut w, d);
        }
        Ok(out)
    }

    /// Stops every worker and waits for them (at shutdown).
    pub async fn shutdown(&self) {
        let mut w = self.workers.lock().await;
        for (_, r) in w.drain() {
            let _ = r.stop.send(true);
            let _ = r.task.await;
        }
        *self.ctx.lock() = None;
    }

    /// A fresh delivery state that starts at the current end of both sources, so a new
    /// destination receives what happens from now on, not the whole history.
    pub fn state_at_end(
        log: &spoor_store::log::LogReader,
        state: &spoor_store::state::StateStore,
    ) -> Result<DeliveryState, spoor_store::StoreError> {
        let durable = state.durable_reader()?;
        let mut last_change = 0;
        loop {
            let page = durable.membership_changes(last_change, 10_000)?;
            match page.last() {
                Some((n, _)) => last_change = *n,
                None => break,
            }
        }
        Ok(DeliveryState {
            event_cursor: log.last_seq(),
            change_cursor: last_change,
            ..DeliveryState::default()
        })
    }
}

/// `head: cause: cause…` — an error with the causes beneath it (a refused connection, an
/// untrusted certificate…), each text once, so a destination's `last_error` names what to
/// fix. Client errors alone often say only "error sending request" or "db error".
pub(crate) fn error_chain(head: &str, e: &dyn std::error::Error) -> String {
    let mut out = head.to_owned();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !out.contains(&t) {
            out = format!("{out}: {t}");
        }
        src = inner.source();
    }
    out
}
