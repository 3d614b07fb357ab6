//! The in-memory dedupe index of the writer: dedupe keys seen within a time window.
//!
//! Keys live in a `HashMap<u64, i64>` (key → received_ms) plus a FIFO of insertions, so
//! pruning as time passes costs O(expired) and never scans the map. The FIFO is in arrival
//! order, which is received_ms order up to small clock jitter between handlers; an entry
//! that is out of order just lives a little longer. Memory is bounded by `max_keys`: past
//! it the oldest keys are forgotten early (a duplicate older than that is then appended
//! again, which downstream processing must tolerate anyway).

use std::collections::{HashMap, VecDeque};

pub(crate) struct Dedupe {
    window_ms: i64,
    max_keys: usize,
    seen: HashMap<u64, i64>,
    order: VecDeque<(i64, u64)>,
}

impl Dedupe {
    pub(crate) fn new(window_ms: i64, max_keys: usize) -> Self {
        Dedupe {
            window_ms,
            max_keys,
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.window_ms > 0 && self.max_keys > 0
    }

    /// Forgets keys received before `now_ms - window`, and the oldest beyond `max_keys`.
    pub(crate) fn prune(&mut self, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(self.window_ms);
        while let Some(&(t, k)) = self.order.front() {
            if t >= cutoff && self.order.len() <= self.max_keys {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&t) {
                self.seen.remove(&k);
            }
        }
    }

    /// Records `key` as received at `received_ms`. Returns `Err(())` if it is a duplicate
    /// (seen within the window), else `Ok(previous)` where `previous` is what
    /// [`undo`](Self::undo) needs to take the insertion back.
    pub(crate) fn insert(&mut self, key: u64, received_ms: i64) -> Result<Option<i64>, ()> {
        let prev = self.seen.get(&key).copied();
        if let Some(p) = prev {
            if received_ms.saturating_sub(p) <= self.window_ms {
                return Err(());
            }
        }
        self.seen.insert(key, received_ms);
        self.order.push_back((received_ms, key));
        Ok(prev)
    }

    /// Takes back an insertion whose records were not made durable, so a retry is not
    /// mistaken for a duplicate.
    pub(crate) fn undo(&mut self, key: u64, prev: Option<i64>) {
        match prev {
            Some(p) => self.seen.insert(key, p),
            None => self.seen.remove(&key),
        };
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_prune_and_cap() {
        let mut d = Dedupe::new(1_000, 3);
        assert_eq!(d.insert(1, 0), Ok(None));
        assert_eq!(d.insert(1, 500), Err(()));
        assert_eq!(d.insert(2, 600), Ok(None));
        d.prune(1_200); // key 1 (t=0) expired
        assert_eq!(d.len(), 1);
        assert_eq!(d.insert(1, 1_200), Ok(None));
        assert_eq!(d.insert(3, 1_200), Ok(None));
        assert_eq!(d.insert(4, 1_200), Ok(None));
        d.prune(1_200); // cap of 3: key 2 goes
        assert_eq!(d.insert(2, 1_300), Ok(None));
        let prev = d.insert(5, 1_300).unwrap();
        d.undo(5, prev);
        assert_eq!(d.insert(5, 1_300), Ok(None));
    }
}
