//! Stage 3 of the processor: computed traits and audiences, in real time.
//!
//! Each applied event updates the person's incremental states (`Profile::activation`,
//! see `spoor_core::audience::Activation`) and re-evaluates their memberships; a change
//! becomes a bitmap update, a history row and a change-feed row (what destinations and
//! journeys consume), all committed with the checkpoint. Time alone also changes
//! membership ("bought in the last 7 days"): every person whose state can change without a
//! new event has one durable timer at the earliest such moment, and the processor fires due
//! timers between batches.
//!
//! The rules come from [`DefsHandle`]; when they change, everything derived from them is
//! recomputed from the log ([`super::backfill`]) before processing goes on.

use crate::defs::DefsHandle;
use spoor_core::audience::{Activation, AudienceSet, AudienceState, EventFact, ProfileFacts};
use spoor_core::computed::ComputedSet;
use spoor_core::identity::ProfileId;
use spoor_core::profile::Profile;
use spoor_store::state::{ChangeCause, MembershipChange, ProcessorState};
use spoor_store::StoreError;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The compiled definitions the processor evaluates.
pub struct Engine {
    pub defs: DefsHandle,
    /// The definitions revision compiled below.
    pub revision: u64,
    pub audiences: AudienceSet,
    pub computed: ComputedSet,
    /// No definitions at all: every stage below is skipped.
    pub idle: bool,
    /// The wall clock in ms (injected, so tests run at fixed times).
    pub now: Arc<dyn Fn() -> i64 + Send + Sync>,
}

/// Membership changes of one evaluation, and the person's timer before and after.
#[derive(Debug, Default)]
pub struct Outcome {
    pub entered: Vec<String>,
    pub exited: Vec<String>,
    pub old_timer: Option<i64>,
    pub new_timer: Option<i64>,
}

impl Engine {
    /// Compiles the current definitions. Definitions that do not compile (they were
    /// validated when stored, so this means a bug) are logged and treated as none.
    pub fn new(defs: DefsHandle, now: Arc<dyn Fn() -> i64 + Send + Sync>) -> Self {
        let mut e = Self {
            defs,
            revision: u64::MAX,
            audiences: empty_set(),
            computed: ComputedSet::default(),
            idle: true,
            now,
        };
        e.reload();
        e
    }

    /// Recompiles if the definitions changed; returns whether they did.
    pub fn reload(&mut self) -> bool {
        let d = self.defs.current();
        if d.revision == self.revision {
            return false;
        }
        match d.compile() {
            Ok((a, c)) => {
                self.audiences = a;
                self.computed = c;
                self.idle = d.audiences.is_empty() && d.computed.is_empty();
            }
            Err(e) => {
                tracing::error!(error = %e, revision = d.revision, "definitions do not compile; audiences are not evaluated");
                self.audiences = empty_set();
                self.computed = ComputedSet::default();
                self.idle = true;
            }
        }
        self.revision = d.revision;
        true
    }

    /// Applies one event of the person and re-evaluates them at `now_ms`.
    pub fn on_event(&self, p: &mut Profile, ev: &EventFact, now_ms: i64) -> Outcome {
        let mut act = std::mem::take(&mut p.activation);
        self.computed.apply(&mut act.computed, ev);
        for name in self.audiences.order() {
            if let Some(rule) = self.audiences.get(name) {
                if rule.deps.event_matters(ev) {
                    act.audiences
                        .entry(name.clone())
                        .or_insert_with(|| AudienceState::new(rule))
                        .apply(rule, ev);
                }
            }
        }
        let out = self.evaluate(p, &mut act, now_ms);
        p.activation = act;
        out
    }

    /// Re-evaluates the person at `now_ms` with no new event (a timer fired).
    pub fn on_time(&self, p: &mut Profile, now_ms: i64) -> Outcome {
        let mut act = std::mem::take(&mut p.activation);
        let out = self.evaluate(p, &mut act, now_ms);
        p.activation = act;
        out
    }

    /// Folds a merged-away person's states into the survivor's (identity merge). The
    /// survivor is re-evaluated by the event that caused the merge.
    pub fn merge(&self, into: &mut Activation, other: Activation) {
        self.computed.merge(&mut into.computed, other.computed);
        for (name, s) in other.audiences {
            let Some(rule) = self.audiences.get(&name) else {
                continue;
            };
            match into.audiences.get_mut(&name) {
                Some(mine) => mine.merge(rule, s),
                None => {
                    into.audiences.insert(name, s);
                }
            }
        }
    }

    fn evaluate(&self, p: &Profile, act: &mut Activation, now_ms: i64) -> Outcome {
        // States of definitions that no longer exist are dropped here, lazily.
        act.audiences.retain(|n, _| self.audiences.get(n).is_some());
        act.computed.retain(|n, _| self.computed.get(n).is_some());
        self.computed.prune(&mut act.computed, now_ms);
        let values = self.computed.values(&act.computed, now_ms);
        let mut facts = ProfileFacts::from_profile(p);
        facts.computed = values.clone();
        let now_in = self.audiences.evaluate_all(&act.audiences, &facts, now_ms);
        let was: BTreeSet<String> = act.members.keys().cloned().collect();
        let mut out = Outcome {
            old_timer: act.next_timer_ms,
            ..Outcome::default()
        };
        for name in now_in.difference(&was) {
            act.members.insert(name.clone(), now_ms);
            out.entered.push(name.clone());
        }
        for name in was.difference(&now_in) {
            act.members.remove(name);
            out.exited.push(name.clone());
        }
        let next = [
            self.audiences
                .next_change_all(&act.audiences, &facts, now_ms),
            self.computed.next_change(&act.computed, now_ms),
        ]
        .into_iter()
        .flatten()
        .min();
        act.values = values;
        act.next_timer_ms = next;
        out.new_timer = next;
        out
    }
}

fn empty_set() -> AudienceSet {
    AudienceSet::new(Default::default()).unwrap_or_else(|_| unreachable_set())
}

#[cold]
fn unreachable_set() -> AudienceSet {
    // An empty set has no cycles or unknown references; this cannot happen.
    panic!("an empty audience set must compile")
}

/// Records what one evaluation changed: bitmaps, history and feed rows, the timer.
pub fn record(
    state: &mut ProcessorState,
    pid: ProfileId,
    out: Outcome,
    at_ms: i64,
    seq: u64,
    cause: ChangeCause,
) {
    for (names, entered) in [(out.entered, true), (out.exited, false)] {
        for audience in names {
            state.set_member(&audience, pid, entered);
            let _ = state.record_membership(MembershipChange {
                audience,
                profile: pid,
                entered,
                at_ms,
                seq,
                cause,
            });
        }
    }
    if out.old_timer != out.new_timer {
        state.set_timer(pid, out.old_timer, out.new_timer);
    }
}

/// Most timers fired in one go, so events are not held up behind a mass expiry.
const TIMERS_PER_ROUND: usize = 10_000;

/// Fires due timers: re-evaluates each person whose timer is due at the current time.
/// Returns that time once every timer due by then has fired (`None` while more remain).
pub fn fire_timers(state: &mut ProcessorState, engine: &Engine) -> Result<Option<i64>, StoreError> {
    let now = (engine.now)();
    if engine.idle {
        return Ok(Some(now));
    }
    let due = state.due_timers(now, TIMERS_PER_ROUND);
    for (at, pid) in &due {
        let live = spoor_core::identity::resolve_profile(state, *pid);
        match live {
            Some(live) if live == *pid => {
                let out = state.with_profile(live, |p| engine.on_time(p, now))?;
                // The change happened when the timer was due, not when it was noticed.
                record(state, live, out, *at, 0, ChangeCause::Timer);
            }
            // Merged away or gone: its states moved to the survivor, which has its own timer.
            _ => state.set_timer(*pid, Some(*at), None),
        }
    }
    if let Some(e) = state.take_error() {
        return Err(e);
    }
    Ok((due.len() < TIMERS_PER_ROUND).then_some(now))
}
