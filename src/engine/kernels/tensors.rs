//! The bridge from candle tensors to the kernels: CPU tensors of f32, f16 or bf16 go through the
//! kernels, anything else answers `None` and the caller uses candle's op. Weights are widened to
//! f32 while packed (no f32 copy of a half-precision model); convolution, group norm and GEGLU
//! read and write activations in their own type, while linear layers and attention widen them to
//! f32 for the call and narrow the result back.

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use super::activations;
use super::attention::{self, Heads};
use super::conv::{self, ConvShape};
use super::gemm::{gemm, Strided};
use super::norm::{self, ChannelAffine, GroupShape};
use crate::error::Result;

/// The values of a contiguous CPU tensor in its storage type.
enum Values<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    Bf16(&'a [half::bf16]),
}

/// Runs `f` on the values of `t`, a contiguous CPU tensor of f32, f16 or bf16.
fn with_values<R>(t: &Tensor, f: impl FnOnce(Values) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let (start, end) = layout.contiguous_offsets()?;
    match &*storage {
        Storage::Cpu(CpuStorage::F32(v)) => Some(f(Values::F32(&v[start..end]))),
        Storage::Cpu(CpuStorage::F16(v)) => Some(f(Values::F16(&v[start..end]))),
        Storage::Cpu(CpuStorage::BF16(v)) => Some(f(Values::Bf16(&v[start..end]))),
        _ => None,
    }
}

/// Whether the kernels take this tensor (a CPU float tensor of a type they read).
fn supported(t: &Tensor) -> bool {
    t.device().is_cpu() && matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16)
}

/// `x` as contiguous f32 values, and the dtype to give the result back in.
fn widened(x: &Tensor) -> Result<(Tensor, DType)> {
    Ok((x.to_dtype(DType::F32)?.contiguous()?, x.dtype()))
}

/// Calls `$body` with `$w` bound to a tensor's values in their own element type.
macro_rules! with_element_type {
    ($values:expr, |$w:ident| $body:expr) => {
        match $values {
            Values::F32($w) => $body,
            Values::F16($w) => $body,
            Values::Bf16($w) => $body,
        }
    };
}

/// The values of `t`, a contiguous f32 CPU tensor (made by [`widened`]) whose storage is
/// `storage`.
fn as_f32<'a>(storage: &'a Storage, t: &Tensor) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(CpuStorage::F32(v)) => Ok(&v[t.layout().start_offset()..][..t.elem_count()]),
        _ => Err(crate::error::Error::Internal("kernel input is not f32 on the CPU".into())),
    }
}

fn finish(values: Vec<f32>, shape: Vec<usize>, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

fn bias_values(bias: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
    bias.map(f32_values).transpose()
}

/// A (small) tensor's values as f32, flattened.
fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// How a convolution reads its input tensor: as it is, enlarged to a (height, width) by nearest
/// neighbour, or through a group normalisation and SiLU (as residual blocks read).
pub type ConvInput<'a> = conv::Input<(usize, usize), NormSilu<'a>>;

/// A group normalisation followed by SiLU, as a convolution may read its input through it.
#[derive(Clone, Copy, Debug)]
pub struct NormSilu<'a> {
    /// Groups of channels.
    pub groups: usize,
    /// Per-channel factor.
    pub weight: &'a Tensor,
    /// Per-channel offset.
    pub bias: &'a Tensor,
    /// Added to the variance.
    pub eps: f64,
}

/// `conv2d(x, weight) + bias` (NCHW, square kernel, symmetric padding), or `None` when the
/// kernels do not take these tensors. `input` says how `x` is read: enlarged by nearest neighbour
/// or normalised, without the enlarged or normalised picture ever being made.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    input: ConvInput,
) -> Result<Option<Tensor>> {
    if !supported(x) || !supported(weight) || x.rank() != 4 || weight.rank() != 4 || stride == 0 {
        return Ok(None);
    }
    let (co, ci, kh, kw) = weight.dims4()?;
    let (batch, c, stored_h, stored_w) = x.dims4()?;
    let enlarge_to = match input {
        ConvInput::Enlarged(size) => Some(size),
        _ => None,
    };
    let (height, width) = enlarge_to.unwrap_or((stored_h, stored_w));
    if kh != kw || c != ci || height + 2 * padding < kh || width + 2 * padding < kw {
        return Ok(None); // candle's op reports the mismatch
    }
    if height == 0 || width == 0 || stored_h == 0 || stored_w == 0 {
        return Ok(None);
    }
    let resize = enlarge_to.map(|size| conv::Resize::new((stored_h, stored_w), size));
    let shape = ConvShape { in_channels: ci, out_channels: co, height, width, kernel: kh, stride, padding };
    let x = x.contiguous()?;
    let map = match input {
        ConvInput::Normalised(NormSilu { groups, weight, bias, eps }) => {
            if groups == 0 || ci % groups != 0 || weight.elem_count() != ci || bias.elem_count() != ci {
                return Ok(None);
            }
            let groups = GroupShape { batch, channels: ci, spatial: height * width, groups };
            let (weight, bias) = (f32_values(weight)?, f32_values(bias)?);
            with_values(&x, |xs| {
                with_element_type!(xs, |v| ChannelAffine::of(v, groups, &weight, &bias, eps, true))
            })
        }
        _ => None,
    };
    let read = match (&resize, &map) {
        (Some(r), _) => conv::Read::Enlarged(r),
        (_, Some(m)) => conv::Read::Normalised(m),
        _ => conv::Read::Plain,
    };
    let bias = bias_values(bias)?;
    let weight = weight.contiguous()?;
    // The picture is read in its own type (no f32 copy of a half-precision activation), and a
    // half-precision result is made in chunks (no f32 copy of it either).
    let dims = vec![batch, co, shape.out_height(), shape.out_width()];
    let out = with_values(&x, |xs| {
        with_values(&weight, |w| -> Result<Tensor> {
            let b = bias.as_deref();
            Ok(match xs {
                Values::F32(xs) => {
                    let out = with_element_type!(w, |w| conv::conv2d(xs, batch, shape, w, b, read));
                    Tensor::from_vec(out, dims, &Device::Cpu)?
                }
                Values::F16(xs) => {
                    let out = with_element_type!(w, |w| conv::conv2d_narrow(xs, batch, shape, w, b, read));
                    Tensor::from_vec(out, dims, &Device::Cpu)?
                }
                Values::Bf16(xs) => {
                    let out = with_element_type!(w, |w| conv::conv2d_narrow(xs, batch, shape, w, b, read));
                    Tensor::from_vec(out, dims, &Device::Cpu)?
                }
            })
        })
    })
    .flatten();
    out.transpose()
}

/// `x·weightᵀ + bias` over the last dimension, or `None` when the kernels do not take these
/// tensors.
pub fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Tensor>> {
    if !supported(x) || !supported(weight) || weight.rank() != 2 || x.rank() == 0 {
        return Ok(None);
    }
    let (out_dim, in_dim) = weight.dims2()?;
    if x.dims().last() != Some(&in_dim) || in_dim == 0 {
        return Ok(None);
    }
    let rows = x.elem_count() / in_dim;
    let mut shape = x.dims().to_vec();
    *shape.last_mut().expect("rank ≥ 1") = out_dim;
    let (x, dtype) = widened(x)?;
    let mut out = vec![0f32; rows * out_dim];
    if let Some(bias) = bias_values(bias)? {
        out.chunks_exact_mut(out_dim).for_each(|row| row.copy_from_slice(&bias));
    }
    let weight = weight.contiguous()?;
    let (storage, _) = x.storage_and_layout();
    let xs = as_f32(&storage, &x)?;
    let done = with_values(&weight, |w| {
        with_element_type!(w, |w| gemm(
            rows,
            out_dim,
            in_dim,
            &Strided::row_major(xs, in_dim),
            &Strided::transposed(w, in_dim),
            &mut out,
            out_dim
        ))
    });
    if done.is_none() {
        return Ok(None);
    }
    Ok(Some(finish(out, shape, dtype)?))
}

/// `softmax(q·kᵀ·scale)·v` with `heads` heads on `[batch, tokens, heads·d]` tensors, or `None`
/// when the kernels do not take these tensors.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Option<Tensor>> {
    if ![q, k, v].iter().all(|t| supported(t) && t.rank() == 3) || heads == 0 {
        return Ok(None);
    }
    let (batch, queries, dim) = q.dims3()?;
    let (kb, keys, kd) = k.dims3()?;
    if kb != batch || kd != dim || v.dims() != k.dims() || dim % heads != 0 {
        return Ok(None);
    }
    let h = Heads { batch, queries, keys, heads, head_dim: dim / heads };
    let (q, dtype) = widened(q)?;
    let (k, _) = widened(k)?;
    let (v, _) = widened(v)?;
    let (qs, ks, vs) = (q.storage_and_layout().0, k.storage_and_layout().0, v.storage_and_layout().0);
    let bf16 = dtype == DType::BF16;
    let out =
        attention::attention(as_f32(&qs, &q)?, as_f32(&ks, &k)?, as_f32(&vs, &v)?, h, scale as f32, bf16);
    Ok(Some(finish(out, vec![batch, queries, dim], dtype)?))
}

/// Group normalisation of `[batch, channels, …]` in `x`'s own dtype, or `None` when the kernels
/// do not take these tensors. (Where SiLU follows, the convolution after it reads through both:
/// [`ConvInput`]'s normalised read.)
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
) -> Result<Option<Tensor>> {
    if !supported(x) || x.rank() < 2 || groups == 0 {
        return Ok(None);
    }
    let (batch, channels) = (x.dim(0)?, x.dim(1)?);
    if channels % groups != 0 || weight.elem_count() != channels || bias.elem_count() != channels {
        return Ok(None);
    }
    let shape = GroupShape { batch, channels, spatial: x.dims()[2..].iter().product(), groups };
    let (weight, bias) = (f32_values(weight)?, f32_values(bias)?);
    let x = x.contiguous()?;
    let dims = x.dims().to_vec();
    let out = with_values(&x, |values| -> Result<Tensor> {
        with_element_type!(values, |v| Ok(Tensor::from_vec(
            norm::group_norm(v, shape, &weight, &bias, eps, false),
            dims,
            &Device::Cpu
        )?))
    });
    out.transpose()
}

/// GEGLU over the last dimension (value half, then gate half), or `None` when the kernels do not
/// take this tensor.
pub fn geglu(h: &Tensor) -> Result<Option<Tensor>> {
    let Some(&width) = h.dims().last() else { return Ok(None) };
    if !supported(h) || width % 2 != 0 {
        return Ok(None);
    }
    let h = h.contiguous()?;
    let mut dims = h.dims().to_vec();
    *dims.last_mut().expect("rank ≥ 1") = width / 2;
    let out = with_values(&h, |values| -> Result<Tensor> {
        with_element_type!(values, |v| Ok(Tensor::from_vec(
            activations::geglu(v, width / 2),
            dims,
            &Device::Cpu
        )?))
    });
    out.transpose()
}

/// `dst += src`, elementwise, written into `dst`'s storage.
struct AddAssign;

impl candle_core::InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "add-assign"
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_layout: &candle_core::Layout,
        src: &CpuStorage,
        src_layout: &candle_core::Layout,
    ) -> candle_core::Result<()> {
        let (Some((d0, d1)), Some((s0, s1))) =
            (dst_layout.contiguous_offsets(), src_layout.contiguous_offsets())
        else {
            candle_core::bail!("add-assign needs contiguous tensors");
        };
        fn add<T: super::gemm::Element>(dst: &mut [T], src: &[T]) {
            dst.iter_mut().zip(src).for_each(|(d, s)| *d = T::from_f32(d.to_f32() + s.to_f32()));
        }
        match (dst, src) {
            (CpuStorage::F32(d), CpuStorage::F32(s)) => add(&mut d[d0..d1], &s[s0..s1]),
            (CpuStorage::F16(d), CpuStorage::F16(s)) => add(&mut d[d0..d1], &s[s0..s1]),
            (CpuStorage::BF16(d), CpuStorage::BF16(s)) => add(&mut d[d0..d1], &s[s0..s1]),
            _ => candle_core::bail!("add-assign needs two f32, f16 or bf16 tensors of one type"),
        }
        Ok(())
    }
}

/// Adds `src` into `dst` in place and answers `true`, or answers `false` (nothing done) when the
/// kernels do not take these tensors. `dst` must be a tensor the caller made and holds alone:
/// anything sharing its storage would see the change.
pub fn add_assign(dst: &Tensor, src: &Tensor) -> Result<bool> {
    let fits = supported(dst)
        && src.device().is_cpu()
        && dst.dtype() == src.dtype()
        && dst.dims() == src.dims()
        && dst.is_contiguous()
        && src.is_contiguous();
    if !fits {
        return Ok(false);
    }
    dst.inplace_op2(src, &AddAssign)?;
    Ok(true)
}
