//! Softmax over the last dimension of a contiguous f32 tensor, in place and rows in parallel.
//!
//! Attention at 512² computes hundreds of millions of exponentials per UNet evaluation; candle's
//! softmax calls the C library's scalar `expf` for each, which was a fifth of a 512² evaluation. Here
//! the exponential is a branch-free polynomial (Cephes' `expf` coefficients, ~1 ulp on the range
//! softmax uses) that the compiler vectorises, and the row sums use independent lanes.

use candle_core::{CpuStorage, InplaceOp1, Layout, Tensor};
use rayon::prelude::*;

use super::pairs::bf16_bits;

/// `e^x` for `x ≤ 0` (larger inputs are not needed after subtracting the row maximum), flushing
/// below `-87` to a value that is zero for every practical sum.
#[inline(always)]
pub(crate) fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5·2²³ rounds to the nearest integer without a rounding instruction (SSE2 has none).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let z = r * r;
    let p = ((((1.987_569_2e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let y = p * z + r + 1.0;
    // 2ⁿ from the integer sitting in the low mantissa bits of `shifted`.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    y * f32::from_bits(((n_int + 127) as u32) << 23)
}

/// Softmax of one row, in place.
fn softmax_row(row: &mut [f32]) {
    super::simd::softmax_row(row, 1.0);
}

/// Softmax of `scale·row` (`scale > 0`), in place: attention folds its `1/√d` in here. Compiled
/// once per instruction set (see `simd::softmax_row`), so keep it `inline(always)`.
#[inline(always)]
pub(crate) fn softmax_row_scaled(row: &mut [f32], scale: f32) {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l = l.max(x);
        }
    }
    let max = chunks.remainder().iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    if max == f32::NEG_INFINITY || max.is_nan() {
        // Every position hidden (or a NaN): candle gives NaN, so keep the same meaning.
        row.iter_mut().for_each(|x| *x = f32::NAN);
        return;
    }
    for x in row.iter_mut() {
        *x = exp_nonpositive((*x - max) * scale);
    }
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (l, &x) in lanes.iter_mut().zip(chunk) {
            *l += x;
        }
    }
    let sum = lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>();
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// Softmax down each of the first `cols` columns of `st` (`rows` rows, `ld` apart) of `scale·st`,
/// leaving the exponentials unnormalised in place and the column sums' reciprocals in `inv_sums`
/// (`cols` long): attention divides its output rows instead of every probability. Rows are
/// contiguous, so every pass runs across columns in vector lanes. `inline(always)` for the same
/// reason as [`softmax_row_scaled`].
#[inline(always)]
pub(crate) fn softmax_columns(
    st: &mut [f32],
    ld: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    inv_sums: &mut [f32],
) {
    let inv_sums = &mut inv_sums[..cols];
    let max = column_maxima(st, ld, rows, cols);
    inv_sums.fill(0.0);
    for row in st.chunks_mut(ld).take(rows) {
        for ((x, &m), s) in row[..cols].iter_mut().zip(&max).zip(inv_sums.iter_mut()) {
            *x = exp_nonpositive((*x - m) * scale);
            *s += *x;
        }
    }
    invert_sums(inv_sums, &max);
}

/// Column sums to their reciprocals; a column with every key hidden (or a NaN) gives NaN, as the
/// row softmax does.
#[inline(always)]
fn invert_sums(sums: &mut [f32], max: &[f32]) {
    for (s, &m) in sums.iter_mut().zip(max) {
        *s = if m == f32::NEG_INFINITY || m.is_nan() { f32::NAN } else { 1.0 / *s };
    }
}

/// The maximum of each of the first `cols` columns of `st` (`rows` rows, `ld` apart).
#[inline(always)]
fn column_maxima(st: &[f32], ld: usize, rows: usize, cols: usize) -> Vec<f32> {
    let mut max = vec![f32::NEG_INFINITY; cols];
    for row in st.chunks(ld).take(rows) {
        for (m, &x) in max.iter_mut().zip(&row[..cols]) {
            *m = m.max(x);
        }
    }
    max
}

/// [`softmax_columns`] for the pair kernels: the same maxima, exponentials and sums, but the
/// exponentials go straight into bf16 pairs (rows `2q` and `2q + 1` of `st` side by side) laid out
/// as the left operand of `O = P·V`, instead of back into `st`; attention's second product then
/// never rereads them to round. One set of panels per chunk of `chunk` rows (even), each panel `mr`
/// columns: `out[c·panels·(chunk/2)·mr + (panel·kp + q)·mr + lane]`, `kp` being the chunk's rows
/// halved and rounded up; lanes past `cols` and the missing odd row of an odd chunk are zero.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn softmax_columns_pairs(
    st: &[f32],
    ld: usize,
    rows: usize,
    cols: usize,
    scale: f32,
    inv_sums: &mut [f32],
    chunk: usize,
    mr: usize,
    out: &mut [u32],
) {
    let inv_sums = &mut inv_sums[..cols];
    let max = column_maxima(st, ld, rows, cols);
    inv_sums.fill(0.0);
    // Rows are summed in order, as `softmax_columns` sums them, so the sums agree to the bit.
    let mut exps = |row: usize, into: &mut [f32]| {
        for (((e, &x), &m), s) in
            into.iter_mut().zip(&st[row * ld..row * ld + cols]).zip(&max).zip(inv_sums.iter_mut())
        {
            *e = exp_nonpositive((x - m) * scale);
            *s += *e;
        }
    };
    let (mut even, mut odd) = (vec![0f32; cols], vec![0f32; cols]);
    let mut two_rows = vec![0u32; cols];
    let panels = cols.div_ceil(mr);
    for c0 in (0..rows).step_by(chunk) {
        let kc = chunk.min(rows - c0);
        let kp = kc.div_ceil(2);
        let base = c0 / chunk * panels * (chunk / 2) * mr;
        for q in 0..kp {
            exps(c0 + 2 * q, &mut even);
            if 2 * q + 1 < kc {
                exps(c0 + 2 * q + 1, &mut odd);
            } else {
                odd.fill(0.0);
            }
            // Pair across full vectors first; panels are then plain copies of `mr` lanes.
            for ((p, &e), &o) in two_rows.iter_mut().zip(&even).zip(&odd) {
                *p = u32::from(bf16_bits(e)) | u32::from(bf16_bits(o)) << 16;
            }
            for (panel, lanes) in two_rows.chunks(mr).enumerate() {
                let dst = &mut out[base + (panel * kp + q) * mr..][..mr];
                dst[..lanes.len()].copy_from_slice(lanes);
                dst[lanes.len()..].fill(0);
            }
        }
    }
    invert_sums(inv_sums, &max);
}

struct SoftmaxLastDim;

impl InplaceOp1 for SoftmaxLastDim {
    fn name(&self) -> &'static str {
        "easel-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("easel softmax: f32 only");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("easel softmax: contiguous tensors only");
        };
        let dim = layout.dims().last().copied().unwrap_or(1).max(1);
        data[start..end].par_chunks_mut(dim).for_each(softmax_row);
        Ok(())
    }
}

/// Softmax over the last dimension; the fast kernel for f32 CPU tensors, candle's op otherwise.
///
/// The result is written over `x`'s storage when `x` is contiguous, so `x` must be a tensor no
/// one else reads (attention scores made just before); hence crate-private.
pub(crate) fn softmax_last_dim(x: Tensor) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    if !x.device().is_cpu() || x.dtype() != candle_core::DType::F32 {
        return candle_nn::ops::softmax_last_dim(&x);
    }
    x.inplace_op1(&SoftmaxLastDim)?;
    Ok(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn the_polynomial_exp_is_within_two_ulp_where_softmax_uses_it() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 0.0 {
            let ours = f64::from(exp_nonpositive(x));
            let exact = f64::from(x).exp();
            worst = worst.max((ours - exact).abs() / exact);
            x += 0.0137;
        }
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(-1000.0) < 1e-37);
    }

    fn reference(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
        let e: Vec<f64> = row.iter().map(|&x| (f64::from(x) - max).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / s).collect()
    }

    #[test]
    fn pairs_equal_the_softmax_then_packing_to_the_bit() {
        use crate::engine::kernels::gemm::{PackA, Strided};
        // Odd key counts (77 text tokens; a last chunk of 9), columns not a multiple of the panel.
        for (rows, cols, chunk, mr) in [(77, 37, 256, 12), (41, 128, 16, 12), (32, 5, 8, 16)] {
            let ld = cols + 3;
            let st: Vec<f32> = crate::engine::kernels::wave(rows * ld, 0.377, 0.4, 6.0);
            let mut expected_st = st.clone();
            let mut expected_sums = vec![0f32; cols];
            softmax_columns(&mut expected_st, ld, rows, cols, 0.3, &mut expected_sums);
            let chunk_len = cols.div_ceil(mr) * mr * chunk / 2;
            let mut pairs = vec![u32::MAX; rows.div_ceil(chunk) * chunk_len];
            let mut sums = vec![0f32; cols];
            softmax_columns_pairs(&st, ld, rows, cols, 0.3, &mut sums, chunk, mr, &mut pairs);
            assert_eq!(sums, expected_sums, "{rows}×{cols}");
            for c0 in (0..rows).step_by(chunk) {
                let kc = chunk.min(rows - c0);
                let mut packed = vec![0u32; cols.div_ceil(mr) * mr * kc.div_ceil(2)];
                Strided::transposed(&expected_st[c0 * ld..], ld).pack_a_pairs(
                    0,
                    cols,
                    0,
                    kc,
                    mr,
                    &mut packed,
                );
                let got = &pairs[c0 / chunk * chunk_len..][..packed.len()];
                assert_eq!(got, &packed[..], "{rows}×{cols}, chunk at {c0}");
            }
        }
    }

    #[test]
    fn rows_of_odd_lengths_match_the_formula() -> candle_core::Result<()> {
        for (rows, dim) in [(1, 1), (3, 17), (5, 33), (2, 1000), (7, 4099)] {
            let values: Vec<f32> = (0..rows * dim)
                .map(|i| ((i as f32 * 0.377).sin() * 9.0) - if i % 5 == 0 { 1e4 } else { 0.0 })
                .collect();
            let t = Tensor::from_vec(values.clone(), (rows, dim), &Device::Cpu)?;
            let ours: Vec<f32> = softmax_last_dim(t)?.flatten_all()?.to_vec1()?;
            for r in 0..rows {
                let want = reference(&values[r * dim..(r + 1) * dim]);
                for (a, b) in ours[r * dim..(r + 1) * dim].iter().zip(&want) {
                    assert!((f64::from(*a) - b).abs() < 1e-6 + 1e-5 * b, "{rows}×{dim}: {a} vs {b}");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn strided_inputs_are_copied_and_other_dtypes_take_candles_path() -> candle_core::Result<()> {
        let t = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((3, 4))?.t()?;
        let want: Vec<f32> = candle_nn::ops::softmax_last_dim(&t.contiguous()?)?.flatten_all()?.to_vec1()?;
        let ours: Vec<f32> = softmax_last_dim(t.clone())?.flatten_all()?.to_vec1()?;
        for (a, b) in ours.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6);
        }
        let f64s = t.to_dtype(candle_core::DType::F64)?;
        assert_eq!(softmax_last_dim(f64s)?.dims(), &[4, 3]);
        Ok(())
    }
}
