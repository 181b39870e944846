//! What the user asks for: one `GenerationRequest`, serialisable so it travels into PNG metadata,
//! presets and the history, and checked before any work starts.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::controlnet::ControlSpec;
use super::prompt::Emphasis;
use super::rng::NoiseSource;
use super::samplers::schedule::Spacing;
use super::samplers::{SamplerImpl, SamplerKind};
use crate::error::{Error, Result, Setting};

/// One generation: txt2img, or img2img/inpainting when an init image is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerationRequest {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt (what to steer away from).
    pub negative_prompt: String,
    /// The sampler.
    pub sampler: SamplerKind,
    /// Denoising steps (for img2img, of the full schedule).
    pub steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off.
    pub cfg_scale: f64,
    /// Seed of the first image; image k of a batch uses `seed + k`.
    pub seed: u64,
    /// Width in pixels, a multiple of 8.
    pub width: usize,
    /// Height in pixels, a multiple of 8.
    pub height: usize,
    /// Pictures to make, one after another.
    pub batch: usize,
    /// img2img: how much of the schedule to run over the init image (0–1].
    pub strength: f64,
    /// img2img/inpainting start image.
    pub init_image: Option<PathBuf>,
    /// Inpainting mask: white is repainted, black kept.
    pub mask: Option<PathBuf>,
    /// A safetensors file with a `noise` tensor replacing the seeded starting noise.
    pub noise: Option<PathBuf>,
    /// Style adapters merged into the model for this request, in order.
    pub loras: Vec<LoraSpec>,
    /// Inpainting: put the start picture's own pixels back outside the mask after decoding, as
    /// A1111 does (the VAE round trip otherwise softens what was not repainted). Off by default,
    /// as in diffusers, whose pictures Easel reproduces.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_unmasked: bool,
    /// How the sampler spreads its timesteps, instead of what the model's scheduler config says
    /// (few-step distilled models such as SDXL-Lightning and Turbo want `trailing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing: Option<Spacing>,
    /// A standalone autoencoder to decode with instead of the model's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vae: Option<PathBuf>,
    /// SDXL's micro-conditioning (other families ignore it).
    #[serde(default, skip_serializing_if = "MicroConditioning::is_default")]
    pub micro: MicroConditioning,
    /// How `(word:1.2)` weights act (A1111's "Original" by default).
    #[serde(default, skip_serializing_if = "is_default")]
    pub emphasis: Emphasis,
    /// A1111's clip skip: 1 reads the text encoder's last layer, 2 the one before, … (SD 1.x
    /// only, as in A1111; SD 2.x and SDXL read their fixed layers).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub clip_skip: usize,
    /// Which generator draws the noise.
    #[serde(default, skip_serializing_if = "is_default")]
    pub rng: NoiseSource,
    /// A1111's eta noise seed delta: ancestral steps draw from a generator seeded `seed + ensd`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub ensd: u64,
    /// Whose sampler implementation runs.
    #[serde(default, skip_serializing_if = "is_default")]
    pub sampler_impl: SamplerImpl,
    /// The folder of textual-inversion embeddings the prompts may name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embeddings_dir: Option<PathBuf>,
    /// ControlNet units, applied together (their residuals add up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub controls: Vec<ControlSpec>,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// The deepest clip skip accepted (SD 1.x's encoder has 12 layers).
pub const MAX_CLIP_SKIP: usize = 12;

/// The sizes SDXL was trained to be told about each picture (diffusers' `original_size`,
/// `crops_coords_top_left`, `target_size`); unset sizes are the picture's own, as in diffusers
/// and A1111.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MicroConditioning {
    /// `[width, height]` the source picture is said to have had.
    pub original_size: Option<[usize; 2]>,
    /// `[top, left]` of the crop the picture is said to be.
    pub crop_top_left: [usize; 2],
    /// `[width, height]` the picture is said to aim for.
    pub target_size: Option<[usize; 2]>,
}

impl MicroConditioning {
    /// Whether nothing was set (the picture's own sizes, no crop).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// SDXL's six `add_time_ids` for a `width`×`height` picture, in diffusers' order:
    /// original (height, width), crop (top, left), target (height, width).
    pub fn time_ids(&self, width: usize, height: usize) -> [f32; 6] {
        let [ow, oh] = self.original_size.unwrap_or([width, height]);
        let [top, left] = self.crop_top_left;
        let [tw, th] = self.target_size.unwrap_or([width, height]);
        [oh, ow, top, left, th, tw].map(|v| v as f32)
    }
}

/// One adapter a request uses.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// The name in prompts and metadata (the file stem).
    pub name: String,
    /// The file.
    pub path: PathBuf,
    /// Weight of its UNet part.
    pub unet_weight: f64,
    /// Weight of its text-encoder part.
    pub text_weight: f64,
}

/// A fresh seed from the clock, below 2³² so A1111 and JSON readers keep it exactly.
pub fn random_seed() -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    // splitmix64 scrambles the clock so seeds of quick successive runs differ widely.
    let mut z = (nanos as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)) % (1 << 32)
}

/// The most pictures one request makes: more is a typing mistake (a batch of 10⁷ once built
/// 0.63 GB of file names before the first step).
pub const MAX_BATCH: usize = 10_000;

/// The longest prompt read: each 75-token chunk is one more text-encoder pass per step's
/// conditioning, and a pasted 1 MB text took minutes before the first step.
pub const MAX_PROMPT_CHARS: usize = 20_000;

/// Adapter weights beyond this are refused as typing mistakes; slider LoRAs use up to ±15.
pub const MAX_LORA_WEIGHT: f64 = 100.0;

impl Default for GenerationRequest {
    fn default() -> Self {
        Self {
            prompt: String::new(),
            negative_prompt: String::new(),
            sampler: SamplerKind::DpmPp2mKarras,
            steps: 25,
            cfg_scale: 7.0,
            seed: 0,
            width: 512,
            height: 512,
            batch: 1,
            strength: 0.75,
            init_image: None,
            mask: None,
            noise: None,
            loras: Vec::new(),
            keep_unmasked: false,
            micro: MicroConditioning::default(),
            vae: None,
            spacing: None,
            emphasis: Emphasis::default(),
            clip_skip: 1,
            rng: NoiseSource::default(),
            ensd: 0,
            sampler_impl: SamplerImpl::default(),
            embeddings_dir: None,
            controls: Vec::new(),
        }
    }
}

impl GenerationRequest {
    /// Refuses values no pipeline can use, with a sentence saying which and why.
    pub fn validate(&self) -> Result<()> {
        for (i, unit) in self.controls.iter().enumerate() {
            unit.check(i)?;
        }
        for (setting, v) in [(Setting::Width, self.width), (Setting::Height, self.height)] {
            if v % 8 != 0 || v < 64 {
                return Err(Error::setting(
                    setting,
                    format!(
                        "{v} is not usable: sizes must be multiples of 8 and at least 64 (try {})",
                        ((v.max(64) + 4) / 8) * 8
                    ),
                ));
            }
            if v > 4096 {
                return Err(Error::setting(setting, format!("{v} is larger than 4096 pixels")));
            }
        }
        if self.steps == 0 || self.steps > 1000 {
            return Err(Error::setting(Setting::Steps, format!("{} must be between 1 and 1000", self.steps)));
        }
        for (setting, text) in
            [(Setting::Prompt, &self.prompt), (Setting::NegativePrompt, &self.negative_prompt)]
        {
            let chars = text.chars().count();
            if chars > MAX_PROMPT_CHARS {
                return Err(Error::setting(
                    setting,
                    format!(
                        "is {chars} characters long; Easel reads up to {MAX_PROMPT_CHARS} (about 60 chunks of 75 tokens)"
                    ),
                ));
            }
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(Error::setting(
                Setting::Batch,
                format!(
                    "{} must be between 1 and {MAX_BATCH}; for more pictures, run again with another seed",
                    self.batch
                ),
            ));
        }
        if !self.cfg_scale.is_finite() || self.cfg_scale < 0.0 || self.cfg_scale > 100.0 {
            return Err(Error::setting(
                Setting::Guidance,
                format!("{} must be between 0 and 100", self.cfg_scale),
            ));
        }
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::setting(Setting::Strength, format!("{} must be in (0, 1]", self.strength)));
        }
        for lora in &self.loras {
            for w in [lora.unet_weight, lora.text_weight] {
                if !w.is_finite() || w.abs() > MAX_LORA_WEIGHT {
                    return Err(Error::setting(
                        Setting::LoraWeight,
                        format!("{w} of {} is outside ±{MAX_LORA_WEIGHT}", lora.name),
                    ));
                }
            }
        }
        if self.clip_skip == 0 || self.clip_skip > MAX_CLIP_SKIP {
            return Err(Error::setting(
                Setting::ClipSkip,
                format!("{} must be between 1 and {MAX_CLIP_SKIP} (1 reads the last layer)", self.clip_skip),
            ));
        }
        if self.mask.is_some() && self.init_image.is_none() {
            return Err(Error::setting(
                Setting::InitImage,
                "is missing: a mask needs the picture to inpaint",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_must_be_multiples_of_eight() {
        let req = GenerationRequest { width: 500, ..Default::default() };
        let msg = req.validate().expect_err("500 is refused").to_string();
        assert!(msg.contains("multiples of 8") && msg.contains("504"), "{msg}");
    }

    #[test]
    fn micro_conditioning_defaults_to_the_picture_size_in_diffusers_order() {
        let micro = MicroConditioning::default();
        assert_eq!(micro.time_ids(1216, 832), [832., 1216., 0., 0., 832., 1216.]);
        let micro = MicroConditioning {
            original_size: Some([4096, 2048]),
            crop_top_left: [16, 32],
            target_size: None,
        };
        assert_eq!(micro.time_ids(1024, 1024), [2048., 4096., 16., 32., 1024., 1024.]);
    }

    #[test]
    fn mask_without_image_is_refused() {
        let req = GenerationRequest { mask: Some("m.png".into()), ..Default::default() };
        assert!(req.validate().is_err());
    }

    #[test]
    fn requests_round_trip_through_json() {
        let req = GenerationRequest { prompt: "a, b: c\nd".into(), seed: 42, ..Default::default() };
        let json = serde_json::to_string(&req).expect("serialises");
        assert_eq!(serde_json::from_str::<GenerationRequest>(&json).expect("parses"), req);
    }

    #[test]
    fn prompts_longer_than_the_bound_are_refused() {
        let req = GenerationRequest { negative_prompt: "a, ".repeat(40_000), ..Default::default() };
        let msg = req.validate().expect_err("120 000 characters").to_string();
        assert!(msg.starts_with("negative prompt is 120000") && msg.contains("20000"), "{msg}");
        let req = GenerationRequest { prompt: "a, ".repeat(6_000), ..Default::default() };
        req.validate().expect("18 000 characters are fine");
    }
}
