//! bf16 depth pairs, the panel layout of the AVX-512 BF16 kernels: two consecutive depths of one
//! row (or column) as two bf16 in one `u32`, the even depth in the low half, zero past an odd
//! last depth. Operands stored in bf16 are copied into pairs bit for bit; f32 values are rounded
//! to nearest even on the way, as PyTorch's bf16 autocast rounds them.
//!
//! Packers write pairs directly where they can (strided matrices from their storage, a
//! convolution's patches from its gathered lines); any other packer's f32 panels are rewritten
//! as pairs a few at a time, in a scratch buffer that stays in L2.

use std::cell::RefCell;

use super::gemm::{with_buffer, Element, PackA, PackB};

/// B panels packed into f32 at a time before they are rewritten as pairs.
const GROUP: usize = 4;

thread_local! {
    /// f32 panels on their way to becoming pairs.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `v` rounded to the nearest bf16 (ties to even), as bits; NaN stays NaN. The same value as
/// `half::bf16::from_f32`, written without branches so loops over it vectorise.
#[inline(always)]
pub fn bf16_bits(v: f32) -> u16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if v.is_nan() {
        ((bits >> 16) | 0x40) as u16
    } else {
        rounded
    }
}

/// Two values as one pair.
#[inline(always)]
fn pair<T: Element>(even: T, odd: T) -> u32 {
    u32::from(even.to_bf16_bits()) | u32::from(odd.to_bf16_bits()) << 16
}

/// `out[i] = pair(even[i], odd[i])`, the high halves zero where there is no odd line.
pub fn pair_rows<T: Element>(even: &[T], odd: Option<&[T]>, out: &mut [u32]) {
    match odd {
        Some(odd) => out.iter_mut().zip(even).zip(odd).for_each(|((o, &e), &d)| *o = pair(e, d)),
        None => out.iter_mut().zip(even).for_each(|(o, &e)| *o = pair(e, T::from_f32(0.0))),
    }
}

/// Pairs from whole lines: `rows[q][i] = pair(line(k0 + 2q)[i], line(k0 + 2q + 1)[i])` for the
/// `⌈kc/2⌉` rows (zero past an odd `kc`) — how a matrix whose depth runs down its rows packs.
pub fn two_lines<'a, T: Element>(
    line: impl Fn(usize) -> &'a [T],
    k0: usize,
    kc: usize,
    rows: impl Iterator<Item = &'a mut [u32]>,
) {
    for (q, row) in rows.take(kc.div_ceil(2)).enumerate() {
        pair_rows(line(k0 + 2 * q), (2 * q + 1 < kc).then(|| line(k0 + 2 * q + 1)), row);
    }
}

/// Rewrites `panels` packed f32 panels of `kc` depths × `width` lanes (`src[(panel·kc + p)·width
/// + lane]`) as pairs (`dst[(panel·kp + q)·width + lane]`, `kp = ⌈kc/2⌉`).
pub fn to_pairs(src: &[f32], kc: usize, width: usize, panels: usize, dst: &mut [u32]) {
    let kp = kc.div_ceil(2);
    for (s, d) in src.chunks_exact(kc * width).zip(dst.chunks_exact_mut(kp * width)).take(panels) {
        for (q, out) in d.chunks_exact_mut(width).enumerate() {
            pair_rows(
                &s[2 * q * width..(2 * q + 1) * width],
                s.get((2 * q + 1) * width..(2 * q + 2) * width),
                out,
            );
        }
    }
}

/// [`PackA::pack_a_pairs`] through f32 panels: `a.pack_a`, then [`to_pairs`].
pub fn pack_a_via_f32<A: PackA + ?Sized>(
    a: &A,
    i0: usize,
    mc: usize,
    k0: usize,
    kc: usize,
    mr: usize,
    dst: &mut [u32],
) {
    let panels = mc.div_ceil(mr);
    with_buffer(&SCRATCH, panels * kc * mr, |scratch| {
        a.pack_a(i0, mc, k0, kc, mr, scratch);
        to_pairs(scratch, kc, mr, panels, dst);
    });
}

/// [`PackB::pack_b_pairs`] through f32 panels, [`GROUP`] panels at a time.
pub fn pack_b_via_f32<B: PackB + ?Sized>(
    b: &B,
    k0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: &mut [u32],
) {
    let kp = kc.div_ceil(2);
    with_buffer(&SCRATCH, GROUP * kc * nr, |scratch| {
        for group in (0..nc.div_ceil(nr)).step_by(GROUP) {
            let cols = (nc - group * nr).min(GROUP * nr);
            b.pack_b(k0, kc, j0 + group * nr, cols, nr, scratch);
            to_pairs(scratch, kc, nr, cols.div_ceil(nr), &mut dst[group * kp * nr..]);
        }
    });
}

/// `out[q·width + lane] = pair(data[starts[lane] + 2q], data[starts[lane] + 2q + 1])`: the
/// pairs counterpart of packing's transposition, lanes reading their own contiguous lines.
pub fn interleave_pairs<T: Element>(data: &[T], starts: &[usize], kc: usize, width: usize, out: &mut [u32]) {
    match (starts.len(), width) {
        (32, 32) => interleave_pairs_fixed::<T, 32>(data, starts, kc, out),
        (16, 16) => interleave_pairs_fixed::<T, 16>(data, starts, kc, out),
        (12, 12) => interleave_pairs_fixed::<T, 12>(data, starts, kc, out),
        _ => {
            for (lane, &start) in starts.iter().enumerate() {
                for (q, two) in data[start..start + kc].chunks(2).enumerate() {
                    out[q * width + lane] = pair(two[0], two.get(1).copied().unwrap_or(T::from_f32(0.0)));
                }
            }
        }
    }
}

fn interleave_pairs_fixed<T: Element, const W: usize>(
    data: &[T],
    starts: &[usize],
    kc: usize,
    out: &mut [u32],
) {
    let lines: [&[T]; W] = std::array::from_fn(|lane| &data[starts[lane]..starts[lane] + kc]);
    // Eight pairs at a time: each line gives a short contiguous read, the panel an 8·W write.
    let mut blocks = out[..kc / 2 * W].chunks_exact_mut(8 * W);
    for (block_index, block) in (&mut blocks).enumerate() {
        let p0 = block_index * 16;
        for (lane, line) in lines.iter().enumerate() {
            let values: &[T; 16] = line[p0..p0 + 16].try_into().expect("sixteen values");
            for i in 0..8 {
                block[i * W + lane] = pair(values[2 * i], values[2 * i + 1]);
            }
        }
    }
    let done = kc / 16 * 16;
    for (i, row) in blocks.into_remainder().chunks_exact_mut(W).enumerate() {
        for (o, line) in row.iter_mut().zip(&lines) {
            *o = pair(line[done + 2 * i], line[done + 2 * i + 1]);
        }
    }
    if kc % 2 == 1 {
        for (o, line) in out[kc / 2 * W..kc.div_ceil(2) * W].iter_mut().zip(&lines) {
            *o = pair(line[kc - 1], T::from_f32(0.0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kernels::gemm::Strided;

    #[test]
    fn pairs_round_like_half_and_pad_an_odd_depth() {
        let specials = [0.0f32, -0.0, 1.0, 1.001, -2.7, 3.0e38, -3.4e38, f32::INFINITY, 1e-40];
        let tie_even = f32::from_bits(0x3F80_8000); // halfway between two bf16: stays at the even one
        let tie_odd = f32::from_bits(0x3F81_8000); // halfway: goes up to the even one
        let mut src: Vec<f32> = specials.iter().copied().chain([tie_even, tie_odd, f32::NAN]).collect();
        src.extend(super::super::wave(21 - src.len(), 0.7, 0.2, 3.0));
        // One panel of width 3 and depth 7: the fourth pair has no odd depth.
        let (kc, width) = (7, 3);
        let mut dst = vec![u32::MAX; 4 * width];
        to_pairs(&src, kc, width, 1, &mut dst);
        let same = |bits: u16, v: f32| {
            let (got, want) = (half::bf16::from_bits(bits), half::bf16::from_f32(v));
            got == want || (got.is_nan() && want.is_nan())
        };
        for q in 0..4 {
            for lane in 0..width {
                let pair = dst[q * width + lane];
                let (lo, hi) = (pair as u16, (pair >> 16) as u16);
                assert!(same(lo, src[2 * q * width + lane]), "pair {q} lane {lane}");
                if 2 * q + 1 < kc {
                    assert!(same(hi, src[(2 * q + 1) * width + lane]), "pair {q} lane {lane} (high)");
                } else {
                    assert_eq!(hi, 0, "past the last depth");
                }
            }
        }
        assert_eq!(bf16_bits(tie_even), 0x3F80);
        assert_eq!(bf16_bits(tie_odd), 0x3F82);
    }

    /// Direct pair packing equals packing f32 panels and rewriting them, for both layouts, every
    /// panel width and ragged edges.
    fn check_packers<T: Element>(data: &[T], rows: usize, cols: usize) {
        let views =
            [(Strided::row_major(data, cols), rows, cols), (Strided::transposed(data, cols), cols, rows)];
        for (view, vr, vc) in views {
            for width in [12, 16, 32, 5] {
                // (first row or column, how many, first depth, depths): A is vr×vc, B is vr deep.
                let a_cases = [(0, vr, 0, vc), (1, vr - 1, 1, vc - 1), (vr - 1, 1, vc - 3, 3)];
                let b_cases = [(0, vc, 0, vr), (1, vc - 1, 1, vr - 1), (vc - 1, 1, vr - 3, 3)];
                for (is_a, (first, count, k0, kc)) in
                    a_cases.map(|c| (true, c)).into_iter().chain(b_cases.map(|c| (false, c)))
                {
                    let len = count.div_ceil(width) * kc.div_ceil(2) * width;
                    let (mut direct, mut via) = (vec![7u32; len], vec![9u32; len]);
                    if is_a {
                        view.pack_a_pairs(first, count, k0, kc, width, &mut direct);
                        pack_a_via_f32(&view, first, count, k0, kc, width, &mut via);
                    } else {
                        view.pack_b_pairs(k0, kc, first, count, width, &mut direct);
                        pack_b_via_f32(&view, k0, kc, first, count, width, &mut via);
                    }
                    assert_eq!(direct, via, "A {is_a}, width {width}, from {first}, depth {k0}+{kc}");
                }
            }
        }
    }

    #[test]
    fn direct_pair_packing_matches_packing_through_f32() {
        let values = super::super::wave(37 * 45, 0.31, 0.5, 2.0);
        check_packers(&values, 37, 45);
        let bf: Vec<half::bf16> = values.iter().map(|&v| half::bf16::from_f32(v)).collect();
        check_packers(&bf, 37, 45);
        let f16: Vec<half::f16> = values.iter().map(|&v| half::f16::from_f32(v)).collect();
        check_packers(&f16, 45, 37);
    }
}
