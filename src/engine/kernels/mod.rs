//! CPU kernels that replace candle's where the UNet spends its time: a packed GEMM with run-time
//! chosen SIMD micro-kernels, convolution as an implicit-im2col GEMM, and softmax. Models keep
//! calling `engine::ops`, which routes CPU tensors here; other devices fall back to candle's ops.
//! Each kernel has tests against the plain formula on odd shapes.

pub mod activations;
pub mod attention;
pub mod conv;
pub mod gemm;
pub mod norm;
pub mod simd;
pub mod softmax;
pub mod tensors;
