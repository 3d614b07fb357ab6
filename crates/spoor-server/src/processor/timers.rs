//! Time alone changes memberships: firing the durable timers of people whose audiences or
//! computed traits change when a window passes, without any new event.

use super::activate::{record, Engine};
use spoor_store::state::{ChangeCause, ProcessorState};
use spoor_store::StoreError;

/// Most timers fired in one go, so events are not held up behind a mass expiry.
const TIMERS_PER_ROUND: usize = 10_000;

/// How late timers fire: the last [`Lateness::KEEP`] samples, in ms after they were due
/// (`spoor bench audiences` reports percentiles; operators see how far behind time is).
#[derive(Debug, Default)]
pub struct Lateness(parking_lot::Mutex<std::collections::VecDeque<i64>>);

impl Lateness {
    pub const KEEP: usize = 100_000;

    fn add(&self, ms: i64) {
        let mut q = self.0.lock();
        if q.len() == Self::KEEP {
            q.pop_front();
        }
        q.push_back(ms);
    }

    /// The samples, sorted.
    pub fn sorted(&self) -> Vec<i64> {
        let mut v: Vec<i64> = self.0.lock().iter().copied().collect();
        v.sort_unstable();
        v
    }
}

/// Fires due timers: re-evaluates each person whose timer is due at the current time.
/// Returns that time once every timer due by then has fired (`None` while more remain).
pub fn fire_timers(
    state: &mut ProcessorState,
    engine: &Engine,
    lateness: &Lateness,
) -> Result<Option<i64>, StoreError> {
    let now = (engine.now)();
    if engine.idle {
        return Ok(Some(now));
    }
    let due = state.due_timers(now, TIMERS_PER_ROUND);
    for (at, pid) in &due {
        let live = spoor_core::identity::resolve_profile(state, *pid);
        match live {
            Some(live) if live == *pid => {
                let groups = super::groups::facts_of(state, engine, live)?;
                let out = state.with_profile(live, |p| engine.on_time(p, now, &groups))?;
                lateness.add((engine.now)() - *at);
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
