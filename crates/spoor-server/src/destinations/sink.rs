//! Where a worker sends: the one place that knows the destination types. Everything else
//! of delivery (positions, retries, dead letters, the delivery log, statistics) is the
//! worker's and the same for every type; a sink only turns a batch of items into one
//! attempt and its [`Outcome`].

use super::model::Destination;
use super::nats::NatsSink;
use super::postgres::PgSink;
use super::source::{Compiled, Item};
use super::webhook::{self, Outcome};
use super::worker::Context;

/// A destination's connection state (none for webhooks: they share the HTTP pool).
pub enum Sink {
    Webhook,
    Postgres(PgSink),
    Nats(NatsSink),
}

fn permanent(error: &str) -> Outcome {
    Outcome::Permanent {
        status: None,
        error: error.into(),
    }
}

impl Sink {
    pub fn new(d: &Destination) -> Self {
        match d.kind {
            super::model::DestinationType::Webhook => Self::Webhook,
            super::model::DestinationType::Postgres => Self::Postgres(PgSink::default()),
            super::model::DestinationType::Nats => Self::Nats(NatsSink::default()),
        }
    }

    /// One attempt at delivering `items` (the request / transaction / publishes `id`).
    pub async fn send(
        &mut self,
        ctx: &Context,
        d: &Destination,
        c: &Compiled,
        id: &str,
        items: &[Item],
    ) -> Outcome {
        match self {
            Self::Webhook => {
                let bodies: Vec<_> = items.iter().map(|i| i.body.clone()).collect();
                match webhook::body(d, c, &bodies) {
                    Ok(body) => webhook::send(&ctx.http, d, id, body).await,
                    Err(error) => permanent(&error),
                }
            }
            Self::Postgres(pg) => {
                let Some(s) = &d.postgres else {
                    return permanent("postgres settings missing");
                };
                let (state, d2, items2) = (ctx.state.clone(), d.clone(), items.to_vec());
                // Profile reads are redb reads: off the async runtime.
                let plan = tokio::task::spawn_blocking(move || {
                    super::postgres::plan(&d2, &state, &items2)
                })
                .await
                .map_err(|e| e.to_string())
                .and_then(|p| p);
                match plan {
                    Ok(plan) => pg.apply(s, &plan).await,
                    Err(e) => Outcome::Retry {
                        status: None,
                        error: format!("reading profiles: {e}"),
                        retry_after_ms: None,
                        latency_ms: 0,
                    },
                }
            }
            Self::Nats(n) => match &d.nats {
                Some(s) => n.publish(s, items).await,
                None => permanent("nats settings missing"),
            },
        }
    }
}
