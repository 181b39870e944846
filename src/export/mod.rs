//! Writing results: PNGs that carry their parameters, written atomically and never over an
//! existing file unless asked.

pub mod controlnet_text;
pub mod import;
pub mod parameters;
pub mod png;

use crate::engine::{GenerationRequest, Timings};

use parameters::{to_a1111, Provenance};

/// The text chunks of a generated picture: A1111's `parameters` (with `saved_prompt`, the prompt
/// plus LoRA tags, so other tools rebuild the stack) and Easel's lossless JSON.
pub fn generation_texts(
    request: &GenerationRequest,
    saved_prompt: &str,
    seed: u64,
    provenance: &Provenance,
    timings: &Timings,
) -> Vec<(String, String)> {
    let single = GenerationRequest { seed, batch: 1, ..request.clone() };
    let shown = GenerationRequest { prompt: saved_prompt.to_string(), ..single.clone() };
    let json = serde_json::json!({
        "request": single,
        "model": provenance.model,
        "model_hash": provenance.model_hash,
        "version": provenance.version,
        "timings": timings,
    });
    vec![
        ("parameters".to_string(), to_a1111(&shown, seed, provenance)),
        ("easel".to_string(), json.to_string()),
    ]
}
