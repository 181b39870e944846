//! The UNet's attention blocks: diffusers' `Transformer2DModel` with `BasicTransformerBlock`s
//! (self-attention, cross-attention on the text embeddings, GEGLU feed-forward).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::engine::ops::{self, Conv2d, GroupNorm, LayerNorm, Linear};
use crate::error::Result;

/// diffusers' `Attention` as the UNet uses it: no bias on q/k/v, a biased output projection.
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
}

impl Attention {
    /// Loads an attention of `dim` channels over a context of `context_dim` channels.
    pub fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            to_q: Linear::no_bias(vb.pp("to_q"), dim, dim)?,
            to_k: Linear::no_bias(vb.pp("to_k"), context_dim, dim)?,
            to_v: Linear::no_bias(vb.pp("to_v"), context_dim, dim)?,
            to_out: Linear::new(vb.pp("to_out.0"), dim, dim)?,
            heads,
        })
    }

    /// Attends from `x` `[b, n, dim]` to `context` (or to itself).
    pub fn forward(&self, x: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.to_q.forward(x)?;
        let k = self.to_k.forward(context)?;
        let v = self.to_v.forward(context)?;
        let d = q.dim(2)? / self.heads;
        let out = ops::multi_head_attention(&q, &k, &v, self.heads, (d as f64).powf(-0.5))?;
        self.to_out.forward(&out)
    }
}

/// GEGLU feed-forward (`ff.net.0.proj`, `ff.net.2`).
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize) -> Result<Self> {
        let inner = dim * 4;
        Ok(Self {
            proj: Linear::new(vb.pp("net.0.proj"), dim, inner * 2)?,
            out: Linear::new(vb.pp("net.2"), inner, dim)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.out.forward(&ops::geglu(&self.proj.forward(x)?)?)
    }
}

struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
}

impl BasicTransformerBlock {
    fn new(vb: VarBuilder, dim: usize, context_dim: usize, heads: usize) -> Result<Self> {
        Ok(Self {
            norm1: LayerNorm::new(vb.pp("norm1"), dim, 1e-5)?,
            attn1: Attention::new(vb.pp("attn1"), dim, dim, heads)?,
            norm2: LayerNorm::new(vb.pp("norm2"), dim, 1e-5)?,
            attn2: Attention::new(vb.pp("attn2"), dim, context_dim, heads)?,
            norm3: LayerNorm::new(vb.pp("norm3"), dim, 1e-5)?,
            ff: FeedForward::new(vb.pp("ff"), dim)?,
        })
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let x = (self.attn1.forward(&self.norm1.forward(x)?, None)? + x)?;
        let x = (self.attn2.forward(&self.norm2.forward(&x)?, Some(context))? + x)?;
        Ok((self.ff.forward(&self.norm3.forward(&x)?)? + x)?)
    }
}

enum Projection {
    Conv(Conv2d),
    Linear(Linear),
}

/// Shape of a `Transformer2DModel`.
pub struct TransformerSpec {
    /// Channels in and out.
    pub channels: usize,
    /// Attention heads.
    pub heads: usize,
    /// Stacked transformer blocks.
    pub depth: usize,
    /// Width of the text embeddings.
    pub context_dim: usize,
    /// Normalisation groups.
    pub groups: usize,
    /// Whether `proj_in`/`proj_out` are linear layers (SD 2.x) rather than 1×1 convolutions.
    pub linear_projection: bool,
}

/// diffusers' `Transformer2DModel` for continuous inputs.
pub struct Transformer2D {
    norm: GroupNorm,
    proj_in: Projection,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Projection,
}

impl Transformer2D {
    /// Loads the block.
    pub fn new(vb: VarBuilder, spec: &TransformerSpec) -> Result<Self> {
        let c = spec.channels;
        let projection = |name: &str| -> Result<Projection> {
            Ok(if spec.linear_projection {
                Projection::Linear(Linear::new(vb.pp(name), c, c)?)
            } else {
                Projection::Conv(Conv2d::new(vb.pp(name), c, c, 1, 1, 0)?)
            })
        };
        let blocks = (0..spec.depth)
            .map(|i| {
                BasicTransformerBlock::new(vb.pp("transformer_blocks").pp(i), c, spec.context_dim, spec.heads)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            norm: GroupNorm::new(vb.pp("norm"), spec.groups, c, 1e-6)?,
            proj_in: projection("proj_in")?,
            blocks,
            proj_out: projection("proj_out")?,
        })
    }

    /// Applies the block to `[b, c, h, w]` with text `context` `[b, tokens, context_dim]`.
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let normed = self.norm.forward(x)?;
        let to_tokens =
            |t: Tensor| -> Result<Tensor> { Ok(t.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?) };
        let mut tokens = match &self.proj_in {
            Projection::Conv(conv) => to_tokens(conv.forward(&normed)?)?,
            Projection::Linear(lin) => lin.forward(&to_tokens(normed)?)?,
        };
        for block in &self.blocks {
            tokens = block.forward(&tokens, context)?;
        }
        let to_image = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, h, w, c))?.permute((0, 3, 1, 2))?.contiguous()?)
        };
        let out = match &self.proj_out {
            Projection::Conv(conv) => conv.forward(&to_image(tokens)?)?,
            Projection::Linear(lin) => to_image(lin.forward(&tokens)?)?,
        };
        Ok((out + x)?)
    }
}
