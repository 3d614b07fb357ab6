//! `spoor bench …`: performance figures. Benchmarks print; they never assert.

use crate::bench::identity_quality;
use crate::bench::ingest::{self, IngestBenchArgs};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// HTTP ingest throughput and latency against a live server, plus the in-process reference.
    Ingest(IngestBenchArgs),
    /// Deterministic identity resolution scored on labelled record-linkage data (FEBRL,
    /// fake_1000, dedupe example): pairwise precision, recall and F1.
    IdentityQuality(identity_quality::Args),
    /// End to end: HTTP ingest + identity + profile update over 1M people, with Profile API
    /// lookups at a fixed rate meanwhile, plus the processor alone (rebuild) as the reference.
    E2e(crate::bench::e2e::E2eArgs),
    /// Computed traits and audiences: processing cost, backfill, window-expiry lateness,
    /// size and overlap on the membership bitmaps, each against a brute-force reference.
    Audiences(crate::bench::audiences::AudienceBenchArgs),
    /// Audience file export over HTTP: rows/s of full CSV/NDJSON exports and of a delta.
    Export(crate::bench::export::ExportBenchArgs),
    /// Webhook deliveries/s (single and batched) to a local receiver, and the delay a healthy
    /// destination sees while another one is failing.
    Destinations(crate::bench::destinations::DestinationBenchArgs),
    /// What privacy costs: consent in the processor, the PII rewrite, the Consent API, an
    /// access export.
    Privacy(crate::bench::privacy::PrivacyBenchArgs),
    /// Web UI render times (profile card, audience preview, overview…) with many profiles.
    Ui(crate::bench::ui::UiBenchArgs),
    /// Time to erase one person among many profiles and events, and to rewrite the
    /// databases afterwards.
    Erasure(crate::bench::erasure::ErasureBenchArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Ingest(a) => ingest::run(a),
        BenchCmd::IdentityQuality(a) => identity_quality::run(a),
        BenchCmd::E2e(a) => crate::bench::e2e::run(a),
        BenchCmd::Audiences(a) => crate::bench::audiences::run(a),
        BenchCmd::Export(a) => crate::bench::export::run(a),
        BenchCmd::Destinations(a) => crate::bench::destinations::run(a),
        BenchCmd::Privacy(a) => crate::bench::privacy::run(a),
        BenchCmd::Ui(a) => crate::bench::ui::run(a),
        BenchCmd::Erasure(a) => crate::bench::erasure::run(a),
    }
}
