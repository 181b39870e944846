//! What this CPU is and which kernels run on it, in words: printed by the benchmarks so figures
//! from different machines are never mixed up, and handy in bug reports.

use super::simd::Kernel;

/// The processor's name as the system reports it (the architecture where it does not say).
pub fn cpu_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, name)| name.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// The vector extensions the kernels care about that this CPU has.
pub fn extensions() -> Vec<&'static str> {
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($name:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($name) {
                    found.push($name);
                })*
            };
        }
        check!("avx2", "fma", "avx512f", "avx512bf16", "avx512fp16");
        // Rust cannot detect AMX on stable; Linux lists it among the CPU's flags when it allows it.
        let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let flags = flags.lines().find(|l| l.starts_with("flags")).unwrap_or_default();
        for (flag, name) in [("amx_tile", "amx-tile"), ("amx_bf16", "amx-bf16")] {
            if flags.split_whitespace().any(|f| f == flag) {
                found.push(name);
            }
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            found.push("neon");
        }
    }
    found
}

/// One line: the CPU, its extensions, the f32 micro-kernel and its tile, how bf16 products run,
/// and the GEMM's blocking.
pub fn summary() -> String {
    let f32_kernel = Kernel::best();
    let bf16 = if Kernel::uses_pairs() {
        "bf16 on AVX-512 BF16 pairs".to_string()
    } else {
        "bf16 widened to f32".to_string()
    };
    let (kc, mc, nc) = super::gemm::blocking();
    format!(
        "{} ({} threads); extensions: {}; kernel {:?} {}×{}; {bf16}; blocks KC {kc}, MC {mc}, NC {nc}",
        cpu_name(),
        candle_core::utils::get_num_threads(),
        match extensions() {
            e if e.is_empty() => "none".to_string(),
            e => e.join(" "),
        },
        f32_kernel.isa(),
        f32_kernel.mr,
        f32_kernel.nr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_names_the_kernel_in_use_and_the_blocking() {
        let line = summary();
        assert!(line.contains(&format!("kernel {:?}", Kernel::best().isa())), "{line}");
        assert!(line.contains("blocks KC"), "{line}");
        assert!(!cpu_name().is_empty());
    }
}
