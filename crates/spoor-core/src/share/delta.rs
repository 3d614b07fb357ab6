//! A stretch of the membership change feed as `add`/`remove` rows.
//!
//! The feed holds every entry and exit in order; a platform only needs where each person
//! ended up. So changes fold per profile into the *net* change: someone who entered and left
//! again since the cursor was not a member then and is not now, and gets no row (a `remove`
//! for a hash the platform never had would be noise; an `add` then `remove` in one file is
//! applied in an order some platforms do not promise). Someone who left and came back gets
//! none either. Memory is one small entry per changed profile, not per member.

use super::Action;
use crate::identity::ProfileId;
use std::collections::HashMap;

/// Net changes of one audience, folded from feed rows given in change-number order.
#[derive(Debug, Default)]
pub struct DeltaFold {
    /// Profile raw id → (its first change entered, its last change entered, last number).
    by_profile: HashMap<u64, (bool, bool, u64)>,
}

impl DeltaFold {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds change `no` (increasing from call to call): `pid` `entered` or left.
    pub fn push(&mut self, no: u64, pid: ProfileId, entered: bool) {
        self.by_profile
            .entry(pid.raw())
            .and_modify(|e| {
                e.1 = entered;
                e.2 = no;
            })
            .or_insert((entered, entered, no));
    }

    /// Profiles whose membership changed on balance, in the order of their last change.
    pub fn finish(self) -> Vec<(ProfileId, Action)> {
        let mut net: Vec<(u64, ProfileId, Action)> = self
            .by_profile
            .into_iter()
            // Entered first ⇒ was out before; entered last ⇒ is in now. Equal ⇒ a change.
            .filter(|(_, (first, last, _))| first == last)
            .map(|(raw, (_, last, no))| {
                let action = if last { Action::Add } else { Action::Remove };
                (no, ProfileId::from_raw(raw), action)
            })
            .collect();
        net.sort_unstable_by_key(|r| r.0);
        net.into_iter().map(|(_, p, a)| (p, a)).collect()
    }
}
