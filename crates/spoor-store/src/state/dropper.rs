//! Frees what the processor no longer needs on a thread of its own.
//!
//! Publishing a chunk of events replaces every profile it changed; the replaced copy is
//! the last reference to the profile as it was, and freeing it (its maps, its audience and
//! computed-trait states) was 8–9 % of the processor thread's samples in `perf` of a
//! rebuild with audiences defined (`docs/ARCHITECTURE.md`, "Freeing happens on the second
//! core"). Frozen layers of up to a million entries go the same way after a checkpoint.
//! The processor thread hands them over here and goes on; the second core frees them.
//!
//! The hand-over is bounded: if freeing falls behind by [`QUEUE`] batches, the processor
//! waits for it (memory held by garbage stays bounded).

use std::sync::mpsc::{sync_channel, SyncSender};
use std::thread::JoinHandle;

/// Batches of garbage that may wait to be freed.
const QUEUE: usize = 64;

type Garbage = Box<dyn Send>;

/// A long-lived thread that drops what it is sent, in order.
pub(super) struct Dropper {
    tx: Option<SyncSender<Garbage>>,
    handle: Option<JoinHandle<()>>,
}

impl Dropper {
    /// Starts the thread. If it cannot be started, garbage is dropped where it is handed
    /// over (correct, only slower).
    pub fn new() -> Self {
        let (tx, rx) = sync_channel::<Garbage>(QUEUE);
        match std::thread::Builder::new()
            .name("spoor-free".into())
            .spawn(move || {
                for garbage in rx {
                    drop(garbage);
                }
            }) {
            Ok(handle) => Self {
                tx: Some(tx),
                handle: Some(handle),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the freeing thread; freeing inline");
                Self {
                    tx: None,
                    handle: None,
                }
            }
        }
    }

    /// Drops `v` on the freeing thread.
    pub fn drop_later<T: Send + 'static>(&self, v: T) {
        match &self.tx {
            Some(tx) => {
                // A send fails only if the thread is gone (it panicked): drop here.
                let _ = tx.send(Box::new(v));
            }
            None => drop(v),
        }
    }
}

impl Drop for Dropper {
    /// Everything handed over is freed before the owner goes.
    fn drop(&mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    struct Counted(Arc<AtomicUsize>, std::thread::ThreadId);
    impl Drop for Counted {
        fn drop(&mut self) {
            assert_ne!(
                std::thread::current().id(),
                self.1,
                "dropped on the thread that handed it over"
            );
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Everything handed over is dropped, on the other thread, by the time the dropper
    /// itself is gone; more than the queue holds does not deadlock.
    #[test]
    fn drops_everything_elsewhere_before_it_goes() {
        let n = Arc::new(AtomicUsize::new(0));
        let d = Dropper::new();
        let me = std::thread::current().id();
        for _ in 0..(QUEUE * 3) {
            d.drop_later(vec![Counted(n.clone(), me), Counted(n.clone(), me)]);
        }
        drop(d);
        assert_eq!(n.load(Ordering::SeqCst), QUEUE * 6);
    }
}
