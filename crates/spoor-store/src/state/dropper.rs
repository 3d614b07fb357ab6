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
//!
//! The thread starts with the first hand-over, not when the state is opened: a new thread
//! takes its creator's niceness and scheduler slice, and the state is opened on whichever
//! thread starts the server, while garbage comes from the processor thread, which runs
//! niced. Started from there, freeing gives way to lookups as the processor does.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::thread::JoinHandle;

/// Batches of garbage that may wait to be freed.
const QUEUE: usize = 64;

type Garbage = Box<dyn Send>;

/// A long-lived thread that drops what it is sent, in order.
pub(super) struct Dropper {
    /// `None` inside: the thread could not be started, garbage is dropped where it is
    /// handed over (correct, only slower).
    thread: OnceLock<Option<Running>>,
}

struct Running {
    tx: SyncSender<Garbage>,
    handle: JoinHandle<()>,
}

fn start() -> Option<Running> {
    let (tx, rx) = sync_channel::<Garbage>(QUEUE);
    match std::thread::Builder::new()
        .name("spoor-free".into())
        .spawn(move || {
            for garbage in rx {
                drop(garbage);
            }
        }) {
        Ok(handle) => Some(Running { tx, handle }),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the freeing thread; freeing inline");
            None
        }
    }
}

impl Dropper {
    /// A dropper whose thread starts with the first [`Self::drop_later`].
    pub fn new() -> Self {
        Self {
            thread: OnceLock::new(),
        }
    }

    /// Drops `v` on the freeing thread (started by the first call, on the caller's
    /// priority).
    pub fn drop_later<T: Send + 'static>(&self, v: T) {
        match self.thread.get_or_init(start) {
            Some(r) => {
                // A send fails only if the thread is gone (it panicked): drop here.
                let _ = r.tx.send(Box::new(v));
            }
            None => drop(v),
        }
    }
}

impl Drop for Dropper {
    /// Everything handed over is freed before the owner goes.
    fn drop(&mut self) {
        if let Some(Some(r)) = self.thread.take() {
            drop(r.tx);
            let _ = r.handle.join();
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

    /// The freeing thread is started by the first hand-over, so it runs at the priority of
    /// the thread handing over (niceness is per thread on Linux and inherited), not of the
    /// thread that created the dropper.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_freeing_thread_takes_the_priority_of_the_first_hand_over() {
        let d = Dropper::new();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setpriority only reads its arguments; who = 0 is this thread.
                assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 7) }, 0);
                let seen = Arc::new(AtomicUsize::new(usize::MAX));
                let s2 = seen.clone();
                struct Nice(Arc<AtomicUsize>);
                impl Drop for Nice {
                    fn drop(&mut self) {
                        // SAFETY: getpriority only reads its arguments.
                        let n = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                        self.0.store(n as usize, Ordering::SeqCst);
                    }
                }
                d.drop_later(Nice(s2));
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while seen.load(Ordering::SeqCst) == usize::MAX {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "nothing freed within 10 s"
                    );
                    std::thread::yield_now();
                }
                assert_eq!(
                    seen.load(Ordering::SeqCst),
                    7,
                    "the freeing thread's niceness"
                );
            });
        });
    }
}
