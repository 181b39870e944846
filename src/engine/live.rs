//! Live painting's engine side: the few-step presets a frame is rendered with, the cache that
//! keeps a prompt's text embeddings between frames, and one frame's render with where its time
//! went. A frame is an ordinary img2img request (the canvas as its start picture, the seed locked,
//! the tiny autoencoder as its VAE), so `easel generate` with the same settings makes the same
//! picture; only the text encoding is skipped when the prompt did not change.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use image::RgbImage;

use super::conditioning::PromptConditioning;
use super::family::Family;
use super::model::StableDiffusion;
use super::pipeline::{generate_one, GenerationInputs};
use super::request::GenerationRequest;
use super::samplers::schedule::Spacing;
use super::samplers::SamplerKind;
use crate::error::Result;

/// How live frames are sampled: a few-step model or LoRA and the settings its makers publish.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LivePreset {
    /// The stable name settings are saved under.
    pub id: &'static str,
    /// What the menu shows.
    pub name: &'static str,
    /// Which model or LoRA it is for, and where to get it.
    pub needs: &'static str,
    /// The sampler.
    pub sampler: SamplerKind,
    /// Steps of the full schedule; a frame runs `steps × strength` of them.
    pub steps: usize,
    /// Guidance scale (1 or less: one UNet pass per step).
    pub cfg_scale: f64,
    /// Timestep spacing, when the model's makers publish one.
    pub spacing: Option<Spacing>,
    /// The few-step LoRA it is made for, per family: (hub repository, file) for SD 1.x, SDXL.
    pub lora: [Option<(&'static str, &'static str)>; 2],
}

/// The live presets, in menu order.
pub const LIVE_PRESETS: [LivePreset; 5] = [
    LivePreset {
        id: "hyper",
        name: "Hyper-SD (8-step CFG LoRA)",
        needs: "ByteDance/Hyper-SD's Hyper-SD15-8steps-CFG-lora.safetensors (SD 1.5) or \
                Hyper-SDXL-8steps-CFG-lora.safetensors (SDXL) as the live LoRA; Krita's realtime default",
        sampler: SamplerKind::Euler,
        steps: 6,
        cfg_scale: 1.8,
        spacing: Some(Spacing::Trailing),
        lora: [
            Some(("ByteDance/Hyper-SD", "Hyper-SD15-8steps-CFG-lora.safetensors")),
            Some(("ByteDance/Hyper-SD", "Hyper-SDXL-8steps-CFG-lora.safetensors")),
        ],
    },
    LivePreset {
        id: "lcm",
        name: "LCM-LoRA",
        needs: "latent-consistency/lcm-lora-sdv1-5 (SD 1.5) or lcm-lora-sdxl (SDXL) as the live LoRA",
        sampler: SamplerKind::Lcm,
        steps: 6,
        cfg_scale: 1.0,
        spacing: None,
        lora: [
            Some(("latent-consistency/lcm-lora-sdv1-5", "pytorch_lora_weights.safetensors")),
            Some(("latent-consistency/lcm-lora-sdxl", "pytorch_lora_weights.safetensors")),
        ],
    },
    LivePreset {
        id: "turbo",
        name: "Turbo model (SD-Turbo, SDXL-Turbo)",
        needs: "a distilled Turbo model loaded as the model (stabilityai/sd-turbo, sdxl-turbo); no LoRA",
        sampler: SamplerKind::EulerA,
        steps: 2,
        cfg_scale: 0.0,
        spacing: Some(Spacing::Trailing),
        lora: [None, None],
    },
    LivePreset {
        id: "lightning",
        name: "SDXL-Lightning (4-step LoRA)",
        needs: "ByteDance/SDXL-Lightning's sdxl_lightning_4step_lora.safetensors as the live LoRA",
        sampler: SamplerKind::Euler,
        steps: 4,
        cfg_scale: 0.0,
        spacing: Some(Spacing::Trailing),
        lora: [None, Some(("ByteDance/SDXL-Lightning", "sdxl_lightning_4step_lora.safetensors"))],
    },
    LivePreset {
        id: "plain",
        name: "Any model (no speed-up, slow)",
        needs: "nothing: the loaded model as it is, at ten steps",
        sampler: SamplerKind::Euler,
        steps: 10,
        cfg_scale: 5.0,
        spacing: None,
        lora: [None, None],
    },
];

impl LivePreset {
    /// The preset named `id`, or the family's default when there is none of that name for it.
    pub fn by_id(id: &str, family: Family) -> &'static LivePreset {
        LIVE_PRESETS
            .iter()
            .find(|p| p.id == id && p.fits(family))
            .unwrap_or_else(|| Self::default_for(family))
    }

    /// The preset a family starts with: Hyper-SD (as Krita) for SD 1.x and SDXL, SD-Turbo's for
    /// SD 2.x, whose few-step model it is.
    pub fn default_for(family: Family) -> &'static LivePreset {
        let id = match family {
            Family::Sd2 => "turbo",
            Family::Sd1 | Family::Sdxl => "hyper",
        };
        LIVE_PRESETS.iter().find(|p| p.id == id).unwrap_or(&LIVE_PRESETS[0])
    }

    /// The LoRA to download for a model of `family` (hub repository, file), if the preset uses one.
    pub fn lora_for(&self, family: Family) -> Option<(&'static str, &'static str)> {
        match family {
            Family::Sd1 => self.lora[0],
            Family::Sdxl => self.lora[1],
            // SD 2.x has no published few-step LoRA; SD-Turbo is a model of its own.
            Family::Sd2 => None,
        }
    }

    /// Whether the preset is for models of `family`: one made for a LoRA needs that family's
    /// LoRA (SDXL-Lightning is SDXL's alone); the others fit every family.
    pub fn fits(&self, family: Family) -> bool {
        self.lora == [None, None] || self.lora_for(family).is_some()
    }

    /// `request` with this preset's sampler, steps, guidance and spacing.
    pub fn apply(&self, request: &mut GenerationRequest) {
        request.sampler = self.sampler;
        request.steps = self.steps;
        request.cfg_scale = self.cfg_scale;
        request.spacing = self.spacing;
    }
}

/// The text embeddings of the last frame's prompt, kept until a setting they depend on changes.
#[derive(Default)]
pub struct TextCache {
    entry: Option<(String, PromptConditioning)>,
}

impl TextCache {
    /// The embeddings for `request`, encoded only when its text settings differ from the last
    /// frame's; also says whether they were encoded now.
    pub fn get(
        &mut self,
        model: &StableDiffusion,
        request: &GenerationRequest,
    ) -> Result<(&PromptConditioning, bool)> {
        let key = text_key(request);
        let fresh = self.entry.as_ref().is_none_or(|(k, _)| *k != key);
        if fresh {
            // The old embeddings go first: a failed encode leaves nothing stale behind.
            self.entry = None;
            self.entry = Some((key, super::conditioning::encode(model, request)?));
        }
        match &self.entry {
            Some((_, context)) => Ok((context, fresh)),
            None => Err(crate::Error::Internal("the text embeddings went missing".into())),
        }
    }
}

/// What the text embeddings depend on: the request without the fields that only steer sampling,
/// the start picture or the autoencoder. (The stack is part of it: a LoRA's text weights change
/// the encoder.)
fn text_key(request: &GenerationRequest) -> String {
    let text_only = GenerationRequest {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        // Guidance above 1 encodes the negative prompt too; steps place scheduled prompt edits.
        cfg_scale: if request.cfg_scale > 1.0 { 2.0 } else { 1.0 },
        steps: request.steps,
        width: request.width,
        height: request.height,
        micro: request.micro,
        emphasis: request.emphasis,
        clip_skip: request.clip_skip,
        embeddings_dir: request.embeddings_dir.clone(),
        loras: request.loras.clone(),
        ..GenerationRequest::default()
    };
    serde_json::to_string(&text_only).unwrap_or_default()
}

/// Where one frame's time went, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FrameTimings {
    /// Text encoding (0 when the cached embeddings served).
    pub text_secs: f64,
    /// Encoding the canvas.
    pub encode_secs: f64,
    /// The denoising steps (UNet and ControlNet passes, sampler arithmetic).
    pub denoise_secs: f64,
    /// Decoding the latents.
    pub decode_secs: f64,
    /// The whole render, from the request to the picture.
    pub total_secs: f64,
    /// Denoising steps run.
    pub steps: usize,
}

impl FrameTimings {
    /// The model's own work: the networks (text encoder when it ran, tiny encoder, UNet steps,
    /// tiny decoder).
    pub fn model_secs(&self) -> f64 {
        self.text_secs + self.encode_secs + self.denoise_secs + self.decode_secs
    }
}

/// One rendered frame.
pub struct LiveFrame {
    /// The picture.
    pub image: RgbImage,
    /// Where the time went.
    pub timings: FrameTimings,
}

/// Renders `request` (one picture) with the embeddings from `texts`; stops with
/// `Error::Cancelled` at the next step once `cancel` is set.
pub fn render(
    model: &StableDiffusion,
    request: &GenerationRequest,
    inputs: &GenerationInputs,
    texts: &mut TextCache,
    cancel: &AtomicBool,
) -> Result<LiveFrame> {
    let started = Instant::now();
    request.validate()?;
    let (context, encoded) = texts.get(model, request)?;
    let text_secs = if encoded { started.elapsed().as_secs_f64() } else { 0.0 };
    let mut steps = 0;
    let (picture, encode_secs) =
        generate_one(model, request, inputs, context, 0, &mut |p| steps = p.total, cancel)?;
    let timings = FrameTimings {
        text_secs,
        encode_secs,
        denoise_secs: picture.timings.denoise_secs - encode_secs,
        decode_secs: picture.timings.decode_secs,
        total_secs: started.elapsed().as_secs_f64(),
        steps,
    };
    Ok(LiveFrame { image: picture.image, timings })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_key_ignores_sampling_and_pictures_but_not_the_prompt_or_stack() {
        let base = GenerationRequest { prompt: "a cat".into(), ..GenerationRequest::default() };
        let same = GenerationRequest {
            seed: 9,
            strength: 0.3,
            sampler: SamplerKind::Lcm,
            init_image: Some("canvas.png".into()),
            ..base.clone()
        };
        assert_eq!(text_key(&base), text_key(&same));
        let other_prompt = GenerationRequest { prompt: "a dog".into(), ..base.clone() };
        assert_ne!(text_key(&base), text_key(&other_prompt));
        let lora = super::super::LoraSpec {
            name: "ink".into(),
            path: "ink.safetensors".into(),
            unet_weight: 1.0,
            text_weight: 1.0,
        };
        let stacked = GenerationRequest { loras: vec![lora], ..base.clone() };
        assert_ne!(text_key(&base), text_key(&stacked));
        let unguided = GenerationRequest { cfg_scale: 1.0, ..base.clone() };
        assert_ne!(text_key(&base), text_key(&unguided));
    }

    #[test]
    fn every_family_has_a_default_and_unknown_ids_fall_back_to_it() {
        for family in [Family::Sd1, Family::Sd2, Family::Sdxl] {
            let preset = LivePreset::default_for(family);
            assert_eq!(LivePreset::by_id("no such preset", family), preset);
        }
        assert_eq!(LivePreset::by_id("lcm", Family::Sd1).sampler, SamplerKind::Lcm);
        // The LoRA follows the family: SD 1.5's and SDXL's files differ; SD 2.x has none.
        let hyper = LivePreset::by_id("hyper", Family::Sd1);
        assert!(hyper.lora_for(Family::Sd1).is_some_and(|(_, f)| f.starts_with("Hyper-SD15")));
        assert!(hyper.lora_for(Family::Sdxl).is_some_and(|(_, f)| f.starts_with("Hyper-SDXL")));
        assert_eq!(hyper.lora_for(Family::Sd2), None);
        assert_eq!(LivePreset::by_id("lightning", Family::Sdxl).lora_for(Family::Sd1), None);
        assert!(!LivePreset::by_id("lightning", Family::Sdxl).fits(Family::Sd1));
        assert_eq!(LivePreset::by_id("lightning", Family::Sd1).id, "hyper", "SD 1.x falls back");
        assert!(LivePreset::by_id("lightning", Family::Sdxl).fits(Family::Sdxl));
        assert!(LivePreset::by_id("turbo", Family::Sd2).fits(Family::Sd2));
        assert!(LivePreset::by_id("hyper", Family::Sd1).fits(Family::Sd1));
        let ids: std::collections::HashSet<_> = LIVE_PRESETS.iter().map(|p| p.id).collect();
        assert_eq!(ids.len(), LIVE_PRESETS.len());
    }
}
