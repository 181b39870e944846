//! LoRA options of `easel generate`: `--lora FILE[:WEIGHT[:TE_WEIGHT]]` flags and `<lora:name:w>`
//! prompt tags resolved in `--lora-dir`, loaded and merged into the model with a report per adapter.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use easel::engine::lora::{self, tags, Adapter, StackEntry};
use easel::engine::{LoraSpec, StableDiffusion};
use easel::Error;

/// Parses `FILE[:WEIGHT[:TE_WEIGHT]]`, reading numbers from the right so paths may hold colons.
pub fn parse_flag(spec: &str) -> anyhow::Result<LoraSpec> {
    let mut path = spec;
    let mut numbers = Vec::new();
    while numbers.len() < 2 {
        match path.rsplit_once(':') {
            Some((head, tail)) if tail.trim().parse::<f64>().is_ok() && !head.is_empty() => {
                numbers.push(tail.trim().parse::<f64>()?);
                path = head;
            }
            _ => break,
        }
    }
    numbers.reverse();
    let unet_weight = numbers.first().copied().unwrap_or(1.0);
    let text_weight = numbers.get(1).copied().unwrap_or(unet_weight);
    let path = PathBuf::from(path);
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("lora").to_string();
    Ok(LoraSpec { name, path, unet_weight, text_weight })
}

/// The adapters a prompt's tags name, found as `<dir>/<name>.safetensors` (or one folder deeper).
pub fn resolve_tags(prompt: &str, dir: Option<&Path>) -> anyhow::Result<Vec<LoraSpec>> {
    let wanted = tags::parse_tags(prompt).map_err(Error::BadRequest)?;
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let default_dir = Path::new("models/lora");
    let dir = dir.unwrap_or(default_dir);
    wanted
        .into_iter()
        .map(|t| {
            let path = find_in(dir, &t.name).ok_or_else(|| {
                Error::BadRequest(format!(
                    "the prompt asks for <lora:{}> but {} has no {}.safetensors; set --lora-dir to the folder that holds it",
                    t.name,
                    dir.display(),
                    t.name
                ))
            })?;
            Ok(LoraSpec { name: t.name, path, unet_weight: t.unet_weight, text_weight: t.text_weight })
        })
        .collect()
}

fn find_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let direct = dir.join(format!("{name}.safetensors"));
    if direct.is_file() {
        return Some(direct);
    }
    std::fs::read_dir(dir).ok()?.flatten().map(|e| e.path()).filter(|p| p.is_dir()).find_map(|sub| {
        let candidate = sub.join(format!("{name}.safetensors"));
        candidate.is_file().then_some(candidate)
    })
}

/// Loads every adapter, merges them into `model`, prints one line each, and returns the stack
/// (its hashes go into the PNG metadata).
pub fn apply(model: &mut StableDiffusion, specs: &[LoraSpec]) -> anyhow::Result<Vec<StackEntry>> {
    if specs.is_empty() {
        return Ok(Vec::new());
    }
    let stack = easel::job::stack(specs, |path| Adapter::load(path).map(Arc::new))?;
    let reports = lora::apply(model, &stack)?;
    for report in &reports {
        eprintln!("{}", report.summary());
        if !report.trigger_words.is_empty() {
            eprintln!("  trigger words: {}", report.trigger_words.join(", "));
        }
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_read_weights_from_the_right() {
        let s = parse_flag("C:/loras/ink.safetensors:0.8:0.5").expect("valid");
        assert_eq!(s.path, PathBuf::from("C:/loras/ink.safetensors"));
        assert_eq!((s.unet_weight, s.text_weight), (0.8, 0.5));
        let s = parse_flag("ink.safetensors:-1.5").expect("valid");
        assert_eq!((s.unet_weight, s.text_weight), (-1.5, -1.5));
        let s = parse_flag("ink.safetensors").expect("valid");
        assert_eq!((s.name.as_str(), s.unet_weight), ("ink", 1.0));
    }
}
