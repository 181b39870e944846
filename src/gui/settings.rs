//! What the studio keeps between runs (`Settings`, saved by eframe): the prompt and sampling
//! settings, the LoRA stack, the canvas's use, the metrics form and the chosen tab; and how they
//! become a `GenerationRequest` and back.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::engine::device::Precision;
use crate::engine::lora::tags;
use crate::engine::{GenerationRequest, LoraSpec, SamplerKind};

/// The tab shown in the middle of the window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Tab {
    /// The current picture or live preview.
    #[default]
    Image,
    /// Every result so far.
    Gallery,
    /// A/B and LoRA × weight × seed grids.
    Compare,
    /// FID/KID/IS/PSNR/SSIM per configuration.
    Metrics,
    /// Sketching and masks.
    Canvas,
}

/// One adapter in the stack panel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSlot {
    /// The file.
    pub path: PathBuf,
    /// Name used in tags (file stem).
    pub name: String,
    /// Off: kept in the stack but not merged.
    pub enabled: bool,
    /// The weight of both parts, unless `separate`.
    pub weight: f64,
    /// Separate UNet and text-encoder weights.
    pub separate: bool,
    /// UNet weight when `separate`.
    pub unet_weight: f64,
    /// Text-encoder weight when `separate`.
    pub text_weight: f64,
}

impl LoraSlot {
    /// A new enabled slot at weight 1.
    pub fn new(path: PathBuf) -> Self {
        let name = path.file_stem().map_or("lora".into(), |s| s.to_string_lossy().to_string());
        Self { path, name, enabled: true, weight: 1.0, separate: false, unet_weight: 1.0, text_weight: 1.0 }
    }

    /// The engine's description of this slot.
    pub fn spec(&self) -> LoraSpec {
        let (unet_weight, text_weight) =
            if self.separate { (self.unet_weight, self.text_weight) } else { (self.weight, self.weight) };
        LoraSpec { name: self.name.clone(), path: self.path.clone(), unet_weight, text_weight }
    }
}

/// How the canvas feeds the next generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanvasUse {
    /// Not at all (txt2img).
    #[default]
    Off,
    /// As the img2img start picture.
    Img2Img,
    /// As the picture to inpaint, with the painted mask.
    Inpaint,
}

/// The metrics form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetricsForm {
    /// Reference pictures.
    pub reference_dir: String,
    /// A prompt list file; empty: captions beside the references, or the main prompt.
    pub prompt_file: String,
    /// Use `name.txt` captions beside the references.
    pub use_captions: bool,
    /// Pictures per configuration.
    pub images_per_config: usize,
    /// Include the base model.
    pub include_base: bool,
    /// Include the current stack.
    pub include_stack: bool,
    /// Sweep the first enabled adapter over these weights (comma-separated; empty: no sweep).
    pub sweep_weights: String,
    /// FID Inception weights.
    pub inception: String,
}

impl Default for MetricsForm {
    fn default() -> Self {
        Self {
            reference_dir: String::new(),
            prompt_file: String::new(),
            use_captions: false,
            images_per_config: 8,
            include_base: true,
            include_stack: true,
            sweep_weights: String::new(),
            inception: format!("models/{}", crate::metrics::inception::WEIGHTS_FILE),
        }
    }
}

/// What persists between runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt.
    pub negative: String,
    /// Sampler.
    pub sampler: SamplerKind,
    /// Steps.
    pub steps: usize,
    /// Guidance.
    pub cfg_scale: f64,
    /// Seed of the next run.
    pub seed: u64,
    /// Keep the seed; otherwise each run draws a new one.
    pub seed_locked: bool,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Pictures per click.
    pub batch: usize,
    /// img2img strength.
    pub strength: f64,
    /// How the canvas is used.
    pub canvas_use: CanvasUse,
    /// Inpainting keeps the canvas's own pixels outside the mask.
    pub keep_unmasked: bool,
    /// The LoRA stack.
    pub loras: Vec<LoraSlot>,
    /// Where the LoRA browser looks.
    pub lora_dir: String,
    /// Models opened before, most recent first.
    pub recent_models: Vec<String>,
    /// The hub id typed in the pull field.
    pub hub_repo: String,
    /// The weights' precision (called `dtype` in settings saved before it was typed).
    #[serde(alias = "dtype")]
    pub precision: Precision,
    /// The middle tab.
    pub tab: Tab,
    /// The metrics form.
    pub metrics: MetricsForm,
    /// Grid weights (comma-separated).
    pub grid_weights: String,
    /// Seeds per grid row.
    pub grid_seeds: usize,
    /// A standalone VAE to decode with instead of the model's own.
    pub vae: Option<std::path::PathBuf>,
    /// Timestep spacing instead of the model's scheduler config.
    pub spacing: Option<crate::engine::samplers::schedule::Spacing>,
    /// How emphasis weights act.
    pub emphasis: crate::engine::prompt::Emphasis,
    /// A1111's clip skip.
    pub clip_skip: usize,
    /// Which generator draws the noise.
    pub rng: crate::engine::rng::NoiseSource,
    /// A1111's eta noise seed delta.
    pub ensd: u64,
    /// Whose samplers run.
    pub sampler_impl: crate::engine::samplers::SamplerImpl,
    /// Where textual-inversion embeddings are found.
    pub embeddings_dir: String,
    /// ControlNet units.
    pub controls: Vec<super::control_panel::ControlSlot>,
    /// Live painting.
    pub live: super::live::LiveSettings,
}

impl Default for Settings {
    fn default() -> Self {
        let r = GenerationRequest::default();
        Self {
            prompt: String::new(),
            negative: String::new(),
            sampler: r.sampler,
            steps: r.steps,
            cfg_scale: r.cfg_scale,
            seed: 1,
            seed_locked: false,
            width: r.width,
            height: r.height,
            batch: 1,
            strength: r.strength,
            canvas_use: CanvasUse::Off,
            keep_unmasked: true,
            loras: Vec::new(),
            lora_dir: "models/lora".into(),
            recent_models: Vec::new(),
            hub_repo: "stable-diffusion-v1-5/stable-diffusion-v1-5".into(),
            precision: Precision::default(),
            tab: Tab::Image,
            metrics: MetricsForm::default(),
            grid_weights: "0, 0.25, 0.5, 0.75, 1".into(),
            grid_seeds: 2,
            vae: None,
            spacing: None,
            emphasis: r.emphasis,
            clip_skip: r.clip_skip,
            rng: r.rng,
            ensd: r.ensd,
            sampler_impl: r.sampler_impl,
            embeddings_dir: "models/embeddings".into(),
            controls: Vec::new(),
            live: Default::default(),
        }
    }
}

impl Settings {
    /// The request the controls describe (without canvas inputs).
    pub fn request(&self) -> GenerationRequest {
        GenerationRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative.clone(),
            sampler: self.sampler,
            steps: self.steps,
            cfg_scale: self.cfg_scale,
            seed: self.seed,
            width: self.width,
            height: self.height,
            batch: self.batch,
            strength: self.strength,
            loras: self.loras.iter().filter(|s| s.enabled).map(LoraSlot::spec).collect(),
            keep_unmasked: self.canvas_use == CanvasUse::Inpaint && self.keep_unmasked,
            vae: self.vae.clone(),
            spacing: self.spacing,
            emphasis: self.emphasis,
            clip_skip: self.clip_skip,
            rng: self.rng,
            ensd: self.ensd,
            sampler_impl: self.sampler_impl,
            embeddings_dir: (!self.embeddings_dir.trim().is_empty())
                .then(|| PathBuf::from(&self.embeddings_dir)),
            controls: self
                .controls
                .iter()
                .filter(|c| c.enabled)
                .map(super::control_panel::ControlSlot::unit)
                .collect(),
            ..Default::default()
        }
    }

    /// The prompt as saved in PNGs: the text plus a tag per enabled adapter, so A1111 and Easel
    /// rebuild the stack from it.
    pub fn saved_prompt(&self) -> String {
        tags::prompt_with_tags(&self.prompt, &self.request().loras)
    }

    /// Takes a preset's settings: what it names replaces the current value, the rest stays.
    pub fn apply_preset(&mut self, preset: &crate::presets::Preset) {
        let r = crate::job::with_preset(self.request(), preset);
        self.take_prompt_and_sampling(&r);
        if !preset.loras.is_empty() {
            self.loras = preset.loras.iter().map(LoraSlot::from_spec).collect();
        }
    }

    /// The prompts, sampler, steps, guidance and size of `r`.
    fn take_prompt_and_sampling(&mut self, r: &GenerationRequest) {
        self.prompt = r.prompt.clone();
        self.negative = r.negative_prompt.clone();
        self.sampler = r.sampler;
        self.spacing = r.spacing;
        self.steps = r.steps;
        self.cfg_scale = r.cfg_scale;
        self.width = r.width;
        self.height = r.height;
        // How the picture read its prompt and drew its noise, so its seed gives it again.
        self.emphasis = r.emphasis;
        self.clip_skip = r.clip_skip;
        self.rng = r.rng;
        self.ensd = r.ensd;
        self.sampler_impl = r.sampler_impl;
    }

    /// Takes over an imported or historical request's settings (not its inputs).
    pub fn use_request(&mut self, r: &GenerationRequest) {
        self.take_prompt_and_sampling(r);
        self.prompt = tags::strip_tags(&r.prompt).trim().to_string();
        self.seed = r.seed;
        self.seed_locked = true;
        self.strength = r.strength;
        // Easel's own pictures name the VAE file they were decoded with; A1111's do not.
        if r.vae.is_some() {
            self.vae = r.vae.clone();
        }
        // Its ControlNet units replace the current ones; their pictures are not in a PNG, so an
        // imported unit reads the canvas until another picture is chosen.
        self.controls = r
            .controls
            .iter()
            .map(|spec| super::control_panel::ControlSlot {
                enabled: true,
                source: match &spec.image {
                    Some(p) if p.is_file() => super::control_panel::ControlSource::File(p.clone()),
                    _ => super::control_panel::ControlSource::Canvas,
                },
                spec: crate::engine::controlnet::ControlSpec { image: None, ..spec.clone() },
                hub_id: String::new(),
            })
            .collect();
        // The picture's stack replaces the current one, also when it had none.
        self.loras.clear();
        if !r.loras.is_empty() {
            self.loras = r.loras.iter().map(LoraSlot::from_spec).collect();
        } else if let Ok(found) = tags::parse_tags(&r.prompt) {
            // A1111 pictures name their adapters in the prompt; find them in the LoRA folder.
            let dir = PathBuf::from(&self.lora_dir);
            let slots: Vec<LoraSlot> = found
                .into_iter()
                .map(|t| LoraSpec {
                    path: dir.join(format!("{}.safetensors", t.name)),
                    name: t.name,
                    unet_weight: t.unet_weight,
                    text_weight: t.text_weight,
                })
                .map(|s| LoraSlot::from_spec(&s))
                .collect();
            if !slots.is_empty() {
                self.loras = slots;
            }
        }
    }

    /// Remembers a model at the top of the recent list.
    pub fn remember_model(&mut self, source: &str) {
        self.recent_models.retain(|m| m != source);
        self.recent_models.insert(0, source.to_string());
        self.recent_models.truncate(8);
    }
}

impl LoraSlot {
    /// An enabled slot with a spec's weights (separate when they differ).
    pub fn from_spec(s: &LoraSpec) -> Self {
        LoraSlot {
            path: s.path.clone(),
            name: s.name.clone(),
            enabled: true,
            weight: s.unet_weight,
            separate: s.unet_weight != s.text_weight,
            unet_weight: s.unet_weight,
            text_weight: s.text_weight,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_prompts_carry_the_enabled_stack() {
        let mut settings = Settings { prompt: "a cat".into(), ..Default::default() };
        settings.loras.push(LoraSlot { weight: 0.5, ..LoraSlot::new("ink.safetensors".into()) });
        settings.loras.push(LoraSlot { enabled: false, ..LoraSlot::new("off.safetensors".into()) });
        assert_eq!(settings.saved_prompt(), "a cat <lora:ink:0.5>");
        assert_eq!(settings.request().loras.len(), 1);
        let mut back = Settings::default();
        back.use_request(&GenerationRequest { prompt: settings.saved_prompt(), ..Default::default() });
        assert_eq!((back.prompt.as_str(), back.loras.len(), back.loras[0].weight), ("a cat", 1, 0.5));
        back.use_request(&GenerationRequest { prompt: "a dog".into(), ..Default::default() });
        assert!(back.loras.is_empty(), "a picture made without adapters brings none back");
    }
}
