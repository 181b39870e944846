//! Process memory readings for benchmarks and the metrics table: peak resident memory (Linux's
//! VmHWM), which can be reset so each configuration of a comparison gets its own peak.

/// Peak resident memory of this process since start or the last [`reset_peak_rss`].
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Starts a new peak from the current resident size (Linux: `5` into `/proc/self/clear_refs`).
/// Elsewhere this does nothing and the peak stays the process's.
pub fn reset_peak_rss() {
    // Failure only means the reading covers the whole run, which the caller states.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Hands memory the allocator holds but no longer uses back to the system. glibc keeps freed
/// blocks below its (self-raising) mmap threshold in the heap, so a pass that frees tensors of
/// 16–32 MiB, such as each level of a VAE decode, leaves them resident while the next level
/// allocates larger ones; releasing between levels keeps the peak at what is live. A few
/// milliseconds per call; elsewhere this does nothing.
pub fn release_unused() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no pointers and
    // is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
