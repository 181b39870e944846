//! Samplers, each reproducing the diffusers scheduler built with `from_config(<the model's
//! scheduler_config.json>)`: DDIM, Euler, Euler ancestral, DPM++ 2M (plain and Karras) and LCM.
//!
//! A sampler owns its timesteps and any history it needs; the pipeline calls
//! `scale_model_input`, runs the UNet, then `step`. Step indices are absolute positions in the
//! full schedule, so img2img can start part-way through, as diffusers' `begin_index` does.

mod a1111;
mod ddim;
mod dpm;
mod euler;
mod lcm;
pub mod schedule;

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result, Setting};
pub use schedule::{Prediction, ScheduleConfig};

/// Supplies fresh standard-normal noise shaped like the latents (for ancestral steps).
pub type NoiseFn<'a> = dyn FnMut() -> Result<Tensor> + 'a;

/// The samplers Easel offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerKind {
    /// DDIM (η = 0).
    Ddim,
    /// Euler (Karras et al. 2022, deterministic).
    Euler,
    /// Euler ancestral.
    EulerA,
    /// DPM-Solver++ 2M.
    #[serde(rename = "dpmpp_2m")]
    DpmPp2m,
    /// DPM-Solver++ 2M with Karras sigmas.
    #[serde(rename = "dpmpp_2m_karras")]
    DpmPp2mKarras,
    /// Latent consistency model sampling.
    Lcm,
}

impl SamplerKind {
    /// Every sampler, in menu order.
    pub const ALL: [SamplerKind; 6] = [
        SamplerKind::Euler,
        SamplerKind::EulerA,
        SamplerKind::DpmPp2m,
        SamplerKind::DpmPp2mKarras,
        SamplerKind::Ddim,
        SamplerKind::Lcm,
    ];

    /// The command-line name (`dpmpp_2m_karras`).
    pub fn id(self) -> &'static str {
        match self {
            SamplerKind::Ddim => "ddim",
            SamplerKind::Euler => "euler",
            SamplerKind::EulerA => "euler_a",
            SamplerKind::DpmPp2m => "dpmpp_2m",
            SamplerKind::DpmPp2mKarras => "dpmpp_2m_karras",
            SamplerKind::Lcm => "lcm",
        }
    }

    /// A1111's sampler and schedule names, as its `parameters` text writes them (A1111 1.10
    /// reads "Automatic" for DPM++ 2M as Karras, so the plain one is written "Uniform").
    pub fn a1111_names(self) -> (&'static str, &'static str) {
        match self {
            SamplerKind::Ddim => ("DDIM", "Automatic"),
            SamplerKind::Euler => ("Euler", "Automatic"),
            SamplerKind::EulerA => ("Euler a", "Automatic"),
            SamplerKind::DpmPp2m => ("DPM++ 2M", "Uniform"),
            SamplerKind::DpmPp2mKarras => ("DPM++ 2M", "Karras"),
            SamplerKind::Lcm => ("LCM", "Automatic"),
        }
    }

    /// The sampler A1111 text names, from its sampler and (optional) schedule fields. A text with
    /// a `Schedule type` field comes from A1111 1.9 or later, where DPM++ 2M's automatic schedule
    /// is Karras; older texts wrote "DPM++ 2M Karras" for that and "DPM++ 2M" for the uniform one.
    pub fn from_a1111(sampler: &str, schedule: Option<&str>) -> Option<Self> {
        let base = sampler.trim().trim_end_matches(" Karras");
        let karras = match schedule.map(str::trim) {
            _ if sampler.trim().ends_with(" Karras") => true,
            Some("Karras") => true,
            Some("Automatic") => base == "DPM++ 2M",
            _ => false,
        };
        Some(match (base, karras) {
            ("DDIM", _) => SamplerKind::Ddim,
            ("Euler", _) => SamplerKind::Euler,
            ("Euler a", _) => SamplerKind::EulerA,
            ("DPM++ 2M", false) => SamplerKind::DpmPp2m,
            ("DPM++ 2M", true) => SamplerKind::DpmPp2mKarras,
            ("LCM", _) => SamplerKind::Lcm,
            _ => return None,
        })
    }

    /// Builds the sampler for `steps` inference steps from a scheduler config object, as
    /// `implementation` runs it.
    pub fn build_as(
        self,
        config: &Map<String, Value>,
        steps: usize,
        implementation: SamplerImpl,
    ) -> Result<Box<dyn Sampler>> {
        if implementation == SamplerImpl::Diffusers {
            return self.build(config, steps);
        }
        if steps == 0 || steps > 1000 {
            return Err(Error::setting(Setting::Steps, format!("{steps} must be between 1 and 1000")));
        }
        // A1111 reads only the betas and the prediction from the model; its samplers bring
        // their own schedules.
        let cfg = ScheduleConfig::from_json(config, SamplerKind::Euler)?;
        if cfg.train_steps != 1000 {
            return Err(Error::Unsupported(format!(
                "A1111's samplers assume 1000 training timesteps; this model has {}; use --sampler-impl diffusers",
                cfg.train_steps
            )));
        }
        Ok(match self {
            SamplerKind::Ddim => Box::new(a1111::Ddim::new(&cfg, steps)),
            SamplerKind::Lcm => Box::new(a1111::KDiffusion::lcm(&cfg, steps)),
            _ => Box::new(a1111::KDiffusion::new(self, &cfg, steps)),
        })
    }

    /// Builds the sampler for `steps` inference steps from a scheduler config object.
    pub fn build(self, config: &Map<String, Value>, steps: usize) -> Result<Box<dyn Sampler>> {
        if steps == 0 {
            return Err(Error::setting(Setting::Steps, "must be at least 1"));
        }
        let cfg = ScheduleConfig::from_json(config, self)?;
        if steps > cfg.train_steps {
            return Err(Error::setting(
                Setting::Steps,
                format!("{steps} is more than the model's {} training timesteps", cfg.train_steps),
            ));
        }
        Ok(match self {
            SamplerKind::Ddim => Box::new(ddim::Ddim::new(cfg, steps)),
            SamplerKind::Euler => Box::new(euler::Euler::new(cfg, steps, false)),
            SamplerKind::EulerA => Box::new(euler::Euler::new(cfg, steps, true)),
            SamplerKind::DpmPp2m => Box::new(dpm::DpmPp2m::new(cfg, steps, false)),
            SamplerKind::DpmPp2mKarras => Box::new(dpm::DpmPp2m::new(cfg, steps, true)),
            SamplerKind::Lcm => Box::new(lcm::Lcm::new(cfg, steps)?),
        })
    }
}

impl fmt::Display for SamplerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for SamplerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        SamplerKind::ALL.into_iter().find(|k| k.id() == s).ok_or_else(|| {
            let names: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.id()).collect();
            Error::setting(
                Setting::Sampler,
                format!("{s:?} is an unknown sampler; choose one of {}", names.join(", ")),
            )
        })
    }
}

/// Whose implementation of a sampler runs: diffusers' schedulers (Easel's reference) or
/// A1111's (k-diffusion's σ schedules and A1111's DDIM and LCM), which reproduce A1111's pictures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerImpl {
    /// diffusers' schedulers, configured by the model's `scheduler_config.json`.
    #[default]
    Diffusers,
    /// AUTOMATIC1111's samplers.
    A1111,
}

impl SamplerImpl {
    /// The command-line name.
    pub fn id(self) -> &'static str {
        match self {
            SamplerImpl::Diffusers => "diffusers",
            SamplerImpl::A1111 => "a1111",
        }
    }
}

impl fmt::Display for SamplerImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

impl FromStr for SamplerImpl {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "diffusers" => Ok(SamplerImpl::Diffusers),
            "a1111" => Ok(SamplerImpl::A1111),
            _ => Err(Error::setting(
                Setting::Sampler,
                format!("{s:?} is not a sampler implementation; choose diffusers or a1111"),
            )),
        }
    }
}

/// One denoising schedule in progress.
pub trait Sampler: Send {
    /// The timesteps the UNet is called at, highest noise first.
    fn timesteps(&self) -> &[f64];
    /// The factor diffusers multiplies `latents=` (unit noise) by before the first step: 1 for
    /// the samplers that work on the VP latents, σ_max for Euler's.
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }
    /// Scales the latents before they go into the UNet at step `i` (only Euler's σ-scaled
    /// latents need it).
    fn scale_model_input(&self, x: &Tensor, _i: usize) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// Advances the latents from step `i` to step `i + 1` given the UNet's output.
    fn step(&mut self, model_output: &Tensor, i: usize, x: &Tensor, noise: &mut NoiseFn) -> Result<Tensor>;
    /// The first step img2img runs at `strength`: diffusers runs the last `⌊steps·strength⌋`.
    fn img2img_start(&self, strength: f64) -> usize {
        let total = self.timesteps().len();
        total - ((total as f64 * strength).floor() as usize).min(total)
    }
    /// Noises clean latents to the level of step `i` (img2img's start and inpainting's blend).
    fn add_noise(&self, x0: &Tensor, noise: &Tensor, i: usize) -> Result<Tensor>;
    /// The clean latents (x̂₀) the last `step` predicted, for previews: a forming picture where
    /// the latents themselves are still mostly noise. `None` before the first step.
    fn denoised(&self) -> Option<&Tensor>;
}

/// x₀ predicted from a discrete-time model output at ᾱ, as DDIM and LCM compute it.
pub(crate) fn predict_x0(
    prediction: Prediction,
    output: &Tensor,
    x: &Tensor,
    alpha_bar: f64,
) -> Result<(Tensor, Tensor)> {
    let (a, b) = (alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt());
    Ok(match prediction {
        Prediction::Epsilon => (((x - (output * b)?)? / a)?, output.clone()),
        Prediction::VPrediction => (((x * a)? - (output * b)?)?, ((output * a)? + (x * b)?)?),
    })
}

/// `√ᾱ·x₀ + √(1−ᾱ)·ε`.
pub(crate) fn noise_to(x0: &Tensor, noise: &Tensor, alpha_bar: f64) -> Result<Tensor> {
    Ok(((x0 * alpha_bar.sqrt())? + (noise * (1.0 - alpha_bar).sqrt())?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sampler_exposes_the_clean_latents_a_perfect_prediction_implies() -> Result<()> {
        use candle_core::{DType, Device};
        // An empty scheduler config: SD 1.5's defaults (scaled-linear betas, ε-prediction).
        let config = Map::new();
        let x0 = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 2, 2, 2))?.affine(0.25, -1.0)?;
        let eps = Tensor::arange(0f32, 8.0, &Device::Cpu)?.reshape((1, 2, 2, 2))?.affine(-0.5, 1.5)?;
        for kind in SamplerKind::ALL {
            let mut sampler = kind.build(&config, 10)?;
            assert!(sampler.denoised().is_none(), "{kind}: nothing before the first step");
            let i = 2;
            let x = sampler.add_noise(&x0, &eps, i)?;
            let mut noise = || Ok(Tensor::zeros((1, 2, 2, 2), DType::F32, &Device::Cpu)?);
            sampler.step(&eps, i, &x, &mut noise)?;
            let got = sampler.denoised().expect("after a step");
            let err = (got - &x0)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // LCM blends in a sliver of the input (c_skip ≈ 1e-5 at this timestep).
            assert!(err < 1e-3, "{kind}: x̂₀ is off by {err}");
        }
        Ok(())
    }

    #[test]
    fn lcm_takes_dmd2s_timesteps_when_trailing_is_asked_for() -> Result<()> {
        let mut config = Map::new();
        assert_eq!(SamplerKind::Lcm.build(&config, 4)?.timesteps(), [999.0, 759.0, 499.0, 259.0]);
        config.insert("timestep_spacing".into(), "trailing".into());
        assert_eq!(SamplerKind::Lcm.build(&config, 4)?.timesteps(), [999.0, 749.0, 499.0, 249.0]);
        assert_eq!(SamplerKind::Euler.build(&config, 4)?.timesteps(), [999.0, 749.0, 499.0, 249.0]);
        Ok(())
    }

    #[test]
    fn unknown_sampler_names_the_choices() {
        let err = "dpm_fast".parse::<SamplerKind>().expect_err("unknown");
        assert!(err.to_string().contains("dpmpp_2m_karras"));
    }

    #[test]
    fn json_names_are_the_command_line_names() {
        for kind in SamplerKind::ALL {
            assert_eq!(serde_json::to_string(&kind).expect("serialises"), format!("\"{}\"", kind.id()));
        }
    }

    #[test]
    fn a1111_names_round_trip() {
        for kind in SamplerKind::ALL {
            let (sampler, schedule) = kind.a1111_names();
            assert_eq!(SamplerKind::from_a1111(sampler, Some(schedule)), Some(kind));
        }
        assert_eq!(SamplerKind::from_a1111("DPM++ 2M Karras", None), Some(SamplerKind::DpmPp2mKarras));
    }
}
