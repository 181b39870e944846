//! The denoising UNet (diffusers' `UNet2DConditionModel` for SD 1.x/2.x and SDXL), built from its
//! config and reading weights by diffusers' names. SDXL adds an embedding of the pooled text and
//! the micro-conditioning numbers to the timestep's.

mod transformer;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

pub use transformer::{Transformer2D, TransformerSpec};

use super::blocks::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use super::conditioning::Conditioning;
use super::config::UNetConfig;
use super::ops::{self, Conv2d, GroupNorm, Linear};
use crate::error::Result;

struct Level {
    resnets: Vec<ResnetBlock>,
    attentions: Vec<Transformer2D>,
    downsample: Option<Downsample>,
    upsample: Option<Upsample>,
}

/// The UNet: noisy latents, a timestep and text embeddings in; predicted noise (or v) out.
pub struct UNet {
    config: UNetConfig,
    conv_in: Conv2d,
    time_1: Linear,
    time_2: Linear,
    down: Vec<Level>,
    mid_resnets: Vec<ResnetBlock>,
    mid_attention: Transformer2D,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    added: Option<AddedEmbedding>,
}

/// SDXL's `add_embedding`: pooled text and sinusoidal time-id embeddings, through two layers.
struct AddedEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    time_dim: usize,
}

impl UNet {
    /// Builds the UNet described by `cfg`, reading weights below `vb`.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = ch[0] * 4;
        let groups = cfg.norm_num_groups;
        let resnet = |vb: VarBuilder, i: usize, o: usize| {
            ResnetBlock::new(
                vb,
                &ResnetSpec { in_ch: i, out_ch: o, temb_dim: Some(temb), groups, eps: cfg.norm_eps },
            )
        };
        let transformer = |vb: VarBuilder, c: usize, block: usize| {
            Transformer2D::new(
                vb,
                &TransformerSpec {
                    channels: c,
                    heads: cfg.heads(block),
                    depth: cfg.transformer_layers_per_block.get(block),
                    context_dim: cfg.cross_attention_dim,
                    groups,
                    linear_projection: cfg.use_linear_projection,
                },
            )
        };

        let mut down = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = ch[i];
            let mut level = Level { resnets: vec![], attentions: vec![], downsample: None, upsample: None };
            for j in 0..cfg.layers_per_block {
                level.resnets.push(resnet(
                    vb.pp("resnets").pp(j),
                    if j == 0 { in_ch } else { out_ch },
                    out_ch,
                )?);
                if kind.starts_with("CrossAttn") {
                    level.attentions.push(transformer(vb.pp("attentions").pp(j), out_ch, i)?);
                }
            }
            if i + 1 < n {
                level.downsample = Some(Downsample::symmetric(vb.pp("downsamplers.0"), out_ch)?);
            }
            down.push(level);
        }

        let mid = vb.pp("mid_block");
        let top = ch[n - 1];
        let mid_resnets =
            vec![resnet(mid.pp("resnets.0"), top, top)?, resnet(mid.pp("resnets.1"), top, top)?];
        let mid_attention = transformer(mid.pp("attentions.0"), top, n - 1)?;

        let mut up = Vec::with_capacity(n);
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut out_ch = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let prev = out_ch;
            out_ch = rev[i];
            let in_ch = rev[(i + 1).min(n - 1)];
            let layers = cfg.layers_per_block + 1;
            let mut level = Level { resnets: vec![], attentions: vec![], downsample: None, upsample: None };
            for j in 0..layers {
                let skip = if j == layers - 1 { in_ch } else { out_ch };
                let res_in = if j == 0 { prev } else { out_ch };
                level.resnets.push(resnet(vb.pp("resnets").pp(j), res_in + skip, out_ch)?);
                if kind.starts_with("CrossAttn") {
                    level.attentions.push(transformer(vb.pp("attentions").pp(j), out_ch, n - 1 - i)?);
                }
            }
            if i + 1 < n {
                level.upsample = Some(Upsample::new(vb.pp("upsamplers.0"), out_ch)?);
            }
            up.push(level);
        }

        let added = match (
            cfg.has_text_time(),
            cfg.addition_time_embed_dim,
            cfg.projection_class_embeddings_input_dim,
        ) {
            (true, Some(time_dim), Some(input)) => Some(AddedEmbedding {
                linear_1: Linear::new(vb.pp("add_embedding.linear_1"), input, temb)?,
                linear_2: Linear::new(vb.pp("add_embedding.linear_2"), temb, temb)?,
                time_dim,
            }),
            _ => None,
        };
        Ok(Self {
            added,
            config: cfg.clone(),
            conv_in: Conv2d::new(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            time_1: Linear::new(vb.pp("time_embedding.linear_1"), ch[0], temb)?,
            time_2: Linear::new(vb.pp("time_embedding.linear_2"), temb, temb)?,
            down,
            mid_resnets,
            mid_attention,
            up,
            norm_out: GroupNorm::new(vb.pp("conv_norm_out"), groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// The config this UNet was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Whether the UNet reads SDXL's pooled text and micro-conditioning.
    pub fn takes_added_conditioning(&self) -> bool {
        self.added.is_some()
    }

    /// Predicts the model output for latents `x` `[b, in, h, w]` at `timestep`, conditioned on
    /// `cond` (text embeddings `[b, tokens, cross_attention_dim]`, and SDXL's added inputs).
    pub fn forward(&self, x: &Tensor, timestep: f64, cond: &Conditioning) -> Result<Tensor> {
        let context = &cond.context;
        let b = x.dim(0)?;
        let dim = self.config.block_out_channels[0];
        let t = self.sinusoids(&[timestep as f32], dim, x.device())?.repeat((b, 1))?.to_dtype(x.dtype())?;
        let mut temb = self.time_2.forward(&ops::silu(&self.time_1.forward(&t)?)?)?;
        if let Some(added) = &self.added {
            temb = (temb + self.added_embedding(added, cond, b, x)?)?;
        }

        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (j, resnet) in level.resnets.iter().enumerate() {
                h = resnet.forward(&h, Some(&temb))?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h, context)?;
                }
                skips.push(h.clone());
            }
            if let Some(down) = &level.downsample {
                h = down.forward(&h)?;
                skips.push(h.clone());
            }
        }

        h = self.mid_resnets[0].forward(&h, Some(&temb))?;
        h = self.mid_attention.forward(&h, context)?;
        h = self.mid_resnets[1].forward(&h, Some(&temb))?;

        for level in &self.up {
            for (j, resnet) in level.resnets.iter().enumerate() {
                let skip = skips.pop().expect("one skip per up resnet");
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, Some(&temb))?;
                if let Some(attn) = level.attentions.get(j) {
                    h = attn.forward(&h, context)?;
                }
            }
            if let Some(upsample) = &level.upsample {
                // Upsample to the next skip's size, so sizes that are not powers of two line up.
                let (_, _, sh, sw) = skips.last().expect("skips remain below the top").dims4()?;
                h = upsample.forward(&h, (sh, sw))?;
            }
        }

        self.conv_out.forward_normalised_silu(&h, &self.norm_out)
    }

    /// SDXL's added embedding: `[pooled text, sinusoids of the six time ids]` through two layers.
    fn added_embedding(
        &self,
        added: &AddedEmbedding,
        cond: &Conditioning,
        b: usize,
        x: &Tensor,
    ) -> Result<Tensor> {
        let (Some(pooled), Some(time_ids)) = (&cond.pooled, &cond.time_ids) else {
            return Err(crate::error::Error::Internal(
                "an SDXL UNet was run without its pooled text and micro-conditioning".into(),
            ));
        };
        let ids = time_ids.to_dtype(candle_core::DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let per_row = ids.len() / b.max(1);
        let time =
            self.sinusoids(&ids, added.time_dim, x.device())?.reshape((b, per_row * added.time_dim))?;
        let input = Tensor::cat(&[pooled.to_dtype(x.dtype())?, time.to_dtype(x.dtype())?], 1)?;
        added.linear_2.forward(&ops::silu(&added.linear_1.forward(&input)?)?)
    }

    /// diffusers' sinusoidal `Timesteps` projection: one `[n, dim]` row per value, in f32.
    fn sinusoids(&self, values: &[f32], dim: usize, device: &Device) -> Result<Tensor> {
        let half = dim / 2;
        let freqs: Vec<f32> = (0..half)
            .map(|i| (-(10000f32.ln()) * i as f32 / (half as f32 - self.config.freq_shift as f32)).exp())
            .collect();
        let mut emb = Vec::with_capacity(values.len() * dim);
        for &t in values {
            let (sin, cos): (Vec<f32>, Vec<f32>) =
                freqs.iter().map(|f| ((t * f).sin(), (t * f).cos())).unzip();
            if self.config.flip_sin_to_cos {
                emb.extend(cos);
                emb.extend(sin);
            } else {
                emb.extend(sin);
                emb.extend(cos);
            }
        }
        Ok(Tensor::from_vec(emb, (values.len(), dim), device)?)
    }
}
