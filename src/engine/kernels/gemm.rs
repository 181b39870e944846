//! Single-precision matrix multiply `C += A·B` for the CPU, in the BLIS shape: both operands are
//! copied block by block into panels the micro-kernel streams through (a `KC`-deep slice of `MR`
//! rows of A, and of `NR` columns of B), so the micro-kernel only ever reads contiguous memory.
//!
//! The operands are not matrices but *packers*: anything that can write its panels. That is what
//! lets a convolution feed its input straight from the picture (implicit im2col, no patch matrix),
//! lets half-precision weights widen to f32 while they are packed (f16 storage, f32 arithmetic,
//! no f32 copy of the model), and lets attention read Kᵀ without transposing it. Packing costs one
//! read of each operand per block, against `2·M·N·K` flops: under 1% for the UNet's shapes, so
//! weights are packed at each call rather than kept a second time in memory.
//!
//! Threads pack each block of B together, then each multiplies its own rows of C against it,
//! packing its own rows of A.
//!
//! When an operand is stored in bf16 and the CPU has AVX-512 BF16, the packed panels are
//! rewritten as bf16 depth pairs (the f32 operand rounded to nearest even, as PyTorch's bf16
//! autocast rounds it) for the pair kernels, which do twice the multiply-adds per instruction;
//! the sums are still f32.

use std::cell::RefCell;

use rayon::prelude::*;

use super::simd::Kernel;

/// Depth of one packed block: A's `MC×KC` block stays in L2, one B panel (`KC×NR`) in L1.
const KC: usize = 256;
/// The same for the pair kernels: a pair is the size of one f32, so a block twice as deep holds
/// the same bytes, and C is read and written half as often.
const KC_PAIRS: usize = 2 * KC;
/// Rows of A per block (a multiple of every kernel's `MR`).
const MC: usize = 120;
/// Columns of B per block (a multiple of every kernel's `NR`).
const NC: usize = 4096;
/// The blocking in use: (`KC`, `MC`, `NC`), for the benchmarks' report.
pub fn blocking() -> (usize, usize, usize) {
    (KC, MC, NC)
}

/// Below this many multiply-adds the threads cost more than they save.
const PARALLEL_WORK: usize = 1 << 21;

/// A number an operand may be stored in; packing widens it to f32.
pub trait Element: Copy + Send + Sync + 'static {
    /// Whether this is bf16, whose products may run on the bf16 pair kernels.
    const IS_BF16: bool = false;
    /// The value as f32.
    fn to_f32(self) -> f32;
    /// The nearest value to `v`.
    fn from_f32(v: f32) -> Self;
    /// The nearest bf16, as bits (bf16 itself is copied).
    #[inline(always)]
    fn to_bf16_bits(self) -> u16 {
        super::pairs::bf16_bits(self.to_f32())
    }
}

impl Element for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        v
    }
}

impl Element for half::f16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        half::f16::from_f32(v)
    }
}

impl Element for half::bf16 {
    const IS_BF16: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::bf16::to_f32(self)
    }
    #[inline(always)]
    fn from_f32(v: f32) -> Self {
        // `half` converts through a per-value intrinsic call where the CPU has AVX-512 BF16;
        // the same rounding in plain integer steps vectorises with the loop around it.
        half::bf16::from_bits(super::pairs::bf16_bits(v))
    }
    #[inline(always)]
    fn to_bf16_bits(self) -> u16 {
        self.to_bits()
    }
}

/// The left operand (`M×K`), written `MR` rows at a time.
pub trait PackA: Sync {
    /// Packs rows `i0..i0+mc` and depths `k0..k0+kc` into `dst` as `ceil(mc/mr)` panels of
    /// `kc×mr` values (`dst[(panel·kc + p)·mr + row]`), zero past the last row.
    fn pack_a(&self, i0: usize, mc: usize, k0: usize, kc: usize, mr: usize, dst: &mut [f32]);

    /// [`PackA::pack_a`] into bf16 depth pairs ([`super::pairs`]): `ceil(mc/mr)` panels of
    /// `⌈kc/2⌉×mr` pairs.
    fn pack_a_pairs(&self, i0: usize, mc: usize, k0: usize, kc: usize, mr: usize, dst: &mut [u32]) {
        super::pairs::pack_a_via_f32(self, i0, mc, k0, kc, mr, dst);
    }

    /// Whether the values are stored in bf16 (the product may then round the other operand to
    /// bf16 and run on the pair kernels).
    fn stores_bf16(&self) -> bool {
        false
    }
}

/// The right operand (`K×N`), written `NR` columns at a time.
pub trait PackB: Sync {
    /// Packs depths `k0..k0+kc` and columns `j0..j0+nc` into `dst` as `ceil(nc/nr)` panels of
    /// `kc×nr` values (`dst[(panel·kc + p)·nr + col]`), zero past the last column.
    fn pack_b(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]);

    /// [`PackB::pack_b`] into bf16 depth pairs: `ceil(nc/nr)` panels of `⌈kc/2⌉×nr` pairs.
    fn pack_b_pairs(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [u32]) {
        super::pairs::pack_b_via_f32(self, k0, kc, j0, nc, nr, dst);
    }

    /// Whether the values are stored in bf16, as [`PackA::stores_bf16`].
    fn stores_bf16(&self) -> bool {
        false
    }
}

/// A matrix view: element `(r, c)` is `data[r·row_stride + c·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, T> {
    data: &'a [T],
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Strided<'a, T> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &'a [T], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns (so `rows` of it are its columns).
    pub fn transposed(data: &'a [T], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    /// This view's transpose.
    fn t(&self) -> Strided<'a, T> {
        Strided { data: self.data, row_stride: self.col_stride, col_stride: self.row_stride }
    }
}

/// A's panels are B's panels of the transpose (rows of A are columns of Aᵀ), so one packer
/// serves both sides.
impl<T: Element> PackA for Strided<'_, T> {
    fn stores_bf16(&self) -> bool {
        T::IS_BF16
    }

    fn pack_a(&self, i0: usize, mc: usize, k0: usize, kc: usize, mr: usize, dst: &mut [f32]) {
        self.t().pack_b(k0, kc, i0, mc, mr, dst);
    }

    fn pack_a_pairs(&self, i0: usize, mc: usize, k0: usize, kc: usize, mr: usize, dst: &mut [u32]) {
        self.t().pack_b_pairs(k0, kc, i0, mc, mr, dst);
    }
}

impl<T: Element> PackB for Strided<'_, T> {
    fn stores_bf16(&self) -> bool {
        T::IS_BF16
    }

    fn pack_b_pairs(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [u32]) {
        let kp = kc.div_ceil(2);
        for (panel, out) in dst.chunks_exact_mut(kp * nr).take(nc.div_ceil(nr)).enumerate() {
            let first = j0 + panel * nr;
            let cols = nr.min(j0 + nc - first);
            if cols < nr {
                out.fill(0);
            }
            if self.col_stride == 1 {
                // Two rows of B side by side make one row of pairs (also Aᵀ row-major: attention's
                // probabilities read in place).
                let line = |p: usize| &self.data[p * self.row_stride + first..][..cols];
                super::pairs::two_lines(line, k0, kc, out.chunks_exact_mut(nr));
            } else if self.row_stride == 1 {
                let mut starts = [0usize; MAX_LANES];
                for (c, s) in starts[..cols].iter_mut().enumerate() {
                    *s = (first + c) * self.col_stride + k0;
                }
                super::pairs::interleave_pairs(self.data, &starts[..cols], kc, nr, out);
            } else {
                return super::pairs::pack_b_via_f32(self, k0, kc, j0, nc, nr, dst);
            }
        }
    }

    fn pack_b(&self, k0: usize, kc: usize, j0: usize, nc: usize, nr: usize, dst: &mut [f32]) {
        for (panel, out) in dst.chunks_exact_mut(kc * nr).take(nc.div_ceil(nr)).enumerate() {
            let first = j0 + panel * nr;
            let cols = nr.min(j0 + nc - first);
            if cols < nr {
                out.fill(0.0);
            }
            if self.col_stride == 1 {
                for (p, row) in out.chunks_exact_mut(nr).enumerate() {
                    let base = (k0 + p) * self.row_stride + first;
                    for (o, &v) in row[..cols].iter_mut().zip(&self.data[base..base + cols]) {
                        *o = v.to_f32();
                    }
                }
            } else if self.row_stride == 1 {
                // Bᵀ is row-major (a linear layer's weights, or A row-major): its rows are read in
                // lockstep.
                let mut starts = [0usize; MAX_LANES];
                for (c, s) in starts[..cols].iter_mut().enumerate() {
                    *s = (first + c) * self.col_stride + k0;
                }
                interleave(self.data, &starts[..cols], kc, nr, out);
            } else {
                for c in 0..cols {
                    let base = k0 * self.row_stride + (first + c) * self.col_stride;
                    for p in 0..kc {
                        out[p * nr + c] = self.data[base + p * self.row_stride].to_f32();
                    }
                }
            }
        }
    }
}

/// The widest panel of any kernel.
const MAX_LANES: usize = 32;

/// `out[p·width + lane] = data[starts[lane] + p]` for `p < kc`: the transposition at the heart
/// of packing, with the common widths compiled for a fixed lane count so the inner loop unrolls.
fn interleave<T: Element>(data: &[T], starts: &[usize], kc: usize, width: usize, out: &mut [f32]) {
    match (starts.len(), width) {
        (32, 32) => interleave_fixed::<T, 32>(data, starts, kc, out),
        (16, 16) => interleave_fixed::<T, 16>(data, starts, kc, out),
        (12, 12) => interleave_fixed::<T, 12>(data, starts, kc, out),
        (6, 6) => interleave_fixed::<T, 6>(data, starts, kc, out),
        (4, 4) => interleave_fixed::<T, 4>(data, starts, kc, out),
        _ => {
            for (lane, &start) in starts.iter().enumerate() {
                for (p, v) in data[start..start + kc].iter().enumerate() {
                    out[p * width + lane] = v.to_f32();
                }
            }
        }
    }
}

fn interleave_fixed<T: Element, const W: usize>(data: &[T], starts: &[usize], kc: usize, out: &mut [f32]) {
    let lines: [&[T]; W] = std::array::from_fn(|lane| &data[starts[lane]..starts[lane] + kc]);
    // Eight depths at a time: each line gives a short contiguous read, the panel a 8·W write.
    let mut blocks = out[..kc * W].chunks_exact_mut(8 * W);
    for (block_index, block) in (&mut blocks).enumerate() {
        let p0 = block_index * 8;
        for (lane, line) in lines.iter().enumerate() {
            let values: &[T; 8] = line[p0..p0 + 8].try_into().expect("eight values");
            for (i, v) in values.iter().enumerate() {
                block[i * W + lane] = v.to_f32();
            }
        }
    }
    let done = kc / 8 * 8;
    for (i, row) in blocks.into_remainder().chunks_exact_mut(W).enumerate() {
        for (o, line) in row.iter_mut().zip(&lines) {
            *o = line[done + i].to_f32();
        }
    }
}

thread_local! {
    /// Each thread's packing buffers, kept between calls so packing never faults in fresh pages.
    static A_BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static B_BUFFER: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The same blocks as bf16 depth pairs, for the pair kernels.
    static A_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static B_PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's buffer `cell` grown to `len` aligned values, or on a fresh one when
/// the thread's own is in use (a rayon thread may pick up another GEMM while it waits).
pub(super) fn with_buffer<T: Copy + Default + 'static, R>(
    cell: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    cell.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => f(aligned(&mut buf, len)),
        Err(_) => f(aligned(&mut Vec::new(), len)),
    })
}

/// `C[m×n] += A[m×k]·B[k×n]`, C row-major with row stride `ldc` (`c` holds at least
/// `(m-1)·ldc + n` values). Start C at zero, or at the bias, to get `A·B (+ bias)`.
/// Large products use every rayon thread; an operand stored in bf16 makes it a bf16 product
/// where the CPU has the pair kernels.
pub fn gemm(m: usize, n: usize, k: usize, a: &dyn PackA, b: &dyn PackB, c: &mut [f32], ldc: usize) {
    let kernel =
        if a.stores_bf16() || b.stores_bf16() { Kernel::for_bf16_width(n) } else { Kernel::for_width(n) };
    gemm_with(kernel, m, n, k, a, b, c, ldc, true);
}

/// [`gemm`] with a chosen micro-kernel (tests run every kernel the machine has).
///
/// For each block of B (`KC×NC`), the threads pack its panels together, then each multiplies its
/// own rows of A (packed by itself, `MC` rows at a time) against the shared packed block.
#[allow(clippy::too_many_arguments)]
pub fn gemm_with(
    kernel: Kernel,
    m: usize,
    n: usize,
    k: usize,
    a: &dyn PackA,
    b: &dyn PackB,
    c: &mut [f32],
    ldc: usize,
    parallel: bool,
) {
    if m == 0 || n == 0 || k == 0 {
        return;
    }
    assert!(ldc >= n && c.len() >= (m - 1) * ldc + n, "gemm: C is too small for {m}×{n} (ldc {ldc})");
    let (mr, nr, pairs) = (kernel.mr, kernel.nr, kernel.takes_pairs());
    let threads = if parallel && m * n * k >= PARALLEL_WORK { rayon::current_num_threads() } else { 1 };
    let rows_per_task = m.div_ceil(threads).div_ceil(mr) * mr;
    // In pair mode both operands are packed as pairs; the f32 buffers stay empty.
    let depth_block = if pairs { KC_PAIRS } else { KC };
    let (b_len, b_pairs_len) = if pairs { (0, KC_PAIRS / 2 * NC) } else { (KC * NC, 0) };
    with_buffer(&B_BUFFER, b_len, |b_pack| {
        with_buffer(&B_PAIRS, b_pairs_len, |b_pairs| {
            for jc in (0..n).step_by(NC) {
                let nc = NC.min(n - jc);
                let panels = nc.div_ceil(nr);
                for pc in (0..k).step_by(depth_block) {
                    let kc = depth_block.min(k - pc);
                    let kp = kc.div_ceil(2);
                    // Each task packs `per_task` panels starting at panel `t·per_task`.
                    let per_task = if threads > 1 { panels.div_ceil(threads) } else { panels };
                    let first_col = |t: usize| jc + t * per_task * nr;
                    let cols = |t: usize| (nc - t * per_task * nr).min(per_task * nr);
                    let block = if pairs {
                        let b_block = &mut b_pairs[..panels * kp * nr];
                        in_tasks(b_block, per_task * kp * nr, threads, |t, dst| {
                            b.pack_b_pairs(pc, kc, first_col(t), cols(t), nr, dst)
                        });
                        BBlock::Pairs(&*b_block)
                    } else {
                        let b_block = &mut b_pack[..panels * kc * nr];
                        in_tasks(b_block, per_task * kc * nr, threads, |t, dst| {
                            b.pack_b(pc, kc, first_col(t), cols(t), nr, dst)
                        });
                        BBlock::F32(&*b_block)
                    };
                    let multiply = |task: usize, c: &mut [f32]| {
                        let first = task * rows_per_task;
                        let rows = rows_per_task.min(m - first);
                        let (a_len, a_pairs_len) = if pairs { (0, MC * KC_PAIRS / 2) } else { (MC * KC, 0) };
                        with_buffer(&A_BUFFER, a_len, |a_pack| {
                            with_buffer(&A_PAIRS, a_pairs_len, |a_pairs| {
                                for ic in (0..rows).step_by(MC) {
                                    let mc = MC.min(rows - ic);
                                    let operands = match block {
                                        BBlock::F32(b) => {
                                            a.pack_a(first + ic, mc, pc, kc, mr, a_pack);
                                            Operands::F32 { a: APanels::packed(a_pack, kc, mr), b, kc }
                                        }
                                        BBlock::Pairs(b) => {
                                            a.pack_a_pairs(first + ic, mc, pc, kc, mr, a_pairs);
                                            Operands::Pairs { a: a_pairs, b, kp }
                                        }
                                    };
                                    macro_kernel(kernel, operands, ic, mc, jc, nc, c, ldc);
                                }
                            })
                        });
                    };
                    if threads > 1 && rows_per_task < m {
                        c.par_chunks_mut(rows_per_task * ldc).enumerate().for_each(|(t, c)| multiply(t, c));
                    } else {
                        multiply(0, c);
                    }
                }
            }
        })
    });
}

/// Runs `task(t, chunk)` on each `chunk_len` chunk of `block`, on the rayon threads when
/// `threads > 1`.
fn in_tasks<T: Send>(
    block: &mut [T],
    chunk_len: usize,
    threads: usize,
    task: impl Fn(usize, &mut [T]) + Sync,
) {
    if threads > 1 {
        block.par_chunks_mut(chunk_len).enumerate().for_each(|(t, chunk)| task(t, chunk));
    } else {
        task(0, block);
    }
}

/// One packed block of B.
#[derive(Clone, Copy)]
enum BBlock<'a> {
    F32(&'a [f32]),
    Pairs(&'a [u32]),
}

/// A's side of a block: `panels` of `MR` rows, value `(row, p)` of panel `i` at
/// `data[i·panel_stride + p·step + row]`. Packed panels have `step = MR`; a row-major matrix
/// transposed in memory (attention's probabilities) is read in place with `step` its row length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct APanels<'a> {
    /// The values.
    pub data: &'a [f32],
    /// Distance between one depth and the next within a panel.
    pub step: usize,
    /// Distance between panels.
    pub panel_stride: usize,
}

impl<'a> APanels<'a> {
    /// Panels packed by [`PackA`] at depth `kc`.
    pub fn packed(data: &'a [f32], kc: usize, mr: usize) -> Self {
        Self { data, step: mr, panel_stride: kc * mr }
    }
}

/// One block's operands for [`macro_kernel`]: f32 panels `kc` deep, or bf16 pair panels `kp`
/// pairs deep (for a pair kernel).
#[derive(Clone, Copy)]
pub(crate) enum Operands<'a> {
    /// A's panels and B's packed `kc×NR` panels.
    F32 { a: APanels<'a>, b: &'a [f32], kc: usize },
    /// A's and B's panels from [`to_pairs`].
    Pairs { a: &'a [u32], b: &'a [u32], kp: usize },
}

impl Operands<'_> {
    /// `C += A·B` for the tile of A's panel `ip` and B's panel `jp`.
    fn run(&self, kernel: Kernel, ip: usize, jp: usize, c: &mut [f32], ldc: usize) {
        let (mr, nr) = (kernel.mr, kernel.nr);
        match *self {
            Operands::F32 { a, b, kc } => {
                kernel.run(kc, &a.data[ip * a.panel_stride..], a.step, &b[jp * kc * nr..], c, ldc)
            }
            Operands::Pairs { a, b, kp } => {
                kernel.run_pairs(kp, &a[ip * kp * mr..], &b[jp * kp * nr..], c, ldc)
            }
        }
    }
}

/// Multiplies one block of A (rows `ic..ic+mc` of `c`) by one packed block of B (columns
/// `jc..jc+nc`), tile by tile; B's panel stays in L1 while A's panels stream past it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn macro_kernel(
    kernel: Kernel,
    operands: Operands,
    ic: usize,
    mc: usize,
    jc: usize,
    nc: usize,
    c: &mut [f32],
    ldc: usize,
) {
    let (mr, nr) = (kernel.mr, kernel.nr);
    let mut tile = [0f32; super::simd::MAX_TILE];
    for jp in 0..nc.div_ceil(nr) {
        let j0 = jc + jp * nr;
        let cols = nr.min(jc + nc - j0);
        for ip in 0..mc.div_ceil(mr) {
            let i0 = ic + ip * mr;
            let tile_rows = mr.min(ic + mc - i0);
            if tile_rows == mr && cols == nr {
                operands.run(kernel, ip, jp, &mut c[i0 * ldc + j0..], ldc);
                continue;
            }
            // An edge tile: run the full kernel on a copy, keep the valid part.
            let tile = &mut tile[..mr * nr];
            tile.fill(0.0);
            for r in 0..tile_rows {
                let at = (i0 + r) * ldc + j0;
                tile[r * nr..r * nr + cols].copy_from_slice(&c[at..at + cols]);
            }
            operands.run(kernel, ip, jp, tile, nr);
            for r in 0..tile_rows {
                let at = (i0 + r) * ldc + j0;
                c[at..at + cols].copy_from_slice(&tile[r * nr..r * nr + cols]);
            }
        }
    }
}

/// A 64-byte aligned slice of `len` values inside `buf` (grown when needed), so panel rows sit on
/// cache lines.
fn aligned<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let align = 64 / std::mem::size_of::<T>();
    if buf.len() < len + align {
        *buf = vec![T::default(); len + align];
    }
    let offset = buf.as_ptr().align_offset(64).min(align);
    &mut buf[offset..offset + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: f32) -> Vec<f32> {
        super::super::wave(n, 0.618, salt, 1.0)
    }

    fn plain(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            }
        }
        c
    }

    fn assert_close(got: &[f32], want: &[f64], k: usize, what: &str) {
        let tol = 1e-5 * (k as f64).sqrt().max(1.0) * 4.0;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            assert!((g as f64 - w).abs() <= tol, "{what}: element {i}: {g} vs {w}");
        }
    }

    #[test]
    fn every_kernel_matches_the_plain_product_on_odd_shapes() {
        // Sizes that are not multiples of any tile or block, single rows/columns, and a depth that
        // spans two KC blocks; m large enough to split between threads.
        let shapes =
            [(1, 1, 1), (7, 5, 3), (13, 33, 17), (1, 40, 300), (61, 1, 513), (125, 70, 9), (130, 2100, 20)];
        for kernel in Kernel::available() {
            for &(m, n, k) in &shapes {
                let (a, b) = (values(m * k, 0.3), values(k * n, 1.1));
                let want = plain(m, n, k, &a, &b);
                let mut c = vec![0f32; m * n];
                gemm_with(
                    kernel,
                    m,
                    n,
                    k,
                    &Strided::row_major(&a, k),
                    &Strided::row_major(&b, n),
                    &mut c,
                    n,
                    true,
                );
                assert_close(&c, &want, k, &format!("{kernel:?} {m}×{n}×{k}"));
            }
        }
    }

    #[test]
    fn transposed_and_half_operands_and_accumulation() {
        let (m, n, k) = (19, 23, 29);
        let a = values(m * k, 0.5);
        let b = values(k * n, 0.9);
        // Bᵀ stored row-major (n×k), read as B.
        let bt: Vec<f32> = (0..n * k).map(|idx| b[(idx % k) * n + idx / k]).collect();
        let a16: Vec<half::f16> = a.iter().map(|&v| half::f16::from_f32(v)).collect();
        let a_rounded: Vec<f32> = a16.iter().map(|v| v.to_f32()).collect();
        for kernel in Kernel::available() {
            let mut c = vec![1f32; m * n];
            gemm_with(
                kernel,
                m,
                n,
                k,
                &Strided::row_major(&a, k),
                &Strided::transposed(&bt, k),
                &mut c,
                n,
                false,
            );
            let want: Vec<f64> = plain(m, n, k, &a, &b).iter().map(|v| v + 1.0).collect();
            assert_close(&c, &want, k, "transposed B, C starting at 1");
            let mut c = vec![0f32; m * n];
            gemm_with(
                kernel,
                m,
                n,
                k,
                &Strided::row_major(&a16, k),
                &Strided::row_major(&b, n),
                &mut c,
                n,
                true,
            );
            assert_close(&c, &plain(m, n, k, &a_rounded, &b), k, "f16 A");
        }
    }

    fn rounded_to_bf16(v: &[f32]) -> Vec<f32> {
        v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect()
    }

    #[test]
    fn every_pair_kernel_matches_the_plain_product_of_rounded_operands() {
        // Odd depths leave a half-empty last pair; 1025 spans three blocks, the last one odd.
        let shapes = [(1, 1, 1), (7, 5, 3), (13, 33, 17), (1, 40, 300), (61, 1, 1025), (130, 2100, 21)];
        for kernel in Kernel::available_pairs() {
            for &(m, n, k) in &shapes {
                let (a, b) = (values(m * k, 0.7), values(k * n, 1.3));
                let want = plain(m, n, k, &rounded_to_bf16(&a), &rounded_to_bf16(&b));
                let mut c = vec![0f32; m * n];
                let (a_op, b_op) = (Strided::row_major(&a, k), Strided::row_major(&b, n));
                gemm_with(kernel, m, n, k, &a_op, &b_op, &mut c, n, true);
                assert_close(&c, &want, k, &format!("{kernel:?} {m}×{n}×{k}"));
            }
        }
    }

    #[test]
    fn a_bf16_operand_rounds_the_other_where_the_pair_kernels_run() {
        let (m, n, k) = (29, 70, 45);
        let (a, b) = (values(m * k, 0.1), values(k * n, 0.6));
        let a16: Vec<half::bf16> = a.iter().map(|&v| half::bf16::from_f32(v)).collect();
        let a_rounded = rounded_to_bf16(&a);
        let b_seen = if Kernel::uses_pairs() { rounded_to_bf16(&b) } else { b.clone() };
        let mut c = vec![0f32; m * n];
        gemm(m, n, k, &Strided::row_major(&a16, k), &Strided::row_major(&b, n), &mut c, n);
        assert_close(&c, &plain(m, n, k, &a_rounded, &b_seen), k, "bf16 A");
        // f32 operands are never rounded.
        let mut c = vec![0f32; m * n];
        gemm(m, n, k, &Strided::row_major(&a, k), &Strided::row_major(&b, n), &mut c, n);
        assert_close(&c, &plain(m, n, k, &a, &b), k, "f32");
    }

    #[test]
    fn a_wider_c_row_stride_leaves_the_gap_alone() {
        let (m, n, k, ldc) = (9, 17, 11, 21);
        let (a, b) = (values(m * k, 0.2), values(k * n, 0.4));
        let mut c = vec![7f32; m * ldc];
        gemm(m, n, k, &Strided::row_major(&a, k), &Strided::row_major(&b, n), &mut c, ldc);
        let want = plain(m, n, k, &a, &b);
        for i in 0..m {
            let row: Vec<f64> = want[i * n..(i + 1) * n].iter().map(|v| v + 7.0).collect();
            assert_close(&c[i * ldc..i * ldc + n], &row, k, "row");
            assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 7.0));
        }
    }
}
