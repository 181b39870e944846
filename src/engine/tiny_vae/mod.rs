//! The tiny autoencoder: TAESD (diffusers' `AutoencoderTiny`), plain 3×3 convolutions and ReLUs
//! that turn SD latents into a picture about 18 times more cheaply than the VAE, and (the
//! encoder, `encoder.rs`) pictures into latents. Step previews use the decoder; live painting uses
//! both, as the autoencoder of its img2img frames (`--vae` pointing at a TAESD does the same for
//! `easel generate`). Finished gallery pictures otherwise go through the full VAE.
//!
//! It reads a diffusers folder (`config.json` + `diffusion_pytorch_model.safetensors`, as on the hub
//! at madebyollin/taesd) or the original repository's single files (`taesd_decoder.safetensors`
//! or `.pth`, whose layer numbers are one higher because its first module is the clamp, and
//! `taesd_encoder.*` beside it).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::config::{read_json, TinyVaeConfig};
use super::ops::{add_into_fresh, Conv2d};
use super::weights::{self, explain_load_error, TensorMap};
use crate::error::{Error, Result};

pub mod encoder;

pub use encoder::TinyEncoder;

/// The diffusers name prefix of the decoder's layers.
const LAYERS: &str = "decoder.layers";

/// Three convolutions with ReLUs between, added to the input, then a ReLU.
struct TinyBlock {
    convs: [Conv2d; 3],
    /// A 1×1 projection when the block changes the channel count.
    skip: Option<Conv2d>,
}

impl TinyBlock {
    fn new(vb: VarBuilder, in_ch: usize, out_ch: usize) -> Result<Self> {
        let conv = vb.pp("conv");
        Ok(Self {
            convs: [
                Conv2d::new(conv.pp("0"), in_ch, out_ch, 3, 1, 1)?,
                Conv2d::new(conv.pp("2"), out_ch, out_ch, 3, 1, 1)?,
                Conv2d::new(conv.pp("4"), out_ch, out_ch, 3, 1, 1)?,
            ],
            skip: if in_ch != out_ch {
                Some(Conv2d::no_bias(vb.pp("skip"), in_ch, out_ch, 1)?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.convs[0].forward(x)?.relu()?;
        let h = self.convs[1].forward(&h)?.relu()?;
        let h = self.convs[2].forward(&h)?;
        let sum = match &self.skip {
            Some(skip) => add_into_fresh(h, &skip.forward(x)?)?,
            None => add_into_fresh(h, x)?,
        };
        Ok(sum.relu()?)
    }
}

/// One resolution: its blocks, then (except at the last) ×2 nearest upsampling, then a convolution.
struct Level {
    blocks: Vec<TinyBlock>,
    upsample: bool,
    conv: Conv2d,
}

/// The TAESD decoder.
pub struct TinyDecoder {
    conv_in: Conv2d,
    levels: Vec<Level>,
    scale: usize,
    /// Channels of the latents it reads.
    pub latent_channels: usize,
    /// The weights file, for messages.
    pub source: PathBuf,
}

impl TinyDecoder {
    /// Builds the decoder `cfg` describes from weights named as diffusers names them, without the
    /// `decoder.layers` prefix (`0.weight`, `2.conv.0.weight`, …).
    pub fn new(vb: VarBuilder, cfg: &TinyVaeConfig, source: PathBuf) -> Result<Self> {
        cfg.check_supported(&source)?;
        let ch = &cfg.decoder_block_out_channels;
        // Layer numbers follow diffusers' Sequential: the input conv, its ReLU, then per level the
        // blocks, the upsampling (not the last level) and a conv (bias only on the last).
        let conv_in = Conv2d::new(vb.pp("0"), cfg.latent_channels, ch[0], 3, 1, 1)?;
        let mut index = 2;
        let mut levels = Vec::with_capacity(ch.len());
        for (i, (&width, &count)) in ch.iter().zip(&cfg.num_decoder_blocks).enumerate() {
            let last = i + 1 == ch.len();
            let mut blocks = Vec::with_capacity(count);
            for _ in 0..count {
                blocks.push(TinyBlock::new(vb.pp(index.to_string()), width, width)?);
                index += 1;
            }
            if !last {
                index += 1;
            }
            let vb = vb.pp(index.to_string());
            let conv = if last {
                Conv2d::new(vb, width, cfg.out_channels, 3, 1, 1)?
            } else {
                Conv2d::no_bias(vb, width, width, 3)?
            };
            index += 1;
            levels.push(Level { blocks, upsample: !last, conv });
        }
        Ok(Self {
            conv_in,
            levels,
            scale: cfg.upsampling_scaling_factor,
            latent_channels: cfg.latent_channels,
            source,
        })
    }

    /// Loads a diffusers `AutoencoderTiny` folder or an original single decoder file.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        if !path.exists() {
            return Err(Error::not_found("preview decoder", path));
        }
        let (cfg, file) = if path.is_dir() {
            let cfg_path = path.join("config.json");
            let cfg: TinyVaeConfig = read_json(&cfg_path)?;
            cfg.check_supported(&cfg_path)?;
            let file = ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"]
                .iter()
                .map(|name| path.join(name))
                .find(|p| p.exists())
                .ok_or_else(|| {
                    Error::bad_file(
                        "this folder has no diffusion_pytorch_model.safetensors for the preview decoder",
                        path,
                    )
                })?;
            (Some(cfg), file)
        } else {
            (None, path.to_path_buf())
        };
        let tensors = read_decoder_weights(&file, dtype)?;
        let cfg = match cfg {
            Some(cfg) => cfg,
            None => config_of_single_file(&tensors, &file)?,
        };
        let tensors = weights::to_compute(tensors, dtype, device)?;
        let vb = weights::var_builder(&tensors, dtype, device).pp(LAYERS);
        Self::new(vb, &cfg, file.clone()).map_err(|e| explain_load_error("preview decoder", &file, e))
    }

    /// Decodes scaled latents (the UNet's, `[b, 4, h, w]`) to pixels in [-1, 1] (unclamped),
    /// `[b, 3, h·8, w·8]`, as `AutoencoderTiny.decode` does.
    pub fn decode(&self, latents: &Tensor) -> Result<Tensor> {
        // TAESD's own clamp: a soft limit to ±3.
        let x = ((latents / 3.0)?.tanh()? * 3.0)?;
        let mut h = self.conv_in.forward(&x)?.relu()?;
        for level in &self.levels {
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
            h = if level.upsample {
                let (_, _, hh, ww) = h.dims4()?;
                level.conv.forward_enlarged(&h, (hh * self.scale, ww * self.scale))?
            } else {
                level.conv.forward(&h)?
            };
        }
        // The network outputs [0, 1]; diffusers shifts it to the VAE's [-1, 1].
        Ok(h.affine(2.0, -1.0)?)
    }
}

/// TAESD whole: the decoder, and the encoder when the files have it (a diffusers folder always
/// does; an original `taesd_decoder` file does when `taesd_encoder` lies beside it).
pub struct TinyAutoencoder {
    /// Latents to pixels.
    pub decoder: TinyDecoder,
    /// Pixels to latents.
    pub encoder: Option<TinyEncoder>,
}

impl TinyAutoencoder {
    /// Loads a diffusers `AutoencoderTiny` folder, or an original decoder file with its encoder
    /// file beside it when there is one.
    pub fn load(path: &Path, device: &Device, dtype: DType) -> Result<Self> {
        let decoder = TinyDecoder::load(path, device, dtype)?;
        let encoder = match encoder_file(path, &decoder.source) {
            Some(file) => load_encoder(path, &file, device, dtype)?,
            None => None,
        };
        Ok(Self { decoder, encoder })
    }

    /// The encoder, or a sentence saying where to get one.
    pub fn encoder(&self) -> Result<&TinyEncoder> {
        self.encoder.as_ref().ok_or_else(|| {
            Error::bad_file(
                "this tiny autoencoder has only its decoder, so it cannot encode a start picture; use \
                 the diffusers folder (madebyollin/taesd, taesdxl) or put taesd_encoder.safetensors \
                 beside the decoder",
                &self.decoder.source,
            )
        })
    }
}

/// Whether `path` is a tiny autoencoder rather than a full VAE: a folder whose config names
/// `AutoencoderTiny`, or a file named after TAESD or holding its layer names.
pub fn is_tiny_autoencoder(path: &Path) -> bool {
    if path.is_dir() {
        let config: Option<serde_json::Value> =
            std::fs::read(path.join("config.json")).ok().and_then(|b| serde_json::from_slice(&b).ok());
        return config.is_some_and(|c| c["_class_name"] == "AutoencoderTiny");
    }
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    name.contains("taesd")
        || weights::read_safetensors_header(path).is_ok_and(|header| {
            header.names.iter().any(|n| n.starts_with("decoder.layers.") || n.starts_with("encoder.layers."))
        })
}

/// The file the encoder is in: a folder's weights file, or `…encoder…` beside `…decoder…`.
fn encoder_file(path: &Path, decoder_file: &Path) -> Option<PathBuf> {
    if path.is_dir() {
        return Some(decoder_file.to_path_buf());
    }
    let name = decoder_file.file_name()?.to_str()?;
    let sibling = decoder_file.with_file_name(name.replace("decoder", "encoder"));
    (name.contains("decoder") && sibling.is_file()).then_some(sibling)
}

fn load_encoder(path: &Path, file: &Path, device: &Device, dtype: DType) -> Result<Option<TinyEncoder>> {
    let tensors = read_weights(file, dtype, "decoder.")?;
    let Some(tensors) = encoder::encoder_tensors(tensors) else { return Ok(None) };
    let cfg = if path.is_dir() {
        read_json::<TinyVaeConfig>(&path.join("config.json"))?
    } else {
        encoder::config_of_single_file(&tensors, file)?
    };
    let tensors = weights::to_compute(tensors, dtype, device)?;
    TinyEncoder::from_tensors(&tensors, &cfg, file, device, dtype).map(Some)
}

/// A TAESD file's tensors (a pickle's all; a safetensors file's without those under `skip`, the
/// other half's, which are left unread).
fn read_weights(file: &Path, dtype: DType, skip: &str) -> Result<TensorMap> {
    match file.extension().and_then(|e| e.to_str()) {
        Some("pth" | "pt" | "ckpt" | "bin") => weights::read_pickle_checkpoint(file),
        _ => weights::read_safetensors_selected(file, Some(dtype), &|name| !name.starts_with(skip)),
    }
}

/// The decoder's tensors under diffusers' names, encoder tensors skipped unread.
fn read_decoder_weights(file: &Path, dtype: DType) -> Result<TensorMap> {
    let tensors = read_weights(file, dtype, "encoder.")?;
    if tensors.keys().any(|k| k.starts_with("decoder.layers.")) {
        return Ok(tensors.into_iter().filter(|(k, _)| k.starts_with("decoder.")).collect());
    }
    // The original layout: `<n>.…`, one above diffusers' numbering (its layer 0 is the clamp).
    let mut renamed = TensorMap::with_capacity(tensors.len());
    for (key, t) in tensors {
        let shifted = key
            .split_once('.')
            .and_then(|(n, rest)| Some((n.parse::<usize>().ok()?.checked_sub(1)?, rest)))
            .map(|(n, rest)| format!("{LAYERS}.{n}.{rest}"));
        match shifted {
            Some(name) => renamed.insert(name, t),
            None => {
                return Err(Error::bad_file(
                    format!(
                        "this is not a TAESD decoder (it has a tensor named {key:?}); choose \
                         taesd_decoder.safetensors or a diffusers AutoencoderTiny folder"
                    ),
                    file,
                ))
            }
        };
    }
    Ok(renamed)
}

/// TAESD's topology, with the latent channels and width read from the first convolution.
fn config_of_single_file(tensors: &TensorMap, file: &Path) -> Result<TinyVaeConfig> {
    let first = tensors.get(&format!("{LAYERS}.0.weight")).ok_or_else(|| {
        Error::bad_file(
            "this file has no first decoder convolution; it may be an encoder (taesd_encoder) — \
             choose taesd_decoder.safetensors",
            file,
        )
    })?;
    let (width, latent_channels, _, _) = first.dims4()?;
    Ok(TinyVaeConfig {
        latent_channels,
        decoder_block_out_channels: vec![width; 4],
        ..TinyVaeConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_decoder(cfg: &TinyVaeConfig) -> Result<TinyDecoder> {
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        TinyDecoder::new(vb, cfg, PathBuf::from("random"))
    }

    #[test]
    fn output_is_eight_times_larger_with_the_configured_channels() -> Result<()> {
        let cfg = TinyVaeConfig {
            decoder_block_out_channels: vec![8; 4],
            num_decoder_blocks: vec![1, 2, 1, 1],
            ..TinyVaeConfig::default()
        };
        let decoder = random_decoder(&cfg)?;
        let latents = Tensor::zeros((1, 4, 3, 5), DType::F32, &Device::Cpu)?;
        assert_eq!(decoder.decode(&latents)?.dims(), &[1, 3, 24, 40]);
        Ok(())
    }

    #[test]
    fn single_files_take_their_width_from_the_first_convolution() -> Result<()> {
        let mut tensors = TensorMap::new();
        tensors
            .insert(format!("{LAYERS}.0.weight"), Tensor::zeros((32, 16, 3, 3), DType::F32, &Device::Cpu)?);
        let cfg = config_of_single_file(&tensors, Path::new("x"))?;
        assert_eq!((cfg.latent_channels, cfg.decoder_block_out_channels), (16, vec![32; 4]));
        assert!(config_of_single_file(&TensorMap::new(), Path::new("enc.safetensors"))
            .expect_err("no decoder")
            .to_string()
            .contains("taesd_decoder"));
        Ok(())
    }
}
