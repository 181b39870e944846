//! The weight change each adapter kind defines, computed in f32:
//! LoRA/LoCon `ΔW = (α/r)·up·down`; LoHa `ΔW = (α/r)·(w1a·w1b) ⊙ (w2a·w2b)`; LoKr
//! `ΔW = scale·(w1 ⊗ w2)` with factors optionally low-rank; a full `diff`.

use candle_core::{DType, Tensor};

use crate::engine::pipeline::all_finite;
use crate::error::{Error, Result};

/// One module's adapter, in the form its file defines it.
#[derive(Clone, Debug)]
pub enum Delta {
    /// LoRA (linear) or LoCon (convolution): `down` [r, in(, kh, kw)], `up` [out, r(, 1, 1)].
    LoRa {
        /// The down projection.
        down: Tensor,
        /// The up projection.
        up: Tensor,
        /// The scale numerator; missing or zero means α = r.
        alpha: Option<f64>,
    },
    /// LyCORIS LoHa: a Hadamard product of two low-rank products.
    LoHa {
        /// First pair, `w1_a` [out, r] and `w1_b` [r, in·k·k].
        w1: (Tensor, Tensor),
        /// Second pair.
        w2: (Tensor, Tensor),
        /// The scale numerator; missing means α = r.
        alpha: Option<f64>,
    },
    /// LyCORIS LoKr: a Kronecker product whose factors may each be low-rank.
    LoKr {
        /// `lokr_w1`, or (`lokr_w1_a`, `lokr_w1_b`).
        w1: Factor,
        /// `lokr_w2`, or (`lokr_w2_a`, `lokr_w2_b`).
        w2: Factor,
        /// The scale numerator.
        alpha: Option<f64>,
    },
    /// A full weight difference, with an optional bias difference.
    Full {
        /// ΔW.
        diff: Tensor,
        /// Δb.
        diff_b: Option<Tensor>,
    },
}

/// A LoKr factor: whole, or as a low-rank product.
#[derive(Clone, Debug)]
pub enum Factor {
    /// The factor itself.
    Whole(Tensor),
    /// `a @ b`.
    Product(Tensor, Tensor),
}

impl Factor {
    fn matrix(&self) -> Result<Tensor> {
        Ok(match self {
            Factor::Whole(t) => t.to_dtype(DType::F32)?,
            Factor::Product(a, b) => {
                let a = a.to_dtype(DType::F32)?;
                let b = b.to_dtype(DType::F32)?;
                a.matmul(&b.flatten_from(1)?)?
            }
        })
    }

    fn rank(&self) -> Option<usize> {
        match self {
            Factor::Whole(_) => None,
            Factor::Product(_, b) => b.dim(0).ok(),
        }
    }
}

fn scale(alpha: Option<f64>, rank: usize) -> f64 {
    match alpha {
        Some(a) if a != 0.0 => a / rank as f64,
        _ => 1.0,
    }
}

fn product(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let a = a.to_dtype(DType::F32)?.flatten_from(1)?;
    let b = b.to_dtype(DType::F32)?.flatten_from(1)?;
    Ok(a.matmul(&b)?)
}

/// The element count of `a · b` (each flattened to a matrix after its first axis), or `None`
/// when the inner sizes differ or the count overflows: known before anything is multiplied.
fn product_len(a: &Tensor, b: &Tensor) -> Option<usize> {
    let (rows, inner) = (a.dims().first().copied()?, a.dims().iter().skip(1).product::<usize>());
    let (depth, cols) = (b.dims().first().copied()?, b.dims().iter().skip(1).product::<usize>());
    (inner == depth).then(|| rows.checked_mul(cols)).flatten()
}

impl Factor {
    /// Elements of the factor once whole.
    fn len(&self) -> Option<usize> {
        match self {
            Factor::Whole(t) => Some(t.elem_count()),
            Factor::Product(a, b) => product_len(a, b),
        }
    }

    fn tensors(&self) -> Vec<&Tensor> {
        match self {
            Factor::Whole(t) => vec![t],
            Factor::Product(a, b) => vec![a, b],
        }
    }
}

impl Delta {
    /// Refuses factors that would poison the model: a rank of 0 (α/r divides by it), an α that
    /// is not finite, or any value that is NaN or infinite (one such value turns every picture
    /// black). Checked once at load, so a stranger's file fails there with a sentence.
    pub fn check(&self) -> std::result::Result<(), String> {
        let (tensors, alpha, rank): (Vec<&Tensor>, Option<f64>, Option<usize>) = match self {
            Delta::LoRa { down, up, alpha } => (vec![down, up], *alpha, down.dims().first().copied()),
            Delta::LoHa { w1, w2, alpha } => {
                (vec![&w1.0, &w1.1, &w2.0, &w2.1], *alpha, w1.1.dims().first().copied())
            }
            Delta::LoKr { w1, w2, alpha } => {
                ([w1.tensors(), w2.tensors()].concat(), *alpha, w1.rank().or(w2.rank()))
            }
            Delta::Full { diff, diff_b } => (std::iter::once(diff).chain(diff_b).collect(), None, None),
        };
        if rank == Some(0) || tensors.iter().any(|t| t.elem_count() == 0) {
            return Err("it has a factor of rank 0 (an empty tensor)".into());
        }
        if alpha.is_some_and(|a| !a.is_finite()) {
            return Err("its alpha is not a finite number".into());
        }
        for t in tensors {
            if !all_finite(t).map_err(|e| format!("its values cannot be read ({e})"))? {
                return Err("its factors hold NaN or infinite values".into());
            }
        }
        Ok(())
    }

    /// ΔW reshaped to `shape` (the weight it changes), unweighted, in f32. The sizes are checked
    /// before any product is formed: a 20000×1 by 1×20000 pair aimed at a 32×32 layer would
    /// otherwise build 1.6 GB before being refused.
    pub fn weight_delta(&self, shape: &[usize]) -> Result<Tensor> {
        let target: usize = shape.iter().product();
        let fits = match self {
            Delta::LoRa { down, up, .. } => product_len(up, down) == Some(target),
            Delta::LoHa { w1, w2, .. } => {
                product_len(&w1.0, &w1.1) == Some(target) && product_len(&w2.0, &w2.1) == Some(target)
            }
            Delta::LoKr { w1, w2, .. } => {
                w1.len().zip(w2.len()).and_then(|(a, b)| a.checked_mul(b)) == Some(target)
            }
            Delta::Full { diff, .. } => diff.elem_count() == target,
        };
        if !fits {
            return Err(Error::Unsupported(format!(
                "the adapter's factors {} do not make a change of the shape {shape:?} of the weight they target",
                self.factor_shapes()
            )));
        }
        let delta = match self {
            Delta::LoRa { down, up, alpha } => {
                let r = down.dim(0)?;
                (product(up, down)? * scale(*alpha, r))?
            }
            Delta::LoHa { w1, w2, alpha } => {
                let r = w1.1.dim(0)?;
                ((product(&w1.0, &w1.1)? * product(&w2.0, &w2.1)?)? * scale(*alpha, r))?
            }
            Delta::LoKr { w1, w2, alpha } => {
                let k = kron(&w1.matrix()?, &w2.matrix()?, shape)?;
                // LyCORIS scales by α/r only when a factor is low-rank.
                match w1.rank().or(w2.rank()) {
                    Some(r) => (k * scale(*alpha, r))?,
                    None => k,
                }
            }
            Delta::Full { diff, .. } => diff.to_dtype(DType::F32)?,
        };
        if delta.elem_count() != shape.iter().product::<usize>() {
            return Err(Error::Unsupported(format!(
                "the adapter's change has shape {:?} but the weight it targets has shape {shape:?}",
                delta.dims()
            )));
        }
        Ok(delta.reshape(shape)?)
    }

    /// The factors' shapes, for messages.
    fn factor_shapes(&self) -> String {
        let tensors: Vec<&Tensor> = match self {
            Delta::LoRa { down, up, .. } => vec![up, down],
            Delta::LoHa { w1, w2, .. } => vec![&w1.0, &w1.1, &w2.0, &w2.1],
            Delta::LoKr { w1, w2, .. } => [w1.tensors(), w2.tensors()].concat(),
            Delta::Full { diff, .. } => vec![diff],
        };
        tensors.iter().map(|t| format!("{:?}", t.dims())).collect::<Vec<_>>().join(" × ")
    }

    /// Δb, for adapters that change biases.
    pub fn bias_delta(&self) -> Result<Option<Tensor>> {
        match self {
            Delta::Full { diff_b: Some(b), .. } => Ok(Some(b.to_dtype(DType::F32)?)),
            _ => Ok(None),
        }
    }
}

/// `w1 ⊗ w2` for a weight of `shape`: `w1` is [a, b]; `w2` is [c, d·rest] and the result is
/// [a·c, b·d, rest…] flattened to `shape`.
fn kron(w1: &Tensor, w2: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let (a, b) = w1.dims2()?;
    let c = w2.dim(0)?;
    let out = shape.first().copied().unwrap_or(0);
    let inner: usize = shape.iter().skip(1).product();
    if a * c != out || b == 0 || !inner.is_multiple_of(b) {
        return Err(Error::Unsupported(format!(
            "the LoKr factors {:?} and {:?} do not make a weight of shape {shape:?}",
            w1.dims(),
            w2.dims()
        )));
    }
    let d_rest = inner / b;
    let w2 = w2.reshape((c, d_rest))?;
    let rest: usize = shape.iter().skip(2).product::<usize>().max(1);
    let d = d_rest / rest;
    // result[i·c + k, j·d + l, r] = w1[i, j] · w2[k, l, r]
    let w1 = w1.reshape((a, 1, b, 1, 1))?;
    let w2 = w2.reshape((1, c, 1, d, rest))?;
    Ok(w1.broadcast_mul(&w2)?.reshape((a * c, b * d * rest))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn t(values: &[f32], shape: &[usize]) -> Tensor {
        Tensor::from_slice(values, shape, &Device::Cpu).expect("tensor")
    }

    fn values(x: &Tensor) -> Vec<f32> {
        x.flatten_all().and_then(|x| x.to_vec1::<f32>()).expect("values")
    }

    #[test]
    fn lora_is_scaled_up_times_down() {
        // up [2, 1] = [1, 2]ᵀ, down [1, 3] = [1, 0, -1], α = 0.5, r = 1.
        let d = Delta::LoRa { down: t(&[1., 0., -1.], &[1, 3]), up: t(&[1., 2.], &[2, 1]), alpha: Some(0.5) };
        assert_eq!(values(&d.weight_delta(&[2, 3]).expect("delta")), vec![0.5, 0., -0.5, 1., 0., -1.]);
    }

    #[test]
    fn missing_alpha_means_no_scaling() {
        let d = Delta::LoRa { down: t(&[2., 2.], &[2, 1]), up: t(&[1., 1.], &[1, 2]), alpha: None };
        assert_eq!(values(&d.weight_delta(&[1, 1]).expect("delta")), vec![4.]);
    }

    #[test]
    fn locon_conv_delta_has_the_kernel_shape() {
        // down [1, 1, 2, 2], up [2, 1, 1, 1]: ΔW[o, 0, y, x] = up[o] · down[y, x] · α/r (α = 2, r = 1).
        let d = Delta::LoRa {
            down: t(&[1., 2., 3., 4.], &[1, 1, 2, 2]),
            up: t(&[1., -1.], &[2, 1, 1, 1]),
            alpha: Some(2.0),
        };
        let w = d.weight_delta(&[2, 1, 2, 2]).expect("delta");
        assert_eq!(w.dims(), &[2, 1, 2, 2]);
        assert_eq!(values(&w), vec![2., 4., 6., 8., -2., -4., -6., -8.]);
    }

    #[test]
    fn loha_is_a_hadamard_product() {
        // (w1a·w1b) = [[1, 2], [2, 4]], (w2a·w2b) = [[3, 0], [0, 3]]·… with r = 1, α = 1.
        let d = Delta::LoHa {
            w1: (t(&[1., 2.], &[2, 1]), t(&[1., 2.], &[1, 2])),
            w2: (t(&[3., 1.], &[2, 1]), t(&[1., 1.], &[1, 2])),
            alpha: Some(1.0),
        };
        // w1 product [[1,2],[2,4]]; w2 product [[3,3],[1,1]] → [[3,6],[2,4]].
        assert_eq!(values(&d.weight_delta(&[2, 2]).expect("delta")), vec![3., 6., 2., 4.]);
    }

    #[test]
    fn lokr_is_a_kronecker_product() {
        let d = Delta::LoKr {
            w1: Factor::Whole(t(&[1., 2.], &[1, 2])),
            w2: Factor::Whole(t(&[1., 0., 0., 1.], &[2, 2])),
            alpha: None,
        };
        // [1 2] ⊗ I₂ = [[1 0 2 0], [0 1 0 2]]
        assert_eq!(values(&d.weight_delta(&[2, 4]).expect("delta")), vec![1., 0., 2., 0., 0., 1., 0., 2.]);
    }

    #[test]
    fn lokr_with_a_low_rank_factor_is_scaled() {
        // w2 = a·b with r = 1: [[2], [4]]·[[1, 1]] = [[2, 2], [4, 4]]; α = 0.5 → scale 0.5.
        let d = Delta::LoKr {
            w1: Factor::Whole(t(&[1.], &[1, 1])),
            w2: Factor::Product(t(&[2., 4.], &[2, 1]), t(&[1., 1.], &[1, 2])),
            alpha: Some(0.5),
        };
        assert_eq!(values(&d.weight_delta(&[2, 2]).expect("delta")), vec![1., 1., 2., 2.]);
    }

    #[test]
    fn wrong_shapes_are_refused_with_both_shapes() {
        let d = Delta::LoRa { down: t(&[1., 1.], &[1, 2]), up: t(&[1.], &[1, 1]), alpha: None };
        let msg = d.weight_delta(&[3, 3]).expect_err("refused").to_string();
        assert!(msg.contains("[1, 2]") && msg.contains("[3, 3]"), "{msg}");
    }

    #[test]
    fn oversized_factors_are_refused_before_their_product_is_built() {
        let long = |shape: &[usize]| Tensor::ones(shape, DType::F32, &Device::Cpu).expect("tensor");
        let d = Delta::LoRa { down: long(&[1, 20000]), up: long(&[20000, 1]), alpha: None };
        // The product would be 1.6 GB; refusing it must not build it (this test would crawl).
        let msg = d.weight_delta(&[32, 32]).expect_err("refused").to_string();
        assert!(msg.contains("[20000, 1]") && msg.contains("[32, 32]"), "{msg}");
    }

    #[test]
    fn poisoned_factors_are_found() {
        let good = || t(&[1., 2.], &[1, 2]);
        let nan = Delta::LoRa { down: t(&[1., f32::NAN], &[1, 2]), up: t(&[1.], &[1, 1]), alpha: None };
        assert!(nan.check().expect_err("NaN").contains("NaN"));
        let inf_alpha = Delta::LoRa { down: good(), up: t(&[1.], &[1, 1]), alpha: Some(f64::INFINITY) };
        assert!(inf_alpha.check().expect_err("inf").contains("alpha"));
        let rank0 = Delta::LoRa {
            down: Tensor::zeros((0, 2), DType::F32, &Device::Cpu).expect("empty"),
            up: Tensor::zeros((1, 0), DType::F32, &Device::Cpu).expect("empty"),
            alpha: Some(1.0),
        };
        assert!(rank0.check().expect_err("rank 0").contains("rank 0"));
        let fine = Delta::LoRa { down: good(), up: t(&[1.], &[1, 1]), alpha: Some(1.0) };
        assert_eq!(fine.check(), Ok(()));
    }
}
