//! `spoor bench audiences`: what computed traits and audiences cost, against references.
//!
//! 1. Processing: the processor alone (`spoor rebuild`) over the same shop log, without
//!    definitions and with N audiences + M computed traits defined.
//! 2. Backfill: one new audience added on top of the others (only it is recomputed from
//!    the log), then every definition recomputed (the state's definitions forgotten), against
//!    the brute-force reference (every person's events read back from the log and every
//!    rule evaluated from scratch).
//! 3. Window expiry: a live server, people entering a short-window audience; how late they
//!    leave after their window ends (timer lateness percentiles).
//! 4. Size and overlap of two large audiences on the membership bitmaps, against a
//!    brute-force intersection of member lists.

use super::audience_backfill::{self, NEW_RULE};
use super::shop::{Rng, Shop};
use anyhow::Context;
use clap::Args;
use serde_json::{json, Value};
use spoor_core::audience::{parse, AudienceDefinition, ComputedDefinition};
use spoor_core::computed::ComputedDef;
use spoor_core::ids::SourceId;

use spoor_server::config::{Config, Overrides};
use spoor_server::defs::DefsHandle;
use spoor_store::log::{EventLog, LogOptions, LogWriter, WriterOptions};
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args, Debug, Clone)]
pub struct AudienceBenchArgs {
    /// Shop events in the log.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: usize,
    /// Distinct people.
    #[arg(long, default_value_t = 100_000)]
    pub people: u64,
    /// Audiences defined.
    #[arg(long, default_value_t = 50)]
    pub audiences: usize,
    /// Computed traits defined.
    #[arg(long, default_value_t = 20)]
    pub traits: usize,
    /// Members of each of the two audiences whose size and overlap are measured.
    #[arg(long, default_value_t = 1_000_000)]
    pub bitmap_members: u64,
    /// People entering the short-window audience in the expiry phase.
    #[arg(long, default_value_t = 20_000)]
    pub expiring: u64,
    /// Phase 1 measures processing without and with the definitions this many times,
    /// alternating, and reports the median share: on a shared 2-core machine one run's
    /// speed varies by ±15 %, more than most changes move it.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Skip phases by number (e.g. `--skip 3`).
    #[arg(long)]
    pub skip: Vec<u8>,
    /// Keep the data directory of phases 1 and 2 here (log, definitions, state) instead of
    /// a temporary one, e.g. to profile `spoor rebuild` on it afterwards.
    #[arg(long)]
    pub keep: Option<std::path::PathBuf>,
    /// Phase 2 on a state prepared once in this directory and copied for each run: the log
    /// processed without definitions, then the audiences and traits backfilled onto it
    /// (rebuilt when `--events`, `--people`, `--audiences` or `--traits` differ). Makes
    /// phase 2 repeatable at 10 M events; remove the directory when done.
    #[arg(long)]
    pub reuse: Option<std::path::PathBuf>,
    /// Phase 2 measures only the new audience's backfill (no full recompute, no brute-force
    /// reference), e.g. to repeat it at 10 M events.
    #[arg(long)]
    pub new_only: bool,
}

pub(super) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

const CATS: &[&str] = &[
    "shoes",
    "jackets",
    "bags",
    "watches",
    "sunglasses",
    "shirts",
    "dresses",
    "sportswear",
];
const EVENTS: &[&str] = &["Product Viewed", "Product Added", "Order Completed"];

/// `n` computed traits over the shop vocabulary (counts, sums, maxima, lists, windows).
fn traits(n: usize) -> Vec<ComputedDef> {
    let windows = [None, Some("7d"), Some("30d"), Some("1d")];
    (0..n)
        .map(|i| {
            let ev = EVENTS[i % EVENTS.len()];
            let window = windows[i % windows.len()];
            let (agg, prop): (Value, Option<&str>) = match i % 5 {
                0 => (json!("count"), None),
                1 => (
                    json!("sum"),
                    Some(if ev == "Order Completed" {
                        "revenue"
                    } else {
                        "price"
                    }),
                ),
                2 => (
                    json!("max"),
                    Some(if ev == "Order Completed" {
                        "revenue"
                    } else {
                        "price"
                    }),
                ),
                3 => (json!({"distinct_list": {"limit": 10}}), Some("category")),
                _ => (json!({"most_frequent": {"top": 3}}), Some("category")),
            };
            let mut d = json!({"name": format!("t{i}"), "aggregation": agg, "event": {"name": ev}});
            if let Some(p) = prop {
                d["property"] = json!(p);
            }
            if let Some(w) = window {
                d["window"] = json!(w);
            }
            ComputedDef::from_json(&d.to_string()).expect("bench trait is valid")
        })
        .collect()
}

/// Which definitions [`rules`] and [`traits`] generate: part of what a prepared `--reuse`
/// state was built from, so bump it when they change (2: each kind's parameters vary).
pub(super) const RULES_VERSION: u32 = 2;

/// `n` audience rules a shop would define: interest by category, recency, frequency,
/// abandoned carts, funnels, computed-trait thresholds, exclusions, nesting.
///
/// The eight kinds take turns (`i % 8`), and each kind's parameters vary with `i / 8`, the
/// rule's round through them: with `i % 8` alone, every rule of a kind got the same
/// category, source or trait (a category picked by `i % 8` is fixed once the kind is), so
/// 50 rules were 13 distinct ones.
fn rules(n: usize, traits: usize) -> Vec<String> {
    const SOURCES: &[&str] = &["google", "newsletter", "facebook", "instagram", "bing"];
    (0..n)
        .map(|i| {
            let round = i / 8;
            let cat = CATS[round % CATS.len()];
            let src = SOURCES[round % SOURCES.len()];
            let t = if traits > 0 { format!("t{}", round % traits) } else { String::new() };
            match i % 8 {
                0 => format!(r#"performed "Product Viewed" where category = "{cat}" at least 3 times within 30d"#),
                1 => format!(r#"performed "Order Completed" within {}d"#, 1 + i % 14),
                2 => format!(r#"performed "Product Added" and not followed by "Order Completed" within {}h"#, 1 + round),
                3 => format!(r#"performed "Product Viewed" where category = "{cat}" then "Product Added" within 1d"#),
                4 if traits > 0 => format!("computed {t} exists and trait plan = \"member\""),
                5 => format!(r#"utm source = "{src}" and not performed "Order Completed" within {}d"#, 30 + round),
                6 if i > 1 => format!("in audience a{} and not in audience a{}", i - 6, i - 5),
                _ => format!(r#"device type = "mobile" and performed "Product Viewed" at least {} times within 7d"#, 1 + round),
            }
        })
        .collect()
}

/// Writes `events` shop events over `people` people, spread over the last 40 days, into
/// a new log in `dir/log`.
pub(super) fn write_log(dir: &Path, events: usize, people: u64) -> anyhow::Result<()> {
    let log = EventLog::open(LogOptions {
        dir: dir.join("log"),
        segment_bytes: 256 << 20,
    })?;
    let (writer, reader) = LogWriter::spawn(
        log,
        WriterOptions {
            queue_batches: 64,
            dedupe_window: Duration::from_secs(86_400),
            dedupe_max_keys: 20_000_000,
            max_group_bytes: 16 << 20,
            on_fsync: None,
        },
        Arc::new(now_ms),
    )?;
    let source = SourceId::parse("src_bench").context("source id")?;
    let mut shop = Shop::new(7, people);
    let batch = 500;
    let span = 40 * 86_400_000i64;
    let now = now_ms();
    let n_batches = events.div_ceil(batch);
    for i in 0..n_batches {
        let at = now - span + span * i as i64 / n_batches.max(1) as i64;
        let body = shop.batch_body(batch.min(events - i * batch), at);
        let recs = super::batch_records(
            &body,
            &source,
            chrono::DateTime::from_timestamp_millis(at).unwrap_or_default(),
        )?;
        writer.append_blocking(recs)?;
    }
    anyhow::ensure!(
        reader.last_seq() as usize == events,
        "log holds {}",
        reader.last_seq()
    );
    Ok(())
}

pub(super) fn define(cfg: &Config, audiences: usize, n_traits: usize) -> anyhow::Result<()> {
    let meta = Arc::new(spoor_store::meta::MetaStore::open(
        &cfg.storage.data_dir.join("meta"),
    )?);
    let defs = DefsHandle::open(meta)?;
    let ts = traits(n_traits);
    let rs = rules(audiences, n_traits);
    defs.update(|d| {
        d.audiences.clear();
        d.computed.clear();
        for t in ts {
            d.computed.insert(
                t.name.clone(),
                ComputedDefinition {
                    def: t,
                    description: String::new(),
                    created_ms: 0,
                    updated_ms: 0,
                    revision: 1,
                },
            );
        }
        for (i, r) in rs.iter().enumerate() {
            let rule = parse(r).map_err(|e| format!("{r}: {e}"))?;
            let name = format!("a{i}");
            d.audiences.insert(name.clone(), definition(name, rule));
        }
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Processes the whole log into a fresh state and returns events/s. `as_live`: publishing
/// every chunk to readers as the live processor does (the processing speed the target is
/// about); without, `spoor rebuild` itself, which has no readers.
pub(super) fn rebuild_speed(cfg: &Config, as_live: bool) -> anyhow::Result<f64> {
    let started = Instant::now();
    let n = spoor_server::processor::rebuild_with(cfg, as_live, |_, _| {})
        .map_err(|e| anyhow::anyhow!(e))?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

pub(super) fn rebuild(cfg: &Config) -> anyhow::Result<f64> {
    rebuild_speed(cfg, false)
}

/// Average stored size of a profile (its binary record), and of its audience/trait states,
/// over a sample.
fn profile_sizes(cfg: &Config) -> anyhow::Result<(usize, usize)> {
    use spoor_core::codec::{encode_activation, encode_profile};
    let store = spoor_store::state::StateStore::open(&cfg.storage.data_dir.join("state"))?;
    let sample = store.durable_reader()?.list_profiles(None, 1_000)?;
    let n = sample.len().max(1);
    let mut total = 0;
    let mut act = 0;
    for p in &sample {
        total += encode_profile(p).len();
        act += encode_activation(&p.activation).len();
    }
    Ok((total / n, act / n))
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[(((sorted.len() - 1) as f64) * p).round() as usize]
}

/// The median (the mean of the middle two for an even count).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

pub fn run(args: AudienceBenchArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let tmp = tempfile::tempdir()?;
    let dir = args.keep.clone().unwrap_or_else(|| tmp.path().join("data"));
    let cfg = Config::load(
        None,
        &Overrides {
            listen: None,
            data_dir: Some(dir.clone()),
        },
    )?;
    println!(
        "spoor bench audiences: {} shop events over {} people (40 days), {} audiences, {} computed traits",
        args.events, args.people, args.audiences, args.traits
    );

    if !args.skip.contains(&1) || (!args.skip.contains(&2) && args.reuse.is_none()) {
        let started = Instant::now();
        write_log(&dir, args.events, args.people)?;
        println!("  log written in {:.1} s", started.elapsed().as_secs_f64());
    }
    if !args.skip.contains(&1) {
        println!();
        println!("1. Processing (the processor alone over the log, as it runs live: identity + profiles [+ audiences], changes published to readers, checkpoints included)");
        let (mut bases, mut withs, mut shares) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=args.rounds.max(1) {
            define(&cfg, 0, 0)?;
            let base = rebuild_speed(&cfg, true)?;
            let (size, _) = profile_sizes(&cfg)?;
            define(&cfg, args.audiences, args.traits)?;
            let with = rebuild_speed(&cfg, true)?;
            let (with_size, act) = profile_sizes(&cfg)?;
            let share = 100.0 * with / base;
            if args.rounds > 1 {
                println!("  round {round}:");
            }
            println!("  without definitions     {base:.0} events/s (profiles {size} B stored)");
            println!(
                "  with {} audiences + {} traits   {with:.0} events/s = {share:.0}% of the speed without (target >= 75%); profiles {with_size} B stored, {act} B of it audience/trait state",
                args.audiences, args.traits,
            );
            bases.push(base);
            withs.push(with);
            shares.push(share);
        }
        if args.rounds > 1 {
            println!(
                "  median of {} rounds: {:.0} events/s without, {:.0} with, share {:.0}% (target >= 75%)",
                shares.len(),
                median(&mut bases),
                median(&mut withs),
                median(&mut shares)
            );
        }
        let rebuild_with = rebuild_speed(&cfg, false)?;
        define(&cfg, 0, 0)?;
        let rebuild_base = rebuild_speed(&cfg, false)?;
        define(&cfg, args.audiences, args.traits)?;
        println!(
            "  `spoor rebuild` (nothing reads the fresh state, nothing published): {rebuild_base:.0} events/s without definitions, {rebuild_with:.0} with ({:.0}%)",
            100.0 * rebuild_with / rebuild_base
        );
    }
    if !args.skip.contains(&2) {
        println!();
        println!(
            "2. Backfill: one new audience added to the {} audiences + {} traits (`{NEW_RULE}`), then everything recomputed",
            args.audiences, args.traits
        );
        if let Some(reuse) = &args.reuse {
            let copy = audience_backfill::reused_copy(reuse, &args)?;
            audience_backfill::backfill(&copy, args.events, args.new_only)?;
        } else if args.skip.contains(&1) {
            // The state phase 1 leaves: processed with the definitions.
            let started = Instant::now();
            define(&cfg, args.audiences, args.traits)?;
            rebuild(&cfg)?;
            println!(
                "  state built with the definitions in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            audience_backfill::backfill(&cfg, args.events, args.new_only)?;
        } else {
            audience_backfill::backfill(&cfg, args.events, args.new_only)?;
        }
    }
    if !args.skip.contains(&3) {
        println!();
        expiry(&tmp.path().join("expiry"), args.expiring)?;
    }
    if !args.skip.contains(&4) {
        println!();
        bitmaps(&tmp.path().join("bitmaps"), args.bitmap_members)?;
    }
    Ok(())
}

/// A live server: `n` people enter `performed "Ping" within 2s`; their exits come from
/// timers. Reports how late the timers fired.
fn expiry(dir: &Path, n: u64) -> anyhow::Result<()> {
    println!("3. Window expiry: {n} people enter `performed \"Ping\" within 2s` over ~2 s; they leave by timer");
    let cfg = Config::load(
        None,
        &Overrides {
            listen: None,
            data_dir: Some(dir.to_path_buf()),
        },
    )?;
    let (app, _) =
        spoor_server::AppState::open(cfg, Arc::new(spoor_core::SystemClock), Default::default())
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    app.defs
        .update(|d| {
            let rule = parse(r#"performed "Ping" within 2s"#).map_err(|e| e.to_string())?;
            d.audiences.insert(
                "ping".into(),
                AudienceDefinition {
                    name: "ping".into(),
                    description: String::new(),
                    rule,
                    created_ms: 0,
                    updated_ms: 0,
                    revision: 1,
                },
            );
            Ok(())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let source = SourceId::parse("src_bench").context("source id")?;
    let mut rng = Rng::new(3);
    let started = Instant::now();
    let per = 500u64;
    for chunk in 0..n.div_ceil(per) {
        let now = now_ms();
        let batch: Vec<Value> = (chunk * per..((chunk + 1) * per).min(n))
            .map(|i| json!({"type": "track", "userId": format!("p{i}-{}", rng.below(1000)), "event": "Ping",
                            "timestamp": chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().to_rfc3339()}))
            .collect();
        let body = serde_json::to_vec(&json!({ "batch": batch }))?;
        let recs = super::batch_records(&body, &source, chrono::Utc::now())?;
        app.writer.append_blocking(recs)?;
        std::thread::sleep(Duration::from_millis(2_000 / n.div_ceil(per).max(1)));
    }
    // Everyone must have left by ~2 s after the last event; wait for the samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    while (app.processor.status.timer_lateness.sorted().len() as u64) < n
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let late: Vec<f64> = app
        .processor
        .status
        .timer_lateness
        .sorted()
        .iter()
        .map(|&m| m as f64)
        .collect();
    println!(
        "  exits by timer          {} of {n} in {:.1} s; lateness p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms (target p99 <= 1000 ms)",
        late.len(),
        started.elapsed().as_secs_f64(),
        pct(&late, 0.5),
        pct(&late, 0.99),
        late.last().copied().unwrap_or(0.0)
    );
    let r = app.state.reader()?;
    println!("  members left            {}", r.audience_size("ping")?);
    app.processor.stop();
    Ok(())
}

/// Two audiences of `n` members each (half shared) on the bitmaps: size and overlap.
fn bitmaps(dir: &Path, n: u64) -> anyhow::Result<()> {
    use spoor_core::identity::ProfileId;
    println!("4. Size and overlap of two audiences of {n} members each (half of them in both)");
    let store = spoor_store::state::StateStore::open(dir)?;
    let mut state = store.processor_state(1 << 20)?;
    for i in 0..n {
        state.set_member("a", ProfileId::from_raw(1 + i * 2), true);
        state.set_member("b", ProfileId::from_raw(1 + n + i * 2), true);
    }
    state.checkpoint()?;
    let r = store.reader()?;
    let mut size = Vec::new();
    let mut overlap = Vec::new();
    let mut both = 0;
    for _ in 0..21 {
        let t = Instant::now();
        let s = r.audience_size("a")? + r.audience_size("b")?;
        size.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        both = r.audience_overlap("a", "b")?.2;
        overlap.push(t.elapsed().as_secs_f64() * 1e3);
        std::hint::black_box(s);
    }
    size.sort_by(f64::total_cmp);
    overlap.sort_by(f64::total_cmp);
    println!(
        "  size of both            median {:.2} ms  max {:.2} ms (target <= 10 ms)",
        pct(&size, 0.5),
        size.last().copied().unwrap_or(0.0)
    );
    println!(
        "  overlap ({both} in both) median {:.2} ms  max {:.2} ms (target <= 10 ms)",
        pct(&overlap, 0.5),
        overlap.last().copied().unwrap_or(0.0)
    );
    // Reference: the member lists intersected with a hash set.
    let a: Vec<u64> = r
        .audience_members("a", None, usize::MAX)?
        .iter()
        .map(|p| p.raw())
        .collect();
    let b: Vec<u64> = r
        .audience_members("b", None, usize::MAX)?
        .iter()
        .map(|p| p.raw())
        .collect();
    let t = Instant::now();
    let set: HashSet<u64> = a.iter().copied().collect();
    let brute = b.iter().filter(|x| set.contains(x)).count();
    println!(
        "  brute-force reference   {:.1} ms (hash-set intersection of the member lists, {brute} in both)",
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// A stored audience definition of `rule`, as the API would save it.
pub(super) fn definition(name: String, rule: spoor_core::audience::Rule) -> AudienceDefinition {
    AudienceDefinition {
        name,
        description: String::new(),
        rule,
        created_ms: 0,
        updated_ms: 0,
        revision: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench defines what it says: 50 valid rules, no two alike (each kind's category,
    /// source, window or trait varies with its round), reading traits that exist.
    #[test]
    fn the_benchs_rules_parse_and_differ() {
        let rs = rules(50, 20);
        let distinct: std::collections::BTreeSet<&String> = rs.iter().collect();
        assert_eq!(distinct.len(), 50, "{rs:#?}");
        for r in &rs {
            parse(r).unwrap_or_else(|e| panic!("{r}: {e}"));
        }
        let names: Vec<String> = traits(20).into_iter().map(|t| t.name).collect();
        for r in rs.iter().filter(|r| r.starts_with("computed")) {
            let t = r.split_whitespace().nth(1).unwrap_or_default();
            assert!(names.iter().any(|n| n == t), "{r}");
        }
    }

    /// `--rounds` reports the middle run (the mean of the middle two for an even count).
    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
