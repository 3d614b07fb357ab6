//! `spoor bench …`: performance figures. Benchmarks print; they never assert.

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCmd {}

pub fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd {}
}
