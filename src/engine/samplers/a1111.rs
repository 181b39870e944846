//! The samplers as AUTOMATIC1111 runs them: k-diffusion's Euler, Euler ancestral and DPM++ 2M
//! over `CompVisDenoiser`'s continuous σ (timesteps interpolated in log σ, so the UNet sees
//! fractional timesteps), with A1111's σ schedules (k-diffusion's uniform `get_sigmas`, or
//! Karras); A1111's own DDIM (`sd_samplers_timesteps_impl.ddim`: timesteps `1, 1+c, …` with
//! `c = 1000 // steps`, one UNet call fewer than the list is long, ending at ᾱ₁); and A1111's LCM
//! (`sd_samplers_lcm`: 50 distilled levels, quantised timesteps, boundary-condition scalings).

use candle_core::Tensor;

use super::schedule::linspace;
use super::{NoiseFn, Prediction, Sampler, SamplerKind, ScheduleConfig};
use crate::error::Result;

/// The model's discrete noise levels as k-diffusion's `DiscreteSchedule` holds them.
struct Levels {
    log_sigmas: Vec<f64>,
}

impl Levels {
    fn new(alphas_cumprod: &[f64]) -> Self {
        let last = alphas_cumprod.len() - 1;
        let log_sigmas = alphas_cumprod
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                // The model keeps ᾱ in f32; a zero-terminal-SNR schedule is pinned finite, as
                // diffusers pins it.
                let a = if i == last && a <= 0.0 { 2f64.powi(-24) } else { a as f32 as f64 };
                (((1.0 - a) / a).sqrt() as f32 as f64).ln()
            })
            .collect();
        Self { log_sigmas }
    }

    fn sigma_min(&self) -> f64 {
        self.log_sigmas[0].exp()
    }

    fn sigma_max(&self) -> f64 {
        self.log_sigmas[self.log_sigmas.len() - 1].exp()
    }

    /// `t_to_sigma`: log-linear interpolation between neighbouring levels.
    fn t_to_sigma(&self, t: f64) -> f64 {
        let (lo, hi) = (t.floor() as usize, t.ceil() as usize);
        let w = t - t.floor();
        ((1.0 - w) * self.log_sigmas[lo] + w * self.log_sigmas[hi]).exp()
    }

    /// `sigma_to_t` without quantising: where σ falls between levels.
    fn sigma_to_t(&self, sigma: f64) -> f64 {
        let log_sigma = sigma.ln();
        let n = self.log_sigmas.len();
        // The last level at or below log σ, kept one short of the end.
        let low = self.log_sigmas.iter().rposition(|&l| log_sigma - l >= 0.0).unwrap_or(0).min(n - 2);
        let (lo, hi) = (self.log_sigmas[low], self.log_sigmas[low + 1]);
        let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
        (1.0 - w) * low as f64 + w * (low + 1) as f64
    }

    /// k-diffusion's `get_sigmas(n)`: timesteps evenly from the last level to the first.
    fn uniform(&self, n: usize) -> Vec<f64> {
        let t_max = (self.log_sigmas.len() - 1) as f64;
        let mut s: Vec<f64> =
            linspace(t_max, 0.0, n).into_iter().map(|t| self.t_to_sigma(t as f32 as f64)).collect();
        s.push(0.0);
        s
    }

    /// `get_sigmas_karras(n, σ_min, σ_max, ρ = 7)`.
    fn karras(&self, n: usize) -> Vec<f64> {
        let rho = 7.0;
        let (min_inv, max_inv) = (self.sigma_min().powf(1.0 / rho), self.sigma_max().powf(1.0 / rho));
        let mut s: Vec<f64> = linspace(0.0, 1.0, n)
            .into_iter()
            .map(|r| (max_inv + r * (min_inv - max_inv)).powf(rho))
            .collect();
        s.push(0.0);
        s
    }
}

/// Which solver.
#[derive(Clone, Copy, PartialEq)]
enum Solver {
    Euler,
    EulerAncestral,
    DpmPp2m,
    /// A1111's `sample_lcm`: the boundary-condition scaled prediction, re-noised to the next σ.
    Lcm,
}

/// Euler, Euler a, DPM++ 2M and LCM on σ (LCM's from its 50 distilled levels).
pub struct KDiffusion {
    solver: Solver,
    prediction: Prediction,
    sigmas: Vec<f64>,
    timesteps: Vec<f64>,
    old_denoised: Option<Tensor>,
    denoised: Option<Tensor>,
}

impl KDiffusion {
    pub fn new(kind: SamplerKind, cfg: &ScheduleConfig, steps: usize) -> Self {
        let levels = Levels::new(&cfg.alphas_cumprod);
        let (solver, sigmas) = match kind {
            SamplerKind::EulerA => (Solver::EulerAncestral, levels.uniform(steps)),
            SamplerKind::DpmPp2m => (Solver::DpmPp2m, levels.uniform(steps)),
            SamplerKind::DpmPp2mKarras => (Solver::DpmPp2m, levels.karras(steps)),
            _ => (Solver::Euler, levels.uniform(steps)),
        };
        let timesteps = sigmas[..steps].iter().map(|&s| levels.sigma_to_t(s)).collect();
        Self { solver, prediction: cfg.prediction, sigmas, timesteps, old_denoised: None, denoised: None }
    }

    /// The clean latents the model's output implies (`CompVisDenoiser` / `CompVisVDenoiser`).
    fn denoise(&self, output: &Tensor, x: &Tensor, sigma: f64) -> Result<Tensor> {
        Ok(match self.prediction {
            Prediction::Epsilon => (x - (output * sigma)?)?,
            Prediction::VPrediction => {
                let s2 = sigma * sigma + 1.0;
                ((output * (-sigma / s2.sqrt()))? + (x * (1.0 / s2))?)?
            }
        })
    }
}

impl Sampler for KDiffusion {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        self.sigmas[0]
    }

    fn scale_model_input(&self, x: &Tensor, i: usize) -> Result<Tensor> {
        let s = self.sigmas[i];
        Ok((x / (s * s + 1.0).sqrt())?)
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, noise: &mut NoiseFn) -> Result<Tensor> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let denoised = self.denoise(output, x, sigma)?;
        let derivative =
            |to: f64| -> Result<Tensor> { Ok((x + ((x - &denoised)? * ((to - sigma) / sigma))?)?) };
        let out = match self.solver {
            Solver::Euler => derivative(next)?,
            Solver::EulerAncestral => {
                let up = next.min((next * next * (sigma * sigma - next * next) / (sigma * sigma)).sqrt());
                let down = (next * next - up * up).sqrt();
                let moved = derivative(down)?;
                if next > 0.0 {
                    (moved + (noise()? * up)?)?
                } else {
                    moved
                }
            }
            Solver::DpmPp2m => {
                let t = |s: f64| -s.ln();
                let h = t(next) - t(sigma);
                let ratio = next / sigma;
                let coeff = -(-h).exp_m1();
                let blended = match (&self.old_denoised, i) {
                    (Some(old), i) if i > 0 && next > 0.0 => {
                        let r = (t(sigma) - t(self.sigmas[i - 1])) / h;
                        ((&denoised * (1.0 + 1.0 / (2.0 * r)))? - (old * (1.0 / (2.0 * r)))?)?
                    }
                    _ => denoised.clone(),
                };
                if next == 0.0 {
                    denoised.clone()
                } else {
                    ((x * ratio)? + (blended * coeff)?)?
                }
            }
            // Its own scalings, which keep the clean latents themselves.
            Solver::Lcm => return self.lcm_step(output, i, x, noise),
        };
        self.old_denoised = Some(denoised.clone());
        self.denoised = Some(denoised);
        Ok(out)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        Ok((x0 + (noise * self.sigmas[i])?)?)
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
    }

    fn img2img_start(&self, strength: f64) -> usize {
        a1111_img2img_start(self.timesteps.len(), strength)
    }
}

/// A1111's img2img start for σ samplers: `t_enc = int(min(strength, 0.999)·steps)` steps plus one.
fn a1111_img2img_start(steps: usize, strength: f64) -> usize {
    let t_enc = (strength.min(0.999) * steps as f64) as usize;
    steps.saturating_sub(t_enc + 1)
}

/// A1111's DDIM (η = 0).
pub struct Ddim {
    prediction: Prediction,
    /// ᾱ at each UNet call, and ᾱ after it.
    alphas: Vec<(f64, f64)>,
    timesteps: Vec<f64>,
    denoised: Option<Tensor>,
}

impl Ddim {
    pub fn new(cfg: &ScheduleConfig, steps: usize) -> Self {
        let ac = |t: usize| cfg.alphas_cumprod[t.min(cfg.alphas_cumprod.len() - 1)] as f32 as f64;
        let c = (1000 / steps).max(1);
        let list: Vec<usize> = (0..1000).step_by(c).map(|t| (t + 1).min(999)).collect();
        let mut alphas = Vec::new();
        let mut timesteps = Vec::new();
        for index in (1..list.len()).rev() {
            timesteps.push(list[index] as f64);
            alphas.push((ac(list[index]), ac(list[index - 1])));
        }
        Self { prediction: cfg.prediction, alphas, timesteps, denoised: None }
    }
}

impl Sampler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn step(&mut self, output: &Tensor, i: usize, x: &Tensor, _noise: &mut NoiseFn) -> Result<Tensor> {
        let (a, prev) = self.alphas[i];
        let (x0, eps) = super::predict_x0(self.prediction, output, x, a)?;
        let out = ((&x0 * prev.sqrt())? + (&eps * (1.0 - prev).sqrt())?)?;
        self.denoised = Some(x0);
        Ok(out)
    }

    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor> {
        super::noise_to(x0, noise, self.alphas[i].0)
    }

    fn denoised(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
    }

    fn img2img_start(&self, strength: f64) -> usize {
        a1111_img2img_start(self.timesteps.len(), strength)
    }
}

/// LCM's distillation levels and the training-step gap between them.
const LCM_LEVELS: usize = 50;

impl KDiffusion {
    /// A1111's LCM (`LCMCompVisDenoiser`): the 50 levels LCM was distilled on, timesteps
    /// quantised to them.
    pub fn lcm(cfg: &ScheduleConfig, steps: usize) -> Self {
        let skip = 1000 / LCM_LEVELS;
        let valid: Vec<f64> =
            (0..LCM_LEVELS).map(|j| cfg.alphas_cumprod[(skip - 1 + skip * j).min(999)]).collect();
        let levels = Levels::new(&valid);
        // Quantised: the nearest level in log σ, back on the 1000-step scale.
        let to_t = |sigma: f64| -> f64 {
            let l = sigma.ln();
            let (mut best, mut dist) = (0, f64::INFINITY);
            for (i, &ls) in levels.log_sigmas.iter().enumerate() {
                if (l - ls).abs() < dist {
                    (best, dist) = (i, (l - ls).abs());
                }
            }
            (best * skip + skip - 1) as f64
        };
        let (start, end) = (to_t(levels.sigma_max()), to_t(levels.sigma_min()));
        let last = (LCM_LEVELS - 1) as f64;
        let mut sigmas: Vec<f64> = linspace(start, end, steps)
            .into_iter()
            .map(|t| {
                levels.t_to_sigma((((t as f32 as f64) - (skip - 1) as f64) / skip as f64).clamp(0.0, last))
            })
            .collect();
        sigmas.push(0.0);
        let timesteps = sigmas[..steps].iter().map(|&s| to_t(s)).collect();
        Self {
            solver: Solver::Lcm,
            prediction: Prediction::Epsilon,
            sigmas,
            timesteps,
            old_denoised: None,
            denoised: None,
        }
    }

    fn lcm_step(&mut self, output: &Tensor, i: usize, x: &Tensor, noise: &mut NoiseFn) -> Result<Tensor> {
        let (sigma, next) = (self.sigmas[i], self.sigmas[i + 1]);
        let scaled = self.timesteps[i] * 10.0;
        let c_skip = 0.25 / (scaled * scaled + 0.25);
        let c_out = scaled / (scaled * scaled + 0.25).sqrt();
        let x0 = (x - (output * sigma)?)?;
        let denoised = ((x0 * c_out)? + (x * c_skip)?)?;
        let out = if next > 0.0 { (&denoised + (noise()? * next)?)? } else { denoised.clone() };
        self.denoised = Some(denoised);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd_config() -> ScheduleConfig {
        ScheduleConfig::from_json(&serde_json::Map::new(), SamplerKind::Lcm).expect("defaults")
    }

    #[test]
    fn uniform_sigmas_span_the_models_levels() {
        let cfg = sd_config();
        let s = KDiffusion::new(SamplerKind::Euler, &cfg, 10);
        assert!((s.sigmas[0] - 14.6146).abs() < 1e-3, "{}", s.sigmas[0]);
        assert_eq!(s.sigmas.len(), 11);
        assert!((s.timesteps[0] - 999.0).abs() < 1e-3 && s.timesteps[9].abs() < 1e-3, "{:?}", s.timesteps);
    }

    #[test]
    fn ddim_calls_the_unet_one_time_fewer_than_its_list() {
        let d = Ddim::new(&sd_config(), 10);
        assert_eq!(d.timesteps, [901.0, 801.0, 701.0, 601.0, 501.0, 401.0, 301.0, 201.0, 101.0]);
    }

    #[test]
    fn lcm_quantises_to_its_fifty_levels() {
        let l = KDiffusion::lcm(&sd_config(), 4);
        assert_eq!(l.timesteps[0], 999.0);
        assert!(l.timesteps.iter().all(|t| (*t as usize + 1).is_multiple_of(20)), "{:?}", l.timesteps);
    }
}
