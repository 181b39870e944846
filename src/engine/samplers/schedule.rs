//! The noise schedule shared by every sampler, read from a model's `scheduler_config.json` the way
//! diffusers' `from_config` reads it: keys the file sets win, missing keys take the default of the
//! sampler being built (DDIM's `clip_sample` defaults to true, Euler's spacing to `linspace`, …).

use serde_json::{Map, Value};

use super::SamplerKind;
use crate::error::{Error, Result};

/// What the UNet predicts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prediction {
    /// The added noise (SD 1.x, SD 2.x base).
    Epsilon,
    /// The velocity `αε − σx₀` (SD 2.x 768 models).
    VPrediction,
}

impl Prediction {
    /// The spelling in scheduler configs and flags.
    pub fn id(self) -> &'static str {
        match self {
            Prediction::Epsilon => "epsilon",
            Prediction::VPrediction => "v_prediction",
        }
    }
}

impl std::str::FromStr for Prediction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "epsilon" => Ok(Prediction::Epsilon),
            "v_prediction" => Ok(Prediction::VPrediction),
            other => Err(Error::setting(
                crate::error::Setting::Prediction,
                format!("{other:?} is unknown; choose epsilon or v_prediction"),
            )),
        }
    }
}

/// How inference timesteps are spread over the training range (diffusers' `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Spacing {
    /// `linspace(0, T−1, n)`.
    Linspace,
    /// Multiples of `T / n` from 0, plus the offset.
    Leading,
    /// Multiples of `T / n` ending at `T−1`.
    Trailing,
}

impl Spacing {
    /// Every spacing.
    pub const ALL: [Spacing; 3] = [Spacing::Leading, Spacing::Linspace, Spacing::Trailing];

    /// The name diffusers' configs use.
    pub fn id(self) -> &'static str {
        match self {
            Spacing::Linspace => "linspace",
            Spacing::Leading => "leading",
            Spacing::Trailing => "trailing",
        }
    }
}

impl std::fmt::Display for Spacing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl std::str::FromStr for Spacing {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> crate::error::Result<Self> {
        Spacing::ALL.into_iter().find(|k| k.id() == s).ok_or_else(|| {
            crate::error::Error::setting(
                crate::error::Setting::Spacing,
                format!("{s:?} is unknown; choose leading, linspace or trailing"),
            )
        })
    }
}

/// Constants of a sampler, resolved from the model's scheduler config.
#[derive(Clone, Debug)]
pub struct ScheduleConfig {
    /// Training timesteps (1000 for every SD).
    pub train_steps: usize,
    /// ᾱ_t for t in 0..train_steps.
    pub alphas_cumprod: Vec<f64>,
    /// What the model predicts.
    pub prediction: Prediction,
    /// Timestep spacing.
    pub spacing: Spacing,
    /// Added to leading timesteps.
    pub steps_offset: usize,
    /// Clamp predicted x₀ to ±`clip_sample_range` (DDIM, LCM).
    pub clip_sample: bool,
    /// The clamp range.
    pub clip_sample_range: f64,
    /// ᾱ used after the last step: 1.0, or ᾱ₀.
    pub final_alpha_cumprod: f64,
    /// LCM: the step count of the distillation schedule.
    pub original_inference_steps: usize,
    /// LCM: the boundary-condition timestep scaling.
    pub timestep_scaling: f64,
    /// Whether betas were rescaled to zero terminal SNR.
    pub zero_snr: bool,
}

struct Defaults {
    beta_start: f64,
    beta_end: f64,
    beta_schedule: &'static str,
    spacing: &'static str,
    clip_sample: bool,
    set_alpha_to_one: bool,
}

fn defaults(kind: SamplerKind) -> Defaults {
    let base = Defaults {
        beta_start: 0.0001,
        beta_end: 0.02,
        beta_schedule: "linear",
        spacing: "linspace",
        clip_sample: false,
        set_alpha_to_one: true,
    };
    match kind {
        SamplerKind::Ddim => Defaults { spacing: "leading", clip_sample: true, ..base },
        SamplerKind::Lcm => Defaults {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: "scaled_linear",
            spacing: "leading",
            ..base
        },
        _ => base,
    }
}

impl ScheduleConfig {
    /// Resolves the constants for `kind` from a scheduler config object.
    pub fn from_json(config: &Map<String, Value>, kind: SamplerKind) -> Result<Self> {
        let d = defaults(kind);
        let num = |k: &str, default: f64| config.get(k).and_then(Value::as_f64).unwrap_or(default);
        let flag = |k: &str, default: bool| config.get(k).and_then(Value::as_bool).unwrap_or(default);
        let text = |k: &str, default: &'static str| {
            config.get(k).and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| default.to_string())
        };
        let bad = |what: String| Error::Unsupported(format!("the scheduler config is not usable: {what}"));
        let train_steps = num("num_train_timesteps", 1000.0);
        if !(2.0..=MAX_TRAIN_STEPS as f64).contains(&train_steps) {
            return Err(bad(format!(
                "num_train_timesteps {train_steps} is not between 2 and {MAX_TRAIN_STEPS}"
            )));
        }
        let train_steps = train_steps as usize;
        // Offsets and the LCM origin schedule index the training timesteps, so they must lie
        // within them (a hostile 1e30 overflowed; 5000 indexed past the end).
        let within = |key: &str, default: f64, least: f64| {
            let v = num(key, default.min(train_steps as f64));
            match v.is_finite() && v >= least && v <= train_steps as f64 {
                true => Ok(v as usize),
                false => Err(bad(format!(
                    "{key} {v} is not between {least} and num_train_timesteps ({train_steps})"
                ))),
            }
        };
        let steps_offset = within("steps_offset", 0.0, 0.0)?;
        let original_inference_steps = within("original_inference_steps", 50.0, 1.0)?;
        for key in ["beta_start", "beta_end", "clip_sample_range", "timestep_scaling"] {
            if let Some(v) = config.get(key).and_then(Value::as_f64).filter(|v| !v.is_finite()) {
                return Err(bad(format!("{key} {v} is not a finite number")));
            }
        }
        let mut betas = match config.get("trained_betas") {
            Some(Value::Array(values)) if !values.is_empty() => {
                let betas: Vec<f64> =
                    values.iter().filter_map(Value::as_f64).filter(|b| b.is_finite()).collect();
                if betas.len() != train_steps {
                    return Err(bad(format!(
                        "trained_betas holds {} finite numbers for {train_steps} training timesteps",
                        betas.len()
                    )));
                }
                betas
            }
            _ => make_betas(
                &text("beta_schedule", d.beta_schedule),
                num("beta_start", d.beta_start),
                num("beta_end", d.beta_end),
                train_steps,
            )?,
        };
        let zero_snr = flag("rescale_betas_zero_snr", false);
        if zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let mut alphas_cumprod = Vec::with_capacity(betas.len());
        let mut acc = 1.0;
        for b in &betas {
            acc *= 1.0 - b;
            alphas_cumprod.push(acc);
        }
        let prediction = text("prediction_type", "epsilon").parse::<Prediction>().map_err(|_| {
            Error::Unsupported(format!(
                "the scheduler config's prediction_type {:?} is not supported (epsilon or v_prediction)",
                text("prediction_type", "epsilon")
            ))
        })?;
        let spacing = match text("timestep_spacing", d.spacing).as_str() {
            "linspace" => Spacing::Linspace,
            "leading" => Spacing::Leading,
            "trailing" => Spacing::Trailing,
            other => {
                return Err(Error::Unsupported(format!(
                    "unknown timestep_spacing {other:?} in the scheduler config"
                )))
            }
        };
        let final_alpha_cumprod =
            if flag("set_alpha_to_one", d.set_alpha_to_one) { 1.0 } else { alphas_cumprod[0] };
        Ok(Self {
            train_steps,
            alphas_cumprod,
            prediction,
            spacing,
            steps_offset,
            clip_sample: flag("clip_sample", d.clip_sample),
            clip_sample_range: num("clip_sample_range", 1.0),
            final_alpha_cumprod,
            original_inference_steps,
            timestep_scaling: num("timestep_scaling", 10.0),
            zero_snr,
        })
    }

    /// σ_t = √((1−ᾱ)/ᾱ) for every training timestep.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod.iter().map(|a| ((1.0 - a) / a).sqrt()).collect()
    }

    /// Integer timesteps for DDIM-style samplers, highest first.
    pub fn discrete_timesteps(&self, steps: usize) -> Vec<f64> {
        let t = self.train_steps;
        match self.spacing {
            Spacing::Linspace => {
                linspace(0.0, (t - 1) as f64, steps).into_iter().rev().map(f64::round).collect()
            }
            Spacing::Leading => {
                // diffusers indexes past the schedule when the offset pushes the last timestep
                // beyond it (and fails); the last training timestep is used instead.
                let ratio = t / steps;
                (0..steps).rev().map(|i| (i * ratio + self.steps_offset).min(t - 1) as f64).collect()
            }
            Spacing::Trailing => trailing(t, steps),
        }
    }
}

/// The most training timesteps a scheduler config may declare (models use 1000; a hostile file
/// asked for 10¹³, which is 80 TB of betas).
pub const MAX_TRAIN_STEPS: usize = 100_000;

/// `n` evenly spaced values from `a` to `b` inclusive, as `np.linspace`.
pub fn linspace(a: f64, b: f64, n: usize) -> Vec<f64> {
    match n {
        0 => vec![],
        1 => vec![a],
        _ => (0..n).map(|i| a + (b - a) * i as f64 / (n - 1) as f64).collect(),
    }
}

/// `np.arange(T, 0, -T/n).round() - 1`.
pub fn trailing(train_steps: usize, steps: usize) -> Vec<f64> {
    let ratio = train_steps as f64 / steps as f64;
    (0..steps).map(|i| (train_steps as f64 - i as f64 * ratio).round() - 1.0).collect()
}

/// `np.interp(x, arange(len(ys)), ys)`.
pub fn interp(x: f64, ys: &[f64]) -> f64 {
    if x <= 0.0 {
        return ys[0];
    }
    let last = ys.len() - 1;
    if x >= last as f64 {
        return ys[last];
    }
    let lo = x.floor() as usize;
    let w = x - lo as f64;
    ys[lo] * (1.0 - w) + ys[lo + 1] * w
}

fn make_betas(schedule: &str, start: f64, end: f64, n: usize) -> Result<Vec<f64>> {
    Ok(match schedule {
        "linear" => linspace(start, end, n),
        "scaled_linear" => linspace(start.sqrt(), end.sqrt(), n).into_iter().map(|b| b * b).collect(),
        "squaredcos_cap_v2" => {
            let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
            (0..n)
                .map(|i| {
                    let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                    (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999)
                })
                .collect()
        }
        other => {
            return Err(Error::Unsupported(format!(
                "unknown beta_schedule {other:?} in the scheduler config"
            )))
        }
    })
}

fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let mut acc = 1.0;
    let mut sqrt_bar: Vec<f64> = betas
        .iter()
        .map(|b| {
            acc *= 1.0 - b;
            acc.sqrt()
        })
        .collect();
    let (first, last) = (sqrt_bar[0], sqrt_bar[sqrt_bar.len() - 1]);
    for v in &mut sqrt_bar {
        *v = (*v - last) * first / (first - last);
    }
    let bar: Vec<f64> = sqrt_bar.iter().map(|v| v * v).collect();
    let mut out = vec![1.0 - bar[0]];
    out.extend(bar.windows(2).map(|w| 1.0 - w[1] / w[0]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> Map<String, Value> {
        serde_json::from_str(
            r#"{"beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
                "num_train_timesteps": 1000, "set_alpha_to_one": false, "steps_offset": 1,
                "clip_sample": false}"#,
        )
        .expect("valid json")
    }

    #[test]
    fn ddim_reads_leading_spacing_with_offset() {
        let cfg = ScheduleConfig::from_json(&sd15(), SamplerKind::Ddim).expect("config");
        let ts = cfg.discrete_timesteps(12);
        assert_eq!(ts[0], 914.0);
        assert_eq!(ts[11], 1.0);
        assert!(!cfg.clip_sample);
        assert_eq!(cfg.final_alpha_cumprod, cfg.alphas_cumprod[0]);
    }

    #[test]
    fn hostile_schedules_are_refused_by_key_and_every_sampler_builds_from_the_rest() {
        let with = |key: &str, value: Value| {
            let mut json = sd15();
            json.insert(key.into(), value);
            json
        };
        for (key, value, expected) in [
            ("trained_betas", serde_json::json!(["x", "y"]), "trained_betas"),
            ("trained_betas", serde_json::json!([0.01]), "trained_betas"),
            ("steps_offset", serde_json::json!(1e30), "steps_offset"),
            ("steps_offset", serde_json::json!(5000), "steps_offset"),
            ("num_train_timesteps", serde_json::json!(1e13), "num_train_timesteps"),
            ("num_train_timesteps", serde_json::json!(1), "num_train_timesteps"),
            ("original_inference_steps", serde_json::json!(1e30), "original_inference_steps"),
            ("original_inference_steps", serde_json::json!(0), "original_inference_steps"),
        ] {
            for kind in [SamplerKind::Ddim, SamplerKind::Euler, SamplerKind::DpmPp2mKarras, SamplerKind::Lcm]
            {
                let err =
                    ScheduleConfig::from_json(&with(key, value.clone()), kind).expect_err(key).to_string();
                assert!(err.contains(expected) && err.contains("scheduler config"), "{err}");
            }
        }
        // An offset that pushes the last leading timestep past the schedule stays inside it.
        let cfg = ScheduleConfig::from_json(&with("steps_offset", serde_json::json!(999)), SamplerKind::Ddim)
            .expect("an offset within the schedule");
        assert!(cfg.discrete_timesteps(12).iter().all(|&t| t <= 999.0));
        let short =
            ScheduleConfig::from_json(&with("num_train_timesteps", serde_json::json!(2)), SamplerKind::Lcm)
                .expect("two timesteps");
        assert_eq!(short.original_inference_steps, 2, "LCM's default origin schedule fits inside");
        assert!(super::super::lcm::Lcm::new(short, 3).is_err(), "and LCM refuses more steps than it");
    }

    #[test]
    fn missing_keys_take_the_samplers_defaults() {
        let cfg = ScheduleConfig::from_json(&Map::new(), SamplerKind::Ddim).expect("config");
        assert!(cfg.clip_sample, "DDIM's default clip_sample is true");
        assert_eq!(cfg.spacing, Spacing::Leading);
        let euler = ScheduleConfig::from_json(&Map::new(), SamplerKind::Euler).expect("config");
        assert_eq!(euler.spacing, Spacing::Linspace);
    }

    #[test]
    fn sd15_alphas_match_diffusers() {
        let cfg = ScheduleConfig::from_json(&sd15(), SamplerKind::Euler).expect("config");
        // Values printed by diffusers 0.42 (DDIMScheduler(...).alphas_cumprod).
        assert!((cfg.alphas_cumprod[999] - 0.004_660_095).abs() < 1e-8);
        assert!((cfg.alphas_cumprod[0] - 0.999_15).abs() < 1e-7);
    }

    #[test]
    fn zero_snr_ends_at_zero() {
        let mut json = sd15();
        json.insert("rescale_betas_zero_snr".into(), Value::Bool(true));
        let cfg = ScheduleConfig::from_json(&json, SamplerKind::Ddim).expect("config");
        assert!(cfg.alphas_cumprod[999].abs() < 1e-12);
    }
}
