//! Phase 2 of `spoor bench audiences`: the backfill of one new audience added to the N
//! audiences + M computed traits, then everything recomputed, against the brute-force
//! reference.
//!
//! At 10 M events, building the state the backfill starts from (processing with the
//! definitions, ~14 k events/s) takes longer than everything else, so `--reuse DIR` builds
//! it once — the log processed without definitions (several times faster), then the
//! definitions added and backfilled onto it, as a user who defines audiences after
//! ingesting would have it — and every run backfills a fresh copy of it (the log is shared,
//! a backfill does not write it).

use super::audiences::{define, definition, now_ms, rebuild, write_log, AudienceBenchArgs};
use spoor_core::audience::{parse, EventFact};
use spoor_server::config::{Config, Overrides};
use spoor_server::defs::DefsHandle;
use spoor_server::processor::{activate::Engine, backfill};
use spoor_store::log::{EventLog, LogOptions};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

/// The audience added in phase 2: selective, like most new audiences (one event name, a
/// property condition, a window).
pub(super) const NEW_RULE: &str =
    r#"performed "Order Completed" where revenue >= 150 at least 2 times within 30d"#;

fn config(dir: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(
        None,
        &Overrides {
            listen: None,
            data_dir: Some(dir.to_path_buf()),
        },
    )?)
}

/// What the prepared state in `--reuse DIR` was built from; a different request, or a
/// binary writing another state format, rebuilds it.
fn recipe(args: &AudienceBenchArgs) -> String {
    format!(
        "events={} people={} audiences={} traits={} rules={} state_format={}\n",
        args.events,
        args.people,
        args.audiences,
        args.traits,
        super::audiences::RULES_VERSION,
        spoor_store::state::STATE_FORMAT
    )
}

/// What the prepared log was written from: when only the rest of the recipe differs, the
/// log (minutes to write at 10 M events) is kept.
fn log_recipe(args: &AudienceBenchArgs) -> String {
    format!("events={} people={}\n", args.events, args.people)
}

/// The state phase 2 starts from, built once in `reuse/base`, copied to `reuse/run` (log
/// linked, state and definitions copied): returns the configuration of the copy.
pub(super) fn reused_copy(reuse: &Path, args: &AudienceBenchArgs) -> anyhow::Result<Config> {
    let base = reuse.join("base");
    let ready = reuse.join("READY");
    if std::fs::read_to_string(&ready).ok().as_deref() != Some(recipe(args).as_str()) {
        let _ = std::fs::remove_file(&ready);
        let log_ready = reuse.join("LOG_READY");
        let keep_log =
            std::fs::read_to_string(&log_ready).ok().as_deref() == Some(log_recipe(args).as_str());
        for part in ["state", "meta", "state.rebuild"] {
            if base.join(part).exists() {
                std::fs::remove_dir_all(base.join(part))?;
            }
        }
        if !keep_log {
            let _ = std::fs::remove_file(&log_ready);
            if base.exists() {
                std::fs::remove_dir_all(&base)?;
            }
        }
        std::fs::create_dir_all(&base)?;
        let cfg = config(&base)?;
        if keep_log {
            println!("  reusing the log written in {}", base.display());
        } else {
            let t = Instant::now();
            write_log(&base, args.events, args.people)?;
            std::fs::write(&log_ready, log_recipe(args))?;
            println!("  log written in {:.1} s", t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let rate = rebuild(&cfg)?;
        println!(
            "  processed without definitions in {:.1} s ({rate:.0} events/s)",
            t.elapsed().as_secs_f64()
        );
        define(&cfg, args.audiences, args.traits)?;
        let t = Instant::now();
        let st = backfill_once(&cfg)?;
        println!(
            "  {} audiences + {} traits backfilled onto it in {:.1} s ({} people evaluated, {} rewritten)",
            args.audiences,
            args.traits,
            t.elapsed().as_secs_f64(),
            st.evaluated,
            st.written
        );
        std::fs::write(&ready, recipe(args))?;
    } else {
        println!(
            "  reusing the state prepared in {} ({})",
            base.display(),
            recipe(args).trim()
        );
        // Opened once, so that an upgrade of the state's tables (by a newer binary) is
        // made here, not in every copy's timed run.
        drop(spoor_store::state::StateStore::open(&base.join("state"))?);
    }
    let run = reuse.join("run");
    if run.exists() {
        std::fs::remove_dir_all(&run)?;
    }
    std::fs::create_dir_all(&run)?;
    let t = Instant::now();
    copy_dir(&base.join("state"), &run.join("state"))?;
    copy_dir(&base.join("meta"), &run.join("meta"))?;
    #[cfg(unix)]
    std::os::unix::fs::symlink(std::fs::canonicalize(base.join("log"))?, run.join("log"))?;
    #[cfg(not(unix))]
    copy_dir(&base.join("log"), &run.join("log"))?;
    println!(
        "  state copied for this run in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    config(&run)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let dest = to.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest)?;
            // Written out before the run starts: gigabytes of dirty pages still being
            // written back would compete with the backfill's reads for the disk.
            std::fs::File::open(&dest)?.sync_all()?;
        }
    }
    Ok(())
}

/// Opens the data directory and backfills its current definitions once.
fn backfill_once(cfg: &Config) -> anyhow::Result<backfill::Stats> {
    let dir = &cfg.storage.data_dir;
    let log = EventLog::open(LogOptions {
        dir: dir.join("log"),
        segment_bytes: cfg.storage.segment_bytes,
    })?;
    let store = spoor_store::state::StateStore::open(&dir.join("state"))?;
    let mut state = store.processor_state(cfg.processor.cache_entries)?;
    let defs = DefsHandle::open(Arc::new(spoor_store::meta::MetaStore::open(
        &dir.join("meta"),
    )?))?;
    let engine = Engine::new(defs, Arc::new(now_ms));
    let limits = backfill::Limits::new(&cfg.processor);
    Ok(backfill::run(
        &mut state,
        &store,
        &log.reader(),
        &engine,
        &limits,
    )?)
}

/// Prints one backfill's figures and where its time went.
fn line(label: &str, events: usize, took: f64, st: &backfill::Stats) {
    println!(
        "  {label:<23} {took:.1} s = {:.0} events/s ({events} events; 10 M would take {:.1} s, target <= 20 s)",
        events as f64 / took,
        10_000_000.0 / (events as f64 / took)
    );
    println!(
        "    {} events parsed ({} while mapping events to people), {} people evaluated, {} rewritten ({} by splicing their stored states)",
        st.parsed, st.held, st.evaluated, st.written, st.spliced
    );
    println!(
        "    wall: listing the live people {} ms, map {} ms (alongside the scan), log scan {} ms, evaluation {} ms, checkpoint {} ms; {} pass(es) over the log (processor.backfill_memory_mb), {} checkpoint(s) while evaluating (started in {} ms)",
        st.list_ms,
        st.map_ms,
        st.scan_ms,
        st.eval_ms,
        st.checkpoint_ms,
        st.passes,
        st.checkpoints,
        st.checkpoint_wait_ms
    );
    println!(
        "    scan, thread time summed over the {} workers: read {} ms, raw-byte filter {} ms, id resolution {} ms, parse {} ms, fold {} ms",
        st.workers, st.read_ms, st.filter_ms, st.resolve_ms, st.parse_ms, st.fold_ms
    );
}

/// Phase 2 on the state in `cfg`'s data directory (processed with the definitions).
/// `new_only`: only the new audience's backfill (no full recompute, no brute force).
pub(super) fn backfill(cfg: &Config, events: usize, new_only: bool) -> anyhow::Result<()> {
    let dir = &cfg.storage.data_dir;
    let log = EventLog::open(LogOptions {
        dir: dir.join("log"),
        segment_bytes: cfg.storage.segment_bytes,
    })?;
    let reader = log.reader();
    let store = spoor_store::state::StateStore::open(&dir.join("state"))?;
    let mut state = store.processor_state(cfg.processor.cache_entries)?;
    let limits = backfill::Limits::new(&cfg.processor);
    let meta = Arc::new(spoor_store::meta::MetaStore::open(&dir.join("meta"))?);
    let defs = DefsHandle::open(meta)?;
    println!(
        "  state: {} events, {} live people",
        reader.last_seq(),
        store.reader()?.live_profiles()?
    );
    defs.update(|d| {
        let rule = parse(NEW_RULE).map_err(|e| e.to_string())?;
        d.audiences.insert(
            "new_big_spenders".into(),
            definition("new_big_spenders".into(), rule),
        );
        Ok(())
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut engine = Engine::new(defs.clone(), Arc::new(now_ms));
    let started = Instant::now();
    let st = backfill::run(&mut state, &store, &reader, &engine, &limits)?;
    line("new audience", events, started.elapsed().as_secs_f64(), &st);
    let new_members = store.reader()?.audience_size("new_big_spenders")?;
    println!("    new audience: {new_members} members");
    if new_only {
        return Ok(());
    }
    // The old behaviour: nothing known about what the state was built for.
    defs.forget_applied()?;
    defs.update(|_| Ok(()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    engine.reload();
    let started = Instant::now();
    let st = backfill::run(&mut state, &store, &reader, &engine, &limits)?;
    line(
        "full recompute",
        events,
        started.elapsed().as_secs_f64(),
        &st,
    );
    let after_full = store.reader()?.audience_size("new_big_spenders")?;
    println!("    new audience: {new_members} members after its backfill, {after_full} after the full recompute");
    // The reference: every person's events read back and every rule evaluated from scratch.
    let started = Instant::now();
    let (set, computed) = engine
        .defs
        .current()
        .compile()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = store.reader()?;
    let now = now_ms();
    let mut after = None;
    let mut members = 0usize;
    let mut brute_new = 0usize;
    loop {
        let page = r.list_profiles(after, 1_000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.id);
        for p in &page {
            let cluster = r.cluster(p.id)?;
            let mut evs = Vec::new();
            for row in r.timeline(&cluster, None, usize::MAX)? {
                if let Some(e) = reader.read_from(row.seq, 1)?.into_iter().next() {
                    if let Ok(v) =
                        spoor_core::profile::parse_event(e.seq, e.timestamp_ms, &e.payload)
                    {
                        evs.push(EventFact::from_view(&v));
                    }
                }
            }
            let mut facts = spoor_core::audience::ProfileFacts::from_profile(p);
            for name in computed.names() {
                if let Some(def) = computed.get(name) {
                    if let Some(v) = spoor_core::computed::brute_force(def, &evs, now) {
                        facts.computed.insert(name.to_owned(), v);
                    }
                }
            }
            let m = set.evaluate_all_brute(&facts, &evs, now);
            members += m.len();
            brute_new += usize::from(m.contains("new_big_spenders"));
        }
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "  brute-force reference   {took:.1} s = {:.0} events/s ({members} memberships, {brute_new} in the new audience)",
        events as f64 / took
    );
    Ok(())
}
