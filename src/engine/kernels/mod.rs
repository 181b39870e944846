//! CPU kernels that replace candle's where the UNet and VAE spend their time: a packed GEMM with
//! run-time chosen SIMD micro-kernels, convolution as an implicit-im2col GEMM, multi-head
//! attention, softmax, GroupNorm(+SiLU) and GEGLU. Models keep calling `engine::ops`, which routes
//! CPU tensors here through `tensors`; other devices fall back to candle's ops. Each kernel has
//! tests against the plain formula on odd shapes.

pub mod activations;
pub mod attention;
pub mod conv;
pub mod gemm;
pub mod machine;
pub mod norm;
pub mod pairs;
pub mod simd;
pub mod softmax;
pub mod tensors;

/// Deterministic, varied test values: `amplitude·sin(i·step + salt)`.
#[cfg(test)]
fn wave(n: usize, step: f32, salt: f32, amplitude: f32) -> Vec<f32> {
    (0..n).map(|i| ((i as f32) * step + salt).sin() * amplitude).collect()
}
