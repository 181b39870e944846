//! Pictures carry their parameters: A1111's `parameters` text parses back to the request that made
//! each picture of a batch, Easel's JSON chunk holds the whole request, and `inspect` reads both.

mod common;

use common::*;
use easel::engine::{GenerationRequest, SamplerKind};
use easel::export::parameters::parse_a1111;
use easel::export::png::read_png_text;

#[test]
fn batch_pictures_carry_their_own_seeds() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("pic.png");
    let res = easel(&[
        "generate",
        "--model",
        fixtures().join("tiny-sd.safetensors").to_str().expect("utf-8"),
        "--prompt",
        "castle on a hill, dramatic: light",
        "--negative",
        "blurry",
        "--sampler",
        "euler_a",
        "--steps",
        "3",
        "--cfg",
        "5.5",
        "--seed",
        "41",
        "--width",
        "64",
        "--height",
        "72",
        "--batch",
        "2",
        "-o",
        out.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    for (k, seed) in [(1, 41u64), (2, 42)] {
        let path = dir.path().join(format!("pic-{k}.png"));
        let texts = read_png_text(&path).expect("readable");
        let parsed = parse_a1111(&texts["parameters"]);
        let expected = GenerationRequest {
            prompt: "castle on a hill, dramatic: light".into(),
            negative_prompt: "blurry".into(),
            sampler: SamplerKind::EulerA,
            steps: 3,
            cfg_scale: 5.5,
            seed,
            width: 64,
            height: 72,
            ..Default::default()
        };
        assert_eq!(parsed.to_request().expect("usable settings"), expected);
        assert_eq!(parsed.get("Model"), Some("tiny-sd"));
        assert_eq!(parsed.get("Model hash").map(str::len), Some(10));
        assert!(parsed.get("Version").is_some_and(|v| v.starts_with("Easel ")));
        let json: serde_json::Value = serde_json::from_str(&texts["easel"]).expect("json chunk");
        let req: GenerationRequest = serde_json::from_value(json["request"].clone()).expect("request");
        assert_eq!(req.seed, seed);
        assert_eq!(req.batch, 1);
    }
}

#[test]
fn same_seed_same_picture_and_different_seed_differs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let model = fixtures().join("tiny-sd");
    let run = |seed: &str, name: &str| {
        let out = dir.path().join(name);
        let res = easel(&[
            "generate",
            "--model",
            model.to_str().expect("utf-8"),
            "--prompt",
            "a cat",
            "--steps",
            "4",
            "--sampler",
            "euler_a",
            "--seed",
            seed,
            "--width",
            "64",
            "--height",
            "64",
            "-o",
            out.to_str().expect("utf-8"),
        ]);
        assert!(res.status.success(), "{}", stderr(&res));
        load_rgb(&out)
    };
    let a = run("5", "a.png");
    assert_eq!(a, run("5", "b.png"));
    assert_ne!(a, run("6", "c.png"));
}

#[test]
fn inspect_reads_models_and_pictures() {
    let res = easel(&["inspect", "--json", fixtures().join("tiny-sd.safetensors").to_str().expect("utf-8")]);
    assert!(res.status.success(), "{}", stderr(&res));
    let json: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    assert_eq!(json["kind"], "Stable Diffusion checkpoint");
    assert_eq!(json["family"], "SD 1.x");
    assert_eq!(json["unet_channels"], serde_json::json!([32, 32, 64, 64]));

    let res = easel(&["inspect", fixtures().join("tiny-sd").to_str().expect("utf-8")]);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(String::from_utf8_lossy(&res.stdout).contains("family: SD 1.x"));
}

#[test]
fn version_names_the_revision() {
    let res = easel(&["--version"]);
    assert!(res.status.success());
    let text = String::from_utf8_lossy(&res.stdout);
    assert!(text.starts_with("easel 0.1.0 ("), "{text}");
}

#[test]
fn bench_runs_on_a_small_config() {
    let cfg = fixtures().join("tiny-sd/unet/config.json");
    let vae = fixtures().join("tiny-sd/vae/config.json");
    let res = easel(&[
        "bench",
        "--sizes",
        "64",
        "--runs",
        "1",
        "--vae",
        "--json",
        "--lora-rank",
        "4",
        "--metrics",
        "--unet-config",
        cfg.to_str().expect("utf-8"),
        "--vae-config",
        vae.to_str().expect("utf-8"),
    ]);
    assert!(res.status.success(), "{}", stderr(&res));
    let json: serde_json::Value = serde_json::from_slice(&res.stdout).expect("json");
    assert!(json["unet"][0]["secs_per_eval"].as_f64().is_some_and(|s| s > 0.0));
    assert!(json["vae_decode"]["secs"].as_f64().is_some_and(|s| s > 0.0));
    assert!(json["lora"]["reweight_secs"].as_f64().is_some_and(|s| s > 0.0));
    assert!(json["metrics"]["pictures_per_sec"].as_f64().is_some_and(|s| s > 0.0));
    assert!(json["lora"]["modules"].as_u64().is_some_and(|n| n > 50), "{}", json["lora"]);
}

#[test]
fn presets_set_defaults_and_flags_override_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let preset = dir.path().join("tiny.json");
    std::fs::write(
        &preset,
        r#"{"name": "Tiny", "sampler": "euler", "steps": 2, "cfg_scale": 4.5, "width": 64, "height": 72,
            "negative_prompt": "smudges"}"#,
    )
    .expect("write");
    let run = |extra: &[&str], name: &str| {
        let out = dir.path().join(name);
        let mut args = vec![
            "generate",
            "--model",
            fixtures_str("tiny-sd"),
            "--prompt",
            "a cat",
            "--preset",
            preset.to_str().expect("utf-8"),
            "-o",
            out.to_str().expect("utf-8"),
        ];
        args.extend_from_slice(extra);
        let res = easel(&args);
        assert!(res.status.success(), "{}", stderr(&res));
        let texts = read_png_text(&out).expect("metadata");
        parse_a1111(&texts["parameters"]).to_request().expect("usable settings")
    };
    let from_preset = run(&[], "a.png");
    assert_eq!(
        (
            from_preset.sampler,
            from_preset.steps,
            from_preset.cfg_scale,
            from_preset.width,
            from_preset.height
        ),
        (SamplerKind::Euler, 2, 4.5, 64, 72)
    );
    assert_eq!(from_preset.negative_prompt, "smudges");
    let overridden = run(&["--steps", "1", "--sampler", "ddim", "--negative", ""], "b.png");
    assert_eq!((overridden.sampler, overridden.steps, overridden.width), (SamplerKind::Ddim, 1, 64));
    assert_eq!(overridden.negative_prompt, "");

    let list = easel(&["presets"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("quality-sd15") && text.contains("fast-lcm"), "{text}");
}

fn fixtures_str(name: &str) -> &'static str {
    Box::leak(fixtures().join(name).to_string_lossy().to_string().into_boxed_str())
}
