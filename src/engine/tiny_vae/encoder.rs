//! TAESD's encoder (diffusers' `EncoderTiny`): pixels to latents in one pass of 3×3 convolutions,
//! about as cheap as the decoder, so live painting can turn every canvas state into latents
//! without the full VAE. Its latents are the UNet's own: no distribution is sampled and no
//! scaling factor applies (`AutoencoderTiny`'s is 1), so an img2img run that uses it draws no
//! random numbers for the encode, exactly as diffusers' pipelines with `pipe.vae = AutoencoderTiny`.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use super::TinyBlock;
use crate::engine::config::TinyVaeConfig;
use crate::engine::ops::Conv2d;
use crate::engine::weights::{self, explain_load_error, TensorMap};
use crate::error::{Error, Result};

/// The diffusers name prefix of the encoder's layers.
const LAYERS: &str = "encoder.layers";

/// One resolution: a convolution (halving the picture after the first level), then its blocks.
struct Level {
    conv: Conv2d,
    blocks: Vec<TinyBlock>,
}

/// The TAESD encoder.
pub struct TinyEncoder {
    levels: Vec<Level>,
    conv_out: Conv2d,
    /// The weights file, for messages.
    pub source: PathBuf,
}

impl TinyEncoder {
    /// Builds the encoder `cfg` describes from weights named as diffusers names them, without the
    /// `encoder.layers` prefix (`0.weight`, `1.conv.0.weight`, …).
    pub fn new(vb: VarBuilder, cfg: &TinyVaeConfig, source: PathBuf) -> Result<Self> {
        let widths = &cfg.encoder_block_out_channels;
        let mut index = 0;
        let mut levels = Vec::with_capacity(widths.len());
        let mut previous = cfg.in_channels;
        for (i, (&width, &count)) in widths.iter().zip(&cfg.num_encoder_blocks).enumerate() {
            let at = vb.pp(index.to_string());
            let conv = if i == 0 {
                Conv2d::new(at, previous, width, 3, 1, 1)?
            } else {
                Conv2d::strided_no_bias(at, previous, width, 3, 2)?
            };
            index += 1;
            let mut blocks = Vec::with_capacity(count);
            for _ in 0..count {
                blocks.push(TinyBlock::new(vb.pp(index.to_string()), width, width)?);
                index += 1;
            }
            levels.push(Level { conv, blocks });
            previous = width;
        }
        let conv_out = Conv2d::new(vb.pp(index.to_string()), previous, cfg.latent_channels, 3, 1, 1)?;
        Ok(Self { levels, conv_out, source })
    }

    /// Builds the encoder from `tensors` (diffusers' names, `encoder.layers.…`), reporting a
    /// missing or misshapen tensor against `file`.
    pub fn from_tensors(
        tensors: &TensorMap,
        cfg: &TinyVaeConfig,
        file: &Path,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let vb = weights::var_builder(tensors, dtype, device).pp(LAYERS);
        Self::new(vb, cfg, file.to_path_buf()).map_err(|e| explain_load_error("tiny encoder", file, e))
    }

    /// Encodes pixels `[b, 3, h, w]` in [-1, 1] to latents `[b, c, h/8, w/8]`, as
    /// `AutoencoderTiny.encode(...).latents`.
    pub fn encode(&self, pixels: &Tensor) -> Result<Tensor> {
        // TAESD reads pixels in [0, 1].
        let mut h = pixels.affine(0.5, 0.5)?;
        for level in &self.levels {
            h = level.conv.forward(&h)?;
            for block in &level.blocks {
                h = block.forward(&h)?;
            }
        }
        self.conv_out.forward(&h)
    }
}

/// The encoder's tensors of a diffusers `AutoencoderTiny` file, or of an original
/// `taesd_encoder` file (whose layer numbers are diffusers' own: it has no clamp in front),
/// renamed to diffusers' names. `None` when the file holds no encoder.
pub fn encoder_tensors(tensors: TensorMap) -> Option<TensorMap> {
    if tensors.keys().any(|k| k.starts_with("encoder.layers.")) {
        return Some(tensors.into_iter().filter(|(k, _)| k.starts_with("encoder.")).collect());
    }
    if tensors.keys().any(|k| k.starts_with("decoder.")) || !tensors.contains_key("0.weight") {
        return None;
    }
    Some(tensors.into_iter().map(|(k, t)| (format!("{LAYERS}.{k}"), t)).collect())
}

/// TAESD's topology, with the width and latent channels of an original single encoder file read
/// from its first and last convolutions.
pub fn config_of_single_file(tensors: &TensorMap, file: &Path) -> Result<TinyVaeConfig> {
    let first = tensors.get(&format!("{LAYERS}.0.weight")).ok_or_else(|| {
        Error::bad_file("this file has no first encoder convolution; choose taesd_encoder.safetensors", file)
    })?;
    let (width, in_channels, _, _) = first.dims4()?;
    let defaults = TinyVaeConfig::default();
    let last = defaults.num_encoder_blocks.iter().sum::<usize>() + defaults.num_encoder_blocks.len();
    let latent_channels = match tensors.get(&format!("{LAYERS}.{last}.weight")) {
        Some(t) => t.dims4()?.0,
        None => {
            return Err(Error::bad_file(
                "this TAESD encoder has no final convolution; the file may be cut short",
                file,
            ))
        }
    };
    Ok(TinyVaeConfig { latent_channels, in_channels, encoder_block_out_channels: vec![width; 4], ..defaults })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latents_are_eight_times_smaller_with_the_configured_channels() -> Result<()> {
        let cfg = TinyVaeConfig {
            encoder_block_out_channels: vec![8; 4],
            num_encoder_blocks: vec![1, 1, 2, 1],
            ..TinyVaeConfig::default()
        };
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let encoder = TinyEncoder::new(vb, &cfg, PathBuf::from("random"))?;
        let pixels = Tensor::zeros((1, 3, 24, 40), DType::F32, &Device::Cpu)?;
        assert_eq!(encoder.encode(&pixels)?.dims(), &[1, 4, 3, 5]);
        Ok(())
    }

    #[test]
    fn original_encoder_files_are_renamed_and_decoder_files_hold_none() -> Result<()> {
        let zeros = |shape: (usize, usize, usize, usize)| Tensor::zeros(shape, DType::F32, &Device::Cpu);
        let mut original = TensorMap::new();
        original.insert("0.weight".into(), zeros((32, 3, 3, 3))?);
        original.insert("14.weight".into(), zeros((4, 32, 3, 3))?);
        let renamed = encoder_tensors(original).expect("an encoder");
        let cfg = config_of_single_file(&renamed, Path::new("taesd_encoder.safetensors"))?;
        assert_eq!((cfg.encoder_block_out_channels, cfg.latent_channels), (vec![32; 4], 4));
        let mut decoder_only = TensorMap::new();
        decoder_only.insert("decoder.layers.0.weight".into(), zeros((32, 4, 3, 3))?);
        assert!(encoder_tensors(decoder_only).is_none());
        Ok(())
    }
}
