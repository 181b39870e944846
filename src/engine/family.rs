//! The Stable Diffusion generation a model belongs to: what its text encoder and cross-attention
//! look like, and the scheduler its makers published, for files that carry no config.

use serde_json::{json, Map, Value};

use super::config::UNetConfig;

/// The Stable Diffusion generation a model belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Family {
    /// SD 1.x (CLIP ViT-L text encoder, 768-wide cross-attention).
    Sd1,
    /// SD 2.x (OpenCLIP ViT-H, 1024-wide cross-attention, linear projections).
    Sd2,
    /// SDXL and its fine-tunes (Pony, Illustrious, NoobAI…): two text encoders, three UNet levels
    /// and an added text/time embedding.
    Sdxl,
}

impl Family {
    /// A short name for reports ("SD 1.x").
    pub fn label(self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
            Family::Sdxl => "SDXL",
        }
    }

    /// The picture size the family was trained at (width, height), the default for new pictures.
    pub fn native_size(self) -> (usize, usize) {
        match self {
            // SD 2.x comes at 512 (base) and 768 (v); 512 suits both on a CPU.
            Family::Sd1 | Family::Sd2 => (512, 512),
            Family::Sdxl => (1024, 1024),
        }
    }

    /// Sizes (width, height) the studio offers for the family: SDXL's are its training buckets
    /// of about one megapixel.
    pub fn size_presets(self) -> &'static [(usize, usize)] {
        match self {
            Family::Sd1 | Family::Sd2 => {
                &[(512, 512), (768, 768), (512, 768), (768, 512), (640, 448), (384, 384), (256, 256)]
            }
            Family::Sdxl => &[
                (1024, 1024),
                (832, 1216),
                (1216, 832),
                (896, 1152),
                (1152, 896),
                (768, 1344),
                (1344, 768),
                (512, 512),
            ],
        }
    }

    /// The latent scale of the family's autoencoder, for files that carry no VAE config.
    pub fn vae_scaling_factor(self) -> f64 {
        match self {
            Family::Sdxl => 0.13025,
            Family::Sd1 | Family::Sd2 => 0.18215,
        }
    }

    /// The family a UNet config describes.
    pub fn of_unet(cfg: &UNetConfig) -> Family {
        if cfg.has_text_time() {
            Family::Sdxl
        } else if cfg.cross_attention_dim == 1024
            || (cfg.cross_attention_dim != 768 && cfg.use_linear_projection)
        {
            Family::Sd2
        } else {
            Family::Sd1
        }
    }

    /// The published scheduler config of the family, for files that carry none.
    pub fn scheduler_config(self) -> Map<String, Value> {
        let mut cfg = json!({
            "_class_name": "PNDMScheduler",
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": false,
            "skip_prk_steps": true,
            "steps_offset": 1,
            "clip_sample": false
        });
        match self {
            // Most SD 2.x single files are the 768 v-prediction models.
            Family::Sd2 => cfg["prediction_type"] = json!("v_prediction"),
            // SDXL base 1.0's published scheduler (the samplers read the same constants).
            Family::Sdxl => {
                cfg["_class_name"] = json!("EulerDiscreteScheduler");
                cfg["timestep_spacing"] = json!("leading");
                cfg["interpolation_type"] = json!("linear");
                cfg["use_karras_sigmas"] = json!(false);
                cfg["prediction_type"] = json!("epsilon");
            }
            Family::Sd1 => {}
        }
        match cfg {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}

/// The lines of SDXL fine-tunes whose LoRAs rarely carry over to one another: Pony Diffusion,
/// and Illustrious with NoobAI (trained on from it), apart from the SDXL base and its
/// photographic fine-tunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SdxlLine {
    /// SDXL base 1.0 and fine-tunes of it (Juggernaut, RealVis…).
    Base,
    /// Pony Diffusion V6 XL and its merges.
    Pony,
    /// Illustrious XL and NoobAI XL.
    Illustrious,
}

impl SdxlLine {
    /// The line the given names say (file names, titles, a LoRA's base-model name), `None`
    /// when none is given.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<SdxlLine> {
        let text = names.into_iter().collect::<Vec<_>>().join(" ").to_ascii_lowercase();
        if text.trim().is_empty() {
            None
        } else if text.contains("pony") {
            Some(SdxlLine::Pony)
        } else if text.contains("illustrious") || text.contains("noob") {
            Some(SdxlLine::Illustrious)
        } else {
            Some(SdxlLine::Base)
        }
    }

    /// The line of a model of `family` known by `names` (its path, its title): `None` unless SDXL.
    pub fn of_model<'a>(family: Family, names: impl IntoIterator<Item = &'a str>) -> Option<SdxlLine> {
        (family == Family::Sdxl).then(|| SdxlLine::from_names(names)).flatten()
    }

    /// A short name for messages.
    pub fn label(self) -> &'static str {
        match self {
            SdxlLine::Base => "SDXL base",
            SdxlLine::Pony => "Pony",
            SdxlLine::Illustrious => "Illustrious/NoobAI",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdxl_lines_are_read_from_names() {
        assert_eq!(
            SdxlLine::from_names(["ponyDiffusionV6XL_v6StartWithThisOne.safetensors"]),
            Some(SdxlLine::Pony)
        );
        assert_eq!(
            SdxlLine::from_names(["noobaiXLNAIXL_vPred10Version.safetensors"]),
            Some(SdxlLine::Illustrious)
        );
        assert_eq!(SdxlLine::from_names(["models/Illustrious-XL-v1.0"]), Some(SdxlLine::Illustrious));
        assert_eq!(SdxlLine::from_names(["juggernautXL_v9.safetensors"]), Some(SdxlLine::Base));
        assert_eq!(SdxlLine::from_names([" "]), None);
    }

    #[test]
    fn families_have_their_sizes_and_scales() {
        assert_eq!(Family::Sdxl.native_size(), (1024, 1024));
        assert!(Family::Sdxl.size_presets().contains(&(832, 1216)));
        assert_eq!(Family::Sdxl.vae_scaling_factor(), 0.13025);
        assert_eq!(Family::Sdxl.scheduler_config()["timestep_spacing"], "leading");
    }
}
