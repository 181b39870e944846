//! Latent consistency sampling, as diffusers' `LCMScheduler`: each step predicts the clean
//! latents through the consistency boundary condition, then re-noises to the next timestep.

use candle_core::Tensor;

use super::schedule::{trailing, Spacing};
use super::{noise_to, predict_x0, NoiseFn, Sampler, ScheduleConfig};
use crate::error::{Error, Result, Setting};

pub struct Lcm {
    cfg: ScheduleConfig,
    timesteps: Vec<f64>,
    denoised: Option<Tensor>,
}

impl Lcm {
    pub fn new(cfg: ScheduleConfig, steps: usize) -> Result<Self> {
        let original = cfg.original_inference_steps;
        if steps > original {
            return Err(Error::setting(
                Setting::Steps,
                format!("{steps} is too many for LCM: it takes at most {original} (the schedule it was distilled on)"),
            ));
        }
        let timesteps = if cfg.spacing == Spacing::Trailing {
            // Asked for explicitly (LCM configs say leading): the even steps down from the last
            // timestep that DMD2 publishes (999, 749, 499, 249 for four).
            trailing(cfg.train_steps, steps)
        } else {
            let k = cfg.train_steps / original;
            let origin: Vec<usize> = (1..=original).rev().map(|i| i * k - 1).collect();
            (0..steps)
                .map(|i| origin[(i as f64 * origin.len() as f64 / steps as f64).floor() as usize] as f64)
                .collect()
        };
        Ok(Self { cfg, timesteps, denoised: None })
    }
}

impl Sampler for Lcm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, noise: &mut NoiseFn) -> Result<Tensor> {
        let t = self.timesteps[i];
        let a_t = self.cfg.alphas_cumprod[t as usize];
        let (mut x0, _) = predict_x0(self.cfg.prediction, output, x, a_t)?;
        if self.cfg.clip_sample {
            let r = self.cfg.clip_sample_range as f32;
            x0 = x0.clamp(-r, r)?;
        }
        let scaled = t * self.cfg.timestep_scaling;
        let sigma_data2 = 0.25;
        let c_skip = sigma_data2 / (scaled * scaled + sigma_data2);
        let c_out = scaled / (scaled * scaled + sigma_data2).sqrt();
        let denoised = ((x0 * c_out)? + (x * c_skip)?)?;
        self.denoised = Some(denoised.clone());
        match self.timesteps.get(i + 1) {
            Some(&next) => noise_to(&denoised, &noise()?, self.cfg.alphas_cumprod[next as usize]),
            None => Ok(denoised),
        }
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        noise_to(x0, noise, self.cfg.alphas_cumprod[self.timesteps[i] as usize])
    }
}
