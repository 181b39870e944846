//! The layouts ControlNet files come in, told apart by their tensor names, and the original
//! (lllyasviel / A1111) names renamed to diffusers' ones: the UNet half as for checkpoints, the
//! hint encoder (`input_hint_block.N`), and the zero convolutions (`zero_convs.i.0`,
//! `middle_block_out.0`).

use std::path::Path;

use super::super::checkpoint::unet_key;
use super::super::weights::TensorMap;
use crate::error::{Error, Result};

/// The prefix lllyasviel's ControlNet files put before every name (ComfyUI's copies drop it).
const PREFIX: &str = "control_model.";

/// Which layout a file's tensor names are in.
#[derive(Debug, PartialEq)]
pub(super) enum Layout {
    /// diffusers' `ControlNetModel` names.
    Diffusers,
    /// The original names, possibly under `control_model.`.
    Original,
}

/// Tells the layout from the names, refusing neighbouring kinds of files by name.
pub(super) fn layout<'a>(keys: impl Iterator<Item = &'a str> + Clone, path: &Path) -> Result<Layout> {
    let has = |needle: &str| keys.clone().any(|k| k.contains(needle));
    let starts = |prefix: &str| keys.clone().any(|k| k.starts_with(prefix));
    if starts("controlnet_cond_embedding.") {
        return Ok(Layout::Diffusers);
    }
    if starts("input_hint_block.") || starts("control_model.input_hint_block.") {
        if has("lora_controlnet") || has(".up.weight") || has(".down.weight") {
            return Err(refused("a Stability Control-LoRA", path));
        }
        return Ok(Layout::Original);
    }
    if starts("adapter.") || starts("body.0.") || has("conv_in.weight") && has("body.") {
        return Err(refused("a T2I-Adapter", path));
    }
    if has("lora_controlnet") {
        return Err(refused("a Stability Control-LoRA", path));
    }
    if starts("lora_") || has("lora_down") || has("lora_A") {
        return Err(Error::bad_file(
            "this is a LoRA, not a ControlNet: add it under LoRAs (a ControlNet has an input hint block)",
            path,
        ));
    }
    if starts("model.diffusion_model.") {
        return Err(Error::bad_file(
            "this is a Stable Diffusion checkpoint, not a ControlNet: load it as the model",
            path,
        ));
    }
    Err(Error::bad_file(
        "this file is not a ControlNet: it has neither diffusers' controlnet_cond_embedding nor the \
         original input_hint_block tensors",
        path,
    ))
}

fn refused(kind: &str, path: &Path) -> Error {
    Error::bad_file(format!("this is {kind}, which Easel does not read yet; use a full ControlNet"), path)
}

/// Renames an original-layout ControlNet to diffusers' names; other tensors (a full v1.0 file's
/// own copy of the SD model) are dropped.
pub(super) fn from_original(tensors: TensorMap) -> TensorMap {
    let prefixed = tensors.keys().any(|k| k.starts_with(PREFIX));
    let hint_last = tensors
        .keys()
        .filter_map(|k| k.strip_prefix(PREFIX).unwrap_or(k).strip_prefix("input_hint_block."))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .max()
        .unwrap_or(0);
    tensors
        .into_iter()
        .filter_map(|(key, t)| {
            let rest = match (prefixed, key.strip_prefix(PREFIX)) {
                (true, Some(rest)) => rest,
                (true, None) => return None,
                (false, _) => key.as_str(),
            };
            Some((original_key(rest, hint_last)?, t))
        })
        .collect()
}

/// The diffusers name of one original key; `hint_last` is the hint block's last index.
fn original_key(rest: &str, hint_last: usize) -> Option<String> {
    if let Some(tail) = rest.strip_prefix("input_hint_block.") {
        let (index, param) = tail.split_once('.')?;
        let index: usize = index.parse().ok()?;
        // Convolutions sit at even indices with SiLU between: 0 is conv_in, the last conv_out.
        return Some(match index {
            0 => format!("controlnet_cond_embedding.conv_in.{param}"),
            i if i == hint_last => format!("controlnet_cond_embedding.conv_out.{param}"),
            i => format!("controlnet_cond_embedding.blocks.{}.{param}", i / 2 - 1),
        });
    }
    if let Some(tail) = rest.strip_prefix("zero_convs.") {
        let (index, param) = tail.split_once(".0.")?;
        return Some(format!("controlnet_down_blocks.{index}.{param}"));
    }
    if let Some(param) = rest.strip_prefix("middle_block_out.0.") {
        return Some(format!("controlnet_mid_block.{param}"));
    }
    unet_key(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_map_to_diffusers() {
        let last = 14;
        let cases = [
            ("input_hint_block.0.weight", "controlnet_cond_embedding.conv_in.weight"),
            ("input_hint_block.2.bias", "controlnet_cond_embedding.blocks.0.bias"),
            ("input_hint_block.12.weight", "controlnet_cond_embedding.blocks.5.weight"),
            ("input_hint_block.14.weight", "controlnet_cond_embedding.conv_out.weight"),
            ("zero_convs.11.0.weight", "controlnet_down_blocks.11.weight"),
            ("middle_block_out.0.bias", "controlnet_mid_block.bias"),
            ("input_blocks.4.1.proj_in.weight", "down_blocks.1.attentions.0.proj_in.weight"),
            ("input_blocks.0.0.weight", "conv_in.weight"),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("middle_block.2.out_layers.3.weight", "mid_block.resnets.1.conv2.weight"),
        ];
        for (from, to) in cases {
            assert_eq!(original_key(from, last).as_deref(), Some(to), "{from}");
        }
    }

    #[test]
    fn layouts_are_told_apart_and_neighbours_refused() {
        let p = Path::new("x.safetensors");
        let of = |keys: &[&str]| layout(keys.iter().copied(), p);
        assert_eq!(of(&["controlnet_cond_embedding.conv_in.weight"]).expect("valid"), Layout::Diffusers);
        assert_eq!(of(&["control_model.input_hint_block.0.weight"]).expect("valid"), Layout::Original);
        assert_eq!(of(&["input_hint_block.0.weight"]).expect("valid"), Layout::Original);
        let msg = |keys: &[&str]| of(keys).expect_err("refused").to_string();
        assert!(msg(&["lora_unet_down_blocks_0.lora_down.weight"]).contains("LoRA"));
        assert!(msg(&["model.diffusion_model.input_blocks.0.0.weight"]).contains("checkpoint"));
        assert!(msg(&["body.0.block1.weight", "conv_in.weight"]).contains("T2I-Adapter"));
        assert!(msg(&["lora_controlnet", "input_hint_block.0.weight"]).contains("Control-LoRA"));
        assert!(msg(&["first_stage_model.x"]).contains("not a ControlNet"));
    }
}
