//! Audience memberships: who is in each audience (a compressed bitmap per audience), when
//! time alone may change someone's memberships (timers), and every entry and exit (per
//! profile history, and a global change feed numbered in order for destinations and
//! journeys).
//!
//! - **Bitmaps** (`audience → RoaringTreemap` of [`ProfileId::raw`]) live in memory, in the
//!   [pending](super::pending) layer shared with readers, so a reader sees a change at once;
//!   they are not cleared by a checkpoint (they are the whole membership, not a delta). A
//!   checkpoint writes only the audiences changed since the previous one, serialized
//!   ([`encode_members`], the portable roaring format), atomically with everything else. An
//!   audience without members has no stored row. Readers hold an `Arc` of a bitmap while
//!   they count, so the processor copies one on write instead of waiting for them.
//! - **Timers** `(at_ms, profile)` are the processor's alone: a `BTreeSet` in memory (16
//!   bytes a key), loaded at start, with the changes since the last checkpoint coalesced
//!   into inserts and deletes.
//! - **History and feed rows** since the last checkpoint are pending rows, visible to
//!   readers like pending timeline rows. Change numbers start at 1 and never repeat (the
//!   next one is stored with each checkpoint that used some).

use super::backend::{ChangeSet, StateSnapshot};
use super::cache::ProcessorState;
use super::pending::{Layer, Pending};
use super::read::StateReader;
use crate::error::StoreError;
use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};
use spoor_core::identity::ProfileId;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Why a membership changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeCause {
    /// An event of the person.
    Event,
    /// Time alone (a window passed).
    Timer,
    /// A group the person belongs to changed its traits (another member's `group` call).
    Group,
    /// A new or changed audience was evaluated over history.
    Backfill,
    /// The person's profile was merged into another.
    Merge,
    /// The audience (or the profile) was deleted.
    Deleted,
}

/// One entry into or exit from an audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipChange {
    pub audience: String,
    pub profile: ProfileId,
    /// `true`: entered; `false`: left.
    pub entered: bool,
    /// When it happened (event time of the cause, or the timer's time), ms.
    pub at_ms: i64,
    /// The log seq of the causing event, 0 if none (timers, deletions).
    pub seq: u64,
    pub cause: ChangeCause,
}

/// The format byte of a binary membership change record (JSON ones, format 1, start with
/// `{`). Two rows are written per change (history and feed), several per event with many
/// audiences, so JSON was a visible part of a checkpoint.
const CHANGE_V2: u8 = 2;

/// A membership change row: [`CHANGE_V2`], audience, profile, entered, time, seq, cause.
pub(crate) fn write_change(out: &mut Vec<u8>, c: &MembershipChange) {
    let MembershipChange {
        audience,
        profile,
        entered,
        at_ms,
        seq,
        cause,
    } = c;
    out.clear();
    let mut w = spoor_core::codec::Writer::new(out);
    w.u8(CHANGE_V2);
    w.str(audience);
    w.u64(profile.raw());
    w.bool(*entered);
    w.i64(*at_ms);
    w.u64(*seq);
    w.u8(match cause {
        ChangeCause::Event => 0,
        ChangeCause::Timer => 1,
        ChangeCause::Backfill => 2,
        ChangeCause::Merge => 3,
        ChangeCause::Deleted => 4,
        ChangeCause::Group => 5,
    });
}

/// Reads a membership change row of either format.
pub(crate) fn read_change(b: &[u8]) -> Result<MembershipChange, StoreError> {
    if b.first() == Some(&b'{') {
        return super::tables::from_json(b);
    }
    let bad = |e: spoor_core::codec::DecodeError| {
        StoreError::Meta(format!("unreadable membership change: {e}"))
    };
    let mut r = spoor_core::codec::Reader::new(b);
    match r.u8().map_err(bad)? {
        CHANGE_V2 => {}
        f => return Err(bad(spoor_core::codec::DecodeError::Format(f))),
    }
    let c = MembershipChange {
        audience: r.str().map_err(bad)?,
        profile: ProfileId::from_raw(r.u64().map_err(bad)?),
        entered: r.bool().map_err(bad)?,
        at_ms: r.i64().map_err(bad)?,
        seq: r.u64().map_err(bad)?,
        cause: match r.u8().map_err(bad)? {
            0 => ChangeCause::Event,
            1 => ChangeCause::Timer,
            2 => ChangeCause::Backfill,
            3 => ChangeCause::Merge,
            4 => ChangeCause::Deleted,
            5 => ChangeCause::Group,
            _ => return Err(bad(spoor_core::codec::DecodeError::Corrupt("cause"))),
        },
    };
    r.finish().map_err(bad)?;
    Ok(c)
}

/// Members of an audience as bytes (the portable roaring serialization), for storage.
pub fn encode_members(m: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.serialized_size());
    // Writing into a Vec cannot fail.
    let _ = m.serialize_into(&mut out);
    out
}

/// The inverse of [`encode_members`].
pub fn decode_members(b: &[u8]) -> Result<RoaringTreemap, StoreError> {
    RoaringTreemap::deserialize_from(b)
        .map_err(|e| StoreError::Meta(format!("unreadable audience bitmap: {e}")))
}

/// What only the processor keeps about memberships.
#[derive(Default)]
pub(super) struct MembershipState {
    /// Every timer (at ms, profile raw id).
    timers: BTreeSet<(i64, u64)>,
    /// Timer keys changed since the last checkpoint → present afterwards.
    timer_delta: BTreeMap<(i64, u64), bool>,
    /// Audiences whose bitmap changed (or went) since the last checkpoint.
    dirty: BTreeSet<String>,
    /// The number the next recorded change gets.
    next_change_no: u64,
    /// Whether a change was recorded since the last checkpoint.
    numbered: bool,
}

const TIMER_PAGE: usize = 100_000;

impl MembershipState {
    /// Loads bitmaps, timers and the next change number from a checkpoint.
    pub(super) fn load(
        snap: &dyn StateSnapshot,
    ) -> Result<(Self, HashMap<String, Arc<RoaringTreemap>>), StoreError> {
        let names = snap.audience_names()?;
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut members = HashMap::with_capacity(names.len());
        for (name, bytes) in names.iter().zip(snap.audience_bitmaps(&refs)?) {
            if let Some(b) = bytes {
                members.insert(name.clone(), Arc::new(decode_members(&b)?));
            }
        }
        let mut timers = BTreeSet::new();
        let mut after = None;
        loop {
            let page = snap.timers(after, TIMER_PAGE)?;
            after = page.last().copied();
            let full = page.len() == TIMER_PAGE;
            timers.extend(page);
            if !full {
                break;
            }
        }
        let s = Self {
            timers,
            timer_delta: BTreeMap::new(),
            dirty: BTreeSet::new(),
            next_change_no: snap.next_change_no()?.max(1),
            numbered: false,
        };
        Ok((s, members))
    }

    pub(super) fn has_changes(&self) -> bool {
        !self.timer_delta.is_empty() || !self.dirty.is_empty() || self.numbered
    }

    /// Takes what changed since the last checkpoint: the changed audiences' bitmaps (`Arc`
    /// clones from `g`, O(changed audiences) — the caller holds the pending lock), timer
    /// inserts/deletes and the next change number. Serialising the bitmaps is left to
    /// [`MembershipDelta::fill`], outside the lock.
    pub(super) fn take_delta(&mut self, g: &Pending) -> MembershipDelta {
        let audiences = std::mem::take(&mut self.dirty)
            .into_iter()
            .map(|name| {
                let b = g
                    .members
                    .as_ref()
                    .and_then(|m| m.get(&name))
                    .filter(|b| !b.is_empty())
                    .cloned();
                (name, b)
            })
            .collect();
        let mut d = MembershipDelta {
            audiences,
            next_change_no: std::mem::take(&mut self.numbered).then_some(self.next_change_no),
            ..MembershipDelta::default()
        };
        for (k, present) in std::mem::take(&mut self.timer_delta) {
            if present {
                d.timers_add.push(k);
            } else {
                d.timers_remove.push(k);
            }
        }
        d
    }
}

/// The membership part of one checkpoint, taken from the processor's state under the
/// pending lock in O(changed audiences) and turned into [`ChangeSet`] rows on the
/// checkpoint thread: serialising a bitmap of a million members takes milliseconds, and
/// every Profile API read waits while the lock is held.
#[derive(Default)]
pub(super) struct MembershipDelta {
    /// Changed audiences and their members now (`None`: deleted or empty).
    audiences: Vec<(String, Option<Arc<RoaringTreemap>>)>,
    timers_add: Vec<(i64, u64)>,
    timers_remove: Vec<(i64, u64)>,
    next_change_no: Option<u64>,
}

impl MembershipDelta {
    /// Moves the delta into `c`: bitmaps serialized, and the frozen layer's history and
    /// feed rows.
    pub(super) fn fill(self, layer: &Layer, c: &mut ChangeSet) {
        c.audiences = self
            .audiences
            .into_iter()
            .map(|(name, b)| (name, b.map(|b| encode_members(&b))))
            .collect();
        c.timers_add = self.timers_add;
        c.timers_remove = self.timers_remove;
        c.membership_feed = layer.membership_feed.clone();
        c.membership_history = layer
            .membership_history
            .values()
            .flat_map(|rows| rows.iter().cloned())
            .collect();
        c.next_change_no = self.next_change_no;
    }
}

/// The write side, used by the processor's audience engine.
impl ProcessorState {
    /// Makes `pid` a member of `audience` or not (the bitmap only; see
    /// [`Self::record_membership`] for the history). Readers see it once published.
    pub fn set_member(&mut self, audience: &str, pid: ProfileId, member: bool) {
        if self.is_member(audience, pid) == member {
            return;
        }
        self.staged
            .members
            .entry(audience.to_owned())
            .or_default()
            .insert(pid.raw(), member);
        if !self.mem.dirty.contains(audience) {
            self.mem.dirty.insert(audience.to_owned());
        }
        self.changed();
    }

    /// Records an entry or exit: a row of the profile's history and of the global change
    /// feed, under the next change number (returned). Readers see it at once.
    pub fn record_membership(&mut self, c: MembershipChange) -> u64 {
        let no = self.mem.next_change_no;
        self.mem.next_change_no += 1;
        self.mem.numbered = true;
        let pid = c.profile.raw();
        let c = Arc::new(c);
        let l = &mut self.staged.layer;
        l.membership_feed.push((no, c.clone()));
        l.membership_history.entry(pid).or_default().push((no, c));
        self.changed();
        no
    }

    /// Forgets a deleted audience's members (its history stays).
    pub fn drop_audience(&mut self, audience: &str) {
        // After what is staged, which may change this audience.
        self.publish_now();
        let gone = self
            .shared
            .write(|g, _| g.members.as_mut().and_then(|m| m.remove(audience)))
            .is_some();
        if gone {
            self.mem.dirty.insert(audience.to_owned());
        }
    }

    /// Moves a profile's timer from `old` to `new` (either may be `None`).
    pub fn set_timer(&mut self, pid: ProfileId, old: Option<i64>, new: Option<i64>) {
        if old == new {
            return;
        }
        let raw = pid.raw();
        if let Some(at) = old {
            self.mem.timers.remove(&(at, raw));
            self.mem.timer_delta.insert((at, raw), false);
        }
        if let Some(at) = new {
            self.mem.timers.insert((at, raw));
            self.mem.timer_delta.insert((at, raw), true);
        }
    }

    /// Up to `limit` timers due at `now_ms` (at ≤ now), earliest first. They stay until
    /// [`Self::set_timer`] moves or removes them.
    pub fn due_timers(&self, now_ms: i64, limit: usize) -> Vec<(i64, ProfileId)> {
        self.mem
            .timers
            .range(..=(now_ms, u64::MAX))
            .take(limit)
            .map(|(at, p)| (*at, ProfileId::from_raw(*p)))
            .collect()
    }

    /// The earliest timer.
    pub fn next_timer(&self) -> Option<i64> {
        self.mem.timers.first().map(|(at, _)| *at)
    }

    /// Number of timers.
    pub fn timer_count(&self) -> usize {
        self.mem.timers.len()
    }

    /// Whether `pid` is a member of `audience` now.
    pub fn is_member(&self, audience: &str, pid: ProfileId) -> bool {
        if let Some(m) = self
            .staged
            .members
            .get(audience)
            .and_then(|ops| ops.get(&pid.raw()))
        {
            return *m;
        }
        self.shared
            .read()
            .members
            .as_ref()
            .and_then(|m| m.get(audience))
            .is_some_and(|b| b.contains(pid.raw()))
    }
}

/// Reads of memberships: the processor's in-memory bitmaps when a processor runs on this
/// store, else the last checkpoint.
impl StateReader {
    /// The bitmaps of `names` (empty for an audience without members), consistent with
    /// each other.
    fn bitmaps(&self, names: &[&str]) -> Result<Vec<Arc<RoaringTreemap>>, StoreError> {
        if let Some(p) = self.pending_layer() {
            let g = p.read();
            if let Some(m) = &g.members {
                return Ok(names
                    .iter()
                    .map(|n| m.get(*n).cloned().unwrap_or_default())
                    .collect());
            }
        }
        self.fresh(|s| {
            s.audience_bitmaps(names)?
                .into_iter()
                .map(|b| {
                    Ok(Arc::new(match b {
                        Some(b) => decode_members(&b)?,
                        None => RoaringTreemap::new(),
                    }))
                })
                .collect()
        })
    }

    /// Number of members of an audience (0 if it has none or does not exist).
    pub fn audience_size(&self, name: &str) -> Result<u64, StoreError> {
        Ok(self.bitmaps(&[name])?[0].len())
    }

    /// The members of an audience now, as one immutable bitmap (empty if none): a file
    /// export iterates it while the processor goes on, and sees exactly this moment — the
    /// processor copies a bitmap on write while a reader holds it.
    pub fn audience_snapshot(&self, name: &str) -> Result<Arc<RoaringTreemap>, StoreError> {
        Ok(self.bitmaps(&[name])?.swap_remove(0))
    }

    /// Up to `limit` members in id order, strictly after `after`.
    pub fn audience_members(
        &self,
        name: &str,
        after: Option<ProfileId>,
        limit: usize,
    ) -> Result<Vec<ProfileId>, StoreError> {
        let b = self.bitmaps(&[name])?.swap_remove(0);
        let mut it = b.iter();
        if let Some(a) = after {
            match a.raw().checked_add(1) {
                Some(n) => it.advance_to(n),
                None => return Ok(Vec::new()),
            }
        }
        Ok(it.take(limit).map(ProfileId::from_raw).collect())
    }

    /// (members of `a`, members of `b`, members of both), counted on the bitmaps.
    pub fn audience_overlap(&self, a: &str, b: &str) -> Result<(u64, u64, u64), StoreError> {
        let v = self.bitmaps(&[a, b])?;
        Ok((v[0].len(), v[1].len(), v[0].intersection_len(&v[1])))
    }

    /// Audiences that have members.
    pub fn audience_names(&self) -> Result<Vec<String>, StoreError> {
        if let Some(p) = self.pending_layer() {
            let g = p.read();
            if let Some(m) = &g.members {
                let mut v: Vec<String> = m
                    .iter()
                    .filter(|(_, b)| !b.is_empty())
                    .map(|(k, _)| k.clone())
                    .collect();
                v.sort_unstable();
                return Ok(v);
            }
        }
        self.fresh(|s| s.audience_names())
    }

    /// Up to `limit` entries and exits of the cluster's profiles, newest first (by time,
    /// then change number).
    pub fn membership_history(
        &self,
        cluster: &[ProfileId],
        limit: usize,
    ) -> Result<Vec<MembershipChange>, StoreError> {
        let mut rows = self.split(
            |p| {
                let mut committed = Vec::with_capacity(cluster.len());
                let mut newer = Vec::new();
                for pid in cluster {
                    let raw = pid.raw();
                    if p.is_none_or(|p| !p.dropped(raw)) {
                        committed.push(raw);
                    }
                }
                if let Some(p) = p {
                    let all: Vec<u64> = cluster.iter().map(|p| p.raw()).collect();
                    newer = p.history_of(&all);
                }
                (committed, newer)
            },
            |(committed, newer), s| {
                let mut rows = s.membership_history(&committed, limit)?;
                rows.extend(newer.into_iter().map(|(n, c)| (n, Arc::unwrap_or_clone(c))));
                Ok(rows)
            },
        )?;
        rows.sort_by_key(|r| std::cmp::Reverse((r.1.at_ms, r.0)));
        rows.dedup_by_key(|r| r.0);
        rows.truncate(limit);
        Ok(rows.into_iter().map(|(_, c)| c).collect())
    }

    /// Up to `limit` changes of the feed with a number greater than `after`, in order.
    pub fn membership_changes(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, MembershipChange)>, StoreError> {
        self.with(|p, s| {
            let mut rows = s.membership_feed(after, limit)?;
            if let Some(p) = p.filter(|_| rows.len() < limit) {
                let last = rows.last().map_or(after, |r| r.0);
                let room = limit - rows.len();
                rows.extend(
                    p.feed_after(last, room)
                        .into_iter()
                        .map(|(n, c)| (n, Arc::unwrap_or_clone(c))),
                );
            }
            Ok(rows)
        })
    }
}

#[cfg(test)]
#[path = "memberships_tests.rs"]
mod tests;
