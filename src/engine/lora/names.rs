//! Finding the model module an adapter module means. kohya's flat names replace every `.` with `_`,
//! which is ambiguous (`transformer_blocks` vs `transformer.blocks`), so the lookup is built from the
//! model's own module names, in diffusers form and in the original `input_blocks…` form.

use std::collections::{HashMap, HashSet};

use super::adapter::ModuleName;
use crate::engine::weights::TensorMap;

/// Every adaptable module of one network, by each name a file may use for it.
pub struct ModuleIndex {
    by_name: HashMap<String, String>,
}

impl ModuleIndex {
    /// The UNet's modules (layers with a weight matrix or kernel).
    pub fn unet(weights: &TensorMap) -> Self {
        let modules = modules(weights);
        let up_with_attention: HashSet<usize> = modules
            .iter()
            .filter_map(|m| m.strip_prefix("up_blocks.")?.split_once(".attentions.")?.0.parse().ok())
            .collect();
        let mut by_name = HashMap::new();
        for m in &modules {
            by_name.insert(m.replace('.', "_"), m.clone());
            by_name.insert(m.clone(), m.clone());
            if let Some(ldm) = original_name(m, &up_with_attention) {
                by_name.entry(ldm.replace('.', "_")).or_insert_with(|| m.clone());
            }
        }
        Self { by_name }
    }

    /// The text encoder's modules (transformers names without `text_model.`).
    pub fn text(weights: &TensorMap) -> Self {
        let mut by_name = HashMap::new();
        for m in modules(weights) {
            let flat = m.replace('.', "_");
            by_name.insert(format!("text_model_{flat}"), m.clone());
            by_name.insert(flat, m.clone());
            by_name.insert(format!("text_model.{m}"), m.clone());
            by_name.insert(m.clone(), m);
        }
        Self { by_name }
    }

    /// The module path (without `.weight`) a file's name refers to.
    pub fn resolve(&self, name: &ModuleName) -> Option<&str> {
        let key = match name {
            ModuleName::Flat(s) | ModuleName::Dotted(s) => s,
        };
        self.by_name.get(key).map(String::as_str)
    }
}

/// Module paths of the weights that are matrices or kernels.
fn modules(weights: &TensorMap) -> Vec<String> {
    let mut out: Vec<String> = weights
        .iter()
        .filter(|(_, t)| t.rank() >= 2)
        .filter_map(|(k, _)| k.strip_suffix(".weight").map(str::to_string))
        .collect();
    out.sort();
    out
}

const RESNET: [(&str, &str); 6] = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
];

/// The original (CompVis) path of a diffusers UNet module, three slots per level as in SD 1.x/2.x.
fn original_name(module: &str, up_with_attention: &HashSet<usize>) -> Option<String> {
    let simple = [
        ("time_embedding.linear_1", "time_embed.0"),
        ("time_embedding.linear_2", "time_embed.2"),
        ("add_embedding.linear_1", "label_emb.0.0"),
        ("add_embedding.linear_2", "label_emb.0.2"),
        ("conv_in", "input_blocks.0.0"),
        ("conv_norm_out", "out.0"),
        ("conv_out", "out.2"),
    ];
    if let Some((_, to)) = simple.iter().find(|(from, _)| *from == module) {
        return Some(to.to_string());
    }
    let resnet = |layer: &str| RESNET.iter().find(|(d, _)| *d == layer).map(|(_, o)| o.to_string());
    let p: Vec<&str> = module.splitn(5, '.').collect();
    match p.as_slice() {
        ["down_blocks", i, "resnets", j, layer] => {
            let n = 3 * i.parse::<usize>().ok()? + j.parse::<usize>().ok()? + 1;
            Some(format!("input_blocks.{n}.0.{}", resnet(layer)?))
        }
        ["down_blocks", i, "attentions", j, rest] => {
            let n = 3 * i.parse::<usize>().ok()? + j.parse::<usize>().ok()? + 1;
            Some(format!("input_blocks.{n}.1.{rest}"))
        }
        ["down_blocks", i, "downsamplers", "0", "conv"] => {
            Some(format!("input_blocks.{}.0.op", 3 * (i.parse::<usize>().ok()? + 1)))
        }
        ["mid_block", "resnets", k, layer] => {
            Some(format!("middle_block.{}.{}", 2 * k.parse::<usize>().ok()?, resnet(layer)?))
        }
        ["mid_block", "attentions", "0", rest @ ..] => Some(format!("middle_block.1.{}", rest.join("."))),
        ["up_blocks", i, "resnets", j, layer] => {
            let n = 3 * i.parse::<usize>().ok()? + j.parse::<usize>().ok()?;
            Some(format!("output_blocks.{n}.0.{}", resnet(layer)?))
        }
        ["up_blocks", i, "attentions", j, rest] => {
            let n = 3 * i.parse::<usize>().ok()? + j.parse::<usize>().ok()?;
            Some(format!("output_blocks.{n}.1.{rest}"))
        }
        ["up_blocks", i, "upsamplers", "0", "conv"] => {
            let i: usize = i.parse().ok()?;
            let slot = if up_with_attention.contains(&i) { 2 } else { 1 };
            Some(format!("output_blocks.{}.{slot}.conv", 3 * i + 2))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_names_follow_the_reference_table() {
        let attn: HashSet<usize> = [1, 2, 3].into();
        let cases = [
            ("down_blocks.0.resnets.1.conv1", "input_blocks.2.0.in_layers.2"),
            (
                "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q",
                "input_blocks.4.1.transformer_blocks.0.attn1.to_q",
            ),
            ("mid_block.attentions.0.proj_in", "middle_block.1.proj_in"),
            ("mid_block.resnets.1.time_emb_proj", "middle_block.2.emb_layers.1"),
            ("up_blocks.0.upsamplers.0.conv", "output_blocks.2.1.conv"),
            ("up_blocks.2.upsamplers.0.conv", "output_blocks.8.2.conv"),
            ("up_blocks.3.attentions.2.proj_out", "output_blocks.11.1.proj_out"),
            ("add_embedding.linear_2", "label_emb.0.2"),
        ];
        for (from, to) in cases {
            assert_eq!(original_name(from, &attn).as_deref(), Some(to), "{from}");
        }
    }
}
