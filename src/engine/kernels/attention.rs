//! Multi-head attention on `[batch, tokens, heads·d]` activations as the UNet's projections
//! produce them: each head is read in place through strides (no transposes into
//! `[batch·heads, tokens, d]` and back), and queries go in blocks of [`QUERY_BLOCK`] whose scores
//! (`keys × QUERY_BLOCK`, thread-local, reused) are the only score memory ever held. Each block
//! sees every key, so the softmax is the exact one-shot formula.
//!
//! The scores are computed transposed, `Sᵀ = K·Qᵀ` (one row per key), because then everything
//! after the first product runs along contiguous rows: the softmax down each column is a few
//! vector passes over rows, and the second product `O = P·V` reads P straight out of `Sᵀ` as
//! its packed left operand (depth step = the row length), so the probabilities are never copied
//! or transposed. Per head, K and V are packed once and shared by every query block; the softmax
//! leaves exponentials unnormalised and the output rows are divided by their sums at the end.
//!
//! For bf16 activations on a CPU with AVX-512 BF16 both products run on the pair kernels: Q, K
//! and V are packed as bf16 pairs, and the softmax writes the probabilities rounded into pairs (two
//! rows of Sᵀ side by side) as the second product's packed left operand — as PyTorch's bf16
//! attention rounds them, without a pass that rereads them. Scores,
//! softmax and sums stay f32.

use std::cell::RefCell;

use rayon::prelude::*;

use super::gemm::{macro_kernel, APanels, Operands, PackA, PackB, Strided};
use super::simd::{softmax_columns, softmax_columns_pairs, Kernel};

/// Queries per block (a multiple of every kernel's `NR`): 4096 keys × 128 scores is 2 MiB.
const QUERY_BLOCK: usize = 128;
/// Keys per step of the second product: 256 rows of Sᵀ (128 KiB) and V's panel (16 KiB).
const KEY_CHUNK: usize = 256;

thread_local! {
    /// Per thread: the block's packed queries, its transposed scores, and its sums.
    static BLOCK: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
    /// Per thread, for the pair kernels: the block's queries and one chunk of probabilities.
    static BLOCK_PAIRS: RefCell<[Vec<u32>; 2]> = const { RefCell::new([Vec::new(), Vec::new()]) };
}

/// A head's packed keys (A of `Sᵀ = K·Qᵀ`) and values (B of `O = P·V`, in chunks of
/// [`KEY_CHUNK`] keys), as f32 panels or bf16 pairs.
enum PackedHead {
    F32 { keys: Vec<f32>, values: Vec<f32> },
    Pairs { keys: Vec<u32>, values: Vec<u32> },
}

/// The sizes of one attention call.
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Batch items.
    pub batch: usize,
    /// Query tokens.
    pub queries: usize,
    /// Key/value tokens.
    pub keys: usize,
    /// Heads.
    pub heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

/// `softmax(q·kᵀ·scale)·v` per head; `q` is `[batch, queries, heads·d]`, `k` and `v` are
/// `[batch, keys, heads·d]`, all contiguous; the result has `q`'s shape. `bf16`: the values are
/// bf16 ones, so the products may run in bf16.
pub fn attention(q: &[f32], k: &[f32], v: &[f32], h: Heads, scale: f32, bf16: bool) -> Vec<f32> {
    let dim = h.heads * h.head_dim;
    assert_eq!(q.len(), h.batch * h.queries * dim, "attention: q length");
    assert_eq!(k.len(), h.batch * h.keys * dim, "attention: k length");
    assert_eq!(v.len(), h.batch * h.keys * dim, "attention: v length");
    let mut out = vec![0f32; q.len()];
    if h.queries == 0 || h.keys == 0 || h.head_dim == 0 {
        return out;
    }
    let kernel: fn(usize) -> Kernel = if bf16 { Kernel::for_bf16_width } else { Kernel::for_width };
    let (qk, pv) = (kernel(QUERY_BLOCK.min(h.queries)), kernel(h.head_dim));
    // Sᵀ's row length: one block of queries.
    let ld = QUERY_BLOCK;
    let d = h.head_dim;
    for (b, out) in out.chunks_mut(h.queries * dim).enumerate() {
        let (q, k, v) = (&q[b * h.queries * dim..], &k[b * h.keys * dim..], &v[b * h.keys * dim..]);
        for head in 0..h.heads {
            let col = head * d;
            let (k_head, v_head) = (Strided::row_major(&k[col..], dim), Strided::row_major(&v[col..], dim));
            let packed = pack_head(k_head, v_head, h.keys, d, qk, pv);
            let q_head = &q[col..];
            out.par_chunks_mut(QUERY_BLOCK * dim).enumerate().for_each(|(block, out)| {
                let rows = out.len() / dim;
                let queries = Strided::transposed(&q_head[block * QUERY_BLOCK * dim..], dim);
                BLOCK.with_borrow_mut(|[q_pack, st, inv_sums]| {
                    BLOCK_PAIRS.with_borrow_mut(|[q_pairs, p_pairs]| {
                        // Room past the last row for the last row panel's full-width reads.
                        st.resize(h.keys * ld + pv.mr, 0.0);
                        st.fill(0.0);
                        let scores = match &packed {
                            PackedHead::F32 { keys, .. } => {
                                q_pack.resize(rows.div_ceil(qk.nr) * qk.nr * d, 0.0);
                                queries.pack_b(0, d, 0, rows, qk.nr, q_pack);
                                Operands::F32 { a: APanels::packed(keys, d, qk.mr), b: q_pack, kc: d }
                            }
                            PackedHead::Pairs { keys, .. } => {
                                q_pairs.resize(rows.div_ceil(qk.nr) * qk.nr * d.div_ceil(2), 0);
                                queries.pack_b_pairs(0, d, 0, rows, qk.nr, q_pairs);
                                Operands::Pairs { a: keys, b: q_pairs, kp: d.div_ceil(2) }
                            }
                        };
                        macro_kernel(qk, scores, 0, h.keys, 0, rows, st, ld);
                        inv_sums.resize(QUERY_BLOCK, 0.0);
                        // For the pair kernels the softmax writes the probabilities as pairs, every
                        // chunk's panels at once (see `softmax_columns_pairs`).
                        let chunk_pairs = rows.div_ceil(pv.mr) * pv.mr * KEY_CHUNK / 2;
                        match &packed {
                            PackedHead::F32 { .. } => softmax_columns(st, ld, h.keys, rows, scale, inv_sums),
                            PackedHead::Pairs { .. } => {
                                p_pairs.resize(h.keys.div_ceil(KEY_CHUNK) * chunk_pairs, 0);
                                let (keys, mr) = (h.keys, pv.mr);
                                softmax_columns_pairs(
                                    st, ld, keys, rows, scale, inv_sums, KEY_CHUNK, mr, p_pairs,
                                );
                            }
                        }
                        // O += P[:, chunk]·V[chunk, :], a chunk of keys at a time so the slice of
                        // Sᵀ being read stays in L2 while every tile of the block passes over it.
                        for k0 in (0..h.keys).step_by(KEY_CHUNK) {
                            let (chunk, kc) = (k0 / KEY_CHUNK, KEY_CHUNK.min(h.keys - k0));
                            let operands = match &packed {
                                PackedHead::F32 { values, .. } => {
                                    let chunk_len = d.div_ceil(pv.nr) * pv.nr * KEY_CHUNK;
                                    let probs =
                                        APanels { data: &st[k0 * ld..], step: ld, panel_stride: pv.mr };
                                    Operands::F32 { a: probs, b: &values[chunk * chunk_len..], kc }
                                }
                                PackedHead::Pairs { values, .. } => {
                                    let chunk_len = d.div_ceil(pv.nr) * pv.nr * KEY_CHUNK / 2;
                                    Operands::Pairs {
                                        a: &p_pairs[chunk * chunk_pairs..],
                                        b: &values[chunk * chunk_len..],
                                        kp: kc.div_ceil(2),
                                    }
                                }
                            };
                            macro_kernel(pv, operands, 0, rows, 0, d, &mut out[col..], dim);
                        }
                        for (row, &inv) in out.chunks_exact_mut(dim).zip(inv_sums.iter()) {
                            row[col..col + d].iter_mut().for_each(|x| *x *= inv);
                        }
                    })
                });
            });
        }
    }
    out
}

/// Packs one head's keys for `qk` and its values, chunk by chunk, for `pv`.
fn pack_head(k: Strided<f32>, v: Strided<f32>, keys: usize, d: usize, qk: Kernel, pv: Kernel) -> PackedHead {
    let key_panels = keys.div_ceil(qk.mr) * qk.mr;
    let chunks = keys.div_ceil(KEY_CHUNK);
    // V in chunks of KEY_CHUNK keys, each chunk's panels together (see the second product).
    let chunk_len = d.div_ceil(pv.nr) * pv.nr * KEY_CHUNK;
    if qk.takes_pairs() && pv.takes_pairs() {
        let mut packed_keys = vec![0u32; key_panels * d.div_ceil(2)];
        k.pack_a_pairs(0, keys, 0, d, qk.mr, &mut packed_keys);
        let mut values = vec![0u32; chunks * chunk_len / 2];
        for (chunk, dst) in values.chunks_exact_mut(chunk_len / 2).enumerate() {
            let k0 = chunk * KEY_CHUNK;
            v.pack_b_pairs(k0, KEY_CHUNK.min(keys - k0), 0, d, pv.nr, dst);
        }
        return PackedHead::Pairs { keys: packed_keys, values };
    }
    let mut packed_keys = vec![0f32; key_panels * d];
    k.pack_a(0, keys, 0, d, qk.mr, &mut packed_keys);
    let mut values = vec![0f32; chunks * chunk_len];
    for (chunk, dst) in values.chunks_exact_mut(chunk_len).enumerate() {
        let k0 = chunk * KEY_CHUNK;
        v.pack_b(k0, KEY_CHUNK.min(keys - k0), 0, d, pv.nr, dst);
    }
    PackedHead::F32 { keys: packed_keys, values }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, salt: f32) -> Vec<f32> {
        super::super::wave(n, 0.529, salt, 2.0)
    }

    /// The formula in f64, one head at a time.
    fn plain(q: &[f32], k: &[f32], v: &[f32], h: Heads, scale: f64) -> Vec<f64> {
        let dim = h.heads * h.head_dim;
        let mut out = vec![0f64; q.len()];
        for b in 0..h.batch {
            for head in 0..h.heads {
                for i in 0..h.queries {
                    let qi = &q[(b * h.queries + i) * dim + head * h.head_dim..][..h.head_dim];
                    let scores: Vec<f64> = (0..h.keys)
                        .map(|j| {
                            let kj = &k[(b * h.keys + j) * dim + head * h.head_dim..][..h.head_dim];
                            qi.iter().zip(kj).map(|(&a, &c)| a as f64 * c as f64).sum::<f64>() * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..h.head_dim {
                        out[(b * h.queries + i) * dim + head * h.head_dim + c] = (0..h.keys)
                            .map(|j| e[j] / sum * v[(b * h.keys + j) * dim + head * h.head_dim + c] as f64)
                            .sum();
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_formula_on_odd_shapes() {
        // Query counts below, at and past a block; one key; head widths of 1, 40 and 7.
        for (batch, queries, keys, heads, head_dim) in
            [(1, 5, 3, 2, 4), (2, 130, 77, 3, 7), (1, 128, 1, 1, 40), (1, 257, 300, 2, 1), (1, 1, 9, 8, 40)]
        {
            let h = Heads { batch, queries, keys, heads, head_dim };
            let dim = heads * head_dim;
            let q = values(batch * queries * dim, 0.1);
            let k = values(batch * keys * dim, 0.6);
            let v = values(batch * keys * dim, 1.7);
            let scale = (head_dim as f64).powf(-0.5);
            let want = plain(&q, &k, &v, h, scale);
            let got = attention(&q, &k, &v, h, scale as f32, false);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() < 2e-5, "{h:?}: element {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn bf16_values_stay_within_bf16_rounding_of_the_formula() {
        // Odd key counts leave half-empty pairs (and a key chunk past KEY_CHUNK); width 7 is odd.
        let round =
            |x: Vec<f32>| -> Vec<f32> { x.iter().map(|&v| half::bf16::from_f32(v).to_f32()).collect() };
        let tolerance = if Kernel::uses_pairs() { 1e-2 } else { 2e-5 };
        for (batch, queries, keys, heads, head_dim) in
            [(1, 130, 77, 3, 7), (2, 129, 301, 2, 40), (1, 1, 9, 8, 40)]
        {
            let h = Heads { batch, queries, keys, heads, head_dim };
            let dim = heads * head_dim;
            let q = round(values(batch * queries * dim, 0.3));
            let k = round(values(batch * keys * dim, 0.8));
            let v = round(values(batch * keys * dim, 1.9));
            let scale = (head_dim as f64).powf(-0.5);
            let want = plain(&q, &k, &v, h, scale);
            let got = attention(&q, &k, &v, h, scale as f32, true);
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!((g as f64 - w).abs() < tolerance, "{h:?}: element {i}: {g} vs {w}");
            }
        }
    }
}
