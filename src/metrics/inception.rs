//! The FID Inception V3 network (pytorch-fid's `fid_inception_v3`, which torch-fidelity also uses):
//! torchvision's Inception V3 with the TensorFlow-compatible blocks — the pool branches of Mixed_5b–5d,
//! Mixed_6b–6e and Mixed_7b average without counting padding, Mixed_7c max-pools. It reads the
//! weights by torchvision's names from pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (read
//! without running pickle code) or from a safetensors copy.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;

use crate::engine::weights::{read_pickle_checkpoint, read_safetensors, to_compute, var_builder};
use crate::error::{Error, Result};

/// The file pytorch-fid downloads, and the name Easel looks for.
pub const WEIGHTS_FILE: &str = "pt_inception-2015-12-05-6726825d.pth";

/// conv (no bias) → BatchNorm (ε = 0.001, running statistics folded in) → ReLU.
struct BasicConv {
    weight: Tensor,
    scale: Tensor,
    shift: Tensor,
    stride: usize,
    /// (top/bottom, left/right) zero padding.
    pad: (usize, usize),
}

impl BasicConv {
    fn new(
        vb: VarBuilder,
        cin: usize,
        cout: usize,
        k: (usize, usize),
        stride: usize,
        pad: (usize, usize),
    ) -> Result<Self> {
        let weight = vb.get((cout, cin, k.0, k.1), "conv.weight")?;
        let bn = vb.pp("bn");
        let gamma = bn.get(cout, "weight")?;
        let beta = bn.get(cout, "bias")?;
        let mean = bn.get(cout, "running_mean")?;
        let var = bn.get(cout, "running_var")?;
        // y = (x − mean)/√(var + ε)·γ + β = x·scale + shift
        let scale = (gamma / (var + 0.001)?.sqrt()?)?;
        let shift = (beta - (&mean * &scale)?)?;
        Ok(Self {
            weight,
            scale: scale.reshape((1, cout, 1, 1))?,
            shift: shift.reshape((1, cout, 1, 1))?,
            stride,
            pad,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = if self.pad == (0, 0) {
            x.clone()
        } else {
            x.pad_with_zeros(2, self.pad.0, self.pad.0)?.pad_with_zeros(3, self.pad.1, self.pad.1)?
        };
        let y = x.conv2d(&self.weight, 0, self.stride, 1, 1)?;
        Ok(y.broadcast_mul(&self.scale)?.broadcast_add(&self.shift)?.relu()?)
    }
}

fn conv(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: usize) -> Result<BasicConv> {
    BasicConv::new(vb.pp(name), cin, cout, (k, k), 1, (k / 2, k / 2))
}

fn conv_rect(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: (usize, usize)) -> Result<BasicConv> {
    BasicConv::new(vb.pp(name), cin, cout, k, 1, (k.0 / 2, k.1 / 2))
}

fn conv_s2(vb: &VarBuilder, name: &str, cin: usize, cout: usize, k: usize) -> Result<BasicConv> {
    BasicConv::new(vb.pp(name), cin, cout, (k, k), 2, (0, 0))
}

/// 3×3, stride 1, padding 1 average pool that divides by the number of real (unpadded) inputs.
fn avg_pool_3x3_no_pad_count(x: &Tensor) -> Result<Tensor> {
    let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
    let sums = padded.avg_pool2d_with_stride(3, 1)?;
    let (_, _, h, w) = x.dims4()?;
    let ones = Tensor::ones((1, 1, h, w), x.dtype(), x.device())?;
    let counts = ones.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.avg_pool2d_with_stride(3, 1)?;
    Ok(sums.broadcast_div(&counts)?)
}

/// 3×3, stride 1, padding 1 max pool. Inputs are ReLU outputs (≥ 0), so zero padding never wins
/// over a real value and equals PyTorch's −∞ padding.
fn max_pool_3x3_same(x: &Tensor) -> Result<Tensor> {
    Ok(x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?.max_pool2d_with_stride(3, 1)?)
}

struct InceptionA {
    b1: BasicConv,
    b5: [BasicConv; 2],
    b3: [BasicConv; 3],
    pool: BasicConv,
}

impl InceptionA {
    fn new(vb: VarBuilder, cin: usize, pool_features: usize) -> Result<Self> {
        Ok(Self {
            b1: conv(&vb, "branch1x1", cin, 64, 1)?,
            b5: [conv(&vb, "branch5x5_1", cin, 48, 1)?, conv(&vb, "branch5x5_2", 48, 64, 5)?],
            b3: [
                conv(&vb, "branch3x3dbl_1", cin, 64, 1)?,
                conv(&vb, "branch3x3dbl_2", 64, 96, 3)?,
                conv(&vb, "branch3x3dbl_3", 96, 96, 3)?,
            ],
            pool: conv(&vb, "branch_pool", cin, pool_features, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b5[1].forward(&self.b5[0].forward(x)?)?;
        let c = self.b3[2].forward(&self.b3[1].forward(&self.b3[0].forward(x)?)?)?;
        let d = self.pool.forward(&avg_pool_3x3_no_pad_count(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

struct InceptionB {
    b3: BasicConv,
    dbl: [BasicConv; 3],
}

impl InceptionB {
    fn new(vb: VarBuilder, cin: usize) -> Result<Self> {
        Ok(Self {
            b3: conv_s2(&vb, "branch3x3", cin, 384, 3)?,
            dbl: [
                conv(&vb, "branch3x3dbl_1", cin, 64, 1)?,
                conv(&vb, "branch3x3dbl_2", 64, 96, 3)?,
                conv_s2(&vb, "branch3x3dbl_3", 96, 96, 3)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b3.forward(x)?;
        let b = self.dbl[2].forward(&self.dbl[1].forward(&self.dbl[0].forward(x)?)?)?;
        let c = x.max_pool2d_with_stride(3, 2)?;
        Ok(Tensor::cat(&[a, b, c], 1)?)
    }
}

struct InceptionC {
    b1: BasicConv,
    b7: [BasicConv; 3],
    dbl: [BasicConv; 5],
    pool: BasicConv,
}

impl InceptionC {
    fn new(vb: VarBuilder, cin: usize, c7: usize) -> Result<Self> {
        Ok(Self {
            b1: conv(&vb, "branch1x1", cin, 192, 1)?,
            b7: [
                conv(&vb, "branch7x7_1", cin, c7, 1)?,
                conv_rect(&vb, "branch7x7_2", c7, c7, (1, 7))?,
                conv_rect(&vb, "branch7x7_3", c7, 192, (7, 1))?,
            ],
            dbl: [
                conv(&vb, "branch7x7dbl_1", cin, c7, 1)?,
                conv_rect(&vb, "branch7x7dbl_2", c7, c7, (7, 1))?,
                conv_rect(&vb, "branch7x7dbl_3", c7, c7, (1, 7))?,
                conv_rect(&vb, "branch7x7dbl_4", c7, c7, (7, 1))?,
                conv_rect(&vb, "branch7x7dbl_5", c7, 192, (1, 7))?,
            ],
            pool: conv(&vb, "branch_pool", cin, 192, 1)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let mut b = x.clone();
        for layer in &self.b7 {
            b = layer.forward(&b)?;
        }
        let mut c = x.clone();
        for layer in &self.dbl {
            c = layer.forward(&c)?;
        }
        let d = self.pool.forward(&avg_pool_3x3_no_pad_count(x)?)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

struct InceptionD {
    b3: [BasicConv; 2],
    b7: [BasicConv; 4],
}

impl InceptionD {
    fn new(vb: VarBuilder, cin: usize) -> Result<Self> {
        Ok(Self {
            b3: [conv(&vb, "branch3x3_1", cin, 192, 1)?, conv_s2(&vb, "branch3x3_2", 192, 320, 3)?],
            b7: [
                conv(&vb, "branch7x7x3_1", cin, 192, 1)?,
                conv_rect(&vb, "branch7x7x3_2", 192, 192, (1, 7))?,
                conv_rect(&vb, "branch7x7x3_3", 192, 192, (7, 1))?,
                conv_s2(&vb, "branch7x7x3_4", 192, 192, 3)?,
            ],
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b3[1].forward(&self.b3[0].forward(x)?)?;
        let mut b = x.clone();
        for layer in &self.b7 {
            b = layer.forward(&b)?;
        }
        let c = x.max_pool2d_with_stride(3, 2)?;
        Ok(Tensor::cat(&[a, b, c], 1)?)
    }
}

struct InceptionE {
    b1: BasicConv,
    b3_1: BasicConv,
    b3_2a: BasicConv,
    b3_2b: BasicConv,
    dbl_1: BasicConv,
    dbl_2: BasicConv,
    dbl_3a: BasicConv,
    dbl_3b: BasicConv,
    pool: BasicConv,
    max_pool: bool,
}

impl InceptionE {
    fn new(vb: VarBuilder, cin: usize, max_pool: bool) -> Result<Self> {
        Ok(Self {
            b1: conv(&vb, "branch1x1", cin, 320, 1)?,
            b3_1: conv(&vb, "branch3x3_1", cin, 384, 1)?,
            b3_2a: conv_rect(&vb, "branch3x3_2a", 384, 384, (1, 3))?,
            b3_2b: conv_rect(&vb, "branch3x3_2b", 384, 384, (3, 1))?,
            dbl_1: conv(&vb, "branch3x3dbl_1", cin, 448, 1)?,
            dbl_2: conv(&vb, "branch3x3dbl_2", 448, 384, 3)?,
            dbl_3a: conv_rect(&vb, "branch3x3dbl_3a", 384, 384, (1, 3))?,
            dbl_3b: conv_rect(&vb, "branch3x3dbl_3b", 384, 384, (3, 1))?,
            pool: conv(&vb, "branch_pool", cin, 192, 1)?,
            max_pool,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let a = self.b1.forward(x)?;
        let b = self.b3_1.forward(x)?;
        let b = Tensor::cat(&[self.b3_2a.forward(&b)?, self.b3_2b.forward(&b)?], 1)?;
        let c = self.dbl_2.forward(&self.dbl_1.forward(x)?)?;
        let c = Tensor::cat(&[self.dbl_3a.forward(&c)?, self.dbl_3b.forward(&c)?], 1)?;
        let pooled = if self.max_pool { max_pool_3x3_same(x)? } else { avg_pool_3x3_no_pad_count(x)? };
        let d = self.pool.forward(&pooled)?;
        Ok(Tensor::cat(&[a, b, c, d], 1)?)
    }
}

/// What the network gives for one batch of pictures.
pub struct InceptionOutput {
    /// 2048-d pool features `[n, 2048]`, the FID/KID features.
    pub pool: Tensor,
    /// 1008 logits without the fc bias `[n, 1008]`, the Inception Score input.
    pub logits_unbiased: Tensor,
}

/// The FID Inception V3.
pub struct FidInception {
    stem: Vec<BasicConv>,
    mixed_5: Vec<InceptionA>,
    mixed_6a: InceptionB,
    mixed_6: Vec<InceptionC>,
    mixed_7a: InceptionD,
    mixed_7: Vec<InceptionE>,
    fc_weight: Tensor,
    device: Device,
}

impl FidInception {
    /// Loads the network from pytorch-fid's `.pth` or a `.safetensors` with the same names.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        if !path.exists() {
            return Err(Error::bad_file(
                format!(
                    "the Inception weights are missing; run `easel models pull inception` when online, or put \
                     pytorch-fid's {WEIGHTS_FILE} there, or choose the file"
                ),
                path,
            ));
        }
        let tensors = match path.extension().and_then(|e| e.to_str()) {
            Some("safetensors") => read_safetensors(path)?,
            _ => read_pickle_checkpoint(path)?,
        };
        let tensors = to_compute(tensors, DType::F32, device)?;
        Self::new(var_builder(&tensors, DType::F32, device), device).map_err(|e| match e {
            Error::Compute(err) => Error::bad_file(
                format!("these are not the FID Inception V3 weights pytorch-fid uses ({err})"),
                path,
            ),
            other => other,
        })
    }

    /// Builds the network from weights by torchvision's names.
    pub fn new(vb: VarBuilder, device: &Device) -> Result<Self> {
        let stem = vec![
            BasicConv::new(vb.pp("Conv2d_1a_3x3"), 3, 32, (3, 3), 2, (0, 0))?,
            BasicConv::new(vb.pp("Conv2d_2a_3x3"), 32, 32, (3, 3), 1, (0, 0))?,
            BasicConv::new(vb.pp("Conv2d_2b_3x3"), 32, 64, (3, 3), 1, (1, 1))?,
            BasicConv::new(vb.pp("Conv2d_3b_1x1"), 64, 80, (1, 1), 1, (0, 0))?,
            BasicConv::new(vb.pp("Conv2d_4a_3x3"), 80, 192, (3, 3), 1, (0, 0))?,
        ];
        Ok(Self {
            stem,
            mixed_5: vec![
                InceptionA::new(vb.pp("Mixed_5b"), 192, 32)?,
                InceptionA::new(vb.pp("Mixed_5c"), 256, 64)?,
                InceptionA::new(vb.pp("Mixed_5d"), 288, 64)?,
            ],
            mixed_6a: InceptionB::new(vb.pp("Mixed_6a"), 288)?,
            mixed_6: vec![
                InceptionC::new(vb.pp("Mixed_6b"), 768, 128)?,
                InceptionC::new(vb.pp("Mixed_6c"), 768, 160)?,
                InceptionC::new(vb.pp("Mixed_6d"), 768, 160)?,
                InceptionC::new(vb.pp("Mixed_6e"), 768, 192)?,
            ],
            mixed_7a: InceptionD::new(vb.pp("Mixed_7a"), 768)?,
            mixed_7: vec![
                InceptionE::new(vb.pp("Mixed_7b"), 1280, false)?,
                InceptionE::new(vb.pp("Mixed_7c"), 2048, true)?,
            ],
            fc_weight: vb.get((1008, 2048), "fc.weight")?,
            device: device.clone(),
        })
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Runs `[n, 3, 299, 299]` inputs, already resized and scaled to [-1, 1].
    pub fn forward(&self, x: &Tensor) -> Result<InceptionOutput> {
        let mut h = self.stem[0].forward(x)?;
        h = self.stem[1].forward(&h)?;
        h = self.stem[2].forward(&h)?;
        h = h.max_pool2d_with_stride(3, 2)?;
        h = self.stem[3].forward(&h)?;
        h = self.stem[4].forward(&h)?;
        h = h.max_pool2d_with_stride(3, 2)?;
        for block in &self.mixed_5 {
            h = block.forward(&h)?;
        }
        h = self.mixed_6a.forward(&h)?;
        for block in &self.mixed_6 {
            h = block.forward(&h)?;
        }
        h = self.mixed_7a.forward(&h)?;
        for block in &self.mixed_7 {
            h = block.forward(&h)?;
        }
        let pool = h.mean(D::Minus1)?.mean(D::Minus1)?;
        let logits_unbiased = pool.matmul(&self.fc_weight.t()?)?;
        Ok(InceptionOutput { pool, logits_unbiased })
    }
}
