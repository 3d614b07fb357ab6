//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub status: u16,
}

/// A route template alone (`/v1/profiles/{pref}`): the latency histograms are per route
/// only, so their series stay few (a status label would multiply the buckets).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOnly {
    pub route: String,
}

/// The buckets of [`Metrics::request_duration`]: 25 µs to ~0.8 s, doubling.
fn duration_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.000_025, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    pub r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
    /// `delivered`, `dead_letters`, `retries`, `requests`, `events_behind`, `paused`.
    pub what: String,
}

/// Every metric Spoor exports. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RouteLabels, Counter>,
    /// Time the server spends on a request, per route: from when the router hands it to
    /// the route (after the request head is parsed) until the response head is ready,
    /// the audit record included. Not in it: waiting for a runtime thread, the network,
    /// and streaming a response body.
    pub request_duration: Family<RouteOnly, Histogram, fn() -> Histogram>,
    pub request_seconds: Histogram,
    pub events_accepted: Family<TypeLabels, Counter>,
    pub events_rejected: Family<ReasonLabels, Counter>,
    pub events_duplicate: Counter,
    pub ingest_bytes: Counter,
    pub fsync_seconds: Histogram,
    pub log_size_bytes: Gauge<u64, AtomicU64>,
    pub log_last_seq: Gauge<u64, AtomicU64>,
    pub processed_seq: Gauge<u64, AtomicU64>,
    pub durable_seq: Gauge<u64, AtomicU64>,
    pub processor_lag: Gauge<u64, AtomicU64>,
    pub live_profiles: Gauge<u64, AtomicU64>,
    /// Per destination, read from the delivery store when `/metrics` is scraped.
    pub destinations: Family<DestinationLabels, Gauge<u64, AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("spoor");
        let requests = Family::<RouteLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let request_duration =
            Family::<RouteOnly, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_buckets,
            );
        registry.register(
            "http_request_duration_seconds",
            "Time the server spent on a request, by route (from routing to the response head, audit included)",
            request_duration.clone(),
        );
        let request_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 18));
        registry.register(
            "ingest_request_duration_seconds",
            "Ingest request latency",
            request_seconds.clone(),
        );
        let events_accepted = Family::<TypeLabels, Counter>::default();
        registry.register(
            "events_accepted",
            "Events durably appended to the log, by type",
            events_accepted.clone(),
        );
        let events_rejected = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "events_rejected",
            "Events rejected at the door, by reason",
            events_rejected.clone(),
        );
        let events_duplicate = Counter::default();
        registry.register(
            "events_duplicate",
            "Events dropped as duplicates (messageId seen within the window)",
            events_duplicate.clone(),
        );
        let ingest_bytes = Counter::default();
        registry.register(
            "ingest_bytes",
            "Request body bytes received by ingest, after decompression",
            ingest_bytes.clone(),
        );
        let fsync_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "log_fsync_duration_seconds",
            "Duration of event-log fsyncs (one per group commit)",
            fsync_seconds.clone(),
        );
        let log_size_bytes = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "log_size_bytes",
            "Size of the event log on disk",
            log_size_bytes.clone(),
        );
        let log_last_seq = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "log_last_seq",
            "Sequence number of the newest durable event",
            log_last_seq.clone(),
        );
        let processed_seq = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "processor_processed_seq",
            "Last event-log seq whose effects are applied to derived state (visible to reads)",
            processed_seq.clone(),
        );
        let durable_seq = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "processor_durable_seq",
            "Last event-log seq whose effects are checkpointed to the state store",
            durable_seq.clone(),
        );
        let processor_lag = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "processor_lag_events",
            "Events ingested but not yet applied to profiles",
            processor_lag.clone(),
        );
        let live_profiles = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "profiles_live",
            "Live (unmerged) profiles",
            live_profiles.clone(),
        );
        let destinations = Family::<DestinationLabels, Gauge<u64, AtomicU64>>::default();
        registry.register(
            "destination",
            "Per destination: items delivered, dead letters, retries, requests, events not yet handled, paused (1)",
            destinations.clone(),
        );
        Self {
            registry,
            destinations,
            processed_seq,
            durable_seq,
            processor_lag,
            live_profiles,
            requests,
            request_duration,
            request_seconds,
            events_accepted,
            events_rejected,
            events_duplicate,
            ingest_bytes,
            fsync_seconds,
            log_size_bytes,
            log_last_seq,
        }
    }
}

impl Metrics {
    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
