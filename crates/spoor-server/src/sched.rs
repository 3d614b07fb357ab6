//! Scheduling hints for the threads that answer requests (Linux).
//!
//! On 2 cores the processor, its checkpoint thread and ingest keep both CPUs busy, and a
//! Profile API lookup wakes at least two threads (a server worker, then the client's). Linux
//! ≥ 6.12 schedules fair threads by EEVDF: a thread picked to run keeps the CPU for its
//! slice (1.4 ms by default on 2 cores) before a thread that just woke gets it, unless the
//! woken one asked for a *shorter* slice — then it preempts at once. The server's runtime
//! threads ask for a short slice ([`request_slice`], `server.thread_slice_us`): they run in
//! short bursts anyway, and background work (running niced, `processor.nice`) gives way to
//! them sooner. On older kernels the request is accepted and has no effect. Measured with
//! `spoor bench e2e`: a woken request thread's wait for a CPU fell from p99 2–3 ms to
//! 1.2–1.6 ms; the lookups' end-to-end p99 did not move beyond its spread between runs
//! (`docs/PERFORMANCE.md`).

/// Asks the kernel for a time slice of `us` microseconds for the calling thread (kept
/// within the kernel's bounds, 100 µs to 100 ms); 0 leaves the default. Its policy and
/// niceness stay as they are. A refusal is logged (debug) and otherwise ignored: it only
/// costs latency. Threads the calling thread starts inherit the slice: a tokio runtime
/// asks for it in `on_thread_start`, which covers its workers and its blocking pool.
pub fn request_slice(us: u64) {
    if us == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    if let Err(e) = linux::set_slice_ns(us.saturating_mul(1_000)) {
        tracing::debug!(error = %e, "could not ask for a shorter scheduler slice");
    }
}

/// Gives the calling thread the kernel's default slice back. Background threads (the
/// processor, parsing) call it with their lower priority: one started from a request
/// thread would otherwise inherit its short slice and preempt like one.
pub fn default_slice() {
    #[cfg(target_os = "linux")]
    if let Err(e) = linux::set_slice_ns(0) {
        tracing::debug!(error = %e, "could not reset the scheduler slice");
    }
}

/// The calling thread's slice in nanoseconds (`None` where it cannot be read).
#[cfg(test)]
fn current_slice_ns() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        linux::get().ok().map(|a| a.runtime)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// `struct sched_attr` as of its first version (`SCHED_ATTR_SIZE_VER0`, 48 bytes). For
    /// the fair policies `sched_runtime` is the requested slice (Linux ≥ 6.12).
    #[repr(C)]
    #[derive(Default)]
    pub(super) struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        pub(super) runtime: u64,
        deadline: u64,
        period: u64,
    }

    const VER0: u32 = 48;

    pub(super) fn get() -> std::io::Result<SchedAttr> {
        let mut a = SchedAttr::default();
        // SAFETY: the kernel writes at most `VER0` bytes into `a`, which is that large;
        // pid 0 is the calling thread.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut a as *mut SchedAttr,
                VER0,
                0,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(a)
    }

    /// `ns == 0` asks for the default slice.
    pub(super) fn set_slice_ns(ns: u64) -> std::io::Result<()> {
        let mut a = get()?;
        a.size = VER0;
        a.runtime = ns;
        // SAFETY: `a` is a valid `sched_attr` of `size` bytes, read only; pid 0 is the
        // calling thread.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &a as *const SchedAttr, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux ≥ 6.12 honours a fair thread's requested slice.
    #[cfg(target_os = "linux")]
    fn custom_slices() -> bool {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mut parts = release
            .split(['.', '-'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        (major, minor) >= (6, 12)
    }

    /// On a kernel with custom slices the request shows in the thread's attributes; on
    /// older ones it is accepted and ignored. Either way the thread's niceness stays, and
    /// a thread it starts inherits the slice until it asks for the default.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_thread_can_ask_for_a_short_slice() {
        std::thread::spawn(|| {
            // SAFETY: getpriority only reads its arguments; who = 0 is this thread.
            let nice = || unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let (before, nice_before) = (current_slice_ns(), nice());
            request_slice(200);
            let after = current_slice_ns();
            assert_eq!(nice(), nice_before, "the niceness is left as it was");
            let (Some(b), Some(a)) = (before, after) else {
                println!("skipped: this system does not report a thread's scheduler slice");
                return;
            };
            println!("slice before {b} ns, after {a} ns");
            if custom_slices() {
                assert_eq!(a, 200_000, "the slice after asking for 200 µs");
            } else {
                assert_eq!(a, b, "an older kernel keeps its slice");
            }
            // A thread it starts inherits the slice until it asks for the default.
            let (inherited, reset) = std::thread::spawn(|| {
                let inherited = current_slice_ns();
                default_slice();
                (inherited, current_slice_ns())
            })
            .join()
            .unwrap();
            assert_eq!(inherited, Some(a));
            assert_eq!(reset, Some(b), "the default slice back");
        })
        .join()
        .unwrap();
    }
}
