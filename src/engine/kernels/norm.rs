//! Group normalisation (optionally followed by SiLU) in one pass over the output, in the
//! activations' own storage type: statistics per group in f64 from f32 lanes, then
//! `y = x·scale[c] + shift[c]` (and `y·sigmoid(y)`) written once. Candle's composition made six
//! full-size f32 temporaries per call, which at the VAE's 512² layers (128 channels) was most of a
//! half-precision generation's peak memory, and the separate SiLU one more pass.

use rayon::prelude::*;

use super::gemm::Element;
use super::softmax::exp_nonpositive;

/// Shape of one call: `[batch, channels, spatial…]` split into `groups` groups of channels.
#[derive(Clone, Copy, Debug)]
pub struct GroupShape {
    /// Batch items.
    pub batch: usize,
    /// Channels (a multiple of `groups`).
    pub channels: usize,
    /// Values per channel (height × width).
    pub spatial: usize,
    /// Groups.
    pub groups: usize,
}

/// `x·sigmoid(x)`, branch-free so it vectorises.
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    let e = exp_nonpositive(-x.abs());
    let sigmoid = if x >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
    x * sigmoid
}

/// A group normalisation reduced to what it does to each channel of each picture:
/// `y = x·scale + shift` (then SiLU), indexed `[batch·channels]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChannelAffine {
    /// Per-channel factor.
    pub scale: Vec<f32>,
    /// Per-channel offset.
    pub shift: Vec<f32>,
    /// Whether SiLU follows.
    pub silu: bool,
}

impl ChannelAffine {
    /// The statistics of `x` (contiguous NC…) turned into each channel's factor and offset.
    pub fn of<T: Element>(
        x: &[T],
        shape: GroupShape,
        weight: &[f32],
        bias: &[f32],
        eps: f64,
        silu: bool,
    ) -> Self {
        assert_eq!(x.len(), shape.batch * shape.channels * shape.spatial, "group_norm: input length");
        assert!(weight.len() == shape.channels && bias.len() == shape.channels, "group_norm: affine length");
        let per_group = shape.channels / shape.groups * shape.spatial;
        let moments: Vec<(f64, f64)> = if per_group == 0 {
            vec![(0.0, 0.0); shape.batch * shape.groups]
        } else {
            x.par_chunks(per_group).map(moments).collect()
        };
        let per_channel = shape.channels / shape.groups;
        let (mut scale, mut shift) = (Vec::new(), Vec::new());
        for (index, &(mean, var)) in moments.iter().enumerate() {
            let inv_std = 1.0 / (var + eps).sqrt();
            let first_channel = (index % shape.groups) * per_channel;
            for c in first_channel..first_channel + per_channel {
                let w = f64::from(weight[c]);
                scale.push((inv_std * w) as f32);
                shift.push((f64::from(bias[c]) - mean * inv_std * w) as f32);
            }
        }
        Self { scale, shift, silu }
    }

    /// Applies channel `c`'s map to `values` read from storage type `T`, rounding each result to
    /// `T` as a stored normalised picture would be, so reading through the map gives exactly what
    /// normalising first and reading the result gives.
    #[inline]
    pub fn apply<T: Element>(&self, c: usize, values: &mut [f32]) {
        let (scale, shift) = (self.scale[c], self.shift[c]);
        if self.silu {
            values.iter_mut().for_each(|v| *v = T::from_f32(silu(*v * scale + shift)).to_f32());
        } else {
            values.iter_mut().for_each(|v| *v = T::from_f32(*v * scale + shift).to_f32());
        }
    }
}

/// Mean and variance (biased, as PyTorch's) of one group, two passes for accuracy.
fn moments<T: Element>(values: &[T]) -> (f64, f64) {
    const LANES: usize = 16;
    let lane_sum = |f: &dyn Fn(f32) -> f32| -> f64 {
        let mut total = 0f64;
        for block in values.chunks(4096) {
            let mut lanes = [0f32; LANES];
            let mut chunks = block.chunks_exact(LANES);
            for chunk in &mut chunks {
                for (l, v) in lanes.iter_mut().zip(chunk) {
                    *l += f(v.to_f32());
                }
            }
            total += lanes.iter().map(|&l| f64::from(l)).sum::<f64>();
            total += chunks.remainder().iter().map(|v| f64::from(f(v.to_f32()))).sum::<f64>();
        }
        total
    };
    let n = values.len().max(1) as f64;
    let mean = lane_sum(&|v| v) / n;
    let m = mean as f32;
    let var = lane_sum(&|v| (v - m) * (v - m)) / n;
    (mean, var)
}

/// `group_norm(x)·weight + bias`, then SiLU when `silu_after`; `x` contiguous NC….
pub fn group_norm<T: Element>(
    x: &[T],
    shape: GroupShape,
    weight: &[f32],
    bias: &[f32],
    eps: f64,
    silu_after: bool,
) -> Vec<T> {
    let affine = ChannelAffine::of(x, shape, weight, bias, eps, silu_after);
    let mut out = vec![T::from_f32(0.0); x.len()];
    if shape.spatial == 0 {
        return out;
    }
    out.par_chunks_mut(shape.spatial).zip(x.par_chunks(shape.spatial)).enumerate().for_each(
        |(c, (out, x))| {
            let (scale, shift) = (affine.scale[c], affine.shift[c]);
            if silu_after {
                for (o, v) in out.iter_mut().zip(x) {
                    *o = T::from_f32(silu(v.to_f32() * scale + shift));
                }
            } else {
                for (o, v) in out.iter_mut().zip(x) {
                    *o = T::from_f32(v.to_f32() * scale + shift);
                }
            }
        },
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(x: &[f32], s: GroupShape, w: &[f32], b: &[f32], eps: f64, silu_after: bool) -> Vec<f64> {
        let per = s.channels / s.groups * s.spatial;
        let mut out = vec![0f64; x.len()];
        for (gi, group) in x.chunks(per).enumerate() {
            let n = per as f64;
            let mean = group.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = group.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            for (i, &v) in group.iter().enumerate() {
                let c = (gi % s.groups) * (s.channels / s.groups) + i / s.spatial;
                let y = (v as f64 - mean) / (var + eps).sqrt() * w[c] as f64 + b[c] as f64;
                out[gi * per + i] = if silu_after { y / (1.0 + (-y).exp()) } else { y };
            }
        }
        out
    }

    #[test]
    fn matches_the_formula_with_and_without_silu() {
        for (batch, channels, spatial, groups) in
            [(1, 4, 9, 2), (2, 6, 7, 3), (1, 32, 33, 32), (1, 5, 1, 1), (2, 64, 100, 32)]
        {
            let s = GroupShape { batch, channels, spatial, groups };
            let x: Vec<f32> =
                (0..batch * channels * spatial).map(|i| (i as f32 * 0.71).sin() * 3.0 + 1.5).collect();
            let w: Vec<f32> = (0..channels).map(|i| 0.5 + i as f32 * 0.1).collect();
            let b: Vec<f32> = (0..channels).map(|i| (i as f32).cos()).collect();
            for silu_after in [false, true] {
                let want = plain(&x, s, &w, &b, 1e-5, silu_after);
                let got = group_norm(&x, s, &w, &b, 1e-5, silu_after);
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g as f64 - w).abs() < 2e-5 * (1.0 + w.abs()),
                        "{s:?} silu {silu_after}: {i}: {g} vs {w}"
                    );
                }
            }
            let half: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            let got = group_norm(&half, s, &w, &b, 1e-5, true);
            let rounded: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
            for (g, w) in got.iter().zip(plain(&rounded, s, &w, &b, 1e-5, true)) {
                assert!((g.to_f32() as f64 - w).abs() < 4e-3 * (1.0 + w.abs()), "f16");
            }
        }
    }
}
