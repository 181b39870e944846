//! A standalone autoencoder in place of the model's own (`--vae`, the studio's VAE picker):
//! sdxl-vae-fp16-fix, vae-ft-mse-840000 and the like, as a diffusers folder (`config.json` with
//! the weights) or one file in diffusers' or the original layout (a full checkpoint's VAE too).
//! A file records no latent scale, so it takes the model family's, as A1111 does.

use std::path::Path;

use candle_core::DType;

use super::checkpoint;
use super::config::{read_json, VaeConfig};
use super::family::Family;
use super::weights::{self, TensorMap};
use crate::error::{Error, Result};

/// The weights (diffusers' names) and shape of the autoencoder at `path`, for a `family` model.
pub fn read(path: &Path, family: Family, dtype: DType) -> Result<(TensorMap, VaeConfig)> {
    if !path.exists() {
        return Err(Error::not_found("VAE", path));
    }
    if path.is_dir() {
        return read_folder(path, dtype);
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let tensors = match ext.as_str() {
        "safetensors" => weights::read_safetensors_selected(path, Some(dtype), &is_vae_tensor)?,
        "ckpt" | "pt" | "pth" | "bin" => weights::read_pickle_checkpoint(path)?,
        _ => {
            return Err(Error::bad_file(
                "this is not a VAE file Easel reads; give a .safetensors, .pt or .ckpt file, or a \
                 diffusers VAE folder",
                path,
            ))
        }
    };
    let (tensors, mut cfg) = if tensors.keys().any(|k| k.starts_with("decoder.up_blocks.")) {
        let cfg = checkpoint::infer_vae(&tensors, path)?;
        (tensors, cfg)
    } else if tensors.keys().any(|k| k.contains("decoder.up.")) {
        checkpoint::original_vae(tensors, path)?
    } else {
        return Err(Error::bad_file(
            "this file holds no autoencoder (no `decoder.up` tensors); is it a model, a LoRA or an \
             upscaler?",
            path,
        ));
    };
    cfg.scaling_factor = family.vae_scaling_factor();
    // The fp16-fix VAEs exist to decode in half precision; every other SDXL VAE overflows there.
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    cfg.force_upcast = !(name.contains("fp16-fix") || name.contains("fp16_fix"));
    Ok((tensors, cfg))
}

/// A diffusers `AutoencoderKL` folder: its config says the scale and whether to upcast.
fn read_folder(dir: &Path, dtype: DType) -> Result<(TensorMap, VaeConfig)> {
    let dir = if dir.join("vae/config.json").exists() { dir.join("vae") } else { dir.to_path_buf() };
    let cfg: VaeConfig = read_json(&dir.join("config.json"))?;
    let candidates = [
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.fp16.safetensors",
        "diffusion_pytorch_model.bin",
    ];
    let Some(file) = candidates.iter().map(|c| dir.join(c)).find(|p| p.exists()) else {
        return Err(Error::bad_file(
            format!("this VAE folder has no weights (looked for {})", candidates.join(", ")),
            &dir,
        ));
    };
    let tensors = match file.extension().and_then(|e| e.to_str()) {
        Some("safetensors") => weights::read_safetensors_selected(&file, Some(dtype), &|_| true)?,
        _ => weights::read_pickle_checkpoint(&file)?,
    };
    cfg.check_sizes(&dir.join("config.json"))?;
    Ok((super::model::modernize_vae_keys(tensors), cfg))
}

/// A single file's autoencoder tensors: a VAE file's own, or a full checkpoint's VAE part.
fn is_vae_tensor(key: &str) -> bool {
    let rest = key.strip_prefix("first_stage_model.").unwrap_or(key);
    !key.starts_with("model.")
        && !key.starts_with("cond")
        && ["encoder.", "decoder.", "quant_conv.", "post_quant_conv."].iter().any(|p| rest.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_checkpoints_vae_part_is_read_and_the_rest_skipped() {
        assert!(is_vae_tensor("first_stage_model.decoder.up.0.block.0.conv1.weight"));
        assert!(is_vae_tensor("decoder.up_blocks.0.resnets.0.conv1.weight"));
        assert!(is_vae_tensor("post_quant_conv.bias"));
        assert!(!is_vae_tensor("model.diffusion_model.input_blocks.0.0.weight"));
        assert!(!is_vae_tensor("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"));
    }
}
