//! ControlNet units: what a request asks for (model, picture, weight, the part of the steps it
//! acts on, how it weighs against the prompt, how its picture is fitted) and, at run time, the
//! residuals each step's UNet pass receives from every unit active at that step.

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::ControlNet;
use crate::engine::conditioning::Conditioning;
use crate::engine::preprocess::ControlMap;
pub use crate::engine::preprocess::{Preprocessor, ResizeMode};
use crate::engine::samplers::SamplerImpl;
use crate::engine::unet::Residuals;
use crate::error::{Error, Result, Setting};

/// How a unit weighs against the prompt.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlMode {
    /// Every residual at the unit's weight, on the prompt and the negative alike (A1111's
    /// "Balanced", diffusers' default).
    #[default]
    Balanced,
    /// Residuals fading towards the outer skips (×0.825 per level), on both (A1111's "My prompt is
    /// more important").
    Prompt,
    /// The fading residuals on the prompt's pass only, so guidance pushes towards the map (A1111's
    /// "ControlNet is more important").
    Control,
    /// diffusers' guess mode: residuals from ×0.1 at the outermost skip to ×1 at the middle, on the
    /// prompt's pass only.
    Guess,
}

impl ControlMode {
    /// Every mode, in menu order.
    pub const ALL: [ControlMode; 4] =
        [ControlMode::Balanced, ControlMode::Prompt, ControlMode::Control, ControlMode::Guess];

    /// The CLI's spelling.
    pub fn id(self) -> &'static str {
        match self {
            ControlMode::Balanced => "balanced",
            ControlMode::Prompt => "prompt",
            ControlMode::Control => "control",
            ControlMode::Guess => "guess",
        }
    }

    /// A1111's name (guess mode is diffusers' own; Easel writes it under its id).
    pub fn a1111_name(self) -> &'static str {
        match self {
            ControlMode::Balanced => "Balanced",
            ControlMode::Prompt => "My prompt is more important",
            ControlMode::Control => "ControlNet is more important",
            ControlMode::Guess => "Guess mode",
        }
    }

    /// Reads the CLI's or A1111's spelling.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|m| m.id().eq_ignore_ascii_case(s) || m.a1111_name().eq_ignore_ascii_case(s))
    }

    /// Whether the negative prompt's pass goes without this unit.
    fn prompt_pass_only(self) -> bool {
        matches!(self, ControlMode::Control | ControlMode::Guess)
    }

    /// The factor of each of `n` residuals (the skips outermost first, then the middle block).
    /// A1111's soft weights are `0.825^(12 − i)` whatever `n` is: SD 1.x's thirteen end at 1, SDXL's
    /// ten (A1111 keeps the first ten of the list) at 0.825³.
    pub fn scales(self, weight: f64, n: usize) -> Vec<f64> {
        let last = n.saturating_sub(1) as f64;
        (0..n)
            .map(|i| match self {
                ControlMode::Balanced => weight,
                ControlMode::Prompt | ControlMode::Control => weight * 0.825f64.powi(12 - i as i32),
                // torch.logspace(-1, 0, n): 10^(−1 + i/(n−1)).
                ControlMode::Guess => weight * 10f64.powf(-1.0 + i as f64 / last.max(1.0)),
            })
            .collect()
    }
}

/// One ControlNet unit of a request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ControlSpec {
    /// The ControlNet: a diffusers folder or a single file.
    pub model: PathBuf,
    /// The picture the map is made from; none means the studio's canvas.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PathBuf>,
    /// Conditioning scale (0–2).
    pub weight: f64,
    /// Fraction of the steps before the unit starts acting (0–1).
    pub start: f64,
    /// Fraction of the steps after which it stops (0–1, after `start`).
    pub end: f64,
    /// How the picture becomes the map.
    pub preprocess: Preprocessor,
    /// How it weighs against the prompt.
    pub mode: ControlMode,
    /// How a picture of another shape is fitted.
    pub resize: ResizeMode,
}

impl Default for ControlSpec {
    fn default() -> Self {
        Self {
            model: PathBuf::new(),
            image: None,
            weight: 1.0,
            start: 0.0,
            end: 1.0,
            preprocess: Preprocessor::None,
            mode: ControlMode::Balanced,
            resize: ResizeMode::Crop,
        }
    }
}

/// The largest weight a unit takes (A1111's slider ends there too).
pub const MAX_WEIGHT: f64 = 2.0;

impl ControlSpec {
    /// Refuses a unit that cannot run, in one sentence naming it (`index` counts from 0, as A1111).
    pub fn check(&self, index: usize) -> Result<()> {
        let bad = |m: String| Err(Error::setting(Setting::Control, format!("unit {index}: {m}")));
        if self.model.as_os_str().is_empty() {
            return bad("has no ControlNet model; choose one".into());
        }
        if !(self.weight.is_finite() && (0.0..=MAX_WEIGHT).contains(&self.weight)) {
            return bad(format!("weight {} is out of range; use 0 to {MAX_WEIGHT}", self.weight));
        }
        for (name, v) in [("start", self.start), ("end", self.end)] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return bad(format!("{name} {v} is out of range; it is a fraction of the steps, 0 to 1"));
            }
        }
        if self.end <= self.start {
            return bad(format!(
                "ends ({}) before it starts ({}); end must be after start",
                self.end, self.start
            ));
        }
        self.preprocess.check().map_err(|e| match e {
            Error::InvalidSetting { message, .. } => {
                Error::setting(Setting::Control, format!("unit {index}: {message}"))
            }
            other => other,
        })
    }
}

/// A unit ready to run: its network, its map as a `[1, 3, h, w]` tensor, and its settings.
pub struct ControlInput {
    /// The network.
    pub net: Arc<ControlNet>,
    hint: Tensor,
    /// The hint encoder's output, made at the first step and reused by the others.
    embedded: std::sync::OnceLock<Tensor>,
    weight: f64,
    start: f64,
    end: f64,
    mode: ControlMode,
}

impl ControlInput {
    /// Makes `map` the network's input (in [0, 1], −1 where masked, channels as the model reads them).
    pub fn new(
        net: Arc<ControlNet>,
        map: &ControlMap,
        spec: &ControlSpec,
        device: &candle_core::Device,
    ) -> Result<Self> {
        let (w, h) = map.image.dimensions();
        let mut data = vec![0f32; 3 * (w * h) as usize];
        let plane = (w * h) as usize;
        for (i, p) in map.image.pixels().enumerate() {
            let masked = map.masked.as_ref().is_some_and(|m| m.as_raw()[i] >= 128);
            for c in 0..3 {
                let source = if net.reads_bgr() { 2 - c } else { c };
                data[c * plane + i] = if masked { -1.0 } else { f32::from(p.0[source]) / 255.0 };
            }
        }
        let hint = Tensor::from_vec(data, (1, 3, h as usize, w as usize), device)?;
        let embedded = std::sync::OnceLock::new();
        Ok(Self {
            net,
            hint,
            embedded,
            weight: spec.weight,
            start: spec.start,
            end: spec.end,
            mode: spec.mode,
        })
    }

    /// The hint encoder's output, computed on first use.
    fn embedded(&self) -> Result<&Tensor> {
        if let Some(e) = self.embedded.get() {
            return Ok(e);
        }
        let e = self.net.embed_hint(&self.hint)?;
        Ok(self.embedded.get_or_init(|| e))
    }

    /// Whether the unit acts at step `k` of the `n` the run takes. diffusers' rule: not while
    /// `k/n < start`, nor once `(k+1)/n > end` (the step's whole span lies inside). A1111's
    /// extension compares the sampler's step counter, which the denoiser sees one step late
    /// (steps 0 and 1 both read 0), with both ends included: `start ≤ max(k−1, 0)/n ≤ end`.
    pub fn acts_at(&self, k: usize, n: usize, rule: SamplerImpl) -> bool {
        let n = n.max(1) as f64;
        match rule {
            SamplerImpl::Diffusers => !((k as f64 / n) < self.start || ((k + 1) as f64 / n) > self.end),
            SamplerImpl::A1111 => {
                let seen = k.saturating_sub(1) as f64 / n;
                !(seen < self.start || seen > self.end)
            }
        }
    }
}

/// The units acting at one step.
pub struct StepControl<'a> {
    units: Vec<&'a ControlInput>,
}

impl<'a> StepControl<'a> {
    /// The units of `all` that act at step `k` of `n`, counted as `rule`'s program counts.
    pub fn at(all: &'a [ControlInput], k: usize, n: usize, rule: SamplerImpl) -> Self {
        Self { units: all.iter().filter(|u| u.acts_at(k, n, rule)).collect() }
    }

    /// No unit.
    pub fn none() -> Self {
        Self { units: Vec::new() }
    }

    /// The summed, scaled residuals for a UNet pass over `x` (its first channels are the latents)
    /// with `cond`; when `first_is_negative`, row 0 is the negative prompt's, which units acting
    /// on the prompt's pass only leave at zero. None when no unit acts on these rows.
    pub fn residuals(
        &self,
        x: &Tensor,
        t: f64,
        cond: &Conditioning,
        first_is_negative: bool,
    ) -> Result<Option<Residuals>> {
        let mut total: Option<Residuals> = None;
        let b = x.dim(0)?;
        for unit in &self.units {
            // diffusers runs shuffle-type (globally pooled) models as in guess mode, unscaled.
            let skip_first = first_is_negative && (unit.mode.prompt_pass_only() || unit.net.global_pool);
            let rows = if skip_first { 1..b } else { 0..b };
            if rows.is_empty() {
                continue;
            }
            let in_ch = unit.net.in_channels();
            let part = |t: &Tensor| t.narrow(0, rows.start, rows.len());
            let xc = part(x)?.narrow(1, 0, in_ch)?;
            let cc = Conditioning {
                context: part(&cond.context)?,
                pooled: cond.pooled.as_ref().map(part).transpose()?,
                time_ids: cond.time_ids.as_ref().map(part).transpose()?,
            };
            let raw = unit.net.forward_embedded(&xc, t, &cc, unit.embedded()?)?;
            // Pooled models take guess mode's passes without its fading scales (as diffusers).
            let mode = if unit.net.global_pool && unit.mode == ControlMode::Guess {
                ControlMode::Balanced
            } else {
                unit.mode
            };
            let scales = mode.scales(unit.weight, raw.down.len() + 1);
            let scale = |t: &Tensor, s: f64| -> Result<Tensor> {
                let t = (t * s)?;
                Ok(if skip_first { Tensor::cat(&[&t.narrow(0, 0, 1)?.zeros_like()?, &t], 0)? } else { t })
            };
            let down = raw.down.iter().zip(&scales).map(|(d, &s)| scale(d, s)).collect::<Result<Vec<_>>>()?;
            let r = Residuals { down, mid: scale(&raw.mid, scales[scales.len() - 1])? };
            total = Some(match total {
                Some(sum) => sum.add(&r)?,
                None => r,
            });
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guess_mode_scales_are_torch_logspace() {
        let s = ControlMode::Guess.scales(1.0, 13);
        assert!((s[0] - 0.1).abs() < 1e-12 && (s[12] - 1.0).abs() < 1e-12);
        assert!((s[6] - 10f64.powf(-0.5)).abs() < 1e-12);
        let p = ControlMode::Prompt.scales(2.0, 13);
        assert!((p[0] - 2.0 * 0.825f64.powi(12)).abs() < 1e-12 && p[12] == 2.0);
        assert_eq!(ControlMode::Balanced.scales(0.7, 3), vec![0.7; 3]);
        let xl = ControlMode::Control.scales(1.0, 10);
        assert!((xl[9] - 0.825f64.powi(3)).abs() < 1e-12, "A1111's SDXL middle residual");
    }

    #[test]
    fn start_and_end_follow_each_programs_count() -> Result<()> {
        let net = Arc::new(ControlNet::with_weights(
            candle_nn::VarBuilder::zeros(candle_core::DType::F32, &candle_core::Device::Cpu),
            &serde_json::from_str(r#"{"block_out_channels": [32, 32], "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "cross_attention_dim": 32, "attention_head_dim": 8}"#)
                .expect("a config"),
            std::path::Path::new("zeros"),
        )?);
        let map = ControlMap { image: image::RgbImage::new(8, 8), masked: None };
        let spec = ControlSpec { start: 0.3, end: 0.6, ..Default::default() };
        let unit = ControlInput::new(net, &map, &spec, &candle_core::Device::Cpu)?;
        let acting = |rule| (0..10).filter(|&k| unit.acts_at(k, 10, rule)).collect::<Vec<_>>();
        // diffusers: keep = 1 - (i/n < s or (i+1)/n > e) over 10 steps.
        assert_eq!(acting(SamplerImpl::Diffusers), vec![3, 4, 5]);
        // A1111: the counter seen is k-1 (0 at k = 0 and 1), both ends included.
        assert_eq!(acting(SamplerImpl::A1111), vec![4, 5, 6, 7]);
        Ok(())
    }

    #[test]
    fn bad_units_are_refused_by_number() {
        let ok = ControlSpec { model: "cn.safetensors".into(), ..Default::default() };
        assert!(ok.check(0).is_ok());
        let msg = |s: ControlSpec| s.check(1).expect_err("refused").to_string();
        assert!(msg(ControlSpec::default()).contains("unit 1: has no ControlNet model"));
        assert!(msg(ControlSpec { weight: 3.0, ..ok.clone() }).contains("weight 3 is out of range"));
        assert!(msg(ControlSpec { start: 0.5, end: 0.5, ..ok.clone() }).contains("end must be after start"));
        assert!(msg(ControlSpec { end: 1.5, ..ok }).contains("end 1.5 is out of range"));
    }
}
