//! Adapters with arbitrary tensor names, shapes and values, in a well-formed safetensors file so
//! that every execution reaches the key parser, the grouping into modules, the factor checks and
//! the metadata reader. Names are built from the pieces real files use, and from anything.
#![no_main]

use std::path::Path;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const PREFIXES: [&str; 10] = [
    "lora_unet_",
    "lora_te_",
    "lora_te1_",
    "lora_te2_",
    "unet.",
    "text_encoder.",
    "text_encoder_2.",
    "down_blocks.",
    "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.",
    "",
];
const MODULES: [&str; 6] = [
    "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
    "text_model_encoder_layers_0_mlp_fc1",
    "down_blocks.0.attentions.0.proj_in",
    "input_blocks_1_1_proj_in",
    "mid_block.resnets.0.conv1",
    "to_q_lora",
];
const SUFFIXES: [&str; 16] = [
    ".lora_down.weight",
    ".lora_up.weight",
    ".alpha",
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora.down.weight",
    ".lora.up.weight",
    ".hada_w1_a",
    ".hada_w1_b",
    ".hada_w2_a",
    ".hada_w2_b",
    ".lokr_w1",
    ".lokr_w2_a",
    ".lokr_w2_b",
    ".diff",
    ".dora_scale",
];

#[derive(Arbitrary, Debug)]
struct Entry {
    prefix: u8,
    module: u8,
    suffix: u8,
    free_name: Option<String>,
    shape: Vec<u8>,
    values: Vec<f32>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    entries: Vec<Entry>,
    metadata: Vec<(String, String)>,
}

fuzz_target!(|input: Input| {
    let mut names = Vec::new();
    let mut buffers = Vec::new();
    let mut shapes = Vec::new();
    for e in input.entries.iter().take(12) {
        let name = e.free_name.clone().unwrap_or_else(|| {
            format!(
                "{}{}{}",
                PREFIXES[e.prefix as usize % PREFIXES.len()],
                MODULES[e.module as usize % MODULES.len()],
                SUFFIXES[e.suffix as usize % SUFFIXES.len()]
            )
        });
        // Small shapes keep each execution fast; zero sizes stay possible.
        let shape: Vec<usize> = e.shape.iter().take(4).map(|&d| (d % 9) as usize).collect();
        let count: usize = shape.iter().product();
        let values: Vec<u8> = (0..count)
            .flat_map(|i| e.values.get(i % e.values.len().max(1)).copied().unwrap_or(0.5).to_le_bytes())
            .collect();
        names.push(name);
        shapes.push(shape);
        buffers.push(values);
    }
    let mut seen = std::collections::HashSet::new();
    let views: Vec<_> = names
        .iter()
        .zip(&shapes)
        .zip(&buffers)
        .filter(|((name, _), _)| seen.insert(name.to_string()))
        .filter_map(|((name, shape), bytes)| {
            let view =
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes).ok()?;
            Some((name.clone(), view))
        })
        .collect();
    let metadata: std::collections::HashMap<String, String> = input.metadata.into_iter().take(8).collect();
    let Ok(bytes) = safetensors::serialize(views, Some(metadata)) else { return };
    let _ = easel::engine::lora::Adapter::from_bytes(&bytes, Path::new("fuzz.safetensors"));
});
