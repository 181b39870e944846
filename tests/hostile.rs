//! Files from strangers, crafted by each test (a few bytes to a few MB), never abort Easel: each
//! ends in one sentence and a non-zero exit, or in the safe behaviour, without a panic, an abort
//! or a giant allocation. One test per way of attack found when Easel was tried as an attacker would.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Runs `easel` and expects a refusal: a non-zero exit (not a signal: an abort is a crash), one
/// `error:` line and no panic. Returns that line.
fn refused(args: &[&str]) -> String {
    let res = easel(args);
    let err = stderr(&res);
    assert!(res.status.code().is_some_and(|c| c != 0), "expected a refusal, got {:?}: {err}", res.status);
    let last = err.trim_end().lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "one error sentence expected, got: {err}");
    assert!(!err.contains("panicked") && !err.contains("memory allocation"), "{err}");
    last
}

/// `generate` arguments: `model` at 64² and two steps, plus `extra`.
fn generate_args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "generate", "--model", model, "--prompt", "a cat", "--steps", "2", "--width", "64", "--height", "64",
        "-o", out,
    ];
    args.extend_from_slice(extra);
    args
}

fn tiny() -> PathBuf {
    fixtures().join("tiny-sd")
}

/// A copy of the tiny model at `model` whose `config` (a JSON file inside it) has `key` = `value`.
fn tiny_with(model: &Path, config: &str, key: &str, value: serde_json::Value) {
    copy_tree(&tiny(), model);
    let config = model.join(config);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("json");
    json[key] = value;
    std::fs::write(&config, json.to_string()).expect("write");
}

fn text(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A safetensors file from a hand-written header and data.
fn raw_safetensors(path: &Path, header: &str, data: &[u8]) {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).expect("write");
}

/// A tensor to write: name, shape, values.
type Named<'a> = (&'a str, Vec<usize>, Vec<f32>);

/// A safetensors file of f32 tensors.
fn f32_safetensors(path: &Path, tensors: &[Named]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views = tensors.iter().zip(&bytes).map(|((name, shape, _), b)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b).expect("view");
        (name.to_string(), view)
    });
    safetensors::serialize_to_file(views, None, path).expect("written");
}

#[test]
fn safetensors_offsets_past_two_to_the_64_are_refused_everywhere() {
    let dir = tempfile::tempdir().expect("temp dir");
    let evil = dir.path().join("evil.safetensors");
    // Sixteen tensors of 2⁶⁰ bytes each, every one consistent on its own, whose sizes add up to
    // 2⁶⁴ − 16: `8 + header + data` wrapped to a small number and passed the length check.
    let mut entries =
        vec![r#""noise":{"dtype":"F32","shape":[1,4,8,8],"data_offsets":[0,1024]}"#.to_string()];
    let mut start: u64 = 1024;
    for i in 0..16u64 {
        let len = if i == 15 { (1u64 << 60) - 16 - 1024 } else { 1 << 60 };
        entries.push(format!(
            r#""t{i}":{{"dtype":"U8","shape":[{len}],"data_offsets":[{start},{}]}}"#,
            start + len
        ));
        start += len;
    }
    raw_safetensors(&evil, &format!("{{{}}}", entries.join(",")), &[0u8; 4096]);
    let out = dir.path().join("out.png");
    for err in [
        refused(&["inspect", text(&evil)]),
        refused(&generate_args(text(&tiny()), text(&out), &["--noise", text(&evil)])),
    ] {
        assert!(err.contains("evil.safetensors") && err.contains("truncated"), "{err}");
    }
    // Offsets that contradict the shapes.
    let header = r#"{"noise":{"dtype":"F32","shape":[1,4,8,8],"data_offsets":[0,1024]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1024,18446744073709551615]}}"#;
    raw_safetensors(&evil, header, &[0u8; 4096]);
    let err = refused(&["inspect", text(&evil)]);
    assert!(err.contains("evil.safetensors") && err.contains("safetensors file"), "{err}");
    // The same file as a model's UNet weights.
    let model = dir.path().join("model");
    copy_tree(&tiny(), &model);
    std::fs::copy(&evil, model.join("unet/diffusion_pytorch_model.safetensors")).expect("copied");
    let err = refused(&generate_args(text(&model), text(&out), &[]));
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
    assert!(!out.exists());
}

#[test]
fn a_png_text_bomb_is_skipped_quickly() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    // 1 GiB of text squeezed into about 1 MB.
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..1024 {
        z.write_all(&zeros).expect("compressed");
    }
    let mut chunk = b"parameters\0\0".to_vec();
    chunk.extend(z.finish().expect("compressed"));
    let png = dir.path().join("bomb.png");
    let mut bytes = Vec::new();
    image::RgbImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .expect("encoded");
    let iend = bytes.len() - 12;
    let mut crc = flate2::Crc::new();
    crc.update(b"zTXt");
    crc.update(&chunk);
    let mut framed = (chunk.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(b"zTXt");
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(&crc.sum().to_be_bytes());
    bytes.splice(iend..iend, framed);
    std::fs::write(&png, bytes).expect("write");

    let started = Instant::now();
    let res = easel(&["inspect", text(&png)]);
    let out = String::from_utf8_lossy(&res.stdout);
    assert!(res.status.success(), "{}", stderr(&res));
    assert!(out.contains("too large") || out.contains("more than 1 MB"), "the skipped chunk is named: {out}");
    assert!(started.elapsed() < Duration::from_secs(20), "inflating stops at the limit");
}

#[test]
fn lora_factors_far_larger_than_their_layer_are_refused_before_multiplying() {
    let dir = tempfile::tempdir().expect("temp dir");
    let lora = dir.path().join("huge.safetensors");
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    f32_safetensors(
        &lora,
        &[
            (&format!("{module}.lora_up.weight"), vec![20000, 1], vec![0.01; 20000]),
            (&format!("{module}.lora_down.weight"), vec![1, 20000], vec![0.01; 20000]),
        ],
    );
    let out = dir.path().join("out.png");
    let started = Instant::now();
    let spec = format!("{}:1", lora.display());
    let err = refused(&generate_args(text(&tiny()), text(&out), &["--lora", &spec]));
    assert!(err.contains("[20000, 1]") && err.contains("[32, 32]"), "{err}");
    // Building the 20000² product first took seconds and 3 GB.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn poisoned_lora_factors_are_refused_at_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let up = format!("{module}.lora_up.weight");
    let down = format!("{module}.lora_down.weight");
    let alpha = format!("{module}.alpha");
    let out = dir.path().join("out.png");
    let cases: [(&str, Vec<Named>, &str); 3] = [
        ("nan", vec![(&up, vec![32, 1], vec![f32::NAN; 32]), (&down, vec![1, 32], vec![0.1; 32])], "NaN"),
        (
            "alpha",
            vec![
                (&up, vec![32, 1], vec![0.1; 32]),
                (&down, vec![1, 32], vec![0.1; 32]),
                (&alpha, vec![], vec![f32::INFINITY]),
            ],
            "alpha",
        ),
        ("rank0", vec![(&up, vec![32, 0], vec![]), (&down, vec![0, 32], vec![])], "rank 0"),
    ];
    for (name, tensors, expected) in cases {
        let path = dir.path().join(format!("{name}.safetensors"));
        f32_safetensors(&path, &tensors);
        let spec = format!("{}:1", path.display());
        let err = refused(&generate_args(text(&tiny()), text(&out), &["--lora", &spec]));
        assert!(err.contains(expected) && err.contains(&format!("{name}.safetensors")), "{err}");
    }
    assert!(!out.exists(), "no black picture is written");
}

#[test]
fn values_that_overflow_mid_generation_stop_the_job_instead_of_saving_black() {
    let dir = tempfile::tempdir().expect("temp dir");
    let module = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q";
    let lora = dir.path().join("loud.safetensors");
    // Finite factors whose product overflows f32: only the running job can notice.
    f32_safetensors(
        &lora,
        &[
            (&format!("{module}.lora_up.weight"), vec![32, 1], vec![3e38; 32]),
            (&format!("{module}.lora_down.weight"), vec![1, 32], vec![3e38; 32]),
        ],
    );
    let out = dir.path().join("out.png");
    let spec = format!("{}:1", lora.display());
    let err = refused(&generate_args(text(&tiny()), text(&out), &["--lora", &spec]));
    assert!(err.contains("NaN") && err.contains("nothing was saved"), "{err}");
    assert!(!out.exists());
}

#[test]
fn non_finite_starting_noise_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let noise = dir.path().join("noise.safetensors");
    let mut values = vec![0.5f32; 4 * 8 * 8];
    values[17] = f32::NAN;
    f32_safetensors(&noise, &[("noise", vec![1, 4, 8, 8], values)]);
    let out = dir.path().join("out.png");
    let err = refused(&generate_args(text(&tiny()), text(&out), &["--noise", text(&noise)]));
    assert!(err.contains("NaN or infinite"), "{err}");
    assert!(!out.exists());
}

#[test]
fn noise_of_another_kind_and_tiny_init_pictures_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let noise = dir.path().join("ints.safetensors");
    let ids: Vec<u8> = (0..256i64).flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 4, 8, 8], &ids).expect("view");
    safetensors::serialize_to_file([("noise".to_string(), view)], None, &noise).expect("written");
    let out = dir.path().join("out.png");
    let err = refused(&generate_args(text(&tiny()), text(&out), &["--noise", text(&noise)]));
    assert!(err.contains("I64") && err.contains("float tensor"), "{err}");
    let dot = dir.path().join("dot.png");
    image::RgbImage::new(1, 1).save(&dot).expect("png");
    let model = tiny();
    let args =
        ["generate", "--model", text(&model), "--prompt", "a", "--init-image", text(&dot), "-o", text(&out)];
    let err = refused(&args);
    assert!(err.contains("1×1") && err.contains("dot.png") && !err.contains("--width 0"), "{err}");
}

#[test]
fn configs_with_zero_heads_or_no_blocks_get_a_sentence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    for (i, (part, key, value)) in [
        ("unet", "attention_head_dim", serde_json::json!(0)),
        ("unet", "num_attention_heads", serde_json::json!(0)),
        ("unet", "block_out_channels", serde_json::json!([])),
        ("vae", "block_out_channels", serde_json::json!([])),
        ("text_encoder", "num_attention_heads", serde_json::json!(0)),
    ]
    .into_iter()
    .enumerate()
    {
        let model = dir.path().join(format!("model{i}"));
        tiny_with(&model, &format!("{part}/config.json"), key, value);
        let err = refused(&generate_args(text(&model), text(&out), &[]));
        assert!(err.contains("config") && err.contains(&format!("{part}/config.json")), "{err}");
    }
}

#[test]
fn scheduler_configs_that_index_past_their_schedule_get_a_sentence() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    for (i, (key, value, sampler)) in [
        ("trained_betas", serde_json::json!([0.01]), "ddim"),
        ("num_train_timesteps", serde_json::json!(1e13), "euler"),
        ("steps_offset", serde_json::json!(1e30), "dpmpp_2m_karras"),
        ("original_inference_steps", serde_json::json!(1e30), "lcm"),
    ]
    .into_iter()
    .enumerate()
    {
        let model = dir.path().join(format!("model{i}"));
        tiny_with(&model, "scheduler/scheduler_config.json", key, value);
        let err = refused(&generate_args(text(&model), text(&out), &["--sampler", sampler]));
        assert!(err.contains("scheduler config") && err.contains(key), "{err}");
    }
}

#[test]
fn an_absurd_batch_is_refused_before_anything_is_built() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out.png");
    for batch in ["18446744073709551615", "10000000"] {
        let err = refused(&generate_args(text(&tiny()), text(&out), &["--batch", batch]));
        assert!(err.contains("--batch") && err.contains("10000"), "{err}");
    }
}

#[test]
fn lora_tags_cannot_reach_outside_the_lora_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let loras = dir.path().join("loras");
    std::fs::create_dir_all(&loras).expect("folder");
    std::fs::copy(fixtures().join("lora/inkStyle.safetensors"), dir.path().join("outside.safetensors"))
        .expect("copied");
    let out = dir.path().join("out.png");
    let model = tiny();
    let abs = format!("a cat <lora:{}:1>", dir.path().join("outside").display());
    for prompt in ["a cat <lora:../outside:1>", abs.as_str()] {
        let args = [
            "generate",
            "--model",
            text(&model),
            "--prompt",
            prompt,
            "--lora-dir",
            text(&loras),
            "--steps",
            "1",
            "--width",
            "64",
            "--height",
            "64",
            "-o",
            text(&out),
        ];
        let err = refused(&args);
        assert!(err.contains("names a path"), "{err}");
    }
    assert!(!out.exists());
}

#[test]
fn a_hub_cache_ref_holding_an_absolute_path_is_not_followed() {
    let home = tempfile::tempdir().expect("temp dir");
    let elsewhere = home.path().join("elsewhere");
    copy_tree(&tiny(), &elsewhere);
    let repo = home.path().join("hub/models--easel-tests--tiny-sd");
    std::fs::create_dir_all(repo.join("refs")).expect("refs");
    std::fs::create_dir_all(repo.join("snapshots")).expect("snapshots");
    std::fs::write(repo.join("refs/main"), text(&elsewhere)).expect("ref");
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_easel"))
        .args(["generate", "--model", "easel-tests/tiny-sd", "--prompt", "x", "-o"])
        .arg(home.path().join("out.png"))
        .env("HF_HOME", home.path())
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("runs");
    let err = stderr(&res);
    assert!(!res.status.success() && err.contains("not downloaded yet"), "{err}");
}

#[test]
fn an_unwritable_output_is_refused_before_generating() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no/such/folder/out.png");
    let started = Instant::now();
    let err = refused(&generate_args(text(&tiny()), text(&missing), &[]));
    assert!(err.contains("output folder does not exist") && err.contains("folder"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "refused before any step");
    let err = refused(&generate_args(text(&tiny()), text(dir.path()), &[]));
    assert!(err.contains("is a folder") && err.contains("picture.png"), "{err}");
}

/// ControlNet files from strangers: a cut download, a pickle that would run code, a config naming
/// another kind of model, shapes that do not fit, and a control picture that is not one — each
/// refused in one sentence naming the file, before any step runs.
#[test]
fn broken_controlnets_and_pictures_are_refused_by_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("x.png");
    let out = out.to_str().expect("utf-8");
    let model = tiny();
    let model = model.to_str().expect("utf-8");
    let scribble = fixtures().join("controlnet/scribble.png");
    let unit = |cn: &Path, image: &Path| format!("model={},image={}", cn.display(), image.display());
    let run = |control: String| refused(&generate_args(model, out, &["--control", &control]));

    // A download cut in half.
    let whole = std::fs::read(fixtures().join("controlnet/control_tiny2_sd15.safetensors")).expect("fixture");
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &whole[..whole.len() / 2]).expect("write");
    let e = run(unit(&cut, &scribble));
    assert!(e.contains("cut.safetensors"), "{e}");

    // A pickle that would run code is read, never executed (its tensors are those of a checkpoint).
    let evil = dir.path().join("evil.pth");
    std::fs::copy(fixtures().join("evil.ckpt"), &evil).expect("copy");
    let e = run(unit(&evil, &scribble));
    assert!(e.contains("evil.pth") && e.contains("not a ControlNet"), "{e}");

    // A folder whose config is another kind of model.
    let other = dir.path().join("adapter");
    copy_tree(&fixtures().join("controlnet/sd15"), &other);
    let config = other.join("config.json");
    let text = std::fs::read_to_string(&config).expect("config").replace("ControlNetModel", "T2IAdapter");
    std::fs::write(&config, text).expect("write");
    let e = run(unit(&other, &scribble));
    assert!(e.contains("T2IAdapter") && e.contains("config.json"), "{e}");

    // Weights whose shapes do not match the config.
    let wrong = dir.path().join("wrong");
    copy_tree(&fixtures().join("controlnet/sd15"), &wrong);
    let config = wrong.join("config.json");
    let text = std::fs::read_to_string(&config)
        .expect("config")
        .replace("\"layers_per_block\": 2", "\"layers_per_block\": 1");
    std::fs::write(&config, text).expect("write");
    let e = run(unit(&wrong, &scribble));
    assert!(e.contains("wrong"), "{e}");

    // A "picture" that is a truncated PNG.
    let png = std::fs::read(&scribble).expect("png");
    let bad = dir.path().join("bad.png");
    std::fs::write(&bad, &png[..png.len() / 3]).expect("write");
    let e = run(unit(&fixtures().join("controlnet/sd15"), &bad));
    assert!(e.contains("bad.png") && e.contains("unit 0"), "{e}");
    assert!(!Path::new(out).exists(), "nothing is written");
}
