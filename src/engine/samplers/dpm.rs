//! DPM-Solver++ 2M (midpoint), as diffusers' `DPMSolverMultistepScheduler` with its defaults:
//! first order on the first step and on the last (σ = 0) step, second order between.

use candle_core::Tensor;

use super::schedule::{interp, linspace, Spacing};
use super::{NoiseFn, Prediction, Sampler, ScheduleConfig};
use crate::error::Result;

pub struct DpmPp2m {
    prediction: Prediction,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    /// The previous step's x₀ prediction, for the second-order update.
    previous_x0: Option<Tensor>,
}

impl DpmPp2m {
    pub fn new(cfg: ScheduleConfig, steps: usize, karras: bool) -> Self {
        let t = cfg.train_steps;
        let mut timesteps: Vec<f64> = match cfg.spacing {
            Spacing::Linspace => {
                let mut ts: Vec<f64> =
                    linspace(0.0, (t - 1) as f64, steps + 1).into_iter().map(f64::round).collect();
                ts.reverse();
                ts.truncate(steps);
                ts
            }
            Spacing::Leading => {
                let ratio = t / (steps + 1);
                (1..=steps).rev().map(|i| (i * ratio + cfg.steps_offset) as f64).collect()
            }
            Spacing::Trailing => super::schedule::trailing(t, steps),
        };
        let all = cfg.sigmas();
        let mut sigmas: Vec<f64> = if karras {
            let s = karras_sigmas(all[0], all[all.len() - 1], steps);
            let logs: Vec<f64> = all.iter().map(|s| s.ln()).collect();
            timesteps = s.iter().map(|&sigma| sigma_to_t(sigma, &logs).round()).collect();
            s
        } else {
            timesteps.iter().map(|&ts| interp(ts, &all)).collect()
        };
        sigmas.push(0.0);
        Self { prediction: cfg.prediction, timesteps, sigmas, previous_x0: None }
    }
}

/// Karras et al. (2022) ρ = 7 spacing between σ_max and σ_min.
fn karras_sigmas(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let (lo, hi) = (sigma_min.powf(1.0 / rho), sigma_max.powf(1.0 / rho));
    linspace(0.0, 1.0, n).into_iter().map(|r| (hi + r * (lo - hi)).powf(rho)).collect()
}

/// The fractional training timestep whose log σ is `sigma`'s, by linear interpolation.
fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let last = log_sigmas.len() - 2;
    let lo = log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0).min(last);
    let (low, high) = (log_sigmas[lo], log_sigmas[lo + 1]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * lo as f64 + w * (lo + 1) as f64
}

/// (α_t, σ_t, λ_t) of a VP model at the EDM σ.
fn alpha_sigma_lambda(sigma: f64) -> (f64, f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    let s = sigma * alpha;
    (alpha, s, alpha.ln() - s.ln())
}

impl Sampler for DpmPp2m {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, _noise: &mut NoiseFn) -> Result<Tensor> {
        let (alpha_s0, sigma_s0, lambda_s0) = alpha_sigma_lambda(self.sigmas[i]);
        let x0 = match self.prediction {
            Prediction::Epsilon => ((x - (output * sigma_s0)?)? / alpha_s0)?,
            Prediction::VPrediction => ((x * alpha_s0)? - (output * sigma_s0)?)?,
        };
        let (alpha_t, sigma_t, lambda_t) = alpha_sigma_lambda(self.sigmas[i + 1]);
        let h = lambda_t - lambda_s0;
        let last = i + 1 == self.timesteps.len();
        let coeff = alpha_t * ((-h).exp() - 1.0);
        let ratio = sigma_t / sigma_s0;
        let next = match (&self.previous_x0, last) {
            (Some(prev_x0), false) if i > 0 => {
                let (_, _, lambda_s1) = alpha_sigma_lambda(self.sigmas[i - 1]);
                let r0 = (lambda_s0 - lambda_s1) / h;
                let d1 = ((&x0 - prev_x0)? * (1.0 / r0))?;
                (((x * ratio)? - (&x0 * coeff)?)? - (d1 * (0.5 * coeff))?)?
            }
            _ => ((x * ratio)? - (&x0 * coeff)?)?,
        };
        self.previous_x0 = Some(x0);
        Ok(next)
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.previous_x0.as_ref()
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        let (alpha, sigma, _) = alpha_sigma_lambda(self.sigmas[i]);
        Ok(((x0 * alpha)? + (noise * sigma)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigma_to_t_inverts_the_table() {
        let logs: Vec<f64> = (0..10).map(|i| (i as f64 + 1.0).ln()).collect();
        assert!((sigma_to_t(4.0, &logs) - 3.0).abs() < 1e-12);
        assert!((sigma_to_t(100.0, &logs) - 9.0).abs() < 1e-12);
        assert!(sigma_to_t(0.5, &logs).abs() < 1e-12);
    }

    #[test]
    fn karras_runs_from_max_to_min() {
        let s = karras_sigmas(0.03, 14.6, 5);
        assert!((s[0] - 14.6).abs() < 1e-9 && (s[4] - 0.03).abs() < 1e-9);
        assert!(s.windows(2).all(|w| w[0] > w[1]));
    }
}
