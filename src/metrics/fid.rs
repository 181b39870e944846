//! Fréchet Inception Distance from feature statistics, in f64 as pytorch-fid computes it:
//! FID = |μ₁ − μ₂|² + tr Σ₁ + tr Σ₂ − 2 tr √(Σ₁Σ₂). The trace of the square root comes from two
//! symmetric eigendecompositions (faer): tr √(Σ₁Σ₂) = Σ √max(λ, 0) over the eigenvalues of
//! √Σ₁ Σ₂ √Σ₁, which stays real and stable when there are fewer pictures than dimensions.
//! Statistics files are read with Easel's bounded `.npz` reader ([`super::npz`]) and checked:
//! shapes (d,) and (d, d), finite values.

use std::path::Path;

use candle_core::{Device, Tensor};
use faer::{Mat, Side};

use super::npz::{read_npz, NpzError};
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

    /// Reads statistics saved by pytorch-fid (`mu`, `sigma`; `np.savez` or
    /// `np.savez_compressed`) or by Easel, with Easel's bounded `.npz` reader: a damaged or hostile
    /// file is refused with a sentence, never read beyond what it holds.
    pub fn load_npz(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("cannot read the statistics", e, path))?;
        Self::read_npz(std::io::BufReader::new(file)).map_err(|e| {
            Error::bad_file(
                format!(
                    "cannot use these FID statistics: {e}; write them again with pytorch-fid's \
                     save-stats option or Easel's reference statistics"
                ),
                path,
            )
        })
    }

    /// Statistics from an `.npz` archive's bytes, as [`Statistics::load_npz`] reads a file; the
    /// entry point for fuzzing. Any bytes give statistics or a sentence.
    pub fn parse_npz(bytes: &[u8]) -> std::result::Result<Self, NpzError> {
        Self::read_npz(std::io::Cursor::new(bytes))
    }

    fn read_npz<R: std::io::Read + std::io::Seek>(reader: R) -> std::result::Result<Self, NpzError> {
        let mut arrays = read_npz(reader, &["mu", "sigma"])?.into_iter();
        let (Some(mu), Some(sigma)) = (arrays.next(), arrays.next()) else {
            return Err(NpzError("it lacks mu or sigma".into()));
        };
        let d = match mu.shape[..] {
            [d] if d > 0 => d,
            _ => {
                return Err(NpzError(format!(
                    "mu has shape {:?}; FID statistics have a vector (d,)",
                    mu.shape
                )))
            }
        };
        if sigma.shape != [d, d] {
            return Err(NpzError(format!(
                "sigma has shape {:?}; with {d} values in mu it should be [{d}, {d}]",
                sigma.shape
            )));
        }
        for (name, values) in [("mu", &mu.values), ("sigma", &sigma.values)] {
            if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                return Err(NpzError(format!(
                    "{name} holds {} at position {i}; statistics must be finite numbers",
                    values[i]
                )));
            }
        }
        let values = sigma.values;
        Ok(Self { mu: mu.values, sigma: Mat::from_fn(d, d, |i, j| values[i * d + j]), count: 0 })
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
        .map_err(|e| Error::Numerical(format!("the covariance eigendecomposition failed: {e:?}")))?;
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
        .map_err(|e| Error::Numerical(format!("the covariance eigendecomposition failed: {e:?}")))?;
    Ok(values.iter().map(|v| v.max(0.0).sqrt()).sum())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::npz::tests::{npy, npz};

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

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn parse(mu: &[f64], sigma_shape: &str, sigma: &[f64]) -> std::result::Result<Statistics, String> {
        let bytes = npz(
            &[
                ("mu", npy("<f8", false, &format!("({},)", mu.len()), &f64s(mu))),
                ("sigma", npy("<f8", false, sigma_shape, &f64s(sigma))),
            ],
            true,
        );
        Statistics::parse_npz(&bytes).map_err(|e| e.to_string())
    }

    #[test]
    fn compressed_statistics_are_read() {
        let s = parse(&[1.0, 2.0], "(2, 2)", &[1.0, 0.25, 0.25, 3.0]).expect("read");
        assert_eq!(s.mu, vec![1.0, 2.0]);
        assert_eq!(s.sigma[(0, 1)], 0.25);
        assert_eq!(s.sigma[(1, 1)], 3.0);
    }

    #[test]
    fn non_finite_statistics_are_refused() {
        let err = parse(&[1.0, f64::NAN], "(2, 2)", &[1.0, 0.0, 0.0, 1.0]).expect_err("refused");
        assert!(err.contains("mu holds NaN at position 1"), "{err}");
        let err = parse(&[1.0, 2.0], "(2, 2)", &[1.0, 0.0, f64::INFINITY, 1.0]).expect_err("refused");
        assert!(err.contains("sigma holds inf at position 2"), "{err}");
    }

    #[test]
    fn shapes_must_match() {
        let err = parse(&[1.0, 2.0], "(4,)", &[1.0; 4]).expect_err("refused");
        assert!(err.contains("should be [2, 2]"), "{err}");
        let err = parse(&[], "(0, 0)", &[]).expect_err("refused");
        assert!(err.contains("mu has shape [0]"), "{err}");
    }

    #[test]
    fn a_hostile_file_is_a_sentence_with_its_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hostile.npz");
        let bytes = npz(
            &[
                ("mu", npy("<f8", false, "(1048576,)", &[])),
                ("sigma", npy("<f8", false, "(1048576, 1048576)", &[])),
            ],
            true,
        );
        std::fs::write(&path, bytes).expect("written");
        let err = Statistics::load_npz(&path).expect_err("refused").to_string();
        assert!(err.contains("cannot use these FID statistics") && err.contains("hostile.npz"), "{err}");
    }
}
