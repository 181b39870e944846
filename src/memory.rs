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
