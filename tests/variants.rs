//! Scheduler configs other than SD 1.5's (v-prediction, leading/trailing spacing, zero-SNR betas),
//! guidance off, and samplers that draw noise while stepping (Euler ancestral, LCM, seeded): each
//! matches diffusers' picture from tests/fixtures/golden/variants.json.

mod common;

use std::path::Path;

use common::*;

#[derive(serde::Deserialize)]
struct Variant {
    name: String,
    sampler: String,
    steps: usize,
    cfg: f64,
    #[serde(default)]
    noise: bool,
    seed: Option<u64>,
    config: serde_json::Map<String, serde_json::Value>,
}

/// A copy of the tiny model whose scheduler config carries `overrides`.
fn model_with_scheduler(
    dir: &Path,
    overrides: &serde_json::Map<String, serde_json::Value>,
) -> std::path::PathBuf {
    let dst = dir.join("model");
    copy_tree(&fixtures().join("tiny-sd"), &dst);
    let path = dst.join("scheduler/scheduler_config.json");
    let mut cfg: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
    cfg.extend(overrides.clone());
    std::fs::write(&path, serde_json::to_string_pretty(&cfg).expect("json")).expect("write");
    dst
}

#[test]
fn scheduler_variants_match_diffusers() {
    let text = std::fs::read_to_string(fixtures().join("golden/variants.json")).expect("fixture");
    let variants: Vec<Variant> = serde_json::from_str(&text).expect("valid fixture");
    assert!(variants.len() >= 6);
    for v in variants {
        let dir = tempfile::tempdir().expect("temp dir");
        let model = model_with_scheduler(dir.path(), &v.config);
        let out = dir.path().join("out.png");
        let noise = fixtures().join("noise.safetensors");
        let (steps, cfg) = (v.steps.to_string(), v.cfg.to_string());
        let seed = v.seed.unwrap_or(0).to_string();
        let mut args = vec![
            "generate",
            "--model",
            model.to_str().expect("utf-8"),
            "--prompt",
            PROMPT,
            "--negative",
            NEGATIVE,
            "--sampler",
            &v.sampler,
            "--steps",
            &steps,
            "--cfg",
            &cfg,
            "--width",
            "128",
            "--height",
            "128",
            "--seed",
            &seed,
            "-o",
            out.to_str().expect("utf-8"),
        ];
        if v.noise {
            args.extend_from_slice(&["--noise", noise.to_str().expect("utf-8")]);
        }
        let res = easel(&args);
        assert!(res.status.success(), "{}: {}", v.name, stderr(&res));
        let (psnr, max) =
            compare(&load_rgb(&out), &load_rgb(&fixtures().join(format!("golden/{}.png", v.name))));
        assert!(max <= 3 && psnr >= 40.0, "{}: PSNR {psnr:.1} dB, max difference {max}/255", v.name);
    }
}
