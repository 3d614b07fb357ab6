//! Advice to the OS page cache about the log's files, for scans of the whole log (see
//! `LogReader::read_once`). Advice only: the kernel may ignore
//! it, and nothing read or written depends on it. Linux only; elsewhere no-ops.

use std::fs::File;

/// Drops the pages of `from..to` of a segment from the OS page cache.
#[cfg(target_os = "linux")]
pub(super) fn drop_cached(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(end)) = (libc::off_t::try_from(from), libc::off_t::try_from(to)) else {
        return;
    };
    if end > off {
        // SAFETY: the descriptor is open for the call; the advice reads no memory of ours.
        // Its result is ignored: advice only (see the module docs).
        unsafe { libc::posix_fadvise(file.as_raw_fd(), off, end - off, libc::POSIX_FADV_DONTNEED) };
    }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn drop_cached(_file: &File, _from: u64, _to: u64) {}
