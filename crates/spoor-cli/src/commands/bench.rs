//! `spoor bench …`: performance figures. Benchmarks print; they never assert.

use crate::bench::ingest::{self, IngestBenchArgs};
use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {
    /// HTTP ingest throughput and latency against a live server, plus the in-process reference.
    Ingest(IngestBenchArgs),
}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {
        BenchCmd::Ingest(a) => ingest::run(a),
    }
}
