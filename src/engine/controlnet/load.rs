//! Loading a ControlNet: a diffusers folder (`config.json` + weights), or one file — the
//! original layout (`.pth`, `.safetensors`, with or without `control_model.`) or diffusers' names
//! without a config (as SDXL ControlNets such as xinsir's are shared). Single files carry no
//! config: the shape comes from the tensors and what shapes cannot tell (attention heads, SDXL's
//! time-embedding width) from the model it steers, which a ControlNet copies.

use std::path::Path;

use candle_core::{DType, Device};
use serde_json::{Map, Value};

use super::convert::{self, Layout};
use super::{Build, ControlNet, HintWidths};
use crate::engine::checkpoint::{count_indices, dim, infer_unet};
use crate::engine::config::{read_json, UNetConfig};
use crate::engine::family::Family;
use crate::engine::model::read_part;
use crate::engine::weights::{self, TensorMap};
use crate::error::{Error, Result};

/// Loads the ControlNet at `path` to steer a UNet built from `base`, refusing one made for
/// another family or shape.
pub fn load(path: &Path, base: &UNetConfig, device: &Device, dtype: DType) -> Result<ControlNet> {
    if !path.exists() {
        return Err(Error::not_found("ControlNet", path));
    }
    let (tensors, config, extras) =
        if path.is_dir() { read_folder(path, dtype)? } else { read_file(path, base, dtype)? };
    check_fits(&config, base, path)?;
    let tensors = weights::to_compute(tensors, dtype, device)?;
    let vb = weights::var_builder(&tensors, dtype, device);
    let build = Build { config: &config, global_pool: extras.global_pool, bgr: extras.bgr, path };
    ControlNet::new(&tensors, build, vb).map_err(|e| weights::explain_load_error("ControlNet", path, e))
}

/// What `easel inspect` says of a ControlNet file or folder, read without a model beside it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Description {
    /// How it is stored: a diffusers folder, the original layout (with or without
    /// `control_model.`), or diffusers' names in one file.
    pub layout: String,
    /// The family it steers.
    pub family: String,
    /// The UNet widths it copies.
    pub unet_channels: Vec<usize>,
    /// The hint encoder's widths.
    pub hint_channels: Vec<usize>,
    /// Residuals it gives (skips and the middle block).
    pub residuals: usize,
    /// A1111's old short hash of a file (none for a folder).
    pub a1111_hash: Option<String>,
}

/// Describes the ControlNet at `path` (refusing what is not one, as loading does).
pub fn describe(path: &Path) -> Result<Description> {
    let (tensors, config, layout) = if path.is_dir() {
        let (t, c, _) = read_folder(path, DType::F32)?;
        (t, c, "diffusers folder".to_string())
    } else {
        let (tensors, layout) = single_file(path, DType::F32)?;
        let config = infer_unet(&tensors, None, path)?;
        (tensors, config, layout.to_string())
    };
    let hint = hint_widths(&tensors, path)?;
    let residuals =
        tensors.keys().filter(|k| k.starts_with("controlnet_down_blocks.") && k.ends_with(".weight")).count()
            + 1;
    Ok(Description {
        layout,
        family: Family::of_unet(&config).label().to_string(),
        unet_channels: config.block_out_channels,
        hint_channels: hint.0,
        residuals,
        a1111_hash: super::prepare::old_hash(path),
    })
}

/// What a folder's config says beside the UNet fields.
#[derive(Default)]
struct Extras {
    global_pool: bool,
    bgr: bool,
}

fn read_folder(dir: &Path, dtype: DType) -> Result<(TensorMap, UNetConfig, Extras)> {
    let config_path = dir.join("config.json");
    if !config_path.exists() {
        return Err(Error::bad_file(
            "this folder is not a diffusers ControlNet (it has no config.json); choose the folder \
             that holds config.json and diffusion_pytorch_model.safetensors, or the single file",
            dir,
        ));
    }
    let raw: Map<String, Value> = read_json(&config_path)?;
    match raw.get("_class_name").and_then(Value::as_str) {
        None | Some("ControlNetModel") => {}
        Some(other) => {
            return Err(Error::bad_file(
                format!("this folder holds a {other}, not a ControlNetModel; Easel reads plain ControlNets"),
                &config_path,
            ))
        }
    }
    let mut config: UNetConfig = read_json(&config_path)?;
    // A ControlNet has no up path; the UNet checks expect one that mirrors the down path.
    config.up_block_types = config.down_block_types.iter().rev().map(|k| k.replace("Down", "Up")).collect();
    let extras = Extras {
        global_pool: raw.get("global_pool_conditions").and_then(Value::as_bool).unwrap_or(false),
        bgr: raw.get("controlnet_conditioning_channel_order").and_then(Value::as_str) == Some("bgr"),
    };
    let (_, tensors) = read_part(dir, "", "diffusion_pytorch_model", dtype)?;
    Ok((tensors, config, extras))
}

/// A single file's tensors, its names checked to be a ControlNet's before the weights are read.
fn read_tensors(path: &Path, dtype: DType) -> Result<TensorMap> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    Ok(match ext.as_str() {
        "safetensors" => {
            let header = weights::read_safetensors_header(path)?;
            convert::layout(header.names.iter().map(String::as_str), path)?;
            weights::read_safetensors_selected(path, Some(dtype), &|_| true)?
        }
        "pth" | "pt" | "ckpt" | "bin" => weights::read_pickle_checkpoint(path)?,
        _ => {
            return Err(Error::bad_file(
                "a ControlNet is a .safetensors or .pth file, or a diffusers folder",
                path,
            ))
        }
    })
}

/// A single file's tensors under diffusers' names, and which layout they came in.
fn single_file(path: &Path, dtype: DType) -> Result<(TensorMap, &'static str)> {
    let raw = read_tensors(path, dtype)?;
    let prefixed = raw.keys().any(|k| k.starts_with("control_model."));
    Ok(match convert::layout(raw.keys().map(String::as_str), path)? {
        Layout::Diffusers => (raw, "diffusers names in one file"),
        Layout::Original if prefixed => {
            (convert::from_original(raw), "original (lllyasviel), control_model. prefix")
        }
        Layout::Original => (convert::from_original(raw), "original (lllyasviel), no prefix"),
    })
}

fn read_file(path: &Path, base: &UNetConfig, dtype: DType) -> Result<(TensorMap, UNetConfig, Extras)> {
    let (tensors, _) = single_file(path, dtype)?;
    let mut config = infer_unet(&tensors, None, path)?;
    // What the tensors cannot tell comes from the model the ControlNet copies.
    config.attention_head_dim = base.attention_head_dim.clone();
    config.num_attention_heads = base.num_attention_heads.clone();
    config.addition_time_embed_dim = config.addition_time_embed_dim.and(base.addition_time_embed_dim);
    config.flip_sin_to_cos = base.flip_sin_to_cos;
    config.freq_shift = base.freq_shift;
    config.upcast_attention = base.upcast_attention;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("").to_ascii_lowercase();
    // A1111 averages shuffle models' residuals by name too: single files record no such flag.
    let extras = Extras { global_pool: name.contains("shuffle"), bgr: false };
    Ok((tensors, config, extras))
}

/// A ControlNet steers only the UNet it was trained beside: same family, same widths.
fn check_fits(config: &UNetConfig, base: &UNetConfig, path: &Path) -> Result<()> {
    let (mine, theirs) = (Family::of_unet(config), Family::of_unet(base));
    if mine != theirs {
        return Err(Error::bad_file(
            format!(
                "this ControlNet is made for {mine}, but the loaded model is {theirs}; choose a \
                 ControlNet made for {theirs} (or load an {mine} model)"
            ),
            path,
        ));
    }
    if config.block_out_channels != base.block_out_channels
        || config.cross_attention_dim != base.cross_attention_dim
        || config.layers_per_block != base.layers_per_block
    {
        return Err(Error::bad_file(
            format!(
                "this ControlNet's shape (widths {:?}, {} resnets a level, text width {}) does not match \
                 the loaded model's (widths {:?}, {} resnets a level, text width {}); it was made for another \
                 base model",
                config.block_out_channels,
                config.layers_per_block,
                config.cross_attention_dim,
                base.block_out_channels,
                base.layers_per_block,
                base.cross_attention_dim
            ),
            path,
        ));
    }
    match config.mid_block_type.as_deref() {
        None | Some("UNetMidBlock2DCrossAttn") => {}
        Some(other) => {
            return Err(Error::bad_file(
                format!("this ControlNet's middle block is {other}, which Easel does not build yet"),
                path,
            ))
        }
    }
    config.check_supported(path)
}

/// The hint encoder's widths and input channels, read from its weights.
pub(super) fn hint_widths(tensors: &TensorMap, path: &Path) -> Result<HintWidths> {
    let prefix = "controlnet_cond_embedding.";
    let conv_in = format!("{prefix}conv_in.weight");
    let mut widths = vec![dim(tensors, &conv_in, 0, path)?];
    let blocks = count_indices(tensors, &format!("{prefix}blocks."));
    if !blocks.is_multiple_of(2) {
        return Err(Error::bad_file(
            format!("the ControlNet's hint encoder has {blocks} convolutions; pairs were expected"),
            path,
        ));
    }
    for i in 0..blocks / 2 {
        widths.push(dim(tensors, &format!("{prefix}blocks.{}.weight", 2 * i + 1), 0, path)?);
    }
    Ok(HintWidths(widths, dim(tensors, &conv_in, 1, path)?))
}
