//! Inception Score as torch-fidelity computes it: the 1008 logits without the fc bias, shuffled
//! with NumPy's seeded permutation, split into `splits` parts; per part exp(mean KL(p(y|x) ‖ p(y))),
//! then the mean and population standard deviation over parts.

use super::numpy_rng::LegacyRandomState;
use crate::error::{Error, Result};

/// The score's mean and standard deviation over splits.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct InceptionScore {
    /// Mean over splits.
    pub mean: f64,
    /// Population standard deviation over splits.
    pub std: f64,
}

/// IS of a set of unbiased logits (one row per picture).
pub fn inception_score(logits: &[Vec<f32>], splits: usize, seed: u32) -> Result<InceptionScore> {
    let n = logits.len();
    if n < splits || splits == 0 {
        return Err(Error::BadRequest(format!(
            "the Inception Score needs at least {splits} pictures; got {n}"
        )));
    }
    let order = LegacyRandomState::new(seed).permutation(n);
    let (probs, log_probs): (Vec<Vec<f64>>, Vec<Vec<f64>>) =
        order.iter().map(|&i| softmax(&logits[i])).unzip();
    let mut scores = Vec::with_capacity(splits);
    for s in 0..splits {
        let (lo, hi) = (s * n / splits, (s + 1) * n / splits);
        let part = hi - lo;
        let classes = probs[lo].len();
        let q: Vec<f64> =
            (0..classes).map(|c| probs[lo..hi].iter().map(|p| p[c]).sum::<f64>() / part as f64).collect();
        let log_q: Vec<f64> = q.iter().map(|v| v.ln()).collect();
        let kl: f64 = (lo..hi)
            .map(|i| (0..classes).map(|c| probs[i][c] * (log_probs[i][c] - log_q[c])).sum::<f64>())
            .sum::<f64>()
            / part as f64;
        scores.push(kl.exp());
    }
    let mean = scores.iter().sum::<f64>() / splits as f64;
    let var = scores.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / splits as f64;
    Ok(InceptionScore { mean, std: var.sqrt() })
}

fn softmax(logits: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let max = logits.iter().map(|&v| f64::from(v)).fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logits.iter().map(|&v| (f64::from(v) - max).exp()).sum();
    let log_sum = sum.ln();
    let log_p: Vec<f64> = logits.iter().map(|&v| f64::from(v) - max - log_sum).collect();
    (log_p.iter().map(|v| v.exp()).collect(), log_p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confident_distinct_classes_score_the_class_count() {
        // Each picture certain of its own class, classes spread evenly: IS = number of classes.
        let logits: Vec<Vec<f32>> =
            (0..40).map(|i| (0..4).map(|c| if c == i % 4 { 50.0 } else { 0.0 }).collect()).collect();
        let is = inception_score(&logits, 1, 2020).expect("score");
        assert!((is.mean - 4.0).abs() < 1e-6, "{}", is.mean);
    }

    #[test]
    fn uniform_predictions_score_one() {
        let logits = vec![vec![0.0f32; 8]; 20];
        let is = inception_score(&logits, 10, 2020).expect("score");
        assert!((is.mean - 1.0).abs() < 1e-12 && is.std < 1e-12);
    }
}
