//! The pending changes as readers see them: two copies ("left-right"), so a reader never
//! waits for the processor.
//!
//! Why: the processor runs at a lower priority (nice 10) than the API. With one copy
//! behind one lock, a processor preempted while it held the write lock left every Profile
//! API read waiting for its next time slice — tens of milliseconds on a busy machine (the
//! `spoor bench e2e` p99 during ingest was 48 ms while p50 was 0.5 ms). Here the processor
//! changes the copy readers are not directed to, points readers at it, and then, once the
//! readers of the other copy have left it, repeats the change there. A reader takes the
//! read lock of the copy it is directed to, or — if the writer still holds that one for an
//! instant — of the other, which the writer then cannot hold (it holds one copy at a time).
//! All the writer's work, map growth and deallocation included, happens on a copy no
//! reader uses.
//!
//! The processor builds its changes privately and publishes them here once per chunk of
//! events ([`super::ProcessorState::publish`]), so this costs two short write sections per
//! chunk, not per change, and a reader sees an event's changes all or none.

use super::pending::Pending;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Two copies of the pending changes; see the module doc.
#[derive(Default)]
pub(super) struct Shared {
    copies: [RwLock<Pending>; 2],
    /// The copy readers are directed to (0 or 1).
    current: AtomicUsize,
    /// Serialises writers (there is one processor per store; this keeps the two copies
    /// equal even if a second one were opened by mistake).
    writer: Mutex<()>,
}

impl Shared {
    /// A read guard on a copy that holds the latest published state, or the one before it
    /// if the writer is between directing readers to the new copy and releasing it. Never
    /// waits for the writer: at most one copy is held (or awaited) by it, and a failed
    /// `try_read` of one means the other is free.
    pub fn read(&self) -> RwLockReadGuard<'_, Pending> {
        loop {
            let i = self.current.load(Ordering::Acquire);
            if let Some(g) = self.copies[i].try_read() {
                return g;
            }
            if let Some(g) = self.copies[1 - i].try_read() {
                return g;
            }
            // Both failed only if the writer moved between the two attempts.
            std::hint::spin_loop();
        }
    }

    /// Applies a change to both copies: first to the one readers are not directed to,
    /// which then becomes the one they are directed to, then — once the readers of the
    /// other have left it — to the other. `f` gets the copy and whether it is the first;
    /// it must change both the same way. Returns the first call's result (the second's is
    /// dropped after its lock is released).
    pub fn write<R>(&self, mut f: impl FnMut(&mut Pending, bool) -> R) -> R {
        let _w = self.writer.lock();
        let old = self.current.load(Ordering::Acquire);
        let new = 1 - old;
        let out = {
            let mut g = self.copies[new].write();
            let out = f(&mut g, true);
            self.current.store(new, Ordering::Release);
            out
        };
        let second = {
            let mut g = self.copies[old].write();
            f(&mut g, false)
        };
        drop(second);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    #[test]
    fn writes_reach_both_copies_and_readers_see_the_latest() {
        let s = Shared::default();
        for i in 1..=5u64 {
            let first = s.write(|g, first| {
                g.seq = i;
                first
            });
            assert!(first);
            assert_eq!(s.read().seq, i);
            assert!(s.copies.iter().all(|c| c.read().seq == i));
        }
    }

    /// A reader that stays inside a copy makes the writer wait, not other readers: they
    /// are directed to the copy already changed. (If readers could block on the writer,
    /// this test would hang.)
    #[test]
    fn a_slow_reader_holds_up_the_writer_but_no_other_reader() {
        let s = Arc::new(Shared::default());
        let slow = s.read();
        assert_eq!(slow.seq, 0);
        let (tx, rx) = mpsc::channel();
        let w = {
            let s = s.clone();
            std::thread::spawn(move || {
                s.write(|g, first| {
                    g.seq = 7;
                    if first {
                        tx.send(()).unwrap();
                    }
                })
            })
        };
        rx.recv().unwrap();
        // The writer has changed the other copy and now waits for `slow` to leave this one.
        loop {
            let seq = s.read().seq;
            assert!(seq == 0 || seq == 7);
            if seq == 7 {
                break;
            }
            std::thread::yield_now();
        }
        for _ in 0..1000 {
            assert_eq!(s.read().seq, 7, "a reader went back to the old state");
        }
        assert!(
            !w.is_finished(),
            "the writer cannot finish while `slow` reads"
        );
        assert_eq!(slow.seq, 0, "a held copy does not change under its reader");
        drop(slow);
        w.join().unwrap();
        assert!(s.copies.iter().all(|c| c.read().seq == 7));
    }
}
