//! LoRA adapters against diffusers: goldens from tests/fixtures/make_lora_fixtures.py, where each
//! adapter was merged by its definition into diffusers' modules. Also: re-weighting never drifts,
//! adapters for another family are refused, misfits name the module, unmatched keys are reported.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use candle_core::{DType, Device};
use common::*;
use easel::engine::lora::{self, Adapter, StackEntry};
use easel::engine::{generate, GenerationInputs, GenerationRequest, SamplerKind, StableDiffusion};

#[derive(serde::Deserialize)]
struct Case {
    golden: String,
    sampler: String,
    loras: Vec<(String, f64, f64)>,
}

#[test]
fn adapters_match_diffusers_merges() {
    let text = std::fs::read_to_string(fixtures().join("golden/lora_cases.json")).expect("fixture");
    let cases: Vec<Case> = serde_json::from_str(&text).expect("valid fixture");
    assert!(cases.len() >= 5);
    let model = fixtures().join("tiny-sd");
    for case in cases {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = dir.path().join("out.png");
        let flags: Vec<String> = case
            .loras
            .iter()
            .map(|(file, unet, te)| format!("{}:{unet}:{te}", fixtures().join("lora").join(file).display()))
            .collect();
        let mut args = golden_args(&model, PROMPT, &case.sampler, &out);
        for f in &flags {
            args.extend(["--lora".to_string(), f.clone()]);
        }
        let res = easel_owned(&args);
        assert!(res.status.success(), "{}: {}", case.golden, stderr(&res));
        let golden = fixtures().join(format!("golden/{}.png", case.golden));
        let (psnr, max) = compare(&load_rgb(&out), &load_rgb(&golden));
        assert!(max <= 3 && psnr >= 40.0, "{} with {flags:?}: PSNR {psnr:.1}, max {max}", case.golden);
    }
}

#[test]
fn prompt_tags_pick_adapters_from_the_lora_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    let prompt = format!("{PROMPT} <lora:inkStyle:1>");
    let mut args = golden_args(&fixtures().join("tiny-sd"), &prompt, "ddim", &out);
    args.extend(["--lora-dir".to_string(), fixtures().join("lora").display().to_string()]);
    let res = easel_owned(&args);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(stderr(&res).contains("inkStyle: 210 modules applied"), "{}", stderr(&res));
    assert!(stderr(&res).contains("trigger words: inkstyle"), "{}", stderr(&res));
    assert_matches_golden(&out, &fixtures().join("golden/lora_ink.png"));

    let texts = easel::export::png::read_png_text(&out).expect("metadata");
    let params = easel::export::parameters::parse_a1111(&texts["parameters"]);
    assert!(params.prompt.ends_with("<lora:inkStyle:1>"), "{}", params.prompt);
    let adapter = Adapter::load(&fixtures().join("lora/inkStyle.safetensors")).expect("loads");
    assert_eq!(params.get("Lora hashes"), Some(format!("inkStyle: {}", adapter.hash).as_str()));
}

#[test]
fn flags_are_saved_as_prompt_tags() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    let lora = format!("{}:0.6:0.2", fixtures().join("lora/inkStyle.safetensors").display());
    let res = easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().expect("utf-8"),
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--lora",
        &lora,
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    let texts = easel::export::png::read_png_text(&out).expect("metadata");
    let params = easel::export::parameters::parse_a1111(&texts["parameters"]);
    assert_eq!(params.prompt, "a cat <lora:inkStyle:0.2:0.6>");
}

fn render(model: &StableDiffusion) -> image::RgbImage {
    let request = GenerationRequest {
        prompt: PROMPT.into(),
        sampler: SamplerKind::Euler,
        steps: 3,
        width: 64,
        height: 64,
        seed: 9,
        ..Default::default()
    };
    let cancel = AtomicBool::new(false);
    let mut images =
        generate(model, &request, &GenerationInputs::default(), &mut |_| {}, &cancel).expect("generates");
    images.remove(0).image
}

#[test]
fn reweighting_ten_times_equals_a_fresh_load() {
    let path = fixtures().join("tiny-sd");
    let ink = Arc::new(Adapter::load(&fixtures().join("lora/inkStyle.safetensors")).expect("loads"));
    let texture = Arc::new(Adapter::load(&fixtures().join("lora/texture_locon.safetensors")).expect("loads"));
    let stack =
        |a: f64, b: f64| vec![StackEntry::new(Arc::clone(&ink), a), StackEntry::new(Arc::clone(&texture), b)];
    let mut model = StableDiffusion::load(&path, &Device::Cpu, DType::F32).expect("loads");
    let base = render(&model);
    for k in 0..10 {
        let w = k as f64 * 0.37 - 1.5;
        lora::apply(&mut model, &stack(w, -w * 2.0)).expect("applies");
    }
    lora::apply(&mut model, &stack(0.8, -0.5)).expect("applies");
    let reweighted = render(&model);

    let mut fresh = StableDiffusion::load(&path, &Device::Cpu, DType::F32).expect("loads");
    lora::apply(&mut fresh, &stack(0.8, -0.5)).expect("applies");
    assert_eq!(reweighted, render(&fresh), "re-weighting drifted from a fresh merge");
    assert_ne!(reweighted, base, "the stack changes the picture");

    // An empty stack restores the base model exactly.
    lora::apply(&mut model, &[]).expect("applies");
    assert_eq!(render(&model), base);
}

/// Writes a small adapter with the given f32 tensors and header metadata.
fn write_adapter(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)], metadata: &[(&str, &str)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .expect("valid view");
            (name.to_string(), view)
        })
        .collect();
    let meta: HashMap<String, String> =
        metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    safetensors::serialize_to_file(views, Some(meta), path).expect("written");
}

fn try_generate_with(lora: &Path) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().expect("utf-8"),
        "--prompt",
        "a cat",
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
        "--lora",
        lora.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ])
}

#[test]
fn adapters_for_another_family_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("xl_style.safetensors");
    write_adapter(
        &path,
        &[
            ("lora_unet_conv_in.lora_down.weight", vec![1, 4, 3, 3], vec![0.1; 36]),
            ("lora_unet_conv_in.lora_up.weight", vec![32, 1, 1, 1], vec![0.1; 32]),
        ],
        &[("ss_base_model_version", "sdxl_base_v1-0")],
    );
    let res = try_generate_with(&path);
    assert!(!res.status.success());
    let err = stderr(&res);
    assert!(err.contains("xl_style was made for an SDXL, but the model is SD 1.x"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn a_misfit_names_the_module() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("wide.safetensors");
    write_adapter(
        &path,
        &[
            ("lora_unet_conv_in.lora_down.weight", vec![1, 5, 3, 3], vec![0.1; 45]),
            ("lora_unet_conv_in.lora_up.weight", vec![32, 1, 1, 1], vec![0.1; 32]),
        ],
        &[],
    );
    let res = try_generate_with(&path);
    assert!(!res.status.success());
    assert!(stderr(&res).contains("wide does not fit this model at conv_in"), "{}", stderr(&res));
}

#[test]
fn unmatched_modules_are_counted_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("partial.safetensors");
    write_adapter(
        &path,
        &[
            ("lora_unet_conv_in.lora_down.weight", vec![1, 4, 3, 3], vec![0.01; 36]),
            ("lora_unet_conv_in.lora_up.weight", vec![32, 1, 1, 1], vec![0.01; 32]),
            ("lora_unet_no_such_layer.lora_down.weight", vec![1, 4], vec![0.01; 4]),
            ("lora_unet_no_such_layer.lora_up.weight", vec![4, 1], vec![0.01; 4]),
            ("something_unrelated", vec![2], vec![0.0; 2]),
        ],
        &[],
    );
    let res = try_generate_with(&path);
    assert!(res.status.success(), "{}", stderr(&res));
    let err = stderr(&res);
    assert!(err.contains("partial: 1 modules applied (1 UNet, 0 text encoder); 2 not matched"), "{err}");
    assert!(err.contains("no_such_layer") && err.contains("something_unrelated"), "{err}");
}

#[test]
fn a_missing_tagged_lora_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let res = easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd").to_str().expect("utf-8"),
        "--prompt",
        "a cat <lora:nowhere:0.5>",
        "--lora-dir",
        dir.path().to_str().expect("utf-8"),
        "-o",
        "/tmp/x.png",
    ]);
    assert!(!res.status.success());
    assert!(stderr(&res).contains("no nowhere.safetensors"), "{}", stderr(&res));
}

#[test]
fn inspect_describes_an_adapter() {
    let res =
        easel(&["inspect", "--json", fixtures().join("lora/inkStyle.safetensors").to_str().expect("utf-8")]);
    assert!(res.status.success(), "{}", stderr(&res));
    let json: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    assert_eq!(json["kind"], "LoRA adapter");
    assert_eq!(json["title"], "Ink Style");
    assert_eq!(json["trigger_words"], serde_json::json!(["inkstyle"]));
    assert_eq!(json["rank"], 4);
    assert_eq!(json["trained_for"], "SD 1.x");
    assert_eq!(json["unet_modules"], 192);
    assert_eq!(json["text_encoder_modules"], 18);
    let peft = easel(&[
        "inspect",
        "--json",
        fixtures().join("lora/inkStyle_peft.safetensors").to_str().expect("utf-8"),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&peft.stdout).expect("json");
    assert_eq!(json["format"], "PEFT");
}
