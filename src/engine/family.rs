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
}

impl Family {
    /// A short name for reports ("SD 1.x").
    pub fn label(self) -> &'static str {
        match self {
            Family::Sd1 => "SD 1.x",
            Family::Sd2 => "SD 2.x",
        }
    }

    /// The family a UNet config describes.
    pub fn of_unet(cfg: &UNetConfig) -> Family {
        if cfg.cross_attention_dim == 1024 || (cfg.cross_attention_dim != 768 && cfg.use_linear_projection) {
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
        if self == Family::Sd2 {
            // Most SD 2.x single files are the 768 v-prediction models.
            cfg["prediction_type"] = json!("v_prediction");
        }
        match cfg {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }
}
