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

/// Asks glibc to keep freed blocks of up to 512 MiB for reuse instead of mapping every large tensor
/// afresh (its own limit is 32 MiB). A fresh mapping is zero-filled by the kernel page by page on
/// first touch, which took about 8 % of a bf16 512² UNet evaluation; reused blocks cost nothing.
/// Peak memory is unchanged (it is what is live at once); [`release_unused`] hands the held blocks
/// back after each job and between VAE levels. Call once at start-up; elsewhere this does nothing.
pub fn reuse_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only changes allocator parameters; it takes no pointers and is called before
    // any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 512 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
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
