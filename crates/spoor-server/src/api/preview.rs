//! The audience preview: how many people a rule matches now, and who — estimated from a
//! uniform random sample of the live profiles, with a 95 % margin, in a bounded time.
//!
//! Why a random sample and not the first profiles: ids are the seqs of the creating events,
//! so id order is age order, and the oldest profiles are not like the newest (e.g. every
//! `within 30d` rule). Why not a full scan: evaluating a million people by brute force takes
//! seconds; a sample of a few thousand gives the size within a percent or two, and the
//! exact size comes from the incremental engine once the audience is saved (or from an
//! explicit count, [`count_all`]).
//!
//! How the sample is drawn: a profile id is the log seq of the event that created it, so
//! every live profile has an id in `1..=processed_seq`. [`IdShuffle`] walks that range in a
//! random order (Fisher–Yates, drawn lazily with the swaps in a map, so nothing is
//! allocated per id of the range) and the profiles found at the drawn ids are, in order, a
//! uniform random sample of the live profiles without replacement. Ids that are not (or no
//! longer) a live profile cost one point lookup each; lookups read the processor's pending
//! layer by hash, so unlike a scan in id order (which merges the whole pending layer into
//! every page) a preview costs the same right after a bulk load as after its checkpoint.
//! When the walk exhausts the range, every live profile was evaluated: the answer is exact.
//!
//! Per person, trait-only rules read the profile (one point lookup) and nothing else; rules
//! with event conditions also read the person's timeline rows and then only those events
//! from the log, neighbouring seqs in one read, and parse the properties of only the events
//! a condition of the rule selects.

use super::audiences::now_ms;
use crate::error::ApiError;
use crate::AppState;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use spoor_core::audience::{evaluate, Dependencies, EventFact, ProfileFacts, Rule};
use spoor_core::identity::ProfileId;
use spoor_core::profile::{parse_event, EventView, Profile};
use spoor_store::state::StateReader;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Events read per person (the newest ones, if a person has more).
const EVENTS_PER_PROFILE: usize = 100_000;
/// Seqs of one person at most this far apart are read in one pass over the log: reading
/// one frame walks from the nearest index entry (every 256 frames) anyway.
const RUN_GAP: u64 = 256;
/// z for a two-sided 95 % interval.
const Z95: f64 = 1.959_963_984_540_054;

/// How a preview samples and when it stops.
#[derive(Debug, Clone, Copy)]
pub struct PreviewOpts {
    /// Members to return.
    pub sample: usize,
    /// Profiles to evaluate at most.
    pub scan: usize,
    /// Stop evaluating after this long (and estimate from what was evaluated).
    pub budget: Duration,
    /// Seeds the random order: the same seed over the same data draws the same people, so
    /// an editor that keeps its seed shows a size that moves only with the rule.
    pub seed: u64,
}

/// A random permutation of `1..=n`, drawn one element at a time: Fisher–Yates where the
/// swapped-out positions are kept in a map, so memory grows with the draws, not with `n`.
pub struct IdShuffle {
    n: u64,
    drawn: u64,
    swaps: HashMap<u64, u64>,
    rng: StdRng,
}

impl IdShuffle {
    pub fn new(n: u64, seed: u64) -> Self {
        Self {
            n,
            drawn: 0,
            swaps: HashMap::new(),
            rng: StdRng::seed_from_u64(seed),
        }
    }

    /// How many have been drawn.
    pub fn drawn(&self) -> u64 {
        self.drawn
    }
}

impl Iterator for IdShuffle {
    type Item = u64;

    fn next(&mut self) -> Option<u64> {
        if self.drawn >= self.n {
            return None;
        }
        let i = self.drawn;
        let j = self.rng.random_range(i..self.n);
        let at_j = self.swaps.get(&j).copied().unwrap_or(j);
        let at_i = self.swaps.remove(&i).unwrap_or(i);
        if j != i {
            self.swaps.insert(j, at_i);
        }
        self.drawn += 1;
        Some(at_j + 1)
    }
}

/// The 95 % interval of a population count from a sample without replacement: Wilson's
/// score interval for the share (it stays honest at 0 and at 100 %, where the plain
/// normal interval collapses to ±0), narrowed by the finite population correction so that
/// a sample of everyone has no margin. Returns (low, high) as counts of `population`.
pub fn interval95(matched: u64, sampled: u64, population: u64) -> (f64, f64) {
    if sampled == 0 {
        return (0.0, population as f64);
    }
    let (n, big_n) = (sampled as f64, (population.max(sampled)) as f64);
    let p = matched as f64 / n;
    let fpc = if big_n > 1.0 {
        ((big_n - n) / (big_n - 1.0)).max(0.0)
    } else {
        0.0
    };
    let z2 = Z95 * Z95 * fpc;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = (z2 * (p * (1.0 - p) / n + z2 / (4.0 * n * n))).sqrt() / denom;
    (
        ((centre - half).max(0.0) * big_n).max(matched as f64),
        ((centre + half).min(1.0) * big_n).min(big_n - (sampled - matched) as f64),
    )
}

/// Evaluates one rule for one person at a time, reading only what the rule needs.
pub struct Evaluator<'a> {
    app: &'a AppState,
    r: &'a StateReader,
    rule: &'a Rule,
    deps: Dependencies,
    now: i64,
}

impl<'a> Evaluator<'a> {
    pub fn new(app: &'a AppState, r: &'a StateReader, rule: &'a Rule) -> Self {
        Self {
            app,
            r,
            rule,
            deps: Dependencies::of(rule),
            now: now_ms(app),
        }
    }

    pub fn matches(&self, p: &Profile) -> Result<bool, ApiError> {
        let mut facts = ProfileFacts::with_consent(p, &self.app.consent);
        facts.computed = (*p.activation.values).clone();
        facts.audiences = p.activation.members.keys().map(|a| a.to_string()).collect();
        if !self.deps.group_traits.is_empty() {
            for gid in p.groups.keys() {
                if let Some(g) = self.r.group(gid)? {
                    facts.groups.push(g.trait_values());
                }
            }
        }
        let events = if self.deps.events.is_empty() {
            Vec::new()
        } else {
            self.events_of(p.id)?
        };
        Ok(evaluate(self.rule, &facts, &events, self.now))
    }

    /// Whether any event condition of the rule can select this event (its type and name;
    /// the where-clause needs the properties, parsed only for events that get this far).
    fn selected(&self, v: &EventView) -> bool {
        let name = match v.kind {
            spoor_core::event::EventType::Track => v.event.as_deref(),
            _ => v.name.as_deref(),
        };
        self.deps.events.iter().any(|s| {
            s.kind.is_none_or(|k| k == v.kind) && s.name.as_deref().is_none_or(|n| name == Some(n))
        })
    }

    /// The person's events (all merged identifiers), newest first like the timeline, as
    /// facts — only those a condition of the rule selects.
    fn events_of(&self, pid: ProfileId) -> Result<Vec<EventFact>, ApiError> {
        let cluster = self.r.cluster(pid)?;
        let rows = self.r.timeline(&cluster, None, EVENTS_PER_PROFILE)?;
        let mut seqs: Vec<u64> = rows.iter().map(|c| c.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let mut out = Vec::with_capacity(seqs.len());
        let mut i = 0;
        while i < seqs.len() {
            let mut j = i;
            while j + 1 < seqs.len() && seqs[j + 1] - seqs[j] <= RUN_GAP {
                j += 1;
            }
            let (first, last) = (seqs[i], seqs[j]);
            let want = &seqs[i..=j];
            for e in self
                .app
                .reader
                .read_from(first, (last - first + 1) as usize)?
            {
                if e.seq > last {
                    break;
                }
                if want.binary_search(&e.seq).is_err() {
                    continue;
                }
                if let Ok(view) = parse_event(e.seq, e.timestamp_ms, &e.payload) {
                    if self.selected(&view) {
                        out.push(EventFact::from_view(&view));
                    }
                }
            }
            i = j + 1;
        }
        out.sort_unstable_by_key(|f| std::cmp::Reverse(f.key()));
        Ok(out)
    }
}

fn member_json(p: &Profile) -> Value {
    json!({"id": p.id.to_string(), "traits": p.trait_values()})
}

/// Evaluates `rule` over a uniform random sample of the live profiles (see the module
/// documentation) until `opts.scan` were evaluated, `opts.budget` passed or everyone was.
pub fn run_preview(app: &AppState, rule: &Rule, opts: PreviewOpts) -> Result<Value, ApiError> {
    let started = Instant::now();
    let st = &app.processor.status;
    // Read the count before the range: a profile created in between is outside the range
    // but counted, which errs by at most the events processed meanwhile.
    let live = st.live_profiles.load(Ordering::Acquire);
    let range = st.processed_seq.load(Ordering::Acquire);
    let r = app.state.reader()?;
    let eval = Evaluator::new(app, &r, rule);
    let mut ids = IdShuffle::new(range, opts.seed);
    let (mut scanned, mut matched) = (0u64, 0u64);
    let mut members = Vec::new();
    let mut truncated = false;
    let mut exhausted = true;
    while let Some(raw) = ids.next() {
        if scanned >= opts.scan as u64 {
            exhausted = false;
            break;
        }
        // Checked every 64 draws: a clock read costs as much as a miss.
        if ids.drawn().is_multiple_of(64) && started.elapsed() > opts.budget {
            truncated = true;
            exhausted = false;
            break;
        }
        let Some(p) = r.profile(ProfileId::from_raw(raw))? else {
            continue;
        };
        scanned += 1;
        if eval.matches(&p)? {
            matched += 1;
            if members.len() < opts.sample {
                members.push(member_json(&p));
            }
        }
    }
    // A walk of the whole range saw every live profile: then the count is exact.
    let total = if exhausted {
        scanned
    } else {
        live.max(scanned)
    };
    let (estimate, low, high) = if exhausted {
        (matched, matched, matched)
    } else if scanned == 0 {
        (0, 0, total)
    } else {
        let (lo, hi) = interval95(matched, scanned, total);
        let est = (matched as f64 * total as f64 / scanned as f64).round() as u64;
        (est, lo.floor() as u64, hi.ceil() as u64)
    };
    let margin = (estimate - low.min(estimate)).max(high.max(estimate) - estimate);
    Ok(json!({
        "matched": matched,
        "scanned": scanned,
        "total_profiles": total,
        "estimated_size": estimate,
        "exact": exhausted,
        "truncated": truncated,
        "sampling": "uniform_random",
        "ids_drawn": ids.drawn(),
        "interval_95": [low, high],
        "margin_95": margin,
        "sample": members,
        "took_ms": started.elapsed().as_millis() as u64,
    }))
}

/// Evaluates `rule` for every live profile, in id order, for an exact count. `progress` is
/// told (evaluated, matched) after each page and stops the count by answering false.
pub fn count_all(
    app: &AppState,
    rule: &Rule,
    mut progress: impl FnMut(u64, u64) -> bool,
) -> Result<Option<(u64, u64)>, ApiError> {
    const PAGE: usize = 1000;
    let r = app.state.reader()?;
    let eval = Evaluator::new(app, &r, rule);
    let (mut scanned, mut matched) = (0u64, 0u64);
    let mut after = None;
    loop {
        let page = r.list_profiles(after, PAGE)?;
        let Some(last) = page.last() else {
            return Ok(Some((scanned, matched)));
        };
        after = Some(last.id);
        for p in &page {
            scanned += 1;
            if eval.matches(p)? {
                matched += 1;
            }
        }
        if !progress(scanned, matched) {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shuffle_is_a_permutation_and_depends_on_the_seed() {
        for n in [0u64, 1, 2, 7, 1000] {
            let mut all: Vec<u64> = IdShuffle::new(n, 3).collect();
            assert_eq!(all.len() as u64, n);
            all.sort_unstable();
            assert_eq!(all, (1..=n).collect::<Vec<_>>());
        }
        let a: Vec<u64> = IdShuffle::new(1000, 1).take(20).collect();
        let b: Vec<u64> = IdShuffle::new(1000, 1).take(20).collect();
        let c: Vec<u64> = IdShuffle::new(1000, 2).take(20).collect();
        assert_eq!(a, b, "same seed, same order");
        assert_ne!(a, c, "another seed, another order");
    }

    #[test]
    fn every_id_is_equally_likely_to_be_drawn_early() {
        // The first 10 of 100 over 20 000 seeds: each id should be among them ~2 000 times
        // (binomial sd ≈ 42); a first-n or id-ordered draw fails this by far.
        let mut hits = [0u32; 100];
        for seed in 0..20_000 {
            for id in IdShuffle::new(100, seed).take(10) {
                hits[(id - 1) as usize] += 1;
            }
        }
        for (i, h) in hits.iter().enumerate() {
            assert!((1_750..=2_250).contains(h), "id {} drawn {h} times", i + 1);
        }
    }

    #[test]
    fn the_interval_is_honest_at_the_edges_and_closes_on_a_full_sample() {
        let (lo, hi) = interval95(0, 1000, 1_000_000);
        assert!(lo < 1e-6, "{lo}");
        assert!(
            hi > 1000.0,
            "none of 1000 still allows a few per mille: {hi}"
        );
        let (lo, hi) = interval95(500, 1000, 1_000_000);
        let half = (hi - lo) / 2.0;
        // The normal approximation: 1.96 × sqrt(.25/1000) ≈ 3.1 % of a million.
        assert!((30_000.0..32_000.0).contains(&half), "{half}");
        assert!(lo < 500_000.0 && hi > 500_000.0);
        assert_eq!(interval95(37, 100, 100), (37.0, 37.0), "everyone sampled");
        let (lo, hi) = interval95(5, 10, 12);
        assert!(
            lo >= 5.0 && hi <= 7.0,
            "bounded by what was seen: {lo} {hi}"
        );
    }
}
