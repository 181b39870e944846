//! ControlNet (diffusers' `ControlNetModel`): a trained copy of the UNet's first half that reads a
//! control map (edges, a scribble, a pose…) through a small convolutional "hint" encoder and gives
//! back one residual per UNet skip plus one for the middle block, each through a 1×1 convolution
//! that was zero at the start of training. The UNet adds them (see [`Residuals`]).

mod convert;
mod load;
pub mod prepare;
pub mod unit;

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;

pub use load::{describe, load, Description};
pub use prepare::{prepare, ControlNetCache};
pub use unit::{ControlInput, ControlMode, ControlSpec, Preprocessor, ResizeMode, StepControl};

use super::conditioning::Conditioning;
use super::config::UNetConfig;
use super::family::Family;
use super::ops::{self, Conv2d};
use super::unet::{Encoded, Encoder, Residuals};
use crate::error::Result;

/// The hint encoder: `conv_in`, pairs of 3×3 convolutions (the second of each pair halves the
/// size), and `conv_out` to the UNet's first width, with SiLU between all but the last.
struct HintEncoder {
    conv_in: Conv2d,
    blocks: Vec<Conv2d>,
    conv_out: Conv2d,
}

impl HintEncoder {
    /// Reads the encoder's widths from its weights (diffusers' `conditioning_embedding_out_channels`
    /// is not in single files, and the weights are what counts).
    fn new(vb: VarBuilder, widths: &HintWidths, model_ch: usize) -> Result<Self> {
        let c = &widths.0;
        let conv_in = Conv2d::new(vb.pp("conv_in"), widths.1, c[0], 3, 1, 1)?;
        let mut blocks = Vec::with_capacity(2 * (c.len() - 1));
        for i in 0..c.len() - 1 {
            blocks.push(Conv2d::new(vb.pp("blocks").pp(2 * i), c[i], c[i], 3, 1, 1)?);
            blocks.push(Conv2d::new(vb.pp("blocks").pp(2 * i + 1), c[i], c[i + 1], 3, 2, 1)?);
        }
        let conv_out = Conv2d::new(vb.pp("conv_out"), c[c.len() - 1], model_ch, 3, 1, 1)?;
        Ok(Self { conv_in, blocks, conv_out })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = ops::silu(&self.conv_in.forward(x)?)?;
        for block in &self.blocks {
            h = ops::silu(&block.forward(&h)?)?;
        }
        self.conv_out.forward(&h)
    }
}

/// The hint encoder's widths (`conditioning_embedding_out_channels`) and its input channels.
struct HintWidths(Vec<usize>, usize);

/// A loaded ControlNet.
pub struct ControlNet {
    encoder: Encoder,
    hint: HintEncoder,
    down_proj: Vec<Conv2d>,
    mid_proj: Conv2d,
    /// Shuffle-type models average each residual over the picture.
    global_pool: bool,
    /// The model reads its control map as BGR (diffusers' `controlnet_conditioning_channel_order`).
    bgr: bool,
    family: Family,
    path: PathBuf,
}

/// What [`ControlNet::new`] needs beside the weights.
pub(crate) struct Build<'a> {
    pub config: &'a UNetConfig,
    pub global_pool: bool,
    pub bgr: bool,
    pub path: &'a Path,
}

/// The hint encoder's widths of SD's published ControlNets (`conditioning_embedding_out_channels`).
pub const PUBLISHED_HINT_WIDTHS: [usize; 4] = [16, 32, 96, 256];

impl ControlNet {
    pub(crate) fn new(tensors: &super::weights::TensorMap, build: Build, vb: VarBuilder) -> Result<Self> {
        let widths = load::hint_widths(tensors, build.path)?;
        Self::build(vb, build, widths)
    }

    /// A ControlNet for a UNet built from `config`, with the published hint widths, reading its
    /// weights from `vb` (benchmarks hand it random ones).
    pub fn with_weights(vb: VarBuilder, config: &UNetConfig, path: &Path) -> Result<Self> {
        let build = Build { config, global_pool: false, bgr: false, path };
        Self::build(vb, build, HintWidths(PUBLISHED_HINT_WIDTHS.to_vec(), 3))
    }

    fn build(vb: VarBuilder, build: Build, widths: HintWidths) -> Result<Self> {
        let cfg = build.config;
        let encoder = Encoder::new(&vb, cfg)?;
        let ch = &cfg.block_out_channels;
        let hint = HintEncoder::new(vb.pp("controlnet_cond_embedding"), &widths, ch[0])?;
        // One projection per skip: conv_in's, then each level's resnets and its downsampler.
        let mut skip_ch = vec![ch[0]];
        for (i, &c) in ch.iter().enumerate() {
            skip_ch.extend(std::iter::repeat_n(c, cfg.layers_per_block));
            if i + 1 < ch.len() {
                skip_ch.push(c);
            }
        }
        let down_proj = skip_ch
            .iter()
            .enumerate()
            .map(|(i, &c)| Conv2d::new(vb.pp("controlnet_down_blocks").pp(i), c, c, 1, 1, 0))
            .collect::<Result<Vec<_>>>()?;
        let top = ch[ch.len() - 1];
        let mid_proj = Conv2d::new(vb.pp("controlnet_mid_block"), top, top, 1, 1, 0)?;
        Ok(Self {
            family: Family::of_unet(cfg),
            encoder,
            hint,
            down_proj,
            mid_proj,
            global_pool: build.global_pool,
            bgr: build.bgr,
            path: build.path.to_path_buf(),
        })
    }

    /// The family the ControlNet was trained for.
    pub fn family(&self) -> Family {
        self.family
    }

    /// Where it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name A1111 shows: the file (or folder) name without extension.
    pub fn name(&self) -> String {
        super::model::display_name(&self.path)
    }

    /// How many residuals it gives (skips plus the middle block).
    pub fn residual_count(&self) -> usize {
        self.down_proj.len() + 1
    }

    /// The latent channels it reads.
    pub fn in_channels(&self) -> usize {
        self.encoder.config().in_channels
    }

    /// Whether the model wants its map with the channels as BGR.
    pub fn reads_bgr(&self) -> bool {
        self.bgr
    }

    /// The residuals for latents `x` `[b, 4, h, w]` at `timestep`, with `hint` `[b, 3, 8h, 8w]` the
    /// control map in [0, 1] (−1 where an inpainting map is masked), unscaled.
    pub fn forward(
        &self,
        x: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        hint: &Tensor,
    ) -> Result<Residuals> {
        let embedded = self.embed_hint(&hint.to_dtype(x.dtype())?)?;
        self.forward_embedded(x, timestep, cond, &embedded)
    }

    /// The hint encoder's output for a map `[1, 3, H, W]`. It depends on the map alone, so a run
    /// computes it once and every step reuses it (diffusers encodes it again at each step; the
    /// residuals are the same).
    pub fn embed_hint(&self, hint: &Tensor) -> Result<Tensor> {
        self.hint.forward(&hint.to_dtype(self.dtype())?)
    }

    /// [`ControlNet::forward`] from the hint's embedding (one row, repeated over the batch).
    pub fn forward_embedded(
        &self,
        x: &Tensor,
        timestep: f64,
        cond: &Conditioning,
        embedded: &Tensor,
    ) -> Result<Residuals> {
        let b = x.dim(0)?;
        let embedded =
            if embedded.dim(0)? == b { embedded.clone() } else { embedded.repeat((b, 1, 1, 1))? };
        let temb = self.encoder.time_embedding(timestep, cond, x)?;
        let h = (self.encoder.conv_in(x)? + embedded.to_dtype(x.dtype())?)?;
        let Encoded { mid, skips } = self.encoder.forward(h, &temb, &cond.context)?;
        let mut down =
            skips.iter().zip(&self.down_proj).map(|(s, p)| p.forward(s)).collect::<Result<Vec<_>>>()?;
        let mut mid = self.mid_proj.forward(&mid)?;
        if self.global_pool {
            for d in &mut down {
                *d = d.mean_keepdim(3)?.mean_keepdim(2)?;
            }
            mid = mid.mean_keepdim(3)?.mean_keepdim(2)?;
        }
        Ok(Residuals { down, mid })
    }

    /// The dtype its weights compute in.
    pub fn dtype(&self) -> DType {
        self.mid_proj.weight_dtype()
    }
}
