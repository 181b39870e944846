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
    /// SDXL: width of the sinusoidal embedding of each micro-conditioning number.
    #[serde(default)]
    pub addition_time_embed_dim: Option<usize>,
    /// SDXL: input width of the added embedding (pooled text + six time embeddings).
    #[serde(default)]
    pub projection_class_embeddings_input_dim: Option<usize>,
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
        match self.addition_embed_type.as_deref() {
            None => {}
            Some("text_time") => self.check_text_time(path)?,
            Some(other) => return refuse(&format!("the added conditioning {other:?}")),
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
        self.check_sizes(path)?;
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

impl UNetConfig {
    /// Whether the UNet takes SDXL's added text/time embedding.
    pub fn has_text_time(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// SDXL's added embedding needs both of its widths; the refiner's (five numbers beside the
    /// pooled text, its aesthetic score among them) is refused by name once the pooled width is
    /// known, in [`UNetConfig::check_pooled_width`].
    fn check_text_time(&self, path: &Path) -> Result<()> {
        match (self.addition_time_embed_dim, self.projection_class_embeddings_input_dim) {
            (Some(t), Some(p)) if t > 0 && t.is_multiple_of(2) && p > 6 * t => Ok(()),
            _ => Err(Error::bad_file(
                "the UNet config asks for SDXL's text/time embedding but its addition_time_embed_dim \
                 and projection_class_embeddings_input_dim are missing or do not fit",
                path,
            )),
        }
    }

    /// Checks that the added embedding reads `pooled` text features plus six time embeddings,
    /// as the SDXL base and its fine-tunes do; the refiner (five) is refused by name.
    pub fn check_pooled_width(&self, pooled: usize, path: &Path) -> Result<()> {
        let (Some(t), Some(p)) = (self.addition_time_embed_dim, self.projection_class_embeddings_input_dim)
        else {
            return Ok(());
        };
        if p == pooled + 6 * t {
            return Ok(());
        }
        if p == pooled + 5 * t {
            return Err(Error::bad_file(REFINER, path));
        }
        Err(Error::bad_file(
            format!(
                "the UNet's added embedding reads {p} numbers, but the text encoder gives {pooled} pooled \
                 features plus 6 × {t} time embeddings; the parts of this model do not belong together"
            ),
            path,
        ))
    }

    /// Sizes the model is built from: a zero or a list of the wrong length would otherwise
    /// divide by zero or index past the end while the UNet is put together.
    fn check_sizes(&self, path: &Path) -> Result<()> {
        let bad = |what: String| Err(Error::bad_file(format!("the UNet config is not usable: {what}"), path));
        let n = self.block_out_channels.len();
        positive(&[
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("cross_attention_dim", self.cross_attention_dim),
            ("norm_num_groups", self.norm_num_groups),
        ])
        .or_else(bad)?;
        check_eps(self.norm_eps).or_else(bad)?;
        for (key, list) in [
            ("attention_head_dim", Some(&self.attention_head_dim)),
            ("num_attention_heads", self.num_attention_heads.as_ref()),
            ("transformer_layers_per_block", Some(&self.transformer_layers_per_block)),
        ] {
            match list {
                Some(PerBlock::Each(v)) if v.len() != n => {
                    return bad(format!("{key} lists {} values for {n} blocks", v.len()));
                }
                Some(PerBlock::Each(v)) if v.contains(&0) => return bad(format!("{key} holds a 0")),
                Some(PerBlock::One(0)) => return bad(format!("{key} is 0")),
                _ => {}
            }
        }
        for (i, &channels) in self.block_out_channels.iter().enumerate() {
            if channels == 0 || !channels.is_multiple_of(self.norm_num_groups) {
                return bad(format!(
                    "block {i} has {channels} channels, not a positive multiple of norm_num_groups ({})",
                    self.norm_num_groups
                ));
            }
            if !channels.is_multiple_of(self.heads(i)) {
                return bad(format!(
                    "block {i}'s {channels} channels do not split into {} heads",
                    self.heads(i)
                ));
            }
        }
        Ok(())
    }
}

/// Why the SDXL refiner is refused, in one sentence.
pub const REFINER: &str = "this is the SDXL refiner, which Easel does not run; it only polishes pictures \
     an SDXL base model made, so load the SDXL base model (or a fine-tune of it) instead";

/// `Err` naming the first key whose value is 0.
fn positive(values: &[(&str, usize)]) -> std::result::Result<(), String> {
    match values.iter().find(|(_, v)| *v == 0) {
        Some((key, _)) => Err(format!("{key} is 0")),
        None => Ok(()),
    }
}

/// A normalisation epsilon must be a small positive number.
fn check_eps(eps: f64) -> std::result::Result<(), String> {
    if eps.is_finite() && eps > 0.0 && eps < 1.0 {
        Ok(())
    } else {
        Err(format!("the normalisation epsilon {eps} is not a small positive number"))
    }
}

/// Channel counts listed per block: present, and each a positive multiple of `groups`.
fn check_channels(key: &str, channels: &[usize], groups: usize) -> std::result::Result<(), String> {
    if channels.is_empty() {
        return Err(format!("{key} is empty"));
    }
    match channels.iter().find(|&&c| c == 0 || !c.is_multiple_of(groups.max(1))) {
        Some(c) => Err(format!("{key} holds {c}, not a positive multiple of {groups}")),
        None => Ok(()),
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
    /// Whether the autoencoder overflows in float16 and must decode in float32 (SDXL's does;
    /// diffusers' default, which the SDXL pipelines honour and fp16-fix VAEs turn off).
    #[serde(default = "yes")]
    pub force_upcast: bool,
}

impl VaeConfig {
    /// Refuses sizes the autoencoder cannot be built from, with a sentence naming the key.
    pub fn check_sizes(&self, path: &Path) -> Result<()> {
        let checked = positive(&[
            ("in_channels", self.in_channels),
            ("out_channels", self.out_channels),
            ("layers_per_block", self.layers_per_block),
            ("latent_channels", self.latent_channels),
            ("norm_num_groups", self.norm_num_groups),
        ])
        .and_then(|()| check_channels("block_out_channels", &self.block_out_channels, self.norm_num_groups))
        .and_then(|()| match self.scaling_factor {
            f if f.is_finite() && f != 0.0 => Ok(()),
            f => Err(format!("scaling_factor {f} is not a non-zero number")),
        })
        .and_then(|()| match self.shift_factor {
            Some(f) if !f.is_finite() => Err(format!("shift_factor {f} is not a number")),
            _ => Ok(()),
        });
        checked.map_err(|what| Error::bad_file(format!("the VAE config is not usable: {what}"), path))
    }
}

/// `config.json` of diffusers' `AutoencoderTiny` (TAESD). Missing keys take TAESD's values
/// ([`Default`]), so the original single files need no config.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default)]
#[allow(missing_docs)]
pub struct TinyVaeConfig {
    pub latent_channels: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub encoder_block_out_channels: Vec<usize>,
    pub num_encoder_blocks: Vec<usize>,
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
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            num_encoder_blocks: vec![1, 3, 3, 3],
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
        positive(&[
            ("latent_channels", self.latent_channels),
            ("out_channels", self.out_channels),
            ("upsampling_scaling_factor", self.upsampling_scaling_factor),
        ])
        .and_then(|()| check_channels("decoder_block_out_channels", &self.decoder_block_out_channels, 1))
        .and_then(|()| check_channels("encoder_block_out_channels", &self.encoder_block_out_channels, 1))
        .and_then(|()| {
            if self.num_encoder_blocks.len() == self.encoder_block_out_channels.len() {
                Ok(())
            } else {
                Err("encoder block lists of different lengths".to_string())
            }
        })
        .map_err(|what| Error::bad_file(format!("the tiny autoencoder's config is not usable: {what}"), path))
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
    /// Width of `text_projection` (`CLIPTextModelWithProjection`, SDXL's second encoder).
    #[serde(default)]
    pub projection_dim: Option<usize>,
}

impl ClipConfig {
    /// Refuses sizes the text encoder cannot be built from, with a sentence naming the key.
    pub fn check_sizes(&self, path: &Path) -> Result<()> {
        positive(&[
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ])
        .and_then(|()| check_eps(self.layer_norm_eps))
        .and_then(|()| match self.hidden_size.is_multiple_of(self.num_attention_heads) {
            true => Ok(()),
            false => Err(format!(
                "hidden_size {} does not split into {} heads",
                self.hidden_size, self.num_attention_heads
            )),
        })
        .map_err(|what| Error::bad_file(format!("the text encoder config is not usable: {what}"), path))
    }
}

/// Reads and parses a JSON config, naming the file in any error.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = crate::files::read_text(path).map_err(|e| match e.kind() {
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
    fn sdxl_text_time_is_checked_and_the_refiner_refused() {
        let cfg: UNetConfig = serde_json::from_str(r#"{"addition_embed_type": "text_time"}"#).expect("valid");
        let err = cfg.check_supported(Path::new("unet/config.json")).expect_err("refused");
        assert!(err.to_string().contains("addition_time_embed_dim"), "{err}");
        let base: UNetConfig = serde_json::from_str(
            r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816, "cross_attention_dim": 2048}"#,
        )
        .expect("valid");
        base.check_supported(Path::new("u")).expect("SDXL base");
        base.check_pooled_width(1280, Path::new("u")).expect("SDXL base");
        let refiner: UNetConfig = serde_json::from_str(
            r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2560, "cross_attention_dim": 1280}"#,
        )
        .expect("valid");
        let err = refiner.check_pooled_width(1280, Path::new("u")).expect_err("refiner").to_string();
        assert!(err.contains("SDXL refiner"), "{err}");
        let other: UNetConfig = serde_json::from_str(r#"{"addition_embed_type": "image"}"#).expect("valid");
        assert!(other.check_supported(Path::new("u")).is_err());
    }

    #[test]
    fn zero_sizes_and_short_lists_are_refused_by_key() {
        let unet = |json: &str| {
            let cfg: UNetConfig = serde_json::from_str(json).expect("valid JSON");
            cfg.check_supported(Path::new("unet/config.json")).expect_err(json).to_string()
        };
        assert!(unet(r#"{"attention_head_dim": 0}"#).contains("attention_head_dim is 0"));
        assert!(unet(r#"{"num_attention_heads": 0}"#).contains("num_attention_heads is 0"));
        assert!(unet(r#"{"block_out_channels": []}"#).contains("numbers of blocks"));
        assert!(unet(r#"{"attention_head_dim": [8, 8]}"#).contains("2 values for 4 blocks"));
        assert!(unet(r#"{"norm_num_groups": 0}"#).contains("norm_num_groups is 0"));
        assert!(unet(r#"{"norm_eps": -1}"#).contains("epsilon"));
        let vae: VaeConfig = serde_json::from_str(r#"{"block_out_channels": []}"#).expect("valid");
        let err = vae.check_sizes(Path::new("vae/config.json")).expect_err("empty").to_string();
        assert!(err.contains("block_out_channels is empty") && err.contains("vae/config.json"), "{err}");
        let clip: ClipConfig = serde_json::from_str(r#"{"num_attention_heads": 0}"#).expect("valid");
        assert!(clip.check_sizes(Path::new("c.json")).is_err());
        let clip: ClipConfig =
            serde_json::from_str(r#"{"hidden_size": 100, "num_attention_heads": 3}"#).expect("ok");
        assert!(clip.check_sizes(Path::new("c.json")).expect_err("100/3").to_string().contains("3 heads"));
    }

    #[test]
    fn the_shipped_defaults_pass() {
        let unet: UNetConfig = serde_json::from_str("{}").expect("valid");
        unet.check_supported(Path::new("u")).expect("SD 1.5 defaults");
        let vae: VaeConfig = serde_json::from_str("{}").expect("valid");
        vae.check_sizes(Path::new("v")).expect("defaults");
        let clip: ClipConfig = serde_json::from_str("{}").expect("valid");
        clip.check_sizes(Path::new("c")).expect("defaults");
        TinyVaeConfig::default().check_supported(Path::new("t")).expect("TAESD");
    }
}
