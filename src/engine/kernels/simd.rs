//! The GEMM micro-kernels: `C[MR×NR] += Apanel·Bpanel` over a packed depth, accumulators held in
//! vector registers. The instruction set is chosen at run time (AVX-512, then AVX2+FMA, then a
//! portable kernel the compiler vectorises for the build's baseline, which is what ARM and older
//! x86 get), so one binary runs everywhere and uses what the CPU has. The same choice compiles
//! the plain-Rust vector loops (softmax, GEGLU) for the CPU's width (`multiversion!`).
//!
//! Products with a bf16 operand can instead run on *pairs*: panels hold two consecutive depths
//! of each row or column as two bf16 in one `u32`, and AVX-512 BF16's `vdpbf16ps` multiplies
//! and adds a pair per lane in f32 — twice the multiply-adds of an f32 FMA per instruction.
//!
//! This is the one module allowed `unsafe`: SIMD loads and stores take raw pointers, and calling a
//! `#[target_feature]` function is unsafe. Both are made sound by [`Kernel::run`], which checks
//! every slice length before the call, and by [`Kernel`] values existing only for instruction sets
//! the CPU reported.
#![allow(unsafe_code)]

use std::sync::OnceLock;

/// The largest `MR·NR` of any kernel (the edge-tile buffer's size).
pub const MAX_TILE: usize = 12 * 32;

/// The instruction set a kernel uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12×32 tile in 24 zmm accumulators.
    Avx512,
    /// AVX-512F: 12×16 tile, for products whose width would leave most of a 32-wide tile empty
    /// (attention's head width of 40, CLIP's 77 tokens).
    Avx512Narrow,
    /// AVX2 with FMA: 6×16 tile in 12 ymm accumulators.
    Avx2,
    /// AVX-512 BF16 on depth pairs: 12×32 tile in 24 zmm f32 accumulators.
    Avx512Bf16,
    /// AVX-512 BF16 on depth pairs: 12×16 tile, for narrow products.
    Avx512Bf16Narrow,
    /// Plain Rust over fixed-size arrays (auto-vectorised): 4×16 tile.
    Portable,
}

/// A micro-kernel the running CPU supports, with its tile shape.
#[derive(Clone, Copy, Debug)]
pub struct Kernel {
    /// Rows of C per tile.
    pub mr: usize,
    /// Columns of C per tile.
    pub nr: usize,
    isa: Isa,
}

impl Kernel {
    const fn of(isa: Isa) -> Self {
        match isa {
            Isa::Avx512 => Self { mr: 12, nr: 32, isa },
            Isa::Avx512Narrow => Self { mr: 12, nr: 16, isa },
            Isa::Avx2 => Self { mr: 6, nr: 16, isa },
            Isa::Avx512Bf16 => Self { mr: 12, nr: 32, isa },
            Isa::Avx512Bf16Narrow => Self { mr: 12, nr: 16, isa },
            Isa::Portable => Self { mr: 4, nr: 16, isa },
        }
    }

    /// Every kernel this CPU can run, fastest first.
    pub fn available() -> Vec<Kernel> {
        let mut kernels = Vec::new();
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                kernels.push(Self::of(Isa::Avx512));
                kernels.push(Self::of(Isa::Avx512Narrow));
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                kernels.push(Self::of(Isa::Avx2));
            }
        }
        kernels.push(Self::of(Isa::Portable));
        kernels
    }

    /// The kernel to use: the fastest available, or the one named by `EASEL_CPU_KERNEL`
    /// (`avx512`, `avx2`, `portable`) when the CPU has it — for benchmarks and bug reports.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let available = Self::available();
            let wanted = std::env::var("EASEL_CPU_KERNEL").ok().map(|s| s.to_ascii_lowercase());
            wanted
                .and_then(|name| {
                    available.iter().copied().find(|k| format!("{:?}", k.isa).to_ascii_lowercase() == name)
                })
                .unwrap_or(available[0])
        })
    }

    /// The bf16 pair kernels this CPU can run (none without AVX-512 BF16), wide first.
    pub fn available_pairs() -> Vec<Kernel> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512bf16")
        {
            return vec![Self::of(Isa::Avx512Bf16), Self::of(Isa::Avx512Bf16Narrow)];
        }
        Vec::new()
    }

    /// Whether a 16-wide tile pads fewer of `n` columns than a 32-wide one.
    fn narrow_pads_less(n: usize) -> bool {
        n.div_ceil(16) * 16 < n.div_ceil(32) * 32
    }

    /// The best kernel for a product `n` columns wide: the narrow AVX-512 tile when it pads fewer
    /// columns than the wide one.
    pub fn for_width(n: usize) -> Kernel {
        let best = Self::best();
        if best.isa == Isa::Avx512 && Self::narrow_pads_less(n) {
            return Self::of(Isa::Avx512Narrow);
        }
        best
    }

    /// Whether products with a bf16 operand run on the pair kernels: the CPU has them and the
    /// f32 kernel in use is AVX-512's (so `EASEL_CPU_KERNEL=avx2` or `portable` turns them off).
    pub fn uses_pairs() -> bool {
        static PAIRS: OnceLock<bool> = OnceLock::new();
        *PAIRS.get_or_init(|| !Self::available_pairs().is_empty() && Self::best().isa == Isa::Avx512)
    }

    /// The best kernel for a product `n` columns wide with an operand stored in bf16: a pair
    /// kernel where [`Kernel::uses_pairs`] (the other operand is rounded to bf16 as it is packed,
    /// as PyTorch's bf16 autocast does), else [`Kernel::for_width`]'s.
    pub fn for_bf16_width(n: usize) -> Kernel {
        if !Self::uses_pairs() {
            return Self::for_width(n);
        }
        if Self::narrow_pads_less(n) {
            Self::of(Isa::Avx512Bf16Narrow)
        } else {
            Self::of(Isa::Avx512Bf16)
        }
    }

    /// Whether the kernel runs on bf16 depth pairs ([`Kernel::run_pairs`]) rather than f32
    /// panels ([`Kernel::run`]).
    pub fn takes_pairs(&self) -> bool {
        matches!(self.isa, Isa::Avx512Bf16 | Isa::Avx512Bf16Narrow)
    }

    /// The instruction set.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `C += A·B` for one tile: `a` holds A's `mr` values of depth `p` at `a[p·a_step..]` (packed:
    /// `a_step = mr`), `b` is `kc×nr` packed, `c` is the tile's first row with rows `ldc` apart.
    #[inline]
    pub fn run(&self, kc: usize, a: &[f32], a_step: usize, b: &[f32], c: &mut [f32], ldc: usize) {
        if kc == 0 {
            return;
        }
        assert!(a_step >= self.mr && a.len() >= (kc - 1) * a_step + self.mr, "micro-kernel: short A panel");
        assert!(b.len() >= kc * self.nr, "micro-kernel: short B panel");
        assert!(ldc >= self.nr && c.len() >= (self.mr - 1) * ldc + self.nr, "micro-kernel: short tile");
        assert!(!self.takes_pairs(), "micro-kernel: {:?} runs on bf16 pairs", self.isa);
        match self.isa {
            // SAFETY: the lengths were checked above, and `Kernel::of(Isa::Avx512/Avx2)` is only
            // built by `available()` after the CPU reported the features.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => unsafe {
                x86::kernel_12x32(kc, a.as_ptr(), a_step, b.as_ptr(), c.as_mut_ptr(), ldc)
            },
            // SAFETY: as for the wide AVX-512 kernel.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Narrow => unsafe {
                x86::kernel_12x16(kc, a.as_ptr(), a_step, b.as_ptr(), c.as_mut_ptr(), ldc)
            },
            // SAFETY: as above; AVX2 and FMA were reported.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::kernel_6x16(kc, a.as_ptr(), a_step, b.as_ptr(), c.as_mut_ptr(), ldc) },
            _ => portable_4x16(kc, a, a_step, b, c, ldc),
        }
    }

    /// `C += A·B` for one tile of a pair kernel: `a` holds `kp` depth pairs of `mr` rows
    /// (`a[q·mr + row]`), `b` holds `kp` pairs of `nr` columns (`b[q·nr + col]`), each `u32` two
    /// bf16 (the even depth in the low half); `c` as in [`Kernel::run`].
    #[inline]
    pub fn run_pairs(&self, kp: usize, a: &[u32], b: &[u32], c: &mut [f32], ldc: usize) {
        if kp == 0 {
            return;
        }
        assert!(a.len() >= kp * self.mr, "pair kernel: short A panel");
        assert!(b.len() >= kp * self.nr, "pair kernel: short B panel");
        assert!(ldc >= self.nr && c.len() >= (self.mr - 1) * ldc + self.nr, "pair kernel: short tile");
        match self.isa {
            // SAFETY: the lengths were checked above, and pair kernels are only built by
            // `available_pairs()` after the CPU reported AVX-512F and AVX-512 BF16.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => unsafe { x86::pairs_12x32(kp, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc) },
            // SAFETY: as for the wide pair kernel.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16Narrow => unsafe {
                x86::pairs_12x16(kp, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc)
            },
            other => panic!("pair kernel: {other:?} runs on f32 panels"),
        }
    }
}

/// Defines `pub fn $name`, which runs `$body` (an `#[inline(always)]` function written in plain
/// Rust) compiled for the best instruction set the CPU has: the same source vectorises 16 wide
/// under AVX-512, 8 under AVX2 and 4 on the x86-64 baseline.
macro_rules! multiversion {
    ($(#[$doc:meta])* pub fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),* $(,)?) => $body:path) => {
        $(#[$doc])*
        // The copies forward the body's arguments, however many it takes.
        #[allow(clippy::too_many_arguments)]
        pub fn $name $(<$g: $bound>)? ($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                #[allow(clippy::too_many_arguments)]
                fn avx512 $(<$g: $bound>)? ($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2 $(<$g: $bound>)? ($($arg: $ty),*) {
                    $body($($arg),*)
                }
                match Kernel::best().isa {
                    Isa::Avx512 | Isa::Avx512Narrow | Isa::Avx512Bf16 | Isa::Avx512Bf16Narrow => {
                        // SAFETY: `best()` only returns kernels whose features the CPU reported.
                        return unsafe { avx512($($arg),*) };
                    }
                    Isa::Avx2 => {
                        // SAFETY: as above; AVX2 and FMA were reported.
                        return unsafe { avx2($($arg),*) };
                    }
                    Isa::Portable => {}
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion! {
    /// Softmax of `scale·row` in place ([`softmax_row_scaled`](super::softmax::softmax_row_scaled)).
    pub fn softmax_row(row: &mut [f32], scale: f32) => super::softmax::softmax_row_scaled
}

multiversion! {
    /// [`softmax_columns`](super::softmax::softmax_columns) for attention's transposed scores.
    pub fn softmax_columns(st: &mut [f32], ld: usize, rows: usize, cols: usize, scale: f32, inv_sums: &mut [f32])
        => super::softmax::softmax_columns
}

multiversion! {
    /// [`softmax_columns_pairs`](super::softmax::softmax_columns_pairs): the softmax written as
    /// bf16 pair panels for attention's second product.
    pub fn softmax_columns_pairs(st: &[f32], ld: usize, rows: usize, cols: usize, scale: f32, inv_sums: &mut [f32],
        chunk: usize, mr: usize, out: &mut [u32]) => super::softmax::softmax_columns_pairs
}

multiversion! {
    /// [`geglu_row`](super::activations::geglu_row): `out = value·gelu(gate)`.
    pub fn geglu_row<T: super::gemm::Element>(value: &[T], gate: &[T], out: &mut [T]) => super::activations::geglu_row
}

/// The portable kernel: fixed-size arrays the compiler keeps in vector registers.
fn portable_4x16(kc: usize, a: &[f32], a_step: usize, b: &[f32], c: &mut [f32], ldc: usize) {
    let mut acc = [[0f32; 16]; 4];
    for (p, bp) in b.chunks_exact(16).take(kc).enumerate() {
        let ap = &a[p * a_step..p * a_step + 4];
        for (row, &av) in acc.iter_mut().zip(ap) {
            for (x, &bv) in row.iter_mut().zip(bp) {
                *x += av * bv;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (x, v) in c[r * ldc..r * ldc + 16].iter_mut().zip(row) {
            *x += v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Defines one micro-kernel: `$mr` rows × `$vectors` vectors of `$lanes` floats, accumulated
    /// in registers over the depth, then added to C.
    macro_rules! micro_kernel {
        ($(#[$doc:meta])* $name:ident, $feature:literal, $mr:literal, $vectors:literal, $lanes:literal,
         $zero:ident, $load:ident, $splat:ident, $fma:ident, $add:ident, $store:ident) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// The CPU has the enabled features; `a` holds `$mr` values at each `p·a_step`
            /// (`p < kc`), `b` holds `$vectors·$lanes·kc` values, and `c`'s rows `0..$mr` at
            /// stride `ldc` hold `$vectors·$lanes` values each.
            #[target_feature(enable = $feature)]
            pub unsafe fn $name(kc: usize, a: *const f32, a_step: usize, b: *const f32, c: *mut f32, ldc: usize) {
                let mut acc = [[$zero(); $vectors]; $mr];
                for p in 0..kc {
                    let mut bv = [$zero(); $vectors];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        // SAFETY: p < kc, within B's stated length.
                        *slot = unsafe { $load(b.add((p * $vectors + v) * $lanes)) };
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        // SAFETY: p < kc and r < MR, within A's stated extent.
                        let av = $splat(unsafe { *a.add(p * a_step + r) });
                        for (x, &bx) in row.iter_mut().zip(&bv) {
                            *x = $fma(av, bx, *x);
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    for (v, &x) in row.iter().enumerate() {
                        // SAFETY: row r < MR of the tile, within its NR values.
                        unsafe {
                            let out = c.add(r * ldc + v * $lanes);
                            $store(out, $add($load(out), x));
                        }
                    }
                }
            }
        };
    }

    /// Defines one bf16 pair kernel: 12 rows × `$vectors` zmm of C, each step multiplying one
    /// depth pair of A (broadcast) by one of B and adding both products into f32 accumulators.
    macro_rules! pair_kernel {
        ($(#[$doc:meta])* $name:ident, $vectors:literal) => {
            $(#[$doc])*
            ///
            /// # Safety
            /// The CPU has AVX-512F and AVX-512 BF16; `a` holds `12·kp` pairs, `b` holds
            /// `$vectors·16·kp` pairs, and `c`'s rows `0..12` at stride `ldc` hold `$vectors·16`
            /// values each.
            #[target_feature(enable = "avx512f,avx512bf16")]
            pub unsafe fn $name(kp: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize) {
                let mut acc = [[_mm512_setzero_ps(); $vectors]; 12];
                for q in 0..kp {
                    let mut bv = [bf16_pairs(_mm512_setzero_si512()); $vectors];
                    for (v, slot) in bv.iter_mut().enumerate() {
                        // SAFETY: q < kp, within B's stated length.
                        *slot = bf16_pairs(unsafe { _mm512_loadu_si512(b.add((q * $vectors + v) * 16).cast()) });
                    }
                    for (r, row) in acc.iter_mut().enumerate() {
                        // SAFETY: q < kp and r < 12, within A's stated extent.
                        let pair = unsafe { *a.add(q * 12 + r) };
                        let av = bf16_pairs(_mm512_set1_epi32(pair as i32));
                        for (x, &bx) in row.iter_mut().zip(&bv) {
                            *x = _mm512_dpbf16_ps(*x, av, bx);
                        }
                    }
                }
                for (r, row) in acc.iter().enumerate() {
                    for (v, &x) in row.iter().enumerate() {
                        // SAFETY: row r < 12 of the tile, within its values.
                        unsafe {
                            let out = c.add(r * ldc + v * 16);
                            _mm512_storeu_ps(out, _mm512_add_ps(_mm512_loadu_ps(out), x));
                        }
                    }
                }
            }
        };
    }

    /// The 32 bf16 in a register's bits, as `vdpbf16ps` takes them.
    #[inline(always)]
    fn bf16_pairs(bits: __m512i) -> __m512bh {
        // SAFETY: both are 512 bits of plain data; the bf16 vector type has no invalid values.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(bits) }
    }

    pair_kernel!(
        /// AVX-512 BF16: 12 rows × 2 zmm of C.
        pairs_12x32, 2
    );
    pair_kernel!(
        /// AVX-512 BF16: 12 rows × 1 zmm of C, for narrow products.
        pairs_12x16, 1
    );

    micro_kernel!(
        /// AVX2/FMA: 6 rows × 2 ymm of C.
        kernel_6x16, "avx2,fma", 6, 2, 8,
        _mm256_setzero_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps
    );
    micro_kernel!(
        /// AVX-512: 12 rows × 2 zmm of C.
        kernel_12x32, "avx512f", 12, 2, 16,
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps
    );
    micro_kernel!(
        /// AVX-512: 12 rows × 1 zmm of C, for narrow products.
        kernel_12x16, "avx512f", 12, 1, 16,
        _mm512_setzero_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `.ci/run` runs the kernel tests again under `EASEL_CPU_KERNEL=avx2` and `portable`; this
    /// makes sure such a run really uses that kernel (or says the CPU lacks it).
    #[test]
    fn the_kernel_named_by_easel_cpu_kernel_is_the_one_used() {
        let name_of = |k: Kernel| format!("{:?}", k.isa).to_ascii_lowercase();
        let chosen = name_of(Kernel::best());
        let available: Vec<String> = Kernel::available().into_iter().map(name_of).collect();
        match std::env::var("EASEL_CPU_KERNEL").map(|s| s.to_ascii_lowercase()) {
            Ok(wanted) if available.contains(&wanted) => assert_eq!(chosen, wanted),
            Ok(wanted) => {
                eprintln!("this CPU has no {wanted} kernel ({available:?}); testing {chosen} instead");
                assert_eq!(chosen, available[0]);
            }
            Err(_) => assert_eq!(chosen, available[0], "the fastest kernel is the default"),
        }
    }
}
