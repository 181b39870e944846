//! GEGLU, the UNet feed-forward's gate: `value · gelu(gate)` with the exact (erf) GELU, in one
//! pass over the projection's output. Candle's composition took two strided views, ran the C
//! library's scalar `erff` per element, and multiplied in a third pass.

use super::gemm::Element;
use super::softmax::exp_nonpositive;

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (1.5·10⁻⁷ in exact arithmetic; below 10⁻⁶ absolute
/// in f32, where `1 − poly·e^{−x²}` cancels near zero — GELU multiplies it by `x/2` there),
/// branch-free so it vectorises.
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [0.254_829_6, -0.284_496_74, 1.421_413_7, -1.453_152_1, 1.061_405_4];
    let z = x.abs();
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * exp_nonpositive(-z * z);
    y.copysign(x)
}

/// The exact GELU, `x·(1 + erf(x/√2))/2`.
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// One row: `out[i] = value[i]·gelu(gate[i])`. `inline(always)` so `simd::geglu_row` compiles
/// it for the CPU's vector width.
#[inline(always)]
pub(crate) fn geglu_row<T: Element>(value: &[T], gate: &[T], out: &mut [T]) {
    for ((o, v), g) in out.iter_mut().zip(value).zip(gate) {
        *o = T::from_f32(v.to_f32() * gelu(g.to_f32()));
    }
}

/// GEGLU over rows of `2·inner` values (value half first, gate half second), as diffusers'
/// `GEGLU` splits its projection; returns rows of `inner` values.
pub fn geglu<T: Element>(h: &[T], inner: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::from_f32(0.0); h.len() / 2];
    if inner == 0 {
        return out;
    }
    out.par_chunks_mut(inner).zip(h.par_chunks(2 * inner)).for_each(|(out, row)| {
        let (value, gate) = row.split_at(inner);
        super::simd::geglu_row(value, gate, out);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by its Maclaurin series (converges fast on |x| ≤ 3) or 1 beyond.
    fn erf_reference(x: f64) -> f64 {
        if x.abs() > 5.0 {
            return x.signum();
        }
        let (mut term, mut sum, mut n) = (x, x, 0.0);
        while term.abs() > 1e-17 * sum.abs().max(1e-300) && n < 400.0 {
            n += 1.0;
            term *= -x * x / n;
            sum += term / (2.0 * n + 1.0);
        }
        sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn erf_and_gelu_match_the_definitions() {
        let mut x = -5.0f32;
        while x <= 5.0 {
            let want = erf_reference(x as f64);
            assert!((erf(x) as f64 - want).abs() < 1e-6, "erf({x}) = {} vs {want}", erf(x));
            let g = 0.5 * x as f64 * (1.0 + erf_reference(x as f64 / std::f64::consts::SQRT_2));
            assert!((gelu(x) as f64 - g).abs() < 1e-6 * (1.0 + g.abs()), "gelu({x})");
            x += 0.0173;
        }
        assert_eq!(gelu(0.0), 0.0);
        assert_eq!(gelu(-30.0), 0.0);
        assert_eq!(gelu(30.0), 30.0);
    }

    #[test]
    fn geglu_splits_rows_into_value_and_gate() {
        let inner = 37;
        let h: Vec<f32> = (0..3 * 2 * inner).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
        let out = geglu(&h, inner);
        assert_eq!(out.len(), 3 * inner);
        for r in 0..3 {
            for i in 0..inner {
                let (v, g) = (h[r * 2 * inner + i], h[r * 2 * inner + inner + i]);
                assert!((out[r * inner + i] - v * gelu(g)).abs() < 1e-6);
            }
        }
    }
}
