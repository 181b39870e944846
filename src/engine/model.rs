//! A loaded Stable Diffusion model: the networks (SDXL has a second text encoder), the tokenizers
//! and the scheduler config, from a diffusers folder, a single-file checkpoint, or a hub id
//! already in the local cache.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use serde_json::{Map, Value};

use super::checkpoint;
use super::clip::ClipTextEncoder;
use super::config::{read_json, ClipConfig, UNetConfig, VaeConfig};
use super::family::{Family, SdxlLine};
use super::tokenizer::{Tokenizer, EOS};
use super::unet::UNet;
use super::vae::Vae;
use super::weights::{self, explain_load_error, TensorMap};
use crate::error::{Error, Result};

/// Everything needed to turn a prompt into a picture.
pub struct StableDiffusion {
    /// The generation the model belongs to.
    pub family: Family,
    /// For SDXL, the line of fine-tunes it belongs to, from its names (LoRAs rarely carry over
    /// between Pony, Illustrious/NoobAI and the base).
    pub line: Option<SdxlLine>,
    /// The denoiser.
    pub unet: UNet,
    /// The autoencoder.
    pub vae: Vae,
    /// The text encoder.
    pub text_encoder: ClipTextEncoder,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// SDXL's second text encoder (OpenCLIP bigG with its projection) and its tokenizer.
    pub second: Option<SecondEncoder>,
    /// Whether an empty negative prompt is encoded as zeros (SDXL's `force_zeros_for_empty_prompt`).
    pub zero_empty_negative: bool,
    /// The model's `scheduler_config.json` (or its family's published one).
    pub scheduler_config: Map<String, Value>,
    /// Where the model was loaded from.
    pub source: PathBuf,
    /// A short name for metadata (the file stem or folder name).
    pub name: String,
    /// Where tensors live.
    pub device: Device,
    /// The compute dtype.
    pub dtype: DType,
    /// The weights as loaded, kept so adapters are always merged from the original values.
    base: PristineWeights,
    /// The standalone autoencoder in use instead of the model's own (which is then not held:
    /// at 1024² SDXL every few hundred megabytes count).
    swapped_vae: Option<VaeSwap>,
    /// The tiny autoencoder (TAESD) when a request asked for one; it is held beside the full VAE,
    /// not in its place, so live frames and full-quality pictures alternate without reloading.
    tiny: Option<TinySwap>,
}

/// A tiny autoencoder a request chose, and whether the current request uses it.
struct TinySwap {
    path: PathBuf,
    hash: Option<String>,
    autoencoder: super::tiny_vae::TinyAutoencoder,
    active: bool,
}

/// A standalone autoencoder in use: its file or folder, and A1111's short hash of a file (taken
/// once, at the swap, rather than for every picture's metadata).
struct VaeSwap {
    path: PathBuf,
    hash: Option<String>,
}

/// SDXL's second text encoder and the tokenizer that feeds it (it pads with `!`, not the end).
pub struct SecondEncoder {
    /// The encoder.
    pub encoder: ClipTextEncoder,
    /// Its tokenizer.
    pub tokenizer: Tokenizer,
}

/// The pristine UNet and text-encoder weights, on the device in the compute dtype.
struct PristineWeights {
    unet: TensorMap,
    unet_config: UNetConfig,
    text: TensorMap,
    clip_config: ClipConfig,
    text_2: Option<(TensorMap, ClipConfig)>,
}

impl StableDiffusion {
    /// Loads a model from a diffusers folder or a single `.safetensors`/`.ckpt` file.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !path.exists() {
            return Err(Error::not_found("model", path));
        }
        if path.is_dir() {
            Self::load_folder(path, device, dtype)
        } else {
            Self::load_single_file(path, device, dtype)
        }
    }

    /// Whether the UNet takes the 9-channel inpainting input (latents, mask, masked image).
    pub fn is_inpainting(&self) -> bool {
        self.unet.config().in_channels == 9
    }

    /// Latent channels the UNet denoises.
    pub fn latent_channels(&self) -> usize {
        self.unet.config().out_channels
    }

    /// The UNet weights as loaded (diffusers names), before any adapter.
    pub fn base_unet_weights(&self) -> &TensorMap {
        &self.base.unet
    }

    /// The text-encoder weights as loaded (transformers names without `text_model.`).
    pub fn base_text_weights(&self) -> &TensorMap {
        &self.base.text
    }

    /// Decodes with the standalone autoencoder at `path` (sdxl-vae-fp16-fix, vae-ft-mse…), or
    /// with the model's own again when `None`. Asking for the one in use reads nothing.
    /// A tiny autoencoder (a TAESD folder or file) is loaded beside the full VAE and used for
    /// both encoding and decoding until another choice is made.
    pub fn use_vae(&mut self, path: Option<&Path>) -> Result<()> {
        // The tiny autoencoder held already is known without looking at its files again (live
        // painting asks for it every frame).
        let held = |p: &Path| self.tiny.as_ref().is_some_and(|t| t.path == p);
        if let Some(p) = path.filter(|p| held(p) || super::tiny_vae::is_tiny_autoencoder(p)) {
            return self.use_tiny(p);
        }
        if let Some(tiny) = &mut self.tiny {
            tiny.active = false;
        }
        if self.swapped_vae.as_ref().map(|s| s.path.as_path()) == path {
            return Ok(());
        }
        let (file, (w, cfg)) = match path {
            Some(p) => (p, super::vae_file::read(p, self.family, self.dtype)?),
            // The model's own, read again from its folder or file (only the VAE's tensors).
            None => {
                let (w, mut cfg) = super::vae_file::read(&self.source, self.family, self.dtype)?;
                if !self.source.is_dir() {
                    cfg.force_upcast = self.family == Family::Sdxl;
                }
                (self.source.as_path(), (w, cfg))
            }
        };
        // A failed read or build leaves the autoencoder in use as it was.
        self.vae = build_vae(w, &cfg, &self.device, vae_dtype(self.family, &cfg, self.dtype), file)?;
        self.swapped_vae = path.map(|p| VaeSwap { path: p.to_path_buf(), hash: short_hash(p) });
        Ok(())
    }

    /// Makes the tiny autoencoder at `path` the one in use, reading it unless it is held already.
    fn use_tiny(&mut self, path: &Path) -> Result<()> {
        if let Some(tiny) = self.tiny.as_mut().filter(|t| t.path == path) {
            tiny.active = true;
            return Ok(());
        }
        let autoencoder = super::tiny_vae::TinyAutoencoder::load(path, &self.device, self.dtype)?;
        let (theirs, ours) = (autoencoder.decoder.latent_channels, self.latent_channels());
        if theirs != ours {
            return Err(Error::bad_file(
                format!(
                    "this tiny autoencoder works on {theirs}-channel latents but the model's have {ours}; \
                     use TAESD for SD 1.x/2.x models and TAESDXL for SDXL"
                ),
                path,
            ));
        }
        self.tiny =
            Some(TinySwap { path: path.to_path_buf(), hash: short_hash(path), autoencoder, active: true });
        Ok(())
    }

    /// The tiny autoencoder, when the current request uses one instead of the VAE.
    pub fn tiny_autoencoder(&self) -> Option<&super::tiny_vae::TinyAutoencoder> {
        self.tiny.as_ref().filter(|t| t.active).map(|t| &t.autoencoder)
    }

    /// The standalone autoencoder in use (full or tiny), if any.
    pub fn vae_file(&self) -> Option<&Path> {
        match self.tiny.as_ref().filter(|t| t.active) {
            Some(tiny) => Some(tiny.path.as_path()),
            None => self.swapped_vae.as_ref().map(|s| s.path.as_path()),
        }
    }

    /// A1111's short hash (sha256, 10 digits) of the standalone autoencoder in use, when it is a file.
    pub fn vae_hash(&self) -> Option<&str> {
        match self.tiny.as_ref().filter(|t| t.active) {
            Some(tiny) => tiny.hash.as_deref(),
            None => self.swapped_vae.as_ref().and_then(|s| s.hash.as_deref()),
        }
    }

    /// SDXL's second text-encoder weights as loaded (transformers names without `text_model.`).
    pub fn base_text2_weights(&self) -> Option<&TensorMap> {
        self.base.text_2.as_ref().map(|(w, _)| w)
    }

    /// Rebuilds the UNet and text encoders from maps with the base weights' names and shapes
    /// (the base with adapters merged in). Building shares the tensors.
    pub fn rebuild(&mut self, unet: &TensorMap, text: &TensorMap, text_2: Option<&TensorMap>) -> Result<()> {
        self.unet = build_unet(unet, &self.base.unet_config, &self.device, self.dtype, &self.source)?;
        self.text_encoder = build_text(text, &self.base.clip_config, &self.device, self.dtype, &self.source)?;
        if let (Some(second), Some(w), Some((_, cfg))) = (&mut self.second, text_2, &self.base.text_2) {
            second.encoder = build_text(w, cfg, &self.device, self.dtype, &self.source)?;
        }
        Ok(())
    }

    fn load_folder(dir: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !dir.join("model_index.json").exists() {
            return Err(Error::bad_file(
                "this folder is not a diffusers model (it has no model_index.json); \
                 choose the folder that holds unet/, vae/ and text_encoder/",
                dir,
            ));
        }
        let index: Map<String, Value> = read_json(&dir.join("model_index.json"))?;
        if index.get("requires_aesthetics_score").and_then(Value::as_bool) == Some(true) {
            return Err(Error::bad_file(super::config::REFINER, dir));
        }
        let unet_cfg: UNetConfig = read_json(&dir.join("unet/config.json"))?;
        unet_cfg.check_supported(&dir.join("unet/config.json"))?;
        let vae_cfg: VaeConfig = read_json(&dir.join("vae/config.json"))?;
        vae_cfg.check_sizes(&dir.join("vae/config.json"))?;
        let clip_cfg: ClipConfig = read_json(&dir.join("text_encoder/config.json"))?;
        clip_cfg.check_sizes(&dir.join("text_encoder/config.json"))?;
        let scheduler_path = dir.join("scheduler/scheduler_config.json");
        let scheduler_config: Map<String, Value> = read_json(&scheduler_path)?;
        let tokenizer = Tokenizer::from_folder(&dir.join("tokenizer"))?;

        let (unet_file, unet_w) = read_part(dir, "unet", "diffusion_pytorch_model", dtype)?;
        let (vae_file, vae_w) = read_part(dir, "vae", "diffusion_pytorch_model", dtype)?;
        let (text_file, text_w) = read_part(dir, "text_encoder", "model", dtype)?;
        let family = Family::of_unet(&unet_cfg);
        let second = load_second_encoder(dir, family, &unet_cfg, device, dtype)?;
        let unet_w = weights::to_compute(unet_w, dtype, device)?;
        let text_w = weights::to_compute(strip_text_prefix(text_w), dtype, device)?;
        let unet = build_unet(&unet_w, &unet_cfg, device, dtype, &unet_file)?;
        let vae = build_vae(
            modernize_vae_keys(vae_w),
            &vae_cfg,
            device,
            vae_dtype(family, &vae_cfg, dtype),
            &vae_file,
        )?;
        let text_encoder = build_text(&text_w, &clip_cfg, device, dtype, &text_file)?;
        let zero_empty_negative = family == Family::Sdxl
            && index.get("force_zeros_for_empty_prompt").and_then(Value::as_bool).unwrap_or(true);
        let (second, text_2) = match second {
            Some((encoder, tokenizer, w, cfg)) => {
                (Some(SecondEncoder { encoder, tokenizer }), Some((w, cfg)))
            }
            None => (None, None),
        };
        let line = SdxlLine::of_model(family, [dir.to_string_lossy().as_ref()]);
        Ok(Self {
            family,
            line,
            unet,
            vae,
            text_encoder,
            tokenizer,
            second,
            zero_empty_negative,
            scheduler_config,
            source: dir.to_path_buf(),
            name: display_name(dir),
            device: device.clone(),
            dtype,
            base: PristineWeights {
                unet: unet_w,
                unet_config: unet_cfg,
                text: text_w,
                clip_config: clip_cfg,
                text_2,
            },
            swapped_vae: None,
            tiny: None,
        })
    }

    fn load_single_file(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        let markers: Vec<String>;
        let mut titles = vec![path.to_string_lossy().to_string()];
        let tensors = match ext.as_str() {
            "safetensors" => {
                // Refuse the refiner and non-models from the names alone, before gigabytes are read.
                let header = weights::read_safetensors_header(path)?;
                checkpoint::check_keys(header.names.iter().map(String::as_str), path)?;
                markers = header.names.iter().filter(|n| checkpoint::is_marker(n)).cloned().collect();
                titles.extend(header.metadata.get("modelspec.title").cloned());
                weights::read_safetensors_selected(path, Some(dtype), &checkpoint::is_model_tensor)?
            }
            "ckpt" | "pt" | "pth" | "bin" => {
                let tensors = weights::read_pickle_checkpoint(path)?;
                markers = tensors.keys().filter(|n| checkpoint::is_marker(n)).cloned().collect();
                tensors
            }
            _ => {
                return Err(Error::bad_file(
                    "this is not a model file Easel reads; give a diffusers folder, a .safetensors \
                     checkpoint or a .ckpt",
                    path,
                ))
            }
        };
        let parts = checkpoint::split(tensors, path)?;
        Self::from_parts(parts, &markers, &titles, path, device, dtype)
    }

    /// Builds a model from a checkpoint's parts under diffusers' names (a single file's, split;
    /// or random weights for benchmarks), with the bundled tokenizers. `markers` are the
    /// checkpoint's prediction-type keys, `titles` the names it goes by; `path` names it.
    pub fn from_parts(
        parts: checkpoint::SingleFileParts,
        markers: &[String],
        titles: &[String],
        path: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        parts.unet_config.check_supported(path)?;
        if parts.text.is_empty() {
            return Err(Error::bad_file(
                "this checkpoint has no text encoder; Easel needs a full model",
                path,
            ));
        }
        let pad = if parts.family == Family::Sd2 { 0 } else { EOS };
        let unet_w = weights::to_compute(parts.unet, dtype, device)?;
        let text_w = weights::to_compute(parts.text, dtype, device)?;
        let text_2 = match parts.text_2 {
            Some((w, cfg)) => {
                if let Some(pooled) = cfg.projection_dim {
                    parts.unet_config.check_pooled_width(pooled, path)?;
                }
                Some((weights::to_compute(w, dtype, device)?, cfg))
            }
            None if parts.family == Family::Sdxl => return Err(Error::bad_file(
                "this SDXL checkpoint has no second text encoder (OpenCLIP bigG); Easel needs a full model",
                path,
            )),
            None => None,
        };
        let second = match &text_2 {
            // SDXL's second tokenizer pads with "!" (id 0) after the end token.
            Some((w, cfg)) => Some(SecondEncoder {
                encoder: build_text(w, cfg, device, dtype, path)?,
                tokenizer: Tokenizer::bundled(0)?,
            }),
            None => None,
        };
        let vae_dtype = vae_dtype(parts.family, &parts.vae_config, dtype);
        let line = SdxlLine::of_model(parts.family, titles.iter().map(String::as_str));
        Ok(Self {
            family: parts.family,
            line,
            unet: build_unet(&unet_w, &parts.unet_config, device, dtype, path)?,
            vae: build_vae(parts.vae, &parts.vae_config, device, vae_dtype, path)?,
            text_encoder: build_text(&text_w, &parts.clip_config, device, dtype, path)?,
            tokenizer: Tokenizer::bundled(pad)?,
            second,
            zero_empty_negative: parts.family == Family::Sdxl,
            scheduler_config: checkpoint::with_markers(parts.family.scheduler_config(), markers),
            source: path.to_path_buf(),
            name: display_name(path),
            device: device.clone(),
            dtype,
            base: PristineWeights {
                unet: unet_w,
                unet_config: parts.unet_config,
                text: text_w,
                clip_config: parts.clip_config,
                text_2,
            },
            swapped_vae: None,
            tiny: None,
        })
    }
}

/// The pieces of SDXL's second text encoder from a diffusers folder: the encoder, its tokenizer,
/// its weights (kept pristine for adapters) and its config.
type SecondParts = (ClipTextEncoder, Tokenizer, TensorMap, ClipConfig);

/// Loads `text_encoder_2/` and `tokenizer_2/` when the folder is SDXL's; other families have none.
fn load_second_encoder(
    dir: &Path,
    family: Family,
    unet_cfg: &UNetConfig,
    device: &Device,
    dtype: DType,
) -> Result<Option<SecondParts>> {
    let folder = dir.join("text_encoder_2");
    if family != Family::Sdxl {
        return Ok(None);
    }
    if !folder.join("config.json").exists() {
        return Err(Error::bad_file(
            "this SDXL folder has no text_encoder_2/ (OpenCLIP bigG); SDXL needs both text encoders",
            dir,
        ));
    }
    let cfg: ClipConfig = read_json(&folder.join("config.json"))?;
    cfg.check_sizes(&folder.join("config.json"))?;
    let pooled = cfg.projection_dim.ok_or_else(|| {
        Error::bad_file("text_encoder_2 has no projection_dim; SDXL's second encoder needs one", &folder)
    })?;
    unet_cfg.check_pooled_width(pooled, &dir.join("unet/config.json"))?;
    let (file, w) = read_part(dir, "text_encoder_2", "model", dtype)?;
    let w = weights::to_compute(strip_text_prefix(w), dtype, device)?;
    let encoder = build_text(&w, &cfg, device, dtype, &file)?;
    if encoder.projection_dim().is_none() {
        return Err(Error::bad_file(
            "SDXL's second text encoder must have its text_projection (CLIPTextModelWithProjection)",
            &file,
        ));
    }
    let tokenizer = Tokenizer::from_folder(&dir.join("tokenizer_2"))?;
    Ok(Some((encoder, tokenizer, w, cfg)))
}

/// SDXL's autoencoder overflows in float16, so it decodes in float32 there (diffusers'
/// `force_upcast`); VAEs marked safe (the fp16-fix) and other families keep the compute dtype.
fn vae_dtype(family: Family, cfg: &VaeConfig, dtype: DType) -> DType {
    if family == Family::Sdxl && dtype == DType::F16 && cfg.force_upcast {
        DType::F32
    } else {
        dtype
    }
}

fn build_unet(w: &TensorMap, cfg: &UNetConfig, device: &Device, dtype: DType, file: &Path) -> Result<UNet> {
    let vb = weights::var_builder(w, dtype, device);
    UNet::new(vb, cfg).map_err(|e| explain_load_error("UNet", file, e))
}

fn build_vae(w: TensorMap, cfg: &VaeConfig, device: &Device, dtype: DType, file: &Path) -> Result<Vae> {
    cfg.check_sizes(file)?;
    let vb = weights::var_builder(&weights::to_compute(w, dtype, device)?, dtype, device);
    Vae::new(vb, cfg).map_err(|e| explain_load_error("VAE", file, e))
}

fn build_text(
    w: &TensorMap,
    cfg: &ClipConfig,
    device: &Device,
    dtype: DType,
    file: &Path,
) -> Result<ClipTextEncoder> {
    cfg.check_sizes(file)?;
    let vb = weights::var_builder(w, dtype, device);
    ClipTextEncoder::new(vb, cfg).map_err(|e| explain_load_error("text encoder", file, e))
}

/// The folder or file name without extension, as A1111's `Model:` field shows it.
pub fn display_name(path: &Path) -> String {
    path.file_stem().and_then(|s| s.to_str()).unwrap_or("model").to_string()
}

/// Reads a component's weights, preferring full-precision safetensors, then the fp16 variant,
/// then PyTorch `.bin`; safetensors arrive already in `dtype`.
pub(crate) fn read_part(dir: &Path, part: &str, stem: &str, dtype: DType) -> Result<(PathBuf, TensorMap)> {
    let folder = dir.join(part);
    let candidates = [
        format!("{stem}.safetensors"),
        format!("{stem}.fp16.safetensors"),
        format!("{stem}.bf16.safetensors"),
        format!("{stem}.bin"),
        format!("{stem}.fp16.bin"),
    ];
    for name in &candidates {
        let path = folder.join(name);
        if path.exists() {
            let tensors = if name.ends_with(".safetensors") {
                weights::read_safetensors_selected(&path, Some(dtype), &|_| true)?
            } else {
                weights::read_pickle_checkpoint(&path)?
            };
            return Ok((path, tensors));
        }
    }
    Err(Error::bad_file(
        format!("no weights found for the {part} (looked for {})", candidates.join(", ")),
        folder,
    ))
}

/// transformers 4 saves text-encoder keys under `text_model.`; transformers 5 does not.
fn strip_text_prefix(w: TensorMap) -> TensorMap {
    w.into_iter()
        .map(|(k, t)| match k.strip_prefix("text_model.") {
            Some(rest) => (rest.to_string(), t),
            None => (k, t),
        })
        .collect()
}

/// Older diffusers saved the VAE attention as `query/key/value/proj_attn`.
pub(crate) fn modernize_vae_keys(w: TensorMap) -> TensorMap {
    w.into_iter()
        .map(|(k, t)| {
            let k = k
                .replace(".attentions.0.query.", ".attentions.0.to_q.")
                .replace(".attentions.0.key.", ".attentions.0.to_k.")
                .replace(".attentions.0.value.", ".attentions.0.to_v.")
                .replace(".attentions.0.proj_attn.", ".attentions.0.to_out.0.");
            (k, t)
        })
        .collect()
}

/// A1111's short hash of an autoencoder file (the first 10 hex digits of its sha256); folders
/// have none.
fn short_hash(path: &Path) -> Option<String> {
    path.is_file().then(|| crate::files::sha256_hex(path).ok()).flatten().map(|h| h[..10].to_string())
}
