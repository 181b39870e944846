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
use super::norm::{self, GroupShape};
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
        _ => Err(crate::error::Error::BadRequest("kernel input is not f32 on the CPU".into())),
    }
}

fn finish(values: Vec<f32>, shape: Vec<usize>, dtype: DType) -> Result<Tensor> {
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

fn bias_values(bias: Option<&Tensor>) -> Result<Option<Vec<f32>>> {
    Ok(match bias {
        Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
        None => None,
    })
}

/// `conv2d(x, weight) + bias` (NCHW, square kernel, symmetric padding), or `None` when the
/// kernels do not take these tensors. With `enlarge_to`, the convolution reads `x` enlarged to
/// that (height, width) by nearest neighbour, without making the enlarged picture.
pub fn conv2d(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    stride: usize,
    padding: usize,
    enlarge_to: Option<(usize, usize)>,
) -> Result<Option<Tensor>> {
    if !supported(x) || !supported(weight) || x.rank() != 4 || weight.rank() != 4 || stride == 0 {
        return Ok(None);
    }
    let (co, ci, kh, kw) = weight.dims4()?;
    let (batch, c, stored_h, stored_w) = x.dims4()?;
    let (height, width) = enlarge_to.unwrap_or((stored_h, stored_w));
    if kh != kw || c != ci || height + 2 * padding < kh || width + 2 * padding < kw {
        return Ok(None); // candle's op reports the mismatch
    }
    if height == 0 || width == 0 || stored_h == 0 || stored_w == 0 {
        return Ok(None);
    }
    let resize = enlarge_to.map(|size| conv::Resize::new((stored_h, stored_w), size));
    let resize = resize.as_ref();
    let shape = ConvShape { in_channels: ci, out_channels: co, height, width, kernel: kh, stride, padding };
    let x = x.contiguous()?;
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
                    let out = with_element_type!(w, |w| conv::conv2d(xs, batch, shape, w, b, resize));
                    Tensor::from_vec(out, dims, &Device::Cpu)?
                }
                Values::F16(xs) => {
                    let out = with_element_type!(w, |w| conv::conv2d_narrow(xs, batch, shape, w, b, resize));
                    Tensor::from_vec(out, dims, &Device::Cpu)?
                }
                Values::Bf16(xs) => {
                    let out = with_element_type!(w, |w| conv::conv2d_narrow(xs, batch, shape, w, b, resize));
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
    let out = attention::attention(as_f32(&qs, &q)?, as_f32(&ks, &k)?, as_f32(&vs, &v)?, h, scale as f32);
    Ok(Some(finish(out, vec![batch, queries, dim], dtype)?))
}

/// Group normalisation of `[batch, channels, …]` in `x`'s own dtype, then SiLU when `silu`, or
/// `None` when the kernels do not take these tensors.
pub fn group_norm(
    x: &Tensor,
    groups: usize,
    weight: &Tensor,
    bias: &Tensor,
    eps: f64,
    silu: bool,
) -> Result<Option<Tensor>> {
    if !supported(x) || x.rank() < 2 || groups == 0 {
        return Ok(None);
    }
    let (batch, channels) = (x.dim(0)?, x.dim(1)?);
    if channels % groups != 0 || weight.elem_count() != channels || bias.elem_count() != channels {
        return Ok(None);
    }
    let shape = GroupShape { batch, channels, spatial: x.dims()[2..].iter().product(), groups };
    let weight = weight.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let bias = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    let x = x.contiguous()?;
    let dims = x.dims().to_vec();
    let out = with_values(&x, |values| -> Result<Tensor> {
        with_element_type!(values, |v| Ok(Tensor::from_vec(
            norm::group_norm(v, shape, &weight, &bias, eps, silu),
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
