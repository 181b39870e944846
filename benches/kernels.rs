//! GFLOP/s of the CPU kernels against candle's on the shapes an SD 1.5 UNet evaluation at 512²
//! spends its time in, measured back to back in one process.
//!
//! Run: `cargo bench --bench kernels` (set `EASEL_CPU_KERNEL=avx2|avx512|portable` to pick the
//! micro-kernel; the default is the fastest the CPU has).

use std::time::Instant;

use candle_core::{Device, Tensor};
use easel::engine::kernels::gemm::{gemm, Strided};
use easel::engine::kernels::simd::Kernel;

/// Median seconds of `runs` calls after one warm-up.
fn median_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn main() -> candle_core::Result<()> {
    println!("machine: {}", easel::engine::kernels::machine::summary());
    println!("micro-kernel: {:?}, threads: {}", Kernel::best().isa(), rayon::current_num_threads());
    println!("{:<34} {:>12} {:>12} {:>7}", "shape (m×k · k×n)", "candle GF/s", "easel GF/s", "ratio");
    // Linear layers (tokens × in · in × out), a 3×3 conv as im2col (out × 9·in · 9·in × pixels),
    // attention scores and values per head.
    for (name, m, k, n) in [
        ("linear 4096×320·320×320", 4096, 320, 320),
        ("linear 4096×320·320×2560", 4096, 320, 2560),
        ("linear 4096×1280·1280×320", 4096, 1280, 320),
        ("conv 320×2880·2880×4096", 320, 2880, 4096),
        ("conv 1280×11520·11520×64", 1280, 11520, 64),
        ("scores 4096×40·40×4096", 4096, 40, 4096),
        ("values 4096×4096·4096×40", 4096, 4096, 40),
    ] {
        let a = Tensor::randn(0f32, 1., (m, k), &Device::Cpu)?;
        let b = Tensor::randn(0f32, 1., (k, n), &Device::Cpu)?;
        let flops = 2.0 * (m * k * n) as f64;
        let candle = median_secs(5, || {
            a.matmul(&b).expect("matmul");
        });
        let (av, bv) = (a.flatten_all()?.to_vec1::<f32>()?, b.flatten_all()?.to_vec1::<f32>()?);
        let mut c = vec![0f32; m * n];
        let ours = median_secs(5, || {
            c.fill(0.0);
            gemm(m, n, k, &Strided::row_major(&av, k), &Strided::row_major(&bv, n), &mut c, n);
        });
        println!(
            "{name:<34} {:>12.1} {:>12.1} {:>7.2}",
            flops / candle / 1e9,
            flops / ours / 1e9,
            candle / ours
        );
    }
    Ok(())
}
