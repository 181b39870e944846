//! The job layer the CLI and the studio's worker share: a preset laid over a request, a LoRA
//! stack built from specs, and the provenance a picture's metadata records. Each is
//! written once here so `easel generate` and the Generate button cannot drift apart.

use std::path::Path;
use std::sync::Arc;

use crate::engine::lora::{Adapter, StackEntry};
use crate::engine::{GenerationRequest, LoraSpec, StableDiffusion};
use crate::error::Result;
use crate::export::parameters::Provenance;
use crate::presets::Preset;

/// `request` with every setting `preset` fixes laid over it; the stack is replaced only when the
/// preset carries one.
pub fn with_preset(request: GenerationRequest, preset: &Preset) -> GenerationRequest {
    let mut r = request;
    r.sampler = preset.sampler.unwrap_or(r.sampler);
    r.steps = preset.steps.unwrap_or(r.steps);
    r.cfg_scale = preset.cfg_scale.unwrap_or(r.cfg_scale);
    r.width = preset.width.unwrap_or(r.width);
    r.height = preset.height.unwrap_or(r.height);
    // A preset that names its sampler names its spacing too: none means the model's own.
    if preset.sampler.is_some() {
        r.spacing = preset.spacing;
    }
    if let Some(negative) = &preset.negative_prompt {
        r.negative_prompt = negative.clone();
    }
    if let Some(prompt) = &preset.prompt {
        r.prompt = prompt.clone();
    }
    if !preset.loras.is_empty() {
        r.loras = preset.loras.clone();
    }
    r
}

/// The adapters `specs` name, each read through `load` (the CLI reads files afresh, the worker
/// keeps the ones it read before), at the specs' weights.
pub fn stack(
    specs: &[LoraSpec],
    mut load: impl FnMut(&Path) -> Result<Arc<Adapter>>,
) -> Result<Vec<StackEntry>> {
    specs
        .iter()
        .map(|spec| {
            Ok(StackEntry {
                adapter: load(&spec.path)?,
                unet_weight: spec.unet_weight,
                text_weight: spec.text_weight,
                enabled: true,
            })
        })
        .collect()
}

/// What a picture made with `model` and `stack` for `request` records about where it came from:
/// the model's name and hash (single files only, as A1111 writes it), Easel's version, each
/// adapter's hash and each embedding's the prompts use (an embedding for another family is refused
/// here, before any work).
pub fn provenance(
    model: &StableDiffusion,
    model_hash: Option<String>,
    stack: &[StackEntry],
    request: &GenerationRequest,
) -> Result<Provenance> {
    let embeddings = crate::engine::conditioning::used_embeddings(model, request)?
        .iter()
        .map(|e| (e.name.clone(), e.hash.clone()))
        .collect();
    Ok(Provenance {
        model: model.name.clone(),
        model_hash,
        version: format!("Easel {}", crate::version()),
        lora_hashes: stack.iter().map(|e| (e.adapter.name.clone(), e.adapter.hash.clone())).collect(),
        // A folder has no single hash; its name alone says which VAE it was.
        vae: model.vae_file().map(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            (name, model.vae_hash().unwrap_or_default().to_string())
        }),
        embeddings,
        controls: request
            .controls
            .iter()
            .map(|c| {
                (
                    crate::engine::model::display_name(&c.model),
                    crate::engine::controlnet::prepare::old_hash(&c.model),
                )
            })
            .collect(),
    })
}

/// Points each ControlNet unit of `request` at the file or folder it names: a path, a hub id
/// pulled earlier (`easel models pull lllyasviel/control_v11p_sd15_canny`), or a name — A1111's
/// `control_v11p_sd15_canny [d14c016b]` — in `dir`. What the PNG then records is what ran.
pub fn resolve_controlnets(request: &mut GenerationRequest, dir: &Path) -> Result<()> {
    for unit in &mut request.controls {
        let spec = unit.model.to_string_lossy().to_string();
        if unit.model.as_os_str().is_empty() {
            continue;
        }
        if unit.model.exists() {
            // Recorded whole, so the history finds it from any working folder.
            unit.model = std::path::absolute(&unit.model).unwrap_or_else(|_| unit.model.clone());
            continue;
        }
        if crate::hub::looks_like_repo_id(&spec) {
            unit.model = crate::hub::cached_controlnet(&spec).ok_or_else(|| {
                crate::error::Error::Hub(format!(
                    "the ControlNet {spec} is not downloaded yet; pull it first (`easel models pull {spec}`), \
                     or give its file"
                ))
            })?;
            continue;
        }
        let found = crate::engine::controlnet::prepare::resolve(&unit.model, dir)?;
        unit.model = std::path::absolute(&found).unwrap_or(found);
    }
    Ok(())
}

/// The A1111 short hash of the model at `path` when it is one file; folders have none.
pub fn model_hash(path: &Path) -> Result<Option<String>> {
    if path.is_file() {
        crate::export::parameters::model_hash(path).map(Some)
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::SamplerKind;

    #[test]
    fn a_preset_fixes_only_what_it_names() {
        let base = GenerationRequest { prompt: "a cat".into(), steps: 30, ..Default::default() };
        let preset = Preset { sampler: Some(SamplerKind::Lcm), width: Some(768), ..Default::default() };
        let r = with_preset(base.clone(), &preset);
        assert_eq!((r.sampler, r.width, r.steps, r.prompt.as_str()), (SamplerKind::Lcm, 768, 30, "a cat"));
        assert_eq!(r.height, base.height, "unnamed settings keep the request's values");
    }
}
