//! `easel inspect`: what a file is — a model's family and shape, a safetensors file's tensors and
//! metadata, or a picture's generation parameters — as text or JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use candle_core::{DType, Device};
use clap::Args;
use easel::engine::checkpoint;
use easel::engine::lora::{Adapter, Target};
use easel::engine::prompt::Emphasis;
use easel::engine::weights::{read_safetensors, read_safetensors_header, read_safetensors_metadata};
use easel::engine::StableDiffusion;
use easel::Error;
use serde_json::{json, Value};

#[derive(Args)]
pub struct InspectArgs {
    /// A model folder, a .safetensors file or a PNG.
    #[arg(required_unless_present = "prompt")]
    path: Option<PathBuf>,
    /// Show how a prompt is read instead: its AND parts, prompt-editing schedule, 75-token chunks
    /// and each token's weight.
    #[arg(long, conflicts_with = "path")]
    prompt: Option<String>,
    /// With --prompt: the steps prompt editing is scheduled over.
    #[arg(long, default_value_t = 20)]
    steps: usize,
    /// With --prompt: original, no-norm, ignore, none or comfy.
    #[arg(long, default_value_t = Emphasis::Original, value_parser = super::errors::value::<Emphasis>)]
    emphasis: Emphasis,
    /// With --prompt: the folder of textual-inversion embeddings the prompt may name.
    #[arg(long)]
    embeddings_dir: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// For a LoRA: also report what it matches in this model (folder, file or hub id).
    #[arg(long)]
    model: Option<String>,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    if let Some(prompt) = &args.prompt {
        return describe_prompt(prompt, &args);
    }
    let Some(path) = &args.path else {
        return Err(Error::BadRequest("give a file to inspect, or --prompt TEXT".into()).into());
    };
    if !path.exists() {
        return Err(Error::not_found("file", path).into());
    }
    let report =
        if path.is_dir() && !path.join("model_index.json").exists() && path.join("config.json").exists() {
            describe_controlnet(path)?
        } else if path.is_dir() {
            describe_folder(path)?
        } else {
            match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
                Some("png") => describe_png(path)?,
                Some("safetensors") if looks_like_controlnet(path)? => describe_controlnet(path)?,
                Some("safetensors") => describe_safetensors(path, args.model.as_deref())?,
                Some("pth") => describe_controlnet(path)?,
                _ => {
                    return Err(Error::bad_file(
                        "Easel inspects model folders, .safetensors files, ControlNet .pth files and PNGs",
                        path,
                    )
                    .into())
                }
            }
        };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, 0);
    }
    Ok(ExitCode::SUCCESS)
}

/// How `prompt` is read: printed as text, or as JSON with `--json`.
fn describe_prompt(prompt: &str, args: &InspectArgs) -> anyhow::Result<ExitCode> {
    use easel::engine::prompt::{chunks::chunks, composable_parts, schedule::schedule, Emphasis};
    if args.steps == 0 || args.steps > 1000 {
        return Err(Error::setting(easel::error::Setting::Steps, "must be between 1 and 1000").into());
    }
    let tokenizer = match &args.model {
        Some(m) if Path::new(m).join("tokenizer").is_dir() => {
            easel::engine::tokenizer::Tokenizer::from_folder(&Path::new(m).join("tokenizer"))?
        }
        _ => easel::engine::tokenizer::Tokenizer::bundled(easel::engine::tokenizer::EOS)?,
    };
    let db = match &args.embeddings_dir {
        Some(dir) => easel::engine::embeddings::EmbeddingDb::load(dir, &tokenizer),
        None => easel::engine::embeddings::EmbeddingDb::empty(),
    };
    let stripped = easel::engine::lora::tags::strip_tags(prompt);
    let mut parts = Vec::new();
    let mut text = format!("prompt (emphasis {}, {} steps)\n", args.emphasis, args.steps);
    let emphasis: Emphasis = args.emphasis;
    for (index, (part, weight)) in composable_parts(&stripped).into_iter().enumerate() {
        text.push_str(&format!("part {} (weight {weight}):\n", index + 1));
        let mut entries = Vec::new();
        for (until, edited) in schedule(&part, args.steps) {
            let (found, count) = chunks(&emphasis.parse(&edited), &tokenizer, &db);
            // A1111's own numbers: the text holds until this step, then the next one takes over.
            text.push_str(&format!("  until step {until}: {edited}\n"));
            let mut listed = Vec::new();
            for (c, chunk) in found.iter().enumerate() {
                let tokens = chunk_tokens(chunk, &tokenizer);
                let shown: Vec<String> = tokens
                    .iter()
                    .map(|(t, w)| if *w == 1.0 { t.clone() } else { format!("{t}×{}", round4(*w)) })
                    .collect();
                text.push_str(&format!("    chunk {}: {}\n", c + 1, shown.join(" ")));
                listed.push(json!(tokens
                    .iter()
                    .map(|(t, w)| json!({"token": t, "weight": w}))
                    .collect::<Vec<_>>()));
            }
            entries
                .push(json!({"until_step": until, "text": edited, "token_count": count, "chunks": listed}));
        }
        parts.push(json!({"text": part, "weight": weight, "schedule": entries}));
    }
    if !db.skipped.is_empty() {
        let why: Vec<&str> = db.skipped.iter().map(|(_, why)| why.as_str()).collect();
        text.push_str(&format!("unreadable embeddings: {}\n", why.join("; ")));
    }
    if args.json {
        let report =
            json!({"kind": "prompt", "emphasis": args.emphasis, "steps": args.steps, "parts": parts});
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{text}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A chunk's prompt tokens as text with their weights (an embedding once, as `<name>`), without
/// the start token and the padding.
fn chunk_tokens(
    chunk: &easel::engine::prompt::chunks::Chunk,
    tokenizer: &easel::engine::tokenizer::Tokenizer,
) -> Vec<(String, f32)> {
    let end = chunk.tokens.iter().skip(1).position(|&t| t == easel::engine::tokenizer::EOS).unwrap_or(75);
    let mut out = Vec::new();
    let mut slot = 0;
    while slot < end {
        let weight = chunk.weights[slot + 1];
        if let Some((_, e)) = chunk.fixes.iter().find(|(at, _)| *at == slot) {
            out.push((format!("<{}>", e.name), weight));
            slot += e.vectors().max(1);
            continue;
        }
        out.push((tokenizer.token_text(chunk.tokens[slot + 1]).trim_end().to_string(), weight));
        slot += 1;
    }
    out
}

fn round4(w: f32) -> String {
    let s = format!("{:.4}", w);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn describe_png(path: &Path) -> anyhow::Result<Value> {
    let easel::export::png::PngText { texts, skipped } = easel::export::png::read_png_text_notes(path)?;
    let mut report = json!({ "kind": "picture", "text_chunks": texts });
    if !skipped.is_empty() {
        report["skipped_chunks"] = json!(skipped);
    }
    if let Some(params) = texts.get("parameters") {
        let parsed = easel::export::parameters::parse_a1111(params);
        match parsed.to_request() {
            Ok(request) => report["request"] = serde_json::to_value(request)?,
            Err(e) => report["unusable_settings"] = json!(e.to_string()),
        }
    }
    Ok(report)
}

fn describe_controlnet(path: &Path) -> anyhow::Result<Value> {
    let mut report = serde_json::to_value(easel::engine::controlnet::describe(path)?)?;
    report["kind"] = json!("ControlNet");
    Ok(report)
}

/// A ControlNet's names, from the header alone.
fn looks_like_controlnet(path: &Path) -> anyhow::Result<bool> {
    let header = read_safetensors_header(path)?;
    Ok(header.names.iter().any(|k| {
        k.starts_with("controlnet_cond_embedding.")
            || k.starts_with("input_hint_block.")
            || k.starts_with("control_model.input_hint_block.")
    }))
}

fn describe_folder(dir: &Path) -> anyhow::Result<Value> {
    if !dir.join("model_index.json").exists() {
        return Err(Error::bad_file("this folder is not a diffusers model (no model_index.json)", dir).into());
    }
    let unet: easel::engine::config::UNetConfig =
        easel::engine::config::read_json(&dir.join("unet/config.json"))?;
    let scheduler: Value = easel::engine::config::read_json(&dir.join("scheduler/scheduler_config.json"))?;
    let family = easel::engine::Family::of_unet(&unet);
    let line = easel::engine::SdxlLine::of_model(family, [dir.to_string_lossy().as_ref()]);
    Ok(json!({
        "kind": "diffusers model",
        "family": family.label(),
        "sdxl_line": line.map(|l| l.label()),
        "inpainting": unet.in_channels == 9,
        "unet_channels": unet.block_out_channels,
        "cross_attention_dim": unet.cross_attention_dim,
        "prediction_type": scheduler.get("prediction_type").cloned().unwrap_or(json!("epsilon")),
        "scheduler": scheduler.get("_class_name").cloned().unwrap_or(Value::Null),
    }))
}

fn describe_lora(path: &Path, model: Option<&str>) -> anyhow::Result<Value> {
    let adapter = Adapter::load(path)?;
    let count = |t: Target| adapter.modules.iter().filter(|m| m.target == t).count();
    let meta = &adapter.metadata;
    let mut report = json!({
        "kind": "LoRA adapter",
        "format": adapter.format,
        "title": meta.title,
        "trigger_words": meta.trigger_words,
        "rank": meta.rank,
        "alpha": meta.alpha,
        "trained_for": meta.trained_for.as_ref().map(|f| f.label()),
        "trained_on": meta.trained_on,
        "sdxl_line": meta.trained_on.as_deref().and_then(|t| easel::engine::SdxlLine::from_names([t])).map(|l| l.label()),
        "unet_modules": count(Target::Unet),
        "text_encoder_modules": count(Target::Text) + count(Target::Text2),
        "unknown_keys": adapter.unknown_keys,
        "thumbnail": meta.thumbnail.is_some(),
        "a1111_hash": adapter.hash,
    });
    if let Some(spec) = model {
        let path = super::resolve_model(spec)?;
        let model = StableDiffusion::load(&path, &Device::Cpu, DType::F32)?;
        report["compatibility"] = serde_json::to_value(easel::engine::lora::check(&adapter, &model)?)?;
    }
    Ok(report)
}

/// Decided from the header alone, so the tensors are read once, by whichever description runs.
fn looks_like_lora(path: &Path) -> anyhow::Result<bool> {
    let header = read_safetensors_header(path)?;
    let meta = &header.metadata;
    if meta
        .keys()
        .any(|k| k.starts_with("ss_network") || k == "modelspec.architecture" && meta[k].ends_with("/lora"))
    {
        return Ok(true);
    }
    Ok(header.names.iter().any(|k| {
        k.starts_with("lora_unet_")
            || k.starts_with("lora_te")
            || k.contains(".lora_A.")
            || k.contains(".lora.down.")
    }))
}

fn describe_safetensors(path: &Path, model: Option<&str>) -> anyhow::Result<Value> {
    if looks_like_lora(path)? {
        return describe_lora(path, model);
    }
    let metadata = read_safetensors_metadata(path)?;
    let tensors = read_safetensors(path)?;
    let mut dtypes: BTreeMap<String, usize> = BTreeMap::new();
    let mut params = 0usize;
    for t in tensors.values() {
        *dtypes.entry(format!("{:?}", t.dtype()).to_lowercase()).or_default() += 1;
        params += t.elem_count();
    }
    let count = tensors.len();
    let mut report = json!({
        "kind": "safetensors",
        "tensors": count,
        "parameters": params,
        "dtypes": dtypes,
        "metadata": metadata,
    });
    if tensors.keys().any(|k| k.starts_with("model.diffusion_model.")) {
        let markers: Vec<String> = tensors.keys().filter(|k| checkpoint::is_marker(k)).cloned().collect();
        let parts = checkpoint::split(tensors, path)?;
        let scheduler = checkpoint::with_markers(parts.family.scheduler_config(), &markers);
        report["prediction_type"] = scheduler.get("prediction_type").cloned().unwrap_or(json!("epsilon"));
        if markers.iter().any(|m| m == "ztsnr") {
            report["zero_terminal_snr"] = json!(true);
        }
        report["kind"] = json!("Stable Diffusion checkpoint");
        report["family"] = json!(parts.family.label());
        if parts.family == easel::engine::Family::Sdxl {
            let title =
                report["metadata"].get("modelspec.title").and_then(Value::as_str).unwrap_or("").to_string();
            let line = easel::engine::SdxlLine::from_names([path.to_string_lossy().as_ref(), title.as_str()]);
            report["sdxl_line"] = json!(line.map(|l| l.label()));
        }
        report["inpainting"] = json!(parts.unet_config.in_channels == 9);
        report["unet_channels"] = json!(parts.unet_config.block_out_channels);
        report["text_encoder_layers"] = json!(parts.clip_config.num_hidden_layers);
    }
    Ok(report)
}

fn print_text(value: &Value, indent: usize) {
    let pad = "  ".repeat(indent);
    if let Value::Object(map) = value {
        for (k, v) in map {
            match v {
                Value::Object(inner) if inner.is_empty() => println!("{pad}{k}: (none)"),
                Value::Object(_) => {
                    println!("{pad}{k}:");
                    print_text(v, indent + 1);
                }
                Value::String(s) if s.contains('\n') => {
                    println!("{pad}{k}:");
                    for line in s.lines() {
                        println!("{pad}  {line}");
                    }
                }
                Value::String(s) => println!("{pad}{k}: {s}"),
                other => println!("{pad}{k}: {other}"),
            }
        }
    }
}
