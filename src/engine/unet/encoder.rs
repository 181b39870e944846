//! The UNet's first half — timestep (and SDXL's added) embedding, `conv_in`, the down levels and
//! the middle block — shared by the UNet and ControlNet, which is a trained copy of exactly this
//! half under the same names.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;

use super::transformer::{Transformer2D, TransformerSpec};
use crate::engine::blocks::{Downsample, ResnetBlock, ResnetSpec, Upsample};
use crate::engine::conditioning::Conditioning;
use crate::engine::config::UNetConfig;
use crate::engine::ops::{self, Conv2d, Linear};
use crate::error::Result;

/// One level of the UNet: resnets, optional attention after each, and a resampler.
pub(super) struct Level {
    pub resnets: Vec<ResnetBlock>,
    pub attentions: Vec<Transformer2D>,
    pub downsample: Option<Downsample>,
    pub upsample: Option<Upsample>,
}

/// SDXL's `add_embedding`: pooled text and sinusoidal time-id embeddings, through two layers.
struct AddedEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    time_dim: usize,
}

/// What the down path leaves: the middle block's output and every skip, outermost first.
pub struct Encoded {
    /// The middle block's output.
    pub mid: Tensor,
    /// `conv_in`'s output, then one per resnet and one per downsampler.
    pub skips: Vec<Tensor>,
}

/// Time embedding, `conv_in`, down levels and the middle block.
pub struct Encoder {
    config: UNetConfig,
    conv_in: Conv2d,
    time_1: Linear,
    time_2: Linear,
    down: Vec<Level>,
    mid_resnets: Vec<ResnetBlock>,
    mid_attention: Transformer2D,
    added: Option<AddedEmbedding>,
}

/// Builders for the UNet's resnets and transformers with `cfg`'s widths.
pub(super) struct Parts<'a> {
    pub cfg: &'a UNetConfig,
}

impl Parts<'_> {
    pub fn temb(&self) -> usize {
        self.cfg.block_out_channels[0] * 4
    }

    pub fn resnet(&self, vb: VarBuilder, in_ch: usize, out_ch: usize) -> Result<ResnetBlock> {
        let cfg = self.cfg;
        ResnetBlock::new(
            vb,
            &ResnetSpec {
                in_ch,
                out_ch,
                temb_dim: Some(self.temb()),
                groups: cfg.norm_num_groups,
                eps: cfg.norm_eps,
            },
        )
    }

    pub fn transformer(&self, vb: VarBuilder, channels: usize, block: usize) -> Result<Transformer2D> {
        let cfg = self.cfg;
        Transformer2D::new(
            vb,
            &TransformerSpec {
                channels,
                heads: cfg.heads(block),
                depth: cfg.transformer_layers_per_block.get(block),
                context_dim: cfg.cross_attention_dim,
                groups: cfg.norm_num_groups,
                linear_projection: cfg.use_linear_projection,
            },
        )
    }
}

impl Encoder {
    /// Builds the first half described by `cfg`, reading weights below `vb`.
    pub fn new(vb: &VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let parts = Parts { cfg };
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let temb = parts.temb();
        let mut down = Vec::with_capacity(n);
        let mut out_ch = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let in_ch = out_ch;
            out_ch = ch[i];
            let mut level = Level { resnets: vec![], attentions: vec![], downsample: None, upsample: None };
            for j in 0..cfg.layers_per_block {
                let resnet_in = if j == 0 { in_ch } else { out_ch };
                level.resnets.push(parts.resnet(vb.pp("resnets").pp(j), resnet_in, out_ch)?);
                if kind.starts_with("CrossAttn") {
                    level.attentions.push(parts.transformer(vb.pp("attentions").pp(j), out_ch, i)?);
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
            vec![parts.resnet(mid.pp("resnets.0"), top, top)?, parts.resnet(mid.pp("resnets.1"), top, top)?];
        let mid_attention = parts.transformer(mid.pp("attentions.0"), top, n - 1)?;

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
            config: cfg.clone(),
            conv_in: Conv2d::new(vb.pp("conv_in"), cfg.in_channels, ch[0], 3, 1, 1)?,
            time_1: Linear::new(vb.pp("time_embedding.linear_1"), ch[0], temb)?,
            time_2: Linear::new(vb.pp("time_embedding.linear_2"), temb, temb)?,
            down,
            mid_resnets,
            mid_attention,
            added,
        })
    }

    /// The config this half was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Whether it reads SDXL's pooled text and micro-conditioning.
    pub fn takes_added_conditioning(&self) -> bool {
        self.added.is_some()
    }

    /// `conv_in` of latents `x` `[b, in, h, w]`.
    pub fn conv_in(&self, x: &Tensor) -> Result<Tensor> {
        self.conv_in.forward(x)
    }

    /// The timestep embedding `[b, temb]` (with SDXL's added embedding) for a batch of `b`.
    pub fn time_embedding(&self, timestep: f64, cond: &Conditioning, x: &Tensor) -> Result<Tensor> {
        let b = x.dim(0)?;
        let dim = self.config.block_out_channels[0];
        let t = self.sinusoids(&[timestep as f32], dim, x.device())?.repeat((b, 1))?.to_dtype(x.dtype())?;
        let mut temb = self.time_2.forward(&ops::silu(&self.time_1.forward(&t)?)?)?;
        if let Some(added) = &self.added {
            temb = (temb + self.added_embedding(added, cond, b, x)?)?;
        }
        Ok(temb)
    }

    /// Runs the down levels and middle block from `h` (what `conv_in` made, plus ControlNet's
    /// hint in a ControlNet).
    pub fn forward(&self, h: Tensor, temb: &Tensor, context: &Tensor) -> Result<Encoded> {
        let mut h = h;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (j, resnet) in level.resnets.iter().enumerate() {
                h = resnet.forward(&h, Some(temb))?;
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
        h = self.mid_resnets[0].forward(&h, Some(temb))?;
        h = self.mid_attention.forward(&h, context)?;
        h = self.mid_resnets[1].forward(&h, Some(temb))?;
        Ok(Encoded { mid: h, skips })
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
