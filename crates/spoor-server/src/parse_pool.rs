//! The threads that parse and normalise ingest batches, at a lower priority than the
//! runtime workers that answer API reads.
//!
//! Why: parsing a 500-event batch takes milliseconds of CPU, and a busy ingest keeps
//! several of them running. On tokio's blocking pool they ran at the same priority as the
//! workers answering Profile API lookups, so on a small machine a lookup waited for a CPU
//! behind them. Here they run at nice [`PARSE_NICE`] (between the API and the processor at
//! nice 10): when the CPU is short, reads go first, batches a little later — an ingest
//! answer waits for its fsync anyway. On an idle machine it makes no difference.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

/// Niceness of the parse threads (Linux; ignored elsewhere).
pub const PARSE_NICE: i32 = 5;

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of parse threads; they exit when the pool is dropped.
pub struct ParsePool {
    jobs: mpsc::Sender<Job>,
}

impl ParsePool {
    /// One thread per core (at least two).
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let (jobs, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("spoor-parse-{i}"))
                .spawn(move || {
                    crate::processor::lower_priority(PARSE_NICE);
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        // A panicking job drops its reply sender: the caller sees an error.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot start a parse thread");
            }
        }
        Self { jobs }
    }

    /// Runs `f` on a parse thread and returns its result (`None` if it panicked or no
    /// parse thread runs).
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .ok()?;
        rx.await.ok()
    }
}

impl Default for ParsePool {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_and_a_panic_is_an_error_not_a_lost_thread() {
        let pool = ParsePool::new();
        assert_eq!(pool.run(|| 6 * 7).await, Some(42));
        assert_eq!(pool.run(|| -> u8 { panic!("bad batch") }).await, None);
        let n = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        // Every thread survives a panic: more jobs than threads still all complete.
        for _ in 0..n {
            assert_eq!(pool.run(|| -> u8 { panic!("again") }).await, None);
        }
        let all = futures_all(&pool, 4 * n).await;
        assert_eq!(all, (0..4 * n).collect::<Vec<_>>());
    }

    async fn futures_all(pool: &ParsePool, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        for i in 0..n {
            out.push(pool.run(move || i).await.unwrap());
        }
        out
    }
}
