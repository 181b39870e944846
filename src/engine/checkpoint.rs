//! Single-file checkpoints in the original CompVis/A1111 layout: the family is inferred from tensor
//! shapes (they carry no config), and keys are renamed to diffusers' names so the same model code
//! loads them. SD 2.x's and SDXL's OpenCLIP text encoders have their fused q/k/v split here.
//! SDXL files (`conditioner.embedders.*`) carry CLIP ViT-L and OpenCLIP bigG; like diffusers'
//! single-file loader, Easel assumes SDXL's published 64-wide attention heads.

use std::path::Path;

use candle_core::Tensor;
use serde_json::{json, Map, Value};

use super::config::{ClipConfig, PerBlock, UNetConfig, VaeConfig};
use super::family::Family;
use super::weights::TensorMap;
use crate::error::{Error, Result};

/// A single-file checkpoint split into its three models, with the configs inferred from it.
pub struct SingleFileParts {
    /// The model family.
    pub family: Family,
    /// UNet tensors under diffusers' names.
    pub unet: TensorMap,
    /// UNet architecture.
    pub unet_config: UNetConfig,
    /// VAE tensors under diffusers' names.
    pub vae: TensorMap,
    /// VAE architecture.
    pub vae_config: VaeConfig,
    /// Text-encoder tensors under transformers' names (no `text_model.` prefix).
    pub text: TensorMap,
    /// Text-encoder architecture.
    pub clip_config: ClipConfig,
    /// SDXL's second text encoder (OpenCLIP bigG under transformers' names, with its projection).
    pub text_2: Option<(TensorMap, ClipConfig)>,
}

const UNET_PREFIX: &str = "model.diffusion_model.";
const VAE_PREFIX: &str = "first_stage_model.";
const SD1_TEXT_PREFIX: &str = "cond_stage_model.transformer.";
const SD2_TEXT_PREFIX: &str = "cond_stage_model.model.";
const SDXL_TEXT_PREFIX: &str = "conditioner.embedders.0.transformer.";
const SDXL_TEXT2_PREFIX: &str = "conditioner.embedders.1.model.";
/// The SDXL refiner keeps OpenCLIP bigG as its only (first) embedder.
const REFINER_TEXT_PREFIX: &str = "conditioner.embedders.0.model.";

/// Whether a single file's tensor is one of the models (not EMA copies, optimiser state or
/// other extras), so loading can skip the rest without reading it.
pub fn is_model_tensor(key: &str) -> bool {
    [UNET_PREFIX, VAE_PREFIX, SD1_TEXT_PREFIX, SD2_TEXT_PREFIX, SDXL_TEXT_PREFIX, SDXL_TEXT2_PREFIX]
        .iter()
        .any(|p| key.starts_with(p))
}

/// Whether a tensor name is one of the empty marker keys v-prediction fine-tunes carry
/// (`v_pred`, and `ztsnr` for zero-terminal-SNR training, as NoobAI's v-pred files do).
pub fn is_marker(key: &str) -> bool {
    key == "v_pred" || key == "ztsnr"
}

/// The family's scheduler config with what the file's markers say: `v_pred` means the model
/// predicts v; `ztsnr` that it was trained with zero terminal SNR, which diffusers samples with
/// rescaled betas and trailing timesteps. ComfyUI reads the same keys.
pub fn with_markers(mut cfg: Map<String, Value>, markers: &[String]) -> Map<String, Value> {
    if markers.iter().any(|m| m == "v_pred") {
        cfg.insert("prediction_type".into(), json!("v_prediction"));
    }
    if markers.iter().any(|m| m == "ztsnr") {
        cfg.insert("rescale_betas_zero_snr".into(), json!(true));
        cfg.insert("timestep_spacing".into(), json!("trailing"));
    }
    cfg
}

/// Refuses files whose tensor names show they are not a model Easel loads, before any tensor is
/// read; `path` only names the file in errors.
pub fn check_keys<'a>(mut keys: impl Iterator<Item = &'a str> + Clone, path: &Path) -> Result<()> {
    let has = |prefix: &str| keys.clone().any(|k| k.starts_with(prefix));
    if has(REFINER_TEXT_PREFIX) {
        return Err(Error::bad_file(super::config::REFINER, path));
    }
    let (first, second) = (has(SDXL_TEXT_PREFIX), has(SDXL_TEXT2_PREFIX));
    if first != second {
        let missing = if first {
            "its second text encoder (OpenCLIP bigG, `conditioner.embedders.1.model.`)"
        } else {
            "its first text encoder (CLIP ViT-L, `conditioner.embedders.0.transformer.`)"
        };
        return Err(Error::bad_file(
            format!(
                "this SDXL checkpoint lacks {missing}; SDXL needs both, so the file is incomplete \
                 (download it again, or use the full model rather than a UNet-only or pruned file)"
            ),
            path,
        ));
    }
    if !keys.any(|k| k.starts_with(UNET_PREFIX)) {
        return Err(Error::bad_file(
            "this file holds no Stable Diffusion UNet (no `model.diffusion_model.` tensors); \
             is it a LoRA, a VAE or another kind of model?",
            path,
        ));
    }
    Ok(())
}

/// Splits and renames an original-layout checkpoint; `path` only names the file in errors.
pub fn split(tensors: TensorMap, path: &Path) -> Result<SingleFileParts> {
    check_keys(tensors.keys().map(String::as_str), path)?;
    let mut unet = TensorMap::new();
    let mut vae = TensorMap::new();
    let mut text = TensorMap::new();
    let mut open_clip = TensorMap::new();
    let mut open_clip_2 = TensorMap::new();
    for (key, t) in tensors {
        if let Some(rest) = key.strip_prefix(UNET_PREFIX) {
            if let Some(name) = unet_key(rest) {
                unet.insert(name, t);
            }
        } else if key.starts_with(VAE_PREFIX) {
            vae.insert(key, t);
        } else if let Some(rest) =
            key.strip_prefix(SD1_TEXT_PREFIX).or_else(|| key.strip_prefix(SDXL_TEXT_PREFIX))
        {
            text.insert(rest.strip_prefix("text_model.").unwrap_or(rest).to_string(), t);
        } else if let Some(rest) = key.strip_prefix(SD2_TEXT_PREFIX) {
            open_clip.insert(rest.to_string(), t);
        } else if let Some(rest) = key.strip_prefix(SDXL_TEXT2_PREFIX) {
            open_clip_2.insert(rest.to_string(), t);
        }
    }
    let text_2 = match open_clip_2.is_empty() {
        true => None,
        false => Some(convert_open_clip(open_clip_2, 0, path)?),
    };
    let pooled = text_2.as_ref().and_then(|(_, cfg)| cfg.projection_dim);
    let unet_config = infer_unet(&unet, pooled, path)?;
    let family = Family::of_unet(&unet_config);
    let unet_config = with_family_heads(unet_config, family);
    let (vae, mut vae_config) = original_vae(vae, path)?;
    vae_config.scaling_factor = family.vae_scaling_factor();
    vae_config.force_upcast = family == Family::Sdxl;
    let (text, clip_config) = if !open_clip.is_empty() {
        // SD 2.x reads the penultimate layer, so its last is left out.
        convert_open_clip(open_clip, 1, path)?
    } else {
        let cfg = infer_clip(&text, "quick_gelu", 0, path)?;
        (text, cfg)
    };
    Ok(SingleFileParts { family, unet, unet_config, vae, vae_config, text, clip_config, text_2 })
}

fn resnet_name(rest: &str) -> String {
    const MAP: [(&str, &str); 6] = [
        ("in_layers.0.", "norm1."),
        ("in_layers.2.", "conv1."),
        ("emb_layers.1.", "time_emb_proj."),
        ("out_layers.0.", "norm2."),
        ("out_layers.3.", "conv2."),
        ("skip_connection.", "conv_shortcut."),
    ];
    for (from, to) in MAP {
        if let Some(tail) = rest.strip_prefix(from) {
            return format!("{to}{tail}");
        }
    }
    rest.to_string()
}

/// The diffusers name of an original UNet key (SD 1.x/2.x: three slots per level).
pub(crate) fn unet_key(rest: &str) -> Option<String> {
    const PER: usize = 3;
    let simple = [
        ("time_embed.0.", "time_embedding.linear_1."),
        ("time_embed.2.", "time_embedding.linear_2."),
        ("label_emb.0.0.", "add_embedding.linear_1."),
        ("label_emb.0.2.", "add_embedding.linear_2."),
        ("input_blocks.0.0.", "conv_in."),
        ("out.0.", "conv_norm_out."),
        ("out.2.", "conv_out."),
    ];
    for (from, to) in simple {
        if let Some(tail) = rest.strip_prefix(from) {
            return Some(format!("{to}{tail}"));
        }
    }
    let parts: Vec<&str> = rest.splitn(4, '.').collect();
    if parts.len() < 4 {
        return None;
    }
    let (block, slot, tail) = (parts[1].parse::<usize>().ok()?, parts[2], parts[3]);
    match parts[0] {
        "input_blocks" => {
            if let Some(param) = tail.strip_prefix("op.") {
                return Some(format!("down_blocks.{}.downsamplers.0.conv.{param}", block / PER - 1));
            }
            let (i, j) = ((block - 1) / PER, (block - 1) % PER);
            match slot {
                "0" => Some(format!("down_blocks.{i}.resnets.{j}.{}", resnet_name(tail))),
                "1" => Some(format!("down_blocks.{i}.attentions.{j}.{tail}")),
                _ => None,
            }
        }
        "middle_block" => match block {
            0 => Some(format!("mid_block.resnets.0.{}", resnet_name(&format!("{slot}.{tail}")))),
            1 => Some(format!("mid_block.attentions.0.{slot}.{tail}")),
            2 => Some(format!("mid_block.resnets.1.{}", resnet_name(&format!("{slot}.{tail}")))),
            _ => None,
        },
        "output_blocks" => {
            let (i, j) = (block / PER, block % PER);
            match slot {
                "0" => Some(format!("up_blocks.{i}.resnets.{j}.{}", resnet_name(tail))),
                "1" if tail.starts_with("conv.") => Some(format!("up_blocks.{i}.upsamplers.0.{tail}")),
                "1" => Some(format!("up_blocks.{i}.attentions.{j}.{tail}")),
                "2" => Some(format!("up_blocks.{i}.upsamplers.0.{tail}")),
                _ => None,
            }
        }
        _ => None,
    }
}

/// Renames one VAE key; the decoder's level numbers are fixed later by `renumber_decoder`.
fn vae_key(rest: &str, t: Tensor) -> Result<Option<(String, Tensor)>> {
    let (part, tail) = match rest.split_once('.') {
        Some(x) => x,
        None => return Ok(None),
    };
    if part == "quant_conv" || part == "post_quant_conv" {
        return Ok(Some((rest.to_string(), t)));
    }
    let resnet = |s: &str| s.replace("nin_shortcut", "conv_shortcut");
    let name = if let Some(x) = tail.strip_prefix("norm_out.") {
        format!("{part}.conv_norm_out.{x}")
    } else if tail.starts_with("conv_in.") || tail.starts_with("conv_out.") {
        format!("{part}.{tail}")
    } else if let Some(x) = tail.strip_prefix("mid.block_1.") {
        format!("{part}.mid_block.resnets.0.{}", resnet(x))
    } else if let Some(x) = tail.strip_prefix("mid.block_2.") {
        format!("{part}.mid_block.resnets.1.{}", resnet(x))
    } else if let Some(x) = tail.strip_prefix("mid.attn_1.") {
        let (layer, param) = x.split_once('.').unwrap_or((x, ""));
        let layer = match layer {
            "norm" => "group_norm",
            "q" => "to_q",
            "k" => "to_k",
            "v" => "to_v",
            "proj_out" => "to_out.0",
            _ => return Ok(None),
        };
        // Stored as 1×1 convolutions; diffusers uses linear layers.
        let t = if t.rank() == 4 { t.squeeze(3)?.squeeze(2)? } else { t };
        return Ok(Some((format!("{part}.mid_block.attentions.0.{layer}.{param}"), t)));
    } else if let Some(x) = tail.strip_prefix("down.").or_else(|| tail.strip_prefix("up.")) {
        let kind = if tail.starts_with("down.") { "down_blocks" } else { "up_blocks" };
        let (level, x) = x.split_once('.').unwrap_or((x, ""));
        if let Some(y) = x.strip_prefix("block.") {
            format!("{part}.{kind}.{level}.resnets.{}", resnet(y))
        } else if let Some(y) = x.strip_prefix("downsample.").or_else(|| x.strip_prefix("upsample.")) {
            let sampler = if kind == "down_blocks" { "downsamplers" } else { "upsamplers" };
            format!("{part}.{kind}.{level}.{sampler}.0.{y}")
        } else {
            return Ok(None);
        }
    } else {
        return Ok(None);
    };
    Ok(Some((name, t)))
}

/// A VAE in the original layout (keys `encoder.down.0.block…`, with or without the
/// `first_stage_model.` prefix of a full checkpoint) under diffusers' names, with its shape.
pub fn original_vae(tensors: TensorMap, path: &Path) -> Result<(TensorMap, VaeConfig)> {
    let mut vae = TensorMap::new();
    for (key, t) in tensors {
        let rest = key.strip_prefix(VAE_PREFIX).unwrap_or(&key);
        if let Some((name, t)) = vae_key(rest, t)? {
            vae.insert(name, t);
        }
    }
    // The decoder's levels are stored in reverse order; now that all are known, renumber.
    let vae = renumber_decoder(vae);
    let cfg = infer_vae(&vae, path)?;
    Ok((vae, cfg))
}

fn renumber_decoder(vae: TensorMap) -> TensorMap {
    let levels = vae
        .keys()
        .filter_map(|k| k.strip_prefix("decoder.up_blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1);
    vae.into_iter()
        .map(|(k, t)| match k.strip_prefix("decoder.up_blocks.") {
            Some(rest) => {
                let (level, tail) = rest.split_once('.').unwrap_or((rest, ""));
                let level: usize = level.parse().unwrap_or(0);
                (format!("decoder.up_blocks.{}.{tail}", levels - 1 - level), t)
            }
            None => (k, t),
        })
        .collect()
}

pub(crate) fn dim(map: &TensorMap, key: &str, axis: usize, path: &Path) -> Result<usize> {
    map.get(key).and_then(|t| t.dims().get(axis).copied()).ok_or_else(|| {
        Error::bad_file(
            format!("the checkpoint lacks the tensor {key}, so its architecture cannot be read"),
            path,
        )
    })
}

pub(crate) fn count_indices(map: &TensorMap, prefix: &str) -> usize {
    map.keys()
        .filter_map(|k| k.strip_prefix(prefix)?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map_or(0, |m| m + 1)
}

/// The UNet's architecture from its tensors; `pooled` is the width of SDXL's pooled text vector.
pub(crate) fn infer_unet(unet: &TensorMap, pooled: Option<usize>, path: &Path) -> Result<UNetConfig> {
    let n = count_indices(unet, "down_blocks.");
    let channels = (0..n)
        .map(|i| dim(unet, &format!("down_blocks.{i}.resnets.0.conv1.weight"), 0, path))
        .collect::<Result<Vec<_>>>()?;
    let has_attn = |kind: &str, i: usize| unet.contains_key(&format!("{kind}.{i}.attentions.0.norm.weight"));
    let down: Vec<String> = (0..n)
        .map(|i| if has_attn("down_blocks", i) { "CrossAttnDownBlock2D" } else { "DownBlock2D" }.into())
        .collect();
    let up: Vec<String> = (0..n)
        .map(|i| if has_attn("up_blocks", i) { "CrossAttnUpBlock2D" } else { "UpBlock2D" }.into())
        .collect();
    let to_k = unet
        .iter()
        .find(|(k, _)| k.ends_with("attn2.to_k.weight"))
        .ok_or_else(|| Error::bad_file("the checkpoint's UNet has no cross-attention", path))?;
    let proj_in = unet.iter().find(|(k, _)| k.ends_with("proj_in.weight")).map(|(_, t)| t.rank());
    // SDXL stacks more transformer blocks deeper down; levels without attention read as 1.
    let depth: Vec<usize> = (0..n)
        .map(|i| count_indices(unet, &format!("down_blocks.{i}.attentions.0.transformer_blocks.")).max(1))
        .collect();
    let mut cfg = json!({
        "in_channels": dim(unet, "conv_in.weight", 1, path)?,
        // A ControlNet has no conv_out; a UNet without one fails later, naming the tensor.
        "out_channels": unet.get("conv_out.weight").map_or(4, |t| t.dims()[0]),
        "block_out_channels": channels,
        "down_block_types": down,
        "up_block_types": up,
        "layers_per_block": count_indices(unet, "down_blocks.0.resnets."),
        "cross_attention_dim": to_k.1.dim(1)?,
        "use_linear_projection": proj_in == Some(2),
        "transformer_layers_per_block": depth,
    });
    if let Some(input) = unet.get("add_embedding.linear_1.weight").map(|t| t.dims()[1]) {
        // A single file records no time-embedding width; it is what the pooled text leaves.
        let time = pooled.map_or(0, |p| input.saturating_sub(p) / 6);
        cfg["addition_embed_type"] = json!("text_time");
        cfg["addition_time_embed_dim"] = json!(time);
        cfg["projection_class_embeddings_input_dim"] = json!(input);
    }
    serde_json::from_value(cfg)
        .map_err(|e| Error::bad_file(format!("cannot read the UNet's shape ({e})"), path))
}

/// SD 1.x uses 8 heads everywhere; SD 2.x and SDXL use 64-wide heads.
pub(crate) fn with_family_heads(mut cfg: UNetConfig, family: Family) -> UNetConfig {
    cfg.attention_head_dim = match family {
        Family::Sd1 => PerBlock::One(8),
        Family::Sd2 | Family::Sdxl => {
            PerBlock::Each(cfg.block_out_channels.iter().map(|c| (c / 64).max(1)).collect())
        }
    };
    cfg
}

/// The shape of a VAE under diffusers' names.
pub fn infer_vae(vae: &TensorMap, path: &Path) -> Result<VaeConfig> {
    let n = count_indices(vae, "encoder.down_blocks.");
    let channels = (0..n)
        .map(|i| dim(vae, &format!("encoder.down_blocks.{i}.resnets.0.conv1.weight"), 0, path))
        .collect::<Result<Vec<_>>>()?;
    let cfg = json!({
        "in_channels": dim(vae, "encoder.conv_in.weight", 1, path)?,
        "out_channels": dim(vae, "decoder.conv_out.weight", 0, path)?,
        "block_out_channels": channels,
        "layers_per_block": count_indices(vae, "encoder.down_blocks.0.resnets."),
        "latent_channels": dim(vae, "post_quant_conv.weight", 0, path)?,
        "mid_block_add_attention": vae.contains_key("encoder.mid_block.attentions.0.to_q.weight"),
    });
    serde_json::from_value(cfg)
        .map_err(|e| Error::bad_file(format!("cannot read the VAE's shape ({e})"), path))
}

fn infer_clip(text: &TensorMap, act: &str, drop_layers: usize, path: &Path) -> Result<ClipConfig> {
    let hidden = dim(text, "embeddings.token_embedding.weight", 1, path)?;
    let layers = count_indices(text, "encoder.layers.");
    let cfg = json!({
        "vocab_size": dim(text, "embeddings.token_embedding.weight", 0, path)?,
        "hidden_size": hidden,
        "intermediate_size": dim(text, "encoder.layers.0.mlp.fc1.weight", 0, path)?,
        "num_hidden_layers": layers.saturating_sub(drop_layers),
        "num_attention_heads": (hidden / 64).max(1),
        "max_position_embeddings": dim(text, "embeddings.position_embedding.weight", 0, path)?,
        "hidden_act": act,
    });
    serde_json::from_value(cfg)
        .map_err(|e| Error::bad_file(format!("cannot read the text encoder's shape ({e})"), path))
}

/// Renames OpenCLIP's layout to transformers' CLIP names, splitting fused q/k/v; `drop_layers`
/// leaves the last layers out of the config (SD 2.x reads the penultimate layer's output). The
/// projection, stored to be used as `x @ W`, becomes transformers' `text_projection` linear layer.
fn convert_open_clip(src: TensorMap, drop_layers: usize, path: &Path) -> Result<(TensorMap, ClipConfig)> {
    let mut out = TensorMap::new();
    let mut projection_dim = None;
    for (key, t) in src {
        let name = if key == "text_projection" && drop_layers == 0 {
            projection_dim = Some(t.dim(1)?);
            out.insert("text_projection.weight".into(), t.t()?.contiguous()?);
            continue;
        } else if key == "token_embedding.weight" {
            "embeddings.token_embedding.weight".to_string()
        } else if key == "positional_embedding" {
            "embeddings.position_embedding.weight".to_string()
        } else if let Some(x) = key.strip_prefix("ln_final.") {
            format!("final_layer_norm.{x}")
        } else if let Some(x) = key.strip_prefix("transformer.resblocks.") {
            let (layer, tail) = x.split_once('.').unwrap_or((x, ""));
            let base = format!("encoder.layers.{layer}");
            if let Some(kind) = tail.strip_prefix("attn.in_proj_") {
                let h = t.dim(0)? / 3;
                for (i, proj) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                    out.insert(
                        format!("{base}.self_attn.{proj}.{kind}"),
                        t.narrow(0, i * h, h)?.contiguous()?,
                    );
                }
                continue;
            }
            let tail = tail
                .replace("ln_1.", "layer_norm1.")
                .replace("ln_2.", "layer_norm2.")
                .replace("attn.out_proj.", "self_attn.out_proj.")
                .replace("mlp.c_fc.", "mlp.fc1.")
                .replace("mlp.c_proj.", "mlp.fc2.");
            format!("{base}.{tail}")
        } else {
            continue;
        };
        out.insert(name, t);
    }
    let mut cfg = infer_clip(&out, "gelu", drop_layers, path)?;
    cfg.projection_dim = projection_dim;
    Ok((out, cfg))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn unet_keys_follow_the_reference_table() {
        let cases = [
            ("input_blocks.1.0.in_layers.0.weight", "down_blocks.0.resnets.0.norm1.weight"),
            ("input_blocks.5.1.proj_in.weight", "down_blocks.1.attentions.1.proj_in.weight"),
            ("input_blocks.3.0.op.weight", "down_blocks.0.downsamplers.0.conv.weight"),
            ("input_blocks.10.0.skip_connection.bias", "down_blocks.3.resnets.0.conv_shortcut.bias"),
            ("middle_block.1.proj_out.bias", "mid_block.attentions.0.proj_out.bias"),
            ("middle_block.2.emb_layers.1.weight", "mid_block.resnets.1.time_emb_proj.weight"),
            ("output_blocks.2.1.conv.weight", "up_blocks.0.upsamplers.0.conv.weight"),
            ("output_blocks.5.2.conv.bias", "up_blocks.1.upsamplers.0.conv.bias"),
            ("output_blocks.4.1.norm.weight", "up_blocks.1.attentions.1.norm.weight"),
            ("output_blocks.11.0.out_layers.3.weight", "up_blocks.3.resnets.2.conv2.weight"),
            ("time_embed.2.bias", "time_embedding.linear_2.bias"),
        ];
        for (from, to) in cases {
            assert_eq!(unet_key(from).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn sdxl_keys_are_mapped_and_markers_read() {
        assert_eq!(unet_key("label_emb.0.2.weight").as_deref(), Some("add_embedding.linear_2.weight"));
        assert_eq!(
            unet_key("input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight").as_deref(),
            Some("down_blocks.2.attentions.1.transformer_blocks.9.attn2.to_k.weight")
        );
        assert_eq!(
            unet_key("output_blocks.5.2.conv.weight").as_deref(),
            Some("up_blocks.1.upsamplers.0.conv.weight")
        );
        let cfg = with_markers(Family::Sdxl.scheduler_config(), &["v_pred".into(), "ztsnr".into()]);
        assert_eq!(cfg["prediction_type"], "v_prediction");
        assert_eq!(cfg["rescale_betas_zero_snr"], true);
        let plain = with_markers(Family::Sdxl.scheduler_config(), &[]);
        assert_eq!(plain["prediction_type"], "epsilon");
    }

    #[test]
    fn incomplete_sdxl_files_and_the_refiner_are_refused_by_name() {
        let path = Path::new("x.safetensors");
        let err = |keys: &[&str]| check_keys(keys.iter().copied(), path).expect_err("refused").to_string();
        let unet = "model.diffusion_model.input_blocks.0.0.weight";
        let first = "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight";
        let second = "conditioner.embedders.1.model.token_embedding.weight";
        assert!(err(&[unet, first]).contains("second text encoder (OpenCLIP bigG"));
        assert!(err(&[unet, second]).contains("first text encoder (CLIP ViT-L"));
        assert!(err(&[unet, "conditioner.embedders.0.model.ln_final.weight"]).contains("SDXL refiner"));
        check_keys([unet, first, second].into_iter(), path).expect("a full SDXL file");
    }

    #[test]
    fn open_clip_fused_qkv_is_split() -> Result<()> {
        let mut src = TensorMap::new();
        let fused = Tensor::arange(0f32, 12., &Device::Cpu)?.reshape((6, 2))?;
        src.insert("transformer.resblocks.0.attn.in_proj_weight".into(), fused);
        src.insert("token_embedding.weight".into(), Tensor::zeros((10, 128), DType::F32, &Device::Cpu)?);
        src.insert("positional_embedding".into(), Tensor::zeros((77, 128), DType::F32, &Device::Cpu)?);
        src.insert(
            "transformer.resblocks.0.mlp.c_fc.weight".into(),
            Tensor::zeros((512, 128), DType::F32, &Device::Cpu)?,
        );
        src.insert(
            "transformer.resblocks.1.ln_1.weight".into(),
            Tensor::zeros(128, DType::F32, &Device::Cpu)?,
        );
        let (out, cfg) = convert_open_clip(src, 1, Path::new("x.safetensors"))?;
        let k = out["encoder.layers.0.self_attn.k_proj.weight"].flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(k, vec![4., 5., 6., 7.]);
        assert_eq!(cfg.num_hidden_layers, 1, "the penultimate layer is the output");
        assert_eq!(cfg.num_attention_heads, 2);
        assert_eq!(cfg.hidden_act, "gelu");
        Ok(())
    }
}
