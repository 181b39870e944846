//! CPU kernels that replace candle's where the UNet spends its time. Each is a candle custom op on
//! `CpuStorage`, so models keep calling `engine::ops`; each has tests against the plain formula on
//! odd shapes. Other devices and dtypes fall back to candle's own ops.

pub mod softmax;
