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

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
