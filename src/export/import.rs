//! Reading generation settings back out of a PNG: Easel's own JSON chunk (lossless), A1111's
//! `parameters` text, or a ComfyUI `prompt` graph (its sampler node, the text encoders wired to it
//! and the empty latent's size). Dropping any of these on the studio fills in the settings.

use std::path::Path;

use serde_json::Value;

use super::parameters::parse_a1111;
use super::png::{read_png_text_notes, PngText};
use crate::engine::lora::tags;
use crate::engine::{GenerationRequest, SamplerKind};
use crate::error::{Error, Result};

/// Settings found in a picture, and which writer they came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Imported {
    /// The settings (LoRA tags stay in the prompt text, as the writer saved them).
    pub request: GenerationRequest,
    /// "Easel", "A1111" or "ComfyUI".
    pub source: &'static str,
}

/// The settings stored in the PNG at `path`.
pub fn import_png(path: &Path) -> Result<Imported> {
    import_texts(read_png_text_notes(path)?, path)
}

/// The settings in a PNG's text chunks (read from `path`, which messages name).
pub fn import_texts(png: PngText, path: &Path) -> Result<Imported> {
    let PngText { texts, skipped } = png;
    if let Some(json) = texts.get("easel") {
        let value: Value = serde_json::from_str(json)
            .map_err(|e| Error::bad_file(format!("its Easel metadata is damaged ({e})"), path))?;
        let request = serde_json::from_value(value["request"].clone())
            .map_err(|e| Error::bad_file(format!("its Easel metadata is damaged ({e})"), path))?;
        // The A1111 text holds the prompt with the LoRA tags the JSON keeps separately.
        let mut request: GenerationRequest = request;
        request.prompt = match texts.get("parameters") {
            Some(text) => parse_a1111(text).prompt,
            None => tags::prompt_with_tags(&tags::strip_tags(&request.prompt), &request.loras),
        };
        // A picture from someone else names its adapters, never where they lie: they are found
        // by name in the user's LoRA folder, like A1111's tags.
        request.loras.clear();
        return checked(Imported { request, source: "Easel" }, path);
    }
    if let Some(text) = texts.get("parameters") {
        let request = parse_a1111(text).to_request().map_err(|e| Error::bad_file(e.to_string(), path))?;
        return checked(Imported { request, source: "A1111" }, path);
    }
    if let Some(graph) = texts.get("prompt") {
        let value: Value = serde_json::from_str(graph)
            .map_err(|e| Error::bad_file(format!("its ComfyUI graph is damaged ({e})"), path))?;
        let request = comfy_request(&value)
            .ok_or_else(|| Error::bad_file("its ComfyUI graph has no KSampler node Easel can read", path))?;
        return checked(Imported { request, source: "ComfyUI" }, path);
    }
    let mut message =
        "this PNG carries no generation settings (no Easel, A1111 or ComfyUI metadata)".to_string();
    for note in skipped {
        message.push_str(&format!("; {note}"));
    }
    Err(Error::bad_file(message, path))
}

/// Refuses imported settings whose adapter tags name paths (the tag parser says which), and the
/// inputs a request may carry: they are files on the machine that wrote the picture.
fn checked(mut imported: Imported, path: &Path) -> Result<Imported> {
    tags::parse_tags(&imported.request.prompt).map_err(|e| Error::bad_file(e, path))?;
    let request = &mut imported.request;
    (request.init_image, request.mask, request.noise) = (None, None, None);
    // ControlNets are found by name in the user's folder, and their pictures are not in the PNG.
    for unit in &mut request.controls {
        unit.image = None;
        if let Some(name) = unit.model.file_name() {
            unit.model = std::path::PathBuf::from(name);
        }
    }
    Ok(imported)
}

/// A request from a ComfyUI API graph: node id → {class_type, inputs}; links are `[node_id, slot]`.
fn comfy_request(graph: &Value) -> Option<GenerationRequest> {
    let nodes = graph.as_object()?;
    let sampler = nodes
        .values()
        .find(|n| n["class_type"].as_str().is_some_and(|c| c == "KSampler" || c == "KSamplerAdvanced"))?;
    let inputs = &sampler["inputs"];
    let linked = |link: &Value| -> Option<&Value> { nodes.get(link.get(0)?.as_str()?) };
    let text_of = |link: &Value| -> Option<String> {
        let node = linked(link)?;
        node["inputs"]["text"].as_str().map(str::to_string)
    };
    let mut req = GenerationRequest {
        prompt: text_of(&inputs["positive"]).unwrap_or_default(),
        negative_prompt: text_of(&inputs["negative"]).unwrap_or_default(),
        ..Default::default()
    };
    let seed = inputs.get("seed").or_else(|| inputs.get("noise_seed"));
    if let Some(v) = seed.and_then(Value::as_u64) {
        req.seed = v;
    }
    if let Some(v) = inputs["steps"].as_u64() {
        req.steps = v as usize;
    }
    if let Some(v) = inputs["cfg"].as_f64() {
        req.cfg_scale = v;
    }
    if let Some(v) = inputs["denoise"].as_f64().filter(|d| *d < 1.0) {
        req.strength = v;
    }
    if let Some(kind) = comfy_sampler(inputs["sampler_name"].as_str()?, inputs["scheduler"].as_str()) {
        req.sampler = kind;
    }
    if let Some(latent) = linked(&inputs["latent_image"]) {
        if let (Some(w), Some(h)) = (latent["inputs"]["width"].as_u64(), latent["inputs"]["height"].as_u64())
        {
            req.width = w as usize;
            req.height = h as usize;
        }
    }
    Some(req)
}

fn comfy_sampler(name: &str, scheduler: Option<&str>) -> Option<SamplerKind> {
    let karras = scheduler == Some("karras");
    Some(match name {
        "euler" => SamplerKind::Euler,
        "euler_ancestral" => SamplerKind::EulerA,
        "ddim" => SamplerKind::Ddim,
        "lcm" => SamplerKind::Lcm,
        "dpmpp_2m" if karras => SamplerKind::DpmPp2mKarras,
        "dpmpp_2m" => SamplerKind::DpmPp2m,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::png::save_png;

    fn png_with(texts: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("p.png");
        let texts: Vec<(String, String)> =
            texts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        save_png(&path, &image::RgbImage::new(8, 8), &texts, false).expect("writes");
        (dir, path)
    }

    #[test]
    fn comfyui_graphs_give_their_sampler_settings() {
        let graph = r#"{
          "3": {"class_type": "KSampler", "inputs": {"seed": 77, "steps": 30, "cfg": 6.5,
                "sampler_name": "dpmpp_2m", "scheduler": "karras", "denoise": 1.0,
                "model": ["4", 0], "positive": ["6", 0], "negative": ["7", 0], "latent_image": ["5", 0]}},
          "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 640, "height": 384, "batch_size": 1}},
          "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
          "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}}
        }"#;
        let (_dir, path) = png_with(&[("prompt", graph)]);
        let got = import_png(&path).expect("imports");
        assert_eq!(got.source, "ComfyUI");
        let r = got.request;
        assert_eq!((r.prompt.as_str(), r.negative_prompt.as_str()), ("a red fox", "blurry"));
        assert_eq!((r.seed, r.steps, r.cfg_scale, r.width, r.height), (77, 30, 6.5, 640, 384));
        assert_eq!(r.sampler, SamplerKind::DpmPp2mKarras);
    }

    #[test]
    fn a1111_text_is_read() {
        let text = "a cat <lora:ink:0.5>\nNegative prompt: dog\nSteps: 12, Sampler: Euler a, CFG scale: 5, Seed: 9, Size: 256x320";
        let (_dir, path) = png_with(&[("parameters", text)]);
        let got = import_png(&path).expect("imports");
        assert_eq!(got.source, "A1111");
        assert_eq!(got.request.prompt, "a cat <lora:ink:0.5>");
        assert_eq!((got.request.steps, got.request.seed, got.request.width), (12, 9, 256));
    }

    #[test]
    fn pictures_without_settings_say_so() {
        let (_dir, path) = png_with(&[]);
        let msg = import_png(&path).expect_err("refused").to_string();
        assert!(msg.contains("no generation settings") && msg.contains("p.png"), "{msg}");
    }

    #[test]
    fn an_easel_chunk_names_adapters_but_never_where_they_lie() {
        let request = GenerationRequest {
            prompt: "a cat".into(),
            init_image: Some("/etc/passwd".into()),
            loras: vec![crate::engine::LoraSpec {
                name: "ink".into(),
                path: "/somewhere/else/ink.safetensors".into(),
                unet_weight: 0.5,
                text_weight: 0.5,
            }],
            ..Default::default()
        };
        let json = serde_json::json!({ "request": request }).to_string();
        let (_dir, path) = png_with(&[("easel", &json)]);
        let got = import_png(&path).expect("imports").request;
        assert!(got.loras.is_empty(), "paths are dropped: {:?}", got.loras);
        assert_eq!(got.prompt, "a cat <lora:ink:0.5>", "the adapter is found by name instead");
        assert_eq!(got.init_image, None);

        let hostile = GenerationRequest {
            loras: vec![crate::engine::LoraSpec { name: "../../x".into(), ..request.loras[0].clone() }],
            ..request
        };
        let json = serde_json::json!({ "request": hostile }).to_string();
        let (_dir, path) = png_with(&[("easel", &json)]);
        let msg = import_png(&path).expect_err("a path as a name").to_string();
        assert!(msg.contains("names a path") && msg.contains("p.png"), "{msg}");
    }

    #[test]
    fn a1111_tags_naming_paths_are_refused() {
        let (_dir, path) =
            png_with(&[("parameters", "a cat <lora:/abs/path:1>\nSteps: 12, Seed: 9, Size: 64x64")]);
        let msg = import_png(&path).expect_err("refused").to_string();
        assert!(msg.contains("names a path"), "{msg}");
    }
}
