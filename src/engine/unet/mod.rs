//! The denoising UNet (diffusers' `UNet2DConditionModel` for SD 1.x/2.x and SDXL), built from its
//! config and reading weights by diffusers' names. SDXL adds an embedding of the pooled text and
//! the micro-conditioning numbers to the timestep's.

mod encoder;
mod transformer;

use candle_core::Tensor;
use candle_nn::VarBuilder;

pub use encoder::{Encoded, Encoder};
pub use transformer::{Transformer2D, TransformerSpec};

use super::blocks::Upsample;
use super::conditioning::Conditioning;
use super::config::UNetConfig;
use super::ops::{Conv2d, GroupNorm};
use crate::error::Result;
use encoder::{Level, Parts};

/// What ControlNets add to the UNet: one tensor per skip (outermost first) and one after the
/// middle block, already scaled by their units' weights and summed over units.
#[derive(Clone, Debug)]
pub struct Residuals {
    /// One per skip connection, in the order the down path makes them.
    pub down: Vec<Tensor>,
    /// Added to the middle block's output.
    pub mid: Tensor,
}

impl Residuals {
    /// The sum of two units' residuals.
    pub fn add(&self, other: &Residuals) -> Result<Residuals> {
        let down =
            self.down.iter().zip(&other.down).map(|(a, b)| a + b).collect::<candle_core::Result<_>>()?;
        Ok(Residuals { down, mid: (&self.mid + &other.mid)? })
    }
}

/// `a + b`, a 1×1 side spread over the other's picture.
fn add_spread(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    Ok(if a.dims() == b.dims() {
        (a + b)?
    } else if a.elem_count() >= b.elem_count() {
        a.broadcast_add(b)?
    } else {
        b.broadcast_add(a)?
    })
}

/// The UNet: noisy latents, a timestep and text embeddings in; predicted noise (or v) out.
pub struct UNet {
    encoder: Encoder,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
}

impl UNet {
    /// Builds the UNet described by `cfg`, reading weights below `vb`.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let parts = Parts { cfg };
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let encoder = Encoder::new(&vb, cfg)?;
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
                level.resnets.push(parts.resnet(vb.pp("resnets").pp(j), res_in + skip, out_ch)?);
                if kind.starts_with("CrossAttn") {
                    level.attentions.push(parts.transformer(vb.pp("attentions").pp(j), out_ch, n - 1 - i)?);
                }
            }
            if i + 1 < n {
                level.upsample = Some(Upsample::new(vb.pp("upsamplers.0"), out_ch)?);
            }
            up.push(level);
        }
        Ok(Self {
            encoder,
            up,
            norm_out: GroupNorm::new(vb.pp("conv_norm_out"), cfg.norm_num_groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(vb.pp("conv_out"), ch[0], cfg.out_channels, 3, 1, 1)?,
        })
    }

    /// The config this UNet was built from.
    pub fn config(&self) -> &UNetConfig {
        self.encoder.config()
    }

    /// Whether the UNet reads SDXL's pooled text and micro-conditioning.
    pub fn takes_added_conditioning(&self) -> bool {
        self.encoder.takes_added_conditioning()
    }

    /// Predicts the model output for latents `x` `[b, in, h, w]` at `timestep`, conditioned on
    /// `cond` (text embeddings `[b, tokens, cross_attention_dim]`, and SDXL's added inputs).
    pub fn forward(&self, x: &Tensor, timestep: f64, cond: &Conditioning) -> Result<Tensor> {
        self.forward_controlled(x, timestep, cond, None)
    }

    /// [`UNet::forward`] with ControlNet residuals added to the skips and the middle block's
    /// output, as diffusers' `down_block_additional_residuals` / `mid_block_additional_residual`.
    pub fn forward_controlled(
        &self,
        x: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        residuals: Option<&Residuals>,
    ) -> Result<Tensor> {
        let context = &cond.context;
        let temb = self.encoder.time_embedding(timestep, cond, x)?;
        let Encoded { mut mid, mut skips } =
            self.encoder.forward(self.encoder.conv_in(x)?, &temb, context)?;
        if let Some(r) = residuals {
            if r.down.len() != skips.len() {
                return Err(crate::error::Error::Internal(format!(
                    "a ControlNet gave {} residuals for a UNet with {} skips",
                    r.down.len(),
                    skips.len()
                )));
            }
            for (skip, add) in skips.iter_mut().zip(&r.down) {
                *skip = add_spread(skip, add)?;
            }
            mid = add_spread(&mid, &r.mid)?;
        }
        let mut h = mid;
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
}
