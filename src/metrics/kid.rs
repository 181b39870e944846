//! Kernel Inception Distance as torch-fidelity computes it: the unbiased MMD² with the polynomial
//! kernel (xᵀy/d + 1)³ over `subsets` random subsets of `subset_size` features from each set, drawn
//! with NumPy's seeded `RandomState`; the mean and population standard deviation.

use super::numpy_rng::LegacyRandomState;
use crate::error::{Error, Result};

/// KID's mean and standard deviation over the subsets.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Kid {
    /// Mean MMD².
    pub mean: f64,
    /// Population standard deviation of the subsets' MMD².
    pub std: f64,
}

/// KID between two feature sets; `subset_size` is clipped to the smaller set, as Easel's default.
pub fn kernel_inception_distance(
    a: &[Vec<f32>],
    b: &[Vec<f32>],
    subsets: usize,
    subset_size: usize,
    seed: u32,
) -> Result<Kid> {
    let m = subset_size.min(a.len()).min(b.len());
    if m < 2 {
        return Err(Error::BadRequest("KID needs at least 2 pictures per set".into()));
    }
    let mut rng = LegacyRandomState::new(seed);
    let mut values = Vec::with_capacity(subsets);
    for _ in 0..subsets {
        let ia = rng.choice(a.len(), m);
        let ib = rng.choice(b.len(), m);
        let x: Vec<&[f32]> = ia.iter().map(|&i| a[i].as_slice()).collect();
        let y: Vec<&[f32]> = ib.iter().map(|&i| b[i].as_slice()).collect();
        values.push(mmd2_unbiased(&x, &y));
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Ok(Kid { mean, std: var.sqrt() })
}

fn kernel(x: &[f32], y: &[f32]) -> f64 {
    let dot: f64 = x.iter().zip(y).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    (dot / x.len() as f64 + 1.0).powi(3)
}

fn mmd2_unbiased(x: &[&[f32]], y: &[&[f32]]) -> f64 {
    let m = x.len() as f64;
    let mut xx = 0.0;
    let mut yy = 0.0;
    for i in 0..x.len() {
        for j in 0..x.len() {
            if i != j {
                xx += kernel(x[i], x[j]);
                yy += kernel(y[i], y[j]);
            }
        }
    }
    let xy: f64 = x.iter().flat_map(|a| y.iter().map(move |b| kernel(a, b))).sum();
    (xx + yy) / (m * (m - 1.0)) - 2.0 * xy / (m * m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_are_near_zero_and_shifts_are_positive() {
        let a: Vec<Vec<f32>> = (0..40).map(|i| vec![(i % 7) as f32 * 0.1, (i % 5) as f32 * 0.2]).collect();
        let b: Vec<Vec<f32>> = a.iter().map(|v| vec![v[0] + 1.0, v[1]]).collect();
        let same = kernel_inception_distance(&a, &a, 20, 20, 2020).expect("kid");
        let shifted = kernel_inception_distance(&a, &b, 20, 20, 2020).expect("kid");
        assert!(same.mean.abs() < 0.05, "{}", same.mean);
        assert!(shifted.mean > same.mean + 0.1, "{} vs {}", shifted.mean, same.mean);
    }
}
