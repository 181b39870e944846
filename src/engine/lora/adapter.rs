//! Reading adapter files: kohya/A1111 (`lora_unet_…`, `lora_te_…`, LoCon, LyCORIS LoHa/LoKr/full
//! `diff`), diffusers/PEFT (`unet.….lora_A/lora_B`, `text_encoder.…`) and the older diffusers layouts
//! (`….lora.down/up`, `processor.to_q_lora.down`), into one list of modules with their deltas.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use sha2::{Digest, Sha256};

use super::delta::{Delta, Factor};
use super::metadata::AdapterMetadata;
use crate::engine::weights::{header_of, parse_safetensors, read_file};
use crate::error::{Error, Result};

/// Which network a module belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// The UNet.
    Unet,
    /// The (first) text encoder.
    Text,
    /// SDXL's second text encoder, which SD 1.x/2.x models do not have.
    Text2,
}

/// How a module is named in the file.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ModuleName {
    /// kohya's flat form: the module path with `.` replaced by `_` (ambiguous; resolved against the
    /// model's own names).
    Flat(String),
    /// A dotted diffusers/transformers path.
    Dotted(String),
}

/// One adapted module.
#[derive(Clone, Debug)]
pub struct AdapterModule {
    /// The network.
    pub target: Target,
    /// The module's name in the file.
    pub name: ModuleName,
    /// The change it makes.
    pub delta: Delta,
}

/// An adapter file, parsed.
#[derive(Clone, Debug)]
pub struct Adapter {
    /// The name used in prompts and metadata (the file stem).
    pub name: String,
    /// Where it was read from.
    pub path: PathBuf,
    /// The layout it was written in ("kohya", "PEFT", "diffusers").
    pub format: &'static str,
    /// Its modules.
    pub modules: Vec<AdapterModule>,
    /// Keys that could not be understood, reported rather than dropped silently.
    pub unknown_keys: Vec<String>,
    /// Title, trigger words, rank, family and the rest of the header metadata.
    pub metadata: AdapterMetadata,
    /// A1111's hash: the first 12 hex digits of the sha256 of the bytes after the header.
    pub hash: String,
}

impl Adapter {
    /// Reads an adapter from a `.safetensors` file.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::not_found("LoRA", path));
        }
        if path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref()
            != Some("safetensors")
        {
            return Err(Error::bad_file("Easel reads LoRA adapters from .safetensors files", path));
        }
        // One read serves the tensors, the header and the hash.
        Self::from_bytes(&read_file(path)?, path)
    }

    /// Reads an adapter from the bytes of a `.safetensors` file; `path` names it (and its stem
    /// the adapter).
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self> {
        let tensors = parse_safetensors(bytes, path)?;
        let info = header_of(bytes, path)?;
        let hash = a1111_hash(bytes.get(info.data_offset..).unwrap_or_default());
        let header = info.metadata;
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("lora").to_string();
        let (format, modules, unknown_keys) = parse(tensors, &header, path)?;
        if modules.is_empty() {
            return Err(Error::bad_file(
                "no LoRA modules were found in this file (is it a full model or an embedding?)",
                path,
            ));
        }
        let metadata = AdapterMetadata::read(&header, &modules, &name);
        Ok(Self { name, path: path.to_path_buf(), format, modules, unknown_keys, metadata, hash })
    }
}

/// A1111's LoRA hash: the first 12 hex digits of the sha256 of the tensor data (after the header).
fn a1111_hash(tensor_data: &[u8]) -> String {
    Sha256::digest(tensor_data).iter().take(6).map(|b| format!("{b:02x}")).collect()
}

type Parsed = (&'static str, Vec<AdapterModule>, Vec<String>);

/// Groups tensors by module and turns each group into a delta.
fn parse(tensors: HashMap<String, Tensor>, header: &HashMap<String, String>, path: &Path) -> Result<Parsed> {
    let mut groups: BTreeMap<(Target, ModuleName), HashMap<String, Tensor>> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut format = "kohya";
    for (key, t) in tensors {
        match split_key(&key) {
            Some((target, name, param, layout)) => {
                if layout != "kohya" {
                    format = layout;
                }
                groups.entry((target, name)).or_default().insert(param, t);
            }
            None => unknown.push(key),
        }
    }
    let peft_alpha = peft_alpha(header);
    let mut modules = Vec::with_capacity(groups.len());
    for ((target, name), params) in groups {
        let label = match &name {
            ModuleName::Flat(s) | ModuleName::Dotted(s) => s.clone(),
        };
        if params.contains_key("dora_scale") || params.contains_key("lora_magnitude_vector") {
            return Err(Error::bad_file(
                format!("{label} is a DoRA module; DoRA adapters are not supported yet"),
                path,
            ));
        }
        match to_delta(params, peft_alpha)? {
            Some(delta) => {
                delta.check().map_err(|why| {
                    Error::bad_file(
                        format!("module {label} cannot be used: {why}; the file is damaged"),
                        path,
                    )
                })?;
                modules.push(AdapterModule { target, name, delta })
            }
            None => unknown.push(label),
        }
    }
    unknown.sort();
    Ok((format, modules, unknown))
}

/// (target, module, parameter, layout) of one tensor key.
fn split_key(key: &str) -> Option<(Target, ModuleName, String, &'static str)> {
    for (prefix, target) in [
        ("lora_unet_", Target::Unet),
        ("lora_te1_", Target::Text),
        ("lora_te2_", Target::Text2),
        ("lora_te_", Target::Text),
    ] {
        if let Some(rest) = key.strip_prefix(prefix) {
            let (module, param) = rest.split_once('.')?;
            return Some((target, ModuleName::Flat(module.to_string()), param.to_string(), "kohya"));
        }
    }
    let (target, rest) = if let Some(r) = key.strip_prefix("unet.") {
        (Target::Unet, r)
    } else if let Some(r) = key.strip_prefix("text_encoder.") {
        (Target::Text, r)
    } else if let Some(r) = key.strip_prefix("text_encoder_2.") {
        (Target::Text2, r)
    } else if key.starts_with("down_blocks.")
        || key.starts_with("up_blocks.")
        || key.starts_with("mid_block.")
    {
        (Target::Unet, key)
    } else {
        return None;
    };
    let rest = rest.strip_prefix("text_model.").unwrap_or(rest);
    for (marker, param) in [
        (".lora_A.weight", "lora_down.weight"),
        (".lora_B.weight", "lora_up.weight"),
        (".lora.down.weight", "lora_down.weight"),
        (".lora.up.weight", "lora_up.weight"),
        (".lora_magnitude_vector", "lora_magnitude_vector"),
        (".alpha", "alpha"),
    ] {
        if let Some(module) = rest.strip_suffix(marker) {
            let layout = if marker.starts_with(".lora_") { "PEFT" } else { "diffusers" };
            return Some((target, ModuleName::Dotted(module.to_string()), param.to_string(), layout));
        }
    }
    // The attention-processor layout: `….attn1.processor.to_q_lora.down.weight`.
    let (block, tail) = rest.split_once(".processor.")?;
    let (proj, dir) = tail.split_once("_lora.")?;
    let proj = if proj == "to_out" { "to_out.0" } else { proj };
    let param = match dir {
        "down.weight" => "lora_down.weight",
        "up.weight" => "lora_up.weight",
        _ => return None,
    };
    Some((target, ModuleName::Dotted(format!("{block}.{proj}")), param.to_string(), "diffusers"))
}

/// PEFT files may record α in the header (diffusers' `lora_adapter_metadata`).
fn peft_alpha(header: &HashMap<String, String>) -> Option<f64> {
    let meta: serde_json::Value = serde_json::from_str(header.get("lora_adapter_metadata")?).ok()?;
    let find = |v: &serde_json::Value| v.get("lora_alpha").and_then(|a| a.as_f64());
    find(&meta).or_else(|| meta.as_object()?.values().find_map(find))
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?.first().copied().unwrap_or(0.0))
}

fn to_delta(mut p: HashMap<String, Tensor>, peft_alpha: Option<f64>) -> Result<Option<Delta>> {
    let alpha = match p.remove("alpha") {
        Some(t) => Some(scalar(&t)?),
        None => peft_alpha,
    };
    let mut take = |k: &str| p.remove(k);
    if let (Some(down), Some(up)) = (take("lora_down.weight"), take("lora_up.weight")) {
        if take("lora_mid.weight").is_some() {
            return Ok(None);
        }
        return Ok(Some(Delta::LoRa { down, up, alpha }));
    }
    if let (Some(a1), Some(b1), Some(a2), Some(b2)) =
        (take("hada_w1_a"), take("hada_w1_b"), take("hada_w2_a"), take("hada_w2_b"))
    {
        if take("hada_t1").is_some() || take("hada_t2").is_some() {
            return Ok(None);
        }
        return Ok(Some(Delta::LoHa { w1: (a1, b1), w2: (a2, b2), alpha }));
    }
    let factor = |whole: Option<Tensor>, a: Option<Tensor>, b: Option<Tensor>| match (whole, a, b) {
        (Some(w), _, _) => Some(Factor::Whole(w)),
        (None, Some(a), Some(b)) => Some(Factor::Product(a, b)),
        _ => None,
    };
    let w1 = factor(take("lokr_w1"), take("lokr_w1_a"), take("lokr_w1_b"));
    let w2 = factor(take("lokr_w2"), take("lokr_w2_a"), take("lokr_w2_b"));
    if let (Some(w1), Some(w2)) = (w1, w2) {
        if take("lokr_t2").is_some() {
            return Ok(None);
        }
        return Ok(Some(Delta::LoKr { w1, w2, alpha }));
    }
    if let Some(diff) = take("diff") {
        return Ok(Some(Delta::Full { diff, diff_b: take("diff_b") }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_every_layout_are_split() {
        let cases = [
            ("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight", Target::Unet, "kohya"),
            ("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha", Target::Text, "kohya"),
            ("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight", Target::Unet, "PEFT"),
            ("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_B.weight", Target::Text, "PEFT"),
            ("unet.mid_block.attentions.0.proj_out.lora.down.weight", Target::Unet, "diffusers"),
        ];
        for (key, target, layout) in cases {
            let (t, _, _, l) = split_key(key).unwrap_or_else(|| panic!("{key} not understood"));
            assert_eq!((t, l), (target, layout), "{key}");
        }
        let (_, name, param, _) = split_key(
            "down_blocks.1.attentions.0.transformer_blocks.0.attn2.processor.to_out_lora.up.weight",
        )
        .expect("processor layout");
        assert_eq!(
            name,
            ModuleName::Dotted("down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_out.0".into())
        );
        assert_eq!(param, "lora_up.weight");
        let (_, name, _, _) =
            split_key("text_encoder.text_model.encoder.layers.3.self_attn.k_proj.lora_A.weight")
                .expect("peft");
        assert_eq!(name, ModuleName::Dotted("encoder.layers.3.self_attn.k_proj".into()));
        assert!(split_key("something_else.weight").is_none());
    }
}
