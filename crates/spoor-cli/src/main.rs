//! `spoor`: one binary for the server, its admin client, bulk import and benchmarks.

mod bench;
mod client;
mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// mimalloc instead of the system allocator. With glibc malloc, the processor spent about
/// half its CPU in `malloc`/`free` at 300 k profiles (perf over `spoor bench e2e`: bin
/// sorting and consolidation after the millions of frees of a checkpointed layer, made on
/// another thread); thread-local free lists make those cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_e`, mimalloc.h; the
/// binding exports no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long (ms) memory freed back to mimalloc stays mapped before it is returned to the
/// OS. The default, 1 s, is shorter than the processor's cycle: each checkpoint frees the
/// profiles it replaced (on the freeing thread), mimalloc returned those pages to the OS a
/// second later, and the processor faulted them in again (zeroed by the kernel, 2 MiB at a
/// time with transparent huge pages): 147 k page faults and `clear_page_erms` as the
/// processor's top symbol in `perf` of `spoor rebuild` with 50 audiences and 20 computed
/// traits. At 10 s, 20 k page faults and the rebuild ran 17 % faster (23.5–24.0 k against
/// 20.1–20.5 k events/s, `spoor bench audiences --skip 2 --skip 3 --skip 4`, alternating).
/// Idle memory still goes back to the OS, ten seconds later.
const PURGE_DELAY_MS: std::ffi::c_long = 10_000;

/// Sets [`PURGE_DELAY_MS`] unless `MIMALLOC_PURGE_DELAY` is set (an operator's own choice
/// wins).
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one integer option of the allocator; mimalloc reads options at each
        // purge, so changing one while allocating is supported.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

#[derive(Parser)]
#[command(
    name = "spoor",
    version,
    about = "Spoor, the open-source customer data platform"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server (ingest API, admin API, metrics) on the embedded storage.
    Serve(commands::serve::ServeArgs),
    /// Print the default configuration file, every key commented.
    Config,
    /// Manage sources and their write keys (talks to a running server).
    #[command(subcommand)]
    Sources(commands::admin::SourcesCmd),
    /// Manage admin API tokens (talks to a running server).
    #[command(subcommand)]
    Tokens(commands::admin::TokensCmd),
    /// Read the event log: list, export as NDJSON, rejected events.
    #[command(subcommand)]
    Events(commands::admin::EventsCmd),
    /// Look at profiles: one person's card, identity and events (talks to a running server).
    #[command(subcommand)]
    Profiles(commands::state::ProfilesCmd),
    /// Define audiences, check and preview rules, read members, size and overlap.
    #[command(subcommand)]
    Audiences(commands::audiences::AudiencesCmd),
    /// Define computed traits (values derived from a person's events).
    #[command(subcommand)]
    Traits(commands::audiences::TraitsCmd),
    /// Send events, audience and profile changes to webhooks, PostgreSQL, NATS JetStream.
    #[command(subcommand)]
    Destinations(commands::destinations::DestinationsCmd),
    /// Re-derive profiles and the identity graph from the event log (server stopped).
    Rebuild(commands::state::RebuildArgs),
    /// Bulk-import Segment events (NDJSON) or records (CSV) through the import API.
    Import(commands::import::ImportArgs),
    /// Privacy: consent, access export (art. 15), erasure (art. 17), suppression, retention, audit.
    #[command(subcommand)]
    Privacy(commands::privacy::PrivacyCmd),
    /// Measure performance (prints figures; never part of the test suite).
    #[command(subcommand)]
    Bench(commands::bench::BenchCmd),
    /// Web UI accounts: create (admin, marketer, viewer), list, delete.
    #[command(subcommand)]
    Users(commands::users::UsersCmd),
    /// Start Spoor on a fresh data dir filled with a living demo shop (UI at /ui/).
    Demo(commands::demo::DemoArgs),
}

fn main() -> ExitCode {
    tune_allocator();
    // https for every HTTP client of the binary (admin commands, import, demo, benches).
    spoor_server::tls::install_crypto_provider();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => commands::serve::run(args),
        Command::Config => {
            print!("{}", spoor_server::config::DEFAULT_TOML);
            Ok(())
        }
        Command::Sources(c) => commands::admin::sources(c),
        Command::Tokens(c) => commands::admin::tokens(c),
        Command::Events(c) => commands::admin::events(c),
        Command::Import(a) => commands::import::run(a),
        Command::Profiles(c) => commands::state::profiles(c),
        Command::Audiences(c) => commands::audiences::audiences(c),
        Command::Traits(c) => commands::audiences::traits(c),
        Command::Destinations(c) => commands::destinations::run(c),
        Command::Rebuild(a) => commands::state::rebuild(a),
        Command::Bench(c) => commands::bench::run(c),
        Command::Privacy(c) => commands::privacy::run(c),
        Command::Users(c) => commands::users::run(c),
        Command::Demo(a) => commands::demo::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// Catches clashing argument names (e.g. a subcommand's `--url` beside the global
    /// server `--url`) before a user does.
    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    use super::*;

    /// The option set is mimalloc's purge delay: at its position mimalloc 3 reads 1000 by
    /// default (no other option defaults to 1000), and `tune_allocator` changes it.
    #[test]
    fn tune_allocator_sets_the_purge_delay() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("skipped: MIMALLOC_PURGE_DELAY is set in this environment");
            return;
        }
        // SAFETY: reads one integer option.
        let get = || unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000, "mimalloc's default purge delay");
        tune_allocator();
        assert_eq!(get(), PURGE_DELAY_MS);
    }
}
