//! The image autoencoder (diffusers' `AutoencoderKL`): pictures to latents and back.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

use super::blocks::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use super::config::VaeConfig;
use super::ops::{self, Conv2d, GroupNorm, Linear};
use crate::error::Result;

const EPS: f64 = 1e-6;

/// The single-head self-attention in the VAE's middle block.
struct MidAttention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
}

impl MidAttention {
    fn new(vb: VarBuilder, c: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(vb.pp("group_norm"), groups, c, EPS)?,
            q: Linear::new(vb.pp("to_q"), c, c)?,
            k: Linear::new(vb.pp("to_k"), c, c)?,
            v: Linear::new(vb.pp("to_v"), c, c)?,
            out: Linear::new(vb.pp("to_out.0"), c, c)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let tokens = self.norm.forward(x)?.reshape((b, c, h * w))?.transpose(1, 2)?;
        let q = self.q.forward(&tokens)?;
        let k = self.k.forward(&tokens)?;
        let v = self.v.forward(&tokens)?;
        let a = ops::multi_head_attention(&q, &k, &v, 1, (c as f64).powf(-0.5))?;
        let a = self.out.forward(&a)?.transpose(1, 2)?.reshape((b, c, h, w))?;
        Ok((a + x)?)
    }
}

struct Mid {
    resnet1: ResnetBlock,
    attention: Option<MidAttention>,
    resnet2: ResnetBlock,
}

impl Mid {
    fn new(vb: VarBuilder, c: usize, cfg: &VaeConfig) -> Result<Self> {
        let spec = ResnetSpec { in_ch: c, out_ch: c, temb_dim: None, groups: cfg.norm_num_groups, eps: EPS };
        Ok(Self {
            resnet1: ResnetBlock::new(vb.pp("resnets.0"), &spec)?,
            attention: if cfg.mid_block_add_attention {
                Some(MidAttention::new(vb.pp("attentions.0"), c, cfg.norm_num_groups)?)
            } else {
                None
            },
            resnet2: ResnetBlock::new(vb.pp("resnets.1"), &spec)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.resnet1.forward(x, None)?;
        if let Some(attn) = &self.attention {
            h = attn.forward(&h)?;
        }
        self.resnet2.forward(&h, None)
    }
}

/// `count` unconditioned residual blocks of one level, the first taking `in_ch` channels.
fn level_resnets(
    vb: &VarBuilder,
    count: usize,
    in_ch: usize,
    out: usize,
    cfg: &VaeConfig,
) -> Result<Vec<ResnetBlock>> {
    (0..count)
        .map(|j| {
            let spec = ResnetSpec {
                in_ch: if j == 0 { in_ch } else { out },
                out_ch: out,
                temb_dim: None,
                groups: cfg.norm_num_groups,
                eps: EPS,
            };
            ResnetBlock::new(vb.pp("resnets").pp(j), &spec)
        })
        .collect()
}

struct Encoder {
    conv_in: Conv2d,
    levels: Vec<(Vec<ResnetBlock>, Option<Downsample>)>,
    mid: Mid,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Encoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let mut levels = Vec::with_capacity(n);
        let mut out = ch[0];
        for (i, &level_ch) in ch.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let inp = out;
            out = level_ch;
            let resnets = level_resnets(&vb, cfg.layers_per_block, inp, out, cfg)?;
            let down =
                if i + 1 < n { Some(Downsample::asymmetric(vb.pp("downsamplers.0"), out)?) } else { None };
            levels.push((resnets, down));
        }
        Ok(Self {
            conv_in: Conv2d::new(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            levels,
            mid: Mid::new(vb.pp("mid_block"), ch[n - 1], cfg)?,
            norm_out: GroupNorm::new(vb.pp("conv_norm_out"), cfg.norm_num_groups, ch[n - 1], EPS)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), ch[n - 1], 2 * cfg.latent_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x)?;
        for (resnets, down) in &self.levels {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            if let Some(d) = down {
                h = d.forward(&h)?;
            }
        }
        let h = self.mid.forward(&h)?;
        self.conv_out.forward_normalised_silu(&h, &self.norm_out)
    }
}

struct Decoder {
    conv_in: Conv2d,
    mid: Mid,
    levels: Vec<(Vec<ResnetBlock>, Option<Upsample>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl Decoder {
    fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let n = rev.len();
        let mut levels = Vec::with_capacity(n);
        let mut out = rev[0];
        for (i, &level_ch) in rev.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let prev = out;
            out = level_ch;
            let resnets = level_resnets(&vb, cfg.layers_per_block + 1, prev, out, cfg)?;
            let up = if i + 1 < n { Some(Upsample::new(vb.pp("upsamplers.0"), out)?) } else { None };
            levels.push((resnets, up));
        }
        Ok(Self {
            conv_in: Conv2d::new(vb.pp("conv_in"), cfg.latent_channels, rev[0], 3, 1, 1)?,
            mid: Mid::new(vb.pp("mid_block"), rev[0], cfg)?,
            levels,
            norm_out: GroupNorm::new(vb.pp("conv_norm_out"), cfg.norm_num_groups, rev[n - 1], EPS)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), rev[n - 1], cfg.out_channels, 3, 1, 1)?,
        })
    }

    fn forward(&self, z: &Tensor) -> Result<Tensor> {
        let mut h = self.mid.forward(&self.conv_in.forward(z)?)?;
        for (resnets, up) in &self.levels {
            for r in resnets {
                h = r.forward(&h, None)?;
            }
            // Each level frees tensors the allocator would otherwise keep resident while the next,
            // four times larger, level allocates its own.
            crate::memory::release_unused();
            if let Some(u) = up {
                let (_, _, hh, ww) = h.dims4()?;
                h = u.forward(&h, (hh * 2, ww * 2))?;
            }
        }
        self.conv_out.forward_normalised_silu(&h, &self.norm_out)
    }
}

/// The autoencoder with its latent scaling.
pub struct Vae {
    encoder: Encoder,
    quant_conv: Conv2d,
    post_quant_conv: Conv2d,
    decoder: Decoder,
    config: VaeConfig,
    dtype: DType,
}

/// The encoder's output distribution over latents (before scaling).
pub struct LatentDistribution {
    /// Mean `[b, latent, h/8, w/8]`.
    pub mean: Tensor,
    /// Standard deviation, same shape.
    pub std: Tensor,
}

impl Vae {
    /// Builds the autoencoder described by `cfg`.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        let l = cfg.latent_channels;
        Ok(Self {
            dtype: vb.dtype(),
            encoder: Encoder::new(vb.pp("encoder"), cfg)?,
            quant_conv: Conv2d::new(vb.pp("quant_conv"), 2 * l, 2 * l, 1, 1, 0)?,
            post_quant_conv: Conv2d::new(vb.pp("post_quant_conv"), l, l, 1, 1, 0)?,
            decoder: Decoder::new(vb.pp("decoder"), cfg)?,
            config: cfg.clone(),
        })
    }

    /// The factor latents are multiplied by before the UNet sees them.
    pub fn scaling_factor(&self) -> f64 {
        self.config.scaling_factor
    }

    /// Encodes pixels in [-1, 1] `[b, 3, h, w]` to the latent distribution.
    /// Computes in the autoencoder's own dtype (f32 where it would overflow in f16, as diffusers'
    /// `force_upcast`) and answers in the dtype of `pixels`.
    pub fn encode(&self, pixels: &Tensor) -> Result<LatentDistribution> {
        let out = pixels.dtype();
        let moments = self.quant_conv.forward(&self.encoder.forward(&pixels.to_dtype(self.dtype)?)?)?;
        let l = self.config.latent_channels;
        let mean = moments.narrow(1, 0, l)?;
        let logvar = moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        let std = (logvar.to_dtype(DType::F32)? * 0.5)?.exp()?.to_dtype(out)?;
        Ok(LatentDistribution { mean: mean.to_dtype(out)?, std })
    }

    /// The dtype the autoencoder computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Decodes scaled latents to pixels in [-1, 1].
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        let mut z = (latents.to_dtype(self.dtype)? / self.config.scaling_factor)?;
        if let Some(shift) = self.config.shift_factor {
            z = (z + shift)?;
        }
        self.decoder.forward(&self.post_quant_conv.forward(&z)?)
    }
}
