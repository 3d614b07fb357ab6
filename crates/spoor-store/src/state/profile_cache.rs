//! The processor's clean cache of profiles, counted by weight rather than by entries.
//!
//! The clean cache is bounded by a number of entries (`processor.cache_entries`), sized
//! for the 1–3 KB an identity record or a plain profile takes in memory. A profile holding
//! the states of many audiences and computed traits takes far more (≈ 20 KB with 50 + 20:
//! B-tree maps, a shared pointer per state), so counted as one entry, a cache of two
//! million entries held tens of gigabytes. Each profile counts as one entry plus one per
//! [`STATES_PER_ENTRY`] states it holds, here and in the pending layers' count that the
//! checkpoint policy bounds (`Layer::profile_weight`): `spoor rebuild` of 10 M events over
//! 1 M people with 50 audiences + 20 traits peaked at 22.5 GiB resident before, 17.4 GiB
//! after (the default bounds still allow that much at ≈ 2 KB per weighted entry: lower
//! `cache_entries` and `checkpoint_pending` on a smaller machine).

use spoor_core::profile::Profile;
use std::collections::HashMap;
use std::sync::Arc;

/// Audience and computed-trait states that weigh as much as one plain cache entry.
pub const STATES_PER_ENTRY: usize = 8;

/// Bytes of an activation kept encoded (`LazyActivation`, a profile rewritten by a
/// backfill) that weigh as much as one plain cache entry.
pub const ENCODED_BYTES_PER_ENTRY: usize = 2048;

/// How many entries a cached profile counts for (`None`: a known-absent profile).
///
/// An activation kept encoded counts by its bytes, not its states: counting them would
/// decode it. A reader may decode it later (it then holds both), but the weight stays what
/// it was, as the running sums that add and subtract it need.
pub fn weight(p: &Option<Arc<Profile>>) -> usize {
    p.as_ref().map_or(1, |p| {
        let a = &p.activation;
        1 + match a.encoded_bytes() {
            Some(b) => b.len() / ENCODED_BYTES_PER_ENTRY,
            None => (a.audiences.len() + a.computed.len()) / STATES_PER_ENTRY,
        }
    })
}

/// Profile id → the profile as last committed (`None`: known not to exist), with the sum
/// of their weights.
#[derive(Default)]
pub struct ProfileCache {
    map: HashMap<u64, Option<Arc<Profile>>>,
    weight: usize,
}

impl ProfileCache {
    /// The sum of the cached profiles' weights (what counts against the cache's bound).
    pub fn weight(&self) -> usize {
        self.weight
    }

    pub fn remove(&mut self, raw: &u64) -> Option<Option<Arc<Profile>>> {
        let p = self.map.remove(raw)?;
        self.weight -= weight(&p);
        Some(p)
    }

    /// Caches the profiles a checkpoint committed, returning the copies they replace: an
    /// older committed copy of a profile changed again since (it was cached while the
    /// newer one waited in the pending layers). Those are their last references; the
    /// caller frees them off the processor thread (dropping them here was 3.6 % of all
    /// samples in `perf` of `spoor rebuild` with 50 audiences and 20 computed traits).
    pub fn extend(
        &mut self,
        items: impl IntoIterator<Item = (u64, Option<Arc<Profile>>)>,
    ) -> Vec<Arc<Profile>> {
        let mut replaced = Vec::new();
        for (raw, p) in items {
            let w = weight(&p);
            if let Some(old) = self.map.insert(raw, p) {
                self.weight -= weight(&old);
                replaced.extend(old);
            }
            self.weight += w;
        }
        replaced
    }

    /// Drops about half of the entries (whichever the hash order puts first) and returns
    /// them, for the caller to free off the processor thread.
    pub fn halve(&mut self) -> Vec<Arc<Profile>> {
        let mut gone = Vec::new();
        let all = std::mem::take(&mut self.map);
        self.map.reserve(all.len() / 2 + 1);
        for (i, (raw, p)) in all.into_iter().enumerate() {
            if i % 2 == 0 {
                self.weight -= weight(&p);
                gone.extend(p);
            } else {
                self.map.insert(raw, p);
            }
        }
        gone
    }

    /// Everything cached, leaving the cache empty.
    pub fn take(&mut self) -> HashMap<u64, Option<Arc<Profile>>> {
        self.weight = 0;
        std::mem::take(&mut self.map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spoor_core::audience::Activation;
    use spoor_core::identity::ProfileId;

    fn profile(raw: u64, states: usize) -> Option<Arc<Profile>> {
        let mut p = Profile::new(ProfileId::from_raw(raw));
        let mut a = Activation::default();
        for i in 0..states {
            a.computed.insert(
                Arc::from(format!("t{i}").as_str()),
                Arc::new(spoor_core::computed::ComputedState::Count { n: 1 }),
            );
        }
        p.activation = a.into();
        Some(Arc::new(p))
    }

    /// The running weight always equals the sum over what is cached, whatever is done.
    #[test]
    fn weight_stays_the_sum_over_the_cache() {
        let mut c = ProfileCache::default();
        let check = |c: &ProfileCache| {
            let sum: usize = c.map.values().map(weight).sum();
            assert_eq!(c.weight(), sum);
        };
        c.extend((0..100).map(|i| (i, profile(i, (i % 30) as usize))));
        // The replaced copies come back, for the caller to free elsewhere.
        let replaced = c.extend([(7, None), (8, profile(8, 70))]);
        let ids: Vec<u64> = replaced.iter().map(|p| p.id.raw()).collect();
        assert_eq!(ids, vec![7, 8]);
        check(&c);
        assert_eq!(weight(&profile(1, 70)), 9);
        assert_eq!(weight(&None), 1);
        c.remove(&3);
        c.remove(&1000);
        check(&c);
        let before = c.map.len();
        let gone = c.halve();
        check(&c);
        // Every profile dropped from the cache comes back (entry 7 is a known absence).
        for p in &gone {
            assert!(!c.map.contains_key(&p.id.raw()));
        }
        let absent_gone = usize::from(!c.map.contains_key(&7));
        assert_eq!(gone.len() + absent_gone + c.map.len(), before);
        assert!(c.map.len() < 100);
        let all = c.take();
        assert!(!all.is_empty());
        assert_eq!(c.weight(), 0);
        assert!(c.map.is_empty());
    }
}
