//! Model architecture read from diffusers `config.json` files (never hard-coded presets), with
//! diffusers' defaults where a key is missing.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{Error, Result};

/// A config value diffusers accepts either once for all blocks or per block.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PerBlock {
    /// The same value for every block.
    One(usize),
    /// One value per block.
    Each(Vec<usize>),
}

impl PerBlock {
    /// The value for block `i`.
    pub fn get(&self, i: usize) -> usize {
        match self {
            PerBlock::One(v) => *v,
            PerBlock::Each(v) => v.get(i).or(v.last()).copied().unwrap_or(1),
        }
    }
}

/// `unet/config.json` of `UNet2DConditionModel`.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct UNetConfig {
    #[serde(default = "four")]
    pub in_channels: usize,
    #[serde(default = "four")]
    pub out_channels: usize,
    #[serde(default = "default_unet_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    #[serde(default)]
    pub mid_block_type: Option<String>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "default_head_dim")]
    pub attention_head_dim: PerBlock,
    #[serde(default)]
    pub num_attention_heads: Option<PerBlock>,
    #[serde(default = "default_cross_dim")]
    pub cross_attention_dim: usize,
    #[serde(default = "default_transformer_layers")]
    pub transformer_layers_per_block: PerBlock,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "default_eps")]
    pub norm_eps: f64,
    #[serde(default)]
    pub use_linear_projection: bool,
    #[serde(default = "yes")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    #[serde(default)]
    pub time_cond_proj_dim: Option<usize>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub class_embed_type: Option<String>,
}

impl UNetConfig {
    /// Attention heads of down block `i` (diffusers calls this `attention_head_dim` in SD configs).
    pub fn heads(&self, i: usize) -> usize {
        self.num_attention_heads.as_ref().unwrap_or(&self.attention_head_dim).get(i)
    }

    /// Refuses architectures the engine does not build, with a sentence saying which.
    pub fn check_supported(&self, path: &Path) -> Result<()> {
        let refuse = |what: &str| {
            Err(Error::bad_file(format!("this UNet uses {what}, which Easel does not support yet"), path))
        };
        if self.addition_embed_type.is_some() {
            return refuse("added text/time conditioning (SDXL or later)");
        }
        if self.class_embed_type.is_some() {
            return refuse("class embeddings (an upscaler or variation model)");
        }
        if self.time_cond_proj_dim.is_some() {
            return refuse("a guidance embedding (a distilled LCM UNet; LCM-LoRA on SD 1.5 works)");
        }
        let n = self.block_out_channels.len();
        if n == 0 || self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(Error::bad_file(
                "the UNet config lists different numbers of blocks and channels",
                path,
            ));
        }
        for t in self.down_block_types.iter().chain(&self.up_block_types) {
            if !matches!(
                t.as_str(),
                "CrossAttnDownBlock2D" | "DownBlock2D" | "CrossAttnUpBlock2D" | "UpBlock2D"
            ) {
                return refuse(&format!("the block type {t}"));
            }
        }
        match self.mid_block_type.as_deref() {
            None | Some("UNetMidBlock2DCrossAttn") => Ok(()),
            Some(other) => refuse(&format!("the middle block type {other}")),
        }
    }
}

/// `vae/config.json` of `AutoencoderKL`.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct VaeConfig {
    #[serde(default = "three")]
    pub in_channels: usize,
    #[serde(default = "three")]
    pub out_channels: usize,
    #[serde(default = "default_vae_channels")]
    pub block_out_channels: Vec<usize>,
    #[serde(default = "two")]
    pub layers_per_block: usize,
    #[serde(default = "four")]
    pub latent_channels: usize,
    #[serde(default = "thirty_two")]
    pub norm_num_groups: usize,
    #[serde(default = "default_scaling")]
    pub scaling_factor: f64,
    #[serde(default)]
    pub shift_factor: Option<f64>,
    #[serde(default = "yes")]
    pub mid_block_add_attention: bool,
}

/// `config.json` of diffusers' `AutoencoderTiny` (TAESD); only the decoder's fields. Missing keys
/// take TAESD's values ([`Default`]), so the original single-file decoders need no config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
#[allow(missing_docs)]
pub struct TinyVaeConfig {
    pub latent_channels: usize,
    pub out_channels: usize,
    pub decoder_block_out_channels: Vec<usize>,
    pub num_decoder_blocks: Vec<usize>,
    pub upsampling_scaling_factor: usize,
    pub act_fn: String,
    pub upsample_fn: String,
}

impl Default for TinyVaeConfig {
    fn default() -> Self {
        Self {
            latent_channels: 4,
            out_channels: 3,
            decoder_block_out_channels: vec![64; 4],
            num_decoder_blocks: vec![3, 3, 3, 1],
            upsampling_scaling_factor: 2,
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
        }
    }
}

impl TinyVaeConfig {
    /// Refuses what Easel's decoder does not build (other activations or upsampling modes).
    pub fn check_supported(&self, path: &Path) -> Result<()> {
        let refuse = |what: String| {
            Err(Error::bad_file(
                format!("this tiny autoencoder uses {what}, which Easel does not support"),
                path,
            ))
        };
        if self.act_fn != "relu" {
            return refuse(format!("the activation {:?}", self.act_fn));
        }
        if self.upsample_fn != "nearest" {
            return refuse(format!("{:?} upsampling", self.upsample_fn));
        }
        if self.num_decoder_blocks.len() != self.decoder_block_out_channels.len()
            || self.num_decoder_blocks.is_empty()
        {
            return refuse("decoder block lists of different lengths".into());
        }
        Ok(())
    }
}

/// `text_encoder/config.json` of transformers' `CLIPTextModel`.
#[derive(Clone, Debug, Deserialize)]
#[allow(missing_docs)]
pub struct ClipConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    #[serde(default = "default_hidden")]
    pub hidden_size: usize,
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_ln_eps")]
    pub layer_norm_eps: f64,
}

/// Reads and parses a JSON config, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::not_found("model config", path),
        _ => Error::io("cannot read the config", e, path),
    })?;
    serde_json::from_str(&text)
        .map_err(|e| Error::bad_file(format!("the config is not valid JSON for this part ({e})"), path))
}

fn two() -> usize {
    2
}
fn three() -> usize {
    3
}
fn four() -> usize {
    4
}
fn thirty_two() -> usize {
    32
}
fn yes() -> bool {
    true
}
fn default_eps() -> f64 {
    1e-5
}
fn default_ln_eps() -> f64 {
    1e-5
}
fn default_unet_channels() -> Vec<usize> {
    vec![320, 640, 1280, 1280]
}
fn default_vae_channels() -> Vec<usize> {
    vec![64]
}
fn default_down_blocks() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        .map(String::from)
        .to_vec()
}
fn default_up_blocks() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}
fn default_head_dim() -> PerBlock {
    PerBlock::One(8)
}
fn default_transformer_layers() -> PerBlock {
    PerBlock::One(1)
}
fn default_cross_dim() -> usize {
    1280
}
fn default_sample_size() -> usize {
    64
}
fn default_scaling() -> f64 {
    0.18215
}
fn default_vocab() -> usize {
    49408
}
fn default_hidden() -> usize {
    512
}
fn default_intermediate() -> usize {
    2048
}
fn default_layers() -> usize {
    12
}
fn default_heads() -> usize {
    8
}
fn default_positions() -> usize {
    77
}
fn default_act() -> String {
    "quick_gelu".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd2_head_lists_are_per_block() {
        let cfg: UNetConfig = serde_json::from_str(
            r#"{"attention_head_dim": [5, 10, 20, 20], "use_linear_projection": true, "cross_attention_dim": 1024}"#,
        )
        .expect("valid config");
        assert_eq!(cfg.heads(0), 5);
        assert_eq!(cfg.heads(3), 20);
        assert!(cfg.use_linear_projection);
    }

    #[test]
    fn sdxl_is_refused_by_name() {
        let cfg: UNetConfig = serde_json::from_str(r#"{"addition_embed_type": "text_time"}"#).expect("valid");
        let err = cfg.check_supported(Path::new("unet/config.json")).expect_err("refused");
        assert!(err.to_string().contains("SDXL"));
    }
}
