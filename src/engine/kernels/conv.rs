//! 2-D convolution as a GEMM with implicit im2col: `out[co, pixel] = Σ w[co, (ci,ky,kx)] ·
//! x[ci, y·s+ky−p, x·s+kx−p] + bias[co]`. The weights are the left operand as stored (`[co, ci·kh·kw]`
//! row-major, any storage precision); the right operand's panels are gathered straight from the
//! input picture while packing, so the `9·C·H·W` patch matrix candle builds (and transposes, and
//! scatters back) never exists. The output comes out in NCHW order with the bias already in it.

use super::gemm::{gemm, Element, PackB, Strided};
use super::norm::ChannelAffine;
use super::pairs::pair_rows;

/// The shape of one convolution (square kernel, symmetric zero padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Kernel side.
    pub kernel: usize,
    /// Step between output pixels.
    pub stride: usize,
    /// Zeros added on each side.
    pub padding: usize,
}

impl ConvShape {
    /// Output height.
    pub fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    /// Output width.
    pub fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn depth(&self) -> usize {
        self.in_channels * self.kernel * self.kernel
    }
}

/// The patch matrix of one picture (`[ci·k·k, out pixels]`), read from the picture on demand.
struct Patches<'a, X> {
    x: &'a [X],
    shape: ConvShape,
    /// The output pixel that column 0 stands for (a chunk of the picture).
    first_pixel: usize,
    /// When the convolution reads a nearest-neighbour enlargement of `x`: which stored row and
    /// column each row and column of the enlarged picture (`shape`'s size) comes from.
    resize: Option<&'a Resize>,
    /// A normalisation the convolution reads its input through, and this picture's first
    /// channel in it.
    normalised: Option<(&'a ChannelAffine, usize)>,
}

/// How a convolution reads its input, beyond the input itself. One description at both levels:
/// the tensor entry point says what to enlarge to and normalise with
/// ([`super::tensors::ConvInput`]), the slice kernel gets the tables made from that ([`Read`]).
#[derive(Clone, Copy, Debug)]
pub enum Input<E, N> {
    /// As stored.
    Plain,
    /// A nearest-neighbour enlargement of it, made on the fly.
    Enlarged(E),
    /// Each channel through a group normalisation's map (and SiLU), applied on the fly so the
    /// normalised picture is never stored; padding stays zero, as it pads the normalised picture.
    Normalised(N),
}

/// How the slice kernel reads its input: with the enlargement's index tables or the
/// normalisation's per-channel map.
pub type Read<'a> = Input<&'a Resize, &'a ChannelAffine>;

impl<'a> Read<'a> {
    fn resize(self) -> Option<&'a Resize> {
        match self {
            Read::Enlarged(r) => Some(r),
            _ => None,
        }
    }

    fn patches<X>(self, x: &'a [X], shape: ConvShape, picture: usize, first_pixel: usize) -> Patches<'a, X> {
        let normalised = match self {
            Read::Normalised(map) => Some((map, picture * shape.in_channels)),
            _ => None,
        };
        Patches { x, shape, first_pixel, resize: self.resize(), normalised }
    }
}

/// A nearest-neighbour enlargement read on the fly, as candle's `upsample_nearest2d` computes
/// it: enlarged row `r` is stored row `min(h−1, ⌊r·h/H⌋)`, and likewise for columns.
#[derive(Clone, Debug)]
pub struct Resize {
    rows: Vec<usize>,
    cols: Vec<usize>,
    stored_height: usize,
    stored_width: usize,
}

impl Resize {
    /// Enlarges a `stored` (height, width) picture to `size`.
    pub fn new(stored: (usize, usize), size: (usize, usize)) -> Self {
        let map = |from: usize, to: usize| -> Vec<usize> {
            let scale = from as f64 / to as f64;
            (0..to).map(|i| (from - 1).min((i as f64 * scale) as usize)).collect()
        };
        Self {
            rows: map(stored.0, size.0),
            cols: map(stored.1, size.1),
            stored_height: stored.0,
            stored_width: stored.1,
        }
    }
}

impl<X: Element> PackB for Patches<'_, X> {
    fn stores_bf16(&self) -> bool {
        X::IS_BF16
    }

    fn pack_b(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        self.gather_lines(k0, kc, j0, nc, nr, |p, line| {
            for (panel, values) in line.chunks_exact(nr).enumerate() {
                copy_lanes(values, &mut dst[(panel * kc + p) * nr..(panel * kc + p + 1) * nr]);
            }
        });
    }

    fn pack_b_pairs(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [u32]) {
        let kp = kc.div_ceil(2);
        let mut even = vec![0f32; nc.div_ceil(nr) * nr];
        let mut write = |q: usize, even: &[f32], odd: Option<&[f32]>| {
            for (panel, values) in even.chunks_exact(nr).enumerate() {
                let odd = odd.map(|odd| &odd[panel * nr..(panel + 1) * nr]);
                pair_rows(values, odd, &mut dst[(panel * kp + q) * nr..(panel * kp + q + 1) * nr]);
            }
        };
        self.gather_lines(k0, kc, j0, nc, nr, |p, line| {
            if p % 2 == 1 {
                write(p / 2, &even, Some(line));
            } else if p + 1 == kc {
                write(p / 2, line, None);
            } else {
                even.copy_from_slice(line);
            }
        });
    }
}

impl<X: Element> Patches<'_, X> {
    /// Gathers, for each depth `p < kc` in turn, the values of depth `k0 + p` at the block's
    /// pixels `j0..j0+nc` (zero up to a whole number of `nr` panels) and hands them to `emit`.
    fn gather_lines(
        &self,
        k0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        nr: usize,
        mut emit: impl FnMut(usize, &[f32]),
    ) {
        let s = self.shape;
        let (kk, ow) = (s.kernel * s.kernel, s.out_width());
        let panels = nc.div_ceil(nr);
        let j0 = j0 + self.first_pixel;
        let (stored_h, stored_w) =
            self.resize.map_or((s.height, s.width), |r| (r.stored_height, r.stored_width));
        // One depth's values for the block's pixels, gathered in order, then cut into panels.
        let mut line = vec![0f32; panels * nr];
        // Through a normalisation, the input rows this block reads are mapped once per channel
        // (each value is read up to k² times), then gathered from the mapped copy.
        let first_row = ((j0 / ow) * s.stride).saturating_sub(s.padding);
        let last_row =
            (((j0 + nc - 1) / ow) * s.stride + s.kernel).saturating_sub(s.padding).clamp(first_row, s.height);
        let mut mapped = Vec::new();
        let mut mapped_channel = None;
        for p in 0..kc {
            let depth = k0 + p;
            let (ci, ky, kx) = (depth / kk, depth % kk / s.kernel, depth % s.kernel);
            let channel = &self.x[ci * stored_h * stored_w..(ci + 1) * stored_h * stored_w];
            if let Some((map, first_channel)) = self.normalised {
                if mapped_channel != Some(ci) {
                    let rows = &channel[first_row * s.width..last_row * s.width];
                    mapped.clear();
                    mapped.extend(rows.iter().map(|v| v.to_f32()));
                    map.apply::<X>(first_channel + ci, &mut mapped);
                    mapped_channel = Some(ci);
                }
            }
            let (mut oy, mut ox) = (j0 / ow, j0 % ow);
            let mut at = 0;
            while at < nc {
                let run = (ow - ox).min(nc - at);
                let out = &mut line[at..at + run];
                let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                if iy < 0 || iy as usize >= s.height {
                    out.fill(0.0);
                } else {
                    let iy = iy as usize;
                    let shift = kx as isize - s.padding as isize;
                    match (self.resize, self.normalised) {
                        (Some(resize), _) => {
                            let stored = resize.rows[iy];
                            let row = &channel[stored * stored_w..(stored + 1) * stored_w];
                            gather_resized(row, &resize.cols, out, ox, s.stride, shift);
                        }
                        (None, Some(_)) => {
                            let row = &mapped[(iy - first_row) * s.width..(iy - first_row + 1) * s.width];
                            gather_row(row, out, ox, s.stride, shift);
                        }
                        (None, None) => {
                            gather_row(&channel[iy * s.width..(iy + 1) * s.width], out, ox, s.stride, shift);
                        }
                    }
                }
                at += run;
                ox = 0;
                oy += 1;
            }
            emit(p, &line);
        }
    }
}

/// `dst = src` for one panel row: at the kernels' widths a fixed-size copy the compiler inlines as a
/// few vector moves, where `copy_from_slice` of 128 bytes is a library call per row — the packing
/// of a VAE convolution makes hundreds of millions of them.
#[inline(always)]
fn copy_lanes(src: &[f32], dst: &mut [f32]) {
    fn fixed<const N: usize>(src: &[f32], dst: &mut [f32]) {
        let src: &[f32; N] = src.try_into().expect("a panel row");
        let dst: &mut [f32; N] = dst.try_into().expect("a panel row");
        *dst = *src;
    }
    match src.len() {
        32 => fixed::<32>(src, dst),
        16 => fixed::<16>(src, dst),
        _ => dst.copy_from_slice(src),
    }
}

/// `out[t] = row[(ox + t)·stride + shift]`, zero where that falls outside the row.
fn gather_row<X: Element>(row: &[X], out: &mut [f32], ox: usize, stride: usize, shift: isize) {
    let len = out.len();
    // Outputs whose source is inside the row are t in lo..hi: (ox + t)·stride + shift ∈ [0, row).
    let first_inside = |bound: isize| -> usize {
        // The smallest t with (ox + t)·stride + shift ≥ bound.
        let need = bound - shift; // (ox + t)·stride ≥ need
        let t = if need <= 0 { 0 } else { (need as usize).div_ceil(stride) };
        t.saturating_sub(ox).min(len)
    };
    let lo = first_inside(0);
    let hi = first_inside(row.len() as isize).max(lo);
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    if lo < hi {
        let first = (((ox + lo) * stride) as isize + shift) as usize;
        if stride == 1 {
            for (o, &v) in out[lo..hi].iter_mut().zip(&row[first..first + hi - lo]) {
                *o = v.to_f32();
            }
        } else {
            for (o, &v) in out[lo..hi].iter_mut().zip(row[first..].iter().step_by(stride)) {
                *o = v.to_f32();
            }
        }
    }
}

/// [`gather_row`] from an enlarged row: enlarged column `c` is `row[cols[c]]`.
fn gather_resized<X: Element>(
    row: &[X],
    cols: &[usize],
    out: &mut [f32],
    ox: usize,
    stride: usize,
    shift: isize,
) {
    for (t, o) in out.iter_mut().enumerate() {
        let c = ((ox + t) * stride) as isize + shift;
        *o = if c >= 0 && (c as usize) < cols.len() { row[cols[c as usize]].to_f32() } else { 0.0 };
    }
}

/// Convolves `x` (`[batch, in_channels, height, width]`, contiguous, any [`Element`]; read as
/// `read` says) with `weight` (`[out_channels, in_channels, k, k]`, contiguous, any [`Element`])
/// and adds `bias`; returns `[batch, out_channels, out_height, out_width]`.
pub fn conv2d<X: Element, W: Element>(
    x: &[X],
    batch: usize,
    shape: ConvShape,
    weight: &[W],
    bias: Option<&[f32]>,
    read: Read,
) -> Vec<f32> {
    let Sizes { co, depth, pixels, image } = Sizes::checked(shape, read, batch, x.len(), weight.len());
    let mut out = vec![0f32; batch * co * pixels];
    let weights = Strided::row_major(weight, depth);
    for (n, out) in out.chunks_exact_mut(co * pixels).enumerate() {
        if let Some(bias) = bias {
            for (row, &b) in out.chunks_exact_mut(pixels).zip(bias) {
                row.fill(b);
            }
        }
        let x = &x[n * image..(n + 1) * image];
        if shape.kernel == 1 && shape.stride == 1 && shape.padding == 0 && matches!(read, Read::Plain) {
            // A pointwise convolution is a plain product with the picture as `[ci, pixels]`.
            gemm(co, pixels, depth, &weights, &Strided::row_major(x, pixels), out, pixels);
        } else {
            gemm(co, pixels, depth, &weights, &read.patches(x, shape, n, 0), out, pixels);
        }
    }
    out
}

/// The sizes one call works with.
struct Sizes {
    co: usize,
    depth: usize,
    pixels: usize,
    /// Values in one stored picture.
    image: usize,
}

impl Sizes {
    /// The sizes, after checking the input and weights hold what `shape` says.
    fn checked(shape: ConvShape, read: Read, batch: usize, x_len: usize, weight_len: usize) -> Self {
        if let Read::Normalised(map) = read {
            assert_eq!(map.scale.len(), batch * shape.in_channels, "conv2d: normalisation length");
            assert_eq!(map.shift.len(), batch * shape.in_channels, "conv2d: normalisation length");
        }
        let stored = read.resize().map_or(shape.height * shape.width, |r| r.stored_height * r.stored_width);
        let sizes = Self {
            co: shape.out_channels,
            depth: shape.depth(),
            pixels: shape.out_height() * shape.out_width(),
            image: shape.in_channels * stored,
        };
        assert_eq!(x_len, batch * sizes.image, "conv2d: input length");
        assert_eq!(weight_len, sizes.co * sizes.depth, "conv2d: weight length");
        sizes
    }
}

/// Output pixels per chunk of [`conv2d_narrow`].
const PIXEL_CHUNK: usize = 4096;

/// [`conv2d`] for half-precision activations, returning the result in their type. The product
/// runs a chunk of pixels at a time into a small f32 buffer that is then narrowed into the
/// output, so no f32 copy of the output (twice the size of the half-precision one) is ever held:
/// at the VAE's 512² layers that copy was a quarter of a gigabyte.
pub fn conv2d_narrow<X: Element, W: Element>(
    x: &[X],
    batch: usize,
    shape: ConvShape,
    weight: &[W],
    bias: Option<&[f32]>,
    read: Read,
) -> Vec<X> {
    let Sizes { co, depth, pixels, image } = Sizes::checked(shape, read, batch, x.len(), weight.len());
    let mut out = vec![X::from_f32(0.0); batch * co * pixels];
    let mut scratch = vec![0f32; co * PIXEL_CHUNK.min(pixels)];
    let weights = Strided::row_major(weight, depth);
    for (n, out) in out.chunks_exact_mut(co * pixels).enumerate() {
        let x = &x[n * image..(n + 1) * image];
        for first_pixel in (0..pixels).step_by(PIXEL_CHUNK) {
            let len = PIXEL_CHUNK.min(pixels - first_pixel);
            let scratch = &mut scratch[..co * len];
            for (c, row) in scratch.chunks_exact_mut(len).enumerate() {
                row.fill(bias.map_or(0.0, |b| b[c]));
            }
            gemm(co, len, depth, &weights, &read.patches(x, shape, n, first_pixel), scratch, len);
            for (row, values) in out.chunks_exact_mut(pixels).zip(scratch.chunks_exact(len)) {
                for (o, &v) in row[first_pixel..first_pixel + len].iter_mut().zip(values) {
                    *o = X::from_f32(v);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test convolution: `ci`→`co` channels, `h`×`w` input, `k`×`k` kernel.
    fn shape(ci: usize, co: usize, h: usize, w: usize, k: usize, stride: usize, padding: usize) -> ConvShape {
        ConvShape { in_channels: ci, out_channels: co, height: h, width: w, kernel: k, stride, padding }
    }

    fn values(n: usize, salt: f32) -> Vec<f32> {
        super::super::wave(n, 0.377, salt, 1.0)
    }

    /// The definition, in f64.
    fn plain(x: &[f32], batch: usize, s: ConvShape, w: &[f32], bias: &[f32]) -> Vec<f64> {
        let (oh, ow) = (s.out_height(), s.out_width());
        let mut out = vec![0f64; batch * s.out_channels * oh * ow];
        for n in 0..batch {
            for co in 0..s.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[co] as f64;
                        for ci in 0..s.in_channels {
                            for ky in 0..s.kernel {
                                for kx in 0..s.kernel {
                                    let iy = (oy * s.stride + ky) as isize - s.padding as isize;
                                    let ix = (ox * s.stride + kx) as isize - s.padding as isize;
                                    if iy < 0 || ix < 0 || iy as usize >= s.height || ix as usize >= s.width {
                                        continue;
                                    }
                                    let xv = x[((n * s.in_channels + ci) * s.height + iy as usize) * s.width
                                        + ix as usize];
                                    let wv = w[((co * s.in_channels + ci) * s.kernel + ky) * s.kernel + kx];
                                    acc += xv as f64 * wv as f64;
                                }
                            }
                        }
                        out[((n * s.out_channels + co) * oh + oy) * ow + ox] = acc;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        // (ci, co, h, w, k, stride, pad, batch): 3×3 same-padding, stride 2 downsampling with odd
        // sizes, 1×1, a 1×1 with stride, a wide picture whose rows span panels, one pixel.
        let cases = [
            (3, 5, 7, 9, 3, 1, 1, 2),
            (4, 13, 11, 6, 3, 2, 1, 1),
            (7, 3, 5, 5, 1, 1, 0, 2),
            (2, 2, 6, 7, 1, 2, 0, 1),
            (5, 17, 3, 70, 3, 1, 1, 1),
            (6, 4, 1, 1, 3, 1, 1, 1),
            (40, 33, 9, 9, 3, 1, 0, 1),
            (3, 4, 70, 65, 3, 1, 1, 2),
        ];
        for (ci, co, h, w, k, stride, padding, batch) in cases {
            let shape = shape(ci, co, h, w, k, stride, padding);
            let x = values(batch * ci * h * w, 0.2);
            let wt = values(co * ci * k * k, 1.3);
            let bias = values(co, 2.9);
            let want = plain(&x, batch, shape, &wt, &bias);
            let got = conv2d(&x, batch, shape, &wt, Some(&bias), Read::Plain);
            assert_eq!(got.len(), want.len());
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() < 1e-4, "{shape:?} batch {batch}: element {i}: {g} vs {w}");
            }
            let half: Vec<half::f16> = wt.iter().map(|&v| half::f16::from_f32(v)).collect();
            let rounded: Vec<f32> = half.iter().map(|v| v.to_f32()).collect();
            let want = plain(&x, batch, shape, &rounded, &[0.0; 64][..co]);
            for (g, w) in conv2d(&x, batch, shape, &half, None, Read::Plain).iter().zip(&want) {
                assert!((*g as f64 - w).abs() < 1e-4, "{shape:?} f16 weights");
            }
            // Half-precision activations through the chunked path, against the f32 result.
            let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            let x_rounded: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
            let want = plain(&x_rounded, batch, shape, &wt, &bias);
            for (g, w) in conv2d_narrow(&x16, batch, shape, &wt, Some(&bias), Read::Plain).iter().zip(&want) {
                assert!((g.to_f32() as f64 - w).abs() < 2e-3 * (1.0 + w.abs()), "{shape:?} f16 activations");
            }
        }
    }

    #[test]
    fn an_enlarged_input_read_on_the_fly_equals_enlarging_first() {
        // Doubling, and an uneven enlargement (as the UNet uses to meet odd skip sizes).
        for (stored, size) in [((4, 5), (8, 10)), ((3, 3), (7, 5))] {
            let (ci, co) = (3, 4);
            let shape = shape(ci, co, size.0, size.1, 3, 1, 1);
            let x = values(ci * stored.0 * stored.1, 0.4);
            let resize = Resize::new(stored, size);
            let mut big = Vec::new();
            for c in 0..ci {
                for &r in &resize.rows {
                    for &q in &resize.cols {
                        big.push(x[(c * stored.0 + r) * stored.1 + q]);
                    }
                }
            }
            let (wt, bias) = (values(co * ci * 9, 0.8), values(co, 0.1));
            let want = conv2d(&big, 1, shape, &wt, Some(&bias), Read::Plain);
            assert_eq!(conv2d(&x, 1, shape, &wt, Some(&bias), Read::Enlarged(&resize)), want);
            let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            let big16: Vec<half::f16> = big.iter().map(|&v| half::f16::from_f32(v)).collect();
            assert_eq!(
                conv2d_narrow(&x16, 1, shape, &wt, None, Read::Enlarged(&resize)),
                conv2d_narrow(&big16, 1, shape, &wt, None, Read::Plain)
            );
        }
    }

    #[test]
    fn a_normalised_read_equals_normalising_first() {
        use super::super::norm::{group_norm, GroupShape};
        // 3×3 same-padding with batch 2, stride 2 with odd sizes, 1×1, one pixel.
        for (ci, co, h, w, k, stride, padding, batch) in [
            (4, 5, 7, 9, 3, 1, 1, 2),
            (6, 3, 11, 6, 3, 2, 1, 1),
            (4, 7, 5, 5, 1, 1, 0, 1),
            (2, 3, 1, 1, 3, 1, 1, 1),
        ] {
            let shape = shape(ci, co, h, w, k, stride, padding);
            let groups = GroupShape { batch, channels: ci, spatial: h * w, groups: 2 };
            let x = values(batch * ci * h * w, 0.6);
            let (gamma, beta) = (values(ci, 1.1), values(ci, 2.3));
            let (wt, bias) = (values(co * ci * k * k, 0.9), values(co, 0.5));
            for silu in [false, true] {
                let map = ChannelAffine::of(&x, groups, &gamma, &beta, 1e-6, silu);
                let normed = group_norm(&x, groups, &gamma, &beta, 1e-6, silu);
                assert_eq!(
                    conv2d(&x, batch, shape, &wt, Some(&bias), Read::Normalised(&map)),
                    conv2d(&normed, batch, shape, &wt, Some(&bias), Read::Plain),
                    "{shape:?} silu {silu}"
                );
                // Half precision: the map rounds as the stored normalised picture would.
                let x16: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
                let map = ChannelAffine::of(&x16, groups, &gamma, &beta, 1e-6, silu);
                let normed = group_norm(&x16, groups, &gamma, &beta, 1e-6, silu);
                assert_eq!(
                    conv2d_narrow(&x16, batch, shape, &wt, Some(&bias), Read::Normalised(&map)),
                    conv2d_narrow(&normed, batch, shape, &wt, Some(&bias), Read::Plain),
                    "{shape:?} f16 silu {silu}"
                );
            }
        }
    }

    #[test]
    fn patches_pack_pairs_as_their_f32_panels_rewritten() {
        use super::super::norm::GroupShape;
        use super::super::pairs::pack_b_via_f32;
        // Stride 2 with padding, and a wide picture whose rows span panels.
        for (ci, h, w, stride) in [(3, 7, 9, 2), (2, 3, 70, 1)] {
            let shape = shape(ci, 1, h, w, 3, stride, 1);
            let x = values(ci * h * w, 0.3);
            let resize = Resize::new((h.div_ceil(2), w.div_ceil(2)), (h, w));
            let small = values(ci * h.div_ceil(2) * w.div_ceil(2), 0.5);
            let groups = GroupShape { batch: 1, channels: ci, spatial: h * w, groups: 1 };
            let map = ChannelAffine::of(&x, groups, &values(ci, 1.0), &values(ci, 2.0), 1e-6, true);
            let reads = [(Read::Plain, &x), (Read::Enlarged(&resize), &small), (Read::Normalised(&map), &x)];
            let (depth, pixels) = (shape.depth(), shape.out_height() * shape.out_width());
            for (read, x) in reads {
                // Whole, odd depth counts from an odd start, a ragged last panel.
                for (k0, kc, j0, nc, nr) in
                    [(0, depth, 0, pixels, 32), (1, depth - 2, 3, pixels - 5, 16), (5, 1, 1, 13, 12)]
                {
                    let patches = read.patches(x, shape, 0, 0);
                    let len = nc.div_ceil(nr) * kc.div_ceil(2) * nr;
                    let (mut direct, mut via) = (vec![7u32; len], vec![9u32; len]);
                    patches.pack_b_pairs(k0, kc, j0, nc, nr, &mut direct);
                    pack_b_via_f32(&patches, k0, kc, j0, nc, nr, &mut via);
                    assert_eq!(
                        direct, via,
                        "{shape:?} {read:?} depths {k0}+{kc} pixels {j0}+{nc} width {nr}"
                    );
                }
            }
        }
    }

    #[test]
    fn bf16_weights_give_the_product_of_bf16_values() {
        // The pair kernels round the f32 picture to bf16; without them it is used as it is.
        let pairs = super::super::simd::Kernel::uses_pairs();
        let shape = shape(5, 13, 11, 6, 3, 2, 1);
        let x = values(2 * 5 * 11 * 6, 0.7);
        let wt: Vec<half::bf16> = values(13 * 5 * 9, 1.9).iter().map(|&v| half::bf16::from_f32(v)).collect();
        let bias = values(13, 0.2);
        let x_seen: Vec<f32> =
            if pairs { x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect() } else { x.clone() };
        let wt_f32: Vec<f32> = wt.iter().map(|v| v.to_f32()).collect();
        let want = plain(&x_seen, 2, shape, &wt_f32, &bias);
        for (i, (g, w)) in conv2d(&x, 2, shape, &wt, Some(&bias), Read::Plain).iter().zip(&want).enumerate() {
            assert!((*g as f64 - w).abs() < 1e-4, "element {i}: {g} vs {w}");
        }
    }
}
