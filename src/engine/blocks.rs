//! Building blocks the UNet and the VAE share: the residual block and the resamplers, named as
//! diffusers names them (`norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`, `conv_shortcut`).

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::ops::{self, Conv2d, GroupNorm, Linear};
use crate::error::Result;

/// diffusers' `ResnetBlock2D`.
pub struct ResnetBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
}

/// Shape of a residual block.
pub struct ResnetSpec {
    /// Input channels.
    pub in_ch: usize,
    /// Output channels.
    pub out_ch: usize,
    /// Width of the time embedding, or `None` for the VAE's unconditioned blocks.
    pub temb_dim: Option<usize>,
    /// Normalisation groups.
    pub groups: usize,
    /// Normalisation epsilon.
    pub eps: f64,
}

impl ResnetBlock {
    /// Loads a block of the given shape.
    pub fn new(vb: VarBuilder, spec: &ResnetSpec) -> Result<Self> {
        let (i, o) = (spec.in_ch, spec.out_ch);
        let shortcut = if i != o { Some(Conv2d::new(vb.pp("conv_shortcut"), i, o, 1, 1, 0)?) } else { None };
        let time_emb_proj = match spec.temb_dim {
            Some(d) => Some(Linear::new(vb.pp("time_emb_proj"), d, o)?),
            None => None,
        };
        Ok(Self {
            norm1: GroupNorm::new(vb.pp("norm1"), spec.groups, i, spec.eps)?,
            conv1: Conv2d::new(vb.pp("conv1"), i, o, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::new(vb.pp("norm2"), spec.groups, o, spec.eps)?,
            conv2: Conv2d::new(vb.pp("conv2"), o, o, 3, 1, 1)?,
            shortcut,
        })
    }

    /// `x + conv(silu(norm(…)))`, with the time embedding added between the convolutions. Each
    /// convolution reads its input through the normalisation, and every temporary is let go as
    /// soon as it is used: at the VAE's 512² level these tensors are 64–128 MiB each in f16.
    pub fn forward(&self, x: &Tensor, temb: Option<&Tensor>) -> Result<Tensor> {
        let mut h = self.conv1.forward_normalised_silu(x, &self.norm1)?;
        if let (Some(proj), Some(t)) = (&self.time_emb_proj, temb) {
            let t = proj.forward(&ops::silu(t)?)?;
            h = h.broadcast_add(&t.unsqueeze(2)?.unsqueeze(3)?)?;
        }
        // Reassigned rather than shadowed, so the first activation is freed here.
        h = self.conv2.forward_normalised_silu(&h, &self.norm2)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        // `h` was made just above and nothing else holds it, so the sum may go into it.
        ops::add_into_fresh(h, &skip)
    }
}

/// diffusers' `Downsample2D`: a stride-2 3×3 convolution. The VAE pads only right and bottom.
pub struct Downsample {
    conv: Conv2d,
    asymmetric: bool,
}

impl Downsample {
    /// The UNet's form (padding 1 on every side).
    pub fn symmetric(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(vb.pp("conv"), ch, ch, 3, 2, 1)?, asymmetric: false })
    }

    /// The VAE encoder's form (padding 0, then one zero row and column at the end).
    pub fn asymmetric(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(vb.pp("conv"), ch, ch, 3, 2, 0)?, asymmetric: true })
    }

    /// Halves the spatial size.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if self.asymmetric {
            let x = x.pad_with_zeros(2, 0, 1)?.pad_with_zeros(3, 0, 1)?;
            self.conv.forward(&x)
        } else {
            self.conv.forward(x)
        }
    }
}

/// diffusers' `Upsample2D`: nearest-neighbour resize, then a 3×3 convolution.
pub struct Upsample {
    conv: Conv2d,
}

impl Upsample {
    /// Loads the upsampler's convolution.
    pub fn new(vb: VarBuilder, ch: usize) -> Result<Self> {
        Ok(Self { conv: Conv2d::new(vb.pp("conv"), ch, ch, 3, 1, 1)? })
    }

    /// Resizes to `size` (height, width), normally double the input, then convolves.
    pub fn forward(&self, x: &Tensor, size: (usize, usize)) -> Result<Tensor> {
        self.conv.forward_enlarged(x, size)
    }
}
