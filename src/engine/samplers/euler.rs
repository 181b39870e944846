//! Euler and Euler ancestral, as diffusers' `EulerDiscreteScheduler` and
//! `EulerAncestralDiscreteScheduler` (no churn, discrete timesteps interpolated into σ).

use candle_core::Tensor;

use super::schedule::{interp, linspace, trailing, Spacing};
use super::{NoiseFn, Prediction, Sampler, ScheduleConfig};
use crate::error::Result;

pub struct Euler {
    prediction: Prediction,
    timesteps: Vec<f64>,
    /// σ for each step plus a final 0.
    sigmas: Vec<f64>,
    init_sigma: f64,
    ancestral: bool,
    denoised: Option<Tensor>,
}

impl Euler {
    pub fn new(cfg: ScheduleConfig, steps: usize, ancestral: bool) -> Self {
        let t = cfg.train_steps;
        let timesteps: Vec<f64> = match cfg.spacing {
            Spacing::Linspace => linspace(0.0, (t - 1) as f64, steps).into_iter().rev().collect(),
            Spacing::Leading => {
                let ratio = t / steps;
                (0..steps).rev().map(|i| (i * ratio + cfg.steps_offset) as f64).collect()
            }
            Spacing::Trailing => trailing(t, steps),
        };
        let mut all = cfg.sigmas();
        if cfg.zero_snr {
            // diffusers keeps the last σ finite by pinning ᾱ_T to 2⁻²⁴.
            let last = all.len() - 1;
            let a = 2f64.powi(-24);
            all[last] = ((1.0 - a) / a).sqrt();
        }
        let mut sigmas: Vec<f64> = timesteps.iter().map(|&ts| interp(ts, &all)).collect();
        sigmas.push(0.0);
        let max = sigmas.iter().copied().fold(0.0, f64::max);
        let init_sigma = match cfg.spacing {
            Spacing::Linspace | Spacing::Trailing => max,
            Spacing::Leading => (max * max + 1.0).sqrt(),
        };
        Self { prediction: cfg.prediction, timesteps, sigmas, init_sigma, ancestral, denoised: None }
    }
}

impl Sampler for Euler {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.init_sigma
    }

    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        Ok((x / (s * s + 1.0).sqrt())?)
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, noise: &mut NoiseFn) -> Result<Tensor> {
        let sigma = self.sigmas[i];
        let next = self.sigmas[i + 1];
        let x0 = match self.prediction {
            Prediction::Epsilon => (x - (output * sigma)?)?,
            Prediction::VPrediction => {
                let c = sigma * sigma + 1.0;
                ((output * (-sigma / c.sqrt()))? + (x / c)?)?
            }
        };
        let derivative = ((x - &x0)? / sigma)?;
        self.denoised = Some(x0);
        if !self.ancestral {
            return Ok((x + (derivative * (next - sigma))?)?);
        }
        let up = (next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt();
        let down = (next * next - up * up).sqrt();
        let stepped = (x + (derivative * (down - sigma))?)?;
        if up == 0.0 {
            return Ok(stepped);
        }
        Ok((stepped + (noise()? * up)?)?)
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        Ok((x0 + (noise * self.sigmas[i])?)?)
    }
}
