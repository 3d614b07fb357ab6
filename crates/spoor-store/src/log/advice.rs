//! Advice to the OS page cache about the log's files, for scans of the whole log (see
//! `LogReader::read_once`). Advice only: the kernel may ignore
//! it, and nothing read or written depends on it. Linux only; elsewhere no-ops.

use std::fs::File;

/// Drops the pages of `from..to` of a segment from the OS page cache.
#[cfg(target_os = "linux")]
pub(super) fn drop_cached(file: &File, from: u64, to: u64) {
    if to > from {
        advise(file, from, to - from, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(target_os = "linux")]
fn advise(file: &File, off: u64, len: u64, advice: libc::c_int) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(off), Ok(len)) = (libc::off_t::try_from(off), libc::off_t::try_from(len)) else {
        return false;
    };
    // SAFETY: the descriptor is open for the call; the advice reads no memory of ours.
    unsafe { libc::posix_fadvise(file.as_raw_fd(), off, len, advice) == 0 }
}

#[cfg(not(target_os = "linux"))]
pub(super) fn drop_cached(_file: &File, _from: u64, _to: u64) {}
