//! The small set of layers and ops every model in the engine calls.
//!
//! Models never call candle's convolution, normalisation or attention directly: they go through
//! these, so faster kernels (the CPU speed work) can replace the bodies without touching a model.
//! Normalisations and softmax run in f32 whatever the storage dtype, as diffusers' do on half
//! precision.

use candle_core::{DType, Module, Tensor, D};
use candle_nn::VarBuilder;

use super::kernels::tensors::{ConvInput, NormSilu};
use crate::error::Result;

/// A 2-D convolution with diffusers' weight names (`weight`, `bias`).
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    stride: usize,
    padding: usize,
}

impl Conv2d {
    /// Loads a `kernel`×`kernel` convolution from `in_ch` to `out_ch` channels.
    pub fn new(
        vb: VarBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
        let bias = Some(vb.get(out_ch, "bias")?);
        Ok(Self { weight, bias, stride, padding })
    }

    /// The dtype of the weights.
    pub fn weight_dtype(&self) -> candle_core::DType {
        self.weight.dtype()
    }

    /// Loads a `kernel`×`kernel` convolution with no bias, stride 1 and "same" padding.
    pub fn no_bias(vb: VarBuilder, in_ch: usize, out_ch: usize, kernel: usize) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, kernel, kernel), "weight")?;
        Ok(Self { weight, bias: None, stride: 1, padding: kernel / 2 })
    }

    /// Loads a `kernel`×`kernel` convolution with no bias that steps `stride` pixels, padded by
    /// `kernel / 2` on every side (TAESD's encoder halves its picture so).
    pub fn strided_no_bias(
        vb: VarBuilder,
        in_ch: usize,
        out_ch: usize,
        kernel: usize,
        stride: usize,
    ) -> Result<Self> {
        Ok(Self { stride, ..Self::no_bias(vb, in_ch, out_ch, kernel)? })
    }

    /// Loads a convolution stored as a linear layer's `[out, in]` matrix or a 1×1 kernel, as VAE
    /// attention projections are in some files.
    pub fn pointwise_from(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let weight = match weight.rank() {
            2 => weight.unsqueeze(2)?.unsqueeze(3)?,
            _ => weight,
        };
        Ok(Self { weight, bias, stride: 1, padding: 0 })
    }

    /// Applies the convolution to `[batch, channels, height, width]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.apply(x, ConvInput::Plain)
    }

    /// Applies the convolution to `x` enlarged to `size` (height, width) by nearest neighbour;
    /// on the CPU the enlarged picture is read on the fly instead of being made.
    pub fn forward_enlarged(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        self.apply(x, ConvInput::Enlarged(size))
    }

    /// `self.forward(&silu(norm.forward(x)))`; on the CPU the normalised picture is read on the
    /// fly instead of being made, which at the VAE's 512² layers is the largest temporary there is.
    pub fn forward_normalised_silu(&self, x: &Tensor, norm: &GroupNorm) -> Result<Tensor> {
        let (groups, weight, bias, eps) = (norm.groups, &norm.weight, &norm.bias, norm.eps);
        self.apply(x, ConvInput::Normalised(NormSilu { groups, weight, bias, eps }))
    }

    /// `conv2d(read(x), w) + b` with symmetric zero padding: the CPU kernel when it takes
    /// these tensors, candle's ops otherwise.
    fn apply(&self, x: &Tensor, input: ConvInput) -> Result<Tensor> {
        let (weight, bias) = (&self.weight, self.bias.as_ref());
        if let Some(y) = super::kernels::tensors::conv2d(x, weight, bias, self.stride, self.padding, input)? {
            return Ok(y);
        }
        let read = match input {
            ConvInput::Plain => x.clone(),
            ConvInput::Enlarged((h, w)) => x.upsample_nearest2d(h, w)?,
            ConvInput::Normalised(NormSilu { groups, weight, bias, eps }) => {
                silu(&group_norm(x, groups, weight, bias, eps)?)?
            }
        };
        let y = read.conv2d(weight, self.padding, self.stride, 1, 1)?;
        Ok(match bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1, 1))?)?,
            None => y,
        })
    }
}

/// `fresh + other`, written into `fresh`'s storage when the kernels take the tensors. `fresh`
/// must be a tensor the caller has just made and shares with nothing (a layer's output).
pub fn add_into_fresh(fresh: Tensor, other: &Tensor) -> Result<Tensor> {
    if super::kernels::tensors::add_assign(&fresh, other)? {
        Ok(fresh)
    } else {
        Ok((fresh + other)?)
    }
}

/// A fully connected layer, `x @ weightᵀ + bias`.
#[derive(Clone, Debug)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    /// Loads a layer from `in_dim` to `out_dim` with a bias.
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((out_dim, in_dim), "weight")?, bias: Some(vb.get(out_dim, "bias")?) })
    }

    /// Loads a layer without a bias.
    pub fn no_bias(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self { weight: vb.get((out_dim, in_dim), "weight")?, bias: None })
    }

    /// A layer from tensors already in hand.
    pub fn from_weights(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    /// Applies the layer over the last dimension.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some(y) = super::kernels::tensors::linear(x, &self.weight, self.bias.as_ref())? {
            return Ok(y);
        }
        Ok(candle_nn::Linear::new(self.weight.clone(), self.bias.clone()).forward(x)?)
    }
}

/// Group normalisation over `[batch, channels, …]`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads a group norm of `channels` in `groups` groups.
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        if groups == 0 || !channels.is_multiple_of(groups) {
            return Err(crate::error::Error::Unsupported(format!(
                "the model's {channels} channels cannot be split into {groups} normalisation groups"
            )));
        }
        Ok(Self { weight: vb.get(channels, "weight")?, bias: vb.get(channels, "bias")?, groups, eps })
    }

    /// Normalises `x`, computing statistics in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        group_norm(x, self.groups, &self.weight, &self.bias, self.eps)
    }
}

/// `GroupNorm` as `torch.nn.functional.group_norm` computes it (biased variance).
pub fn group_norm(x: &Tensor, groups: usize, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if let Some(y) = super::kernels::tensors::group_norm(x, groups, weight, bias, eps)? {
        return Ok(y);
    }
    let dtype = x.dtype();
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xs = x.to_dtype(DType::F32)?.reshape((b, groups, ()))?;
    let mean = xs.mean_keepdim(D::Minus1)?;
    let centered = xs.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    let mut shape = vec![1, c];
    shape.extend(std::iter::repeat_n(1, dims.len() - 2));
    let normed = normed.reshape(dims)?;
    let w = weight.to_dtype(DType::F32)?.reshape(shape.clone())?;
    let bi = bias.to_dtype(DType::F32)?.reshape(shape)?;
    Ok(normed.broadcast_mul(&w)?.broadcast_add(&bi)?.to_dtype(dtype)?)
}

/// Layer normalisation over the last dimension.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Loads a layer norm of width `dim`.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self { weight: vb.get(dim, "weight")?, bias: vb.get(dim, "bias")?, eps })
    }

    /// Normalises `x` over its last dimension in f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xs = x.to_dtype(DType::F32)?.contiguous()?;
        let y = candle_nn::ops::layer_norm(
            &xs,
            &self.weight.to_dtype(DType::F32)?,
            &self.bias.to_dtype(DType::F32)?,
            self.eps as f32,
        )?;
        Ok(y.to_dtype(dtype)?)
    }
}

/// Score elements one attention block may hold (32 Mi f32 = 128 MiB): at 512² an SD1.5 self-attention
/// would otherwise hold 2·8·4096·4096 scores (1 GiB) at once, and at 1024² sixteen times that.
const ATTENTION_BLOCK_ELEMENTS: usize = 32 << 20;

/// Scaled dot-product attention over `[batch·heads, tokens, head_dim]` tensors, softmax in f32.
/// `mask`, when given, is added to the scores (use large negatives to hide positions).
///
/// Queries are processed in blocks so the full score matrix is never held: each block's softmax
/// still sees every key, so the result is the same as the one-shot formula.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    attention_blocked(q, k, v, scale, mask, ATTENTION_BLOCK_ELEMENTS)
}

fn attention_blocked(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
    block_elements: usize,
) -> Result<Tensor> {
    let (bh, q_tokens, _) = q.dims3()?;
    let kv_tokens = k.dim(1)?;
    let rows = (block_elements / (bh * kv_tokens).max(1)).clamp(1, q_tokens.max(1));
    let kt = k.t()?.contiguous()?;
    let v = v.contiguous()?;
    if rows >= q_tokens {
        return attention_block(&q.contiguous()?, &kt, &v, scale, mask);
    }
    let mut outputs = Vec::with_capacity(q_tokens.div_ceil(rows));
    for start in (0..q_tokens).step_by(rows) {
        let len = rows.min(q_tokens - start);
        let q_block = q.narrow(1, start, len)?.contiguous()?;
        // A mask with a row per query is cut like the queries; others broadcast as they are.
        let mask_block = match mask {
            Some(m) if m.rank() >= 2 && m.dim(m.rank() - 2)? == q_tokens => {
                Some(m.narrow(m.rank() - 2, start, len)?)
            }
            Some(m) => Some(m.clone()),
            None => None,
        };
        outputs.push(attention_block(&q_block, &kt, &v, scale, mask_block.as_ref())?);
    }
    Ok(Tensor::cat(&outputs, 1)?)
}

/// One block: `softmax(q·kᵀ·scale + mask)·v` with `kt` already transposed.
fn attention_block(q: &Tensor, kt: &Tensor, v: &Tensor, scale: f64, mask: Option<&Tensor>) -> Result<Tensor> {
    let dtype = q.dtype();
    let mut scores = (q.matmul(kt)? * scale)?;
    if let Some(mask) = mask {
        scores = scores.broadcast_add(&mask.to_dtype(dtype)?)?;
    }
    let probs = super::kernels::softmax::softmax_last_dim(scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?;
    Ok(probs.matmul(v)?)
}

/// Multi-head attention on `[batch, tokens, heads·d]` projections: `softmax(q·kᵀ·scale)·v` per
/// head, the heads side by side in the result as they came in.
pub fn multi_head_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    if let Some(out) = super::kernels::tensors::attention(q, k, v, heads, scale)? {
        return Ok(out);
    }
    let (b, n, dim) = q.dims3()?;
    let m = k.dim(1)?;
    let d = dim / heads;
    let split = |t: &Tensor, len: usize| -> Result<Tensor> {
        Ok(t.reshape((b, len, heads, d))?.transpose(1, 2)?.reshape((b * heads, len, d))?)
    };
    let out = attention(&split(q, n)?, &split(k, m)?, &split(v, m)?, scale, None)?;
    Ok(out.reshape((b, heads, n, d))?.transpose(1, 2)?.reshape((b, n, dim))?)
}

/// `x · sigmoid(x)`.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::silu(x)?)
}

/// The exact (erf) GELU, PyTorch's default.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.gelu_erf()?)
}

/// diffusers' `GEGLU` gate on a projection's output: `value · gelu(gate)`, where the last
/// dimension holds the value half then the gate half.
pub fn geglu(h: &Tensor) -> Result<Tensor> {
    if let Some(y) = super::kernels::tensors::geglu(h)? {
        return Ok(y);
    }
    let half = h.dim(D::Minus1)? / 2;
    let value = h.narrow(D::Minus1, 0, half)?;
    let gate = h.narrow(D::Minus1, half, half)?;
    Ok((value * gelu(&gate)?)?)
}

/// CLIP's `x · sigmoid(1.702 x)`.
pub fn quick_gelu(x: &Tensor) -> Result<Tensor> {
    Ok((x * candle_nn::ops::sigmoid(&(x * 1.702)?)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn group_norm_normalises_each_group() -> Result<()> {
        let x = Tensor::arange(0f32, 16., &Device::Cpu)?.reshape((1, 4, 2, 2))?;
        let w = Tensor::ones(4, DType::F32, &Device::Cpu)?;
        let b = Tensor::zeros(4, DType::F32, &Device::Cpu)?;
        let y = group_norm(&x, 2, &w, &b, 0.0)?.flatten_all()?.to_vec1::<f32>()?;
        // Each group is 0..8 (or 8..16): mean 3.5, variance 5.25.
        let expected = (0.0 - 3.5) / 5.25f32.sqrt();
        assert!((y[0] - expected).abs() < 1e-5);
        assert!((y[8] - expected).abs() < 1e-5);
        Ok(())
    }

    /// Deterministic, varied values (no RNG needed).
    fn ramp(shape: &[usize], salt: f32) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|i| (i as f32 * 0.731 + salt).sin() * 1.7).collect();
        Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
    }

    #[test]
    fn blocked_attention_equals_one_shot_on_odd_shapes() -> Result<()> {
        for (bh, tq, tk, d, block) in
            [(3, 37, 53, 5, 3 * 53 * 7), (1, 1, 9, 4, 1), (2, 17, 17, 8, 2 * 17 * 16), (5, 64, 11, 3, 5 * 11)]
        {
            let (q, k, v) = (ramp(&[bh, tq, d], 0.1)?, ramp(&[bh, tk, d], 0.7)?, ramp(&[bh, tk, d], 1.3)?);
            let mask = (ramp(&[1, tq, tk], 2.0)?.ge(0.0)?.to_dtype(DType::F32)? * -1e4)?;
            for m in [None, Some(&mask)] {
                let one_shot = attention_blocked(&q, &k, &v, 0.37, m, usize::MAX)?;
                let blocked = attention_blocked(&q, &k, &v, 0.37, m, block)?;
                let diff = (one_shot - blocked)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                assert!(diff < 1e-6, "bh {bh} tq {tq} tk {tk} d {d}: {diff}");
            }
        }
        Ok(())
    }

    #[test]
    fn attention_with_equal_scores_averages_values() -> Result<()> {
        let q = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu)?;
        let k = Tensor::zeros((1, 4, 3), DType::F32, &Device::Cpu)?;
        let v = Tensor::arange(0f32, 4., &Device::Cpu)?.reshape((1, 4, 1))?;
        let y = attention(&q, &k, &v, 1.0, None)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(y, vec![1.5, 1.5]);
        Ok(())
    }

    #[test]
    fn a_normalised_convolution_equals_normalising_first() -> Result<()> {
        let vb = |salt: f32| -> Result<VarBuilder<'static>> {
            let mut map = std::collections::HashMap::new();
            map.insert("conv.weight".to_string(), ramp(&[5, 8, 3, 3], salt)?);
            map.insert("conv.bias".to_string(), ramp(&[5], salt + 0.3)?);
            map.insert("norm.weight".to_string(), ramp(&[8], salt + 0.6)?);
            map.insert("norm.bias".to_string(), ramp(&[8], salt + 0.9)?);
            Ok(VarBuilder::from_tensors(map, DType::F32, &Device::Cpu))
        };
        let vb = vb(0.4)?;
        let conv = Conv2d::new(vb.pp("conv"), 8, 5, 3, 1, 1)?;
        let norm = GroupNorm::new(vb.pp("norm"), 4, 8, 1e-6)?;
        let x = ramp(&[2, 8, 6, 7], 1.9)?;
        for dtype in [DType::F32, DType::F16] {
            let x = x.to_dtype(dtype)?;
            let fused = conv.forward_normalised_silu(&x, &norm)?;
            let separate = conv.forward(&silu(&norm.forward(&x)?)?)?;
            let separate = separate.to_dtype(DType::F32)?;
            let diff = (fused.to_dtype(DType::F32)? - &separate)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // Half precision rounds the separate path twice (after the norm, after SiLU), the
            // fused one once: they may differ by an output's last bit.
            let largest = separate.abs()?.max_all()?.to_scalar::<f32>()?;
            let tolerance = if dtype == DType::F32 { 1e-5 } else { 2e-3 * largest };
            assert!(diff <= tolerance, "{dtype:?}: {diff} (largest {largest})");
        }
        Ok(())
    }

    #[test]
    fn adding_into_a_fresh_tensor_equals_adding() -> Result<()> {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            let (a, b) = (ramp(&[2, 3, 5], 0.2)?.to_dtype(dtype)?, ramp(&[2, 3, 5], 0.8)?.to_dtype(dtype)?);
            let want = (&a + &b)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            let got = add_into_fresh(a.copy()?, &b)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
            assert_eq!(got, want, "{dtype:?}");
        }
        // A transposed operand is not contiguous: the sum is made the ordinary way.
        let a = ramp(&[3, 4], 0.1)?;
        let b = ramp(&[4, 3], 0.5)?.t()?;
        let got = add_into_fresh(a.copy()?, &b)?;
        let diff = (got - (&a + &b)?)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
