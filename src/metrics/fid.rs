//! Fréchet Inception Distance from feature statistics, in f64 as pytorch-fid computes it:
//! FID = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂). The trace of the square root comes from two
//! symmetric eigendecompositions (faer): tr √(Σ₁Σ₂) = Σ √max(λ, 0) over the eigenvalues of
//! √Σ₁ Σ₂ √Σ₁, which stays real and stable when there are fewer pictures than dimensions.

use std::path::Path;

use candle_core::{Device, Tensor};
use faer::{Mat, Side};

use crate::error::{Error, Result};

/// Mean and covariance of a set of feature vectors.
#[derive(Clone, Debug)]
pub struct Statistics {
    /// μ, one value per dimension.
    pub mu: Vec<f64>,
    /// Σ (unbiased, n − 1), row-major.
    pub sigma: Mat<f64>,
    /// How many vectors made them (0 when read from a file that does not say).
    pub count: usize,
}

impl Statistics {
    /// Statistics of `features` (one row per picture). Needs at least two rows.
    pub fn from_features(features: &[Vec<f32>]) -> Result<Self> {
        let n = features.len();
        if n < 2 {
            return Err(Error::BadRequest(format!("FID needs at least 2 pictures per set; got {n}")));
        }
        let d = features[0].len();
        let mut mu = vec![0f64; d];
        for row in features {
            for (m, &v) in mu.iter_mut().zip(row) {
                *m += f64::from(v);
            }
        }
        mu.iter_mut().for_each(|m| *m /= n as f64);
        let centered = Mat::<f64>::from_fn(n, d, |i, j| f64::from(features[i][j]) - mu[j]);
        let sigma = (centered.transpose() * &centered) * faer::Scale(1.0 / (n as f64 - 1.0));
        Ok(Self { mu, sigma, count: n })
    }

    /// Whether the covariance is rank-deficient (fewer pictures than dimensions).
    pub fn rank_deficient(&self) -> bool {
        self.count != 0 && self.count <= self.mu.len()
    }

    /// Saves `mu` and `sigma` as an `.npz`, as pytorch-fid's `--save-stats` writes them.
    pub fn save_npz(&self, path: &Path) -> Result<()> {
        let d = self.mu.len();
        let mu = Tensor::from_slice(&self.mu, d, &Device::Cpu)?;
        let flat: Vec<f64> =
            (0..d).flat_map(|i| (0..d).map(move |j| (i, j))).map(|(i, j)| self.sigma[(i, j)]).collect();
        let sigma = Tensor::from_vec(flat, (d, d), &Device::Cpu)?;
        let tmp = path.with_extension("npz.tmp");
        Tensor::write_npz(&[("mu", &mu), ("sigma", &sigma)], &tmp)?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("cannot save the statistics", e, path))
    }

    /// Reads statistics saved by pytorch-fid (`mu`, `sigma`) or by Easel.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let arrays = Tensor::read_npz(path)
            .map_err(|e| Error::bad_file(format!("cannot read these statistics as .npz ({e})"), path))?;
        let get = |name: &str| {
            arrays.iter().find(|(n, _)| n == name).map(|(_, t)| t.clone()).ok_or_else(|| {
                Error::bad_file(
                    format!("the statistics file has no `{name}` array (pytorch-fid writes mu and sigma)"),
                    path,
                )
            })
        };
        let mu: Vec<f64> = get("mu")?.to_dtype(candle_core::DType::F64)?.flatten_all()?.to_vec1()?;
        let sigma = get("sigma")?.to_dtype(candle_core::DType::F64)?;
        let d = mu.len();
        if sigma.dims() != [d, d] {
            return Err(Error::bad_file(
                format!("sigma has shape {:?}; expected [{d}, {d}]", sigma.dims()),
                path,
            ));
        }
        let values: Vec<f64> = sigma.flatten_all()?.to_vec1()?;
        Ok(Self { mu, sigma: Mat::from_fn(d, d, |i, j| values[i * d + j]), count: 0 })
    }
}

/// FID between two sets of statistics.
pub fn frechet_distance(a: &Statistics, b: &Statistics) -> Result<f64> {
    if a.mu.len() != b.mu.len() {
        return Err(Error::BadRequest(format!(
            "the statistics have different dimensions ({} and {})",
            a.mu.len(),
            b.mu.len()
        )));
    }
    let mean_term: f64 = a.mu.iter().zip(&b.mu).map(|(x, y)| (x - y) * (x - y)).sum();
    let trace = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
    Ok(mean_term + trace(&a.sigma) + trace(&b.sigma) - 2.0 * trace_sqrt_product(&a.sigma, &b.sigma)?)
}

/// tr √(AB) for symmetric positive semi-definite A and B.
pub fn trace_sqrt_product(a: &Mat<f64>, b: &Mat<f64>) -> Result<f64> {
    let eig = a
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::BadRequest(format!("the covariance eigendecomposition failed: {e:?}")))?;
    let u = eig.U();
    let s = eig.S().column_vector();
    let n = a.nrows();
    let root = Mat::<f64>::from_fn(n, n, |i, j| u[(i, j)] * s[j].max(0.0).sqrt());
    let sqrt_a = &root * u.transpose();
    let m = &sqrt_a * b * &sqrt_a;
    // Symmetrise away rounding so the eigen solver sees an exactly symmetric matrix.
    let m = Mat::<f64>::from_fn(n, n, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let values = m
        .self_adjoint_eigenvalues(Side::Lower)
        .map_err(|e| Error::BadRequest(format!("the covariance eigendecomposition failed: {e:?}")))?;
    Ok(values.iter().map(|v| v.max(0.0).sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(mu: Vec<f64>, diag: &[f64]) -> Statistics {
        let d = diag.len();
        Statistics { mu, sigma: Mat::from_fn(d, d, |i, j| if i == j { diag[i] } else { 0.0 }), count: 0 }
    }

    #[test]
    fn identical_sets_are_zero() {
        let features: Vec<Vec<f32>> =
            (0..10).map(|i| vec![i as f32, (i * i) as f32 * 0.1, 1.0 - i as f32]).collect();
        let s = Statistics::from_features(&features).expect("stats");
        assert!(frechet_distance(&s, &s).expect("fid").abs() < 1e-9);
    }

    #[test]
    fn a_mean_shift_of_two_gives_four() {
        let a = stats(vec![0.0, 0.0, 0.0], &[1.0, 1.0, 1.0]);
        let b = stats(vec![2.0, 0.0, 0.0], &[1.0, 1.0, 1.0]);
        assert!((frechet_distance(&a, &b).expect("fid") - 4.0).abs() < 1e-9);
    }

    #[test]
    fn square_root_of_a_diagonal() {
        // tr √(diag(4, 9, 16) · I) = 2 + 3 + 4
        let a = stats(vec![0.0; 3], &[4.0, 9.0, 16.0]);
        let i = stats(vec![0.0; 3], &[1.0, 1.0, 1.0]);
        assert!((trace_sqrt_product(&a.sigma, &i.sigma).expect("trace") - 9.0).abs() < 1e-9);
    }

    #[test]
    fn npz_round_trip() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("stats.npz");
        let s = stats(vec![1.0, -2.0], &[0.5, 3.0]);
        s.save_npz(&path).expect("saved");
        let back = Statistics::load_npz(&path).expect("loaded");
        assert_eq!(back.mu, s.mu);
        assert_eq!(back.sigma[(1, 1)], 3.0);
    }
}
