//! DDIM with η = 0, as diffusers' `DDIMScheduler`.

use candle_core::Tensor;

use super::{noise_to, predict_x0, NoiseFn, Sampler, ScheduleConfig};
use crate::error::Result;

pub struct Ddim {
    cfg: ScheduleConfig,
    timesteps: Vec<f64>,
    stride: usize,
    denoised: Option<Tensor>,
}

impl Ddim {
    pub fn new(cfg: ScheduleConfig, steps: usize) -> Self {
        let timesteps = cfg.discrete_timesteps(steps);
        let stride = cfg.train_steps / steps;
        Self { cfg, timesteps, stride, denoised: None }
    }

    fn alpha_bar(&self, t: f64) -> f64 {
        self.cfg.alphas_cumprod[t as usize]
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, _noise: &mut NoiseFn) -> Result<Tensor> {
        let t = self.timesteps[i];
        // diffusers steps back by T/n from the current timestep, whatever the spacing.
        let prev = t as i64 - self.stride as i64;
        let a_t = self.alpha_bar(t);
        let a_prev =
            if prev >= 0 { self.cfg.alphas_cumprod[prev as usize] } else { self.cfg.final_alpha_cumprod };
        let (mut x0, eps) = predict_x0(self.cfg.prediction, output, x, a_t)?;
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range as f32;
            x0 = x0.clamp(-r, r)?;
        }
        let next = noise_to(&x0, &eps, a_prev);
        self.denoised = Some(x0);
        next
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        noise_to(x0, noise, self.alpha_bar(self.timesteps[i]))
    }
}
